"""SOAP 1.1 (document/literal): the payment-type set-up operation the seeds describe for selfcare and
third-party systems. A hand-written WSDL and a small lxml handler: one operation does not warrant spyne,
whose last release predates Python 3.11 and which would need a WSGI bridge inside this ASGI app.

Faults follow WS-I Basic Profile: HTTP 500 with a soap:Fault; `detail/ValidationFault/field` names the input.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from lxml import etree
from starlette.concurrency import run_in_threadpool

from cmp_pipelines.api.context import Ctx, authenticate
from cmp_pipelines.api.problems import Problem
from cmp_pipelines.api.setup import submit
from cmp_pipelines.core.cards import mask_pans_in

router = APIRouter(include_in_schema=False)
TNS = "urn:cmp:payment-setup:v1"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PATH = "/soap/payment-setup"
FIELDS = {"accountNumber": "account_number", "paymentType": "payment_type", "cardToken": "card_token",
          "lastFour": "last_four", "expiry": "expiry", "provider": "provider"}
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)

WSDL = """<?xml version="1.0" encoding="UTF-8"?>
<definitions name="PaymentSetup" targetNamespace="{tns}" xmlns="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:tns="{tns}" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <types>
    <xsd:schema targetNamespace="{tns}" elementFormDefault="qualified">
      <xsd:simpleType name="PaymentType">
        <xsd:restriction base="xsd:string">
          <xsd:enumeration value="MANUAL"/><xsd:enumeration value="RECURRING_CARD"/>
          <xsd:enumeration value="DIRECT_DEBIT"/>
        </xsd:restriction>
      </xsd:simpleType>
      <xsd:element name="SetPaymentTypeRequest">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="accountNumber" type="xsd:string"/>
          <xsd:element name="paymentType" type="xsd:string"/>
          <xsd:element name="cardToken" type="xsd:string" minOccurs="0"/>
          <xsd:element name="lastFour" type="xsd:string" minOccurs="0"/>
          <xsd:element name="expiry" type="xsd:string" minOccurs="0"/>
          <xsd:element name="provider" type="xsd:string" minOccurs="0"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="SetPaymentTypeResponse">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="accountNumber" type="xsd:string"/>
          <xsd:element name="status" type="xsd:string"/>
          <xsd:element name="paymentType" type="xsd:string" minOccurs="0"/>
          <xsd:element name="cardLastFour" type="xsd:string" minOccurs="0"/>
          <xsd:element name="requestId" type="xsd:string" minOccurs="0"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="ValidationFault">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="field" type="xsd:string"/>
          <xsd:element name="message" type="xsd:string"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
    </xsd:schema>
  </types>
  <message name="SetPaymentTypeInput"><part name="parameters" element="tns:SetPaymentTypeRequest"/></message>
  <message name="SetPaymentTypeOutput"><part name="parameters" element="tns:SetPaymentTypeResponse"/></message>
  <message name="ValidationFaultMessage"><part name="fault" element="tns:ValidationFault"/></message>
  <portType name="PaymentSetupPortType">
    <operation name="SetPaymentType">
      <input message="tns:SetPaymentTypeInput"/>
      <output message="tns:SetPaymentTypeOutput"/>
      <fault name="ValidationFault" message="tns:ValidationFaultMessage"/>
    </operation>
  </portType>
  <binding name="PaymentSetupBinding" type="tns:PaymentSetupPortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="SetPaymentType">
      <soap:operation soapAction="{tns}#SetPaymentType"/>
      <input><soap:body use="literal"/></input>
      <output><soap:body use="literal"/></output>
      <fault name="ValidationFault"><soap:fault name="ValidationFault" use="literal"/></fault>
    </operation>
  </binding>
  <service name="PaymentSetupService">
    <port name="PaymentSetupPort" binding="tns:PaymentSetupBinding">
      <soap:address location="{location}"/>
    </port>
  </service>
</definitions>
"""


def _xml(root: etree._Element, status: int) -> Response:
    return Response(etree.tostring(root, xml_declaration=True, encoding="UTF-8"), status_code=status,
                    media_type="text/xml; charset=utf-8")


def _envelope() -> tuple[etree._Element, etree._Element]:
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV, "tns": TNS})
    return envelope, etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body")


def fault(code: str, message: str, field: str | None = None) -> Response:
    envelope, body = _envelope()
    node = etree.SubElement(body, f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(node, "faultcode").text = f"soap:{code}"
    etree.SubElement(node, "faultstring").text = mask_pans_in(message)
    if field:
        detail = etree.SubElement(etree.SubElement(node, "detail"), f"{{{TNS}}}ValidationFault")
        etree.SubElement(detail, f"{{{TNS}}}field").text = field
        etree.SubElement(detail, f"{{{TNS}}}message").text = mask_pans_in(message)
    return _xml(envelope, 500)


@router.get(PATH)
def wsdl(ctx: Ctx) -> Response:
    location = ctx.public_base_url + PATH  # not the Host header: clients post where the WSDL says
    return Response(WSDL.format(tns=TNS, location=location), media_type="text/xml; charset=utf-8")


def _request_fields(payload: bytes) -> dict:
    try:
        root = etree.fromstring(payload, PARSER)
    except etree.XMLSyntaxError as exc:
        raise Problem(400, f"the request is not well-formed XML: {exc.msg}", field="Envelope") from None
    body = root.find(f"{{{SOAP_ENV}}}Body") if root.tag == f"{{{SOAP_ENV}}}Envelope" else None
    operation = body[0] if body is not None and len(body) else None
    if operation is None or operation.tag != f"{{{TNS}}}SetPaymentTypeRequest":
        raise Problem(400, f"expected a SOAP 1.1 envelope whose body is {{{TNS}}}SetPaymentTypeRequest",
                      field="Body")
    values: dict = {name: None for name in FIELDS.values()}
    for child in operation:
        name = etree.QName(child).localname
        if name not in FIELDS:
            raise Problem(422, f"{name}: not an element of SetPaymentTypeRequest", field=name)
        values[FIELDS[name]] = (child.text or "").strip()
    for required in ("accountNumber", "paymentType"):
        if not values[FIELDS[required]]:
            raise Problem(422, f"{required}: is required", field=required)
    return values


@router.post(PATH)
async def set_payment_type(request: Request, ctx: Ctx) -> Response:
    try:
        who = authenticate(ctx, request.headers.get("X-API-Key"))
        values = _request_fields(await request.body())
        number = values.pop("account_number")
        status, result, _ = await run_in_threadpool(submit, ctx, who, "PAYMENT_TYPE", number, values)
    except Problem as problem:
        soap_field = {v: k for k, v in FIELDS.items()}.get(problem.field or "", problem.field)
        return fault("Client", problem.detail, soap_field)
    envelope, body = _envelope()
    answer = etree.SubElement(body, f"{{{TNS}}}SetPaymentTypeResponse")

    def put(name: str, value: str | None) -> None:
        if value is not None:
            etree.SubElement(answer, f"{{{TNS}}}{name}").text = value

    put("accountNumber", number)
    put("status", "APPLIED" if status == 200 else "QUEUED")
    put("paymentType", result.get("payment_type") if status == 200 else values["payment_type"])
    put("cardLastFour", ((result.get("card") or {}).get("last_four")) if status == 200 else None)
    put("requestId", result.get("request_id") if status == 202 else None)
    return _xml(envelope, 200)
