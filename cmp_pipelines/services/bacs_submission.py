"""A frozen batch of Bacs instructions written as one Standard 18 submission, encrypted for the bureau.

AUDDIS (no money, no contra) and the day's collections (debits balanced by a 99 contra) differ only in their
table, order, amount and contra, so both are written here: records built in SQL, streamed through encryption.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from cmp_pipelines.configuration import DirectDebitConfig
from cmp_pipelines.formats import bacs_standard18 as std18
from cmp_pipelines.formats.encryption import PartnerKeyring
from cmp_pipelines.services.files import FileStoreLike


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
    record = std18.data_record_sql("sort_code", "bank_account", "transaction_code", "$sort", "$account", amount,
                                   "$su_name", "reference", "account_name")
    body, count, total = con.execute(
        f"SELECT coalesce(string_agg({record} || chr(10), '' ORDER BY {order_by}), ''), count(*), "
        f"coalesce(sum({amount}), 0) FROM {table} WHERE batch_id = $batch_id",
        {"sort": c.originating_sort_code, "account": c.originating_account, "su_name": c.service_user_name,
         "batch_id": batch_id},
    ).fetchone()
    contra = [std18.data_record(std18.contra(submission, total))] if with_contra else []
    trailers = std18.trailers(submission, total, total if with_contra else 0, count, 1 if with_contra else 0)
    head = "".join(line + "\n" for line in std18.labels(submission))
    tail = "".join(line + "\n" for line in [*contra, *trailers])
    token = keyring.encrypt_parts(c.bureau, [head.encode("ascii"), body.encode("ascii"), tail.encode("ascii")])
    path = files.write_parts(f"{folder}/{c.bureau}/{batch_id}.std18.enc", token)
    return SubmissionFile(path, count, total)
