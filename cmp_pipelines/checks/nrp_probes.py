"""The eight CMP non-recurring payments probes as asset checks."""


from cmp_pipelines.assets.non_recurring import nrp_payments_batch, nrp_posting_batch
from cmp_pipelines.checks.probe_checks import check_name, probe_checks
from cmp_pipelines.domain.probes import NRP_DUPLICATE_PROBES, NRP_PROBES

__all__ = ["check_name", "nrp_duplicate_probes", "nrp_probes"]

_LOAD_PROBES = {"nrp_load_completed", "nrp_verification_payments_supplied"}

nrp_probes = probe_checks(
    "nrp_probes",
    NRP_PROBES,
    {p.probe_id: (nrp_payments_batch.key if p.probe_id in _LOAD_PROBES else nrp_posting_batch.key)
     for p in NRP_PROBES},
)

# Records held as suspected duplicates of an earlier file (issue 18 item 6): a check of its own, so the eight
# CMP probes above stay exactly the product's.
nrp_duplicate_probes = probe_checks(
    "nrp_duplicate_probes", NRP_DUPLICATE_PROBES, {p.probe_id: nrp_posting_batch.key for p in NRP_DUPLICATE_PROBES}
)
