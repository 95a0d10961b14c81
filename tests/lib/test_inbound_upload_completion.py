"""Issue 18 item 7: a file is taken only when its upload is complete: stable size and change time across two
observations `settle_seconds` apart, or the partner's rename convention (upload as .part, then rename)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import dagster as dg
import pytest

from cmp_pipelines.core.config import ConfigError, load_partners
from cmp_pipelines.core.inbound import scan
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.nrp.defs import nrp_inbound_files_sensor
from cmp_pipelines.lib.resources.file_store import LocalFileStore
from tests.support.platform import document, payment

SECOND = 1_000_000_000


def partners(settle: int = 5):
    configured = load_partners(PROJECT_ROOT / "config")
    configured["PAYPOINT"] = dataclasses.replace(configured["PAYPOINT"], upload_completion="settle",
                                                 settle_seconds=settle)
    return configured


def upload(platform, name: str, data: bytes, partner: str = "PAYPOINT") -> str:
    """Write as a partner's SFTP client does: in place, under the final name (no atomic rename)."""
    path = platform.root / "inbound" / "nrp" / partner / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        handle.write(data)
    return str(path)


def test_a_growing_file_is_not_taken_until_size_and_time_settle_then_taken_once(platform):
    config = partners(settle=5)
    half = platform.keyring.encrypt("PAYPOINT", json.dumps(document([payment("1", "ACC00000001", "1.00")])).encode())
    upload(platform, "growing.json.enc", half[:100])
    t0 = time.time_ns()
    pending, skipped, cursor = scan(platform.files, "nrp", None, now_ns=t0, partners=config)
    assert pending == [] and [s.report for s in skipped] == [False]
    assert skipped[0].why == ("still being written: changed within the last 5 s; taken once its size and time "
                              "stay the same for 5 s")
    assert json.loads(cursor)["changed_ns"] == 0, "the mark does not pass a file not yet taken"

    upload(platform, "growing.json.enc", half[100:])  # the size changes between ticks
    t1 = time.time_ns()
    pending, _, cursor = scan(platform.files, "nrp", cursor, now_ns=t1 + 2 * SECOND, partners=config)
    assert pending == [], "changed since the last observation: not taken"

    [taken], _, cursor = scan(platform.files, "nrp", cursor, now_ns=t1 + 6 * SECOND, partners=config)
    assert taken.file_name == "growing.json.enc"
    assert platform.files.read_bytes(taken.path) == half
    assert scan(platform.files, "nrp", cursor, now_ns=t1 + 7 * SECOND, partners=config)[0] == [], "taken once"


def test_two_observations_settle_a_file_whose_clock_is_ahead_of_ours(platform):
    """A file server's clock may run ahead: the cursor's own observations still settle the file."""
    config = partners(settle=5)
    path = upload(platform, "skewed.json.enc", b"x" * 10)
    ahead = time.time_ns() + 3600 * SECOND
    os.utime(path, ns=(ahead, ahead))
    t0 = time.time_ns()
    pending, _, cursor = scan(platform.files, "nrp", None, now_ns=t0, partners=config)
    assert pending == []
    assert scan(platform.files, "nrp", cursor, now_ns=t0 + 3 * SECOND, partners=config)[0] == []
    [taken], _, _ = scan(platform.files, "nrp", cursor, now_ns=t0 + 5 * SECOND, partners=config)
    assert taken.file_name == "skewed.json.enc"


def test_a_file_taken_while_an_older_one_settles_is_not_requested_again(platform):
    config = partners(settle=5)
    upload(platform, "slow.json.enc", b"slow upload")
    platform.drop("quick.json.enc", document([payment("1", "ACC00000001", "1.00")], sender="LOCKBOX"),
                  partner="LOCKBOX")  # LOCKBOX renames finished uploads: complete at once
    t0 = time.time_ns()
    [quick], _, cursor = scan(platform.files, "nrp", None, now_ns=t0, partners=config)
    assert quick.partner == "LOCKBOX"
    assert scan(platform.files, "nrp", cursor, now_ns=t0 + SECOND, partners=config)[0] == []
    [slow], _, cursor = scan(platform.files, "nrp", cursor, now_ns=t0 + 6 * SECOND, partners=config)
    assert slow.file_name == "slow.json.enc"
    assert scan(platform.files, "nrp", cursor, now_ns=t0 + 7 * SECOND, partners=config)[0] == []
    assert json.loads(cursor)["taken"] == {}, "the cursor forgets what the mark has passed"


def test_a_part_upload_is_taken_only_once_renamed(platform):
    config = load_partners(PROJECT_ROOT / "config")  # PAYPOINT: rename, suffixes .part .tmp .filepart
    for suffix in (".part", ".filepart"):
        upload(platform, f"u{suffix[1]}.json.enc{suffix}", b"half an upload")
    pending, skipped, cursor = scan(platform.files, "nrp", None, partners=config)
    assert pending == []
    assert sorted(s.why for s in skipped) == [
        "still being written: an upload in progress (renamed when complete; suffix filepart)",
        "still being written: an upload in progress (renamed when complete; suffix part)"]
    assert json.loads(cursor)["changed_ns"] == 0, "an upload in progress holds the mark (a rename may keep ctime)"
    folder = platform.root / "inbound" / "nrp" / "PAYPOINT"
    os.rename(folder / "uf.json.enc.filepart", folder / "uf.json.enc")
    [taken], _, cursor = scan(platform.files, "nrp", cursor, partners=config)
    assert taken.file_name == "uf.json.enc", "complete at once under its final name"
    os.rename(folder / "up.json.enc.part", folder / "up.json.enc")
    [taken], _, _ = scan(platform.files, "nrp", cursor, partners=config)
    assert taken.file_name == "up.json.enc"


def test_the_sensor_keeps_its_observations_in_the_cursor(platform, tmp_path, monkeypatch):
    config_dir = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config_dir)
    text = (config_dir / "partners.yaml").read_text()
    text = text.replace("    upload_completion: rename\n    upload_suffixes: [.part, .tmp, .filepart]\n",
                        "    upload_completion: settle\n    settle_seconds: 2\n", 1)
    (config_dir / "partners.yaml").write_text(text)
    monkeypatch.setenv("CMP_CONFIG_DIR", str(config_dir))
    assert load_partners(config_dir)["PAYPOINT"].settle_seconds == 2
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"file_store": LocalFileStore()})
        return nrp_inbound_files_sensor(context)

    upload(platform, "tick.json.enc", b"partial")
    first = tick(None)
    assert first.run_requests == [] and json.loads(first.cursor)["seen"]
    time.sleep(2.1)
    second = tick(first.cursor)
    assert [r.tags["cmp/inbound_file"] for r in second.run_requests] == ["inbound/nrp/PAYPOINT/tick.json.enc"]
    assert tick(second.cursor).run_requests == []


BASE = "partners:\n  - partner_id: PAYPOINT\n    feeds: [nrp]\n"


@pytest.mark.parametrize(("extra", "field", "why"), [
    ("    upload_completion: later\n", "upload_completion", "must be settle or rename, got 'later'"),
    ("    settle_seconds: -1\n", "settle_seconds", "must be between 0 and 3600, got -1"),
    ("    settle_seconds: '5'\n", "settle_seconds", "must be an integer, got '5'"),
    ("    upload_completion: rename\n    settle_seconds: 5\n", "settle_seconds",
     "a partner that renames finished uploads does not wait for them to settle; remove this field"),
    ("    upload_suffixes: [.part]\n", "upload_suffixes",
     "only a partner with upload_completion rename has upload suffixes"),
    ("    upload_completion: rename\n    upload_suffixes: [part]\n", "upload_suffixes",
     "'part' must be a dot and 1-15 of A-Z a-z 0-9 _ ~ -, e.g. .part"),
    ("    upload_completion: rename\n    upload_suffixes: []\n", "upload_suffixes",
     "must name at least one suffix, e.g. [.part]"),
    ("    duplicate_window_days: 401\n", "duplicate_window_days", "must be between 0 and 400, got 401"),
])
def test_upload_completion_and_duplicate_window_are_validated_on_load(tmp_path, extra, field, why):
    (tmp_path / "partners.yaml").write_text(BASE + extra)
    with pytest.raises(ConfigError) as caught:
        load_partners(tmp_path)
    assert (caught.value.entry, caught.value.field, caught.value.why) == ("PAYPOINT", field, why)


def test_defaults(tmp_path):
    (tmp_path / "partners.yaml").write_text(BASE)
    partner = load_partners(tmp_path)["PAYPOINT"]
    assert (partner.upload_completion, partner.settle_seconds, partner.upload_suffixes,
            partner.duplicate_window_days) == ("settle", 5, (".part", ".tmp"), 30)


def test_a_part_file_is_never_taken_even_when_idle_and_an_abandoned_one_stops_holding_the_mark(platform):
    config = partners(settle=5)  # PAYPOINT settles; .part and .tmp are uploads in progress for every partner
    upload(platform, "idle.json.enc.part", b"abandoned")
    later = time.time_ns() + 16 * 60 * SECOND
    pending, skipped, cursor = scan(platform.files, "nrp", None, now_ns=later, partners=config)
    assert pending == [] and [s.report for s in skipped] == [False]
    assert json.loads(cursor)["path"] == "inbound/nrp/PAYPOINT/idle.json.enc.part", "idle 15 minutes: passed"
    assert scan(platform.files, "nrp", cursor, now_ns=later + 3600 * SECOND, partners=config)[0] == [], (
        "an abandoned upload behind the mark is never requested as a retry")


def test_files_taken_beyond_a_held_mark_never_starve_new_ones(platform):
    config = partners(settle=5)
    upload(platform, "held.json.enc", b"still growing")
    for index in range(25):
        platform.files.write_bytes(f"inbound/nrp/LOCKBOX/f{index:02}.json.enc", f"file {index}".encode())
    now = time.time_ns()
    cursor, taken = None, set()
    for tick in range(3):
        pending, _, cursor = scan(platform.files, "nrp", cursor, now_ns=now + tick, partners=config)
        assert not taken & {p.path for p in pending}, "a file is requested once"
        taken |= {p.path for p in pending}
    assert len(taken) == 25 and json.loads(cursor)["changed_ns"] == 0
    platform.files.write_bytes("inbound/nrp/LOCKBOX/new.json.enc", b"new")
    [new], _, _ = scan(platform.files, "nrp", cursor, now_ns=now + 4, partners=config)
    assert new.file_name == "new.json.enc"
