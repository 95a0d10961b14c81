"""The direct debit probes as asset checks: AUDDIS produced, collection totals, ADDACS references, ARUDD rate."""


from cmp_pipelines.assets.bacs_reports import addacs_advices, dd_returns_batch
from cmp_pipelines.assets.direct_debit import auddis_file, dd_collection_posting_batch
from cmp_pipelines.checks.probe_checks import probe_checks
from cmp_pipelines.domain.probes import PROBES_BY_ID

auddis_probes = probe_checks(
    "auddis_probes", (PROBES_BY_ID["auddis_file_produced"],), {"auddis_file_produced": auddis_file.key})

dd_collection_probes = probe_checks(
    "dd_collection_probes", (PROBES_BY_ID["dd_collection_totals_mismatch"],),
    {"dd_collection_totals_mismatch": dd_collection_posting_batch.key})

addacs_probes = probe_checks(
    "addacs_probes", (PROBES_BY_ID["addacs_unknown_references"],),
    {"addacs_unknown_references": addacs_advices.key})

arudd_probes = probe_checks(
    "arudd_probes", (PROBES_BY_ID["arudd_return_rate"], PROBES_BY_ID["arudd_unmapped_return_codes"]),
    {"arudd_return_rate": dd_returns_batch.key, "arudd_unmapped_return_codes": dd_returns_batch.key})
