"""Bacs Standard 18: the writer's output byte for byte, round trips, and malformed files named by line and
column."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import pytest

from cmp_pipelines.defs.direct_debit.standard18 import (
    DataRecord,
    Standard18Error,
    Submission,
    bacs_text,
    from_julian,
    julian,
    read,
    write,
)

GOLDEN = Path(__file__).parents[2] / "golden"
SUBMISSION = Submission("123456", "ACME TELECOM LTD", "400000", "12345678", date(2026, 12, 3), "1 DAILY")
COLLECTIONS = [
    DataRecord("201575", "87654321", "17", "400000", "12345678", 1234, "ACME TELECOM", "ACMEREF000001", "J SMITH"),
    DataRecord("309634", "11112222", "01", "400000", "12345678", 99, "ACME TELECOM", "ACMEREF000002",
               "A N Other & Co"),
]
AUDDIS = [
    DataRecord("201575", "87654321", "0N", "400000", "12345678", 0, "ACME TELECOM", "ACMEREF000003", "J SMITH"),
    DataRecord("309634", "11112222", "0C", "400000", "12345678", 0, "ACME TELECOM", "ACMEREF000002", "A N OTHER"),
]


def test_collection_file_matches_the_golden_file_byte_for_byte():
    assert write(SUBMISSION, COLLECTIONS, with_contra=True) == (GOLDEN / "collection.std18").read_text()


def test_auddis_file_matches_the_golden_file_byte_for_byte():
    auddis = Submission("123456", "ACME TELECOM LTD", "400000", "12345678", date(2026, 12, 3), "1 DAILY")
    assert write(auddis, AUDDIS, with_contra=False) == (GOLDEN / "auddis.std18").read_text()


def test_round_trip_with_totals():
    parsed = read(write(SUBMISSION, COLLECTIONS, with_contra=True))
    assert parsed.records[:2] == (COLLECTIONS[0], DataRecord(**{**COLLECTIONS[1].__dict__,
                                                                "destination_name": "A N OTHER & CO"}))
    contra = parsed.records[-1]
    assert (contra.transaction_code, contra.amount_pence, contra.destination_account) == ("99", 1333, "12345678")
    assert (parsed.debit_total, parsed.credit_total, parsed.debit_count, parsed.credit_count) == (1333, 1333, 2, 1)
    assert parsed.submission == dataclasses.replace(SUBMISSION, created_on=SUBMISSION.processing_date)


def test_every_line_has_its_fixed_width():
    for line in write(SUBMISSION, COLLECTIONS, with_contra=True).splitlines():
        assert len(line) == (100 if line[:4] not in {"VOL1", "HDR1", "HDR2", "UHL1", "EOF1", "EOF2", "UTL1"}
                             else 80)


def test_julian_dates_and_bacs_text():
    assert julian(date(2026, 1, 1)) == " 26001" and julian(date(2028, 12, 31)) == " 28366"
    assert from_julian(" 26337") == date(2026, 12, 3)
    # accents folded and letters transliterated, apostrophes dropped: no letter becomes a blank
    assert bacs_text("Renée O'Brien-Smith & Co.", 18) == "RENEE OBRIEN-SMITH"
    assert bacs_text("Zoë Müller", 18) == "ZOE MULLER".ljust(18)
    assert bacs_text("Ærøskøbing Straße", 18) == "AEROSKOBING STRASS"
    assert bacs_text("Łódź №5 ½", 10) == "LODZ NO5 1"
    assert bacs_text("名前 Smith", 10) == "   SMITH  "


@pytest.mark.parametrize("value", [
    "CMPDD0001", "J Smith", "j.smith & co/ltd-2", "", None, "A" * 40, "Renée O'Brien-Smith & Co.", "Zoë Müller",
    "Ærøskøbing Straße", "Łódź", "名前 Smith", "tab\there", "semi;colon", "ÉCOLE", "mixed Ünïcode abc",
])
def test_the_sql_writer_folds_text_exactly_as_the_python_writer(value):
    """`bacs_text_sql` (millions of records in DuckDB, plain values only upper-cased) against `bacs_text`. Not
    compared: compatibility characters such as № and ½, which Python's NFKD spells out (NO, 1 2) and DuckDB's
    strip_accents blanks (DuckDB has no NFKD)."""
    import duckdb

    from cmp_pipelines.defs.direct_debit.standard18 import bacs_text_sql

    got = duckdb.connect().execute(f"SELECT {bacs_text_sql('v', 18)} FROM (SELECT ?::VARCHAR AS v)", [value]).fetchone()
    assert got[0] == bacs_text(value, 18)


def _break(text: str, line: int, column: int, replacement: str) -> str:
    lines = text.split("\n")
    target = lines[line - 1]
    lines[line - 1] = target[:column - 1] + replacement + target[column - 1 + len(replacement):]
    return "\n".join(lines)


GOOD = write(SUBMISSION, COLLECTIONS, with_contra=True)


@pytest.mark.parametrize(("text", "line", "column", "fragment"), [
    (GOOD.replace("VOL1", "VOLX", 1), 1, 1, "expected the VOL1 label"),
    (_break(GOOD, 5, 16, "42"), 5, 16, "transaction code '42'"),
    (_break(GOOD, 5, 1, "20A575"), 5, 3, "destination sort code must be digits"),
    (_break(GOOD, 6, 40, "X"), 6, 40, "amount must be digits"),
    (_break(GOOD, 5, 15, "1"), 5, 15, "account type must be '0'"),
    (_break(GOOD, 5, 66, "a"), 5, 66, "outside the Bacs character set"),
    (_break(GOOD, 10, 17, "9"), 10, 5, "UTL1 debit value total is 1339 but the records add up to 1333"),
    (_break(GOOD, 10, 37, "3"), 10, 31, "UTL1 debit count is 3 but the records add up to 2"),
    (GOOD.replace("J SMITH           \n", "J SMITH\n"), 5, 90, "a data record is 100 characters, this line has 89"),
    (GOOD[:-1], 10, 81, "must end with a newline"),
    (_break(GOOD, 4, 5, "X2633"), 4, 5, "processing date"),
    ("VOL1\n", 1, 1, "at least 7 labels"),
])
def test_malformed_files_name_line_and_column(text, line, column, fragment):
    with pytest.raises(Standard18Error) as caught:
        read(text)
    assert (caught.value.line, caught.value.column) == (line, column), caught.value
    assert fragment in caught.value.message


def test_contra_must_be_last():
    lines = GOOD.split("\n")
    lines[5], lines[6] = lines[6], lines[5]
    with pytest.raises(Standard18Error, match="contra record must be the last"):
        read("\n".join(lines))


def test_writer_refuses_what_cannot_be_written():
    with pytest.raises(ValueError, match="destination sort code must be 6 digits"):
        write(SUBMISSION, [DataRecord("2015", "87654321", "17", "400000", "12345678", 1, "A", "R", "N")], True)
    with pytest.raises(ValueError, match="not a Standard 18 direct debit code"):
        write(SUBMISSION, [DataRecord("201575", "87654321", "99X", "400000", "12345678", 1, "A", "R", "N")], True)
