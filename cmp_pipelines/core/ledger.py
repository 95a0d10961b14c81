"""Posting batches: recording one, and the files written from the store by DuckDB's COPY (C speed).

The posting file is what CMP's posting daemons send to the target sales ledger: one per posting batch,
schema core/files/schemas/ledger_posting_batch.schema.json.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import orjson

from cmp_pipelines.core.db.connection import sql_literal
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.files.text_copy import copy_lines, staged
from cmp_pipelines.core.money import format_minor


@dataclass
class PostResult:
    batch_id: str
    posted_now: int
    posting_count: int
    total_minor: int  # signed: payments and reversal credits are negative


def record_posting_batch(
    con: duckdb.DuckDBPyConnection, *, batch_id: str, kind: str, feed: str, now: datetime, posted_before: int,
    partner: str | None = None, source_file_id: str | None = None, parent_batch_id: str | None = None,
) -> PostResult:
    """The batch row of postings just written (inside the caller's transaction), and the job run it counts as."""
    count, total = con.execute(
        "SELECT count(*), coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE batch_id = ?", [batch_id]
    ).fetchone()
    con.execute(
        """
        INSERT INTO batches (batch_id, kind, feed, partner, source_file_id, parent_batch_id, status,
                             record_count, total_minor, accepted_count, created_at, completed_at)
        VALUES (?, ?, ?, ?, ?, ?, 'POSTED', ?, ?, ?, ?, ?)
        ON CONFLICT (batch_id) DO UPDATE SET record_count = excluded.record_count,
            total_minor = excluded.total_minor, accepted_count = excluded.accepted_count
        """,
        [batch_id, kind, feed, partner, source_file_id, parent_batch_id, count, total, count, now, now],
    )
    con.execute("INSERT INTO job_runs (job, batch_id, started_at) VALUES (?, ?, ?)", [feed, batch_id, now])
    return PostResult(batch_id, count - posted_before, count, total)


def posted_batch(con: duckdb.DuckDBPyConnection, batch_id: str, asset: str) -> PostResult:
    """A posting batch an earlier step recorded; `asset` names what to materialise when it is missing."""
    row = con.execute(
        "SELECT record_count, total_minor FROM batches WHERE batch_id = ? AND status = 'POSTED'", [batch_id]
    ).fetchone()
    if row is None:
        raise LookupError(f"posting batch {batch_id} does not exist: materialise {asset} first")
    return PostResult(batch_id, 0, row[0], row[1])


def posting_count(con: duckdb.DuckDBPyConnection, batch_id: str) -> int:
    return con.execute("SELECT count(*) FROM ledger_postings WHERE batch_id = ?", [batch_id]).fetchone()[0]


def write_json_document(con: duckdb.DuckDBPyConnection, target: Path, header: dict, key: str, query: str) -> None:
    """`{"header": ..., key: [rows]}` written whole by DuckDB (`store.text_copy`): each row is `to_json` of the
    query's columns, the envelope is the prefix and suffix."""
    copy_lines(con, target, f"SELECT to_json(r)::VARCHAR FROM ({query}) r",
               prefix='{"header":' + orjson.dumps(header).decode() + ',"' + key + '":[', suffix="]}", separator=",")


def json_document(con: duckdb.DuckDBPyConnection, header: dict, key: str, query: str
                  ) -> AbstractContextManager[Path]:
    """The finished document in a scratch file, for callers that encrypt it (`store.text_copy.staged`)."""
    return staged(lambda target: write_json_document(con, target, header, key, query))


def write_records_file(con: duckdb.DuckDBPyConnection, files: FileStoreLike, path: str, header: dict, key: str,
                       query: str) -> str:
    """A plain records file in the store, written in place by DuckDB (see `write_json_document`)."""
    return files.write_from(path, lambda target: write_json_document(con, target, header, key, query))


def write_communications(con: duckdb.DuckDBPyConnection, files: FileStoreLike, batch_id: str, now: datetime,
                         source_name: str) -> str:
    """The customer communications a rejections batch raised, for the messaging system."""
    return write_records_file(
        con, files, f"outbound/communications/{batch_id}.json",
        {"batch_id": batch_id, "created_at": now.isoformat()}, "communications",
        f"SELECT account_number, template, source_ref AS {source_name}, body FROM customer_communications "
        f"WHERE batch_id = {sql_literal(batch_id)} ORDER BY account_number, source_ref",
    )


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
    path = write_records_file(
        con, files, f"outbound/ledger/{batch_id}.json", header, "postings",
        f"""
        SELECT idempotency_key, account_number, invoice_number, kind, minor_to_decimal(amount_minor) AS amount,
               currency, strftime(effective_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') AS effective_at
        FROM ledger_postings WHERE batch_id = {sql_literal(batch_id)} ORDER BY posting_id
        """,
    )
    con.execute("UPDATE batches SET output_path = ? WHERE batch_id = ?", [path, batch_id])
    return path, count, total
