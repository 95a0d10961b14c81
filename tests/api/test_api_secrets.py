"""Issue 18 items 9, 11, 12 and 13 at the HTTP API, through a real uvicorn server: card numbers in any field or
header are refused and never stored; the provider callback's signature header is parsed strictly; redirects
never come from the Host header; amounts and identifiers match their pattern exactly (no trailing newline)."""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import sqlite3

import orjson
import pytest

from cmp_pipelines.core.files.schemas import ecma_regex, first_error
from cmp_pipelines.core.money import MoneyError, parse_amount
from cmp_pipelines.core.payment_provider import SIGNATURE_HEADER, BadSignature, sign, verify
from tests.support.api import ACCOUNT, SECRET, hosted, pay, register

CARD_FORMS = ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "5555555555554444",
              "5555 5555 5555 4444", "5555_5555_5555_4444", "378282246310005"]


def assert_never_stored(platform, *extra: str) -> None:
    """No file under the data folder (API store, sandbox provider, main store, keys) holds a card number."""
    for path in platform.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for form in (*CARD_FORMS, *extra):
                assert form.encode() not in data, (path, form)


# ---- item 9: card numbers in API fields and headers ----------------------------------------------------------

@pytest.mark.parametrize("key", ["4111111111111111-1229", "5555555555554444", "pay-4111_1111_1111_1111",
                                 "5555.5555.5555.4444.123"])
def test_an_idempotency_key_holding_a_card_number_is_refused_and_never_stored(api, platform, key):
    with api.client() as http:
        register(http, ACCOUNT, "tok_valid_card")
        answer = pay(http, key=key)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["field"] == "Idempotency-Key"
    assert "contains a card number; use another random key" in problem["detail"]
    assert "************" in problem["detail"]
    assert _payments(api) == 0
    assert_never_stored(platform, key)


def test_uuid_idempotency_keys_are_never_refused_as_card_numbers():
    import uuid

    from cmp_pipelines.api.payments import holds_card_number
    from cmp_pipelines.core.cards import find_pan

    keys = [str(uuid.UUID(int=random.Random(seed).getrandbits(128), version=4)) for seed in range(20_000)]
    assert any(find_pan(key) for key in keys), "random UUIDs do hold Luhn-valid windows: the exemption matters"
    assert not any(holds_card_number(key) for key in keys)
    assert not holds_card_number(keys[0].upper())
    assert holds_card_number("4111-1111-1111-1111-1229") and holds_card_number("key-4111111111111111")


def _payments(api) -> int:
    with api.client() as http:
        return len(http.get(f"/v1/accounts/{ACCOUNT}/payments").json()["payments"])


@pytest.mark.parametrize(("route", "body", "field"), [
    ("card", {"card_token": "4111111111111111-1229", "last_four": "1111"}, "card_token"),
    ("card", {"card_token": "tok_5555555555554444_123"}, "card_token"),
    ("card", {"card_token": "5555_5555_5555_4444"}, "card_token"),
    ("payment-type", {"payment_type": "RECURRING_CARD", "card_token": "4111111111111111-1229"}, "card_token"),
    ("mandates", {"sort_code": "12-34-56", "bank_account": "12345678",
                  "account_name": "paid 01.12.2026 378282246310005"}, "account_name"),
])
def test_a_card_token_or_name_holding_a_card_number_is_a_422_with_a_masked_message(api, platform, route, body,
                                                                                   field):
    with api.client() as http:
        method = http.post if route == "mandates" else http.put
        answer = method(f"/v1/accounts/{ACCOUNT}/{route}", json=body)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["field"] == field
    assert "card number" in problem["detail"]
    assert_never_stored(platform)
    assert platform.query("SELECT count(*) FROM payment_cards WHERE account_number = ?", [ACCOUNT]) == [(0,)]


@pytest.mark.parametrize("reference", ["5555555555554444 123", "4111 1111 1111 1111 12/29",
                                       "paid 01.12.2026 378282246310005"])
def test_a_payment_reference_holding_a_card_number_beside_other_digits_is_refused(api, platform, reference):
    with api.client() as http:
        register(http, ACCOUNT, "tok_valid_card")
        answer = pay(http, reference=reference)
    assert answer.status_code == 422 and answer.json()["field"] == "reference"
    assert_never_stored(platform)


def test_a_soap_card_token_holding_a_card_number_is_a_fault_with_a_masked_message(api, platform):
    envelope = (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:t="urn:cmp:payment-setup:v1">'
        "<soap:Body><t:SetPaymentTypeRequest><t:accountNumber>ACC00000012</t:accountNumber>"
        "<t:paymentType>RECURRING_CARD</t:paymentType><t:cardToken>4111111111111111-1229</t:cardToken>"
        "</t:SetPaymentTypeRequest></soap:Body></soap:Envelope>")
    with api.client("SELFCARE_APP") as http:
        answer = http.post("/soap/payment-setup", content=envelope.encode(), headers={"Content-Type": "text/xml"})
    assert answer.status_code == 500 and "<faultcode>soap:Client</faultcode>" in answer.text
    assert "cardToken" in answer.text and "looks like a card number" in answer.text
    assert "************1111-****" in answer.text and "4111111111111111" not in answer.text
    assert_never_stored(platform)


def test_a_signed_callback_carrying_a_card_number_completes_the_payment_with_it_masked(api, platform):
    """A genuine outcome is never refused (the provider would retry it for ever); what it carries is masked."""
    with api.client() as http:
        payment = hosted(http)
        session = payment["redirect_url"].rsplit("/", 1)[1]
        body = orjson.dumps({"session_id": session, "status": "SUCCEEDED",
                             "provider_reference": "4111 1111 1111 1111", "last_four": "5555555555554444"})
        answer = http.post("/v1/provider/callbacks", content=body,
                           headers={SIGNATURE_HEADER: sign(SECRET, body), "Content-Type": "application/json"})
        assert answer.status_code == 200 and answer.json()["status"] == "SUCCEEDED"
        seen = http.get(f"/v1/payments/{payment['payment_id']}").json()
    assert (seen["provider_reference"], seen["last_four"]) == ("************1111", "************4444")
    assert_never_stored(platform)


# ---- item 11: the callback signature header, parsed strictly ------------------------------------------------

BODY = b'{"session_id":"hs_1","status":"SUCCEEDED"}'
NOW = 1_764_600_000


def _header(timestamp: int = NOW, body: bytes = BODY, secret: bytes = SECRET) -> str:
    return sign(secret, body, timestamp)


def _hex(timestamp: int = NOW) -> str:
    return hmac.new(SECRET, f"{timestamp}.".encode() + BODY, hashlib.sha256).hexdigest()


def test_a_well_formed_fresh_signature_is_accepted():
    assert _header() == f"t={NOW},v1={_hex()}"
    verify(SECRET, BODY, _header(), 300, now=NOW)
    verify(SECRET, BODY, _header(NOW - 300), 300, now=NOW)  # at the edge of the tolerance, both ways
    verify(SECRET, BODY, _header(NOW + 300), 300, now=NOW)


@pytest.mark.parametrize("header", [
    f"t= {NOW},v1={_hex()}",  # the case: a space after t= (int() strips it)
    f"t={NOW} ,v1={_hex()}", f"t={NOW}, v1={_hex()}", f" t={NOW},v1={_hex()}", f"t={NOW},v1={_hex()} ",
    f"t={NOW},v1={_hex()}\n", f"t=\t{NOW},v1={_hex()}",
    f"t={NOW}", f"v1={_hex()}", f"t={NOW},", f",v1={_hex()}", "t=,v1=", "t", "=", ",",
    f"t={NOW},v1={_hex()},v1={_hex()}", f"t={NOW},t={NOW},v1={_hex()}",  # duplicate keys
    f"v1={_hex()},t={NOW}",  # other order
    f"t={NOW},v1={_hex()},v0=abc",  # an extra scheme
    f"t={NOW},v1={_hex()[:-1]}", f"t={NOW},v1={_hex()}0", f"t={NOW},v1={_hex()[:-1]}g",  # length, non-hex
    f"t={NOW},v1={_hex().upper()}",  # upper-case hex: ours is lower-case
    f"t=+{NOW},v1={_hex()}", f"t=-{NOW},v1={_hex()}", f"t=0{NOW},v1={_hex()}", f"t={NOW}.0,v1={_hex()}",
    f"t=1_764_600_000,v1={_hex()}", f"t=\uff11{NOW},v1={_hex()}",  # underscores and a full-width digit
    f"t={NOW};v1={_hex()}", f"T={NOW},V1={_hex()}", f"t:{NOW},v1:{_hex()}",
    "t=" + "9" * 5000 + f",v1={_hex()}",  # huge: refused before any int()
    "x" * 100_000,
])
def test_a_malformed_signature_header_is_refused_whatever_its_shape(header):
    with pytest.raises(BadSignature, match="malformed X-Provider-Signature header: expected exactly "
                                           r"t=<unix seconds>,v1=<64 lower-case hex digits>"):
        verify(SECRET, BODY, header, 300, now=NOW)


@pytest.mark.parametrize(("header", "message"), [
    (None, "the X-Provider-Signature header is missing"),
    ("", "the X-Provider-Signature header is missing"),
    (_header(NOW - 301), "signature timestamp is more than 300 s old (replayed callback?)"),
    (_header(NOW + 301), "signature timestamp is more than 300 s in the future"),
    (_header(secret=b"another secret"), "signature does not match the body"),
    (_header(body=b"{}"), "signature does not match the body"),
])
def test_a_missing_stale_future_or_wrong_signature_is_refused(header, message):
    with pytest.raises(BadSignature) as caught:
        verify(SECRET, BODY, header, 300, now=NOW)
    assert str(caught.value) == message


def test_a_callback_with_a_space_after_t_is_refused_over_http_and_changes_nothing(api, platform):
    with api.client() as http:
        payment = hosted(http)
        session = payment["redirect_url"].rsplit("/", 1)[1]
        body = orjson.dumps({"session_id": session, "status": "SUCCEEDED", "provider_reference": "SBX-1"})
        good = sign(SECRET, body)
        for header in (good.replace("t=", "t= "), good + ",v1=" + "0" * 64, good.upper()):
            answer = http.post("/v1/provider/callbacks", content=body,
                               headers={SIGNATURE_HEADER: header, "Content-Type": "application/json"})
            assert answer.status_code == 401, header
            assert answer.json()["detail"].startswith("callback refused: malformed X-Provider-Signature header")
        assert http.get(f"/v1/payments/{payment['payment_id']}").json()["status"] == "AWAITING_CARD"
        answer = http.post("/v1/provider/callbacks", content=body,
                           headers={SIGNATURE_HEADER: good, "Content-Type": "application/json"})
        assert answer.status_code == 200 and answer.json()["status"] == "SUCCEEDED"


# ---- item 12: redirects come from the configured public base URL only --------------------------------------

def test_a_forged_host_header_never_reaches_the_redirect_the_callback_or_the_wsdl(api, platform):
    with api.client() as http:
        answer = http.post("/v1/payments", json={"account_number": "ACC00000002", "amount": "40.00",
                                                 "method": "HOSTED_PAGE"},
                           headers={"Idempotency-Key": secrets.token_urlsafe(18), "Host": "evil.example:9",
                                    "X-Forwarded-Host": "evil.example", "Forwarded": "host=evil.example"})
        assert answer.status_code == 201, answer.text
        payment = answer.json()
        assert payment["redirect_url"].startswith(f"{api.base_url}/sandbox-provider/pay/hs_")
        assert answer.headers["Location"] == payment["redirect_url"]
        wsdl = http.get("/soap/payment-setup", params={"wsdl": ""}, headers={"Host": "evil.example:9"})
        assert f'<soap:address location="{api.base_url}/soap/payment-setup"/>' in wsdl.text
    with sqlite3.connect(platform.root / "sandbox_provider.sqlite") as con:
        urls = [u for (u,) in con.execute("SELECT callback_url FROM sessions")]  # where the outcome is posted
    assert urls == [f"{api.base_url}/v1/provider/callbacks"]
    assert_never_stored(platform, "evil.example")


def test_the_public_base_url_setting_is_used_and_validated(tmp_path, monkeypatch):
    import shutil

    from cmp_pipelines.core.config import ConfigError
    from cmp_pipelines.core.config_payments import load_provider_settings
    from cmp_pipelines.core.settings import PROJECT_ROOT

    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    path = config / "payment_provider.yaml"
    text = path.read_text()
    assert load_provider_settings(config).public_base_url is None
    path.write_text(text.replace("public_base_url: null", "public_base_url: https://pay.example.com/api/"))
    assert load_provider_settings(config).public_base_url == "https://pay.example.com/api"
    for bad in ("ftp://x", "https://", "https://user@evil.example", "https://x/?q=1", "https://x/#f", "'https://x y'",
                "https://x:port"):
        path.write_text(text.replace("public_base_url: null", f"public_base_url: {bad}"))
        with pytest.raises(ConfigError, match="public_base_url"):
            load_provider_settings(config)


# ---- item 13: amounts and identifiers match their pattern exactly ------------------------------------------

@pytest.mark.parametrize("amount", ["10.00\n", "10.00\r\n", "\n10.00", "10.00 ", "10.00\x00"])
def test_an_amount_with_a_trailing_newline_is_refused_by_the_api(api, platform, amount):
    with api.client() as http:
        register(http, ACCOUNT, "tok_valid_card")
        answer = pay(http, amount=amount)
    assert answer.status_code == 422 and answer.json()["field"] == "amount", answer.text
    assert "exactly two decimal places" in answer.json()["detail"]
    assert _payments(api) == 0


def test_parse_amount_and_every_schema_pattern_refuse_a_trailing_newline():
    assert parse_amount("10.00") == 1000
    with pytest.raises(MoneyError, match=r"amount '10.00\\n' is not a decimal string with exactly two"):
        parse_amount("10.00\n")
    record = {"record_id": "1", "account_number": "ACC1", "invoice_number": None, "amount": "10.00\n",
              "payment_date": None, "payment_method": "CASH", "reference": None}
    assert first_error("nrp_payments", record, "payment") == r"amount: '10.00\n' does not match " \
                                                            r"'^(0|[1-9][0-9]{0,11})\\.[0-9]{2}$'"
    assert first_error("nrp_payments", {**record, "amount": "10.00"}, "payment") is None
    assert ecma_regex(r"^[$a]+$").pattern == r"^[$a]+\Z"  # a `$` inside a class or escaped stays literal
    assert ecma_regex(r"^a\$b$").pattern == r"^a\$b\Z"
    assert ecma_regex(r"^[]$]$").pattern == r"^[]$]\Z"


def test_every_schema_pattern_refuses_what_it_accepts_plus_a_newline():
    """Each pattern of every contract schema, probed with the examples its own tests use, refuses them once a
    newline is appended: jsonschema's own `pattern` keyword (re.search with Python's `$`) accepts them."""
    import jsonschema

    from cmp_pipelines.core.files.schemas import SCHEMA_DIR, schema

    samples = ["10.00", "-10.00", "GBP", "PAYPOINT", "2026-11-20T14:03:00Z", "ACC00000001", "WHD-0123456789abcdef"]
    checked = 0
    for path in sorted(SCHEMA_DIR.glob("*.schema.json")):
        patterns = set()
        _collect_patterns(schema(path.name.removesuffix(".schema.json")), patterns)
        for pattern in patterns:
            for sample in samples:
                if ecma_regex(pattern).search(sample):
                    assert not ecma_regex(pattern).search(sample + "\n"), (path.name, pattern)
                    assert jsonschema.Draft202012Validator({"pattern": pattern}).is_valid(sample + "\n") \
                        == pattern.endswith("$"), "jsonschema's own keyword, for comparison"
                    checked += 1
    assert checked >= 20


def _collect_patterns(node: object, found: set) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            found.add(node["pattern"])
        for value in node.values():
            _collect_patterns(value, found)
    elif isinstance(node, list):
        for value in node:
            _collect_patterns(value, found)


@pytest.mark.parametrize(("route", "body", "field"), [
    ("card", {"card_token": "tok_valid_card\n"}, "card_token"),
    ("card", {"card_token": "tok_valid_card", "last_four": "4242\n"}, "last_four"),
    ("card", {"card_token": "tok_valid_card", "expiry": "12/30\n"}, "expiry"),
    ("mandates", {"sort_code": "12-34-56", "bank_account": "12345678", "account_name": "A PAYER",
                  "reference": "REF00012\n"}, "reference"),
])
def test_identifiers_with_a_trailing_newline_are_refused(api, platform, route, body, field):
    with api.client() as http:
        method = http.post if route == "mandates" else http.put
        answer = method(f"/v1/accounts/{ACCOUNT}/{route}", json=body)
    assert answer.status_code == 422 and answer.json()["field"] == field, answer.text
    assert "\n" not in str(platform.query("SELECT * FROM payment_cards"))
