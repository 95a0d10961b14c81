"""The NRP flow with PostgreSQL as the system of record (issue 19, phase 2): the same outcomes on both stores."""

from __future__ import annotations

import duckdb
import orjson
import pytest

from tests.support.platform import SAMPLE_RECORDS, document, payment

RECORDS = SAMPLE_RECORDS


def test_a_file_posts_to_the_penny_acknowledges_and_posts_nothing_twice(any_platform):
    platform = any_platform
    before = {a: platform.balance(a) for a in ("ACC00000001", "ACC00000002", "ACC00000003", "SUSPENSE")}
    key = platform.drop("PAYPOINT-20261121-001.json.enc", document(RECORDS))

    load = platform.process(key)

    assert (load.status, load.accepted_count, load.rejected_count, load.accepted_minor) == ("LOADED", 4, 1, 3551)
    assert load.allocations == {"INVOICE": 2, "ACCOUNT": 1, "SUSPENSE": 1}
    changes = {a: platform.balance(a) - before[a] for a in before}
    assert changes == {"ACC00000001": -1000, "ACC00000002": -550, "ACC00000003": -1, "SUSPENSE": -2000}
    ack = platform.read_ack("PAYPOINT", "PAYPOINT-20261121-001")
    assert ack["header"]["status"] == "PROCESSED" and ack["header"]["accepted_amount"] == "35.51"
    assert [(r["record_id"], r["outcome"], r["allocation"], r["amount"], r["reason_code"]) for r in ack["records"]] == [
        ("1", "ACCEPTED", "INVOICE", "10.00", None),
        ("2", "ACCEPTED", "ACCOUNT", "5.50", None),
        ("3", "ACCEPTED", "INVOICE", "0.01", None),
        ("4", "ACCEPTED", "SUSPENSE", "20.00", "UNKNOWN_ACCOUNT"),
        ("5", "REJECTED", None, None, "AMOUNT_NEGATIVE"),
    ]
    [posting_file] = platform.files.list_files("outbound/ledger")
    postings = orjson.loads(platform.files.read_bytes(posting_file.path))
    assert postings["header"]["record_count"] == 4 and postings["header"]["total_amount"] == "-35.51"
    assert sorted((p["idempotency_key"].split(":")[2], p["account_number"], p["amount"])
                  for p in postings["postings"]) == [
        ("1", "ACC00000001", "-10.00"), ("2", "ACC00000002", "-5.50"), ("3", "ACC00000003", "-0.01"),
        ("4", "SUSPENSE", "-20.00")]
    assert platform.query("SELECT kind, status, record_count, total_minor FROM batches ORDER BY kind") == [
        ("NRP_LOAD", "ACKNOWLEDGED", 5, 3551), ("NRP_POSTING", "POSTED", 4, -3551)]
    assert platform.query("SELECT status, archived_path IS NOT NULL FROM inbound_files") == [("LOADED", True)]
    assert sorted(platform.query("SELECT document_kind, partner, status FROM delivery_register")) == [
        ("LEDGER_POSTING", "SALES_LEDGER", "PENDING"), ("NRP_ACKNOWLEDGEMENT", "PAYPOINT", "PENDING")]

    # the run again (a re-run partition) and the same file dropped again: nothing posted twice
    assert platform.process(key).status == "ALREADY_LOADED"
    again = platform.drop("PAYPOINT-20261121-001-again.json.enc", document(RECORDS))
    quarantined = platform.quarantine(again)
    assert quarantined.code == "DUPLICATE_FILE"
    assert platform.payment_postings() == 4
    assert {a: platform.balance(a) - before[a] for a in before} == changes
    assert platform.query("SELECT status, error_code FROM inbound_files ORDER BY status") == [
        ("LOADED", None), ("QUARANTINED", "DUPLICATE_FILE")]


@pytest.mark.e2e
@pytest.mark.postgres
def test_the_nrp_job_under_dagster_keeps_postgres_as_the_system_of_record(pg_platform, instance):
    from cmp_pipelines.definitions import defs
    from cmp_pipelines.lib.headless import run_pending_sensors
    from tests.support.dagster import flow_runs

    before = {a: pg_platform.balance(a) for a in ("ACC00000001", "ACC00000002", "ACC00000003", "SUSPENSE")}
    pg_platform.drop("PAYPOINT-20261121-001.json.enc", document(RECORDS))

    outcomes = flow_runs(run_pending_sensors(defs, instance, echo=lambda _: None))

    assert [o.success for o in outcomes] == [True]
    assert {a: pg_platform.balance(a) - before[a] for a in before} == {
        "ACC00000001": -1000, "ACC00000002": -550, "ACC00000003": -1, "SUSPENSE": -2000}
    assert pg_platform.query("SELECT kind, status FROM batches ORDER BY kind") == [
        ("NRP_LOAD", "ACKNOWLEDGED"), ("NRP_POSTING", "POSTED")]
    embedded = pg_platform.root / "cmp.duckdb"  # other sensors of the code location may open it: it stays empty
    if embedded.exists():
        with duckdb.connect(str(embedded), read_only=True) as con:
            assert con.execute("SELECT (SELECT count(*) FROM batches), (SELECT count(*) FROM ledger_postings)"
                               ).fetchall() == [(0, 0)]
    ack = pg_platform.read_ack("PAYPOINT", "PAYPOINT-20261121-001")
    assert (ack["header"]["accepted_count"], ack["header"]["rejected_count"]) == (4, 1)


def test_a_resend_is_held_then_released_once_through_the_cli(any_platform):
    """The duplicate window reads the partner's earlier records from the store of record; the operator's release
    (CLI) posts the held records once, whichever the store."""
    from click.testing import CliRunner

    from cmp_pipelines.cli import main

    platform = any_platform
    first = RECORDS[:4]
    platform.process(platform.drop("first.json.enc", document(first, file_id="PP-001")))
    paid = platform.query("SELECT coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE kind = 'PAYMENT'")[0][0]
    assert paid == -3551
    resent = [*first, payment("9", "ACC00000003", "7.25")]
    load = platform.process(platform.drop("resent.json.enc", document(resent, file_id="PP-002")))
    assert (load.accepted_count, load.held_count, load.held_minor) == (1, 4, 3551)
    assert platform.query("SELECT sum(amount_minor) FROM ledger_postings WHERE kind = 'PAYMENT'")[0][0] == -3551 - 725

    one = CliRunner().invoke(main, ["nrp", "release-held", load.batch_id, "--record", "2"], catch_exceptions=False)
    assert one.exit_code == 0, one.output
    assert f"released 1 record(s) of {load.batch_id}: posted 1 (5.50)" in one.output
    rest = CliRunner().invoke(main, ["nrp", "release-held", load.batch_id], catch_exceptions=False)
    assert "released 3 record(s)" in rest.output and "posted 3 (30.01)" in rest.output
    again = CliRunner().invoke(main, ["nrp", "release-held", load.batch_id], catch_exceptions=False)
    assert again.output == f"nothing held in {load.batch_id}; nothing posted\n"
    assert platform.query("SELECT sum(amount_minor) FROM ledger_postings WHERE kind = 'PAYMENT'")[0][0] == (
        -3551 - 725 - 3551), "released once, to the penny"
    assert platform.query("SELECT outcome, reason_code, count(*) FROM nrp_records WHERE batch_id = ? "
                          "GROUP BY 1, 2 ORDER BY 1, 2", [load.batch_id]) == [
        ("ACCEPTED", "RELEASED", 4), ("ACCEPTED", None, 1)]
    assert platform.query("SELECT accepted_count, total_minor FROM batches WHERE batch_id = ?", [load.batch_id]) == [
        (5, 725 + 3551)]
    assert len(platform.query("SELECT batch_id FROM batches WHERE kind = 'NRP_RELEASE'")) == 2

    # the state a release leaves when its posting file fails after the commit: no path, no file, no delivery
    [(release, path)] = platform.query("SELECT batch_id, output_path FROM batches WHERE kind = 'NRP_RELEASE' "
                                       "ORDER BY batch_id DESC LIMIT 1")
    assert platform.query("UPDATE batches SET output_path = NULL WHERE batch_id = ? RETURNING batch_id",
                          [release]) == [(release,)]
    assert len(platform.query("DELETE FROM delivery_register WHERE local_path = ? RETURNING delivery_id",
                              [path])) == 1
    (platform.root / path).unlink()
    healed = CliRunner().invoke(main, ["nrp", "release-held", load.batch_id], catch_exceptions=False)
    assert healed.output.splitlines() == [
        f"nothing held in {load.batch_id}; nothing posted",
        f"wrote the posting file an earlier release left unwritten: {path} ({release})"]
    assert orjson.loads(platform.files.read_bytes(path))["header"]["record_count"] == 3
    assert platform.query("SELECT output_path FROM batches WHERE batch_id = ?", [release]) == [(path,)]
    assert platform.query("SELECT count(*) FROM delivery_register WHERE local_path = ?", [path]) == [(1,)]
    assert platform.query("SELECT sum(amount_minor) FROM ledger_postings WHERE kind = 'PAYMENT'")[0][0] == (
        -3551 - 725 - 3551), "nothing posted twice"


@pytest.mark.postgres
def test_a_flow_not_yet_on_postgres_is_refused_rather_than_left_writing_into_a_scratch(pg_platform):
    from cmp_pipelines.lib.resources.database import Database

    database = Database()
    assert database.on_postgres()
    with pytest.raises(RuntimeError, match="only these flows run on it so far"), \
            database.connection():
        pass
    with database.flow_store() as (con, mirror):  # the NRP flow's way in: a scratch linked to PostgreSQL
        assert mirror is not None and mirror.con is con
        assert con.execute("SELECT count(*) FROM accounts").fetchall() == [(0,)]  # nothing until a step pulls


@pytest.mark.postgres
def test_the_documents_rendered_while_postgres_copies_are_published_by_their_own_steps_once_committed(
        pg_platform, monkeypatch, tmp_path):
    """The posting file and the acknowledgement are staged while PostgreSQL copies the postings in (the run's core is
    idle then); neither is visible until its own step publishes it, and a posting that does not commit leaves
    neither behind."""
    import hashlib

    from cmp_pipelines.core import ledger
    from cmp_pipelines.core.config import load_partners
    from cmp_pipelines.core.db.mirror import mirrored
    from cmp_pipelines.core.settings import PROJECT_ROOT
    from cmp_pipelines.defs.nrp.flow import NonRecurringPayments
    from cmp_pipelines.lib.resources.file_store import LocalFileStore
    from tests.support.platform import NOW

    platform = pg_platform
    key = platform.drop("PAYPOINT-20261121-001.json.enc", document(RECORDS))
    ack_path = "outbound/acknowledgements/nrp/PAYPOINT/PAYPOINT-20261121-001.ack.json.enc"

    def outbound() -> list[str]:  # every entry, staged ones included
        base = platform.root / "outbound"
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()) if base.is_dir() else []

    def flow(mirror) -> NonRecurringPayments:
        return NonRecurringPayments(mirror.con, platform.files, platform.keyring,
                                    load_partners(PROJECT_ROOT / "config"), NOW, mirror)

    def lost(pg) -> None:
        assert len(outbound()) == 2, "both documents were staged before the COMMIT"
        raise OSError("injected: the connection was lost at COMMIT")

    real_commit = ledger.commit_postgres
    with mirrored(platform.url) as mirror:  # the load commits, the posting's commit fails
        f = flow(mirror)
        load = f.load(key)
        assert mirror.prepared == {} and outbound() == []
        monkeypatch.setattr(ledger, "commit_postgres", lost)
        with pytest.raises(OSError, match="injected"):
            f.post(load)
        assert mirror.prepared == {} and outbound() == [], "rolled back: nothing it staged is left"
    assert platform.payment_postings() == 0

    monkeypatch.setattr(ledger, "commit_postgres", real_commit)
    with mirrored(platform.url) as mirror:  # a run of its own posts, and publishes what it rendered meanwhile
        f = flow(mirror)
        load = f.loaded(key)
        posted = f.post(load)
        posting_path = f"outbound/ledger/{posted.batch_id}.json"
        assert sorted(mirror.prepared) == [f"ack:{load.batch_id}", f"posting_file:{posted.batch_id}"]
        assert not platform.files.exists(posting_path) and not platform.files.exists(ack_path)
        staged = outbound()
        assert len(staged) == 2 and all(p.rsplit("/", 1)[1].startswith(".") for p in staged), staged
        assert platform.files.list_files("outbound") == [], "staged documents are no one's to read yet"

        assert f.write_posting_file(posted) == posting_path
        assert list(mirror.prepared) == [f"ack:{load.batch_id}"]
        assert f.acknowledge(load) == ack_path
        assert mirror.prepared == {} and outbound() == sorted(
            p.removeprefix("outbound/") for p in (posting_path, ack_path))
        rendered = LocalFileStore(base_dir=str(tmp_path / "on-the-spot"))  # the same batch rendered from the ledger
        ledger.write_posting_file(mirror.con, rendered, posted.batch_id, "nrp:Non Recurring Payment job", NOW)
        assert platform.files.read_bytes(posting_path) == rendered.read_bytes(posting_path), "byte for byte"

    postings = orjson.loads(platform.files.read_bytes(posting_path))
    assert postings["header"]["record_count"] == 4 and postings["header"]["total_amount"] == "-35.51"
    ack = platform.read_ack("PAYPOINT", "PAYPOINT-20261121-001")
    assert (ack["header"]["accepted_amount"], [r["outcome"] for r in ack["records"]]) == (
        "35.51", ["ACCEPTED"] * 4 + ["REJECTED"])
    assert platform.payment_postings() == 4
    registered = dict(platform.query("SELECT local_path, sha256 FROM delivery_register"))
    assert registered == {p: hashlib.sha256(platform.files.read_bytes(p)).hexdigest()
                          for p in (posting_path, ack_path)}, "hashed when staged: the bytes published"

    # a document that cannot be staged while PostgreSQL writes does not hold the posting up: its step renders it
    real_stage, refused = LocalFileStore.stage, []

    def full_once(store, path, produce):
        if path.startswith("outbound/ledger/") and not refused:
            refused.append(path)
            raise OSError("injected: no space left on the outbound disk")
        return real_stage(store, path, produce)

    monkeypatch.setattr(LocalFileStore, "stage", full_once)
    third = platform.drop("PAYPOINT-20261123-001.json.enc", document(
        [payment("21", "ACC00000003", "1.00")], file_id="PP-0003"))
    with mirrored(platform.url) as mirror:
        f = flow(mirror)
        load = f.load(third)
        posted = f.post(load)
        assert refused and list(mirror.prepared) == [f"ack:{load.batch_id}"] and platform.payment_postings() == 5
        f.write_posting_file(posted)
    assert orjson.loads(platform.files.read_bytes(f"outbound/ledger/{posted.batch_id}.json"))["header"][
        "total_amount"] == "-1.00"
    monkeypatch.setattr(LocalFileStore, "stage", real_stage)

    # a run that stops after posting: what it staged goes with it, and the next run renders both on the spot
    second = platform.drop("PAYPOINT-20261122-001.json.enc", document(
        [payment("11", "ACC00000001", "10.00"), payment("12", "ACC00000002", "5.50")], file_id="PP-0002"))
    with mirrored(platform.url) as mirror:
        f = flow(mirror)
        posted = f.post(f.load(second))
        assert len(mirror.prepared) == 2
    assert not [p for p in outbound() if p.rsplit("/", 1)[1].startswith(".")], "nothing staged outlives its run"
    assert not platform.files.exists(f"outbound/ledger/{posted.batch_id}.json")
    with mirrored(platform.url) as mirror:
        f = flow(mirror)
        load = f.loaded(second)
        assert f.posted(load).batch_id == posted.batch_id and mirror.prepared == {}
        f.write_posting_file(f.posted(load))
        f.acknowledge(load)
    second_postings = orjson.loads(platform.files.read_bytes(f"outbound/ledger/{posted.batch_id}.json"))
    assert (second_postings["header"]["record_count"], second_postings["header"]["total_amount"]) == (2, "-15.50")
    assert platform.read_ack("PAYPOINT", "PAYPOINT-20261122-001")["header"]["accepted_amount"] == "15.50"
