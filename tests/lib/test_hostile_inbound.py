"""Hostile inbound folders (issue 18 items 4 and 5): links, FIFOs, sockets, names the store cannot keep.

Partners upload by SFTP, which can create symbolic links. Nothing in an inbound folder is followed, read
through or moved unless it is a regular file; a refused entry is reported once and left where it is, and it
never blocks another file. Every inbound file ends in exactly one of inbound, archive or quarantine.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from cmp_pipelines.core.files.store import NotARegularFile
from cmp_pipelines.core.inbound import MAX_NAME_BYTES, scan
from cmp_pipelines.definitions import defs
from cmp_pipelines.lib.headless import run_pending_sensors
from cmp_pipelines.lib.resources.file_store import LocalFileStore
from tests.support.dagster import flow_runs
from tests.support.platform import document, payment

GOOD = [payment("1", "ACC00000001", "10.00", "INV000000011"), payment("2", "ACC00000002", "5.50")]


def run_pending(instance):
    return flow_runs(run_pending_sensors(defs, instance, echo=lambda _: None))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refusals(platform) -> list[tuple[str, str, str]]:
    return platform.query("SELECT job, source_ref, detail FROM job_errors WHERE category = 'INBOUND_REFUSED' "
                          "ORDER BY source_ref")


def make_fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


def make_socket(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    return server


def test_links_fifos_and_sockets_are_refused_reported_and_left_while_good_files_flow(platform, instance):
    root = platform.root
    database, key_file = platform.database, platform.keyring.key_file("PAYPOINT")
    key_before, charge = sha(key_file), platform.balance("ACC00000001")
    inbound = root / "inbound" / "nrp" / "PAYPOINT"
    inbound.mkdir(parents=True)
    (inbound / "db.json.enc").symlink_to(database)
    (inbound / "keys.json.enc").symlink_to(key_file)
    (inbound / "passwd.json.enc").symlink_to("/etc/passwd")
    (inbound / "dangling.json.enc").symlink_to(root / "nowhere")
    make_fifo(inbound / "pipe.json.enc")
    server = make_socket(inbound / "sock.json.enc")
    (root / "inbound" / "nrp" / "LOCKBOX").symlink_to(root / "keys")  # a partner folder that is a link
    card_folder = root / "inbound" / "card_rejections" / "CARDPAY"
    card_folder.mkdir(parents=True)
    (card_folder / "passwd.json.enc").symlink_to("/etc/passwd")  # another feed's bad entry
    platform.drop("good.json.enc", document(GOOD))

    try:
        outcomes = run_pending(instance)
    finally:
        server.close()

    good = [o for o in outcomes if o.partition_key]
    assert [(o.partition_key.split("@")[0], o.success) for o in good] == [("PAYPOINT/good.json.enc", True)]
    assert all(o.success for o in outcomes), [o.error for o in outcomes]
    assert platform.balance("ACC00000001") == charge - 1000, "the good file beside the links was posted"
    assert database.is_file() and not database.is_symlink(), "the database never moves"
    assert sha(key_file) == key_before, "the key file is untouched"
    for name in ("db", "keys", "passwd", "dangling"):
        assert (inbound / f"{name}.json.enc").is_symlink(), f"{name}: the link stays in inbound"
    assert (inbound / "pipe.json.enc").exists() and (inbound / "sock.json.enc").is_socket()
    assert (root / "inbound" / "nrp" / "LOCKBOX").is_symlink() and (card_folder / "passwd.json.enc").is_symlink()
    assert not (root / "quarantine").exists() or not list((root / "quarantine").rglob("*")), "nothing quarantined"
    assert Path("/etc/passwd").is_file()

    reported = refusals(platform)
    assert sorted(ref for _, ref, _ in reported) == sorted([
        "inbound/card_rejections/CARDPAY/passwd.json.enc", "inbound/nrp/LOCKBOX",
        *(f"inbound/nrp/PAYPOINT/{n}.json.enc" for n in ("dangling", "db", "keys", "passwd", "pipe", "sock")),
    ])
    why = {ref: detail for _, ref, detail in reported}
    assert why["inbound/nrp/PAYPOINT/db.json.enc"] == (
        "a symbolic link, not a regular file: never read, followed or moved; left where it is")
    assert why["inbound/nrp/PAYPOINT/pipe.json.enc"].startswith("a FIFO (named pipe), not a regular file")
    assert why["inbound/nrp/PAYPOINT/sock.json.enc"].startswith("a socket, not a regular file")
    assert {job for job, _, _ in reported} == {"nrp", "card_rejections"}
    alerts = list((root / "outbound" / "alerts").glob("*.eml"))
    assert any("Inbound Entries Refused" in a.read_text() for a in alerts), "the alert probe e-mailed"
    tripped = platform.query("SELECT value, tripped FROM probe_results WHERE probe_id = 'inbound_entries_refused' "
                             "ORDER BY evaluated_at DESC LIMIT 1")
    assert tripped == [(8, True)]

    again = run_pending(instance)
    assert again == [] and len(refusals(platform)) == 8, "each entry is reported once"


def test_run_pending_exits_0_and_processes_a_good_file_beside_a_link_to_etc_passwd(platform, monkeypatch):
    folder = platform.root / "inbound" / "card_rejections" / "CARDPAY"
    folder.mkdir(parents=True)
    (folder / "passwd.json.enc").symlink_to("/etc/passwd")
    platform.drop("good.json.enc", document(GOOD))
    from cmp_pipelines.cli import main

    result = CliRunner().invoke(main, ["run-pending"])
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output
    assert platform.payment_postings() == 2
    assert (folder / "passwd.json.enc").is_symlink()


def test_the_store_never_reads_follows_or_moves_a_link(platform):
    files, root = platform.files, platform.root
    secret = root / "keys" / "PAYPOINT.keys"
    folder = root / "inbound" / "nrp" / "PAYPOINT"
    folder.mkdir(parents=True)
    (folder / "k.enc").symlink_to(secret)
    before = sha(secret)
    with pytest.raises(NotARegularFile, match=r"inbound/nrp/PAYPOINT/k.enc is a symbolic link, not a regular file"):
        files.read_bytes("inbound/nrp/PAYPOINT/k.enc")
    with pytest.raises(NotARegularFile):
        files.exists("inbound/nrp/PAYPOINT/k.enc")
    with pytest.raises(NotARegularFile):
        files.move("inbound/nrp/PAYPOINT/k.enc", "quarantine/nrp/PAYPOINT/k.enc")
    assert (folder / "k.enc").is_symlink() and sha(secret) == before
    assert not (root / "quarantine" / "nrp" / "PAYPOINT" / "k.enc").exists()

    (root / "inbound" / "nrp" / "LINKED").symlink_to(root / "keys")  # a folder link inside the data dir
    with pytest.raises(NotARegularFile, match="inbound/nrp/LINKED is a symbolic link"):
        files.read_bytes("inbound/nrp/LINKED/PAYPOINT.keys")
    with pytest.raises(NotARegularFile):
        files.move("inbound/nrp/LINKED/PAYPOINT.keys", "quarantine/nrp/LINKED/PAYPOINT.keys")
    assert sha(secret) == before
    with pytest.raises(ValueError, match="passes through a symbolic link"):
        files.write_bytes("inbound/nrp/LINKED/planted", b"x")
    for escape in ("../outside", "inbound/../../x", "/etc/passwd", "inbound//x"):
        with pytest.raises(ValueError, match="escapes the file store"):
            files.read_bytes(escape)

    make_fifo(folder / "pipe.enc")
    with pytest.raises(NotARegularFile, match="is a FIFO"):  # and it does not block waiting for a writer
        files.read_bytes("inbound/nrp/PAYPOINT/pipe.enc")


def test_a_link_swapped_in_after_the_check_is_refused_by_the_descriptor(platform, monkeypatch):
    """O_NOFOLLOW and fstat on the opened descriptor close the race between the check and the read."""
    files = platform.files
    platform.drop("swap.json.enc", document(GOOD))
    target = platform.root / "inbound" / "nrp" / "PAYPOINT" / "swap.json.enc"
    target.unlink()
    target.symlink_to(platform.database)
    monkeypatch.setattr(LocalFileStore, "_entry", lambda self, fd, name, path: None)  # the check saw a file
    with pytest.raises(NotARegularFile, match="is a symbolic link"):
        files.read_bytes("inbound/nrp/PAYPOINT/swap.json.enc")


def test_a_file_swapped_for_a_link_to_the_database_after_the_scan_fails_its_run_and_moves_nothing(platform):
    key = platform.drop("swap.json.enc", b"not encrypted", raw=True)
    target = platform.root / "inbound" / "nrp" / "PAYPOINT" / "swap.json.enc"
    target.unlink()
    target.symlink_to(platform.database)
    with pytest.raises(NotARegularFile, match="swap.json.enc is a symbolic link"):
        platform.process(key)
    assert target.is_symlink() and platform.database.is_file() and not platform.database.is_symlink()
    assert not (platform.root / "quarantine").exists()


def test_moves_never_overwrite_and_move_the_entry_itself(platform):
    files = platform.files
    files.write_bytes("inbound/nrp/PAYPOINT/a.enc", b"first")
    files.write_bytes("quarantine/nrp/PAYPOINT/a.enc", b"earlier")
    moved = files.move("inbound/nrp/PAYPOINT/a.enc", "quarantine/nrp/PAYPOINT/a.enc")
    assert moved == "quarantine/nrp/PAYPOINT/a.enc.1"
    assert files.read_bytes("quarantine/nrp/PAYPOINT/a.enc") == b"earlier"
    assert files.read_bytes("quarantine/nrp/PAYPOINT/a.enc.1") == b"first"


# ---- item 5: names the store cannot keep -------------------------------------------------------------------


def places(platform, content: bytes) -> list[str]:
    """Every regular file under inbound, archive and quarantine holding exactly `content`."""
    found = []
    for area in ("inbound", "archive", "quarantine"):
        base = platform.root / area
        if base.exists():
            found += [str(p.relative_to(platform.root)) for p in base.rglob("*")
                      if p.is_file() and not p.is_symlink() and p.read_bytes() == content]
    return found


def write_raw(platform, relative: bytes, data: bytes) -> None:
    path = os.path.join(os.fsencode(platform.root), relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


LONG = "L" * (240 - len(".json.enc")) + ".json.enc"
AT_LIMIT = "M" * (MAX_NAME_BYTES - len(".json.enc")) + ".json.enc"


def cases(platform) -> dict[str, tuple[bytes, str, str]]:
    """label -> (the file's bytes, where it must end (inbound/archive/quarantine), its name on disk)."""
    def good(file_id: str) -> bytes:
        return platform.keyring.encrypt("PAYPOINT", orjson.dumps(document(GOOD, file_id=file_id)))

    first = good("F-GOOD")
    return {
        "a good file": (first, "archive", "good.json.enc"),
        "240-character name": (good("F-LONG"), "inbound", LONG),
        "200-byte name, good": (good("F-LIMIT"), "archive", AT_LIMIT),
        "200-byte name, not encrypted": (b"plain text", "quarantine", "Q" + AT_LIMIT[1:]),
        "multi-byte name over the limit": (good("F-UTF"), "inbound", "é" * 101 + ".enc"),
        "not valid UTF-8": (good("F-BYTES"), "inbound", "<bytes>"),
        "control character": (good("F-CTRL"), "inbound", "bad\tname.json.enc"),
        "card number in the name": (good("F-PAN"), "inbound", "4111111111111111.json.enc"),
        "not encrypted": (b"{}", "quarantine", "plain.json.enc"),
        "wrong partner's key": (platform.keyring.encrypt("LOCKBOX", b"{}"), "quarantine", "wrongkey.json.enc"),
        "same content again": (first, "quarantine", "good-again.json.enc"),
    }


def test_every_inbound_file_ends_in_exactly_one_place_and_long_names_are_refused_and_kept(platform, instance):
    table = cases(platform)
    for label, (data, _, name) in table.items():
        if name == "<bytes>":
            write_raw(platform, b"inbound/nrp/PAYPOINT/\xff\xfe-payments.json.enc", data)
        elif label == "same content again":
            continue
        else:
            platform.files.write_bytes(f"inbound/nrp/PAYPOINT/{name}", data)
    run_pending(instance)
    data, _, name = table["same content again"]
    platform.files.write_bytes(f"inbound/nrp/PAYPOINT/{name}", data)
    run_pending(instance)

    for label, (data, where, _) in table.items():
        found = places(platform, data)
        if label in ("a good file", "same content again"):
            assert sorted(p.split("/")[0] for p in found) == ["archive", "quarantine"], label
            continue
        assert len(found) == 1 and found[0].startswith(where + "/"), (label, found)

    reasons = {ref: detail for _, ref, detail in refusals(platform)}
    assert reasons[f"inbound/nrp/PAYPOINT/{LONG}"] == (
        f"the file name is 240 bytes long; at most {MAX_NAME_BYTES} are taken (the platform adds suffixes such as "
        ".error.json to it); rename it to have it processed")
    assert reasons["inbound/nrp/PAYPOINT/\\xff\\xfe-payments.json.enc"] == (
        "the name is not valid UTF-8; rename it to have it processed")
    assert "inbound/nrp/PAYPOINT/bad\\tname.json.enc" in reasons
    assert not any("4111111111111111" in ref for ref in reasons), "a card number in a name is masked"
    assert len(reasons) == 5
    quarantined = platform.root / "quarantine" / "nrp" / "PAYPOINT"
    report = orjson.loads((quarantined / ("Q" + AT_LIMIT[1:] + ".error.json")).read_bytes())
    assert report["file"] == "Q" + AT_LIMIT[1:] and report["error_code"] == "NOT_ENCRYPTED"


class ReportWriteFails(LocalFileStore):
    """A disk that refuses the quarantine report (full, or a name too long for it)."""

    def write_bytes(self, path: str, data: bytes) -> str:
        if path.endswith(".error.json"):
            raise OSError(36, "File name too long")
        return super().write_bytes(path, data)


def test_a_quarantine_report_that_cannot_be_written_still_records_why_and_loses_nothing(platform):
    key = platform.drop("bad.json.enc", b"not encrypted", raw=True)
    platform.files = ReportWriteFails(base_dir=str(platform.root))
    quarantined = platform.quarantine(key)
    assert quarantined.code == "NOT_ENCRYPTED"
    assert places(platform, b"not encrypted") == ["quarantine/nrp/PAYPOINT/bad.json.enc"]
    [(status, error)] = platform.query("SELECT status, error FROM inbound_files")
    assert status == "QUARANTINED"
    assert "the quarantine report could not be written (File name too long)" in error


def test_scan_never_reads_a_refused_entry(platform):
    folder = platform.root / "inbound" / "nrp" / "PAYPOINT"
    make_fifo(folder / "pipe.json.enc")
    (folder / "db.json.enc").symlink_to(platform.database)
    pending, skipped, cursor = scan(platform.files, "nrp", None)
    assert pending == [] and all(s.report for s in skipped) and len(skipped) == 2
    assert scan(platform.files, "nrp", cursor)[1] == [], "reported once: the mark passed them"


def test_a_file_moved_away_while_the_folder_is_listed_is_skipped_not_the_whole_listing(platform, monkeypatch):
    """A run archives files while the sensor lists: the listing keeps every other file."""
    platform.files.write_bytes("inbound/nrp/PAYPOINT/a.enc", b"a")
    platform.files.write_bytes("inbound/nrp/PAYPOINT/b.enc", b"b")
    real_scandir = os.scandir
    gone = platform.root / "inbound" / "nrp" / "PAYPOINT" / "a.enc"

    class Racing:
        def __init__(self, fd):
            with real_scandir(fd) as entries:
                self.entries = list(entries)
            if any(e.name == "a.enc" for e in self.entries):
                gone.unlink()  # moved away between the directory read and the entry's stat

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(os, "scandir", Racing)
    assert [f.path for f in platform.files.list_files("inbound/nrp")] == ["inbound/nrp/PAYPOINT/b.enc"]
