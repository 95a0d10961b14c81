"""The eight CMP non-recurring payments probes as asset checks."""


from cmp_pipelines.assets.non_recurring import nrp_payments_batch, nrp_posting_batch
from cmp_pipelines.checks.probe_checks import check_name, probe_checks
from cmp_pipelines.domain.probes import NRP_PROBES

__all__ = ["check_name", "nrp_probes"]

_LOAD_PROBES = {"nrp_load_completed", "nrp_verification_payments_supplied"}

nrp_probes = probe_checks(
    "nrp_probes",
    NRP_PROBES,
    {p.probe_id: (nrp_payments_batch.key if p.probe_id in _LOAD_PROBES else nrp_posting_batch.key)
     for p in NRP_PROBES},
)
