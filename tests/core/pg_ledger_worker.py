"""One ledger writer process for the PostgreSQL concurrency tests (tests/core/test_ledger_postgres.py).

    python -m tests.core.pg_ledger_worker URL FIRST LAST ORDER BATCH START_FILE

Stages records FIRST..LAST-1 in its own in-memory DuckDB (record i: account ACC<i % 50>, amount -(i % 997 + 1)
pence, key nrp:f:<i>:PAYMENT), waits for START_FILE so every worker starts together, posts them through
core.ledger.post_to_postgres in ORDER (asc or desc), records its batch row in the same transaction, commits, and
prints {"posted": n}. Under CMP_CRASHPOINT=1 it is killed just before that commit; with LEDGER_KEY_DOMAIN its keys
are declared to be that domain's (the fast path of a first posting).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from cmp_pipelines.core.db.transfer import adbc_connection
from cmp_pipelines.core.ledger import commit_postgres, lit, post_to_postgres

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def main(url: str, first: int, last: int, order: str, batch_id: str, start_file: str) -> None:
    duck = duckdb.connect()
    duck.execute(f"""
        CREATE TABLE staged AS
        SELECT i AS rec, 'ACC' || lpad((i % 50)::VARCHAR, 3, '0') AS account_number, NULL AS invoice_number,
               'PAYMENT' AS kind, -(i % 997 + 1) AS amount_minor, 'GBP' AS currency, 'R' || i AS source_ref,
               TIMESTAMPTZ '2026-12-01 09:00:00+00' AS effective_at
        FROM range({first}, {last}) t(i)
    """)
    Path(f"{start_file}.ready.{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not Path(start_file).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    with adbc_connection(url) as pg:
        posted = post_to_postgres(duck, pg, "SELECT * FROM staged", source="nrp",
                                  key=[lit("f"), "rec::VARCHAR", lit("PAYMENT")], batch_id=batch_id, now=NOW,
                                  order_by=f"rec {order}", key_domain=os.environ.get("LEDGER_KEY_DOMAIN") or None)
        with pg.cursor() as cur:
            cur.execute("INSERT INTO batches (batch_id, kind, feed, status, record_count) "
                        "VALUES ($1, 'NRP_POSTING', 'nrp', 'POSTED', $2) ON CONFLICT (batch_id) DO NOTHING",
                        [batch_id, posted])
        commit_postgres(pg)
    print(json.dumps({"posted": posted}))


if __name__ == "__main__":
    url, first, last, order, batch_id, start_file = sys.argv[1:]
    main(url, int(first), int(last), order, batch_id, start_file)
