"""A writer's connection checkpoints when it closes, not on a big commit in the middle of its work
(core/db/connection.CHECKPOINT_THRESHOLD), and what it committed survives a kill before that close."""

from __future__ import annotations

import multiprocessing
import os
import signal

from cmp_pipelines.core.db.connection import connect

ROWS = 400_000


def _write(con, store) -> list[int]:
    """A bulk insert (DuckDB writes its blocks straight to the file), then two UPDATEs of rows already committed, as
    a rejection file's apply updates accounts and transactions: those go to the log, ~19 MB each. With DuckDB's
    default threshold (16 MiB) the second commit, finding the log past it, checkpoints. The log's size after each."""
    con.execute("CREATE TABLE IF NOT EXISTS bulk (id BIGINT, note VARCHAR)")
    con.execute(f"INSERT INTO bulk SELECT i, 'note ' || i || repeat('x', 40) FROM range({ROWS}) t(i)")
    sizes = []
    for change in ("upper(note)", "note || '!'"):
        con.execute("BEGIN TRANSACTION")
        con.execute(f"UPDATE bulk SET note = {change} WHERE id % 4 <> 0")
        con.execute("COMMIT")
        sizes.append(_wal(store))
    return sizes


def _wal(path) -> int:
    wal = path.with_name(path.name + ".wal")
    return wal.stat().st_size if wal.exists() else 0


def test_a_big_commit_leaves_the_checkpoint_to_the_close(tmp_path):
    store = tmp_path / "cmp.duckdb"
    with connect(store) as con:
        first, second = _write(con, store)
        assert first > 16 * 1024 * 1024 and second > first, f"a commit checkpointed (log {first} then {second} bytes)"
        assert con.execute("SELECT count(*), count(*) FILTER (note LIKE 'NOTE%!') FROM bulk").fetchall() == [
            (ROWS, ROWS * 3 // 4)]
    assert _wal(store) == 0, "the close checkpoints"
    with connect(store, read_only=True) as con:
        assert con.execute("SELECT count(*), count(*) FILTER (note LIKE 'NOTE%!') FROM bulk").fetchall() == [
            (ROWS, ROWS * 3 // 4)]


def _commit_then_die(path: str) -> None:
    from pathlib import Path

    with connect(Path(path)) as con:
        _write(con, Path(path))
        os.kill(os.getpid(), signal.SIGKILL)  # after the commit, before the close's checkpoint


def test_what_was_committed_survives_a_kill_before_the_close(tmp_path):
    store = tmp_path / "cmp.duckdb"
    child = multiprocessing.get_context("spawn").Process(target=_commit_then_die, args=(str(store),))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    assert _wal(store) > 16 * 1024 * 1024  # the committed updates are in the log only
    with connect(store) as con:  # the next writer replays it
        assert con.execute("SELECT count(*), count(*) FILTER (note LIKE 'NOTE%!'), sum(id) FROM bulk").fetchall() == [
            (ROWS, ROWS * 3 // 4, ROWS * (ROWS - 1) // 2)]
