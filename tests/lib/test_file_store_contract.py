"""The FileStore contract, run on both implementations: the local data folder and S3-compatible object storage
(moto's server on loopback). What a flow relies on: whole documents, moves that never overwrite, listings,
refusals of paths that escape the store, and claims that exactly one claimer wins."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from cmp_pipelines.core import inbound
from cmp_pipelines.lib.resources.file_store import LocalFileStore, configured_file_store
from cmp_pipelines.lib.resources.s3_store import S3FileStore


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalFileStore(base_dir=str(tmp_path))
    bucket = request.getfixturevalue("s3_bucket")
    return S3FileStore(url=bucket.url)


def test_write_read_exists_and_list(store, tmp_path):
    local_part = tmp_path / "part.bin"
    local_part.write_bytes(b"-from-a-file-")
    assert store.write_bytes("outbound/acknowledgements/nrp/P/a.ack", b"ack") == "outbound/acknowledgements/nrp/P/a.ack"
    store.write_parts("outbound/ledger/b.json", [b"head", local_part, b"tail"])
    store.write_from("outbound/ledger/c.json", lambda target: target.write_bytes(b"written in place"))
    store.write_bytes("inbound/nrp/P/deep/d.enc", b"d")

    assert store.read_bytes("outbound/ledger/b.json") == b"head-from-a-file-tail"
    assert store.read_bytes("outbound/ledger/c.json") == b"written in place"
    assert store.exists("outbound/acknowledgements/nrp/P/a.ack") and not store.exists("outbound/ledger/none.json")
    listed = store.list_files("outbound")
    assert [(f.path, f.size) for f in listed] == [
        ("outbound/acknowledgements/nrp/P/a.ack", 3), ("outbound/ledger/b.json", 21), ("outbound/ledger/c.json", 16)]
    assert all(f.kind == "file" and f.changed_ns > 0 for f in listed)
    assert [f.path for f in store.list_entries("inbound/nrp")] == ["inbound/nrp/P/deep/d.enc"]
    assert store.list_files("archive") == [] and store.list_files("outbound/led") == []  # a prefix is not a folder


def test_a_failed_write_publishes_nothing(store):
    def half_then_crash(target: Path) -> None:
        target.write_bytes(b"half a document")
        raise OSError("injected: disk full while writing")

    with pytest.raises(OSError, match="injected"):
        store.write_from("outbound/ledger/x.json", half_then_crash)
    assert not store.exists("outbound/ledger/x.json")
    assert store.list_entries("outbound") == []


def test_a_staged_document_is_invisible_until_published_and_gone_either_way(store):
    """`write_from` in two halves (core/files/prepared.py renders a document before it may be published)."""
    from cmp_pipelines.core.delivery import file_digest
    from cmp_pipelines.core.files.prepared import prepare, take

    staged = store.stage("outbound/ledger/s.json", lambda target: target.write_bytes(b"staged, not yet true"))
    assert staged.read_bytes() == b"staged, not yet true"
    assert not store.exists("outbound/ledger/s.json") and store.list_files("outbound") == []
    assert store.publish_staged("outbound/ledger/s.json", staged) == "outbound/ledger/s.json"
    assert store.read_bytes("outbound/ledger/s.json") == b"staged, not yet true" and not staged.exists()

    kept = {"doc:a": prepare(store, "outbound/ledger/a.json", lambda t: t.write_bytes(b"rendered from 1"), 1),
            "doc:b": prepare(store, "outbound/ledger/b.json", lambda t: t.write_bytes(b"rendered from 1"), 1)}
    assert [f.path for f in store.list_files("outbound")] == ["outbound/ledger/s.json"]
    stale = kept["doc:b"].staged
    assert take(kept, "doc:b", 2) is None and not stale.exists(), "rendered from something else: discarded"
    ready = take(kept, "doc:a", 1)
    assert kept == {} and take(kept, "doc:a", 1) is None
    assert ready.digest == file_digest(ready.staged) == (hashlib.sha256(b"rendered from 1").hexdigest(), 15)
    assert ready.publish() == "outbound/ledger/a.json"
    assert store.read_bytes("outbound/ledger/a.json") == b"rendered from 1"
    assert [f.path for f in store.list_files("outbound")] == ["outbound/ledger/a.json", "outbound/ledger/s.json"]
    assert not ready.staged.exists()


def test_archive_and_quarantine_moves_never_overwrite(store):
    store.write_bytes("inbound/nrp/PAYPOINT/a.enc", b"first")
    store.write_bytes("quarantine/nrp/PAYPOINT/a.enc", b"earlier")
    moved = store.move("inbound/nrp/PAYPOINT/a.enc", "quarantine/nrp/PAYPOINT/a.enc")
    assert moved == "quarantine/nrp/PAYPOINT/a.enc.1"
    assert store.read_bytes("quarantine/nrp/PAYPOINT/a.enc") == b"earlier"
    assert store.read_bytes(moved) == b"first"
    store.write_bytes(f"{moved}.error.json", b'{"error_code": "NOT_ENCRYPTED"}')

    store.write_bytes("inbound/nrp/PAYPOINT/b.enc", b"second")
    assert store.move("inbound/nrp/PAYPOINT/b.enc", "archive/nrp/PAYPOINT/2026-12-02/b.enc") == \
        "archive/nrp/PAYPOINT/2026-12-02/b.enc"
    assert store.list_files("inbound") == []
    assert [f.path for f in store.list_files("quarantine")] == [
        "quarantine/nrp/PAYPOINT/a.enc", "quarantine/nrp/PAYPOINT/a.enc.1",
        "quarantine/nrp/PAYPOINT/a.enc.1.error.json"]
    assert store.read_bytes("archive/nrp/PAYPOINT/2026-12-02/b.enc") == b"second"
    with pytest.raises(FileNotFoundError):  # moved away already: as a second mover finds it
        store.move("inbound/nrp/PAYPOINT/b.enc", "archive/nrp/PAYPOINT/2026-12-02/b.enc")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("inbound/nrp/PAYPOINT/none.enc")


@pytest.mark.parametrize("escape", ["../outside", "inbound/../../x", "/etc/passwd", "inbound//x", ""])
def test_paths_that_escape_the_store_are_refused(store, escape):
    for attempt in (lambda: store.read_bytes(escape), lambda: store.write_bytes(escape, b"x"),
                    lambda: store.exists(escape), lambda: store.move("inbound/a", escape),
                    lambda: store.claim(escape, "me")):
        with pytest.raises(ValueError, match="escapes the file store"):
            attempt()


def test_exactly_one_of_eight_racing_claimers_wins(store):
    start, results = threading.Barrier(8), {}

    def claimer(index: int) -> None:
        start.wait()
        results[index] = store.claim("claims/nrp/run-key-digest", f"worker-{index}")

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, holder in results.items() if holder == f"worker-{i}"]
    assert len(winners) == 1, results
    assert store.read_bytes("claims/nrp/run-key-digest") == f"worker-{winners[0]}".encode()
    assert store.claim("claims/nrp/run-key-digest", f"worker-{winners[0]}") == f"worker-{winners[0]}"


# ---- object storage only ------------------------------------------------------------------------------------


def test_a_published_object_is_never_overwritten(s3_bucket):
    store = S3FileStore(url=s3_bucket.url)
    store.write_bytes("outbound/acknowledgements/nrp/P/a.ack", b"the first, maybe fetched already")
    assert store.write_bytes("outbound/acknowledgements/nrp/P/a.ack", b"second") == \
        "outbound/acknowledgements/nrp/P/a.ack"
    assert store.read_bytes("outbound/acknowledgements/nrp/P/a.ack") == b"the first, maybe fetched already"
    assert s3_bucket.keys() == ["cmp/outbound/acknowledgements/nrp/P/a.ack"]


def test_a_big_document_is_one_multipart_upload_completed_conditionally(s3_bucket, tmp_path):
    store = S3FileStore(url=s3_bucket.url, part_bytes=5 << 20)  # S3's smallest part
    big = tmp_path / "postings.json"
    big.write_bytes(bytes(range(256)) * (11 << 12))  # 11 MiB: three parts
    store.write_parts("outbound/ledger/big.json", [big])
    assert store.read_bytes("outbound/ledger/big.json") == big.read_bytes()
    head = s3_bucket.client().head_object(Bucket=s3_bucket.name, Key="cmp/outbound/ledger/big.json")
    assert head["ETag"].strip('"').endswith("-3"), "uploaded in three parts"

    store.write_parts("outbound/ledger/big.json", [b"x" * (6 << 20)])  # a second multipart upload of that key
    assert store.read_bytes("outbound/ledger/big.json") == big.read_bytes()
    uploads = s3_bucket.client().list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", [])
    assert uploads == [], "the refused upload was aborted, not left behind"
    assert store.move("outbound/ledger/big.json", "archive/big.json") == "archive/big.json"
    assert store.read_bytes("archive/big.json") == big.read_bytes() and not store.exists("outbound/ledger/big.json")


def test_folder_markers_are_left_out_and_keys_no_path_can_name_are_refused(s3_bucket):
    store = S3FileStore(url=s3_bucket.url)
    client = s3_bucket.client()
    client.put_object(Bucket=s3_bucket.name, Key="cmp/inbound/nrp/PAYPOINT/", Body=b"")  # a console's "folder"
    client.put_object(Bucket=s3_bucket.name, Key="cmp/inbound/nrp/PAYPOINT/..", Body=b"planted")
    store.write_bytes("inbound/nrp/PAYPOINT/a.enc", b"a")
    entries = store.list_entries("inbound/nrp")
    assert [(e.path, e.kind) for e in entries] == [
        ("inbound/nrp/PAYPOINT/..", "key no path can name (`..`, `.` or an empty segment)"),
        ("inbound/nrp/PAYPOINT/a.enc", "file")]
    assert [f.path for f in store.list_files("inbound/nrp")] == ["inbound/nrp/PAYPOINT/a.enc"]
    pending, skipped, _ = inbound.scan(store, "nrp", None)
    assert [p.path for p in pending] == ["inbound/nrp/PAYPOINT/a.enc"]
    assert [(s.path, s.report) for s in skipped] == [("inbound/nrp/PAYPOINT/..", True)]
    assert "never read, followed or moved; left where it is" in skipped[0].why
    assert s3_bucket.keys("cmp/inbound/nrp/PAYPOINT/") == [
        "cmp/inbound/nrp/PAYPOINT/", "cmp/inbound/nrp/PAYPOINT/..", "cmp/inbound/nrp/PAYPOINT/a.enc"]


def test_errors_name_the_operation_and_path_never_the_credentials(s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "cmp-other-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-never-shown")
    missing = S3FileStore(url="s3://no-such-bucket-cmp/x")
    with pytest.raises(OSError) as caught:
        missing.write_bytes("outbound/a.json", b"x")
    message = str(caught.value)
    assert message == "[Errno 5] object store write of outbound/a.json failed: NoSuchBucket"
    assert "s3cr3t" not in message and "cmp-other-key-id" not in message and "127.0.0.1" not in message


def test_the_setting_chooses_the_store(s3_bucket, monkeypatch):
    monkeypatch.delenv("CMP_FILES_URL", raising=False)
    assert isinstance(configured_file_store(), LocalFileStore)
    monkeypatch.setenv("CMP_FILES_URL", s3_bucket.url)
    chosen = configured_file_store()
    assert isinstance(chosen, S3FileStore) and chosen.url == s3_bucket.url
    for bad in ("s3://", "file:///data", "s3://key:secret@bucket/prefix"):
        monkeypatch.setenv("CMP_FILES_URL", bad)
        with pytest.raises(ValueError, match=r"CMP_FILES_URL must be s3://bucket/prefix") as caught:
            configured_file_store()
        assert "secret" not in str(caught.value)


def test_the_sensor_scan_keeps_files_of_the_same_second_in_its_cursor(s3_bucket):
    """LastModified has whole seconds: a file listed after the mark passed another of the same second, under a
    name sorting before it, must still be found. Files newer than the lag are remembered, not passed."""
    store = S3FileStore(url=s3_bucket.url)
    store.write_bytes("inbound/nrp/PAYPOINT/b.json.enc", b"b")
    first, _, cursor = inbound.scan(store, "nrp", None)
    assert [p.file_name for p in first] == ["b.json.enc"]
    assert inbound.read_cursor(cursor) == (0, ""), "the mark stays behind a file newer than the lag"
    assert list(json.loads(cursor)["taken"]) == ["inbound/nrp/PAYPOINT/b.json.enc"], "it is remembered instead"
    store.write_bytes("inbound/nrp/PAYPOINT/a.json.enc", b"a")
    listed = {f.path: f.changed_ns for f in store.list_files("inbound/nrp")}
    later = max(listed.values()) + 1  # the moment both exist, within the lag
    second, _, cursor = inbound.scan(store, "nrp", cursor, now_ns=later)
    assert [p.file_name for p in second] == ["a.json.enc"], "found although its second was not after the mark's"
    assert inbound.scan(store, "nrp", cursor, now_ns=later)[0] == [], "and asked for once"
    settled = later + store.listing_lag_ns
    none, _, cursor = inbound.scan(store, "nrp", cursor, now_ns=settled)
    assert none == [] and inbound.read_cursor(cursor) == max((c, p) for p, c in listed.items())


def test_a_read_that_breaks_part_way_is_retried_later_not_a_failed_tick(s3_bucket, monkeypatch):
    """The sensor hashes an inbound object as a stream. A connection dropped mid-object is botocore's
    ResponseStreamingError (not an OSError): the store raises its own OSError for it, so the scan reports the file
    as unreadable for now and takes it on a later tick, instead of failing the tick for every file of the feed."""
    from botocore.exceptions import ResponseStreamingError

    store = S3FileStore(url=s3_bucket.url)
    store.write_bytes("inbound/nrp/PAYPOINT/a.json.enc", b"x" * 3_000_000)
    original = S3FileStore._client
    real_client = original.__get__(store)

    class Dropping:
        def __init__(self, body):
            self.body, self.reads = body, 0

        def read(self, amt=None):
            self.reads += 1
            if self.reads > 1:  # the first megabyte arrives, then the connection drops
                raise ResponseStreamingError(error="Connection broken: IncompleteRead(1048576 bytes read)")
            return self.body.read(amt)

        def close(self):
            self.body.close()

    class Client:
        def __getattr__(self, name):
            return getattr(real_client(), name)

        def get_object(self, **kwargs):
            answer = real_client().get_object(**kwargs)
            return {**answer, "Body": Dropping(answer["Body"])}

    monkeypatch.setattr(S3FileStore, "_client", lambda self: Client())
    failed = r"object store read of inbound/nrp/PAYPOINT/a.json.enc failed"
    with pytest.raises(OSError, match=failed), store.open_read("inbound/nrp/PAYPOINT/a.json.enc") as handle:
        while handle.read(1 << 20):
            pass
    pending, skipped, cursor = inbound.scan(store, "nrp", None)
    assert pending == []
    assert [(s.path, s.why.split(" (")[0]) for s in skipped] == [
        ("inbound/nrp/PAYPOINT/a.json.enc", "could not be read")]
    monkeypatch.setattr(S3FileStore, "_client", original)  # the connection is back: asked for again, as any
    later = time.time_ns() + (inbound.STALE_AFTER_SECONDS + 1) * 1_000_000_000  # unreadable file: an hour later
    first, _, cursor = inbound.scan(store, "nrp", cursor, now_ns=later)  # the mark passes it (S3's listing lag)
    again = first or inbound.scan(store, "nrp", cursor, now_ns=later)[0]
    assert [p.path for p in again] == ["inbound/nrp/PAYPOINT/a.json.enc"]


def test_a_conflicting_concurrent_write_is_tried_again(s3_bucket):
    """S3 answers 409 ConditionalRequestConflict when another conditional write of the key is in flight and asks
    the caller to retry (moto never does, so botocore's Stubber plays the server's answers here)."""
    from botocore.stub import Stubber

    store = S3FileStore(url=s3_bucket.url)
    with Stubber(store._client()) as server:
        server.add_client_error("put_object", "ConditionalRequestConflict", http_status_code=409)
        server.add_response("put_object", {"ETag": '"x"'})
        assert store.claim("claims/nrp/k", "worker-1") == "worker-1"
        for _ in range(5):
            server.add_client_error("put_object", "ConditionalRequestConflict", http_status_code=409)
        with pytest.raises(OSError, match=r"object store write of claims/nrp/j failed: ConditionalRequestConflict"):
            store.claim("claims/nrp/j", "worker-1")
        server.assert_no_pending_responses()


def test_an_upload_that_fails_part_way_leaves_no_object_and_no_parts(s3_bucket, tmp_path):
    """The connection drops while the second of three parts is sent: nothing appears under the key (S3 shows a
    multipart object only once completed) and the upload is aborted, so no part is kept or billed."""
    store = S3FileStore(url=s3_bucket.url, part_bytes=5 << 20)
    client, sent = store._client(), []

    def drop_the_second_part(params, **_):
        sent.append(params["PartNumber"])
        if params["PartNumber"] == 2:
            raise ConnectionResetError("injected: connection reset while sending part 2")

    client.meta.events.register("provide-client-params.s3.UploadPart", drop_the_second_part)
    try:
        with pytest.raises(OSError, match="object store write of outbound/ledger/big.json failed"):
            store.write_from("outbound/ledger/big.json", lambda target: target.write_bytes(b"p" * (11 << 20)))
    finally:
        client.meta.events.unregister("provide-client-params.s3.UploadPart", drop_the_second_part)
    assert sent == [1, 2]
    assert not store.exists("outbound/ledger/big.json") and s3_bucket.keys() == []
    assert s3_bucket.client().list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", []) == []


@pytest.mark.parametrize("swap", ["symlink", "hard link", "fifo", "another file", "symlink during the rename"])
def test_a_staged_document_swapped_meanwhile_is_refused_at_publish_and_nothing_it_names_moves(
        tmp_path, monkeypatch, swap):
    """A document can stay staged between two steps in a folder others can write to (SFTP): what is published is
    only the file `stage` wrote, never a link put in its place (to the database, a key), a FIFO or another file,
    even one swapped in between the check and the rename."""
    import os

    from cmp_pipelines.lib.resources import file_store

    store = LocalFileStore(base_dir=str(tmp_path / "data"))
    secret = tmp_path / "data" / "cmp.duckdb"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"the store itself")
    store.write_bytes("outbound/ledger/p.json", b"yesterday's, published")
    staged = store.stage("outbound/ledger/p.json", lambda target: target.write_bytes(b"rendered"))

    def replace(make) -> None:
        staged.unlink()
        make()

    swaps = {"symlink": lambda: staged.symlink_to(secret), "hard link": lambda: os.link(secret, staged),
             "fifo": lambda: os.mkfifo(staged), "another file": lambda: staged.write_bytes(b"someone else's")}
    if swap == "symlink during the rename":  # after the check, just before the rename
        real_rename = os.rename

        def racing(source, destination, **kwargs):
            replace(lambda: staged.symlink_to(secret))
            return real_rename(source, destination, **kwargs)

        monkeypatch.setattr(file_store.os, "rename", racing)
        expected = r"was swapped as it was renamed, for a symlink"
    else:
        replace(swaps[swap])
        expected = {"symlink": "was replaced by a symlink", "fifo": "was replaced by a fifo"}.get(
            swap, "was replaced by another file")

    with pytest.raises(OSError, match=r"outbound/ledger/p\.json was not published: the file staged for it "
                                      + expected + "; refused"):
        store.publish_staged("outbound/ledger/p.json", staged)
    monkeypatch.undo()
    assert secret.read_bytes() == b"the store itself" and secret.stat().st_nlink == 1
    assert not os.path.lexists(staged), "the swapped entry is removed, never what it names"
    if swap == "symlink during the rename":  # the swapped entry had replaced the published one: removed too
        assert not os.path.lexists(tmp_path / "data" / "outbound/ledger/p.json")
    else:
        assert store.read_bytes("outbound/ledger/p.json") == b"yesterday's, published"
    assert all(e.kind == "file" for e in store.list_entries("outbound"))

    staged = store.stage("outbound/ledger/p.json", lambda target: target.write_bytes(b"today's"))
    assert store.publish_staged("outbound/ledger/p.json", staged) == "outbound/ledger/p.json"
    assert store.read_bytes("outbound/ledger/p.json") == b"today's"
    assert [f.path for f in store.list_entries("outbound")] == ["outbound/ledger/p.json"]
