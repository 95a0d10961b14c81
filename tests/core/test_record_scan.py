"""The DuckDB record reader gives exactly what the orjson reader gives: same header, columns, shape errors and
file-level errors, for clean files, odd records and JSON that DuckDB is more lenient about than JSON."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pytest

from cmp_pipelines.core.files import record_scan
from cmp_pipelines.core.files.errors import FileRejected
from cmp_pipelines.core.files.record_file import parse_document, record_columns, validate_envelope
from cmp_pipelines.core.files.record_scan import read_record_file
from cmp_pipelines.defs.nrp.file_format import NRP_FILE

HEADER = {"file_id": "F1", "sender": "PAYPOINT", "created_at": "2026-11-20T10:00:00Z", "currency": "GBP",
          "record_count": 3, "total_amount": "6.00"}


def payment(n: int, **changes) -> dict:
    record = {"record_id": f"R{n}", "account_number": f"ACC{n:08d}", "invoice_number": None, "amount": "2.00",
              "payment_date": "2026-11-20T10:00:00Z", "payment_method": "CASH", "reference": f"ref é \"{n}\" /"}
    record.update(changes)
    return record


def compact(records_text: str, header: dict = HEADER) -> bytes:
    return ('{"header":' + json.dumps(header, separators=(",", ":")) + ',"payments":' + records_text + "}").encode()


def records_json(*records) -> str:
    return json.dumps(list(records), separators=(",", ":"), ensure_ascii=False)


def by_orjson(plaintext: bytes) -> tuple[dict, pa.Table, dict]:
    document = parse_document(plaintext)
    header = validate_envelope(NRP_FILE, document)
    table, errors = record_columns(NRP_FILE, document["payments"])
    return header, table, errors


@pytest.fixture(params=["whole", "split"])
def con(request, tmp_path, monkeypatch):
    """Every case twice: the array read as one file, and cut into four pieces read in parallel (big files)."""
    with duckdb.connect(str(tmp_path / "scan.duckdb")) as connection:
        if request.param == "split":
            monkeypatch.setattr(record_scan, "_MIN_PIECE", 1)
            connection.execute("SET threads = 4")
        yield connection


def assert_same(con, plaintext: bytes, reader: str) -> None:
    read = read_record_file(NRP_FILE, plaintext, con)
    header, table, errors = by_orjson(plaintext)
    assert read.reader == reader
    assert read.header == header
    assert read.shape_errors == errors
    assert read.table.column_names == table.column_names
    for name in table.column_names:
        assert read.table.column(name).to_pylist() == table.column(name).to_pylist(), name


def test_clean_compact_file_takes_the_duckdb_path_with_identical_columns(con):
    assert_same(con, compact(records_json(payment(1), payment(2), payment(3, invoice_number="INV-1"))), "duckdb")


def test_pretty_printed_file_and_another_key_order_still_take_the_duckdb_path(con):
    reordered = [dict(reversed(list(payment(n).items()))) for n in (1, 2, 3)]
    plaintext = json.dumps({"header": HEADER, "payments": reordered}, indent=2, ensure_ascii=False).encode()
    assert_same(con, plaintext + b"\n", "duckdb")


@pytest.mark.parametrize("bad_record", [
    '{"record_id":"R9","account_number":"ACC1","amount":"1.00","payment_date":null,"payment_method":"CASH",'
    '"reference":null}',  # missing invoice_number
    '{"record_id":"R9","account_number":"ACC1","invoice_number":null,"amount":"1.00","payment_date":null,'
    '"payment_method":"CASH","reference":null,"note":"x"}',  # an extra key
    '{"record_id":"R9","account_number":"ACC1","invoice_number":null,"amount":1.5,"payment_date":null,'
    '"payment_method":"CASH","reference":null}',  # a number
    '{"record_id":"R9","account_number":"ACC1","invoice_number":null,"amount":"1.00","payment_date":true,'
    '"payment_method":{"a":1},"reference":[1]}',  # boolean, object, array
    '{"record_id":"R9","record_id":"R10","account_number":"ACC1","invoice_number":null,"amount":"1.00",'
    '"payment_date":null,"payment_method":"CASH","reference":null}',  # a duplicate key: the last one wins
    '{"reference":null,"record_id":"R9","account_number":"ACC1","invoice_number":null,"amount":"1.00",'
    '"payment_date":null,"payment_method":"CASH"}',  # one record in another key order
    "null", "5", '"a string"', "[]", "{}",
])
def test_odd_records_are_judged_as_the_orjson_reader_judges_them(con, bad_record):
    text = "[" + records_json(payment(1))[1:-1] + "," + bad_record + "," + records_json(payment(3))[1:-1] + "]"
    assert_same(con, compact(text), "duckdb")


@pytest.mark.parametrize("lenient", [
    '{"record_id":"R9","account_number":"ACC1","invoice_number":null,"amount":"1.00","payment_date":null,'
    '"payment_method":"CASH","reference":null,}',  # a trailing comma in an object
    '{"record_id":"R9","account_number":"ACC1","invoice_number":null,"amount":"1.00","payment_date":null,'
    '"payment_method":"CASH","reference":null , \n}',
    '{"record_id":"R9","account_number":"ACC1","invoice_number":null,"amount":NaN,"payment_date":null,'
    '"payment_method":"CASH","reference":null}',
    '{"record_id":"R9","account_number":"ACC1","invoice_number":null,"amount":Infinity,"payment_date":null,'
    '"payment_method":"CASH","reference":null}',
])
def test_json_that_only_duckdb_would_read_is_refused_as_not_json(con, lenient):
    text = "[" + records_json(payment(1))[1:-1] + "," + lenient + "]"
    with pytest.raises(FileRejected) as refused:
        read_record_file(NRP_FILE, compact(text), con)
    assert refused.value.code == "NOT_JSON"


@pytest.mark.parametrize("plaintext", [
    compact(records_json(payment(1)))[:-30],  # truncated
    compact("[" + records_json(payment(1))[1:-1] + ",]"),  # trailing comma in the array
    b'{"header":{"file_id":NaN},"payments":[]}',
])
def test_malformed_files_are_refused_as_not_json(con, plaintext):
    with pytest.raises(FileRejected) as refused:
        read_record_file(NRP_FILE, plaintext, con)
    assert refused.value.code == "NOT_JSON"


def test_other_layouts_take_the_orjson_path_with_the_same_outcome(con):
    payments_first = json.dumps({"payments": [payment(1)], "header": HEADER}).encode()
    assert_same(con, payments_first, "orjson")
    twice = compact(records_json(payment(1)) + ',"payments":' + records_json(payment(2)))  # JSON: the last wins
    assert_same(con, twice, "orjson")
    assert read_record_file(NRP_FILE, twice, con).table.column("record_id").to_pylist() == ["R2"]
    extra_key = compact(records_json(payment(1))[:-1] + "]") [:-1] + b',"extra":1}'
    with pytest.raises(FileRejected) as refused:
        read_record_file(NRP_FILE, extra_key, con)
    assert refused.value.code == "SCHEMA_VIOLATION"
    assert "extra" in refused.value.message


def test_an_empty_records_array_and_an_empty_file(con):
    assert_same(con, compact("[]", {**HEADER, "record_count": 0, "total_amount": "0.00"}), "duckdb")
    with pytest.raises(FileRejected) as refused:
        read_record_file(NRP_FILE, b"  ", con)
    assert refused.value.code == "EMPTY_FILE"


def test_a_cut_that_falls_inside_a_string_reads_the_array_whole_with_the_same_result(con):
    records = [payment(n, reference=f"a}},{{b }} , {{ c {n}") for n in range(1, 40)]
    plaintext = compact(records_json(*records), {**HEADER, "record_count": 39, "total_amount": "78.00"})
    assert_same(con, plaintext, "duckdb")


def test_pieces_keep_the_records_in_file_order(con):
    records = [payment(n) for n in range(1, 200)]
    read = read_record_file(NRP_FILE, compact(records_json(*records)), con)
    assert read.table.column("record_id").to_pylist() == [f"R{n}" for n in range(1, 200)]
    assert read.table.column("position").to_pylist() == list(range(1, 200))


def test_whitespace_json_does_not_allow_between_records_is_refused_as_not_json(con):
    text = records_json(payment(1), payment(2), payment(3)).replace("},{", "},\x0c{")
    with pytest.raises(FileRejected) as refused:
        read_record_file(NRP_FILE, compact(text), con)
    assert refused.value.code == "NOT_JSON"


def test_records_keep_their_file_order_even_when_the_session_allows_unordered_results(con):
    con.execute("SET preserve_insertion_order = false")
    records = [payment(n) for n in range(1, 3000)]
    read = read_record_file(NRP_FILE, compact(records_json(*records)), con)
    assert read.table.column("record_id").to_pylist() == [f"R{n}" for n in range(1, 3000)]
    assert con.execute("SELECT current_setting('preserve_insertion_order')").fetchall() == [(False,)]
