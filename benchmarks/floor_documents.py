"""The floors' outbound documents, written as the flows write them: DuckDB's CSV writer puts out each row as
`to_json` and the `{"header": ..., key: [` envelope as PREFIX and SUFFIX, so the whole file is one COPY with no
Python object per row and no second copy of the bytes. Raw DuckDB and orjson only."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import orjson
from floor_fernet import FloorFernet

SCRATCH = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None


def copy_text(con: duckdb.DuckDBPyConnection, query: str, target: Path, prefix: str, suffix: str,
              separator: str) -> None:
    """The rows of a one-column query joined by `separator` between `prefix` and `suffix`, as the flows write."""
    quoted = {name: value.replace("'", "''") for name, value in
              {"prefix": prefix, "suffix": suffix, "separator": separator}.items()}
    con.execute(f"COPY ({query}) TO '{target}' (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x01', "
                f"NEW_LINE '{quoted['separator']}', PREFIX '{quoted['prefix']}', SUFFIX '{quoted['suffix']}', "
                "USE_TMP_FILE false)")


def copy_document(con: duckdb.DuckDBPyConnection, header: dict, key: str, query: str, target: Path) -> None:
    copy_text(con, f"SELECT to_json(r)::VARCHAR FROM ({query}) r", target,
              '{"header":' + orjson.dumps(header).decode() + ',"' + key + '":[', "]}", ",")


def write_document(con: duckdb.DuckDBPyConnection, header: dict, key: str, query: str, target: Path) -> None:
    """A plain document, durable before the step counts as done (as the flows' file store makes it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    copy_document(con, header, key, query, target)
    with open(target, "rb+") as handle:
        os.fsync(handle.fileno())


def encrypted_document(con: duckdb.DuckDBPyConnection, fernet: FloorFernet, header: dict, key: str, query: str,
                       target: Path) -> None:
    """The document staged in memory-backed storage, then encrypted a chunk at a time into `target`."""
    staged = (SCRATCH or target.parent) / f"floor-{os.getpid()}-{target.name}.json"
    try:
        copy_document(con, header, key, query, staged)
        fernet.encrypt_file(staged, target)
    finally:
        staged.unlink(missing_ok=True)
