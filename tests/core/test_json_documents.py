"""The JSON documents DuckDB writes whole (posting files, reports, acknowledgements before encryption)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import duckdb
import orjson
import pytest

from cmp_pipelines.core import settings
from cmp_pipelines.core.db.connection import connect
from cmp_pipelines.core.files.text_copy import copy_lines
from cmp_pipelines.core.ledger import json_document, write_json_document, write_records_file
from cmp_pipelines.core.settings import scratch_dir
from cmp_pipelines.lib.resources.file_store import LocalFileStore

AWKWARD = ["plain", 'quote " and comma , and ],[', "new\nline\ttab", "\x01\x1f control", "café ✓ 💷", "back\\slash",
           None, "", "it's"]


@pytest.fixture
def con(tmp_path):
    with connect(tmp_path / "cmp.duckdb") as connection:
        connection.execute("CREATE TABLE t (n BIGINT, s VARCHAR, amount_minor BIGINT)")
        connection.executemany("INSERT INTO t VALUES (?, ?, ?)",
                               [(n, s, -n * 101) for n, s in enumerate(AWKWARD, start=1)])
        yield connection


QUERY = "SELECT n, s, minor_to_decimal(amount_minor) AS amount FROM t ORDER BY n DESC"


def test_document_holds_every_row_in_query_order_with_exact_strings(con, tmp_path):
    header = {"batch_id": "B'1", "note": "a \"quoted\" header, with ]} inside", "record_count": len(AWKWARD)}
    target = tmp_path / "doc.json"
    write_json_document(con, target, header, "records", QUERY)
    document = orjson.loads(target.read_bytes())
    assert list(document) == ["header", "records"]
    assert document["header"] == header
    assert [r["n"] for r in document["records"]] == list(range(len(AWKWARD), 0, -1))
    assert [r["s"] for r in document["records"]] == list(reversed(AWKWARD))
    assert document["records"][-1] == {"n": 1, "s": "plain", "amount": "-1.01"}


def test_empty_query_gives_an_empty_array(con, tmp_path):
    target = tmp_path / "empty.json"
    write_json_document(con, target, {"record_count": 0}, "postings", "SELECT * FROM t WHERE n < 0")
    assert orjson.loads(target.read_bytes()) == {"header": {"record_count": 0}, "postings": []}


def scratch_documents() -> set[str]:
    return {p.name for p in Path(scratch_dir() or tempfile.gettempdir()).glob("cmp-document-*")}


def test_staged_document_is_the_whole_document_and_leaves_no_file(con):
    before = scratch_documents()
    with json_document(con, {"h": 1}, "rows", QUERY) as staged:
        document = orjson.loads(staged.read_bytes())
    assert document["header"] == {"h": 1}
    assert [r["s"] for r in document["rows"]] == list(reversed(AWKWARD))
    assert scratch_documents() == before


def test_a_million_rows_written_by_four_threads_arrive_whole_and_in_order(con):
    """DuckDB's writer threads put their blocks at computed offsets, out of order: the file is read only after."""
    con.execute("SET threads = 4")
    with json_document(con, {"n": 1_000_000}, "rows", "SELECT i, 'x' || i AS s FROM range(1000000) t(i) "
                       "ORDER BY i") as staged:
        rows = orjson.loads(staged.read_bytes())["rows"]
    assert [r["i"] for r in rows] == list(range(1_000_000))
    assert rows[-1] == {"i": 999_999, "s": "x999999"}


def test_a_failing_copy_or_a_failing_consumer_leaves_no_file(con):
    before = scratch_documents()
    with pytest.raises(duckdb.Error), json_document(con, {}, "rows", "SELECT no_such_column FROM t"):
        pass
    with pytest.raises(OSError, match="disk gone"), json_document(con, {}, "rows", QUERY):
        raise OSError("disk gone while encrypting")
    assert scratch_documents() == before
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(len(AWKWARD),)], "the connection is usable again"


def test_lines_need_both_a_prefix_and_a_suffix(con, tmp_path):
    with pytest.raises(ValueError, match="non-empty prefix and suffix"):
        copy_lines(con, tmp_path / "x.txt", "SELECT 'a'", prefix="", suffix="]", separator=",")


def test_records_file_lands_atomically_and_a_failed_write_leaves_the_old_file(con, tmp_path):
    files = LocalFileStore(base_dir=str(tmp_path / "data"))
    path = write_records_file(con, files, "outbound/x/doc.json", {"v": 1}, "rows", QUERY)
    first = files.read_bytes(path)
    assert orjson.loads(first)["header"] == {"v": 1}
    with pytest.raises(duckdb.Error):
        write_records_file(con, files, "outbound/x/doc.json", {"v": 2}, "rows", "SELECT no_such_column FROM t")
    assert files.read_bytes(path) == first, "the earlier file is untouched"
    assert [f.path for f in files.list_files("outbound")] == ["outbound/x/doc.json"]
    assert not [p for p in Path(tmp_path / "data" / "outbound" / "x").iterdir() if p.name.endswith(".part")]


def test_scratch_is_memory_backed_only_with_room_to_spare(monkeypatch):
    monkeypatch.setattr(settings.os, "statvfs", lambda _: SimpleNamespace(f_bavail=64 << 20 >> 12, f_frsize=4096))
    assert settings._scratch_base() == tempfile.gettempdir(), "a container's 64 MB /dev/shm is not used"
    monkeypatch.setattr(settings.os, "statvfs", lambda _: SimpleNamespace(f_bavail=8 << 30 >> 12, f_frsize=4096))
    monkeypatch.setattr(settings.os, "access", lambda *_: True)
    assert settings._scratch_base() == "/dev/shm"

    def missing(_):
        raise FileNotFoundError("/dev/shm")

    monkeypatch.setattr(settings.os, "statvfs", missing)
    assert settings._scratch_base() == tempfile.gettempdir()


def test_two_writers_of_one_file_never_share_a_part_file_and_the_last_one_wins(con, tmp_path):
    files = LocalFileStore(base_dir=str(tmp_path / "data"))
    seen = []

    def produce(text):
        def write(target):
            seen.append(target.name)
            target.write_text(text)
        return write

    files.write_from("outbound/x.txt", produce("first"))
    files.write_from("outbound/x.txt", produce("second"))
    assert seen[0] != seen[1] and all(name.startswith(".x.txt.") and name.endswith(".part") for name in seen)
    assert files.read_bytes("outbound/x.txt") == b"second"
    assert [p.name for p in (tmp_path / "data" / "outbound").iterdir()] == ["x.txt"]
