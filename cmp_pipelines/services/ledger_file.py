"""Files written straight from the store by DuckDB's COPY (C speed), and the ledger posting file every flow emits.

The posting file is what CMP's posting daemons send to the target sales ledger: one per posting batch,
schema formats/schemas/ledger_posting_batch.schema.json.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb
import orjson

from cmp_pipelines.domain.money import format_minor
from cmp_pipelines.services.files import FileStoreLike


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@contextmanager
def json_rows(con: duckdb.DuckDBPyConnection, query: str) -> Iterator[Path]:
    """A temporary file holding the query's rows as one JSON array."""
    handle, tmp = tempfile.mkstemp(suffix=".json")
    os.close(handle)
    try:
        con.execute(f"COPY ({query}) TO {sql_literal(tmp)} (FORMAT json, ARRAY true)")
        yield Path(tmp)
    finally:
        os.unlink(tmp)


def write_posting_file(
    con: duckdb.DuckDBPyConnection, files: FileStoreLike, batch_id: str, source: str, now: datetime
) -> tuple[str, int, int]:
    """Writes outbound/ledger/<batch_id>.json from the batch's postings; returns (path, count, total minor)."""
    count, total = con.execute(
        "SELECT count(*), coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE batch_id = ?", [batch_id]
    ).fetchone()
    header = {
        "batch_id": batch_id,
        "source": source,
        "created_at": now.isoformat(),
        "record_count": count,
        "total_amount": format_minor(total),
    }
    with json_rows(
        con,
        f"""
        SELECT idempotency_key, account_number, invoice_number, kind, minor_to_decimal(amount_minor) AS amount,
               currency, strftime(effective_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') AS effective_at
        FROM ledger_postings WHERE batch_id = {sql_literal(batch_id)} ORDER BY posting_id
        """,
    ) as rows:
        path = files.write_parts(
            f"outbound/ledger/{batch_id}.json",
            [b'{"header":' + orjson.dumps(header) + b',"postings":', rows, b"}"],
        )
    con.execute("UPDATE batches SET output_path = ? WHERE batch_id = ?", [path, batch_id])
    return path, count, total
