"""The Great Expectations suite, run through the asset check on a real load batch."""

from __future__ import annotations

import dagster as dg

from cmp_pipelines.core.expectations import load_suite, records_frame
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.nrp.defs import nrp_payments_meet_expectations
from cmp_pipelines.defs.nrp.queries import NRP_SUITE
from tests.support.platform import document, payment


def evaluate(platform, key):
    from cmp_pipelines.core.expectations import validate_frame

    suite = load_suite(PROJECT_ROOT / "expectations", "nrp_payments")
    with platform.connect() as con:
        frame = records_frame(con, NRP_SUITE, key)
    return {(o.expectation, o.column): o for o in validate_frame(frame, suite)}


def test_suite_passes_clean_batch_and_flags_bad_data(platform):
    clean = [payment(str(i), f"ACC{i:08d}", "1.00") for i in range(1, 11)]
    key = platform.drop("clean.json.enc", document(clean))
    platform.process(key)
    outcomes = evaluate(platform, key)
    assert len(outcomes) == 7 and all(o.success for o in outcomes.values())

    messy = [payment("1", "ACC00000001", "1.00"), payment("1", "ACC00000002", "2.00"),
             payment("3", "XYZ1", "3.00", payment_date=None), payment("4", "ACC00000004", "-4.00")]
    key = platform.drop("messy.json.enc", document(messy, file_id="MESSY"))
    platform.process(key)
    outcomes = evaluate(platform, key)
    assert not outcomes[("expect_column_values_to_be_unique", "record_id")].success
    assert outcomes[("expect_column_values_to_be_unique", "record_id")].unexpected_count == 2
    assert not outcomes[("expect_column_values_to_match_regex", "account_number")].success
    assert not outcomes[("expect_column_values_to_not_be_null", "payment_date")].success
    assert outcomes[("expect_column_values_to_be_in_set", "payment_method")].success


def test_check_definition_targets_the_load_batch():
    assert nrp_payments_meet_expectations.check_keys == {
        dg.AssetCheckKey(dg.AssetKey("nrp_payments_batch"), "nrp_payments_meet_expectations")
    }
