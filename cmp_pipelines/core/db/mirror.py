"""A batch run on PostgreSQL (CMP_DATABASE_URL): PostgreSQL stays the system of record, DuckDB the engine.

The pattern every flow follows (issue 19, phase 2; the NRP flow first):

1. The run works in a *scratch* DuckDB: in memory, built by the same migrations as both stores, so the flow's
   DuckDB SQL runs unchanged on tables of the same names and types.
2. Each step *pulls* from PostgreSQL, as Arrow through ADBC, only the rows its rules read: the file's intake row,
   the accounts and invoices the file names, the duplicate window's earlier records, the batch rows of its load.
   A pull replaces what the scratch held under the same key, so a scratch kept for a whole run (the in-process
   executor runs every step of a run on one scratch) never reads a stale row, and a resumed run in a new
   process pulls what it needs again.
3. The step runs its DuckDB SQL, then *pushes* what it wrote (its batch's rows, the intake row, its postings
   through `core.ledger.post_to_postgres`) into PostgreSQL in ONE transaction, committed just before the scratch
   transaction commits. A failure or a kill before that COMMIT leaves PostgreSQL untouched.
4. Exactly-once is PostgreSQL's UNIQUE keys (ledger idempotency key, batch id, file id). Where two runs at once
   must not both decide from the same state (two files of the same content, the same partner's file id, one
   partner's duplicate window), the step takes transaction-level advisory locks (`lock`: sorted keys, one order)
   on those identities and checks again in PostgreSQL under them. No lock is held while a file is decrypted,
   parsed or matched.

The transaction is the ADBC connection's own (not autocommit): pulls and pushes of a step share it, and
`commit` ends it between the same crash points as the embedded store's commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import duckdb
import pyarrow as pa

from cmp_pipelines.core.db.connection import SQL_MACROS
from cmp_pipelines.core.db.migrations import apply_migrations
from cmp_pipelines.core.db.transfer import arrow_batches, ingest_adbc
from cmp_pipelines.core.files.prepared import PreparedDocument, discard_all


@contextmanager
def scratch_duckdb() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB with the store's schema and macros: where a run on PostgreSQL does its SQL."""
    con = duckdb.connect()
    try:
        apply_migrations(con)
        con.execute(SQL_MACROS)
        yield con
    finally:
        con.close()


def advisory_key(text: str) -> int:
    """A signed 64-bit advisory-lock key for an identity (a content hash, a partner's file id)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


class Mirror:
    """A run's (or one step's) link between its scratch DuckDB (`con`) and PostgreSQL (`pg`, an ADBC connection),
    and the documents its steps rendered for later steps to publish (`prepared`)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, pg):
        self.con, self.pg = con, pg
        # documents a step rendered while PostgreSQL wrote (core/files/prepared.py), by key, for a later step of
        # the run to publish; only what a committed transaction wrote is kept here
        self.prepared: dict[str, PreparedDocument] = {}

    def keep_prepared(self, documents: dict[str, PreparedDocument]) -> None:
        for key, document in documents.items():
            earlier = self.prepared.pop(key, None)
            if earlier is not None:
                earlier.discard()
            self.prepared[key] = document

    def discard_prepared(self) -> None:
        discard_all(self.prepared)

    def settle(self) -> None:
        """Finish a result the flow left half-read (`fetchone`): DuckDB 2 refuses new work on the connection
        until it is, and the scratch must stay one connection (it holds the step's open transaction)."""
        self.con.complete()

    # ---- reading what the rules read ---------------------------------------------------------------------

    def query(self, sql: str, params: Sequence | None = None) -> pa.Table:
        """A PostgreSQL query's rows as Arrow ($1, $2 ... parameters)."""
        with self.guarded(), self.pg.cursor() as cur:
            cur.execute(sql, list(params) if params else None)
            return cur.fetch_arrow_table()

    @contextmanager
    def guarded(self) -> Iterator[None]:
        """A failed statement aborts PostgreSQL's transaction: roll it back at once, so the run's next step (which
        shares this connection) starts clean instead of on "current transaction is aborted"."""
        try:
            yield
        except Exception:
            self.rollback()
            raise

    def pull(self, table: str, where: str, params: Sequence | None = None, *, key: Sequence[str] = ()) -> int:
        """Copy PostgreSQL's rows of `table` matching `where` into the scratch table of the same name; returns how
        many. Rows the scratch holds under the same `key` columns are replaced; with no key the rows are added (the
        caller pulls a table without a key only when the scratch holds none of those rows)."""
        rows = self.query(f"SELECT * FROM {table} WHERE {where}", params)  # noqa: S608 - our tables, never input
        return self.load(table, rows, key=key)

    def load(self, table: str, rows: pa.Table, *, key: Sequence[str] = ()) -> int:
        if rows.num_rows == 0:
            return 0
        self.settle()
        self.con.register("pulled_rows", rows)
        try:
            if key:
                match = " AND ".join(f"t.{k} = p.{k}" for k in key)
                self.con.execute(f"DELETE FROM {table} t WHERE EXISTS (SELECT 1 FROM pulled_rows p WHERE {match})")
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM pulled_rows")
        finally:
            self.con.unregister("pulled_rows")
        return rows.num_rows

    def stage_keys(self, name: str, sql: str, params: dict | None = None) -> int:
        """A scratch query's distinct values (one column `k`) into a PostgreSQL temp table `name`, to pull by. No
        index (the values are distinct already; building one cost more than the join it served): the table is
        analysed instead, so the planner sizes the join by its real row count."""
        self.settle()
        with self.guarded(), self.pg.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
            cur.execute(f"CREATE TEMP TABLE {name} (k VARCHAR) ON COMMIT DROP")
            staged = ingest_adbc(cur, name, arrow_batches(
                self.con, f"SELECT DISTINCT k::VARCHAR AS k FROM ({sql}) WHERE k IS NOT NULL", params),
                temporary=True)
            cur.execute(f"ANALYZE {name}")
            return staged

    # ---- writing what the step wrote ---------------------------------------------------------------------

    def push(self, table: str, where: str, params: dict | None = None, *, conflict: str = "") -> int:
        """Insert the scratch rows of `table` matching `where` into PostgreSQL's `table` inside the open
        transaction (Arrow, binary COPY). `conflict` is the ON CONFLICT clause, e.g. `(file_id) DO UPDATE SET ...`
        (see `upsert`), applied from a temp table of the same shape; with none the rows are copied straight in and a
        duplicate key fails the push."""
        stage = f"push_{table}"
        self.settle()
        reader = arrow_batches(self.con, f"SELECT * FROM {table} WHERE {where}", params)  # noqa: S608
        columns = ", ".join(f'"{f.name}"' for f in reader.schema)
        with self.guarded(), self.pg.cursor() as cur:
            if not conflict:  # straight in by binary COPY (the driver names the columns): one copy of the rows, not two
                return ingest_adbc(cur, table, reader)
            cur.execute(f"DROP TABLE IF EXISTS pg_temp.{stage}")
            cur.execute(f"CREATE TEMP TABLE {stage} (LIKE {table}) ON COMMIT DROP")
            ingest_adbc(cur, stage, reader, temporary=True)
            cur.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ON CONFLICT {conflict}")
            return cur.rowcount

    def upsert(self, table: str, key: Sequence[str], where: str, params: dict | None = None) -> int:
        """`push` where the scratch row replaces PostgreSQL's row of the same key (a status change, a path)."""
        columns = [name for (name,) in self.con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]
        ).fetchall()]
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in key)
        return self.push(table, where, params, conflict=f"({', '.join(key)}) DO UPDATE SET {updates}")

    def push_update(self, table: str, key: Sequence[str], columns: Sequence[str], where: str,
                    params: dict | None = None) -> int:
        """Set `columns` of PostgreSQL's rows from the scratch rows matching `where`, joined on `key` (for tables
        without a primary key to upsert on, such as nrp_records)."""
        stage = f"update_{table}"
        self.settle()
        reader = arrow_batches(self.con, f"SELECT * FROM {table} WHERE {where}", params)  # noqa: S608
        with self.guarded(), self.pg.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS pg_temp.{stage}")
            cur.execute(f"CREATE TEMP TABLE {stage} (LIKE {table}) ON COMMIT DROP")
            ingest_adbc(cur, stage, reader, temporary=True)
            cur.execute(f"UPDATE {table} t SET {', '.join(f'{c} = s.{c}' for c in columns)} FROM {stage} s "
                        f"WHERE {' AND '.join(f't.{k} = s.{k}' for k in key)}")
            return cur.rowcount

    def push_deliveries(self, now) -> None:
        """The documents the step registered for delivery (core/delivery.enqueue, rows stamped `now`), registered
        in PostgreSQL the way `enqueue` does it there: a newer version replaces one not yet sent, the same one
        again changes nothing, and the id is drawn from PostgreSQL's own sequence."""
        stage = "push_delivery_register"
        self.settle()
        reader = arrow_batches(self.con, "SELECT * FROM delivery_register WHERE updated_at = $now", {"now": now})
        columns = ", ".join(f'"{f.name}"' for f in reader.schema if f.name != "delivery_id")
        with self.guarded(), self.pg.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS pg_temp.{stage}")
            cur.execute(f"CREATE TEMP TABLE {stage} (LIKE delivery_register) ON COMMIT DROP")
            ingest_adbc(cur, stage, reader, temporary=True)
            cur.execute(f"""
                UPDATE delivery_register d SET sha256 = s.sha256, size_bytes = s.size_bytes,
                       local_path = s.local_path, updated_at = s.updated_at
                FROM {stage} s
                WHERE d.partner = s.partner AND d.remote_name = s.remote_name AND d.status IN ('PENDING', 'FAILED')
                  AND d.claimed_by IS NULL AND d.sha256 <> s.sha256""")
            cur.execute(f"INSERT INTO delivery_register (delivery_id, {columns}) "
                        f"SELECT nextval('delivery_register_seq'), {columns} FROM {stage} ON CONFLICT DO NOTHING")

    def push_published(self, batch_id: str, now) -> None:
        """After a step wrote a batch's document: its batch row (output path, status) and the document's delivery
        registration pushed in one transaction of their own."""
        with self.transaction():
            self.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": batch_id})
            self.push_deliveries(now)

    def push_new(self, table: str, id_column: str, where: str, params: dict | None = None,
                 unique: str | None = None) -> int:
        """Insert the scratch rows of `table` matching `where` into PostgreSQL without their `id_column`, which
        PostgreSQL's own sequence (the column's default) draws in the scratch's id order; a row whose unique key is
        already there is skipped (ON CONFLICT DO NOTHING). For rows numbered by a sequence, such as ledger
        postings, workflow events or order history, whose scratch numbers (its sequences start at 1 in every run)
        would collide with, or sort before, rows other runs already wrote. With `unique` (the unique key's column),
        the rows are inserted in that key's order once numbered, as `core.ledger` inserts postings: two writers of
        the same keys then meet them in one order and never deadlock. Returns the rows inserted."""
        stage = f"push_new_{table}"
        self.settle()
        reader = arrow_batches(self.con, f"SELECT * FROM {table} WHERE {where}", params)  # noqa: S608
        columns = ", ".join(f'"{f.name}"' for f in reader.schema if f.name != id_column)
        with self.guarded(), self.pg.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS pg_temp.{stage}")
            cur.execute(f"CREATE TEMP TABLE {stage} (LIKE {table}) ON COMMIT DROP")
            ingest_adbc(cur, stage, reader, temporary=True)
            if unique is None:
                cur.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ORDER BY {id_column} "
                            "ON CONFLICT DO NOTHING")
                return cur.rowcount
            cur.execute("SELECT column_default FROM information_schema.columns WHERE table_schema = current_schema() "
                        f"AND table_name = '{table}' AND column_name = '{id_column}'")
            (default,) = cur.fetchone()
            cur.execute(f"""
                INSERT INTO {table} ({id_column}, {columns})
                SELECT {id_column}, {columns} FROM (
                    SELECT {default} AS {id_column}, {columns} FROM (SELECT * FROM {stage} ORDER BY {id_column}) s
                ) numbered ORDER BY {unique} ON CONFLICT DO NOTHING
            """)
            return cur.rowcount

    def execute(self, sql: str, params: Sequence | None = None) -> None:
        with self.guarded(), self.pg.cursor() as cur:
            cur.execute(sql, list(params) if params else None)

    def lock(self, *identities: str) -> None:
        """Transaction-level advisory locks on `identities`, taken in one global order (sorted keys) so two
        runs locking overlapping sets never deadlock; released by COMMIT or ROLLBACK."""
        for key in sorted({advisory_key(i) for i in identities}):
            self.execute("SELECT pg_advisory_xact_lock($1)", [key])

    def commit(self) -> None:
        from cmp_pipelines.core.ledger import commit_postgres

        commit_postgres(self.pg)

    def rollback(self) -> None:
        self.pg.rollback()

    @contextmanager
    def transaction(self) -> Iterator[Mirror]:
        """Pushes inside it are one PostgreSQL transaction: committed at the end, rolled back on any error."""
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        self.commit()


@contextmanager
def mirrored(url: str | None = None) -> Iterator[Mirror]:
    """A scratch DuckDB linked to the PostgreSQL store (`url`, else CMP_DATABASE_URL); whatever was not committed
    when it closes is rolled back."""
    from cmp_pipelines.core.db.transfer import adbc_connection

    with scratch_duckdb() as con, adbc_connection(url) as pg:
        mirror = Mirror(con, pg)
        try:
            yield mirror
        finally:
            mirror.discard_prepared()


# ---- added for the direct debit flows (issue 19, phase 3b) -------------------------------------------------------


def replace_pulled(mirror: Mirror, table: str, where: str, params: Sequence | None = None, *,
                   lock_rows: bool = False) -> int:
    """The scratch's `table` emptied, then PostgreSQL's rows matching `where` pulled into it: for a rule that reads
    the whole table (the mandates pending an instruction, every direct-debit account's invoices), so no row an
    earlier step of the run pulled, and another run has changed since, can be read stale. `lock_rows` takes
    PostgreSQL row locks on them (FOR UPDATE) until the step's commit: a writer outside the flow (the API amending
    a mandate) waits rather than having its change overwritten by the step's push."""
    mirror.settle()
    mirror.con.execute(f"DELETE FROM {table}")  # noqa: S608 - our tables, never input
    rows = mirror.query(f"SELECT * FROM {table} WHERE {where}{' FOR UPDATE' if lock_rows else ''}", params)  # noqa: S608
    return mirror.load(table, rows)


# ---- the card flows (issue 19 phase 3a): ids the scratch draws, and row locks ------------------------------------

# Events a scratch raises take ids from here up (`local_event_ids`), far above any id PostgreSQL's own sequence will
# reach, so a scratch row never shares an id with an event pulled from, or already pushed to, PostgreSQL.
LOCAL_EVENT_ID_BASE = 1 << 62


def local_event_ids(con: duckdb.DuckDBPyConnection) -> None:
    """Number the events this scratch raises from LOCAL_EVENT_ID_BASE (idempotent): `push_events` gives each its
    PostgreSQL id when it is pushed."""
    con.execute(f"CREATE SEQUENCE IF NOT EXISTS mirror_local_event_seq START WITH {LOCAL_EVENT_ID_BASE}")
    con.execute("ALTER TABLE workflow_events ALTER COLUMN event_id SET DEFAULT nextval('mirror_local_event_seq')")


def push_events(mirror: Mirror, refs: Sequence[tuple[str, str]] = ()) -> int:
    """Push the events the scratch raised (ids from LOCAL_EVENT_ID_BASE) inside the open transaction, each with an id
    drawn from PostgreSQL's `workflow_event_seq` in the order they were raised; the scratch's events and the columns
    `refs` ((table, column) pairs, e.g. collection_notices.event_id) are renumbered first, so what later steps read
    and what PostgreSQL holds agree. Returns how many."""
    con = mirror.con
    mirror.settle()
    local = con.execute("SELECT count(*) FROM workflow_events WHERE event_id >= ?", [LOCAL_EVENT_ID_BASE]
                        ).fetchall()[0][0]
    if not local:
        return 0
    drawn = mirror.query("SELECT nextval('workflow_event_seq') AS event_id FROM generate_series(1, $1) "
                         "ORDER BY 1", [local])
    ids = pa.table({"new_id": drawn.column("event_id").cast(pa.int64())})
    con.register("drawn_event_ids", ids)
    try:
        con.execute("""
            CREATE OR REPLACE TEMP TABLE event_id_map AS
            SELECT l.event_id AS local_id, d.new_id
            FROM (SELECT event_id, row_number() OVER (ORDER BY event_id) AS n FROM workflow_events
                  WHERE event_id >= $base) l
            JOIN (SELECT new_id, row_number() OVER (ORDER BY new_id) AS n FROM drawn_event_ids) d USING (n)
        """, {"base": LOCAL_EVENT_ID_BASE})
    finally:
        con.unregister("drawn_event_ids")
    for table, column in (("workflow_events", "event_id"), *refs):
        con.execute(f"UPDATE {table} SET {column} = m.new_id FROM event_id_map m "  # noqa: S608 - our tables
                    f"WHERE {table}.{column} = m.local_id")
    mirror.push("workflow_events", "event_id IN (SELECT new_id FROM event_id_map)")
    con.execute("DROP TABLE event_id_map")
    return local


def lock_rows(mirror: Mirror, table: str, key: str, where: str, params: Sequence | None = None) -> int:
    """`SELECT ... FOR UPDATE` of PostgreSQL's rows of `table` matching `where`, in `key` order (every writer of
    those rows locks them in that one order, so two never wait for each other in a cycle); held until COMMIT or
    ROLLBACK. Returns how many rows are locked."""
    return mirror.query(f"SELECT {key} FROM {table} WHERE {where} ORDER BY {key} FOR UPDATE",  # noqa: S608
                        params).num_rows


def pull_replacing(mirror: Mirror, table: str, where_scratch: str, where_pg: str, params: Sequence | None = None,
                   scratch_params: dict | None = None) -> int:
    """Replace the scratch's rows of `table` matching `where_scratch` by PostgreSQL's rows matching `where_pg`: for
    tables without a key to pull by (ledger_postings of a batch, job errors)."""
    mirror.settle()
    delete = f"DELETE FROM {table} WHERE {where_scratch}"  # noqa: S608
    mirror.con.execute(delete, scratch_params) if scratch_params else mirror.con.execute(delete)
    return mirror.pull(table, where_pg, params)


def pull_postings(mirror: Mirror | None, batch_id: str, *, unless_counts_agree: bool = False) -> None:
    """A posting batch's ledger rows as PostgreSQL holds them (posting ids and all), replacing the scratch's: a re-run
    counts what an earlier run posted, and a posting file lists PostgreSQL's rows. `unless_counts_agree`, just after
    posting: nothing pulled when the scratch holds as many rows as PostgreSQL (the same rows; pulling a million back
    costs), only when another run posted some of the keys. Nothing on the embedded store (`mirror` None)."""
    if mirror is None:
        return
    mirror.settle()
    if unless_counts_agree:
        have = mirror.con.execute("SELECT count(*) FROM ledger_postings WHERE batch_id = ?", [batch_id]).fetchall()
        want = mirror.query("SELECT count(*) AS n FROM ledger_postings WHERE batch_id = $1", [batch_id])
        if have[0][0] == want.column("n")[0].as_py():
            return
    pull_replacing(mirror, "ledger_postings", "batch_id = $batch", "batch_id = $1", [batch_id], {"batch": batch_id})
