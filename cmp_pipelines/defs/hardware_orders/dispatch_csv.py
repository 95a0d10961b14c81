"""The warehouse dispatch adaptor: the warehouse's own CSV in, the generic JSON dispatch batch out.

The warehouse writes one row per unit shipped (with its IMEI or serial number and the courier's reference)
and one row per order line it could not ship (with its reason):

    ORDER_REF,LINE_NO,SKU,STATUS,IMEI,SERIAL_NO,COURIER_REF,DISPATCH_DATE,ERROR_TEXT
    HO00000001,1,HS-ACME-X1,SHIPPED,356938035643809,,DPD-1234,21/11/2026 14:05,
    HO00000002,1,PR-CASE-X1,FAILED,,,,,Out of stock

STATUS SHIPPED becomes DISPATCHED and FAILED becomes ERROR; DISPATCH_DATE (UK local time, DD/MM/YYYY HH:MM)
becomes ISO 8601 UTC. The conversion is columnar (Arrow CSV reader, DuckDB SQL), so a large file costs no
Python loop. A row that cannot be split into the nine columns is kept as a record with a `row_problem`, so it
is rejected and reported like any other bad record; a file whose header is wrong is refused whole.
"""

from __future__ import annotations

import io

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from cmp_pipelines.core.files.errors import FileRejected

COLUMNS = ("ORDER_REF", "LINE_NO", "SKU", "STATUS", "IMEI", "SERIAL_NO", "COURIER_REF", "DISPATCH_DATE",
           "ERROR_TEXT")
RECORD_FIELDS = ("record_id", "order_id", "line_number", "sku", "status", "imei", "serial_number",
                 "courier_reference", "dispatched_at", "error_reason", "row_problem")
WAREHOUSE_TIMEZONE = "Europe/London"

_CONVERT_SQL = f"""
    SELECT * FROM (
    SELECT line::VARCHAR AS record_id, nullif(trim(ORDER_REF), '') AS order_id,
           nullif(trim(LINE_NO), '') AS line_number,
           nullif(upper(trim(SKU)), '') AS sku,
           CASE upper(trim(STATUS)) WHEN 'SHIPPED' THEN 'DISPATCHED' WHEN 'FAILED' THEN 'ERROR'
                ELSE nullif(trim(STATUS), '') END AS status,
           nullif(trim(IMEI), '') AS imei, nullif(trim(SERIAL_NO), '') AS serial_number,
           nullif(trim(COURIER_REF), '') AS courier_reference,
           coalesce(strftime(timezone('UTC', timezone('{WAREHOUSE_TIMEZONE}',
                                                      try_strptime(trim(DISPATCH_DATE), '%d/%m/%Y %H:%M'))),
                             '%Y-%m-%dT%H:%M:%SZ'),
                    nullif(trim(DISPATCH_DATE), '')) AS dispatched_at,
           nullif(trim(ERROR_TEXT), '') AS error_reason, NULL::VARCHAR AS row_problem
    FROM rows
    UNION ALL
    SELECT line::VARCHAR, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           'row ' || line || ' has ' || fields || ' field(s), expected {len(COLUMNS)}: ' || q(text)
    FROM broken
    ) ORDER BY record_id::BIGINT
"""


def _header(text: bytes) -> list[str]:
    first = text.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        names = first.decode("utf-8-sig").split(",")
    except UnicodeDecodeError as exc:
        raise FileRejected("NOT_UTF8", f"the header line is not UTF-8 text: {exc}") from exc
    return [name.strip().strip('"').upper() for name in names]


def convert(plaintext: bytes) -> pa.Table:
    """The dispatch records (RECORD_FIELDS, all strings), in file order. `record_id` is the row number: the
    count of non-empty lines up to the row, the header being row 1."""
    if not plaintext or plaintext.isspace():
        raise FileRejected("EMPTY_FILE", "the decrypted file is empty")
    names = _header(plaintext)
    missing = [c for c in COLUMNS if c not in names]
    unknown = [n for n in names if n not in COLUMNS]
    if missing or unknown or len(names) != len(set(names)):
        problems = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + (
            [f"unknown column(s) {', '.join(unknown)}"] if unknown else []) + (
            ["a column is named twice"] if len(names) != len(set(names)) else [])
        raise FileRejected("CSV_HEADER", f"the header line is not the warehouse dispatch layout "
                                         f"({', '.join(COLUMNS)}): {'; '.join(problems)}")
    broken: list[tuple[int, int, str]] = []

    def keep_broken(row) -> str:
        broken.append((row.number, row.actual_columns, row.text[:200]))
        return "skip"

    try:
        table = pa_csv.read_csv(
            io.BytesIO(plaintext),
            read_options=pa_csv.ReadOptions(use_threads=False, column_names=names, skip_rows=1),
            parse_options=pa_csv.ParseOptions(invalid_row_handler=keep_broken),
            convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                                  strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise FileRejected("NOT_CSV", f"the decrypted content is not CSV text: {exc}") from exc
    # Row numbers count the non-empty lines, the header being row 1: the rows read are those not broken.
    numbers = np.setdiff1d(np.arange(2, table.num_rows + len(broken) + 2, dtype=np.int64),
                           np.array([b[0] for b in broken], dtype=np.int64))
    rows = table.append_column("line", pa.array(numbers, pa.int64()))
    broken_table = pa.table({"line": pa.array([b[0] for b in broken], pa.int64()),
                             "fields": pa.array([b[1] for b in broken], pa.int64()),
                             "text": pa.array([b[2] for b in broken], pa.string())})
    with duckdb.connect() as con:
        from cmp_pipelines.core.db.connection import SQL_MACROS

        con.execute(SQL_MACROS)
        con.register("rows", rows)
        con.register("broken", broken_table)
        return con.sql(_CONVERT_SQL).to_arrow_table()

