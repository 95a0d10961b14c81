"""A frozen batch of Bacs instructions written as one Standard 18 submission, encrypted for the bureau.

AUDDIS (no money, no contra) and the day's collections (debits balanced by a 99 contra) differ only in their
table, order, amount and contra, so both are written here: records built in SQL and written by DuckDB
(`core.files.text_copy`), checked by the independent checker (`bacs_check`) while it is encrypted as a stream.
A submission that fails the check is never published: the run fails with every reason.

Each submission takes a serial from the register (`bacs_submissions`): VOL1 serials never repeat for a service
user (so never on a day), HDR1's set identification is the serial and UHL1's file number is the submission's
number on its input day. A re-run of a batch gets the serial it was given.

On PostgreSQL the register is PostgreSQL's: the serial is drawn under the service user's serial lock from its rows
and committed at once in a transaction of its own (as the embedded store commits it at once), before the file is
written; the caller pushes its batch status and the delivery registration afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime

import duckdb

from cmp_pipelines.core.config import DirectDebitConfig
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import sql_literal
from cmp_pipelines.core.db.mirror import Mirror
from cmp_pipelines.core.delivery import enqueue
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.files.text_copy import copy_lines, staged
from cmp_pipelines.defs.direct_debit import pg
from cmp_pipelines.defs.direct_debit import standard18 as std18
from cmp_pipelines.defs.direct_debit.bacs_check import check_file


class SubmissionRefused(ValueError):
    """The written submission failed the Standard 18 check; nothing was published."""


@dataclass(frozen=True)
class SubmissionFile:
    path: str
    record_count: int
    total_minor: int
    serial: str = ""
    file_number: int = 1


def allocate_serial(con: duckdb.DuckDBPyConnection, service_user_number: str, batch_id: str, input_day: date,
                    processing_day: date, now: datetime | None = None) -> tuple[str, int]:
    """The batch's (serial, file number): the one it was given before, or the service user's next serial and the
    day's next file number. Serials run 000001-999999 then wrap; a serial still in the register is skipped."""
    row = con.execute("SELECT serial, file_number FROM bacs_submissions WHERE batch_id = ?", [batch_id]).fetchone()
    if row:
        return row[0], row[1]
    last, file_number = con.execute(
        "SELECT (SELECT serial FROM bacs_submissions WHERE service_user_number = $sun "
        "        ORDER BY allocated_at DESC, rowid DESC LIMIT 1), "
        "       (SELECT coalesce(max(file_number), 0) + 1 FROM bacs_submissions "
        "        WHERE service_user_number = $sun AND input_day = $day)",
        {"sun": service_user_number, "day": input_day}).fetchone()
    used = {r[0] for r in con.execute("SELECT serial FROM bacs_submissions WHERE service_user_number = ?",
                                      [service_user_number]).fetchall()}
    number = int(last) if last else 0
    for _ in range(999_999):
        number = number % 999_999 + 1
        if f"{number:06d}" not in used:
            break
    else:
        raise RuntimeError(f"every submission serial of service user {service_user_number} is in the register")
    if file_number > 999:
        raise RuntimeError(f"service user {service_user_number} already has 999 submissions on {input_day}")
    serial = f"{number:06d}"
    con.execute("INSERT INTO bacs_submissions VALUES (?, ?, ?, ?, ?, ?, ?)",
                [service_user_number, serial, input_day, file_number, batch_id, processing_day,
                 now or datetime.now(UTC)])
    return serial, file_number


def allocate_serial_on_postgres(mirror: Mirror, service_user_number: str, batch_id: str, input_day: date,
                                processing_day: date) -> tuple[str, int]:
    """`allocate_serial` against PostgreSQL's register: under the serial lock, the service user's register pulled
    (one row per submission ever made), the same rule run in the scratch, the new row pushed and committed. Two
    submissions at once take the lock one after the other, so the second sees the first's serial; the register's
    keys (serial, input day and file number, batch) refuse a duplicate even if that were ever bypassed."""
    with mirror.transaction():
        mirror.lock(pg.serial_lock(service_user_number))
        mirror.settle()
        mirror.con.execute("DELETE FROM bacs_submissions WHERE service_user_number = ?", [service_user_number])
        mirror.pull("bacs_submissions", "service_user_number = $1 ORDER BY allocated_at, serial",
                    [service_user_number])
        serial, file_number = allocate_serial(mirror.con, service_user_number, batch_id, input_day, processing_day)
        mirror.push("bacs_submissions", "batch_id = $batch", {"batch": batch_id}, conflict="(batch_id) DO NOTHING")
    return serial, file_number


def check_submission_file(path) -> None:
    """Refuses (SubmissionRefused, every reason) a plaintext submission that does not pass `bacs check`."""
    problems = check_file(path)
    if problems:
        shown = "; ".join(str(p) for p in problems[:20])
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        raise SubmissionRefused(f"the Standard 18 submission fails its check, not published: {shown}{more}")


def _then(pieces: Iterable[bytes], checked: Future) -> Iterator[bytes]:
    """The encrypted submission's pieces, then the check's verdict: a refusal raises inside the store's write,
    which stages a document whole before publishing it, so a refused submission is never published."""
    yield from pieces
    checked.result()


def write_submission(con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                     config: DirectDebitConfig, day: date, processing_day: date, *, table: str, batch_id: str,
                     order_by: str, amount: str, with_contra: bool, folder: str, mirror: Mirror | None = None,
                     now: datetime | None = None) -> SubmissionFile:
    """`table` holds one row per instruction (sort_code, bank_account, transaction_code, reference,
    account_name) keyed by batch_id; `amount` is its amount in pence as a SQL expression. `day` is the input
    day (HDR1 creation), `processing_day` the day Bacs processes the file (UHL1). With `mirror` (PostgreSQL) the
    serial comes from PostgreSQL's register and the delivery is registered stamped `now` for the caller to push."""
    c = config
    if mirror is None:
        serial, file_number = allocate_serial(con, c.service_user_number, batch_id, day, processing_day)
    else:
        serial, file_number = allocate_serial_on_postgres(mirror, c.service_user_number, batch_id, day,
                                                          processing_day)
    submission = std18.Submission(c.service_user_number, c.service_user_name, c.originating_sort_code,
                                  c.originating_account, processing_day, "1 DAILY", serial, file_number, day)
    count, total = con.execute(
        f"SELECT count(*), coalesce(sum({amount}), 0) FROM {table} WHERE batch_id = ?", [batch_id]
    ).fetchone()
    record = std18.data_record_sql("sort_code", "bank_account", "transaction_code",
                                   sql_literal(c.originating_sort_code), sql_literal(c.originating_account), amount,
                                   sql_literal(c.service_user_name), "reference", "account_name")
    contra = [std18.data_record(std18.contra(submission, total))] if with_contra else []
    counts = (count, 1, None) if with_contra else (0, 0, count)
    trailers = std18.trailers(submission, total, total if with_contra else 0, *counts)
    head = "".join(line + "\n" for line in std18.labels(submission))
    tail = ("\n" if count else "") + "".join(line + "\n" for line in [*contra, *trailers])  # rows are joined by \n
    rows = f"SELECT {record} FROM {table} WHERE batch_id = {sql_literal(batch_id)} ORDER BY {order_by}"
    with (staged(lambda target: copy_lines(con, target, rows, prefix=head, suffix=tail, separator="\n")) as text,
          ThreadPoolExecutor(max_workers=1, thread_name_prefix="bacs-check") as pool):
        checked = pool.submit(check_submission_file, text)  # DuckDB and OpenSSL drop the GIL: a core each
        path = files.write_parts(f"{folder}/{c.bureau}/{batch_id}.std18.enc",
                                 _then(keyring.encrypt_parts(c.bureau, [text]), checked))
    enqueue(con, files, "AUDDIS" if folder == "outbound/auddis" else "DD_COLLECTION", path, partner=c.bureau,
            reference=batch_id, now=now if mirror is not None else None)
    return SubmissionFile(path, count, total, serial, file_number)
