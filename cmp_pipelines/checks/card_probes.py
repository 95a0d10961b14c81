"""The recurring card payments and rejections probes as asset checks, one multi-check per job."""


from cmp_pipelines.assets.card_rejections import card_rejections_batch
from cmp_pipelines.assets.recurring_card import card_payment_extract, card_payment_posting_batch
from cmp_pipelines.checks.probe_checks import probe_checks
from cmp_pipelines.domain.probes import PROBES_BY_ID

card_payment_probes = probe_checks(
    "card_payment_probes",
    (PROBES_BY_ID["card_extract_produced"], PROBES_BY_ID["card_extract_totals_mismatch"]),
    {"card_extract_produced": card_payment_extract.key,
     "card_extract_totals_mismatch": card_payment_posting_batch.key},
)

card_rejection_probes = probe_checks(
    "card_rejection_probes",
    (PROBES_BY_ID["card_rejection_rate"], PROBES_BY_ID["card_rejections_completed_sla"]),
    {"card_rejection_rate": card_rejections_batch.key,
     "card_rejections_completed_sla": card_rejections_batch.key},
)
