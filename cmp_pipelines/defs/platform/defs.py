"""Definitions every flow shares: entries the inbound sensors refuse and their alert probe; the workflow
dispatcher (actions, communications, quarantine alerts, the e-mail outbox) and the run-failure alerts."""

import dagster as dg

from cmp_pipelines.defs.platform.notifications import (
    run_failure_alert_sensor,
    workflow_dispatch_job,
    workflow_dispatch_sensor,
)
from cmp_pipelines.lib.inbound_refusals import inbound_probes, inbound_refusals_job, inbound_refused_entries
from cmp_pipelines.lib.metadata import flow_assets

defs = dg.Definitions(
    assets=flow_assets([inbound_refused_entries], "platform"), asset_checks=[inbound_probes],
    jobs=[inbound_refusals_job, workflow_dispatch_job],
    sensors=[workflow_dispatch_sensor, run_failure_alert_sensor],
)
