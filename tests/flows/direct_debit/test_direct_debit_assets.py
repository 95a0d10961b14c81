"""The AUDDIS selection asset materialised on its own for one day with the real resources: a new mandate goes
out as a 0N instruction, and the metadata an operator reads in the UI says so."""

from __future__ import annotations

from datetime import date

import dagster as dg

from cmp_pipelines.core.mandates import create_mandate
from cmp_pipelines.defs.direct_debit.assets import auddis_instructions_batch
from tests.support.dagster import real_resources
from tests.support.direct_debit import BUREAU, DD_CONFIG, at

DAY = date(2026, 12, 1)


def test_the_auddis_selection_asset_sends_a_new_mandate_as_0n(platform, instance):
    platform.keyring.init_keys(BUREAU)
    with platform.connect() as con:
        create_mandate(con, "ACC00000001", config=DD_CONFIG, now=at(DAY), sort_code="20-15-75",
                       bank_account="87654321", account_name="Jo Smith")

    result = dg.materialize([auddis_instructions_batch], partition_key=DAY.isoformat(), instance=instance,
                            resources=real_resources(platform))

    assert result.success
    [materialization] = result.asset_materializations_for_node("auddis_instructions_batch")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["record_count"] == 1 and meta["by_transaction_code"] == {"0N": 1}
    assert meta["mandates_activated"] == 0
    assert not platform.files.list_files("outbound"), "selection only: the file is auddis_file's"
