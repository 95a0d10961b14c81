"""The one-off (API) payments flow in Dagster: reconciliation, set-up requests, postings and the Ledger Monitor."""

import dagster as dg

from cmp_pipelines.defs.one_off.assets import ONE_OFF_ASSETS, api_sync_job
from cmp_pipelines.defs.one_off.sensors import ledger_monitor_sensor
from cmp_pipelines.lib.metadata import flow_assets

defs = dg.Definitions(
    assets=flow_assets(ONE_OFF_ASSETS, "one_off"), jobs=[api_sync_job], sensors=[ledger_monitor_sensor(api_sync_job)]
)
