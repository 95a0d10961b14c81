"""The daily AUDDIS extract: new, amended and cancelled Direct Debit Instructions as a Standard 18 file.

One business day is one batch (AUD-<yyyymmdd>), chosen once and frozen, so a re-run writes the same file.
Before choosing, mandates submitted `activation_days` ago without a rejection become ACTIVE ("no response
from Bacs means the instruction succeeded"). Instructions: NEW -> 0N; AMEND -> 0C with the old details then
0N with the new; CANCEL -> 0C; CONVERT -> 0S. Amounts are zero and there is no contra.

On PostgreSQL (`mirror`, defs/direct_debit/pg.py) the selection pulls the mandates pending an instruction or due
for activation under the mandates lock and pushes the day's instructions, the mandates it changed, their history,
the set-up events and the batch row in one transaction; the file step draws its serial from PostgreSQL's register.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import duckdb

from cmp_pipelines.core.config import DirectDebitConfig
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import transaction, unordered_inserts
from cmp_pipelines.core.db.mirror import Mirror
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.defs.direct_debit import pg
from cmp_pipelines.defs.direct_debit.calendar import cycle
from cmp_pipelines.defs.direct_debit.submission import write_submission

# One or two instructions per mandate with one pending; an amendment's 0C carries the old details. `position` only
# identifies an instruction in its batch (the mandate's row id, twice, plus the step): the file is ordered by
# reference then code (0C before 0N) when written, and numbering here with row_number() cost ~0.9 s a million.
_SELECT = """
INSERT INTO auddis_instructions
WITH pending AS (
    SELECT rowid * 2 AS position, mandate_id, reference,
           CASE pending_instruction WHEN 'NEW' THEN '0N' WHEN 'CONVERT' THEN '0S' ELSE '0C' END AS code,
           CASE WHEN pending_instruction = 'AMEND' THEN previous_sort_code ELSE sort_code END AS sort_code,
           CASE WHEN pending_instruction = 'AMEND' THEN previous_bank_account ELSE bank_account END AS bank_account,
           CASE WHEN pending_instruction = 'AMEND' THEN previous_account_name ELSE account_name END AS account_name
    FROM mandates WHERE pending_instruction IS NOT NULL
    UNION ALL
    SELECT rowid * 2 + 1, mandate_id, reference, '0N', sort_code, bank_account, account_name
    FROM mandates WHERE pending_instruction = 'AMEND'
)
SELECT $batch_id, position, mandate_id, code, sort_code, bank_account, account_name, reference
FROM pending
"""


MANDATE_SETUP_EVENT = ("DIRECT_DEBIT", "MANDATE_SETUP_CONFIRMED")

# A cancelled mandate stays cancelled (its 0C is sent); a converted paper mandate (0S) stays active.
_AFTER = ("CASE WHEN status = 'CANCELLED' THEN 'CANCELLED' WHEN pending_instruction = 'CONVERT' THEN status "
          "ELSE 'SUBMITTED' END")


@dataclass
class AuddisBatch:
    batch_id: str
    business_date: date
    status: str
    activated: int
    by_code: dict[str, int]

    @property
    def record_count(self) -> int:
        return sum(self.by_code.values())


def auddis_batch_id(day: date) -> str:
    return f"AUD-{day:%Y%m%d}"


class AuddisExtract:
    def __init__(self, con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                 config: DirectDebitConfig, now: datetime, mirror: Mirror | None = None):
        self.con, self.files, self.keyring, self.config, self.now = con, files, keyring, config, now
        self.mirror = mirror

    def _pushed(self):
        """The PostgreSQL transaction of a step's writes (nothing on the embedded store)."""
        return self.mirror.transaction() if self.mirror is not None else nullcontext()

    def select(self, day: date) -> AuddisBatch:
        batch_id = auddis_batch_id(day)
        with transaction(self.con), self._pushed():
            if self.mirror is not None:
                self.mirror.lock(pg.mandates_lock(self.config.service_user_number))
                pg.pull_batch(self.mirror, batch_id)
            if self.con.execute("SELECT 1 FROM batches WHERE batch_id = ?", [batch_id]).fetchone():
                return self.selected(day)
            if self.mirror is not None:
                self.mirror.con.execute("DELETE FROM auddis_instructions WHERE batch_id = ?", [batch_id])
                pg.replace_pulled(self.mirror, "mandates", "pending_instruction IS NOT NULL OR "
                                  "(status = 'SUBMITTED' AND submitted_on <= $1)",
                                  [day - timedelta(days=self.config.activation_days)], lock_rows=True)
            activated = self._activate(day)
            with unordered_inserts(self.con):  # the file is ordered when written
                self.con.execute(_SELECT, {"batch_id": batch_id})
            self.con.execute(
                f"""
                INSERT INTO mandate_history
                SELECT mandate_id, status, {_AFTER},
                       'AUDDIS ' || $batch_id, $now
                FROM mandates WHERE pending_instruction IS NOT NULL
                """,
                {"batch_id": batch_id, "now": self.now},
            )
            # the customer's confirmation of a new instruction (with the Direct Debit Guarantee) goes out as the
            # instruction goes to the bank: a workflow event the dispatcher turns into the configured communication
            self.con.execute(
                """
                INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, raised_at)
                SELECT $type, $code, account_number, mandate_id,
                       'new Direct Debit Instruction ' || reference || ' lodged with the bank in ' || $batch_id, $now
                FROM mandates WHERE pending_instruction = 'NEW' ORDER BY mandate_id
                """,
                {"type": MANDATE_SETUP_EVENT[0], "code": MANDATE_SETUP_EVENT[1], "batch_id": batch_id, "now": self.now},
            )
            self.con.execute(
                f"""
                UPDATE mandates SET pending_instruction = NULL, previous_sort_code = NULL, previous_bank_account = NULL,
                    previous_account_name = NULL,
                    status = {_AFTER},
                    submitted_on = CASE WHEN {_AFTER} = 'SUBMITTED' THEN $day ELSE submitted_on END
                WHERE pending_instruction IS NOT NULL
                """,
                {"day": day},
            )
            self.con.execute(
                "INSERT INTO batches (batch_id, kind, feed, partner, status, record_count, accepted_count, created_at) "
                "SELECT $batch_id, 'AUDDIS', 'auddis', $bureau, 'SELECTED', count(*), $activated, $now "
                "FROM auddis_instructions WHERE batch_id = $batch_id",
                {"batch_id": batch_id, "bureau": self.config.bureau, "activated": activated, "now": self.now},
            )
            if self.mirror is not None:
                self.mirror.push("auddis_instructions", "batch_id = $batch", {"batch": batch_id})
                pg.push_mandate_changes(self.mirror, self.now)
                pg.push_events(self.mirror, self.now)
                self.mirror.push("batches", "batch_id = $batch", {"batch": batch_id})
        return self.selected(day, "SELECTED")

    def _activate(self, day: date) -> int:
        cutoff = day - timedelta(days=self.config.activation_days)
        self.con.execute(
            "INSERT INTO mandate_history SELECT mandate_id, status, 'ACTIVE', "
            "'no rejection within ' || $days || ' days of submission', $now FROM mandates "
            "WHERE status = 'SUBMITTED' AND submitted_on <= $cutoff",
            {"days": self.config.activation_days, "now": self.now, "cutoff": cutoff},
        )
        return self.con.execute(
            "UPDATE mandates SET status = 'ACTIVE', activated_on = $day WHERE status = 'SUBMITTED' "
            "AND submitted_on <= $cutoff",
            {"day": day, "cutoff": cutoff},
        ).fetchone()[0]

    def selected(self, day: date, status: str = "ALREADY_SELECTED") -> AuddisBatch:
        batch_id = auddis_batch_id(day)
        if self.mirror is not None and status == "ALREADY_SELECTED":  # chosen by an earlier run: PostgreSQL's rows
            pg.pull_batch(self.mirror, batch_id)
            pg.pull_rows_of_batch(self.mirror, "auddis_instructions", batch_id)
        row = self.con.execute("SELECT accepted_count FROM batches WHERE batch_id = ?", [batch_id]).fetchone()
        if row is None:
            raise LookupError(f"no AUDDIS batch for {day}: materialise auddis_instructions_batch first")
        by_code = dict(self.con.execute(
            "SELECT transaction_code, count(*) FROM auddis_instructions WHERE batch_id = ? GROUP BY 1 ORDER BY 1",
            [batch_id],
        ).fetchall())
        return AuddisBatch(batch_id, day, status, row[0], by_code)

    def write_file(self, batch: AuddisBatch) -> str | None:
        """The Standard 18 file for the bureau, encrypted for it: zero amounts and no contra, work code '1 DAILY'
        (Bacs tells AUDDIS apart by its 0N/0C/0S records). Nothing pending, no file (status NOTHING_PENDING)."""
        if batch.record_count == 0:
            with self._pushed():
                self.con.execute("UPDATE batches SET status = 'NOTHING_PENDING', completed_at = ? WHERE batch_id = ?",
                                 [self.now, batch.batch_id])
                if self.mirror is not None:
                    self.mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": batch.batch_id})
            return None
        dates = cycle(batch.business_date)
        written = write_submission(self.con, self.files, self.keyring, self.config, dates.input_day,
                                   dates.processing_day, table="auddis_instructions", batch_id=batch.batch_id,
                                   order_by="reference, transaction_code", amount="0", with_contra=False,
                                   folder="outbound/auddis", mirror=self.mirror, now=self.now)
        with self._pushed():
            self.con.execute("UPDATE batches SET status = 'EXTRACTED', output_path = ?, completed_at = ? "
                             "WHERE batch_id = ?", [written.path, self.now, batch.batch_id])
            if self.mirror is not None:
                self.mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": batch.batch_id})
                self.mirror.push_deliveries(self.now)
        return written.path
