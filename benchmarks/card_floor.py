"""The floors for the card phases of `make bench`: the least raw-library work that yields the same outputs.

Two modes, each over its own copy of the store the flow starts from (same tables, same sizes, same
indexes; the store is only data here, no package code runs), in one process:

extract      one DuckDB INSERT..SELECT of the day's due card payments (accounts x cards x open invoices,
             less what the ledger has settled) into a plain table, the extract document by one DuckDB COPY,
             Fernet-encrypted a chunk at a time into a durable file, then one INSERT..SELECT of the postings into the
             ledger (UNIQUE idempotency key) and DuckDB's JSON COPY of the posting file.
rejections   read + Fernet decrypt, the records by DuckDB's JSON reader (floor_records.py), one DuckDB join
             of the records against card_transactions into a table, one INSERT of the reversal postings,
             one UPDATE of the transactions, DuckDB's JSON COPY of the outcome report. With
             --same-outputs, also what else the flow writes: account suspensions and reversions, payment
             type changes, workflow events, customer communications (their table's PRIMARY KEY included),
             the reversal posting file and the communications file, and the outcome report with every
             column and header field of the flow's (the lean one writes 7 of its 16 columns).

The flow's time divided by the floor's is the overhead of everything the flow adds (rules, checks,
bookkeeping, the extra files).

    python benchmarks/card_floor.py extract --store cmp.duckdb --key-file CARDPAY.keys --day 2026-12-04
    python benchmarks/card_floor.py rejections --store cmp.duckdb --key-file CARDPAY.keys --input FILE.enc
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
from floor_documents import SCRATCH, copy_document, write_document
from floor_fernet import FloorFernet
from floor_records import read_records

AMOUNT = "CAST(CAST({0} AS DECIMAL(18, 0)) / 100 AS DECIMAL(18, 2))::VARCHAR"
REJECTION_FIELDS = (
    "record_id", "transaction_id", "account_number", "amount", "reason_code", "reason_text", "rejected_at",
)

DUE_TABLE = """
CREATE TABLE floor_due (
    transaction_id VARCHAR, provider VARCHAR, kind VARCHAR, account_number VARCHAR, invoice_number VARCHAR,
    amount_minor BIGINT, currency VARCHAR, card_token VARCHAR, attempt INTEGER, due_on DATE
)
"""

DUE = """
INSERT INTO floor_due
SELECT 'P' || i.invoice_number || '-1', c.provider, 'PAYMENT', a.account_number, i.invoice_number,
       i.amount_minor + coalesce(s.settled, 0) AS outstanding, i.currency, c.card_token, 1, i.due_on
FROM accounts a
JOIN payment_cards c USING (account_number)
JOIN invoices i USING (account_number)
LEFT JOIN (SELECT invoice_number, sum(amount_minor) AS settled FROM ledger_postings
           WHERE invoice_number IS NOT NULL AND kind <> 'INVOICE' GROUP BY 1) s USING (invoice_number)
WHERE a.payment_type = 'RECURRING_CARD' AND i.due_on <= $day AND i.amount_minor + coalesce(s.settled, 0) > 0
"""

EXTRACT_ROWS = f"""
SELECT transaction_id, kind AS type, account_number, invoice_number, NULL AS refund_id, card_token,
       {AMOUNT.format('amount_minor')} AS amount, currency, attempt, due_on::VARCHAR AS due_date
FROM floor_due ORDER BY transaction_id
"""

CARD_POST = """
INSERT INTO ledger_postings (idempotency_key, account_number, invoice_number, kind, amount_minor, currency,
                             batch_id, source_ref, effective_at, posted_at)
SELECT 'card:' || transaction_id || ':PAYMENT', account_number, invoice_number, 'CARD_PAYMENT', -amount_minor,
       currency, $batch, transaction_id, $effective, $now
FROM floor_due
ON CONFLICT DO NOTHING
"""

POSTING_ROWS = f"""
SELECT idempotency_key, account_number, invoice_number, kind, {AMOUNT.format('amount_minor')} AS amount, currency,
       strftime(effective_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') AS effective_at
FROM ledger_postings WHERE batch_id = '{{batch}}' ORDER BY posting_id
"""

MATCHED_TABLE = """
CREATE TABLE floor_matched (
    position BIGINT, record_id VARCHAR, transaction_id VARCHAR, account_number VARCHAR, amount_minor BIGINT,
    reason_code VARCHAR, rejected_at TIMESTAMPTZ, kind VARCHAR, invoice_number VARCHAR, currency VARCHAR,
    outcome VARCHAR
)
"""

MATCH = """
INSERT INTO floor_matched
SELECT r.position, r.record_id, r.transaction_id, r.account_number, t.amount_minor, r.reason_code,
       r.rejected_at::TIMESTAMPTZ, t.kind, t.invoice_number, t.currency,
       CASE WHEN r.reason_code IN ('04', '14', '41', '43', '54', '57', '62') THEN 'HARD_DECLINE'
            ELSE 'RETRY_SCHEDULED' END
FROM raw r JOIN card_transactions t ON t.transaction_id = r.transaction_id AND t.provider = $provider
"""

REVERSE = """
INSERT INTO ledger_postings (idempotency_key, account_number, invoice_number, kind, amount_minor, currency,
                             batch_id, source_ref, effective_at, posted_at)
SELECT 'card:' || transaction_id || ':REVERSAL', account_number, invoice_number, 'CARD_REVERSAL',
       CASE kind WHEN 'PAYMENT' THEN amount_minor ELSE -amount_minor END, currency, $batch, transaction_id,
       rejected_at, $now
FROM floor_matched
ON CONFLICT DO NOTHING
"""

UPDATE = """
UPDATE card_transactions t SET status = CASE m.outcome WHEN 'HARD_DECLINE' THEN 'HARD_DECLINED'
                                                       ELSE 'SOFT_DECLINED' END,
       reason_code = m.reason_code, rejection_batch_id = $batch
FROM floor_matched m WHERE m.transaction_id = t.transaction_id
"""

# --same-outputs: the rest of what the flow writes, each the least set-based statement that makes it.
ACCOUNT_ACTIONS = """
UPDATE accounts a SET suspended_until = CASE m.outcome WHEN 'RETRY_SCHEDULED' THEN DATE '2026-12-10' END,
       payment_type = CASE m.outcome WHEN 'HARD_DECLINE' THEN 'MANUAL' ELSE a.payment_type END
FROM floor_matched m WHERE a.account_number = m.account_number
"""

TYPE_CHANGES = """
INSERT INTO payment_type_changes (account_number, old_type, new_type, cause, changed_at)
SELECT account_number, 'RECURRING_CARD', 'MANUAL', 'card decline ' || reason_code || ' on ' || transaction_id, $now
FROM floor_matched WHERE outcome = 'HARD_DECLINE'
"""

EVENTS = """
INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, raised_at)
SELECT 'RECURRING_PAYMENT', CASE outcome WHEN 'HARD_DECLINE' THEN 'CARD_HARD_DECLINE_REFUND'
                                         ELSE 'CARD_SOFT_DECLINE' END,
       account_number, transaction_id, outcome || ': reason ' || reason_code || ', amount '
       || CAST(CAST(amount_minor AS DECIMAL(18, 0)) / 100 AS DECIMAL(18, 2))::VARCHAR, $now
FROM floor_matched ORDER BY position
"""

COMMUNICATIONS = """
INSERT INTO customer_communications (batch_id, account_number, template, source_ref, body, created_at)
SELECT $batch, account_number, CASE outcome WHEN 'HARD_DECLINE' THEN 'CARD_PAYMENT_DECLINED'
                                            ELSE 'CARD_PAYMENT_RETRY' END,
       transaction_id, 'Your card payment of '
       || CAST(CAST(amount_minor AS DECIMAL(18, 0)) / 100 AS DECIMAL(18, 2))::VARCHAR || ' ' || currency
       || ' for invoice ' || invoice_number || ' was declined (reason ' || reason_code || '). '
       || CASE outcome WHEN 'HARD_DECLINE' THEN 'Your recurring card payment is cancelled and your account now '
               || 'pays by manual payment: please pay the invoice another way.'
               ELSE 'We will try again on 2026-12-10.' END, $now
FROM floor_matched
ON CONFLICT DO NOTHING
"""

COMMUNICATION_ROWS = """
SELECT account_number, template, source_ref AS transaction_id, body FROM customer_communications
WHERE batch_id = '{batch}' ORDER BY account_number, source_ref
"""

REPORT_ROWS = f"""
SELECT position, record_id, transaction_id, account_number, {AMOUNT.format('amount_minor')} AS amount,
       reason_code, outcome FROM floor_matched ORDER BY position
"""

# --same-outputs: every column of the flow's outcome report (the lean report above has 7 of its 16), the reason's
# type and name joined from the codes the store holds, the rest from the outcome as the floor decided it.
FULL_REPORT_ROWS = f"""
SELECT m.position, m.record_id, m.transaction_id, m.account_number, {AMOUNT.format('m.amount_minor')} AS amount,
       m.reason_code, k.reason_type, k.reason_code AS reason, m.outcome,
       CASE m.outcome WHEN 'HARD_DECLINE' THEN 'HARD' ELSE 'SOFT' END AS decline, 1 AS attempt,
       CASE m.outcome WHEN 'RETRY_SCHEDULED' THEN '2026-12-10' END AS retry_due_on,
       CASE m.outcome WHEN 'HARD_DECLINE' THEN 'MANUAL' END AS new_payment_type, NULL AS payment_type_note,
       NULL AS problem_code, NULL AS problem
FROM floor_matched m LEFT JOIN config_rejection_codes k ON k.code = m.reason_code ORDER BY m.position
"""


def _fernet(key_file: str) -> FloorFernet:
    lines = Path(key_file).read_text().splitlines()
    return FloorFernet([line.strip() for line in lines if line.strip() and not line.startswith("#")])


def _minor(total: int) -> str:
    return f"{'-' if total < 0 else ''}{abs(total) // 100}.{abs(total) % 100:02d}"


class Laps:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self.started = self.clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now_s = time.perf_counter()
        self.steps[name] = now_s - self.clock
        self.clock = now_s

    @property
    def total(self) -> float:
        return self.clock - self.started


def _open(args: argparse.Namespace) -> tuple[Path, duckdb.DuckDBPyConnection]:
    """A fresh copy of the store the flow starts from (untimed)."""
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    database = workdir / "floor.duckdb"
    shutil.copyfile(args.store, database)
    os.sync()  # the copy's writeback is setup, as for the flow's staged copy
    return workdir, duckdb.connect(str(database))


def run_extract(args: argparse.Namespace) -> dict:
    workdir, con = _open(args)
    fernet = _fernet(args.key_file)
    day = date.fromisoformat(args.day)
    now = datetime.now(UTC)
    batch = f"RCP-{day:%Y%m%d}"
    con.execute(DUE_TABLE)
    laps = Laps()
    con.execute("BEGIN TRANSACTION")
    con.execute(DUE, {"day": day})
    con.execute("COMMIT")
    laps("select due")
    count, total = con.execute("SELECT count(*), coalesce(sum(amount_minor), 0) FROM floor_due").fetchone()
    header = {"file_id": f"RCX-{day:%Y%m%d}-CARDPAY-GBP", "record_count": count, "total_amount": _minor(total)}
    staged = (SCRATCH or workdir) / f"floor-{os.getpid()}-extract.json"
    copy_document(con, header, "transactions", EXTRACT_ROWS, staged)
    laps("extract: COPY json")
    extract = workdir / "extract.json.enc"
    fernet.encrypt_file(staged, extract)
    staged.unlink()
    laps("extract: encrypt + write")
    con.execute("BEGIN TRANSACTION")
    con.execute(CARD_POST, {"batch": batch, "now": now, "effective": datetime.combine(day, datetime.min.time(), UTC)})
    con.execute("COMMIT")
    laps("post")
    postings, net = con.execute(
        "SELECT count(*), coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE batch_id = ?", [batch]
    ).fetchone()
    posting_header = {"batch_id": batch, "created_at": now.isoformat(), "record_count": postings,
                      "total_amount": _minor(net)}
    posting_file = workdir / f"{batch}.json"
    write_document(con, posting_header, "postings", POSTING_ROWS.format(batch=batch), posting_file)
    laps("posting file")
    con.close()
    return {
        "total_s": laps.total,
        "steps": laps.steps,
        "records": count,
        "postings": postings,
        "extract_bytes": extract.stat().st_size,
        "posting_file_bytes": posting_file.stat().st_size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_rejections(args: argparse.Namespace) -> dict:
    import pandas  # noqa: F401 - pyarrow imports it on the first pa.array of Python objects; as the flow, untimed

    workdir, con = _open(args)
    fernet = _fernet(args.key_file)
    now = datetime.now(UTC)
    batch = "RCRV-FLOOR"
    con.execute(MATCHED_TABLE)
    laps = Laps()
    plaintext = fernet.decrypt(Path(args.input).read_bytes())
    laps("read + decrypt")
    header, table = read_records(con, plaintext, "rejections", REJECTION_FIELDS)
    del plaintext
    laps("read_json columns")
    con.register("raw", table)
    con.execute("BEGIN TRANSACTION")
    con.execute(MATCH, {"provider": header["sender"]})
    con.execute("COMMIT")
    con.unregister("raw")
    del table
    laps("join + insert")
    con.execute("BEGIN TRANSACTION")
    con.execute(REVERSE, {"batch": batch, "now": now})
    con.execute(UPDATE, {"batch": batch})
    if args.same_outputs:
        con.execute(ACCOUNT_ACTIONS)
        con.execute(TYPE_CHANGES, {"now": now})
        con.execute(EVENTS, {"now": now})
        con.execute(COMMUNICATIONS, {"batch": batch, "now": now})
    con.execute("COMMIT")
    laps("reverse + update" + (" + actions" if args.same_outputs else ""))
    if args.same_outputs:
        postings, net = con.execute(
            "SELECT count(*), coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE batch_id = ?", [batch]
        ).fetchone()
        posting_header = {"batch_id": batch, "created_at": now.isoformat(), "record_count": postings,
                          "total_amount": _minor(net)}
        posting_file = workdir / f"{batch}.json"
        write_document(con, posting_header, "postings", POSTING_ROWS.format(batch=batch), posting_file)
        laps("posting file")
    count, reversed_count = con.execute(
        "SELECT count(*), (SELECT count(*) FROM ledger_postings WHERE batch_id = ?) FROM floor_matched", [batch]
    ).fetchone()
    report_header = {"file_id": header["file_id"], "processed_at": now.isoformat(), "record_count": count}
    if args.same_outputs:  # the flow's header fields too
        outcomes = dict(con.execute("SELECT outcome, count(*) FROM floor_matched GROUP BY 1 ORDER BY 1").fetchall())
        report_header |= {"partner_file_id": header["file_id"], "source_file_name": Path(args.input).name,
                          "provider": header["sender"], "batch_id": batch, "reversal_batch_id": batch,
                          "reversed_count": reversed_count, "reversed_amount": _minor(net),
                          "rejected_count": outcomes.get("REJECTED", 0), "outcomes": outcomes}
    report = workdir / "report.json"
    write_document(con, report_header, "records", FULL_REPORT_ROWS if args.same_outputs else REPORT_ROWS, report)
    figures = {"report_bytes": report.stat().st_size}
    if args.same_outputs:
        communications = workdir / "communications.json"
        write_document(con, {"batch_id": batch, "created_at": now.isoformat()}, "communications",
                       COMMUNICATION_ROWS.format(batch=batch), communications)
        figures |= {"posting_file_bytes": posting_file.stat().st_size,
                    "communications_bytes": communications.stat().st_size}
    laps("report" + (" + communications" if args.same_outputs else ""))
    con.close()
    return {
        "total_s": laps.total,
        "steps": laps.steps,
        "records": count,
        "postings": reversed_count,
        **figures,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Minimum-work floors for the card benchmarks.")
    parser.add_argument("mode", choices=["extract", "rejections"])
    parser.add_argument("--store", required=True, help="the DuckDB store the flow starts from (copied, not changed)")
    parser.add_argument("--key-file", required=True, help="the provider's Fernet key file, newest key first")
    parser.add_argument("--day", default="2026-12-04", help="extract: the business day")
    parser.add_argument("--input", help="rejections: the encrypted rejection file")
    parser.add_argument("--same-outputs", action="store_true",
                        help="rejections: also the account actions, events, communications and the two other files "
                             "the flow writes (a second, fuller floor)")
    parser.add_argument("--workdir", default="benchmarks/out/card_floor")
    parser.add_argument("--result", help="write the figures here as JSON (else print them)")
    args = parser.parse_args()
    if args.mode == "rejections" and not args.input:
        parser.error("rejections needs --input")
    result = run_extract(args) if args.mode == "extract" else run_rejections(args)
    if args.result:
        Path(args.result).write_text(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
