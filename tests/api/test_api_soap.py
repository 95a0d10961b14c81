"""The SOAP payment-type operation, called by a real SOAP client (zeep) reading the WSDL the API serves."""

from __future__ import annotations

import pytest
import requests
import zeep
from zeep.exceptions import Fault
from zeep.transports import Transport

from tests.support.api import KEYS


def soap_client(api, key: str | None = KEYS["SELFCARE_APP"]) -> zeep.Client:
    session = requests.Session()
    if key is not None:
        session.headers["X-API-Key"] = key
    return zeep.Client(f"{api.base_url}/soap/payment-setup?wsdl", transport=Transport(session=session, timeout=10))


def fault_field(fault: Fault) -> str | None:
    return fault.detail.find("{urn:cmp:payment-setup:v1}ValidationFault/{urn:cmp:payment-setup:v1}field").text


def test_set_payment_type_through_the_wsdl(api, platform):
    client = soap_client(api)
    answer = client.service.SetPaymentType(accountNumber="ACC00000012", paymentType="RECURRING_CARD",
                                           cardToken="tok_soap_12", lastFour="1212", expiry="2031-06")
    assert (answer.accountNumber, answer.status, answer.paymentType, answer.cardLastFour) == \
        ("ACC00000012", "APPLIED", "RECURRING_CARD", "1212")
    assert platform.query("SELECT a.payment_type, c.card_token FROM accounts a JOIN payment_cards c "
                          "USING (account_number) WHERE account_number = 'ACC00000012'") == \
        [("RECURRING_CARD", "tok_soap_12")]
    assert platform.query("SELECT cause FROM payment_type_changes WHERE account_number = 'ACC00000012'") == \
        [("api selfcare",)]
    back = client.service.SetPaymentType(accountNumber="ACC00000012", paymentType="MANUAL")
    assert (back.status, back.paymentType) == ("APPLIED", "MANUAL")


@pytest.mark.parametrize(("call", "field", "words"), [
    ({"accountNumber": "ACC00000012", "paymentType": "CHEQUE"}, "paymentType", "use one of MANUAL"),
    ({"accountNumber": "ACC09999999", "paymentType": "MANUAL"}, "accountNumber", "does not exist"),
    ({"accountNumber": "acc-12", "paymentType": "MANUAL"}, "accountNumber", "upper-case letters or digits"),
    ({"accountNumber": "ACC00000012", "paymentType": "RECURRING_CARD"}, "cardToken", "needs the provider's card"),
    ({"accountNumber": "ACC00000012", "paymentType": "RECURRING_CARD", "cardToken": "4111-1111-1111-1111"},
     "cardToken", "looks like a card number"),
    ({"accountNumber": "ACC00000012", "paymentType": "RECURRING_CARD", "cardToken": "tok_ok_123", "expiry": "13/30"},
     "expiry", "not a card expiry"),
    ({"accountNumber": "", "paymentType": "MANUAL"}, "accountNumber", "is required"),
])
def test_bad_input_is_a_soap_fault_naming_the_element(api, platform, call, field, words):
    with pytest.raises(Fault) as caught:
        soap_client(api).service.SetPaymentType(**call)
    assert caught.value.code.endswith("Client")
    assert fault_field(caught.value) == field
    assert words in caught.value.message
    assert "4111" not in caught.value.message.replace("************1111", "")
    assert platform.query("SELECT payment_type FROM accounts WHERE account_number = 'ACC00000012'") == [("MANUAL",)]


@pytest.mark.parametrize("key", [None, "not-a-key"])
def test_without_a_valid_key_the_operation_is_a_fault(api, key):
    with pytest.raises(Fault) as caught:
        soap_client(api, key).service.SetPaymentType(accountNumber="ACC00000012", paymentType="MANUAL")
    assert "API key" in caught.value.message


def test_a_malformed_envelope_is_a_fault_over_http(api):
    with api.client("SELFCARE_APP") as http:
        answer = http.post("/soap/payment-setup", content=b"<not-soap/>", headers={"Content-Type": "text/xml"})
        assert answer.status_code == 500 and "faultstring" in answer.text and "SetPaymentTypeRequest" in answer.text
        entity = http.post("/soap/payment-setup", headers={"Content-Type": "text/xml"}, content=(
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
            b'<t:SetPaymentTypeRequest xmlns:t="urn:cmp:payment-setup:v1"><t:accountNumber>&e;</t:accountNumber>'
            b'<t:paymentType>MANUAL</t:paymentType></t:SetPaymentTypeRequest></soap:Body></soap:Envelope>'))
        assert entity.status_code == 500 and "root:" not in entity.text
