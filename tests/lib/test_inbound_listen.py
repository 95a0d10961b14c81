"""Issue 16: an inbound tick with nothing to take waits for an upload (lib/inbound_sensor), so a file renamed into
place is taken by the tick already under way instead of at the daemon's next loop - only where the daemon and the
code server have a thread for every sensor's tick, and only on a store that can say cheaply that a folder changed."""

from __future__ import annotations

import threading

import dagster as dg
import pytest
import yaml

from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.definitions import defs
from cmp_pipelines.defs.nrp.defs import nrp_inbound_files_sensor
from cmp_pipelines.lib import inbound_sensor
from cmp_pipelines.lib.headless import run_pending_sensors
from cmp_pipelines.lib.inbound_sensor import LISTEN_SECONDS, SERVER_THREAD_SETTINGS, listen_seconds, wait_for_upload
from cmp_pipelines.lib.resources import file_store as file_store_module
from cmp_pipelines.lib.resources.file_store import FileStore, LocalFileStore
from tests.support.platform import document, payment

SENSORS = len(defs.get_repository_def().sensor_defs)


@pytest.fixture
def threaded_instance(tmp_path):
    (tmp_path / "instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance"),
                              overrides={"sensors": {"use_threads": True, "num_workers": SENSORS}}) as instance:
        yield instance


@pytest.mark.parametrize(("use_threads", "num_workers", "server_threads", "listens"), [
    (True, SENSORS, str(SENSORS + inbound_sensor.SPARE_SERVER_THREADS), True),
    (True, SENSORS, None, False),  # the code server's pool is Dagster's default: a few threads on two cores
    (True, SENSORS, str(SENSORS), False),  # no thread left for the webserver's and the run launches' calls
    (True, SENSORS - 1, "64", False),  # one tick would wait for a thread and miss the next loop
    (False, SENSORS, "64", False),  # sensors evaluated one after the other
    (True, SENSORS, "many", False),
])
def test_a_tick_waits_only_when_the_daemon_and_the_code_server_have_a_thread_for_every_sensor(
        tmp_path, monkeypatch, use_threads, num_workers, server_threads, listens):
    for name in SERVER_THREAD_SETTINGS:
        if server_threads is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, server_threads)
    with dg.instance_for_test(temp_dir=str(tmp_path),
                              overrides={"sensors": {"use_threads": use_threads, "num_workers": num_workers}}) as inst:
        assert listen_seconds(inst, SENSORS) == (LISTEN_SECONDS if listens else 0.0)
        assert listen_seconds(inst, None) == 0.0, "a context without its code location does not know the sensors"


def test_under_dg_dev_the_proxys_pool_must_have_the_threads_too(tmp_path, monkeypatch):
    """`dg dev` starts `dagster code-server start` (pool: DAGSTER_CODE_SERVER_MAX_WORKERS), a proxy that holds one of
    its threads for each call it passes to `dagster api grpc` (pool: DAGSTER_GRPC_MAX_WORKERS)."""
    monkeypatch.setenv("DAGSTER_GRPC_MAX_WORKERS", "64")
    monkeypatch.delenv("DAGSTER_CODE_SERVER_MAX_WORKERS", raising=False)
    with dg.instance_for_test(temp_dir=str(tmp_path),
                              overrides={"sensors": {"use_threads": True, "num_workers": SENSORS}}) as inst:
        assert listen_seconds(inst, SENSORS) == 0.0
        monkeypatch.setenv("DAGSTER_CODE_SERVER_MAX_WORKERS", "64")
        assert listen_seconds(inst, SENSORS) == LISTEN_SECONDS


def test_the_projects_settings_give_every_sensor_a_thread(tmp_path, monkeypatch):
    """dagster.yaml and the Makefile's CODE_SERVER_THREADS cover the sensors the code location has now: a new
    sensor beyond them would silently turn the waiting off."""
    sensors = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())["sensors"]
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert f"CODE_SERVER_THREADS ?= {inbound_sensor.CODE_SERVER_THREADS}\n" in makefile
    for name in SERVER_THREAD_SETTINGS:
        assert f"{name}=$(CODE_SERVER_THREADS)" in makefile
        monkeypatch.setenv(name, str(inbound_sensor.CODE_SERVER_THREADS))
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides={"sensors": sensors}) as inst:
        assert listen_seconds(inst, SENSORS) == LISTEN_SECONDS


def test_the_projects_instance_keeps_idle_ticks_one_day_as_the_chart_does(tmp_path):
    """Nine sensors ticking every 5 s leave ~155,000 skipped ticks a day: Dagster's default keeps them a week."""
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.scheduler.instigation import TickStatus

    settings = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    chart = yaml.safe_load((PROJECT_ROOT / "deploy" / "helm" / "values.yaml").read_text())["retention"]["sensor"]
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides={"retention": settings["retention"]}) as inst:
        kept = inst.get_tick_retention_settings(InstigatorType.SENSOR)
    assert kept[TickStatus.SKIPPED] == chart["purgeAfterDays"]["skipped"] == 1
    # one retention period only: the daemon runs a purge per period at the end of every tick
    assert {days for days in kept.values() if days > 0} == {1}


def test_a_file_renamed_into_place_during_the_tick_is_taken_by_that_tick(platform, threaded_instance, monkeypatch):
    """The upload under its temporary name wakes the tick too; it scans, finds nothing complete, and waits on for
    the rename instead of ending (then the file would wait for the daemon's next loop)."""
    for name in SERVER_THREAD_SETTINGS:
        monkeypatch.setenv(name, str(inbound_sensor.CODE_SERVER_THREADS))
    folder = platform.root / "inbound" / "nrp" / "PAYPOINT"
    folder.mkdir(parents=True)
    data = platform.keyring.encrypt("PAYPOINT", b'{"placeholder": true}')
    real_scan = inbound_sensor.inbound.scan
    scans: list[list[str]] = []
    scanned = threading.Condition()

    def scan(*args, **kwargs):
        result = real_scan(*args, **kwargs)
        with scanned:
            scans.append([item.why for item in result[1]])
            scanned.notify_all()
        return result

    def upload():  # the partner's SFTP client: write under .part, rename once complete
        with scanned:
            assert scanned.wait_for(lambda: len(scans) == 1, timeout=5)
        (folder / "late.json.enc.part").write_bytes(data)
        with scanned:
            assert scanned.wait_for(lambda: len(scans) == 2, timeout=5)  # the tick saw the upload under way
        (folder / "late.json.enc.part").rename(folder / "late.json.enc")

    monkeypatch.setattr(inbound_sensor.inbound, "scan", scan)
    partner = threading.Thread(target=upload)
    partner.start()
    context = dg.build_sensor_context(instance=threaded_instance, repository_def=defs.get_repository_def())
    result = nrp_inbound_files_sensor(context)
    partner.join()
    assert [r.tags["cmp/inbound_file"] for r in result.run_requests] == ["inbound/nrp/PAYPOINT/late.json.enc"]
    assert len(scans) == 3, "scanned, woken by the upload under way, woken again by its rename"
    assert scans[1] == ["still being written: an upload in progress (renamed when complete; suffix part)"]
    assert result.dynamic_partitions_requests[0].partition_keys == [result.run_requests[0].partition_key]
    # the next tick, with the cursor this one returned, does not ask for it again
    again = nrp_inbound_files_sensor(dg.build_sensor_context(instance=threaded_instance, cursor=result.cursor))
    assert again.run_requests == []


def test_a_tick_with_a_file_to_take_does_not_wait(platform, threaded_instance, monkeypatch):
    for name in SERVER_THREAD_SETTINGS:
        monkeypatch.setenv(name, str(inbound_sensor.CODE_SERVER_THREADS))
    assert listen_seconds(threaded_instance, SENSORS) == LISTEN_SECONDS  # it could wait; it has no reason to
    platform.drop("ready.json.enc", document([payment("1", "ACC00000001", "1.00")]))
    waits = []
    monkeypatch.setattr(inbound_sensor, "wait_for_upload", lambda *a: waits.append(a) or False)
    result = nrp_inbound_files_sensor(dg.build_sensor_context(instance=threaded_instance,
                                                              repository_def=defs.get_repository_def()))
    assert [r.tags["cmp/inbound_file"] for r in result.run_requests] == ["inbound/nrp/PAYPOINT/ready.json.enc"]
    assert waits == []


def test_the_folder_stamp_moves_on_a_rename_or_a_new_partner_folder_and_never_follows_a_link(tmp_path):
    store = LocalFileStore(base_dir=str(tmp_path / "data"))
    partner = tmp_path / "data" / "inbound" / "nrp" / "PAYPOINT"
    partner.mkdir(parents=True)
    assert store.folder_stamp("inbound/missing") == ()
    before = store.folder_stamp("inbound/nrp")
    assert [entry[0] for entry in before] == ["inbound/nrp", "inbound/nrp/PAYPOINT"]

    (partner / "a.json.enc.part").write_bytes(b"x")
    after_upload = store.folder_stamp("inbound/nrp")
    assert after_upload != before
    with open(partner / "a.json.enc.part", "ab") as growing:  # a file growing changes no folder
        growing.write(b"more")
    assert store.folder_stamp("inbound/nrp") == after_upload
    (partner / "a.json.enc.part").rename(partner / "a.json.enc")
    assert store.folder_stamp("inbound/nrp") != after_upload

    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "data" / "inbound" / "nrp" / "LINKED").symlink_to(outside)
    linked = store.folder_stamp("inbound/nrp")
    assert [entry[0] for entry in linked] == ["inbound/nrp", "inbound/nrp/PAYPOINT"], "a link is not entered"
    (outside / "elsewhere.json.enc").write_bytes(b"x")
    assert store.folder_stamp("inbound/nrp") == linked

    (tmp_path / "data" / "inbound" / "nrp" / "LOCKBOX").mkdir()
    assert [entry[0] for entry in store.folder_stamp("inbound/nrp")] == [
        "inbound/nrp", "inbound/nrp/LOCKBOX", "inbound/nrp/PAYPOINT"]


def test_a_store_that_cannot_stamp_a_folder_is_never_waited_on(monkeypatch):
    class Remote(FileStore):
        pass

    store = Remote()
    sleeps = []
    monkeypatch.setattr(inbound_sensor.time, "sleep", sleeps.append)
    assert store.folder_stamp("inbound/nrp") is None
    assert wait_for_upload(store, "inbound/nrp", store.folder_stamp("inbound/nrp"), LISTEN_SECONDS) is False
    assert sleeps == []


def test_a_feed_folder_with_too_many_partner_folders_is_not_watched(tmp_path):
    store = LocalFileStore(base_dir=str(tmp_path))
    for index in range(file_store_module.FOLDER_STAMP_LIMIT + 1):
        (tmp_path / "inbound" / "nrp" / f"P{index:04d}").mkdir(parents=True)
    assert store.folder_stamp("inbound/nrp") is None


def test_run_pending_never_waits_whatever_the_environment_says(platform, monkeypatch):
    """`cmp-pipelines run-pending` ticks every sensor until none asks for anything: a wait would only add 3.5 s per
    idle feed and tick, even where a shell exports the code server's thread settings and the instance has threads."""
    for name in SERVER_THREAD_SETTINGS:
        monkeypatch.setenv(name, str(inbound_sensor.CODE_SERVER_THREADS))
    home = platform.root / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump({"sensors": {"use_threads": True, "num_workers": SENSORS}}))
    asked = []
    real = inbound_sensor.listen_seconds
    monkeypatch.setattr(inbound_sensor, "listen_seconds", lambda *a: asked.append(real(*a)) or asked[-1])
    platform.drop("pending.json.enc", document([payment("1", "ACC00000001", "1.00")]))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert real(instance, SENSORS) == LISTEN_SECONDS, "outside run-pending this instance's ticks would wait"
        runs = run_pending_sensors(defs, instance, echo=lambda _: None)
    assert [run.success for run in runs if run.sensor == "nrp_inbound_files_sensor"] == [True]
    assert asked and set(asked) == {0.0}, "every inbound tick was asked, and none waited"
