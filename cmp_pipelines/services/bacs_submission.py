"""A frozen batch of Bacs instructions written as one Standard 18 submission, encrypted for the bureau.

AUDDIS (no money, no contra) and the day's collections (debits balanced by a 99 contra) differ only in their
table, order, amount and contra, so both are written here: records built in SQL and written by DuckDB
(`store.text_copy`), then encrypted as a stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from cmp_pipelines.configuration import DirectDebitConfig
from cmp_pipelines.formats import bacs_standard18 as std18
from cmp_pipelines.formats.encryption import PartnerKeyring
from cmp_pipelines.services.files import FileStoreLike
from cmp_pipelines.store.connection import sql_literal
from cmp_pipelines.store.text_copy import copy_lines, staged


@dataclass(frozen=True)
class SubmissionFile:
    path: str
    record_count: int
    total_minor: int


def write_submission(con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                     config: DirectDebitConfig, day: date, work_code: str, *, table: str, batch_id: str,
                     order_by: str, amount: str, with_contra: bool, folder: str) -> SubmissionFile:
    """`table` holds one row per instruction (sort_code, bank_account, transaction_code, reference,
    account_name) keyed by batch_id; `amount` is its amount in pence as a SQL expression."""
    c = config
    submission = std18.Submission(c.service_user_number, c.service_user_name, c.originating_sort_code,
                                  c.originating_account, day, work_code)
    count, total = con.execute(
        f"SELECT count(*), coalesce(sum({amount}), 0) FROM {table} WHERE batch_id = ?", [batch_id]
    ).fetchone()
    record = std18.data_record_sql("sort_code", "bank_account", "transaction_code",
                                   sql_literal(c.originating_sort_code), sql_literal(c.originating_account), amount,
                                   sql_literal(c.service_user_name), "reference", "account_name")
    contra = [std18.data_record(std18.contra(submission, total))] if with_contra else []
    trailers = std18.trailers(submission, total, total if with_contra else 0, count, 1 if with_contra else 0)
    head = "".join(line + "\n" for line in std18.labels(submission))
    tail = ("\n" if count else "") + "".join(line + "\n" for line in [*contra, *trailers])  # rows are joined by \n
    rows = f"SELECT {record} FROM {table} WHERE batch_id = {sql_literal(batch_id)} ORDER BY {order_by}"
    with staged(lambda target: copy_lines(con, target, rows, prefix=head, suffix=tail, separator="\n")) as text:
        path = files.write_parts(f"{folder}/{c.bureau}/{batch_id}.std18.enc", keyring.encrypt_parts(c.bureau, [text]))
    return SubmissionFile(path, count, total)
