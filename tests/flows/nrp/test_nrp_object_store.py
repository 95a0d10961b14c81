"""The NRP flow with its files in an S3 bucket (moto's server on loopback, `CMP_FILES_URL=s3://...`): the sensor
lists the bucket, the run archives the partner file and publishes the acknowledgement into it, and two sensors of
two deployments that see the same files at once each ask for a disjoint share of the runs."""

from __future__ import annotations

import threading

import dagster as dg
import pytest

from cmp_pipelines.definitions import build_definitions
from cmp_pipelines.defs.nrp.defs import nrp_inbound_files_sensor
from cmp_pipelines.lib.headless import run_pending_sensors
from cmp_pipelines.lib.resources.s3_store import S3FileStore
from tests.support.dagster import flow_runs, fresh_instance
from tests.support.platform import SAMPLE_RECORDS, Platform, document, payment

pytestmark = pytest.mark.e2e

RECORDS = SAMPLE_RECORDS


@pytest.fixture
def in_bucket(platform, s3_bucket, monkeypatch) -> Platform:
    """The test platform (its DuckDB store and keys) with its files in the bucket; nothing under the data dir."""
    monkeypatch.setenv("CMP_FILES_URL", s3_bucket.url)
    return Platform(platform.root, S3FileStore(url=s3_bucket.url), platform.keyring)


def _today() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%d")


def test_a_partner_file_in_the_bucket_is_posted_archived_and_acknowledged_in_the_bucket(in_bucket, s3_bucket,
                                                                                          instance):
    platform = in_bucket
    charges = {a: platform.balance(a) for a in ("ACC00000001", "ACC00000002", "ACC00000003", "SUSPENSE")}
    platform.drop("PAYPOINT-20261121-001.json.enc", document(RECORDS))

    outcomes = flow_runs(run_pending_sensors(build_definitions(), instance, echo=lambda _: None))

    assert [o.success for o in outcomes] == [True], [o.error for o in outcomes]
    assert platform.balance("ACC00000001") == charges["ACC00000001"] - 1000
    assert platform.balance("ACC00000002") == charges["ACC00000002"] - 550
    assert platform.balance("ACC00000003") == charges["ACC00000003"] - 1
    assert platform.balance("SUSPENSE") == charges["SUSPENSE"] - 2000
    ack = platform.read_ack("PAYPOINT", "PAYPOINT-20261121-001")
    assert ack["header"]["status"] == "PROCESSED" and ack["header"]["accepted_amount"] == "35.51"
    assert [(r["record_id"], r["outcome"]) for r in ack["records"]] == [
        ("1", "ACCEPTED"), ("2", "ACCEPTED"), ("3", "ACCEPTED"), ("4", "ACCEPTED"), ("5", "REJECTED")]

    keys = s3_bucket.keys("cmp/")
    assert f"cmp/archive/nrp/PAYPOINT/{_today()}/PAYPOINT-20261121-001.json.enc" in keys
    assert "cmp/outbound/acknowledgements/nrp/PAYPOINT/PAYPOINT-20261121-001.ack.json.enc" in keys
    assert not [k for k in keys if k.startswith("cmp/inbound/")], "the partner file left the inbound prefix"
    assert len([k for k in keys if k.startswith("cmp/outbound/ledger/")]) == 1
    assert len([k for k in keys if k.startswith("cmp/claims/nrp/")]) == 1
    assert not (platform.root / "inbound").exists() and not (platform.root / "outbound").exists(), \
        "nothing was written to the local data folder"

    # the partition run again (an operator's re-execution): nothing posted twice, the published acknowledgement
    # kept byte for byte (a rewrite would differ: every encryption has a fresh IV)
    ack_path = "outbound/acknowledgements/nrp/PAYPOINT/PAYPOINT-20261121-001.ack.json.enc"
    published = platform.files.read_bytes(ack_path)
    job = build_definitions().resolve_job_def("non_recurring_payment_job")
    assert job.execute_in_process(instance=instance, partition_key=outcomes[0].partition_key).success
    assert platform.balance("ACC00000001") == charges["ACC00000001"] - 1000 and platform.payment_postings() == 4
    assert platform.files.read_bytes(ack_path) == published


@pytest.mark.slow  # eight runs across two Dagster instances: ~20 s on the 2-core machine
def test_eight_files_seen_by_two_sensors_at_once_are_each_processed_exactly_once(
        in_bucket, s3_bucket, instance, tmp_path, dagster_home_template):
    """Two deployments (two Dagster instances) on one bucket and one store: their sensors tick at the same moment
    and split the eight files by claim; each then runs its own share. Every file is posted once and acknowledged
    once, and the ledger moves by exactly the eight amounts."""
    platform = in_bucket
    accounts = [f"ACC{n:08d}" for n in range(1, 9)]
    before = {a: platform.balance(a) for a in accounts}
    for n, account in enumerate(accounts, start=1):
        platform.drop(f"PAYPOINT-20261202-{n:03d}.json.enc",
                      document([payment("1", account, f"{n}.0{n}")], file_id=f"PAYPOINT-20261202-{n:03d}"))

    with fresh_instance(tmp_path / "second_home", dagster_home_template) as second:
        start, requested = threading.Barrier(2), {}

        def tick(name: str, on: dg.DagsterInstance) -> None:
            start.wait()
            result = nrp_inbound_files_sensor(dg.build_sensor_context(instance=on))
            requested[name] = {r.partition_key for r in result.run_requests}

        ticks = [threading.Thread(target=tick, args=(name, on)) for name, on in (("a", instance), ("b", second))]
        for thread in ticks:
            thread.start()
        for thread in ticks:
            thread.join()
        assert len(requested["a"] | requested["b"]) == 8 and not requested["a"] & requested["b"], requested

        definitions = build_definitions()
        runs = [o for on in (instance, second)
                for o in flow_runs(run_pending_sensors(definitions, on, echo=lambda _: None))]

    assert len(runs) == 8 and all(o.success for o in runs), [o.error for o in runs]
    assert sorted(o.partition_key for o in runs) == sorted(requested["a"] | requested["b"])
    for n, account in enumerate(accounts, start=1):
        assert platform.balance(account) == before[account] - (n * 100 + n), account
    assert platform.payment_postings() == 8
    keys = s3_bucket.keys("cmp/")
    acks = [k for k in keys if k.startswith("cmp/outbound/acknowledgements/nrp/PAYPOINT/")]
    assert len(acks) == 8 and len(set(acks)) == 8
    assert len([k for k in keys if k.startswith(f"cmp/archive/nrp/PAYPOINT/{_today()}/")]) == 8
    assert not [k for k in keys if k.startswith("cmp/inbound/")]
    for n in range(1, 9):
        ack = platform.read_ack("PAYPOINT", f"PAYPOINT-20261202-{n:03d}")
        assert ack["header"]["accepted_count"] == 1 and ack["header"]["accepted_amount"] == f"{n}.0{n}"
