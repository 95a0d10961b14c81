"""Reference data the flows rely on: configuration tables mirrored from YAML, and the suspense account."""

from __future__ import annotations

import duckdb

from cmp_pipelines.configuration import Partner, ProbeConfig
from cmp_pipelines.domain.nrp_rules import SUSPENSE_ACCOUNT
from cmp_pipelines.store.connection import transaction


def sync_reference_data(
    con: duckdb.DuckDBPyConnection, partners: dict[str, Partner], probes: dict[str, ProbeConfig]
) -> None:
    with transaction(con):
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
