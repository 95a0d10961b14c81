"""The one Dagster code location: every flow's definitions under `defs/`, the shared resources, and the run
recovery sensor, which watches every partitioned job of every flow."""

from __future__ import annotations

import dagster as dg

from cmp_pipelines.defs.billing import defs as billing
from cmp_pipelines.defs.card_payments import defs as card_payments
from cmp_pipelines.defs.card_rejections import defs as card_rejections
from cmp_pipelines.defs.direct_debit import defs as direct_debit
from cmp_pipelines.defs.hardware_orders import defs as hardware_orders
from cmp_pipelines.defs.nrp import defs as nrp
from cmp_pipelines.defs.one_off import defs as one_off
from cmp_pipelines.defs.platform import defs as platform
from cmp_pipelines.defs.platform.recovery_sensor import run_recovery_sensor
from cmp_pipelines.defs.receipts import defs as receipts
from cmp_pipelines.lib.resources.cipher import PartnerCipher
from cmp_pipelines.lib.resources.database import Database
from cmp_pipelines.lib.resources.file_store import configured_file_store
from cmp_pipelines.lib.resources.notifier import Notifier
from cmp_pipelines.lib.resources.payment_provider import PaymentProviderResource

FLOWS = [platform, nrp, card_payments, card_rejections, direct_debit, one_off, hardware_orders, receipts, billing]

# A killed run of a partitioned job is re-run once its process is known dead; unpartitioned jobs (probes, API
# sync) simply run again on their next tick.
RECOVERABLE_JOBS = [job for flow in FLOWS for job in flow.defs.jobs or [] if job.partitions_def is not None]


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """The code location; tests pass `resources` to swap a backend (e.g. a file store that fails on cue)."""
    flows = dg.Definitions.merge(*(flow.defs for flow in FLOWS))
    return dg.Definitions(
        assets=flows.assets,
        asset_checks=flows.asset_checks,
        jobs=flows.jobs,
        sensors=[*flows.sensors, run_recovery_sensor(RECOVERABLE_JOBS)],
        schedules=flows.schedules,
        executor=dg.in_process_executor,  # a step in another process would name itself as the run's process
        resources={
            "database": Database(),
            "file_store": configured_file_store(),  # CMP_FILES_URL: local folder or object store
            "cipher": PartnerCipher(),
            "notifier": Notifier(),
            "payment_provider": PaymentProviderResource(),
            **(flows.resources or {}),
            **(resources or {}),
        },
    )


defs = build_definitions()
