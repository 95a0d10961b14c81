"""Text files written by DuckDB itself: each row of a one-column query as a line, between a prefix and a suffix.

The CSV writer with no quoting, no escaping and an unused delimiter writes the column verbatim, rows joined by
`separator`, and takes the text before and after as PREFIX and SUFFIX: one parallel pass from the store to the
file, no Python object per row and no second copy of the bytes. Callers guarantee that no row holds the
delimiter (a JSON text or a Bacs record never holds a control character).

The writer's threads write their blocks at computed offsets, not in order, so a file is complete only when the
COPY has returned: nothing may read it while it is being written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from cmp_pipelines.core.db.connection import sql_literal
from cmp_pipelines.core.settings import scratch_dir


def copy_lines(con: duckdb.DuckDBPyConnection, target: Path, query: str, *, prefix: str, suffix: str,
               separator: str) -> None:
    """`prefix`, the rows of `query` (one VARCHAR column, in its order) joined by `separator`, then `suffix`,
    written straight into `target` (not into a temporary file of DuckDB's own: the caller's is atomic)."""
    if not prefix or not suffix:  # without both, DuckDB ends every row with the separator instead of joining them
        raise ValueError("copy_lines needs a non-empty prefix and suffix")
    con.execute(
        f"COPY ({query}) TO {sql_literal(str(target))} (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', "
        f"DELIMITER '\x01', NEW_LINE {sql_literal(separator)}, USE_TMP_FILE false, "
        f"PREFIX {sql_literal(prefix)}, SUFFIX {sql_literal(suffix)})"
    )


@contextmanager
def staged(write: Callable[[Path], None]) -> Iterator[Path]:
    """The finished file `write` produces, in a scratch file (`settings.scratch_dir`) removed afterwards, for
    callers that encrypt it on its way out."""
    handle, tmp = tempfile.mkstemp(suffix=".part", prefix="cmp-document-", dir=scratch_dir())
    os.close(handle)
    try:
        write(Path(tmp))
        yield Path(tmp)
    finally:
        os.unlink(tmp)
