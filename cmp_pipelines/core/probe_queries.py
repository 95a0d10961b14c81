"""Evaluating the CMP probes against the store and recording each result."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from cmp_pipelines.core.config import ProbeConfig
from cmp_pipelines.core.db.pg_duck import dialect
from cmp_pipelines.core.delivery import RECEIPTED_KINDS
from cmp_pipelines.core.ledger import POSTING_FILE_KINDS
from cmp_pipelines.core.probe_queries_hardware import HARDWARE_PROBE_SQL
from cmp_pipelines.core.probes import NRP_PROBES, ProbeDefinition
from cmp_pipelines.core.rejections import REVERSED_SQL

_LAST_BATCH = (
    "(SELECT batch_id FROM batches WHERE kind = 'NRP_LOAD' AND feed = 'nrp' "
    "ORDER BY created_at DESC, rowid DESC LIMIT 1)"
)

# Each query takes $day_start (UTC midnight today) and $window_start (now - window hours).
PROBE_SQL = {
    "nrp_verification_account_allocation":
        f"SELECT count(*) FROM nrp_records WHERE batch_id = {_LAST_BATCH} AND allocation = 'ACCOUNT'",
    "nrp_verification_payments_supplied":
        "SELECT count(*) FROM inbound_files f JOIN batches b ON b.batch_id = f.batch_id "
        "WHERE f.feed = 'nrp' AND f.status = 'LOADED' AND f.received_at >= $day_start AND b.record_count = 0",
    "nrp_batch_completed":
        "SELECT count(*) FROM job_runs WHERE job = 'nrp' AND started_at >= $day_start",
    "nrp_batch_completed_sla":
        "SELECT count(*) FROM job_errors WHERE job = 'nrp' AND category = 'CONFIGURATION' "
        "AND raised_at >= $day_start",
    "nrp_verification_normal":
        "SELECT count(*) FROM nrp_records r JOIN inbound_files f ON f.batch_id = r.batch_id "
        "WHERE f.feed = 'nrp' AND f.received_at >= $window_start",
    "nrp_verification_no_payment_dates":
        f"SELECT count(*) FROM nrp_records WHERE batch_id = {_LAST_BATCH} AND payment_date IS NULL",
    "nrp_verification_invoice_allocation":
        f"SELECT count(*) FROM nrp_records WHERE batch_id = {_LAST_BATCH} AND allocation = 'INVOICE'",
    "nrp_load_completed":
        "SELECT count(*) FROM inbound_files WHERE feed = 'nrp' AND received_at >= $day_start",
    "nrp_suspected_duplicates_held":
        "SELECT count(*) FROM nrp_records r JOIN batches b ON b.batch_id = r.batch_id "
        "WHERE b.kind = 'NRP_LOAD' AND r.outcome = 'HELD' AND b.created_at >= $window_start",
    "inbound_entries_refused":
        "SELECT count(*) FROM job_errors WHERE category = 'INBOUND_REFUSED' AND raised_at >= $window_start",
    "card_extract_produced":
        "SELECT count(*) FROM batches WHERE kind = 'CARD_EXTRACT' AND status = 'EXTRACTED' "
        "AND completed_at >= $day_start",
    "card_extract_totals_mismatch": """
        SELECT count(*) FROM batches x
        LEFT JOIN batches p ON p.parent_batch_id = x.batch_id AND p.kind = 'CARD_POSTING'
        LEFT JOIN (SELECT batch_id, count(*) AS n, sum(abs(amount_minor)) AS gross FROM ledger_postings
                   WHERE kind IN ('CARD_PAYMENT', 'CARD_REFUND') GROUP BY 1) l
          ON l.batch_id = p.batch_id
        WHERE x.kind = 'CARD_EXTRACT' AND x.status = 'EXTRACTED' AND x.completed_at >= $day_start
          AND (x.record_count <> coalesce(l.n, 0) OR x.total_minor <> coalesce(l.gross, 0))
    """,
    "card_advance_notices_unsent":
        "SELECT count(*) FROM collection_notices WHERE payment_type = 'RECURRING_CARD' AND status <> 'SENT' "
        "AND created_at < $older_than",
    "dd_advance_notices_unsent":
        "SELECT count(*) FROM collection_notices WHERE payment_type = 'DIRECT_DEBIT' AND status <> 'SENT' "
        "AND created_at < $older_than",
    "card_rejection_rate": f"""
        WITH latest AS (SELECT batch_id FROM batches WHERE kind = 'CARD_REJECTIONS'
                        ORDER BY created_at DESC, rowid DESC LIMIT 1),
        rejected AS (SELECT t.batch_id FROM card_rejections r JOIN card_transactions t USING (transaction_id)
                     WHERE r.batch_id = (SELECT batch_id FROM latest) AND r.outcome IN ({REVERSED_SQL})),
        extracted AS (SELECT count(*) AS n FROM card_transactions
                      WHERE batch_id IN (SELECT DISTINCT batch_id FROM rejected))
        SELECT coalesce((100 * (SELECT count(*) FROM rejected)) // nullif((SELECT n FROM extracted), 0), 0)
    """,
    "auddis_file_produced":
        "SELECT count(*) FROM batches WHERE kind = 'AUDDIS' AND status IN ('EXTRACTED', 'NOTHING_PENDING') "
        "AND completed_at >= $day_start",
    "dd_collection_totals_mismatch": """
        SELECT count(*) FROM batches x
        LEFT JOIN batches p ON p.parent_batch_id = x.batch_id AND p.kind = 'DD_POSTING'
        LEFT JOIN (SELECT batch_id, count(DISTINCT source_ref) AS n, -sum(amount_minor) AS total
                   FROM ledger_postings WHERE kind = 'DD_COLLECTION' GROUP BY 1) l
          ON l.batch_id = p.batch_id
        WHERE x.kind = 'DD_COLLECTION' AND x.status = 'EXTRACTED' AND x.completed_at >= $day_start
          AND (x.record_count <> coalesce(l.n, 0) OR x.total_minor <> coalesce(l.total, 0))
    """,
    "addacs_unknown_references":
        "SELECT count(*) FROM addacs_advices a JOIN batches b USING (batch_id) "
        "WHERE a.problem_code = 'UNKNOWN_REFERENCE' AND b.created_at >= $window_start",
    "arudd_return_rate": f"""
        WITH latest AS (SELECT batch_id FROM batches WHERE kind = 'DD_RETURNS' ORDER BY created_at DESC, rowid DESC
                        LIMIT 1),
        returned AS (SELECT c.batch_id FROM dd_returns r JOIN dd_collections c USING (collection_id)
                     WHERE r.batch_id = (SELECT batch_id FROM latest) AND r.outcome IN ({REVERSED_SQL})),
        collected AS (SELECT count(*) AS n FROM dd_collections
                      WHERE batch_id IN (SELECT DISTINCT batch_id FROM returned))
        SELECT coalesce((100 * (SELECT count(*) FROM returned)) // nullif((SELECT n FROM collected), 0), 0)
    """,
    "arudd_unmapped_return_codes":
        "SELECT count(*) FROM mandates WHERE status = 'HELD' AND held_reason LIKE '%is unmapped%'",
    "card_rejections_completed_sla":
        "SELECT count(*) FROM job_errors WHERE job = 'card_rejections' AND category = 'CONFIGURATION' "
        "AND raised_at >= $day_start",
    "deliveries_undelivered":
        "SELECT count(*) FROM delivery_register WHERE status IN ('PENDING', 'FAILED') AND created_at < $older_than",
    "deliveries_unconfirmed":
        f"SELECT count(*) FROM delivery_register WHERE status = 'SENT' AND sent_at < $older_than "
        f"AND document_kind IN ({', '.join(repr(k) for k in RECEIPTED_KINDS)})",
    # the batches first (few, and none in a healthy store), then one probe each into the ledger by batch; no lower
    # bound: a file missing for a week is still missing
    "ledger_posting_files_missing":
        f"SELECT count(*) FROM batches b WHERE b.kind IN ({', '.join(repr(k) for k in POSTING_FILE_KINDS)}) "
        "AND b.output_path IS NULL AND b.created_at < $older_than "
        "AND EXISTS (SELECT 1 FROM ledger_postings l WHERE l.batch_id = b.batch_id)",
}

PROBE_SQL.update(HARDWARE_PROBE_SQL)


def postgres_sql(sql: str) -> str:
    """A probe's query in PostgreSQL's words: it has no `rowid` (the latest batch's tie on created_at is broken by
    its id instead), divides integers with `/` where DuckDB writes `//`, and makes a day interval with
    `make_interval` where DuckDB writes `to_days`."""
    return (sql.replace(", rowid DESC", ", batch_id DESC").replace(" // ", " / ")
            .replace("to_days(", "make_interval(days => "))


@dataclass
class ProbeOutcome:
    probe: ProbeDefinition
    config: ProbeConfig
    value: int
    tripped: bool
    evaluated_at: datetime

    @property
    def summary(self) -> str:
        state = "TRIPPED" if self.tripped else "ok"
        rule = "above" if self.probe.trips_when == "above" else "at or below"
        return (
            f"{self.probe.name}: value {self.value}, threshold {self.config.threshold} "
            f"(trips when {rule}) - {state}"
        )


def evaluate(
    con: duckdb.DuckDBPyConnection, configs: dict[str, ProbeConfig], now: datetime | None = None,
    probes: tuple[ProbeDefinition, ...] = NRP_PROBES,
) -> list[ProbeOutcome]:
    now = now or datetime.now(UTC)
    day_start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    outcomes = []
    for probe in probes:
        config = configs[probe.probe_id]
        window_start = now - timedelta(hours=config.window_hours)
        sql = PROBE_SQL[probe.probe_id]
        if dialect(con) == "postgres":
            sql = postgres_sql(sql)
        values = {"day_start": day_start, "window_start": window_start, "now": now,
                  "older_than": now - timedelta(minutes=config.older_than_minutes or 0)}
        params = {k: v for k, v in values.items() if f"${k}" in sql}
        value = int(con.execute(sql, params).fetchone()[0])
        outcomes.append(ProbeOutcome(probe, config, value, probe.tripped(value, config.threshold), now))
    return outcomes


def record(con: duckdb.DuckDBPyConnection, outcome: ProbeOutcome, notified: bool) -> None:
    con.execute(
        "INSERT INTO probe_results (probe_id, probe_name, probe_type, value, threshold, tripped, notified, detail, "
        "evaluated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [outcome.probe.probe_id, outcome.probe.name, outcome.probe.kind, outcome.value, outcome.config.threshold,
         outcome.tripped, notified, outcome.summary, outcome.evaluated_at],
    )


def already_alerted_today(con: duckdb.DuckDBPyConnection, outcome: ProbeOutcome) -> bool:
    """An alert goes out when a probe trips, then at most once a day while it stays tripped."""
    day_start = outcome.evaluated_at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    row = con.execute(
        "SELECT tripped FROM probe_results WHERE probe_id = ? ORDER BY evaluated_at DESC LIMIT 1",
        [outcome.probe.probe_id],
    ).fetchone()
    if row is None or not row[0]:
        return False
    # an alert the mail server has not accepted yet is queued in the outbox and retried: it counts as sent
    return bool(con.execute(
        "SELECT (SELECT count(*) FROM probe_results WHERE probe_id = $probe AND notified AND evaluated_at >= $day) "
        "+ (SELECT count(*) FROM email_outbox WHERE kind = 'ALERT' AND source_ref = $probe AND created_at >= $day)",
        {"probe": outcome.probe.probe_id, "day": day_start},
    ).fetchone()[0])


def latest(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    if dialect(con) == "postgres":
        return con.execute(
            """
            SELECT DISTINCT ON (probe_id) probe_id, probe_name, probe_type, value, threshold, tripped, notified,
                   evaluated_at
            FROM probe_results ORDER BY probe_id, evaluated_at DESC
            """
        ).fetchall()
    return con.execute(
        """
        SELECT probe_id, probe_name, probe_type, value, threshold, tripped, notified, evaluated_at
        FROM probe_results QUALIFY row_number() OVER (PARTITION BY probe_id ORDER BY evaluated_at DESC) = 1
        ORDER BY probe_id
        """
    ).fetchall()
