"""Every file format has a JSON Schema and a sample; what the flow writes obeys its schema."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from cmp_pipelines.formats.schemas import first_error
from tests.conftest import document, payment

SAMPLES = Path(__file__).parent / "samples"


@pytest.mark.parametrize("name", ["nrp_payments", "nrp_acknowledgement", "ledger_posting_batch"])
def test_samples_match_their_schemas(name):
    sample = orjson.loads((SAMPLES / f"{name}.sample.json").read_bytes())
    assert first_error(name, sample) is None


def test_written_files_match_their_schemas(platform):
    records = [payment("1", "ACC00000001", "10.00", "INV000000011"), payment("2", "ACC00000002", "1.234"),
               payment("3", "ACC12345678", "3.00")]
    load = platform.process(platform.drop("contract.json.enc", document(records)))
    ack = platform.read_ack("PAYPOINT", "contract")
    assert first_error("nrp_acknowledgement", ack) is None
    [posting_file] = platform.files.list_files("outbound/ledger")
    postings = orjson.loads(platform.files.read_bytes(posting_file.path))
    assert first_error("ledger_posting_batch", postings) is None
    assert postings["header"]["batch_id"] == load.batch_id.replace("NRPL-", "NRPP-")


def test_rejection_acknowledgement_matches_the_schema(platform):
    platform.quarantine(platform.drop("late.json.enc", document([payment("1", "ACC00000001", "1.00")],
                                                                record_count=5)))
    ack = platform.read_ack("PAYPOINT", "late.rejected")
    assert first_error("nrp_acknowledgement", ack) is None
    assert ack["header"]["reason_code"] == "CONTROL_TOTALS"
