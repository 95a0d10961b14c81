"""core/ledger.py is the only writer of postings: the source scan proves it, and its post, reverse, is_posted,
key builder and batch registry are tested here on a DuckDB file, totals to the penny."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cmp_pipelines.core import ledger
from cmp_pipelines.core.db import migrations
from cmp_pipelines.core.db.connection import connect
from cmp_pipelines.core.db.migrations import MIGRATIONS, apply_migrations
from cmp_pipelines.core.ledger import (
    batch_id_of,
    batch_stem,
    child_batch_id,
    first_unposted,
    is_posted,
    is_posted_sql,
    lit,
    parent_batch_id,
    post,
    posting_key,
    posting_key_sql,
    reverse,
)

PACKAGE = Path(ledger.__file__).resolve().parents[1]
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
# What writes rows into the ledger table: an INSERT (any spacing, line breaks, quoting or schema), a COPY into
# it, or the Python client's append/insert_into naming it.
WRITES = re.compile(
    r"""insert\s+(?:or\s+\w+\s+)?into\s+(?:\w+\.)?["'`]?ledger_postings\b"""
    r"""|copy\s+(?:\w+\.)?["'`]?ledger_postings\b"""
    r"""|(?:append|insert_into)\(\s*["'](?:\w+\.)?ledger_postings\b""",
    re.IGNORECASE,
)


def writers() -> dict[str, int]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        count = len(WRITES.findall(path.read_text(encoding="utf-8")))
        if count:
            found[path.relative_to(PACKAGE).as_posix()] = count
    return found


def test_no_module_but_the_ledger_writes_postings():
    # post and reverse, and on PostgreSQL `_insert_staged` (post_to_postgres, reverse_to_postgres and
    # push_batch_to_postgres push through it), nothing else
    assert writers() == {"core/ledger.py": 3}


@pytest.mark.parametrize("text", [
    "INSERT INTO ledger_postings (a) VALUES (1)",
    'con.execute("""\n    insert\n   into\n ledger_postings\nSELECT 1""")',
    "INSERT OR IGNORE INTO main.ledger_postings SELECT 1",
    'INSERT INTO "ledger_postings" SELECT 1',
    "COPY ledger_postings FROM 'x.csv'",
    'con.append("ledger_postings", frame)',
])
def test_the_scan_sees_every_way_of_writing(text):
    assert WRITES.search(text)


@pytest.mark.parametrize("text", [
    "SELECT sum(amount_minor) FROM ledger_postings",
    "INSERT INTO ledger_postings_archive SELECT 1",
    "INSERT INTO batches SELECT batch_id FROM ledger_postings",
])
def test_the_scan_leaves_reads_alone(text):
    assert not WRITES.search(text)


# ---- the key builder --------------------------------------------------------------------------------------


def test_keys_keep_the_formats_stores_hold():
    assert posting_key("nrp", "0123456789abcdef", "R1", "PAYMENT") == "nrp:0123456789abcdef:R1:PAYMENT"
    assert posting_key("card", "RC1", "REFUND") == "card:RC1:REFUND"
    assert posting_key("dd", "DD20261201-CMP1", "INV1", "COLLECTION") == "dd:DD20261201-CMP1:INV1:COLLECTION"
    assert posting_key("one_off", "P1", "PAYMENT") == "one_off:P1:PAYMENT"
    assert posting_key("hw", "O1", "CHARGE") == "hw:O1:CHARGE"
    assert posting_key("invoice", "INV1", "CHARGE") == "invoice:INV1:CHARGE"


def test_key_builder_refuses_unknown_sources_and_empty_parts():
    with pytest.raises(ValueError, match="ledger key source 'cash' is not one of nrp, card, dd"):
        posting_key("cash", "X", "PAYMENT")
    with pytest.raises(ValueError, match="non-empty parts"):
        posting_key("card", "", "PAYMENT")
    with pytest.raises(ValueError, match="non-empty parts"):
        posting_key("card")
    with pytest.raises(ValueError, match="ledger key source 'x'"):
        posting_key_sql("x", "a")


def test_sql_keys_equal_python_keys_and_fold_constants(tmp_path):
    sql = posting_key_sql("nrp", lit("abc"), "record_id", lit("PAYMENT"))
    assert sql == "'nrp:abc:' || record_id || ':PAYMENT'"  # one concatenation a side on a million rows
    with connect(tmp_path / "cmp.duckdb") as con:
        rows = con.execute(f"SELECT {sql}, {posting_key_sql('dd', 'c', 'i', lit('REVERSAL'))} "
                           "FROM (VALUES ('R''1', 'D1', 'I1'), (NULL, 'D2', 'I2')) t(record_id, c, i)").fetchall()
    assert rows == [(posting_key("nrp", "abc", "R'1", "PAYMENT"), "dd:D1:I1:REVERSAL"), (None, "dd:D2:I2:REVERSAL")]


# ---- post, is_posted, reverse --------------------------------------------------------------------------------


@pytest.fixture
def con(tmp_path):
    with connect(tmp_path / "cmp.duckdb") as con:
        con.execute("CREATE TABLE staged_payments (ref VARCHAR, account VARCHAR, invoice VARCHAR, minor BIGINT, "
                    "event VARCHAR)")
        con.execute("INSERT INTO staged_payments VALUES ('T1', 'ACC1', 'INV1', 1234, 'PAYMENT'), "
                    "('T2', 'ACC1', NULL, 1, 'PAYMENT'), ('T3', 'ACC2', 'INV3', 99999, 'REFUND')")
        yield con


STAGED = """
    SELECT ref, event, account AS account_number, invoice AS invoice_number,
           CASE event WHEN 'PAYMENT' THEN 'CARD_PAYMENT' ELSE 'CARD_REFUND' END AS kind,
           CASE event WHEN 'PAYMENT' THEN -minor ELSE minor END AS amount_minor, 'GBP' AS currency,
           ref AS source_ref, $effective AS effective_at
    FROM staged_payments WHERE minor >= $least
"""


def post_staged(con, least: int = 0, batch: str = "RCP-20261201") -> int:
    return post(con, STAGED, source="card", key=("ref", "event"), batch_id=batch, now=NOW,
                params={"effective": NOW, "least": least, "unused": 1})


def ledger_rows(con) -> list[tuple]:
    return con.execute("SELECT idempotency_key, account_number, invoice_number, kind, amount_minor, currency, "
                       "batch_id, source_ref, effective_at, posted_at FROM ledger_postings ORDER BY posting_id"
                       ).fetchall()


def test_post_writes_every_staged_row_once_under_its_key(con):
    assert post_staged(con) == 3
    assert ledger_rows(con) == [
        ("card:T1:PAYMENT", "ACC1", "INV1", "CARD_PAYMENT", -1234, "GBP", "RCP-20261201", "T1", NOW, NOW),
        ("card:T2:PAYMENT", "ACC1", None, "CARD_PAYMENT", -1, "GBP", "RCP-20261201", "T2", NOW, NOW),
        ("card:T3:REFUND", "ACC2", "INV3", "CARD_REFUND", 99999, "GBP", "RCP-20261201", "T3", NOW, NOW),
    ]
    assert con.execute("SELECT sum(amount_minor) FROM ledger_postings").fetchone()[0] == 98764  # 999.99-12.35


def test_posting_twice_changes_nothing(con):
    assert post_staged(con, least=1000) == 2
    before = ledger_rows(con)
    assert post_staged(con, least=1000) == 0
    assert post_staged(con, least=1000, batch="RCP-OTHER") == 0  # same keys, another batch: still nothing
    assert ledger_rows(con) == before
    assert post_staged(con) == 1  # only the row not posted before
    assert [r[0] for r in ledger_rows(con)] == ["card:T1:PAYMENT", "card:T3:REFUND", "card:T2:PAYMENT"]
    assert con.execute("SELECT sum(amount_minor), count(*) FROM ledger_postings").fetchone() == (98764, 3)


def test_post_takes_the_batch_from_the_rows_and_posted_at_from_the_transaction(con):
    written = post(con, "SELECT 'INV9' AS invoice_number, 'ACC9' AS account_number, 'INVOICE' AS kind, "
                        "1050 AS amount_minor, 'GBP' AS currency, 'INVOICES-20261201' AS batch_id, "
                        "'INV9' AS source_ref, NULL::TIMESTAMPTZ AS effective_at",
                   source="invoice", key=("invoice_number", lit("CHARGE")), batch_id=None, now=None)
    assert written == 1
    key, batch, posted_at = con.execute("SELECT idempotency_key, batch_id, posted_at FROM ledger_postings").fetchone()
    assert (key, batch) == ("invoice:INV9:CHARGE", "INVOICES-20261201")
    assert posted_at is not None


def test_a_null_key_part_is_refused_not_posted(con):
    with pytest.raises(Exception, match="NOT NULL"):
        post(con, "SELECT NULL::VARCHAR AS ref, 'A' AS account_number, NULL AS invoice_number, 'X' AS kind, "
                  "1 AS amount_minor, 'GBP' AS currency, NULL AS source_ref, NULL AS effective_at",
             source="card", key=("ref", lit("PAYMENT")), batch_id="B", now=NOW)
    assert ledger_rows(con) == []


def test_is_posted_in_python_and_in_sql(con):
    post_staged(con, least=1000)
    assert is_posted(con, "card", "T1", "PAYMENT")
    assert not is_posted(con, "card", "T1", "REFUND")
    assert not is_posted(con, "card", "T2", "PAYMENT")
    # the SQL form binds its key parts in the caller's scope even where the ledger has a column of that name
    flags = con.execute(f"SELECT ref, {is_posted_sql('card', 'ref', 'event')} FROM staged_payments "
                        "ORDER BY ref").fetchall()
    assert flags == [("T1", True), ("T2", False), ("T3", True)]
    missing = first_unposted(con, "SELECT ref, event, account AS invoice_number FROM staged_payments",
                             "ref, invoice_number", source="card", key=("ref", "event"))
    assert missing == ("T2", "ACC1")


def test_reverse_negates_what_was_posted_once(con):
    post_staged(con)
    staged = "SELECT ref, event, $rejected AS effective_at FROM staged_payments WHERE ref <> 'T2'"
    assert reverse(con, staged, source="card", refs=("ref",), event="event", kind="CARD_REVERSAL",
                   batch_id="RCRV-abc", now=LATER, params={"rejected": LATER}) == 2
    assert ledger_rows(con)[3:] == [
        ("card:T1:REVERSAL", "ACC1", "INV1", "CARD_REVERSAL", 1234, "GBP", "RCRV-abc", "T1", LATER, LATER),
        ("card:T3:REVERSAL", "ACC2", "INV3", "CARD_REVERSAL", -99999, "GBP", "RCRV-abc", "T3", LATER, LATER),
    ]
    assert reverse(con, staged, source="card", refs=("ref",), event="event", kind="CARD_REVERSAL",
                   batch_id="RCRV-abc", now=LATER, params={"rejected": LATER}) == 0
    balances = dict(con.execute("SELECT account_number, sum(amount_minor) FROM ledger_postings GROUP BY 1"
                                ).fetchall())
    assert balances == {"ACC1": -1, "ACC2": 0}  # only T2 still paid, 0.01


def test_reverse_skips_what_is_not_posted(con):
    post_staged(con, least=1000)
    staged = "SELECT ref, event, NULL::TIMESTAMPTZ AS effective_at FROM staged_payments"
    assert reverse(con, staged, source="card", refs=("ref",), event="event", kind="CARD_REVERSAL",
                   batch_id="RCRV-x", now=LATER) == 2
    assert not is_posted(con, "card", "T2", "REVERSAL")


# ---- the batch-id registry and the parent relation -------------------------------------------------------------


def add_batch(con, batch: str, kind: str, parent: str | None = None, at: datetime = NOW) -> None:
    con.execute("INSERT INTO batches (batch_id, kind, feed, parent_batch_id, status, created_at) "
                "VALUES (?, ?, 'test', ?, 'POSTED', ?)", [batch, kind, parent, at])


def test_batch_ids_come_from_the_registry(con):
    assert batch_id_of("NRP_LOAD", "0123456789abcdef") == "NRPL-0123456789abcdef"
    assert batch_id_of("CARD_POSTING", "20261201") == "RCP-20261201"
    assert batch_stem("DD_RETURNS", "ARJ-feed") == "feed"
    with pytest.raises(ValueError, match="batch kind 'NRP' is not registered"):
        batch_id_of("NRP", "x")
    with pytest.raises(ValueError, match=r"batch RCX-1 is not a NRP_LOAD batch \(NRPL-...\)"):
        batch_stem("NRP_LOAD", "RCX-1")


def test_child_batches_follow_the_parent_relation(con):
    add_batch(con, "NRPL-abc", "NRP_LOAD")
    assert child_batch_id(con, "NRPL-abc", "NRP_POSTING") == "NRPP-abc"  # a new one: the parent's stem
    add_batch(con, "NRPP-abc", "NRP_POSTING", parent="NRPL-abc")
    assert parent_batch_id(con, "NRPP-abc") == "NRPL-abc"
    # the relation wins over the id: a child recorded under another id is found by it
    add_batch(con, "RCRJ-def", "CARD_REJECTIONS")
    add_batch(con, "RCRV-recorded", "CARD_REVERSAL", parent="RCRJ-def")
    assert child_batch_id(con, "RCRJ-def", "CARD_REVERSAL") == "RCRV-recorded"
    # numbered children (releases) count on
    assert child_batch_id(con, "NRPL-abc", "NRP_RELEASE", numbered=True) == "NRPR-abc-1"
    add_batch(con, "NRPR-abc-1", "NRP_RELEASE", parent="NRPL-abc")
    assert child_batch_id(con, "NRPL-abc", "NRP_RELEASE", numbered=True) == "NRPR-abc-2"
    with pytest.raises(LookupError, match="batch NRPL-nope does not exist"):
        child_batch_id(con, "NRPL-nope", "NRP_POSTING")
    with pytest.raises(LookupError, match="batch NRPL-abc has no parent batch"):
        parent_batch_id(con, "NRPL-abc")


def test_migration_12_gives_old_posting_batches_their_parent(tmp_path, monkeypatch):
    import duckdb

    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < 12])
    apply_migrations(con)
    for batch, kind in (("RCX-20261201", "CARD_EXTRACT"), ("RCP-20261201", "CARD_POSTING"),
                        ("DDX-20261201", "DD_COLLECTION"), ("DDP-20261201", "DD_POSTING"),
                        ("NRPL-abc", "NRP_LOAD"), ("NRPP-abc", "NRP_POSTING"), ("RCP-20261202", "CARD_POSTING")):
        add_batch(con, batch, kind)
    add_batch(con, "NRPR-abc-1", "NRP_RELEASE", parent="NRPL-abc")
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
    assert apply_migrations(con) == [v for v, _, _ in MIGRATIONS if v >= 12]
    assert con.execute("SELECT batch_id, parent_batch_id FROM batches ORDER BY 1").fetchall() == [
        ("DDP-20261201", "DDX-20261201"), ("DDX-20261201", None), ("NRPL-abc", None), ("NRPP-abc", "NRPL-abc"),
        ("NRPR-abc-1", "NRPL-abc"), ("RCP-20261201", "RCX-20261201"), ("RCP-20261202", None),
        ("RCX-20261201", None)]
