"""Definitions every flow shares: entries the inbound sensors refuse and their alert probe; delivery of outbound
documents and SFTP pickup (`delivery.py`); the workflow dispatcher (actions, communications, quarantine alerts,
the e-mail outbox) and the run-failure alerts (`notifications.py`)."""

import dagster as dg

from cmp_pipelines.defs.platform.delivery import (
    deliver_documents_job,
    delivered_documents,
    delivery_probes,
    delivery_sensor,
    sftp_picked_up_files,
    sftp_pickup_job,
    sftp_pickup_sensor,
)
from cmp_pipelines.defs.platform.notifications import (
    run_failure_alert_sensor,
    workflow_dispatch_job,
    workflow_dispatch_sensor,
)
from cmp_pipelines.lib.inbound_refusals import inbound_probes, inbound_refusals_job, inbound_refused_entries
from cmp_pipelines.lib.metadata import flow_assets

defs = dg.Definitions(
    assets=flow_assets([inbound_refused_entries, delivered_documents, sftp_picked_up_files], "platform"),
    asset_checks=[inbound_probes, delivery_probes],
    jobs=[inbound_refusals_job, deliver_documents_job, sftp_pickup_job, workflow_dispatch_job],
    sensors=[delivery_sensor, sftp_pickup_sensor, workflow_dispatch_sensor, run_failure_alert_sensor],
)
