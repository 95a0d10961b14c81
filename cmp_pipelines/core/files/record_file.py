"""Reading a generic JSON partner file (a header, then records): the envelope by JSON Schema, records column-wise.

Validating a million records one by one with jsonschema takes minutes; instead the records become
Arrow string columns and each format's record rules run as vectorised SQL in its load step. Only
records whose JSON shape is wrong (not an object, missing or extra keys, a non-string value) are
described here, one by one, and those are few.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cmp_pipelines.core.cards import PAN_CANDIDATE_SQL, PAN_MIN_DIGITS, find_pan, mask_pan, mask_pans_in, scan_pans
from cmp_pipelines.core.files.errors import FileRejected
from cmp_pipelines.core.files.schemas import first_error, schema

_TWO_PLACES = re.compile(r"-?(0|[1-9][0-9]{0,17})\.[0-9]{2}")
_JSON_TYPE = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


@dataclass(frozen=True)
class RecordFileSpec:
    schema_name: str  # core/files/schemas/<schema_name>.schema.json
    title: str  # how error messages name the format
    records_key: str  # the document's array of records
    fields: tuple[str, ...]  # every record holds exactly these, each a string or null
    record_noun: str  # "payment", "rejection": how messages name one record

    @cached_property
    def field_set(self) -> frozenset[str]:
        return frozenset(self.fields)

    @cached_property
    def struct(self) -> pa.StructType:
        return pa.struct([(name, pa.string()) for name in self.fields])


def parse_document(plaintext: bytes) -> dict:
    if not plaintext or plaintext.isspace():  # isspace stops at the first '{'; strip() would copy 200 MB
        raise FileRejected("EMPTY_FILE", "the decrypted file is empty")
    try:
        return orjson.loads(plaintext)
    except orjson.JSONDecodeError as exc:
        raise FileRejected("NOT_JSON", f"the decrypted content is not valid JSON: {exc}") from exc


def validate_envelope(spec: RecordFileSpec, document: object) -> dict:
    """Check everything but the records against the schema; returns the header."""
    if isinstance(document, dict) and isinstance(document.get(spec.records_key), list):
        shell = {**document, spec.records_key: []}
    else:
        shell = document
    error = first_error(spec.schema_name, shell)
    if error:
        raise FileRejected("SCHEMA_VIOLATION", f"the file does not match the {spec.title} schema: {error}")
    header = document["header"]
    # Python's `re` lets `$` match before a final newline; JSON Schema (ECMA-262) does not. Hold the header to
    # the standard, so "GBP\n" is refused here as it would be by any other validator.
    for field, rule in schema(spec.schema_name)["$defs"]["header"]["properties"].items():
        value = header.get(field)
        if isinstance(value, str) and "pattern" in rule and not re.fullmatch(rule["pattern"].strip("^$"), value):
            raise FileRejected(
                "SCHEMA_VIOLATION",
                f"the file does not match the {spec.title} schema: header.{field}: "
                f"{value!r} does not match {rule['pattern']!r}",
            )
    # The header's strings are stored (file_id is the file's identity in the store and the acknowledgement)
    # and quoted in messages: one holding a card number refuses the whole file.
    # A control total matching its two-place pattern is arithmetic, checked against the records, not typed text.
    for field, value in header.items():
        amount = isinstance(value, str) and _TWO_PLACES.fullmatch(value)
        pan = find_pan(value) if isinstance(value, str) and not amount else None
        if pan:
            raise FileRejected("CARD_NUMBER_DETECTED", f"header.{field} contains a card number ({mask_pan(pan)}); "
                                                       "card numbers are never accepted")
    return header


def check_sender(header: dict, folder_owner: str, folder_noun: str = "partner") -> None:
    """The header's sender must be whoever owns the folder the file arrived in."""
    if header["sender"] != folder_owner:
        raise FileRejected("SENDER_MISMATCH", f"header sender {header['sender']!r} does not match the "
                                              f"{folder_noun} folder {folder_owner!r}")


def check_control_totals(spec: RecordFileSpec, header: dict, record_count: int, amounts: pa.Array) -> None:
    """`record_count` and `total_amount` must equal the records: a mismatch means a damaged or partial file."""
    if header["record_count"] != record_count:
        raise FileRejected(
            "CONTROL_TOTALS",
            f"header record_count is {header['record_count']} but the file holds {record_count} "
            f"{spec.record_noun} records",
        )
    total = sum_exact(amounts)
    declared = Decimal(header["total_amount"])
    if total != declared:
        raise FileRejected(
            "CONTROL_TOTALS",
            f"header total_amount is {declared} but the {spec.record_noun} amounts add up to {_plain(total)}",
        )


def sum_exact(amounts: pa.Array) -> Decimal:
    """Exact sum of the two-place amounts (either sign) via Arrow decimals.

    Amounts that are not two-place decimals cannot appear in a two-place control total; they are left
    out here and rejected record by record, so one malformed amount does not sink a whole file.
    """
    looks_decimal = pc.match_substring_regex(amounts, r"^-?[0-9]{1,18}\.[0-9]{2}$")
    usable = pc.filter(amounts, pc.fill_null(looks_decimal, False))
    if len(usable) == 0:
        return Decimal("0.00")
    return pc.sum(pc.cast(usable, pa.decimal128(38, 2))).as_py()


def describe_record(spec: RecordFileSpec, position: int, record: object) -> str:
    """Why a record's JSON shape is wrong, or '' when it is an object of exactly the spec's string/null fields."""
    if not isinstance(record, dict):
        return f"record {position} is a JSON {_JSON_TYPE.get(type(record), 'value')}, not an object"
    problems = []
    missing = [f for f in spec.fields if f not in record]
    extra = sorted(str(k) for k in record if k not in spec.field_set)
    if missing:
        problems.append("missing field(s) " + ", ".join(missing))
    if extra:
        problems.append("unknown field(s) " + ", ".join(extra))
    for field in spec.fields:
        value = record.get(field)
        if value is not None and type(value) is not str:
            problems.append(f"field {field!r} must be a string, got a JSON {_JSON_TYPE.get(type(value), 'value')}")
    return "; ".join(problems)


def _exact_shape(spec: RecordFileSpec, records: list) -> bool:
    """True when every record is an object with exactly the spec's fields, checked at C speed.

    Every record having as many keys as there are fields, and the union of all keys being the fields,
    means each record holds exactly those (non-dict records make `len` or the union fail or differ).
    """
    if not records:
        return True
    try:
        return set(map(len, records)) == {len(spec.fields)} and set().union(*records) == spec.field_set
    except TypeError:
        return False


def record_columns(spec: RecordFileSpec, records: list) -> tuple[pa.Table, dict[int, str]]:
    """Arrow string columns of the record fields (1-based `position` added), plus shape errors by position."""
    positions = pa.array(range(1, len(records) + 1), type=pa.int64())
    if _exact_shape(spec, records):
        try:
            structs = pa.array(records, type=spec.struct)
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            pass  # some value is not a string: describe the records one by one below
        else:
            return pa.Table.from_arrays([positions, *structs.flatten()], ["position", *spec.fields]), {}
    shape_errors: dict[int, str] = {}
    try:
        all_exact = all(record.keys() == spec.field_set for record in records)
    except AttributeError:
        all_exact = False
    if all_exact:
        rows = records
    else:
        rows = []
        for index, record in enumerate(records):
            if type(record) is dict and record.keys() == spec.field_set:
                rows.append(record)
            else:
                shape_errors[index + 1] = describe_record(spec, index + 1, record)
                rows.append(record if type(record) is dict else {})
    columns = {"position": positions}
    for field in spec.fields:
        values = [record.get(field) for record in rows]
        try:
            columns[field] = pa.array(values, type=pa.string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            cleaned = []
            for index, value in enumerate(values):
                if value is None or type(value) is str:
                    cleaned.append(value)
                else:
                    shape_errors.setdefault(index + 1, describe_record(spec, index + 1, records[index]))
                    cleaned.append(None)
            columns[field] = pa.array(cleaned, type=pa.string())
    return pa.table(columns), shape_errors


def first_schema_violation(spec: RecordFileSpec, table: pa.Table, positions: list[int]) -> tuple[int, str] | None:
    """(position, error) of the first sampled record the JSON Schema rejects. A record the set-based rules let
    through is an object of exactly the spec's fields, strings or null, so its row of the columns is the record;
    a flow checks a sample of those to prove its SQL rules never accept what the schema refuses."""
    rows = pa.array([p - 1 for p in positions], pa.int64())
    records = table.select(list(spec.fields)).take(rows).to_pylist()
    for position, record in zip(positions, records, strict=True):
        error = first_error(spec.schema_name, record, spec.record_noun)
        if error:
            return position, error
    return None


def card_number_masks(column: pa.Array) -> dict[int, tuple[str, str]]:
    """{index: (the first card number, masked; the value with every card number masked)} for the values holding
    one. Arrow's regex keeps the Python Luhn check to the few values that could."""
    long_enough = pc.fill_null(pc.greater_equal(pc.utf8_length(column), PAN_MIN_DIGITS), False)
    positions = pc.indices_nonzero(long_enough)  # a card number has 13+ digits: most fields are too short to hold one
    if len(positions) == 0:
        return {}
    if len(positions) < len(column) // 4:
        hits = pc.fill_null(pc.match_substring_regex(column.take(positions), PAN_CANDIDATE_SQL), False)
        candidates = pc.filter(positions, hits).to_pylist()
    else:
        hits = pc.fill_null(pc.match_substring_regex(column, PAN_CANDIDATE_SQL), False)
        candidates = pc.indices_nonzero(hits).to_pylist()
    found = {}
    for index, value in zip(candidates, column.take(pa.array(candidates, pa.int64())).to_pylist(), strict=True):
        hit = scan_pans(value)  # the exact check: every 13-19 digit window, Luhn (core/cards.py)
        if hit:
            found[index] = (mask_pan(hit[0]), hit[1])
    return found


def with_shape_and_card_numbers(table: pa.Table, shape_errors: dict[int, str], scanned: tuple[str, ...]) -> pa.Table:
    """Add `shape_error`, and find, mask and flag card numbers in the `scanned` fields (`pan_field`,
    `pan_masked`) before anything is stored. Only the few values found are touched in Python."""
    n = table.num_rows
    pan_field: dict[int, str] = {}
    pan_masked: dict[int, str] = {}
    columns = [table.column(name).combine_chunks() for name in scanned]
    with ThreadPoolExecutor(max_workers=2) as pool:  # Arrow's regex drops the GIL: two columns at a time
        searched = list(pool.map(card_number_masks, columns))
    for name, column, found in zip(scanned, columns, searched, strict=True):
        if not found:
            continue
        for index, (pan, _) in found.items():
            pan_field.setdefault(index, name)
            pan_masked.setdefault(index, pan)
        masked = {index: value for index, (_, value) in found.items()}
        table = table.set_column(table.schema.get_field_index(name), name, _with_values(column, masked))
    shape = {position - 1: mask_pans_in(message) for position, message in shape_errors.items()}
    nulls = pa.nulls(n, pa.string())
    return (
        table.append_column("shape_error", _with_values(nulls, shape))
        .append_column("pan_field", _with_values(nulls, pan_field))
        .append_column("pan_masked", _with_values(nulls, pan_masked))
    )


def _with_values(column: pa.Array, values: dict[int, str]) -> pa.Array:
    """`column` with the strings at these indices replaced, in Arrow: a million-row column is never a list."""
    if not values:
        return column
    indices = sorted(values)
    mask = np.zeros(len(column), dtype=bool)
    mask[indices] = True
    return pc.replace_with_mask(column, pa.array(mask), pa.array([values[i] for i in indices], pa.string()))


def _plain(value: Decimal) -> str:
    cents = value.quantize(Decimal("0.01"))
    return f"{cents:f}" if cents == value else f"{value.normalize():f}"
