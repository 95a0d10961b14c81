"""Every inbound feed's Great Expectations suite (expectations/*.json) over records read as the asset check reads
them: a clean batch meets every expectation, and each kind of bad value fails the expectation written for it."""

from __future__ import annotations

import duckdb
import pytest

from cmp_pipelines.core.expectations import RecordsSuite, load_suite, records_frame, validate_frame
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.billing.defs import billing_run_meets_expectations
from cmp_pipelines.defs.card_rejections.defs import card_rejections_meet_expectations
from cmp_pipelines.defs.direct_debit.defs import addacs_advices_meet_expectations, arudd_returns_meet_expectations
from cmp_pipelines.defs.hardware_orders.defs import (
    device_enrolment_responses_meet_expectations,
    warehouse_dispatch_meets_expectations,
)
from cmp_pipelines.defs.nrp.defs import nrp_payments_meet_expectations

# suite -> (its records table's columns with SQL types, a clean record, [(column, bad value, expectation failed)])
CASES = {
    "billing_run": (
        {"record_id": "VARCHAR", "record_type": "VARCHAR", "account_number": "VARCHAR", "email": "VARCHAR",
         "invoice_number": "VARCHAR", "amount_minor": "BIGINT"},
        {"record_id": "1", "record_type": "INVOICE", "account_number": "ACC90000001", "email": "a@example.com",
         "invoice_number": "BIL-1", "amount_minor": 12000},
        [("record_type", "CREDIT_NOTE", "expect_column_values_to_be_in_set"),
         ("email", "not-an-address", "expect_column_values_to_match_regex"),
         ("invoice_number", "BIL-1", "expect_column_values_to_be_unique"),
         ("amount_minor", 0, "expect_column_values_to_be_between")],
    ),
    "card_rejections": (
        {"record_id": "VARCHAR", "transaction_id": "VARCHAR", "account_number": "VARCHAR", "amount_minor": "BIGINT",
         "reason_code": "VARCHAR"},
        {"record_id": "1", "transaction_id": "PINV000000011-1", "account_number": "ACC00000004", "amount_minor": 1999,
         "reason_code": "51"},
        [("record_id", None, "expect_column_values_to_not_be_null"),
         ("transaction_id", "PINV000000011-1", "expect_column_values_to_be_unique"),
         ("amount_minor", 0, "expect_column_values_to_be_between"),
         ("reason_code", "insufficient funds", "expect_column_values_to_match_regex")],
    ),
    "addacs_advices": (
        {"reference": "VARCHAR", "reason_code": "VARCHAR", "effective_date": "DATE", "new_sort_code": "VARCHAR",
         "new_account_number": "VARCHAR", "mandate_id": "VARCHAR"},
        {"reference": "CMP0000000401", "reason_code": "3", "effective_date": "2026-12-02", "new_sort_code": "309634",
         "new_account_number": "11112222", "mandate_id": "MD-1"},
        [("reason_code", "Z", "expect_column_values_to_be_in_set"),
         ("new_sort_code", "30-96-34", "expect_column_values_to_match_regex"),
         ("effective_date", None, "expect_column_values_to_not_be_null")],
    ),
    "arudd_returns": (
        {"reference": "VARCHAR", "transaction_code": "VARCHAR", "return_code": "VARCHAR", "amount_minor": "BIGINT",
         "currency": "VARCHAR", "original_processing_date": "DATE", "collection_id": "VARCHAR"},
        {"reference": "CMP0000000401", "transaction_code": "17", "return_code": "0128", "amount_minor": 4599,
         "currency": "GBP", "original_processing_date": "2026-12-01", "collection_id": "DD-1"},
        [("transaction_code", "99", "expect_column_values_to_be_in_set"),
         ("currency", "EUR", "expect_column_values_to_be_in_set"),
         ("amount_minor", -5, "expect_column_values_to_be_between")],
    ),
    "warehouse_dispatch": (
        {"order_id": "VARCHAR", "sku": "VARCHAR", "status": "VARCHAR", "imei": "VARCHAR",
         "courier_reference": "VARCHAR"},
        {"order_id": "HWO-1", "sku": "HS-ACME-X1", "status": "DISPATCHED", "imei": "356938035643809",
         "courier_reference": "DPD-100"},
        [("status", "SHIPPED", "expect_column_values_to_be_in_set"),
         ("imei", "35693803564380", "expect_column_values_to_match_regex"),
         ("sku", None, "expect_column_values_to_not_be_null")],
    ),
    "device_enrolment_responses": (
        {"record_id": "VARCHAR", "request_id": "VARCHAR", "device_id": "VARCHAR", "result": "VARCHAR"},
        {"record_id": "1", "request_id": "ENR-1", "device_id": "356938035643809", "result": "ENROLLED"},
        [("result", "OK", "expect_column_values_to_be_in_set"),
         ("request_id", "ENR-1", "expect_column_values_to_be_unique"),
         ("device_id", None, "expect_column_values_to_not_be_null")],
    ),
}



def _spec(suite: str) -> RecordsSuite:
    columns = tuple(CASES[suite][0])
    table = {"billing_run": "billing_records",
             "card_rejections": "card_rejections", "addacs_advices": "addacs_advices", "arudd_returns": "dd_returns",
             "warehouse_dispatch": "hw_dispatch_records", "device_enrolment_responses": "hw_enrolment_responses"}
    return RecordsSuite(suite, table[suite], columns)


def _validate(suite: str, records: list[dict]) -> dict:
    types, _, _ = CASES[suite]
    spec = _spec(suite)
    con = duckdb.connect()
    con.execute("CREATE TABLE inbound_files (file_id VARCHAR, batch_id VARCHAR)")
    con.execute("INSERT INTO inbound_files VALUES ('P/f.enc@1', 'B1'), ('P/other.enc@2', 'B2')")
    con.execute(f"CREATE TABLE {spec.table} (batch_id VARCHAR, position BIGINT, "
                + ", ".join(f"{c} {t}" for c, t in types.items()) + ")")
    for position, record in enumerate(records):
        con.execute(f"INSERT INTO {spec.table} VALUES (?, ?, {', '.join('?' * len(types))})",
                    ["B1", position, *[record[c] for c in types]])
    con.execute(f"INSERT INTO {spec.table} SELECT 'B2', position, * EXCLUDE (batch_id, position) FROM {spec.table}")
    frame = records_frame(con, spec, "P/f.enc@1")
    assert len(frame) == len(records), "only the file's own batch"
    return {(o.expectation, o.column): o for o in validate_frame(frame, load_suite(PROJECT_ROOT / "expectations",
                                                                                   suite))}


def _unique(record: dict, n: int) -> dict:
    ids = ("record_id", "transaction_id", "request_id", "invoice_number")
    return {k: (f"{v}-{n}" if isinstance(v, str) and k in ids else v) for k, v in record.items()}


@pytest.mark.parametrize("suite", sorted(CASES))
def test_a_clean_batch_meets_the_suite_and_each_bad_value_fails_its_expectation(suite):
    _, clean, bad = CASES[suite]
    outcomes = _validate(suite, [clean, _unique(clean, 2)])
    assert outcomes and all(o.success for o in outcomes.values()), [k for k, o in outcomes.items() if not o.success]
    # one validation: a clean record, then one record per bad value (the rest of it clean)
    outcomes = _validate(suite, [clean, *({**_unique(clean, n), column: value}
                                          for n, (column, value, _) in enumerate(bad))])
    failed = {k for k, o in outcomes.items() if not o.success}
    for column, value, expectation in bad:
        assert (expectation, column) in failed, (column, value, failed)
        assert outcomes[(expectation, column)].unexpected_count >= 1


def test_every_inbound_feed_has_a_suite_check_on_its_load_asset():
    checks = [billing_run_meets_expectations,
              nrp_payments_meet_expectations, card_rejections_meet_expectations, addacs_advices_meet_expectations,
              arudd_returns_meet_expectations, warehouse_dispatch_meets_expectations,
              device_enrolment_responses_meet_expectations]
    assert {next(iter(c.check_keys)).asset_key.path[-1] for c in checks} == {
        "billing_run_batch", "nrp_payments_batch", "card_rejections_batch", "addacs_advices", "dd_returns_batch",
        "warehouse_dispatch_batch", "device_enrolment_response_batch"}
    for suite in CASES:
        assert load_suite(PROJECT_ROOT / "expectations", suite)["expectations"]


def test_a_records_suite_refuses_anything_but_plain_identifiers():
    with pytest.raises(ValueError, match="plain identifiers"):
        RecordsSuite("x", "t; DROP TABLE accounts", ("a",))
