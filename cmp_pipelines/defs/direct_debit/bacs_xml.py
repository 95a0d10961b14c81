"""Bacs XML reports from the bureau: ADDACS (mandate advices) and ARUDD (returned debits).

Real reports are ISO-8859-1 and say so in their XML declaration; a report whose bytes do not match its
declaration, or that is not well formed, is refused with the line and column at fault. defusedxml refuses
entity expansion and external references, so a hostile report cannot blow up or reach out.

Readers return every element's attributes as strings (None when absent), in document order, as an Arrow
table: checking the values is the job of the set-based rules, which report every bad record at once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError, SubElement, tostring

import pyarrow as pa
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from cmp_pipelines.core.cards import find_pan, mask_pans_in
from cmp_pipelines.core.files.errors import FileRejected
from cmp_pipelines.core.money import format_minor

ADDACS_PATH = "Data/MessagingAdvices/MessagingAdvice"
ARUDD_RECORDS = "Data/ARUDD/Advice/OriginatingAccountRecords/OriginatingAccountRecord"
ADDACS_ATTRIBUTES = {
    "reference": "reference", "payer-name": "payer_name", "payer-sort-code": "payer_sort_code",
    "payer-account-number": "payer_account_number", "reason-code": "reason_code",
    "payer-new-sort-code": "new_sort_code", "payer-new-account-number": "new_account_number",
    "effective-date": "effective_date",
}
ARUDD_ATTRIBUTES = {
    "ref": "reference", "transCode": "transaction_code", "returnCode": "return_code",
    "returnDescription": "return_description", "originalProcessingDate": "original_processing_date",
    "valueOf": "amount", "currency": "currency",
}
PAYER_ACCOUNT_ATTRIBUTES = {"sortCode": "payer_sort_code", "number": "payer_account"}
_AMOUNT = re.compile(r"[0-9]{1,11}\.[0-9]{2}", re.ASCII)
_COUNT = re.compile(r"[0-9]{1,9}", re.ASCII)  # ASCII digits only: str.isdigit() and int() accept '²' and '٣'
_CANDIDATE = re.compile(r"[0-9](?:[^0-9A-Za-z]*[0-9]){12,}", re.ASCII)  # 13+ digits: worth the card-number check
_DECLARATION = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


@dataclass(frozen=True)
class Report:
    service_user_number: str | None
    report_id: str | None  # what identifies the report across resends: a resent report is refused
    records: pa.Table  # one row per advice or returned item, `position` from 1
    masked: tuple[str, ...] = ()  # "<field> of <element> <position>" for every value a card number was masked in


def _declared_encoding(data: bytes) -> str:
    match = _DECLARATION.match(data[:200])
    return match.group(1).decode("ascii") if match else "UTF-8 (no declaration)"


def parse(data: bytes, kind: str) -> Element:
    """The document root; refuses what is not well formed, not in its declared encoding, or not a BACSDocument."""
    declared = _declared_encoding(data)
    try:
        root = fromstring(data)
    except DefusedXmlException as exc:
        raise FileRejected("UNSAFE_XML", f"the {kind} report uses a forbidden XML feature ({exc})") from exc
    except LookupError as exc:  # an encoding Python does not know: a refusal, never a crash leaving it inbound
        raise FileRejected("WRONG_ENCODING", f"the {kind} report declares the encoding {declared}, which is not a "
                                             "known encoding; Bacs reports are ISO-8859-1 and must declare it") from exc
    except ParseError as exc:
        line, column = exc.position
        reason = str(exc).split(":")[0]
        if "encoding" in reason or (declared.upper().startswith("UTF-8") and _not_utf8(data)):
            raise FileRejected(
                "WRONG_ENCODING",
                f"the {kind} report's bytes are not in its declared encoding {declared} (line {line}, column "
                f"{column + 1}: {reason}); Bacs reports are ISO-8859-1 and must declare it",
            ) from exc
        raise FileRejected("MALFORMED_XML", f"the {kind} report is not well-formed XML at line {line}, column "
                                            f"{column + 1}: {reason}") from exc
    if root.tag != "BACSDocument":
        raise FileRejected("NOT_A_BACS_REPORT", f"the root element is <{root.tag}>, expected <BACSDocument>")
    return root


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _rows(elements: list[Element], attributes: dict[str, str]) -> dict[str, list]:
    return {name: [element.get(attr) for element in elements] for attr, name in attributes.items()}


def _table(columns: dict[str, list]) -> pa.Table:
    """Strings throughout (an empty report still has typed columns), plus the 1-based position."""
    count = len(next(iter(columns.values())))
    arrays = {name: pa.array(values, pa.string()) for name, values in columns.items()}
    return pa.table({"position": pa.array(range(1, count + 1), pa.int64()), **arrays})


def read_addacs(data: bytes) -> Report:
    root = parse(data, "ADDACS")
    if root.find("Data/MessagingAdvices") is None:
        raise FileRejected("NOT_AN_ADDACS_REPORT", "no BACSDocument/Data/MessagingAdvices element: this is not an "
                                                   "ADDACS report")
    advices = root.findall(ADDACS_PATH)
    users = {a.get("user-number") for a in advices if a.get("user-number")}
    header = root.find("Data/MessagingAdvices/MessagingHeader")
    if header is not None and header.get("user-number"):
        users.add(header.get("user-number"))
    if len(users) > 1:
        raise FileRejected("SERVICE_USER_MISMATCH", f"the report mixes service user numbers {sorted(users)}")
    columns = _rows(advices, ADDACS_ATTRIBUTES)
    masked = _mask_card_numbers(columns, {"payer_name": "payer-name"}, "MessagingAdvice")
    sun = next(iter(users), None)
    return Report(sun, _addacs_report_id(header, sun, advices), _table(columns), masked)


def _addacs_report_id(header: Element | None, sun: str | None, advices: list[Element]) -> str:
    """Real ADDACS reports carry no advice number: a report is its generation date and time, its service user and
    its set of advices, whitespace aside, so a resend that differs only in layout or spacing is still the same."""
    def norm(value: str | None) -> str:
        return " ".join((value or "").split())

    stamp = [norm(header.get(name)) if header is not None else "" for name in ("report-generation-date",
                                                                                 "report-generation-time")]
    advice_set = sorted(tuple(sorted((norm(k), norm(v)) for k, v in a.attrib.items())) for a in advices)
    digest = hashlib.sha256(repr(advice_set).encode()).hexdigest()[:16]
    return f"ADDACS {sun or '-'} {stamp[0] or '-'} {stamp[1] or '-'} advices {digest}"


def _mask_card_numbers(columns: dict[str, list], fields: dict[str, str], element: str) -> tuple[str, ...]:
    """Free text a bank sends is never stored with a card number in it: masked in place, each one reported.
    Only values holding 13 or more digits reach the card-number check (a report has few)."""
    masked = []
    for column, attribute in fields.items():
        values = columns[column]
        for index, value in enumerate(values):
            if value and _CANDIDATE.search(value) and find_pan(value):
                values[index] = mask_pans_in(value)
                masked.append(f"{attribute} of {element} {index + 1}")
    return tuple(masked)


def _report_id(header: Element | None, number: str, day: str) -> str | None:
    if header is None or not header.get(number):
        return None
    return f"{header.get(number)}/{header.get(day) or '-'}"


def read_arudd(data: bytes) -> Report:
    """Every ReturnedDebitItem, with its PayerAccount; each originating account's Totals must equal its items."""
    root = parse(data, "ARUDD")
    if root.find("Data/ARUDD") is None:
        raise FileRejected("NOT_AN_ARUDD_REPORT", "no BACSDocument/Data/ARUDD element: this is not an ARUDD report")
    licence = root.find("Data/ARUDD/ServiceLicenseInformation")
    items: list[Element] = []
    for index, record in enumerate(root.findall(ARUDD_RECORDS), start=1):
        returned = record.findall("ReturnedDebitItem")
        _check_totals(record.find("Totals"), returned, index)
        items.extend(returned)
    columns = _rows(items, ARUDD_ATTRIBUTES)
    payers = [item.find("PayerAccount") for item in items]
    for attr, name in PAYER_ACCOUNT_ATTRIBUTES.items():
        columns[name] = [p.get(attr) if p is not None else None for p in payers]
    masked = _mask_card_numbers(columns, {"return_description": "returnDescription"}, "ReturnedDebitItem")
    return Report(licence.get("userNumber") if licence is not None else None,
                  _report_id(root.find("Data/ARUDD/Header"), "adviceNumber", "currentProcessingDate"),
                  _table(columns), masked)


def _check_totals(totals: Element | None, items: list[Element], index: int) -> None:
    where = f"OriginatingAccountRecord {index}"
    if totals is None:
        raise FileRejected("TOTALS_MISSING", f"{where} has no Totals element to check its returned items against")
    count, value = totals.get("numberOf"), totals.get("valueOf")
    if count is None or not _COUNT.fullmatch(count):
        raise FileRejected("TOTALS_INVALID", f"{where}: Totals numberOf {count!r} is not a whole number in ASCII "
                                             "digits")
    if int(count) != len(items):
        raise FileRejected("TOTALS_MISMATCH", f"{where}: Totals numberOf says {int(count)} but it holds "
                                              f"{len(items)} ReturnedDebitItem elements")
    declared = _pence(value, f"{where}: Totals valueOf")
    values = [item.get("valueOf") or "" for item in items]
    if not all(_AMOUNT.fullmatch(v) for v in values):
        return  # a bad amount is rejected with its own record; the count still had to agree
    amounts = [int(v.replace(".", "")) for v in values]
    if sum(amounts) != declared:
        raise FileRejected("TOTALS_MISMATCH", f"{where}: Totals valueOf says {value} but its items add up to "
                                              f"{format_minor(sum(amounts))}")


def _pence(value: str | None, what: str) -> int:
    if value is None or not _AMOUNT.fullmatch(value):
        raise FileRejected("TOTALS_INVALID", f"{what} {value!r} must be a decimal amount with two places")
    return int(value.replace(".", ""))


# ---- writers: what a bureau sends, for the demo and the tests -------------------------------------------------


def _document(build) -> bytes:
    root = Element("BACSDocument")
    build(SubElement(root, "Data"), SubElement)
    return tostring(root, encoding="ISO-8859-1", xml_declaration=True)


def write_addacs(advices: list[dict], service_user_number: str, generation_time: str, day: str) -> bytes:
    """An ADDACS report in the real shape (no advice number: the generation date and time identify it); each
    advice's keys are the XML attribute names (reference, payer-name, reason-code, ...)."""
    def build(data, sub):
        messaging = sub(data, "MessagingAdvices")
        sub(messaging, "MessagingHeader", {"user-number": service_user_number, "report-generation-date": day,
                                           "report-generation-time": generation_time, "report-type": "REFT1019"})
        for advice in advices:
            sub(messaging, "MessagingAdvice", {"user-number": service_user_number, "record-type": "A",
                                               **{k: v for k, v in advice.items() if v is not None}})
    return _document(build)


def write_arudd(items: list[dict], service_user_number: str, advice_number: str, day: str,
                totals: tuple[int, str] | None = None) -> bytes:
    """An ARUDD report with one originating account; `items` hold ReturnedDebitItem attributes plus an optional
    'PayerAccount' mapping. `totals` (count, value) overrides the correct Totals."""
    def build(data, sub):
        arudd = sub(data, "ARUDD")
        sub(arudd, "Header", {"reportType": "REFT1027", "adviceNumber": advice_number, "currentProcessingDate": day})
        sub(arudd, "ServiceLicenseInformation", {"userNumber": service_user_number})
        record = sub(sub(sub(arudd, "Advice"), "OriginatingAccountRecords"), "OriginatingAccountRecord")
        for item in items:
            attributes = {k: v for k, v in item.items() if k != "PayerAccount" and v is not None}
            element = sub(record, "ReturnedDebitItem", attributes)
            if item.get("PayerAccount"):
                sub(element, "PayerAccount", item["PayerAccount"])
        pence = sum(int(i["valueOf"].replace(".", "")) for i in items if _AMOUNT.fullmatch(i.get("valueOf") or ""))
        count, value = totals or (len(items), format_minor(pence))
        sub(record, "Totals", {"numberOf": str(count), "valueOf": value, "currency": "GBP"})
    return _document(build)
