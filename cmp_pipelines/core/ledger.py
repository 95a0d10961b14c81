"""The sales ledger's only writer: postings and reversals under one idempotency key builder, the batch-id
registry and the parent relation between batches, posting batches and the files written from them.

Every posting goes through `post` or `reverse`: one set-based INSERT ... SELECT from a relation the caller
stages, idempotent by the UNIQUE idempotency key (ON CONFLICT DO NOTHING), so a re-run, a re-dropped file or a
resumed crash never posts twice. The key is `<source>:<ref>...:<event>`, the formats every store already holds
(`nrp:<sha16>:<record id>:PAYMENT`, `card:<transaction>:PAYMENT|REFUND|REVERSAL`,
`dd:<collection>:<invoice>:COLLECTION|REVERSAL`, `one_off:<payment>:PAYMENT`, `hw:<order>:CHARGE`,
`invoice:<invoice>:CHARGE`). tests/core/test_ledger.py proves no other module inserts into the ledger.

With PostgreSQL as the store (CMP_DATABASE_URL), `post_to_postgres` posts the same rows, computed the same way in
DuckDB, into PostgreSQL's ledger under the same UNIQUE key (tests/core/test_ledger_postgres.py).

The posting file is what CMP's posting daemons send to the target sales ledger: one per posting batch,
schema core/files/schemas/ledger_posting_batch.schema.json.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import orjson

from cmp_pipelines.core.db.connection import sql_literal
from cmp_pipelines.core.delivery import enqueue
from cmp_pipelines.core.files.prepared import PreparedDocument, prepare
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.files.text_copy import copy_lines, staged
from cmp_pipelines.core.money import format_minor

if TYPE_CHECKING:
    import pyarrow as pa

# ---- the idempotency key -------------------------------------------------------------------------------------

KEY_SOURCES = ("nrp", "card", "dd", "one_off", "hw", "invoice")
REVERSAL = "REVERSAL"
_QUOTED = re.compile(r"'(?:[^']|'')*'")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def _source(source: str) -> str:
    if source not in KEY_SOURCES:
        raise ValueError(f"ledger key source {source!r} is not one of {', '.join(KEY_SOURCES)}")
    return source


def posting_key(source: str, *parts: str) -> str:
    """`<source>:<part>:...`, the last part the posting's event (PAYMENT, REFUND, CHARGE, REVERSAL, ...)."""
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise ValueError(f"a ledger key needs non-empty parts ending with its event, got {parts!r}")
    return ":".join((_source(source), *parts))


def lit(value: str) -> str:
    """A constant key part (or event) for `posting_key_sql`."""
    return sql_literal(value)


def posting_key_sql(source: str, *parts: str) -> str:
    """The same key as `posting_key`, as SQL over a relation's columns: `parts` are SQL expressions (constants
    through `lit`). Adjacent constants are folded, so a million-row insert concatenates no more than it must;
    a NULL part makes the key NULL, which the NOT NULL constraint refuses rather than posting a partial key."""
    if not parts:
        raise ValueError("a ledger key needs at least its event")
    pieces = [lit(_source(source))]
    for part in parts:
        pieces += [lit(":"), part if _QUOTED.fullmatch(part) or _NAME.fullmatch(part) else f"({part})"]
    folded: list[str] = []
    for piece in pieces:
        if folded and _QUOTED.fullmatch(piece) and _QUOTED.fullmatch(folded[-1]):
            folded[-1] = lit(folded[-1][1:-1].replace("''", "'") + piece[1:-1].replace("''", "'"))
        else:
            folded.append(piece)
    return " || ".join(folded)


def is_posted(con: duckdb.DuckDBPyConnection, source: str, *parts: str) -> bool:
    return con.execute("SELECT count(*) FROM ledger_postings WHERE idempotency_key = ?",
                       [posting_key(source, *parts)]).fetchone()[0] > 0


def is_posted_sql(source: str, *parts: str) -> str:
    """`is_posted` as an SQL condition over a relation's columns (see `posting_key_sql`); the key is built in
    the caller's scope, never bound to the ledger's own columns of the same name."""
    return f"(({posting_key_sql(source, *parts)}) IN (SELECT idempotency_key FROM ledger_postings))"


def first_unposted(con: duckdb.DuckDBPyConnection, staged_sql: str, columns: str, *, source: str,
                   key: Sequence[str], params: dict | None = None, order_by: str = "1") -> tuple | None:
    """The first row of `staged_sql` (its `columns`) whose posting `source:key` is not in the ledger: what a
    reversal must wait for, checked the same way for every feed."""
    sql = (f"SELECT {columns} FROM ({staged_sql}) staged WHERE NOT {is_posted_sql(source, *key)} "
           f"ORDER BY {order_by} LIMIT 1")
    return con.execute(sql, used_params(sql, params)).fetchone()


# ---- posting: the only writes to the ledger table --------------------------------------------------------------

_COLUMNS = ("idempotency_key, account_number, invoice_number, kind, amount_minor, currency, batch_id, source_ref, "
            "effective_at, posted_at")


def used_params(sql: str, params: dict | None) -> dict:
    """The named parameters `sql` uses: DuckDB refuses one a statement does not use."""
    return {k: v for k, v in (params or {}).items() if re.search(rf"\${re.escape(k)}\b", sql)}


def post(con: duckdb.DuckDBPyConnection, staged_sql: str, *, source: str, key: Sequence[str],
         batch_id: str | None, now: datetime | None, params: dict | None = None, order_by: str | None = None
         ) -> int:
    """Post every row of the caller's staged relation (a SELECT over its own tables, read once by one INSERT):
    it yields account_number, invoice_number, kind, amount_minor (signed: payments negative), currency,
    source_ref, effective_at, the columns `key` reads, and batch_id when `batch_id` is None. A row whose key
    is already posted changes nothing. `now` is posted_at (None: the transaction's time). Returns the rows
    posted now."""
    batch = "staged.batch_id" if batch_id is None else lit(batch_id)
    posted_at = "now()" if now is None else "$ledger_posted_at"
    sql = f"""
        INSERT INTO ledger_postings ({_COLUMNS})
        SELECT {posting_key_sql(source, *key)}, account_number, invoice_number, kind, amount_minor, currency,
               {batch}, source_ref, effective_at, {posted_at}
        FROM ({staged_sql}) staged
        {f"ORDER BY {order_by}" if order_by else ""}
        ON CONFLICT DO NOTHING
    """
    bound = used_params(staged_sql, params)
    if now is not None:
        bound["ledger_posted_at"] = now
    return con.execute(sql, bound).fetchone()[0]


# ---- posting on PostgreSQL (CMP_DATABASE_URL, issue 19) -------------------------------------------------------

# The staging table each PostgreSQL posting fills: the posting rows as DuckDB computed them, plus `ord`, their
# place in the caller's order. Dropped at commit; recreated by each post.
_PG_STAGE = """
    CREATE TEMP TABLE ledger_stage (
        ord BIGINT NOT NULL, idempotency_key VARCHAR, account_number VARCHAR, invoice_number VARCHAR,
        kind VARCHAR, amount_minor BIGINT, currency VARCHAR, batch_id VARCHAR, source_ref VARCHAR,
        effective_at TIMESTAMPTZ, posted_at TIMESTAMPTZ
    ) ON COMMIT DROP
"""


def _insert_staged(con: duckdb.DuckDBPyConnection, pg, sql: str, params: dict | None = None, *,
                   key_domain: str | None = None, order: str = "ord",
                   meanwhile: Callable[[pa.Table | None], object] | None = None) -> int:
    """The posting rows `sql` computes in DuckDB (with `ord`, their place in the caller's order), inserted into
    PostgreSQL's ledger inside `pg`'s open transaction. Returns the rows posted now.

    The general path: pushed as Arrow into a temporary table, then inserted with posting ids drawn in `order`
    (`ord`, the caller's, or `idempotency_key` for a caller that named none), rows in idempotency-key order ON
    CONFLICT DO NOTHING (every writer meets shared keys in one order: no deadlock, no key twice). With `key_domain`
    (a key prefix only its caller's rows carry) and no posting of the domain yet in the keys' range, the rows are
    copied straight into the ledger instead (`_copy_new`): half the time on a million rows, because the temporary
    table, its two sorts and the speculative insertion per row are gone. `meanwhile`: the caller's own work on
    `con` (the scratch's copy of the same postings), run once on either path and told which: on the copy it is
    given the rows being copied (Arrow, in the order they are numbered) and runs while PostgreSQL's backend writes
    them, so the two take a core each; on the general path it is given None and runs after the insert."""
    from cmp_pipelines.core.db.transfer import arrow_batches, ingest_adbc

    with pg.cursor() as cur:
        if key_domain is not None and _domain_is_new(con, cur, sql, params, key_domain):
            return _copy_new(con, cur, sql, params, order, meanwhile)
        cur.execute("DROP TABLE IF EXISTS pg_temp.ledger_stage")  # one post earlier in the same transaction
        cur.execute(_PG_STAGE)
        ingest_adbc(cur, "ledger_stage", arrow_batches(con, sql, params), temporary=True)
        cur.execute(f"""
            WITH numbered AS (
                SELECT nextval('ledger_posting_seq') AS posting_id, s.*
                FROM (SELECT * FROM ledger_stage ORDER BY {order}) s
            ), inserted AS (
                INSERT INTO ledger_postings (posting_id, {_COLUMNS})
                SELECT posting_id, idempotency_key, account_number, invoice_number, kind, amount_minor, currency,
                       batch_id, source_ref, effective_at, coalesce(posted_at, now())
                FROM numbered ORDER BY idempotency_key
                ON CONFLICT (idempotency_key) DO NOTHING
                RETURNING 1
            )
            SELECT count(*) FROM inserted
        """)
        posted = int(cur.fetchone()[0])
    if meanwhile is not None:
        meanwhile(None)
    return posted


def _domain_is_new(con: duckdb.DuckDBPyConnection, cur, sql: str, params: dict | None, key_domain: str) -> bool:
    """Whether no key of the staged rows can be in the ledger: every writer of `key_domain` is serialised on its
    advisory lock `ledger:<domain>` (held to the end of the transaction), so once it is held, no posting in the
    range of the staged keys means none of them is posted, nor can be before this transaction ends. The range is
    compared in byte order on both sides (DuckDB's VARCHAR; the key's "C" collation on PostgreSQL, migration 0025;
    any other collation takes the general path)."""
    from cmp_pipelines.core.db.mirror import advisory_key

    outside, low, high = con.execute(
        f"SELECT count(*) FILTER (NOT starts_with(idempotency_key, $ledger_domain)), min(idempotency_key), "
        f"max(idempotency_key) FROM ({sql}) staged", {**(params or {}), "ledger_domain": key_domain}).fetchall()[0]
    if outside:
        raise ValueError(f"{outside} posting keys lie outside their declared domain {key_domain!r}")
    cur.execute("SELECT pg_advisory_xact_lock($1)", [advisory_key(f"ledger:{key_domain}")])
    if low is None:
        return False
    cur.execute("""
        SELECT coalesce(nullif(c.collname, 'default'), (SELECT datcollate FROM pg_database
                                                       WHERE datname = current_database()))
        FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
        WHERE a.attrelid = 'ledger_postings'::regclass AND a.attname = 'idempotency_key'
    """)
    if cur.fetchone()[0] not in ("C", "POSIX"):
        return False
    cur.execute("SELECT EXISTS (SELECT 1 FROM ledger_postings WHERE idempotency_key BETWEEN $1 AND $2)", [low, high])
    return not cur.fetchone()[0]


def _copy_new(con: duckdb.DuckDBPyConnection, cur, sql: str, params: dict | None, order: str,
              meanwhile: Callable[[pa.Table | None], object] | None = None) -> int:
    """Rows none of which is posted, copied (binary COPY) into the ledger in `order`, so the posting ids the
    column's default draws follow that order, as in the general path; posted_at defaults to the transaction's
    time, as there. With `meanwhile`, the rows are computed first (Arrow, in memory: ~200 MB a million postings,
    for the copy's length) and copied from a worker thread (the driver releases the GIL) while `meanwhile` uses
    `con`."""
    from cmp_pipelines.core.db.transfer import arrow_batches, ingest_adbc

    cur.execute("SELECT now()")
    rows = arrow_batches(con, f"""
        SELECT idempotency_key, account_number, invoice_number, kind, amount_minor, currency, batch_id, source_ref,
               effective_at, coalesce(posted_at, $ledger_transaction_time::TIMESTAMPTZ) AS posted_at
        FROM ({sql}) staged ORDER BY {order}
    """, {**(params or {}), "ledger_transaction_time": cur.fetchone()[0]})
    if meanwhile is None:
        written = ingest_adbc(cur, "ledger_postings", rows)
    else:
        rows = rows.read_all()  # `con` is free for `meanwhile` once its result is read
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-copy") as pool:
            copying = pool.submit(ingest_adbc, cur, "ledger_postings", rows)
            meanwhile(rows)  # an error here still waits for the copy (leaving the pool), then fails the transaction
        written = copying.result()
    if written < 0:  # a driver that does not count: the rows are all new, so they are the staged ones
        written = con.execute(f"SELECT count(*) FROM ({sql}) staged", params or {}).fetchall()[0][0]
    return written


def post_to_postgres(con: duckdb.DuckDBPyConnection, pg, staged_sql: str, *, source: str, key: Sequence[str],
                     batch_id: str | None, now: datetime | None, params: dict | None = None,
                     order_by: str | None = None, key_domain: str | None = None,
                     meanwhile: Callable[[pa.Table | None], object] | None = None) -> int:
    """`post` with PostgreSQL holding the ledger: the rows are computed set-based in DuckDB exactly as `post`
    computes them (the caller's staged relation, the same key), pushed as Arrow into a temporary table on `pg` (an
    ADBC connection, core/db/transfer.py) and inserted ON CONFLICT DO NOTHING on the UNIQUE idempotency key, all in
    `pg`'s open transaction, which the caller commits with its batch's status change (`commit_postgres`).

    Under concurrency: a writer inserting a key another uncommitted transaction holds waits for it, then skips the
    key once that one commits (or inserts it if that one rolls back), so no key is ever posted twice. Rows are
    inserted in idempotency-key order, the same for every writer, so two writers sharing keys always meet them in
    one order and cannot deadlock; posting ids are still drawn in the caller's order (`order_by`) first, so the
    ledger reads in the same order as on DuckDB. A caller naming no order gets them in key order (on either path,
    so a batch's ids never depend on which path it took): the UNIQUE index is then filled page after page rather
    than on a random leaf per row, ~1 s less a million on a first posting's COPY; to read its postings in the
    same order in its scratch, the caller posts there with `order_by=posting_key_sql(...)` (DuckDB's VARCHAR
    compares bytes, as the key's "C" collation does on PostgreSQL). `now` is posted_at (None: PostgreSQL's
    transaction time).
    `key_domain`: a prefix every staged key carries and only this caller's keys do (NRP: `nrp:<file stem>:`); its
    writers are serialised on one advisory lock and a first posting of the domain is copied in directly
    (`_insert_staged`), with `meanwhile` (the caller's work on `con`) run while PostgreSQL writes. Returns the
    rows posted now."""

    batch = "staged.batch_id" if batch_id is None else lit(batch_id)
    posted_at = "NULL::TIMESTAMPTZ" if now is None else "$ledger_posted_at::TIMESTAMPTZ"
    sql = f"""
        SELECT row_number() OVER ({f"ORDER BY {order_by}" if order_by else ""})::BIGINT AS ord,
               ({posting_key_sql(source, *key)})::VARCHAR AS idempotency_key,
               account_number::VARCHAR AS account_number, invoice_number::VARCHAR AS invoice_number,
               kind::VARCHAR AS kind, amount_minor::BIGINT AS amount_minor, currency::VARCHAR AS currency,
               ({batch})::VARCHAR AS batch_id, source_ref::VARCHAR AS source_ref,
               effective_at::TIMESTAMPTZ AS effective_at, {posted_at} AS posted_at
        FROM ({staged_sql}) staged
    """
    bound = used_params(staged_sql, params)
    if now is not None:
        bound["ledger_posted_at"] = now
    return _insert_staged(con, pg, sql, bound, key_domain=key_domain, order="ord" if order_by else "idempotency_key",
                          meanwhile=meanwhile)


def push_batch_to_postgres(con: duckdb.DuckDBPyConnection, pg, batch_id: str) -> int:
    """The postings of `batch_id` the scratch DuckDB `con` holds (written there by `post` or `reverse`, keys and
    all), inserted into PostgreSQL's ledger inside `pg`'s open transaction as `post_to_postgres` inserts: ON
    CONFLICT on the UNIQUE idempotency key in key order (exactly once, no deadlock between writers), ids drawn in
    the scratch's posting order. For rules such as `reverse` that compute a posting from one already posted (which
    the caller pulled into the scratch). Returns the rows posted now."""

    sql = f"""
        SELECT row_number() OVER (ORDER BY posting_id)::BIGINT AS ord, idempotency_key, account_number,
               invoice_number, kind, amount_minor, currency, batch_id, source_ref, effective_at, posted_at
        FROM ledger_postings WHERE batch_id = {lit(batch_id)}
    """
    return _insert_staged(con, pg, sql)


def commit_postgres(pg) -> None:
    """Commit a PostgreSQL batch's transaction between the same crash points as the embedded store's."""
    from cmp_pipelines.core.crashpoints import crashpoint

    crashpoint("before commit")
    pg.commit()
    crashpoint("after commit")


def reverse(con: duckdb.DuckDBPyConnection, staged_sql: str, *, source: str, refs: Sequence[str], event: str,
            kind: str, batch_id: str, now: datetime, params: dict | None = None) -> int:
    """Reverse postings already in the ledger: for each row of the staged relation, the posting under
    `source:refs:event` again with its amount negated, as `kind`, under `source:refs:REVERSAL`: the same account,
    invoice, currency and source reference, so a reversal can never disagree with what it reverses. The staged
    relation yields the columns `refs` and `event` read, and effective_at. Rows whose original is not posted are
    skipped: check `first_unposted` first. Written in the order of the originals. Returns the rows posted now."""
    sql = f"""
        INSERT INTO ledger_postings ({_COLUMNS})
        SELECT k.reversal_key, p.account_number, p.invoice_number, {lit(kind)}, -p.amount_minor, p.currency,
               {lit(batch_id)}, p.source_ref, k.effective_at, $ledger_posted_at
        FROM (SELECT {posting_key_sql(source, *refs, event)} AS original_key,
                     {posting_key_sql(source, *refs, lit(REVERSAL))} AS reversal_key, effective_at
              FROM ({staged_sql}) staged) k
        JOIN ledger_postings p ON p.idempotency_key = k.original_key
        ORDER BY p.posting_id
        ON CONFLICT DO NOTHING
    """
    return con.execute(sql, {**used_params(staged_sql, params), "ledger_posted_at": now}).fetchone()[0]


def reverse_to_postgres(con: duckdb.DuckDBPyConnection, pg, staged_sql: str, *, source: str, refs: Sequence[str],
                        event: str, kind: str, batch_id: str, now: datetime, params: dict | None = None) -> int:
    """`reverse` with PostgreSQL holding the ledger: the reversal rows are computed in DuckDB exactly as `reverse`
    computes them, from the originals the caller pulled into `con` (the same key, account, invoice, currency and
    source reference, the amount negated), and inserted into PostgreSQL's ledger in `pg`'s open transaction ON
    CONFLICT DO NOTHING on the UNIQUE idempotency key, in key order (as `post_to_postgres`: concurrent writers of
    the same keys wait for each other and never deadlock). Posting ids follow the originals' order. Returns the
    rows posted now."""

    sql = f"""
        SELECT row_number() OVER (ORDER BY p.posting_id)::BIGINT AS ord, k.reversal_key::VARCHAR AS idempotency_key,
               p.account_number::VARCHAR AS account_number, p.invoice_number::VARCHAR AS invoice_number,
               {lit(kind)}::VARCHAR AS kind, (-p.amount_minor)::BIGINT AS amount_minor, p.currency::VARCHAR AS currency,
               {lit(batch_id)}::VARCHAR AS batch_id, p.source_ref::VARCHAR AS source_ref,
               k.effective_at::TIMESTAMPTZ AS effective_at, $ledger_posted_at::TIMESTAMPTZ AS posted_at
        FROM (SELECT {posting_key_sql(source, *refs, event)} AS original_key,
                     {posting_key_sql(source, *refs, lit(REVERSAL))} AS reversal_key, effective_at
              FROM ({staged_sql}) staged) k
        JOIN ledger_postings p ON p.idempotency_key = k.original_key
    """
    bound = {**used_params(staged_sql, params), "ledger_posted_at": now}
    con.complete()  # a result the caller left half-read would refuse the query below (DuckDB 2)
    return _insert_staged(con, pg, sql, bound)


# ---- the batch-id registry and the parent relation -----------------------------------------------------------

# batches.kind -> the prefix of its ids, `<prefix>-<stem>`: the stem is the content hash or the business day of
# the batch that started it, shared by its children (a load batch's posting batch, a rejections batch's reversal).
BATCH_PREFIXES = {
    "NRP_LOAD": "NRPL", "NRP_POSTING": "NRPP", "NRP_RELEASE": "NRPR",
    "CARD_EXTRACT": "RCX", "CARD_POSTING": "RCP", "CARD_REJECTIONS": "RCRJ", "CARD_REVERSAL": "RCRV",
    "DD_COLLECTION": "DDX", "DD_POSTING": "DDP", "DD_RETURNS": "ARJ", "DD_REVERSAL": "ARV",
    "WAREHOUSE_DISPATCH": "WHD", "HARDWARE_CHARGE": "HWB", "ONE_OFF_POSTING": "OOP", "INVOICES": "INVOICES",
    "BILLING_LOAD": "BLL", "BILLING_POSTING": "BLP",
}


# The kinds whose postings go to the sales ledger as a posting file (`write_posting_file`). INVOICES (the API's
# invoice charges of a day) has none: the ledger-posting-file probe must not count it.
POSTING_FILE_KINDS = ("NRP_POSTING", "NRP_RELEASE", "CARD_POSTING", "CARD_REVERSAL", "DD_POSTING", "DD_REVERSAL",
                      "HARDWARE_CHARGE", "ONE_OFF_POSTING", "BILLING_POSTING")


def batch_id_of(kind: str, stem: str) -> str:
    """A new batch's id: `<prefix of kind>-<stem>`."""
    if kind not in BATCH_PREFIXES:
        raise ValueError(f"batch kind {kind!r} is not registered in core.ledger.BATCH_PREFIXES")
    if not stem:
        raise ValueError(f"a {kind} batch id needs a stem")
    return f"{BATCH_PREFIXES[kind]}-{stem}"


def batch_stem(kind: str, batch: str) -> str:
    """What follows the registered prefix of `kind` in `batch`: the content hash or day its children share."""
    prefix = BATCH_PREFIXES.get(kind)
    if prefix is None or not batch.startswith(f"{prefix}-"):
        raise ValueError(f"batch {batch} is not a {kind} batch ({prefix or 'unregistered'}-...)")
    return batch[len(prefix) + 1:]


def child_batch_id(con: duckdb.DuckDBPyConnection, parent: str, kind: str, *, numbered: bool = False) -> str:
    """The batch of `kind` that `parent` started: the one the batches relation records (parent_batch_id), else a
    new id sharing the parent's stem. `numbered` children (releases) are many: the next is `<id>-<n + 1>`."""
    row = con.execute("SELECT kind FROM batches WHERE batch_id = ?", [parent]).fetchone()
    if row is None:
        raise LookupError(f"batch {parent} does not exist")
    children = [b for (b,) in con.execute(
        "SELECT batch_id FROM batches WHERE parent_batch_id = ? AND kind = ? ORDER BY created_at, batch_id",
        [parent, kind]).fetchall()]
    if children and not numbered:
        return children[0]
    child = batch_id_of(kind, batch_stem(row[0], parent))
    return f"{child}-{len(children) + 1}" if numbered else child


def parent_batch_id(con: duckdb.DuckDBPyConnection, child: str) -> str:
    row = con.execute("SELECT parent_batch_id FROM batches WHERE batch_id = ?", [child]).fetchone()
    if row is None or row[0] is None:
        raise LookupError(f"batch {child} has no parent batch")
    return row[0]


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
    """`{"header": ..., key: [rows]}` written whole by DuckDB (`core.files.text_copy`): each row is `to_json` of the
    query's columns, the envelope is the prefix and suffix."""
    copy_lines(con, target, f"SELECT to_json(r)::VARCHAR FROM ({query}) r",
               prefix='{"header":' + orjson.dumps(header).decode() + ',"' + key + '":[', suffix="]}", separator=",")


def json_document(con: duckdb.DuckDBPyConnection, header: dict, key: str, query: str
                  ) -> AbstractContextManager[Path]:
    """The finished document in a scratch file, for callers that encrypt it (`core.files.text_copy.staged`)."""
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


def posting_totals(con: duckdb.DuckDBPyConnection, batch_id: str | None, rows: str | None = None) -> tuple[int, int]:
    """A batch's posting count and total (minor units): what its posting file's header says. Of the ledger's
    postings of `batch_id`, or of `rows` (a relation of postings being posted) when given."""
    where = rows or f"ledger_postings WHERE batch_id = {sql_literal(batch_id)}"
    count, total = con.execute(f"SELECT count(*), coalesce(sum(amount_minor), 0) FROM {where}").fetchone()
    return count, int(total)


def write_posting_file(
    con: duckdb.DuckDBPyConnection, files: FileStoreLike, batch_id: str, source: str, now: datetime,
    ready: PreparedDocument | None = None,
) -> tuple[str, int, int]:
    """Writes outbound/ledger/<batch_id>.json from the batch's postings; returns (path, count, total minor). `ready`:
    the file `prepare_posting_file` rendered from the same postings, already matched to the batch's `posting_totals`
    (`core.files.prepared.take`), published instead of rendered again."""
    if ready is not None:
        count, total = ready.fingerprint
        path = ready.publish()
    else:
        count, total = posting_totals(con, batch_id)
        path, render = _posting_file(con, batch_id, source, now, count, total)
        files.write_from(path, render)
    con.execute("UPDATE batches SET output_path = ? WHERE batch_id = ?", [path, batch_id])
    enqueue(con, files, "LEDGER_POSTING", path, reference=batch_id, now=now,
            digest=ready.published_digest if ready is not None else None)
    return path, count, total


def prepare_posting_file(con: duckdb.DuckDBPyConnection, files: FileStoreLike, batch_id: str, source: str,
                         now: datetime, rows: pa.Table) -> tuple[str, PreparedDocument]:
    """The posting file of a batch being posted, rendered but not published (core/files/prepared.py), from `rows`,
    the postings as they are being copied into PostgreSQL's ledger (`post_to_postgres`'s `meanwhile`), in the order
    they are numbered. On `con`, a connection of its own, so what fails here cannot touch the transaction that
    writes the postings. For `write_posting_file`'s `ready`, kept under the key returned, its fingerprint the
    batch's `posting_totals`."""
    con.register("prepared_postings", rows)
    try:
        count, total = posting_totals(con, batch_id, rows="prepared_postings")
        path, render = _posting_file(con, batch_id, source, now, count, total, rows="prepared_postings")
        return posting_file_key(batch_id), prepare(files, path, render, (count, total))
    finally:
        con.unregister("prepared_postings")


def posting_file_key(batch_id: str) -> str:
    return f"posting_file:{batch_id}"


def _posting_file(con: duckdb.DuckDBPyConnection, batch_id: str, source: str, now: datetime, count: int,
                  total: int, rows: str | None = None) -> tuple[str, Callable[[Path], None]]:
    header = {
        "batch_id": batch_id,
        "source": source,
        "created_at": now.isoformat(),
        "record_count": count,
        "total_amount": format_minor(total),
    }
    rows = rows or f"ledger_postings WHERE batch_id = {sql_literal(batch_id)} ORDER BY posting_id"  # else in order
    query = f"""
        SELECT idempotency_key, account_number, invoice_number, kind, minor_to_decimal(amount_minor) AS amount,
               currency, strftime(effective_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') AS effective_at
        FROM {rows}
        """
    return (f"outbound/ledger/{batch_id}.json",
            lambda target: write_json_document(con, target, header, "postings", query))


def write_posting_file_postgres(mirror, files: FileStoreLike, batch_id: str, source: str,
                                now: datetime) -> str | None:
    """`write_posting_file` for a batch PostgreSQL holds (`mirror`, core/db/mirror.Mirror): under an advisory lock
    on the batch, if its file is still unwritten, its postings and batch row are pulled into the scratch, the
    file is written there by the same code, and the batch's output path and the delivery registration are pushed
    in one transaction. Returns the path, or None when another writer had already written it (two Ledger Monitors
    at once write one file)."""
    with mirror.transaction():
        mirror.lock(f"posting_file:{batch_id}")
        if mirror.query("SELECT 1 FROM batches WHERE batch_id = $1 AND output_path IS NULL",
                        [batch_id]).num_rows == 0:
            return None
        mirror.pull("batches", "batch_id = $1", [batch_id], key=["batch_id"])
        mirror.pull("ledger_postings", "batch_id = $1", [batch_id], key=["idempotency_key"])
        path = write_posting_file(mirror.con, files, batch_id, source, now)[0]
        mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": batch_id})
        mirror.push_deliveries(now)
    return path
