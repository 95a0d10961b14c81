"""Reference data the flows rely on: configuration tables mirrored from YAML, and the suspense account."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from cmp_pipelines.core.config import MandateRevisionCode, Partner, ProbeConfig, RejectionConfig
from cmp_pipelines.core.db.connection import transaction
from cmp_pipelines.core.db.mirror import Mirror, replace_pulled
from cmp_pipelines.core.db.transfer import ingest_adbc
from cmp_pipelines.core.rules import SUSPENSE_ACCOUNT


def sync_reference_data(
    con: duckdb.DuckDBPyConnection, partners: dict[str, Partner], probes: dict[str, ProbeConfig],
    rejection_codes: RejectionConfig | None = None,
    mandate_revision_codes: dict[str, MandateRevisionCode] | None = None,
) -> None:
    with transaction(con):
        if rejection_codes is not None:
            sync_rejection_codes(con, rejection_codes)
        if mandate_revision_codes is not None:
            sync_mandate_revision_codes(con, mandate_revision_codes)
        con.execute(
            "INSERT INTO accounts (account_number, name, currency, is_suspense) "
            "VALUES (?, 'Unallocated payments (suspense)', 'GBP', TRUE) ON CONFLICT DO NOTHING",
            [SUSPENSE_ACCOUNT],
        )
        con.execute("DELETE FROM partners")
        for partner in partners.values():
            for feed in partner.feeds:
                con.execute("INSERT INTO partners VALUES (?, ?)", [partner.partner_id, feed])
        con.execute("DELETE FROM config_probes")
        for probe in probes.values():
            con.execute(
                "INSERT INTO config_probes VALUES (?, ?, ?, ?)",
                [probe.probe_id, probe.threshold, probe.window_hours, list(probe.recipients)],
            )


# The configuration tables the rejection rules join, with their keys: what `sync_rejection_codes` keeps equal to the
# YAML on either store.
REJECTION_TABLES = {"config_rejection_codes": ("code",), "config_bacs_return_codes": ("return_code",)}
# The same for the ADDACS reasons (`sync_mandate_revision_codes`), under their own lock.
MANDATE_REVISION_TABLES = {"config_mandate_revision_codes": ("code",)}
MANDATE_REVISION_CODES_LOCK = "config:mandate_revision_codes"
# The transaction-level advisory lock under which PostgreSQL's copy is synced (core/db/mirror.advisory_key of it).
REJECTION_CODES_LOCK = "config:rejection_codes"

_TEXT, _COUNT = pa.string(), pa.int32()
_SCHEMAS = {
    "config_rejection_codes": pa.schema([
        ("code", _TEXT), ("description", _TEXT), ("reason_type", _TEXT), ("reason_code", _TEXT), ("decline", _TEXT),
        ("retries", _COUNT), ("suspension_days", _COUNT), ("retry_event_type", _TEXT), ("retry_event_code", _TEXT),
        ("cancellation_event_type", _TEXT), ("cancellation_event_code", _TEXT), ("refund_event_type", _TEXT),
        ("refund_event_code", _TEXT)]),
    "config_bacs_return_codes": pa.schema([("return_code", _TEXT), ("rejection_code", _TEXT),
                                           ("mandate_action", _TEXT)]),
    "config_mandate_revision_codes": pa.schema([
        ("code", _TEXT), ("name", _TEXT), ("action", _TEXT), ("reason_type", _TEXT), ("reason_code", _TEXT),
        ("event_type", _TEXT), ("event_code", _TEXT)]),
}


def rejection_code_rows(config: RejectionConfig) -> dict[str, pa.Table]:
    """The rows the YAML gives each table of REJECTION_TABLES, typed as the tables are (both stores take them)."""
    codes = []
    for c in config.codes.values():
        events = [part for event in (c.retry_event, c.cancellation_event, c.refund_event)
                  for part in ((event.event_type, event.event_code) if event else (None, None))]
        codes.append([c.code, c.description, c.reason_type, c.reason_code, c.decline, c.retries, c.suspension_days,
                      *events])
    returns = [[return_code, code, config.mandate_actions.get(code, "HOLD")]
               for return_code, code in config.bacs_return_codes.items()]
    return {table: _typed(table, rows) for table, rows in zip(REJECTION_TABLES, (codes, returns), strict=True)}


def mandate_revision_code_rows(codes: dict[str, MandateRevisionCode]) -> dict[str, pa.Table]:
    """The rows the YAML gives config_mandate_revision_codes."""
    return {"config_mandate_revision_codes": _typed("config_mandate_revision_codes", [
        [c.code, c.name, c.action, c.reason_type, c.reason_code, c.event.event_type, c.event.event_code]
        for c in codes.values()])}


def _typed(table: str, rows: list[list]) -> pa.Table:
    schema = _SCHEMAS[table]
    return pa.Table.from_pylist([dict(zip(schema.names, row, strict=True)) for row in rows], schema=schema)


def merge_sql(table: str, stage: str) -> tuple[str, str]:
    """Make `table` hold exactly the rows of `stage` (same columns), in SQL both stores run: an upsert that rewrites a
    row only where a column differs (an unchanged configuration writes nothing, so it takes no row lock), then the
    removal of keys no longer configured. Unlike DELETE + INSERT it never re-inserts a key another writer also
    inserts, so two syncs of one configuration cannot collide on the primary key."""
    key = {**REJECTION_TABLES, **MANDATE_REVISION_TABLES}[table]
    names = _SCHEMAS[table].names
    columns = ", ".join(names)
    values = [n for n in names if n not in key]
    upsert = (f"INSERT INTO {table} AS t ({columns}) SELECT {columns} FROM {stage} "  # noqa: S608 - our tables
              f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in values)} "
              f"WHERE {' OR '.join(f't.{n} IS DISTINCT FROM excluded.{n}' for n in values)}")
    delete = (f"DELETE FROM {table} WHERE ({', '.join(key)}) NOT IN "  # noqa: S608
              f"(SELECT {', '.join(key)} FROM {stage})")
    return upsert, delete


def sync_rejection_codes(con: duckdb.DuckDBPyConnection, config: RejectionConfig) -> None:
    """Make the store's rejection tables hold what the YAML says (the set-based rules join them); call inside the
    caller's transaction. On PostgreSQL use `sync_rejection_codes_postgres`."""
    _merge(con, rejection_code_rows(config))


def sync_mandate_revision_codes(con: duckdb.DuckDBPyConnection, codes: dict[str, MandateRevisionCode]) -> None:
    """The same for the table the ADDACS rules join; on PostgreSQL use `sync_mandate_revision_codes_postgres`."""
    _merge(con, mandate_revision_code_rows(codes))


def _merge(con: duckdb.DuckDBPyConnection, rows: dict[str, pa.Table]) -> None:
    for table, table_rows in rows.items():
        stage = f"yaml_{table}"
        con.register(stage, table_rows)
        try:
            for sql in merge_sql(table, stage):
                con.execute(sql)
        finally:
            con.unregister(stage)


def sync_rejection_codes_postgres(mirror: Mirror, config: RejectionConfig) -> None:
    """PostgreSQL's rejection tables made to hold what the YAML says, then copied into the run's scratch, where the
    rules join them: PostgreSQL is the one source of truth for the rows every reader joins (the rules in any run's
    scratch, the API's payment history), and the scratch holds exactly what this sync left there.

    Its own short transaction under the advisory lock REJECTION_CODES_LOCK, so it must be called where the step
    holds nothing uncommitted on `mirror` (before its locks and pushes): two runs syncing at once take turns, and the
    second finds nothing to change (without it, two versions of the YAML listing codes in another order could lock
    each other's rows in a cycle), and the scratch copy, read in the same transaction, is the state it left."""
    _merge_postgres(mirror, rejection_code_rows(config), REJECTION_CODES_LOCK)


def sync_mandate_revision_codes_postgres(mirror: Mirror, codes: dict[str, MandateRevisionCode]) -> None:
    """The ADDACS reasons as `sync_rejection_codes_postgres` syncs the rejection codes, under
    MANDATE_REVISION_CODES_LOCK."""
    _merge_postgres(mirror, mandate_revision_code_rows(codes), MANDATE_REVISION_CODES_LOCK)


def _merge_postgres(mirror: Mirror, rows: dict[str, pa.Table], lock: str) -> None:
    with mirror.transaction():
        mirror.lock(lock)
        with mirror.guarded(), mirror.pg.cursor() as cur:
            for table, table_rows in rows.items():
                stage = f"yaml_{table}"
                cur.execute(f"DROP TABLE IF EXISTS pg_temp.{stage}")
                cur.execute(f"CREATE TEMP TABLE {stage} (LIKE {table}) ON COMMIT DROP")
                ingest_adbc(cur, stage, table_rows, temporary=True)
                for sql in merge_sql(table, stage):
                    cur.execute(sql)
        for table in rows:
            replace_pulled(mirror, table, "TRUE")
