"""Issue 18 item 6: the same payments resent under a new header file_id are held, not posted twice, until an
operator releases them; the acknowledgement reports them and an alert probe counts them."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import jsonschema
import pytest
from click.testing import CliRunner

from cmp_pipelines.cli import main
from cmp_pipelines.core import probe_queries as probe_service
from cmp_pipelines.core.config import load_partners, load_probes
from cmp_pipelines.core.probes import NRP_DUPLICATE_PROBES, PROBES_BY_ID
from cmp_pipelines.core.settings import PACKAGE_ROOT, PROJECT_ROOT
from cmp_pipelines.defs.nrp.flow import NonRecurringPayments
from cmp_pipelines.lib.resources.file_store import LocalFileStore
from tests.support.platform import NOW, document, payment

FIRST = [
    payment("1", "ACC00000001", "10.00", "INV000000011"),
    payment("2", "ACC00000002", "5.50"),
    payment("3", "ACC99999999", "20.00"),  # unknown account: suspense
]


def total_payments(platform) -> int:
    return platform.query("SELECT coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE kind = 'PAYMENT'")[0][0]


def flow(platform, con, partners=None):
    return NonRecurringPayments(con, platform.files, platform.keyring,
                                partners or load_partners(PROJECT_ROOT / "config"), NOW)


def test_a_resend_under_a_new_file_id_is_held_reported_and_released_once(platform):
    first = platform.process(platform.drop("first.json.enc", document(FIRST, file_id="PP-001")))
    assert first.held_count == 0 and total_payments(platform) == -3550
    balances = {a: platform.balance(a) for a in ("ACC00000001", "ACC00000002", "SUSPENSE", "ACC00000003")}

    resent = FIRST + [payment("4", "ACC00000003", "7.25")]
    load = platform.process(platform.drop("resent.json.enc", document(resent, file_id="PP-002")))

    assert (load.accepted_count, load.held_count, load.held_minor) == (1, 3, 3550)
    assert total_payments(platform) == -3550 - 725, "the resend posted only its new record"
    assert platform.balance("ACC00000001") == balances["ACC00000001"]
    assert platform.balance("ACC00000003") == balances["ACC00000003"] - 725
    ack = platform.read_ack("PAYPOINT", "resent")
    header = ack["header"]
    assert (header["accepted_count"], header["accepted_amount"]) == (1, "7.25")
    assert (header["held_count"], header["held_amount"]) == (3, "35.50")
    held = [r for r in ack["records"] if r["outcome"] == "HELD"]
    assert [(r["record_id"], r["amount"], r["reason_code"]) for r in held] == [
        ("1", "10.00", "SUSPECTED_DUPLICATE"), ("2", "5.50", "SUSPECTED_DUPLICATE"),
        ("3", "20.00", "SUSPECTED_DUPLICATE")]
    assert held[0]["reason"] == (
        f"record_id '1' with the same account and amount was already received in file 'PP-001' on {NOW:%Y-%m-%d}; "
        "held as a suspected duplicate until an operator releases it")
    schema = json.loads((PACKAGE_ROOT / "core/files/schemas/nrp_acknowledgement.schema.json").read_text())
    jsonschema.validate(ack, schema)

    with platform.connect() as con:
        [outcome] = probe_service.evaluate(con, load_probes(PROJECT_ROOT / "config"), NOW,
                                           probes=NRP_DUPLICATE_PROBES)
    assert (outcome.value, outcome.tripped) == (3, True)

    with platform.connect() as con:
        one = flow(platform, con).release_held(load.batch_id, "2")
    assert (one.released, one.posted_now, one.total_minor) == (1, 1, -550)
    assert platform.balance("ACC00000002") == balances["ACC00000002"] - 550
    with platform.connect() as con:
        rest = flow(platform, con).release_held(load.batch_id)
        again = flow(platform, con).release_held(load.batch_id)
    assert (rest.released, rest.posted_now, rest.total_minor) == (2, 2, -3000)
    assert (again.released, again.posted_now, again.posting_batch_id) == (0, 0, None)
    assert total_payments(platform) == -3550 - 725 - 3550, "released once, to the penny"
    assert platform.balance("SUSPENSE") == balances["SUSPENSE"] - 2000
    keys = platform.query("SELECT idempotency_key FROM ledger_postings WHERE batch_id = ? ORDER BY 1",
                          [rest.posting_batch_id])
    assert keys == [(f"nrp:{load.batch_id[5:]}:1:PAYMENT",), (f"nrp:{load.batch_id[5:]}:3:PAYMENT",)]
    posting_file = json.loads(platform.files.read_bytes(rest.posting_file))
    assert (posting_file["header"]["record_count"], posting_file["header"]["total_amount"]) == (2, "-30.00")

    # re-running the posting step after the release posts nothing twice
    with platform.connect() as con:
        f = flow(platform, con)
        f.post(f.loaded(load.file_id))
    assert total_payments(platform) == -3550 - 725 - 3550


class LedgerFolderFails(LocalFileStore):
    def write_from(self, path: str, produce) -> str:
        if path.startswith("outbound/ledger/"):
            raise OSError("injected failure: disk full while writing the posting file")
        return super().write_from(path, produce)


def test_a_release_whose_file_failed_is_flagged_and_written_by_the_next_release(platform):
    platform.process(platform.drop("first.json.enc", document(FIRST, file_id="PP-001")))
    load = platform.process(platform.drop("resent.json.enc", document(FIRST, file_id="PP-002")))
    assert load.held_count == 3
    broken = LedgerFolderFails(base_dir=str(platform.root))
    with platform.connect() as con, pytest.raises(OSError, match="while writing the posting file"):
        NonRecurringPayments(con, broken, platform.keyring, load_partners(PROJECT_ROOT / "config"), NOW
                             ).release_held(load.batch_id)
    assert total_payments(platform) == -3550 * 2, "posted before the file failed"
    [(release, created)] = platform.query("SELECT batch_id, created_at FROM batches WHERE kind = 'NRP_RELEASE' "
                                          "AND output_path IS NULL")
    configs = load_probes(PROJECT_ROOT / "config")
    minutes = configs["ledger_posting_files_missing"].older_than_minutes
    probe = (PROBES_BY_ID["ledger_posting_files_missing"],)
    with platform.connect() as con:
        [flagged] = probe_service.evaluate(con, configs, created + timedelta(minutes=minutes + 1), probes=probe)
    assert (flagged.value, flagged.tripped) == (1, True)

    result = CliRunner().invoke(main, ["nrp", "release-held", load.batch_id])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"nothing held in {load.batch_id}; nothing posted",
        f"wrote the posting file an earlier release left unwritten: outbound/ledger/{release}.json ({release})"]
    posting_file = json.loads(platform.files.read_bytes(f"outbound/ledger/{release}.json"))
    assert (posting_file["header"]["record_count"], posting_file["header"]["total_amount"]) == (3, "-35.50")
    assert total_payments(platform) == -3550 * 2, "nothing posted twice"
    with platform.connect() as con:
        [cleared] = probe_service.evaluate(con, configs, created + timedelta(minutes=minutes + 1), probes=probe)
    assert (cleared.value, cleared.tripped) == (0, False)


def test_only_the_same_record_id_account_and_amount_within_the_window_is_held(platform):
    platform.process(platform.drop("a.json.enc", document(FIRST[:2], file_id="PP-A")))
    changed = [payment("1", "ACC00000001", "10.01", "INV000000011"), payment("2", "ACC00000003", "5.50")]
    load = platform.process(platform.drop("b.json.enc", document(changed, file_id="PP-B")))
    assert (load.held_count, load.accepted_count) == (0, 2), "another amount or account is another payment"

    other_partner = platform.process(platform.drop(
        "c.json.enc", document(FIRST[:2], sender="LOCKBOX", file_id="LB-1"), partner="LOCKBOX"))
    assert other_partner.held_count == 0, "the window is per partner"

    platform.query("UPDATE batches SET created_at = created_at - INTERVAL 31 DAY WHERE partner = 'PAYPOINT'")
    late = platform.process(platform.drop("d.json.enc", document(FIRST[:2], file_id="PP-D")))
    assert late.held_count == 0, "older than the 30-day window"


def test_a_record_rejected_earlier_is_not_held_and_a_window_of_0_turns_the_check_off(platform):
    bad = [payment("1", "ACC00000001", "10.00", payment_method="CARD")]
    assert platform.process(platform.drop("bad.json.enc", document(bad, file_id="PP-1"))).rejected_count == 1
    fixed = platform.process(platform.drop("fixed.json.enc", document(FIRST[:1], file_id="PP-2")))
    assert (fixed.accepted_count, fixed.held_count) == (1, 0)

    partners = load_partners(PROJECT_ROOT / "config")
    partners["PAYPOINT"] = dataclasses.replace(partners["PAYPOINT"], duplicate_window_days=0)
    key = platform.drop("again.json.enc", document(FIRST[:1], file_id="PP-3"))
    with platform.connect() as con:
        load = flow(platform, con, partners).load(key)
    assert (load.accepted_count, load.held_count) == (1, 0)


def test_release_held_command(platform):
    platform.process(platform.drop("first.json.enc", document(FIRST, file_id="PP-001")))
    load = platform.process(platform.drop("resent.json.enc", document(FIRST, file_id="PP-002")))
    before = total_payments(platform)
    runner = CliRunner()

    missing = runner.invoke(main, ["nrp", "release-held", "NRPL-0000"])
    assert missing.exit_code == 1
    assert "NRPL-0000 is not a non-recurring payments load batch (NRPL-...)" in missing.output
    not_held = runner.invoke(main, ["nrp", "release-held", load.batch_id, "--record", "9"])
    assert not_held.exit_code == 1 and f"record '9' is not in batch {load.batch_id}" in not_held.output

    done = runner.invoke(main, ["nrp", "release-held", load.batch_id])
    assert done.exit_code == 0, done.output
    assert f"released 3 record(s) of {load.batch_id}: posted 3 (35.50) in " in done.output
    assert total_payments(platform) == before - 3550
    again = runner.invoke(main, ["nrp", "release-held", load.batch_id])
    assert again.exit_code == 0 and "nothing held" in again.output
    assert total_payments(platform) == before - 3550
