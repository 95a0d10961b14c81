"""The floors' reading of a partner file: the records array through DuckDB's JSON reader into Arrow string
columns, the header through orjson. Raw libraries only, and none of the checks the flows make (the generator's
layout is assumed: header first, compact), so it stays the least work that reads the file."""

from __future__ import annotations

import os
import tempfile

import duckdb
import orjson
import pyarrow as pa


def read_records(con: duckdb.DuckDBPyConnection, plaintext: bytes, records_key: str,
                 fields: tuple[str, ...] | list[str]) -> tuple[dict, pa.Table]:
    marker = b',"' + records_key.encode() + b'":'
    records_at = plaintext.index(marker)
    header = orjson.loads(plaintext[plaintext.index(b":") + 1:records_at])
    folder = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.NamedTemporaryFile(suffix=".json", dir=folder) as f:
        f.write(memoryview(plaintext)[records_at + len(marker):plaintext.rindex(b"]") + 1])
        f.flush()
        columns = ", ".join(f"'{name}': 'VARCHAR'" for name in fields)
        table = con.sql(f"SELECT * FROM read_json('{f.name}', format='array', columns={{{columns}}})").to_arrow_table()
    return header, table.add_column(0, "position", pa.array(range(1, table.num_rows + 1), pa.int64()))
