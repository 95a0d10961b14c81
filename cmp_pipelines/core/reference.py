"""Reference data the flows rely on: configuration tables mirrored from YAML, and the suspense account."""

from __future__ import annotations

import duckdb

from cmp_pipelines.core.config import MandateRevisionCode, Partner, ProbeConfig, RejectionConfig
from cmp_pipelines.core.db.connection import transaction
from cmp_pipelines.core.rules import SUSPENSE_ACCOUNT


def sync_reference_data(
    con: duckdb.DuckDBPyConnection, partners: dict[str, Partner], probes: dict[str, ProbeConfig],
    rejection_codes: RejectionConfig | None = None,
) -> None:
    with transaction(con):
        if rejection_codes is not None:
            sync_rejection_codes(con, rejection_codes)
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


def sync_rejection_codes(con: duckdb.DuckDBPyConnection, config: RejectionConfig) -> None:
    """Mirror the YAML into the table the set-based rules join; call inside the caller's transaction."""
    con.execute("DELETE FROM config_rejection_codes")
    rows = []
    for c in config.codes.values():
        events = [part for event in (c.retry_event, c.cancellation_event, c.refund_event)
                  for part in ((event.event_type, event.event_code) if event else (None, None))]
        rows.append([c.code, c.description, c.reason_type, c.reason_code, c.decline, c.retries, c.suspension_days,
                     *events])
    if rows:
        con.executemany("INSERT INTO config_rejection_codes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    con.execute("DELETE FROM config_bacs_return_codes")
    if config.bacs_return_codes:
        con.executemany("INSERT INTO config_bacs_return_codes (return_code, rejection_code, mandate_action) "
                        "VALUES (?, ?, ?)", [[return_code, code, config.mandate_actions.get(code, "HOLD")]
                                             for return_code, code in config.bacs_return_codes.items()])


def sync_mandate_revision_codes(con: duckdb.DuckDBPyConnection, codes: dict[str, MandateRevisionCode]) -> None:
    """Mirror the YAML into the table the ADDACS rules join; call inside the caller's transaction."""
    con.execute("DELETE FROM config_mandate_revision_codes")
    rows = [[c.code, c.name, c.action, c.reason_type, c.reason_code, c.event.event_type, c.event.event_code]
            for c in codes.values()]
    if rows:
        con.executemany("INSERT INTO config_mandate_revision_codes VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
