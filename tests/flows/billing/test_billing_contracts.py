"""The billing run file and its acknowledgement have JSON Schemas and samples; what the flow writes obeys them, and
the sample file as the billing system sends it is processed."""

from __future__ import annotations

from pathlib import Path

import orjson

from cmp_pipelines.core.files.schemas import first_error
from tests.support.billing import account, billing_document, invoice

SAMPLES = Path(__file__).parents[2] / "samples"


def test_the_sample_run_matches_its_schema_and_is_processed(billing):
    sample = orjson.loads((SAMPLES / "billing_run.sample.json").read_bytes())
    assert first_error("billing_run", sample) is None
    load = billing.process(billing.drop("sample.json.enc", sample))
    assert (load.accounts_created, load.invoices_issued, load.invoiced_minor, load.rejected_count) == (1, 2, 16500, 0)
    ack = billing.read_ack("sample")
    assert first_error("billing_acknowledgement", ack) is None
    [posting_file] = [f for f in billing.platform.files.list_files("outbound/ledger") if "BLP-" in f.path]
    postings = orjson.loads(billing.platform.files.read_bytes(posting_file.path))
    assert first_error("ledger_posting_batch", postings) is None
    assert postings["header"]["total_amount"] == "165.00"


def test_acknowledgements_of_bad_records_and_of_a_refused_file_match_the_schema(billing):
    billing.process(billing.drop("bad.json.enc", billing_document([
        account("1", "ACC00000971", None), invoice("2", "ACC00000001", "INV-S-1", "1.5")])))
    assert first_error("billing_acknowledgement", billing.read_ack("bad")) is None
    billing.quarantine(billing.drop("late.json.enc", billing_document([invoice("1", "ACC00000001", "INV-S-2", "1.00")],
                                                                      file_id="BILLSYS-LATE", record_count=5)))
    refused = billing.read_ack("late", "rejected.ack")
    assert first_error("billing_acknowledgement", refused) is None
    assert refused["header"]["reason_code"] == "CONTROL_TOTALS"
