"""Direct Debit Instructions and the AUDDIS extract: set-up refusals, the lifecycle from submission to
activation, amendment as 0C then 0N, cancellation as 0C, and the Standard 18 file the bureau receives."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from cmp_pipelines.core.config import load_direct_debit, load_partners
from cmp_pipelines.core.mandates import amend_mandate, cancel_mandate, create_mandate, mandate_view
from cmp_pipelines.core.payment_setup import SetupError
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.direct_debit import standard18 as std18
from cmp_pipelines.defs.direct_debit.auddis import AuddisExtract

CONFIG = load_direct_debit(PROJECT_ROOT / "config", load_partners(PROJECT_ROOT / "config"))
DAY = date(2026, 12, 1)


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 3, tzinfo=UTC)


@pytest.fixture
def dd(platform):
    platform.keyring.init_keys("BACSBUREAU")
    return platform


def auddis_day(platform, day: date):
    with platform.connect() as con:
        extract = AuddisExtract(con, platform.files, platform.keyring, CONFIG, at(day))
        batch = extract.select(day)
        path = extract.write_file(batch)
    if path is None:  # nothing pending: no file
        return batch, None, None
    text = platform.keyring.decrypt("BACSBUREAU", platform.files.read_bytes(path)).decode("ascii")
    return batch, std18.read(text), text


def mandate(platform, account="ACC00000001", **details):
    values = {"sort_code": "20-15-75", "bank_account": "87654321", "account_name": "Jo Smith", **details}
    with platform.connect() as con:
        return create_mandate(con, account, config=CONFIG, now=at(DAY), **values)


@pytest.mark.parametrize(("details", "field", "fragment"), [
    ({"sort_code": "2015"}, "sort_code", "6 digits"),
    ({"bank_account": "1234567"}, "bank_account", "8 digits"),
    ({"account_name": " "}, "account_name", "1-60 characters"),
    ({"reference": "ab-123"}, "reference", "A-Z 0-9"),
    ({"reference": "AB--12"}, "reference", "at least 6 significant"),
    ({"reference": "AAAAAAA"}, "reference", "one character repeated"),
])
def test_mandate_refusals(dd, details, field, fragment):
    with pytest.raises(SetupError) as caught:
        mandate(dd, **details)
    assert caught.value.field == field and fragment in caught.value.message


def test_one_live_mandate_per_account_and_unique_references(dd):
    mandate(dd, reference="REF000001")
    with pytest.raises(SetupError, match="already has mandate DDI-123456-REF000001"):
        mandate(dd, reference="REF000002")
    with pytest.raises(SetupError, match="'REF000001' is already used under service user 123456"):
        mandate(dd, "ACC00000002", reference="REF000001")


def test_new_mandate_submitted_then_active_after_the_quiet_period(dd):
    created = mandate(dd)
    assert (created["status"], created["reference"]) == ("PENDING_SUBMISSION", "CMPACC00000001")
    batch, parsed, text = auddis_day(dd, DAY)
    assert batch.by_code == {"0N": 1}
    [record] = parsed.records
    assert (record.transaction_code, record.destination_sort_code, record.destination_account, record.amount_pence,
            record.reference, record.destination_name) == ("0N", "201575", "87654321", 0, "CMPACC00000001",
                                                            "JO SMITH")
    assert (parsed.debit_total, parsed.credit_total, parsed.credit_count) == (0, 0, 0)
    # AUDDIS is told apart by its records, not the work code; Bacs processes it the next working day
    assert parsed.submission.work_code == "1 DAILY" and parsed.submission.processing_date == DAY + timedelta(days=1)
    with dd.connect() as con:
        assert mandate_view(con, created["mandate_id"])["status"] == "SUBMITTED"
    auddis_day(dd, DAY + timedelta(days=CONFIG.activation_days - 1))
    with dd.connect() as con:
        assert mandate_view(con, created["mandate_id"])["status"] == "SUBMITTED"
    quiet, _, _ = auddis_day(dd, DAY + timedelta(days=CONFIG.activation_days))
    with dd.connect() as con:
        view = mandate_view(con, created["mandate_id"])
    assert (view["status"], quiet.activated, quiet.record_count) == ("ACTIVE", 1, 0)
    history = dd.query("SELECT old_status, new_status FROM mandate_history ORDER BY changed_at, rowid")
    assert history == [(None, "PENDING_SUBMISSION"), ("PENDING_SUBMISSION", "SUBMITTED"), ("SUBMITTED", "ACTIVE")]


def test_amendment_is_0c_with_old_details_then_0n_with_new(dd):
    created = mandate(dd)
    auddis_day(dd, DAY)
    with dd.connect() as con:
        amended = amend_mandate(con, created["mandate_id"], sort_code="309634", bank_account="11112222",
                                account_name="Jo Smith", now=at(DAY + timedelta(days=2)))
    assert amended["status"] == "AMENDMENT_PENDING"
    _, parsed, _ = auddis_day(dd, DAY + timedelta(days=3))
    assert [(r.transaction_code, r.destination_sort_code, r.destination_account) for r in parsed.records] == [
        ("0C", "201575", "87654321"), ("0N", "309634", "11112222")]
    with dd.connect() as con:
        assert mandate_view(con, created["mandate_id"])["status"] == "SUBMITTED"


def test_cancellation_sends_0c_unless_the_bank_never_saw_it(dd):
    sent = mandate(dd)
    never_sent = mandate(dd, "ACC00000002", reference="NEVERSENT1")
    auddis_day(dd, DAY)
    with dd.connect() as con:
        cancel_mandate(con, sent["mandate_id"], now=at(DAY), cause="customer asked")
    auddis_day(dd, DAY + timedelta(days=1))
    later = mandate(dd, "ACC00000003", reference="LATER00001")
    with dd.connect() as con:
        cancel_mandate(con, later["mandate_id"], now=at(DAY), cause="typo")
        with pytest.raises(SetupError, match="already CANCELLED"):
            cancel_mandate(con, later["mandate_id"], now=at(DAY))
    nothing, parsed, _ = auddis_day(dd, DAY + timedelta(days=2))
    assert parsed is None and nothing.record_count == 0
    codes = dd.query("SELECT batch_id, transaction_code, reference FROM auddis_instructions ORDER BY 1, 2")
    assert codes == [("AUD-20261201", "0N", "CMPACC00000001"), ("AUD-20261201", "0N", "NEVERSENT1"),
                     ("AUD-20261202", "0C", "CMPACC00000001")]
    assert never_sent["status"] == "PENDING_SUBMISSION"


def test_rerunning_a_day_writes_the_same_file(dd):
    mandate(dd)
    first = auddis_day(dd, DAY)[2]
    mandate(dd, "ACC00000002", reference="LATECOMER1")  # arrives after the day's batch was chosen
    again, _, text = auddis_day(dd, DAY)
    assert again.status == "ALREADY_SELECTED" and text == first
    assert auddis_day(dd, DAY + timedelta(days=1))[0].by_code == {"0N": 1}


def test_sql_records_equal_the_python_writer(dd):
    for n, name in ((1, "Renée O'Brien-Smith & Co. Ltd"), (2, "straße 7/8")):
        mandate(dd, f"ACC0000000{n}", reference=f"SQLREF00{n}", account_name=name)
    _, parsed, text = auddis_day(dd, DAY)
    expected = std18.write(parsed.submission, list(parsed.records), with_contra=False)
    assert text.splitlines()[4:6] == expected.splitlines()[4:6]
    assert [r.destination_name for r in parsed.records] == ["RENEE OBRIEN-SMITH", "STRASSE 7/8"]


@pytest.mark.e2e  # a whole job run from the CLI
def test_cli_mandate_then_auddis_through_dagster(dd, tmp_path):
    import json

    from click.testing import CliRunner

    from cmp_pipelines.cli import main

    runner = CliRunner()
    created = runner.invoke(main, ["mandates", "create", "ACC00000004", "--sort-code", "20-15-75", "--bank-account",
                                   "87654321", "--account-name", "Jo Smith"])
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["status"] == "PENDING_SUBMISSION"
    refused = runner.invoke(main, ["mandates", "create", "ACC00000005", "--sort-code", "2015", "--bank-account",
                                   "87654321", "--account-name", "X"])
    assert refused.exit_code == 1 and "sort_code: must be 6 digits" in refused.output
    today = datetime.now(UTC).date()  # a daily partition exists up to today
    ran = runner.invoke(main, ["run-auddis", "--date", today.isoformat()])
    assert ran.exit_code == 0, ran.output
    assert f"{today}: 1 instruction(s)" in ran.output and f"outbound/auddis/BACSBUREAU/AUD-{today:%Y%m%d}" in ran.output
    future = runner.invoke(main, ["run-auddis", "--date", "2999-01-01"])
    assert future.exit_code == 1 and "2999-01-01 is in the future" in future.output
    cancelled = runner.invoke(main, ["mandates", "cancel", "DDI-123456-CMPACC00000004"])
    assert json.loads(cancelled.output)["pending_instruction"] == "CANCEL"


def test_a_day_with_no_instructions_writes_no_file(dd):
    batch, parsed, text = auddis_day(dd, DAY)
    assert batch.record_count == 0 and parsed is None and text is None
    assert dd.files.list_files("outbound/auddis") == []
    assert dd.query("SELECT status, output_path FROM batches WHERE batch_id = 'AUD-20261201'") == [
        ("NOTHING_PENDING", None)]


def test_the_whole_file_equals_the_python_writer_line_for_line(dd):
    for n in range(1, 6):
        mandate(dd, f"ACC0000000{n}", reference=f"WHOLEREF{n}")
    _, parsed, text = auddis_day(dd, DAY)
    assert len(parsed.records) == 5
    assert text == std18.write(parsed.submission, list(parsed.records), with_contra=False)
