"""CMP probes as asset checks, one multi-check per flow: alert probes WARN and e-mail, SLA probes ERROR only."""


import dagster as dg

from cmp_pipelines.core import probe_queries as probe_service
from cmp_pipelines.core.config import load_probes
from cmp_pipelines.core.probes import ProbeDefinition
from cmp_pipelines.core.settings import paths
from cmp_pipelines.lib.jobs import AFTER_ASSETS
from cmp_pipelines.lib.resources.database import DB_POOL, Database
from cmp_pipelines.lib.resources.notifier import Notifier


def check_name(probe_id: str) -> str:
    return f"{probe_id}_within_threshold"


def probe_checks(
    name: str, probes: tuple[ProbeDefinition, ...], target: dict[str, dg.AssetKey]
) -> dg.AssetChecksDefinition:
    """One multi-asset check evaluating `probes`; `target` names the asset each probe's check hangs on."""
    specs = [
        dg.AssetCheckSpec(
            check_name(probe.probe_id),
            asset=target[probe.probe_id],
            description=f"CMP {probe.kind.upper()} probe '{probe.name}': {probe.description}",
        )
        for probe in probes
    ]

    @dg.multi_asset_check(specs=specs, pool=DB_POOL, can_subset=False, name=name, op_tags=AFTER_ASSETS)
    def _checks(context: dg.AssetCheckExecutionContext, database: Database, notifier: Notifier):
        """Evaluate every probe, record it, and e-mail the recipients of each tripped alert probe."""
        configs = load_probes(paths().config_dir)
        # on PostgreSQL the store itself (what the run's steps committed there), not the run's scratch
        with database.service() as con:
            for outcome in probe_service.evaluate(con, configs, probes=probes):
                delivered = ""
                if (
                    outcome.tripped
                    and outcome.probe.kind == "alert"
                    and not probe_service.already_alerted_today(con, outcome)
                ):
                    mid, where = notifier.alert(
                        con,
                        key=f"{outcome.probe.probe_id}-{outcome.evaluated_at:%Y%m%dT%H%M%S%f}",
                        recipients=list(outcome.config.recipients),
                        subject=f"[CMP ALERT] {outcome.probe.name}",
                        body=outcome.summary + "\n\nRaised by cmp-pipelines asset check "
                        f"{check_name(outcome.probe.probe_id)}.\n",
                        now=outcome.evaluated_at,
                        source_ref=outcome.probe.probe_id,
                    )
                    delivered = where or f"queued {mid}: the mail server did not accept it yet (retried)"
                probe_service.record(con, outcome, notified=bool(delivered) and not delivered.startswith("queued"))
                yield dg.AssetCheckResult(
                    check_name=check_name(outcome.probe.probe_id),
                    asset_key=target[outcome.probe.probe_id],
                    passed=not outcome.tripped,
                    severity=(dg.AssetCheckSeverity.WARN if outcome.probe.kind == "alert"
                              else dg.AssetCheckSeverity.ERROR),
                    description=outcome.summary,
                    metadata={
                        "cmp_probe": outcome.probe.name,
                        "probe_type": outcome.probe.kind.upper(),
                        "value": dg.MetadataValue.int(outcome.value),
                        "threshold": dg.MetadataValue.int(outcome.config.threshold),
                        "trips_when": outcome.probe.trips_when,
                        "window_hours": dg.MetadataValue.int(outcome.config.window_hours),
                        "notified": delivered or "no",
                    },
                )

    return _checks
