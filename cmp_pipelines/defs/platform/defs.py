"""Definitions every flow shares: entries the inbound sensors refuse, and their alert probe."""

import dagster as dg

from cmp_pipelines.lib.inbound_refusals import inbound_probes, inbound_refusals_job, inbound_refused_entries
from cmp_pipelines.lib.metadata import flow_assets

defs = dg.Definitions(
    assets=flow_assets([inbound_refused_entries], "platform"), asset_checks=[inbound_probes],
    jobs=[inbound_refusals_job],
)
