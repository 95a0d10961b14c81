"""Text files written by DuckDB itself: each row of a one-column query as a line, between a prefix and a suffix.

The CSV writer with no quoting, no escaping and an unused delimiter writes the column verbatim, rows joined by
`separator`, and takes the text before and after as PREFIX and SUFFIX: one parallel pass from the store to the
file, no Python object per row and no second copy of the bytes. Callers guarantee that no row holds the
delimiter (a JSON text or a Bacs record never holds a control character).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path

import duckdb

from cmp_pipelines.settings import scratch_dir
from cmp_pipelines.store.connection import sql_literal


def copy_lines(con: duckdb.DuckDBPyConnection, target: Path, query: str, *, prefix: str, suffix: str,
               separator: str) -> None:
    """`prefix`, the rows of `query` (one VARCHAR column, in its order) joined by `separator`, then `suffix`,
    written in place (not into a temporary file of DuckDB's own, so a reader can follow it)."""
    con.execute(
        f"COPY ({query}) TO {sql_literal(str(target))} (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', "
        f"DELIMITER '\x01', NEW_LINE {sql_literal(separator)}, USE_TMP_FILE false, "
        f"PREFIX {sql_literal(prefix)}, SUFFIX {sql_literal(suffix)})"
    )


@contextmanager
def streamed(write: Callable[[Path], None]) -> Iterator[Iterator[bytes]]:
    """The bytes of the file `write` produces, while it writes them, for callers that encrypt a file on its way
    out: `write` runs on a worker thread (a DuckDB COPY drops the GIL; the caller must not use that connection
    meanwhile) into a scratch file (`settings.scratch_dir`) read as it grows, so the encryption overlaps the
    COPY instead of waiting for it. An error of `write` is raised from the stream, before the caller can
    publish anything."""
    handle, tmp = tempfile.mkstemp(suffix=".part", prefix="cmp-document-", dir=scratch_dir())
    os.close(handle)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamed-file") as pool:
        writing = pool.submit(write, Path(tmp))
        try:
            yield _growing_file(tmp, writing)
        finally:
            wait([writing])  # never leave DuckDB writing a file that is about to be removed
            os.unlink(tmp)


def _growing_file(path: str, writing: Future, size: int = 8 << 20) -> Iterator[bytes]:
    """The file's bytes as they are written (a reader sees only whole writes, up to the file's size), to the end
    once `writing` is done."""
    with open(path, "rb") as handle:
        while True:
            finished = writing.done()  # read before the last read, so nothing written after it is missed
            while chunk := handle.read(size):
                yield chunk
            if finished:
                writing.result()
                return
            time.sleep(0.002)
