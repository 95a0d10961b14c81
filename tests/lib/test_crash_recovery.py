"""kill -9 at every point where a run makes work durable (before and after each commit, after each published
file and each move), then the next `run-pending` as cron would start it: the ledger is exact to the penny, the
file is archived once, the acknowledgement is published, no decrypted scratch is left and new files still flow.

The sweep itself is tests/support/crash.py.
"""

from __future__ import annotations

import os

import dagster as dg
import pytest

from cmp_pipelines.core.settings import PROJECT_ROOT, SCRATCH_PREFIX
from tests.support import crash
from tests.support.crash import FORK, crash_everywhere, execute, shards
from tests.support.platform import document, payment

home, tmp_path = crash.home, crash.tmp_path  # the sweep's fixtures: the platform with dagster.yaml, on /dev/shm

RECORDS = [
    payment("1", "ACC00000001", "10.00", "INV000000011"),
    payment("2", "ACC00000002", "5.50", None, payment_date=None, payment_method="CHEQUE"),
    payment("3", "ACC99999999", "20.00"),
    payment("4", "ACC00000003", "-1.00"),
]


@pytest.mark.slow
@shards
def test_nrp_file_killed_anywhere_is_posted_once_and_acknowledged(home, shard):
    platform = home

    def prepare():
        platform.drop("crash.json.enc", document(RECORDS))

    def finish():  # a new file still flows after the crash
        platform.drop("after.json.enc", document([payment("9", "ACC00000009", "3.00")], file_id="PAYPOINT-AFTER"))
        assert execute() == 0
        assert platform.read_ack("PAYPOINT", "crash")["header"]["record_count"] == 4

    killed_at, expected = crash_everywhere(platform, prepare, lambda n: execute(n), finish, shard)
    assert expected["postings"] == [("PAYMENT", 3, -3550)], "10.00 + 5.50 + 20.00 to suspense; -1.00 rejected"
    assert "archive/crash.json.enc" in expected["files"] and "outbound/crash.ack.json.enc" in expected["files"]
    assert any("moved inbound/nrp/PAYPOINT/crash.json.enc" in k for k in killed_at), killed_at
    assert any("outbound/acknowledgements" in k for k in killed_at), killed_at
    assert len(killed_at) >= 6, killed_at
    assert platform.payment_postings() == 3 + 1, "3 postable records of the crashed file, 1 of the later one"


def _on_card(platform, accounts: list[str], day) -> None:
    from cmp_pipelines.core import payment_setup
    from cmp_pipelines.core.config import load_partners
    from tests.support.notices import give_notices
    from tests.support.platform import NOW

    with platform.connect() as con:
        for account in accounts:
            payment_setup.set_payment_type(con, account, "RECURRING_CARD", partners=load_partners(
                PROJECT_ROOT / "config"), now=NOW, cause="test", card_token=f"tok_crash_{account[-2:]}",
                last_four="4242", expiry="2031-01")
            con.execute("UPDATE invoices SET due_on = ? WHERE account_number = ?", [day, account])
    give_notices(platform, "RECURRING_CARD", day)  # sent when the invoices were issued, weeks before


@pytest.mark.slow
@shards
def test_card_day_killed_anywhere_posts_once_and_never_publishes_an_extract_before_its_postings(home, shard):
    from tests.support.platform import NOW

    platform, day = home, NOW.date()
    _on_card(platform, ["ACC00000004", "ACC00000005"], day)
    owed = platform.query("SELECT sum(amount_minor) FROM invoices WHERE account_number IN "
                          "('ACC00000004', 'ACC00000005')")[0][0]
    job = "recurring_payments_card_job"
    extract = f"outbound/card_payments/CARDPAY/RCX-{day:%Y%m%d}-CARDPAY-GBP.json.enc"

    def run(n):
        code = execute(n, job=job, partition=day.isoformat())
        if code == -9 and platform.files.exists(extract):  # published only once its postings are committed
            assert platform.query("SELECT count(*) FROM ledger_postings WHERE kind = 'CARD_PAYMENT'") == \
                platform.query("SELECT count(*) FROM card_transactions")
        return code

    def finish():
        assert platform.balance("ACC00000004") == platform.balance("ACC00000005") == 0

    killed_at, expected = crash_everywhere(platform, lambda: None, run, finish, shard)
    [(invoices,)] = platform.query("SELECT count(*) FROM invoices WHERE account_number IN "
                                   "('ACC00000004', 'ACC00000005')")
    assert expected["postings"] == [("CARD_PAYMENT", invoices, -owed)]
    assert any(extract in k for k in killed_at) and len(killed_at) >= 4, killed_at


@pytest.mark.slow
@shards
def test_card_rejection_file_killed_anywhere_reverses_once(home, shard):
    from tests.support.platform import NOW, rejection, rejections_document

    platform, day = home, NOW.date()
    _on_card(platform, ["ACC00000004"], day)
    assert execute(job="recurring_payments_card_job", partition=day.isoformat()) == 0
    [(transaction, amount, minor)] = platform.query(
        "SELECT transaction_id, minor_to_decimal(amount_minor), amount_minor FROM card_transactions "
        "WHERE account_number = 'ACC00000004' ORDER BY 1 LIMIT 1")

    def prepare():
        platform.drop_rejections("CARDPAY-REJ-1.json.enc", rejections_document(
            [rejection("1", transaction, "ACC00000004", amount, "43")]))

    def finish():
        assert platform.balance("ACC00000004") == minor, "the declined payment is owed again, once"

    killed_at, expected = crash_everywhere(platform, prepare, lambda n: execute(n), finish, shard)
    assert ("CARD_REVERSAL", 1, minor) in expected["postings"], expected
    assert "archive/CARDPAY-REJ-1.json.enc" in expected["files"]
    assert len(killed_at) >= 5, killed_at


def test_a_killed_run_is_failed_and_its_slot_freed_so_other_runs_go_on(home):
    from cmp_pipelines.lib.recovery import reap_dead_runs

    platform = home
    platform.drop("held.json.enc", document(RECORDS[:1]))
    assert execute(1) == -9  # killed at its first crash point, inside the load
    with dg.DagsterInstance.get() as instance:
        [dead] = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert instance.get_concurrency_config().pool_config.pool_granularity.value == "run", \
            "runs wait for the pool in the queue, never polling inside a step"
        storage = instance.event_log_storage
        storage.set_concurrency_slots("cmp_db", 1)
        assert storage.claim_concurrency_slot("cmp_db", dead.run_id, "nrp_payments_batch").is_claimed
        assert reap_dead_runs(instance) == [dead.run_id]
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert storage.get_concurrency_run_ids() == set(), "the dead run's slot is free"
        assert any("is gone (killed or crashed)" in (e.message or "") for e in instance.all_logs(dead.run_id))
    platform.drop("next.json.enc", document(RECORDS[1:2], file_id="PAYPOINT-NEXT"))
    assert execute() == 0
    assert platform.files.list_files("inbound") == []
    assert {f.path.rsplit("/", 1)[1] for f in platform.files.list_files("archive")} == {"held.json.enc",
                                                                                        "next.json.enc"}


@pytest.mark.slow
@shards
def test_direct_debit_days_and_bacs_reports_killed_anywhere_finish_once(home, shard):
    from cmp_pipelines.demo import data as demo
    from tests.support.direct_debit import BUREAU, SUN
    from tests.support.platform import NOW

    platform, day = home, NOW.date().isoformat()
    platform.keyring.init_keys(BUREAU)
    with platform.connect() as con:
        demo.seed_direct_debit_accounts(con, SUN, NOW, every=5, offset=1)

    auddis_killed, auddis = crash_everywhere(
        platform, lambda: None, lambda n: execute(n, job="auddis_extract_job", partition=day), lambda: None,
        shard)
    assert any(f.startswith("outbound/AUD-") for f in auddis["files"]) and len(auddis_killed) >= 2, auddis

    collections_killed, collections = crash_everywhere(
        platform, lambda: None, lambda n: execute(n, job="recurring_payments_dd_job", partition=day), lambda: None,
        shard)
    [(kind, count, total)] = [p for p in collections["postings"] if p[0] != "CARD_PAYMENT"]
    owed = platform.query("SELECT sum(amount_minor) FROM invoices WHERE invoice_number LIKE 'INV%D'")[0][0]
    assert (count, total) == (3, -owed), collections["postings"]
    assert len(collections_killed) >= 4, collections_killed

    def reports():
        with platform.connect() as con:
            demo.bacs_report_files(con, platform.files, platform.keyring, BUREAU, SUN, NOW)

    reports_killed, after_reports = crash_everywhere(platform, reports, lambda n: execute(n), lambda: None, shard)
    assert any(kind.startswith("DD_RETURN") or "REVERSAL" in kind for kind, _, _ in after_reports["postings"]), \
        after_reports["postings"]
    assert len(reports_killed) >= 6, reports_killed


def test_an_interrupted_partition_is_finished_before_files_that_arrived_after_it(home):
    """Outcomes can depend on order (an ADDACS amendment before or after the same day's ARUDD cancels the
    mandate: the crash sweep found a customer e-mail lost that way), so recovery goes first: in run-pending by
    ticking the recovery sensor first (the ADDACS sensor's name sorts before it), in the daemon's queue by the
    recovery run's priority."""
    from cmp_pipelines.lib.recovery import RECOVERY_OF_TAG
    from tests.support.direct_debit import BUREAU, addacs, drop_report

    platform = home
    platform.keyring.init_keys(BUREAU)
    unknown = {"reference": "UNKNOWNREF01", "payer-name": "Nobody", "reason-code": "B", "effective-date": "2026-12-20"}
    held = drop_report(platform, "addacs", "ADDACS-1.xml.enc", addacs([unknown], "000001"))
    assert execute(1) == -9  # killed inside its load
    later = drop_report(platform, "addacs", "ADDACS-2.xml.enc", addacs([unknown], "000002"))
    assert execute() == 0
    with dg.DagsterInstance.get() as instance:
        runs = sorted((r for r in instance.get_runs() if r.tags.get("dagster/partition") in (held, later)),
                      key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp)
        order = [(r.tags["dagster/partition"], r.status, RECOVERY_OF_TAG in r.tags) for r in runs]
        [recovery] = [r for r in runs if RECOVERY_OF_TAG in r.tags]
    assert order == [(held, dg.DagsterRunStatus.FAILURE, False), (held, dg.DagsterRunStatus.SUCCESS, True),
                     (later, dg.DagsterRunStatus.SUCCESS, False)], order
    assert recovery.tags["dagster/priority"] == "1", "the daemon's queue dequeues it ahead of newer runs"


def test_new_files_wait_while_a_dead_run_awaits_its_recovery_run(home):
    """Under the daemon the recovery sensor notices a death within its 30 s interval; an inbound sensor ticking in
    that window must not launch newer work ahead of the interrupted partition."""
    from cmp_pipelines.definitions import defs
    from cmp_pipelines.lib.recovery import awaiting_recovery, reap_dead_runs
    from tests.support.direct_debit import BUREAU, addacs, drop_report

    platform = home
    platform.keyring.init_keys(BUREAU)
    unknown = {"reference": "UNKNOWNREF01", "payer-name": "Nobody", "reason-code": "B", "effective-date": "2026-12-20"}
    drop_report(platform, "addacs", "ADDACS-1.xml.enc", addacs([unknown], "000001"))
    assert execute(1) == -9  # killed inside its load: the run is still STARTED, its process gone
    drop_report(platform, "addacs", "ADDACS-2.xml.enc", addacs([unknown], "000002"))
    sensor = defs.get_sensor_def("addacs_files_sensor")
    with dg.DagsterInstance.get() as instance:
        [dead] = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        held = sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(held, dg.SkipReason) and dead.run_id in held.skip_message, held
        assert reap_dead_runs(instance) == [dead.run_id]  # failed, but no recovery run asked for yet: still held
        assert awaiting_recovery(instance) == dead.run_id
        assert isinstance(sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)
    assert execute() == 0  # the recovery sensor asks for the re-run; then the new file goes
    with dg.DagsterInstance.get() as instance:
        assert awaiting_recovery(instance) is None
        statuses = sorted(r.status.value for r in instance.get_runs())
    assert statuses == ["FAILURE", "SUCCESS", "SUCCESS"], statuses
    assert len(platform.files.list_files("archive")) == 2


def test_only_a_provably_dead_process_of_this_boot_and_namespace_is_dead():
    from cmp_pipelines.core import processes

    child = FORK.Process(target=os._exit, args=(0,))
    child.start()
    owner = processes.token(child.pid)
    child.join()
    assert processes.alive(processes.token()) and not processes.alive(owner)
    pid, start, _ = owner.split("-", 2)
    assert processes.alive(f"{pid}-{start}-00000000"), "another namespace's process is never judged dead"
    assert processes.alive("not-a-token") and processes.alive(f"{os.getpid()}-1-{processes.namespace()}") is False


def test_a_scratch_folder_someone_else_prepared_is_refused(monkeypatch, tmp_path):
    from cmp_pipelines.core import processes, settings

    monkeypatch.setattr(settings, "_scratch_base", lambda: str(tmp_path))
    monkeypatch.setattr(settings, "_MADE", set())
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / f"{SCRATCH_PREFIX}{processes.token()}").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PermissionError, match="not this user's private folder"):
        settings.scratch_dir()
