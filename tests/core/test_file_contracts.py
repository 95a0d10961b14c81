"""Every file format has a JSON Schema and a sample; what the flow writes obeys its schema."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from cmp_pipelines.core.files.schemas import first_error
from tests.support.platform import NOW, document, payment, rejection, rejections_document

SAMPLES = Path(__file__).parents[1] / "samples"


@pytest.mark.parametrize("name", ["nrp_payments", "nrp_acknowledgement", "ledger_posting_batch", "card_rejections",
                                  "card_payment_extract", "card_rejection_outcomes"])
def test_samples_match_their_schemas(name):
    sample = orjson.loads((SAMPLES / f"{name}.sample.json").read_bytes())
    assert first_error(name, sample) is None


def test_written_files_match_their_schemas(platform):
    records = [payment("1", "ACC00000001", "10.00", "INV000000011"), payment("2", "ACC00000002", "1.234"),
               payment("3", "ACC12345678", "3.00")]
    load = platform.process(platform.drop("contract.json.enc", document(records)))
    ack = platform.read_ack("PAYPOINT", "contract")
    assert first_error("nrp_acknowledgement", ack) is None
    assert ack["header"]["partner_file_id"] == "PAYPOINT-20261121-001"  # the partner's own id, echoed
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
    assert ack["header"]["partner_file_id"] == "PAYPOINT-20261121-001"  # refused after its header was read


def test_a_file_refused_before_its_header_is_read_is_acknowledged_without_a_partner_file_id(platform):
    platform.quarantine(platform.drop("garbled.json.enc", b"not json at all"))
    ack = platform.read_ack("PAYPOINT", "garbled.rejected")
    assert first_error("nrp_acknowledgement", ack) is None
    assert (ack["header"]["status"], ack["header"]["partner_file_id"]) == ("REJECTED", None)


def test_card_files_match_their_schemas(platform):
    from datetime import date

    from cmp_pipelines.core import payment_setup
    from cmp_pipelines.core.config import load_partners
    from cmp_pipelines.core.settings import PROJECT_ROOT

    day = date(2026, 12, 31)
    with platform.connect() as con:
        payment_setup.set_payment_type(con, "ACC00000001", "RECURRING_CARD", now=NOW,
                                       partners=load_partners(PROJECT_ROOT / "config"), cause="t",
                                       card_token="tok_contract")
        payment_setup.approve_card_refund(con, "ACC00000001", "2.00", now=NOW)
    due = platform.card_day(day)
    extract = platform.read_extract(day)
    assert first_error("card_payment_extract", extract) is None
    assert platform.query("SELECT partner, remote_name FROM delivery_register WHERE document_kind = 'CARD_EXTRACT'") \
        == [("CARDPAY", f"RCX-{day:%Y%m%d}-CARDPAY-GBP.json.enc")]
    assert {t["type"] for t in extract["transactions"]} == {"PAYMENT", "REFUND"}
    posting = orjson.loads(platform.files.read_bytes(f"outbound/ledger/{due.batch_id.replace('RCX', 'RCP')}.json"))
    assert first_error("ledger_posting_batch", posting) is None
    t = extract["transactions"][0]
    doc = rejections_document([rejection("1", t["transaction_id"], t["account_number"], t["amount"], "51"),
                               rejection("2", "PNOPE-1", t["account_number"], "1.00", "51")])
    assert first_error("card_rejections", doc) is None
    platform.process_rejections(platform.drop_rejections("contract.json.enc", doc))
    report = orjson.loads(platform.files.read_bytes("outbound/reports/card_rejections/CARDPAY/contract.outcomes.json"))
    assert first_error("card_rejection_outcomes", report) is None
    assert report["header"]["partner_file_id"] == "CARDPAY-REJ-001"
    [reversal] = [f.path for f in platform.files.list_files("outbound/ledger") if "RCRV-" in f.path]
    assert first_error("ledger_posting_batch", orjson.loads(platform.files.read_bytes(reversal))) is None

