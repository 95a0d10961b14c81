"""The non-recurring payments file (partner -> CMP): a generic record file of payments."""

from __future__ import annotations

import pyarrow as pa

from cmp_pipelines.core.files import record_file
from cmp_pipelines.core.files.record_file import RecordFileSpec

PAYMENT_FIELDS = (
    "record_id", "account_number", "invoice_number", "amount", "payment_date", "payment_method", "reference",
)
NRP_FILE = RecordFileSpec("nrp_payments", "non-recurring payments", "payments", PAYMENT_FIELDS, "payment")

__all__ = ["PAYMENT_FIELDS", "NRP_FILE", "check_control_totals"]


def check_control_totals(header: dict, record_count: int, amounts: pa.Array) -> None:
    record_file.check_control_totals(NRP_FILE, header, record_count, amounts)
