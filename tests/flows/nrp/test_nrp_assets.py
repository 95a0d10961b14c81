"""The NRP load asset materialised on its own with the real resources, and its Great Expectations check: the
metadata an operator reads in the UI, to the penny, without a sensor or a whole job."""

from __future__ import annotations

import dagster as dg

from cmp_pipelines.defs.nrp.assets import nrp_files_partitions, nrp_payments_batch
from cmp_pipelines.defs.nrp.defs import nrp_payments_meet_expectations
from tests.support.dagster import real_resources
from tests.support.platform import document, payment

RECORDS = [
    payment("1", "ACC00000001", "10.00", "INV000000011"),
    payment("2", "ACC00000002", "5.50"),
    payment("3", "ACC99999999", "20.00"),
    payment("4", "ACC00000003", "-1.00"),
]


def test_the_load_asset_reports_counts_amounts_and_allocations(platform, instance):
    key = platform.drop("assets.json.enc", document(RECORDS))
    instance.add_dynamic_partitions(nrp_files_partitions.name, [key])

    result = dg.materialize([nrp_payments_batch, nrp_payments_meet_expectations], partition_key=key,
                            instance=instance, resources=real_resources(platform))

    assert result.success
    [materialization] = result.asset_materializations_for_node("nrp_payments_batch")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert (meta["record_count"], meta["accepted_count"], meta["rejected_count"]) == (4, 3, 1)
    assert meta["accepted_amount"] == "35.50 GBP", "10.00 + 5.50 + 20.00"
    assert meta["load_status"] == "LOADED" and meta["file_id"] == key
    assert meta["files_read"] == f"inbound/nrp/{key.split('@')[0]}"
    assert platform.query("SELECT count(*) FROM nrp_records WHERE batch_id = ?", [meta["batch_id"]]) == [(4,)]
    assert platform.payment_postings() == 0, "the load asset posts nothing: that is nrp_posting_batch"
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "nrp_payments_meet_expectations" and check.passed
    assert check.description.endswith("expectations met over 4 records")
