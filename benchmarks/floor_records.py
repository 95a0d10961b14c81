"""The floors' reading of a partner file: the records array through DuckDB's JSON reader into Arrow string
columns, the header through orjson. Raw libraries only, and none of the checks the flows make (the generator's
layout is assumed: header first, compact), so it stays the least work that reads the file. Like the flows, the
array is cut at record boundaries into one file per DuckDB thread, because DuckDB parses one array on one
thread and a list of files in parallel."""

from __future__ import annotations

import os
import tempfile

import duckdb
import numpy as np
import orjson
import pyarrow as pa


def read_records(con: duckdb.DuckDBPyConnection, plaintext: bytes, records_key: str,
                 fields: tuple[str, ...] | list[str]) -> tuple[dict, pa.Table]:
    marker = b',"' + records_key.encode() + b'":'
    records_at = plaintext.index(marker)
    header = orjson.loads(plaintext[plaintext.index(b":") + 1:records_at])
    start, end = records_at + len(marker), plaintext.rindex(b"]") + 1
    cut = plaintext.index(b"},{", (start + end) // 2) + 1  # the generator writes compact records
    folder = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    view = memoryview(plaintext)
    with tempfile.NamedTemporaryFile(suffix=".json", dir=folder) as first, \
            tempfile.NamedTemporaryFile(suffix=".json", dir=folder) as second:
        first.write(view[start:cut])
        first.write(b"]")
        second.write(b"[")
        second.write(view[cut + 1:end])
        first.flush()
        second.flush()
        columns = ", ".join(f"'{name}': 'VARCHAR'" for name in fields)
        table = con.sql(f"SELECT * FROM read_json(['{first.name}', '{second.name}'], format='array', "
                        f"columns={{{columns}}})").to_arrow_table()
    return header, table.add_column(0, "position", pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64)))
