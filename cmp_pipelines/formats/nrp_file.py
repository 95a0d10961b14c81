"""Reading the non-recurring payments file: the envelope by JSON Schema, the records column-wise.

Validating a million records one by one with jsonschema takes minutes; instead the records become
Arrow string columns and the schema's rules for a payment are applied as vectorised SQL in the
load step (`domain/nrp_rules.py`). Only records whose JSON shape is wrong (not an object, missing or
extra keys, a non-string value) are described here, one by one, and those are few.
"""

from __future__ import annotations

import re
from decimal import Decimal

import orjson
import pyarrow as pa

from cmp_pipelines.formats.errors import FileRejected
from cmp_pipelines.formats.schemas import first_error, schema

PAYMENT_FIELDS = (
    "record_id", "account_number", "invoice_number", "amount", "payment_date", "payment_method", "reference",
)
_FIELD_SET = frozenset(PAYMENT_FIELDS)
_JSON_TYPE = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def parse_document(plaintext: bytes) -> dict:
    if not plaintext or plaintext.isspace():  # isspace stops at the first '{'; strip() would copy 200 MB
        raise FileRejected("EMPTY_FILE", "the decrypted file is empty")
    try:
        document = orjson.loads(plaintext)
    except orjson.JSONDecodeError as exc:
        raise FileRejected("NOT_JSON", f"the decrypted content is not valid JSON: {exc}") from exc
    return document


def validate_envelope(document: object) -> dict:
    """Check everything but the payment records against the schema; returns the header."""
    if isinstance(document, dict) and isinstance(document.get("payments"), list):
        shell = {**document, "payments": []}
    else:
        shell = document
    error = first_error("nrp_payments", shell)
    if error:
        raise FileRejected("SCHEMA_VIOLATION", f"the file does not match the non-recurring payments schema: {error}")
    header = document["header"]
    # Python's `re` lets `$` match before a final newline; JSON Schema (ECMA-262) does not. Hold the header to
    # the standard, so "GBP\n" is refused here as it would be by any other validator.
    for field, rule in schema("nrp_payments")["$defs"]["header"]["properties"].items():
        value = header.get(field)
        if isinstance(value, str) and "pattern" in rule and not re.fullmatch(rule["pattern"].strip("^$"), value):
            raise FileRejected(
                "SCHEMA_VIOLATION",
                f"the file does not match the non-recurring payments schema: header.{field}: "
                f"{value!r} does not match {rule['pattern']!r}",
            )
    return header


def check_control_totals(header: dict, payments: list, amounts: pa.Array) -> None:
    """`record_count` and `total_amount` must equal the records: a mismatch means a damaged or partial file."""
    if header["record_count"] != len(payments):
        raise FileRejected(
            "CONTROL_TOTALS",
            f"header record_count is {header['record_count']} but the file holds {len(payments)} payment records",
        )
    total = sum_exact(amounts)
    declared = Decimal(header["total_amount"])
    if total != declared:
        raise FileRejected(
            "CONTROL_TOTALS",
            f"header total_amount is {declared} but the payment amounts add up to {_plain(total)}",
        )


def sum_exact(amounts: pa.Array) -> Decimal:
    """Exact sum of the two-place amounts (either sign) via Arrow decimals.

    Amounts that are not two-place decimals cannot appear in a two-place control total; they are left
    out here and rejected record by record, so one malformed amount does not sink a whole file.
    """
    import pyarrow.compute as pc

    looks_decimal = pc.match_substring_regex(amounts, r"^-?[0-9]{1,18}\.[0-9]{2}$")
    usable = pc.filter(amounts, pc.fill_null(looks_decimal, False))
    if len(usable) == 0:
        return Decimal("0.00")
    as_decimal = pc.cast(usable, pa.decimal128(38, 2))
    return pc.sum(as_decimal).as_py()


def _describe(position: int, record: object) -> str:
    if not isinstance(record, dict):
        return f"record {position} is a JSON {_JSON_TYPE.get(type(record), 'value')}, not an object"
    problems = []
    missing = [f for f in PAYMENT_FIELDS if f not in record]
    extra = sorted(str(k) for k in record if k not in _FIELD_SET)
    if missing:
        problems.append("missing field(s) " + ", ".join(missing))
    if extra:
        problems.append("unknown field(s) " + ", ".join(extra))
    for field in PAYMENT_FIELDS:
        value = record.get(field)
        if value is not None and type(value) is not str:
            problems.append(f"field {field!r} must be a string, got a JSON {_JSON_TYPE.get(type(value), 'value')}")
    return "; ".join(problems)


_STRUCT = pa.struct([(field, pa.string()) for field in PAYMENT_FIELDS])


def _exact_shape(payments: list) -> bool:
    """True when every record is an object with exactly the seven fields, checked at C speed.

    Every record having seven keys, and the union of all keys being the seven fields, means each record
    holds exactly those seven (non-dict records make `len` or the union fail or differ).
    """
    if not payments:
        return True
    try:
        return set(map(len, payments)) == {len(PAYMENT_FIELDS)} and set().union(*payments) == _FIELD_SET
    except TypeError:
        return False


def payment_columns(payments: list) -> tuple[pa.Table, dict[int, str]]:
    """Arrow string columns of the payment fields (1-based `position` added), plus shape errors by position."""
    positions = pa.array(range(1, len(payments) + 1), type=pa.int64())
    if _exact_shape(payments):
        try:
            records = pa.array(payments, type=_STRUCT)
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            pass  # some value is not a string: describe the records one by one below
        else:
            return pa.Table.from_arrays([positions, *records.flatten()], ["position", *PAYMENT_FIELDS]), {}
    shape_errors: dict[int, str] = {}
    try:
        all_exact = all(record.keys() == _FIELD_SET for record in payments)
    except AttributeError:
        all_exact = False
    if all_exact:
        rows = payments
    else:
        rows = []
        for index, record in enumerate(payments):
            if type(record) is dict and record.keys() == _FIELD_SET:
                rows.append(record)
            else:
                shape_errors[index + 1] = _describe(index + 1, record)
                rows.append(record if type(record) is dict else {})
    columns = {"position": positions}
    for field in PAYMENT_FIELDS:
        values = [record.get(field) for record in rows]
        try:
            columns[field] = pa.array(values, type=pa.string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            cleaned = []
            for index, value in enumerate(values):
                if value is None or type(value) is str:
                    cleaned.append(value)
                else:
                    shape_errors.setdefault(index + 1, _describe(index + 1, payments[index]))
                    cleaned.append(None)
            columns[field] = pa.array(cleaned, type=pa.string())
    return pa.table(columns), shape_errors


def _plain(value: Decimal) -> str:
    cents = value.quantize(Decimal("0.01"))
    return f"{cents:f}" if cents == value else f"{value.normalize():f}"
