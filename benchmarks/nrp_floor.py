"""The floor for `make bench`: the least work that turns the encrypted NRP file into the same outputs.

Raw libraries in one process, no package code and no validation rules beyond what the libraries do
anyway: Fernet decrypt, the records array read by DuckDB's JSON reader into Arrow string columns (the
header by orjson; `floor_records.py`), one DuckDB insert that joins accounts and invoices to allocate,
ledger postings under a UNIQUE idempotency key, the posting file and the acknowledgement each written whole
by one DuckDB COPY (`floor_documents.py`), the acknowledgement then Fernet-encrypted a chunk at a time. The
flow's time divided by this one is the overhead of everything the flow adds (rules, checks, bookkeeping).

    python benchmarks/nrp_floor.py --input FILE.json.enc --key-file PAYPOINT.keys --accounts 200000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from floor_documents import encrypted_document, write_document
from floor_fernet import FloorFernet
from floor_records import read_records

FIELDS = (
    "record_id", "account_number", "invoice_number", "amount", "payment_date", "payment_method", "reference",
)

SCHEMA = """
CREATE TABLE accounts (account_number VARCHAR PRIMARY KEY, currency VARCHAR NOT NULL);
CREATE TABLE invoices (invoice_number VARCHAR PRIMARY KEY, account_number VARCHAR NOT NULL);
CREATE SEQUENCE posting_seq;
CREATE TABLE ledger_postings (
    posting_id BIGINT NOT NULL DEFAULT nextval('posting_seq'),
    idempotency_key VARCHAR NOT NULL UNIQUE,
    account_number VARCHAR NOT NULL, invoice_number VARCHAR, kind VARCHAR NOT NULL,
    amount_minor BIGINT NOT NULL, currency VARCHAR NOT NULL, batch_id VARCHAR NOT NULL,
    effective_at TIMESTAMPTZ
);
CREATE TABLE records (
    position BIGINT, record_id VARCHAR, account_number VARCHAR, invoice_number VARCHAR, amount_minor BIGINT,
    payment_date TIMESTAMPTZ, payment_method VARCHAR, reference VARCHAR, outcome VARCHAR, allocation VARCHAR,
    ledger_account VARCHAR, reason_code VARCHAR
);
"""

# Same volume as the flow's store: every account, one invoice each plus a second for every third,
# and their charges already in the ledger, so the UNIQUE index is as large as the flow's.
SEED = """
INSERT INTO accounts SELECT 'ACC' || lpad(i::VARCHAR, 8, '0'), 'GBP' FROM range(1, $n + 1) t(i);
INSERT INTO accounts VALUES ('SUSPENSE', 'GBP');
INSERT INTO invoices SELECT 'INV' || lpad(i::VARCHAR, 8, '0') || k, 'ACC' || lpad(i::VARCHAR, 8, '0')
    FROM range(1, $n + 1) t(i), range(1, 3) u(k) WHERE k = 1 OR (i + $seed) % 3 = 0;
INSERT INTO ledger_postings (idempotency_key, account_number, invoice_number, kind, amount_minor, currency,
                             batch_id)
    SELECT 'invoice:' || invoice_number || ':CHARGE', account_number, invoice_number, 'INVOICE', 1000, 'GBP',
           'INVOICES' FROM invoices;
CHECKPOINT;
"""

MATCH = """
INSERT INTO records
SELECT position, raw.record_id, raw.account_number, raw.invoice_number, amount_minor, payment_ts,
       payment_method, reference,
       CASE WHEN amount_minor IS NULL THEN 'REJECTED' ELSE 'ACCEPTED' END,
       CASE WHEN amount_minor IS NULL THEN NULL WHEN a.account_number IS NULL THEN 'SUSPENSE'
            WHEN i.account_number = raw.account_number THEN 'INVOICE' ELSE 'ACCOUNT' END,
       CASE WHEN amount_minor IS NULL THEN NULL ELSE coalesce(a.account_number, 'SUSPENSE') END,
       CASE WHEN amount_minor IS NULL THEN 'SCHEMA_VIOLATION'
            WHEN a.account_number IS NULL THEN 'UNKNOWN_ACCOUNT'
            WHEN raw.invoice_number IS NOT NULL AND i.account_number IS DISTINCT FROM raw.account_number
            THEN 'INVOICE_NOT_MATCHED' END
FROM (SELECT *, CAST(TRY_CAST(amount AS DECIMAL(18, 2)) * 100 AS BIGINT) AS amount_minor,
             TRY_CAST(payment_date AS TIMESTAMPTZ) AS payment_ts FROM raw) raw
LEFT JOIN accounts a ON a.account_number = raw.account_number
LEFT JOIN invoices i ON i.invoice_number = raw.invoice_number
"""

POST = """
INSERT INTO ledger_postings (idempotency_key, account_number, invoice_number, kind, amount_minor, currency,
                             batch_id, effective_at)
SELECT $prefix || record_id || ':PAYMENT', ledger_account,
       CASE WHEN allocation = 'INVOICE' THEN invoice_number END,
       'PAYMENT', -amount_minor, $currency, $batch, coalesce(payment_date, $now)
FROM records WHERE outcome = 'ACCEPTED'
ON CONFLICT DO NOTHING
"""

AMOUNT = "CAST(CAST({0} AS DECIMAL(18, 0)) / 100 AS DECIMAL(18, 2))::VARCHAR"
REASON = """CASE reason_code
    WHEN 'UNKNOWN_ACCOUNT' THEN 'account ' || account_number || ' is unknown; held in suspense'
    WHEN 'INVOICE_NOT_MATCHED' THEN 'invoice ' || invoice_number || ' is not the account''s; allocated to it'
    WHEN 'SCHEMA_VIOLATION' THEN 'amount is not a decimal' END"""


def run(args: argparse.Namespace) -> dict:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "floor.duckdb"
    database.unlink(missing_ok=True)
    con = duckdb.connect(str(database))
    con.execute(SCHEMA)
    for statement in filter(str.strip, SEED.split(";")):
        params = {k: v for k, v in {"n": args.accounts, "seed": args.seed}.items() if f"${k}" in statement}
        con.execute(statement, params or None)
    lines = Path(args.key_file).read_text().splitlines()
    keys = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    fernet = FloorFernet(keys)
    now = datetime.now(UTC)
    con.execute("CHECKPOINT")
    os.sync()  # the seeding's writes are not the timed work's, as the flow's staged copy is synced before it runs
    steps: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now_s = time.perf_counter()
        steps[name] = now_s - clock[0]
        clock[0] = now_s

    started = clock[0]
    plaintext = fernet.decrypt(Path(args.input).read_bytes())
    lap("read + decrypt")
    header, table = read_records(con, plaintext, "payments", FIELDS)
    del plaintext
    lap("read_json columns")
    batch = "NRPP-" + hashlib.sha256(header["file_id"].encode()).hexdigest()[:16]  # ids as long as the flow's
    con.register("raw", table)
    con.execute("BEGIN TRANSACTION")
    con.execute(MATCH)
    con.execute("COMMIT")
    con.unregister("raw")
    del table
    lap("insert + match")
    con.execute("BEGIN TRANSACTION")
    params = {"prefix": f"nrp:{batch[5:]}:", "currency": header["currency"], "batch": batch, "now": now}
    con.execute(POST, params)
    con.execute("COMMIT")
    lap("post")
    count, total = con.execute(
        "SELECT count(*), coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE batch_id = ?", [batch]
    ).fetchone()
    posting_header = {"batch_id": batch, "created_at": now.isoformat(), "record_count": count,
                      "total_amount": f"{'-' if total < 0 else ''}{abs(total) // 100}.{abs(total) % 100:02d}"}
    posting_file = workdir / f"{batch}.json"
    write_document(
        con, posting_header, "postings",
        f"SELECT idempotency_key, account_number, invoice_number, kind,"
        f" {AMOUNT.format('amount_minor')} AS amount, currency,"
        " strftime(effective_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') AS effective_at"
        f" FROM ledger_postings WHERE batch_id = '{batch}' ORDER BY posting_id",
        posting_file,
    )
    lap("posting file")
    record_count, accepted = con.execute(
        "SELECT count(*), count(*) FILTER (outcome = 'ACCEPTED') FROM records"
    ).fetchone()
    ack_header = {"file_id": header["file_id"], "status": "PROCESSED", "processed_at": now.isoformat(),
                  "record_count": record_count, "accepted_count": accepted}
    ack_file = workdir / f"{header['file_id']}.ack.json.enc"
    encrypted_document(
        con, fernet, ack_header, "records",
        f"SELECT position, record_id, outcome, allocation, {AMOUNT.format('amount_minor')} AS amount,"
        f" reason_code, {REASON} AS reason FROM records ORDER BY position",
        ack_file,
    )
    lap("acknowledge")
    total_s = time.perf_counter() - started
    con.close()
    return {
        "total_s": total_s,
        "steps": steps,
        "records": record_count,
        "accepted": accepted,
        "postings": count,
        "posting_file_bytes": posting_file.stat().st_size,
        "ack_bytes": ack_file.stat().st_size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Minimum-work floor for the NRP benchmark.")
    parser.add_argument("--input", required=True, help="the encrypted NRP file")
    parser.add_argument("--key-file", required=True, help="the partner's Fernet key file, newest key first")
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", default="benchmarks/out/floor")
    parser.add_argument("--result", help="write the figures here as JSON (else print them)")
    args = parser.parse_args()
    result = run(args)
    if args.result:
        Path(args.result).write_text(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
