"""ADDACS: the bank's mandate amendment and cancellation report, applied by configured mandate revision code.

Steps, each idempotent for a report:
1. `load`: decrypt, parse (Bacs XML, ISO-8859-1), check it is for our service user, classify every advice
   (batch ADC-<hash16>); unknown references and unknown codes are reported as job errors.
2. `apply`: in ONE transaction, mandate changes and their history, payment-type changes, workflow events.
3. `write_report`: every advice's outcome for operations and the bureau.

On PostgreSQL (`mirror`, defs/direct_debit/pg.py) the load pulls the mandates the report names and pushes its batch
through the intake; `apply` takes the mandates lock, pulls the advices, their mandates (row-locked), accounts and
payment-type history, runs the same statements in the scratch and pushes what they changed in one transaction.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from cmp_pipelines.core.batch_outcomes import outcome_counts
from cmp_pipelines.core.config import DirectDebitConfig, MandateRevisionCode, Partner
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import sql_literal, transaction
from cmp_pipelines.core.db.mirror import Mirror
from cmp_pipelines.core.files.errors import FileRejected
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.intake import Intake, Received, file_stem, sha256_hex
from cmp_pipelines.core.ledger import write_records_file
from cmp_pipelines.core.reference import sync_mandate_revision_codes, sync_mandate_revision_codes_postgres
from cmp_pipelines.defs.direct_debit import bacs_xml, pg
from cmp_pipelines.defs.direct_debit.addacs_rules import APPLY_SQL, CLASSIFY_SQL

FEED = "addacs"


@dataclass
class AdviceLoad:
    file_id: str
    batch_id: str
    status: str  # LOADED now or ALREADY_LOADED
    partner: str
    advice_count: int
    outcomes: dict[str, int] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)
    applied: bool = False


def check_service_user(report: bacs_xml.Report, config: DirectDebitConfig, kind: str) -> None:
    if report.service_user_number not in (None, config.service_user_number):
        raise FileRejected("SERVICE_USER_MISMATCH", f"the {kind} report is for service user "
                                                    f"{report.service_user_number}, ours is "
                                                    f"{config.service_user_number}")


class AddacsReports:
    def __init__(self, con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                 partners: dict[str, Partner], codes: dict[str, MandateRevisionCode], config: DirectDebitConfig,
                 default_payment_type: str = "MANUAL", now: datetime | None = None, mirror: Mirror | None = None):
        self.con, self.files, self.codes, self.config = con, files, codes, config
        self.default_payment_type = default_payment_type
        self.now = now or datetime.now(UTC)
        self.mirror = mirror
        self.intake = Intake(con, files, keyring, partners, FEED, self.now, mirror=mirror)
        if mirror is not None:  # PostgreSQL's configuration table synced from the YAML and copied into the scratch
            sync_mandate_revision_codes_postgres(mirror, codes)

    def _pushed(self):
        """The PostgreSQL transaction of a step's writes (nothing on the embedded store)."""
        return self.mirror.transaction() if self.mirror is not None else nullcontext()

    def load(self, file_id: str) -> AdviceLoad:
        return self._result(file_id, self.intake.load(file_id, self._load_new))

    def loaded(self, file_id: str) -> AdviceLoad:
        return self._result(file_id, "ALREADY_LOADED")

    def _load_new(self, received: Received) -> None:
        data = self.intake.decrypt(received)
        report = bacs_xml.read_addacs(data)
        check_service_user(report, self.config, "ADDACS")
        content_sha = sha256_hex(data)
        self.intake.refuse_duplicate(received, content_sha, report.report_id)
        batch_id = f"ADC-{content_sha[:16]}"
        with transaction(self.con):
            if self.mirror is None:  # on PostgreSQL the constructor synced it
                sync_mandate_revision_codes(self.con, self.codes)
            self.con.register("raw", report.records)
            try:
                if self.mirror is not None:  # the mandates the report names, as PostgreSQL holds them
                    self.mirror.stage_keys("named_references", "SELECT reference AS k FROM raw")
                    self.mirror.pull("mandates", "service_user_number = $1 AND reference IN "
                                     "(SELECT k FROM named_references)", [self.config.service_user_number],
                                     key=["mandate_id"])
                self.con.execute(CLASSIFY_SQL, {"batch_id": batch_id, "sun": self.config.service_user_number})
            finally:
                self.con.unregister("raw")
            self.con.execute(
                "INSERT INTO batches (batch_id, kind, feed, partner, source_file_id, status, created_at, record_count, "
                "accepted_count, rejected_count) SELECT ?, 'ADDACS', ?, ?, ?, 'LOADED', ?, count(*), "
                "count(*) FILTER (outcome <> 'REJECTED'), count(*) FILTER (outcome = 'REJECTED') "
                "FROM addacs_advices WHERE batch_id = ?",
                [batch_id, FEED, received.partner, received.file_id, self.now, batch_id],
            )
            self.intake.record_problems(received, "addacs_advices", batch_id, configuration="UNKNOWN_CODE",
                                        data="UNKNOWN_REFERENCE", masked=report.masked)
            self.intake.record_loaded(received, batch_id, content_sha, report.report_id)
            if self.mirror is not None:
                self.mirror.push("job_errors", "job = $feed AND raised_at = $now", {"feed": FEED, "now": self.now})
                self.intake.push_loaded(received, content_sha, report.report_id, batch_id,
                                        {"addacs_advices": "batch_id = $batch_id"})

    def apply(self, load: AdviceLoad) -> AdviceLoad:
        params = {"batch_id": load.batch_id, "day": self.now.date(), "now": self.now,
                  "default_type": self.default_payment_type, "month": self.now.strftime("%Y-%m")}
        with transaction(self.con), self._pushed():
            if self.mirror is not None:
                self.mirror.lock(pg.mandates_lock(self.config.service_user_number))
                pg.pull_advices_state(self.mirror, load.batch_id)
            status = self.con.execute("SELECT status FROM batches WHERE batch_id = ?", [load.batch_id]).fetchone()[0]
            if status == "APPLIED":
                return self._result(load.file_id, load.status)
            for statement in APPLY_SQL:
                self.con.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement})
            self.con.execute("UPDATE batches SET status = 'APPLIED', completed_at = ? WHERE batch_id = ?",
                             [self.now, load.batch_id])
            if self.mirror is not None:
                pg.push_advices_applied(self.mirror, load.batch_id, self.now)
        return self._result(load.file_id, load.status)

    def _result(self, file_id: str, status: str) -> AdviceLoad:
        batch_id, partner, _ = self.intake.loaded_batch(file_id)
        if self.mirror is not None:
            pg.pull_batch(self.mirror, batch_id)
            self.mirror.pull("addacs_advices", "batch_id = $1", [batch_id], key=["batch_id", "position"])
        outcomes, problems = outcome_counts(self.con, "addacs_advices", batch_id)
        applied = self.con.execute("SELECT status = 'APPLIED' FROM batches WHERE batch_id = ?",
                                   [batch_id]).fetchone()[0]
        return AdviceLoad(file_id, batch_id, status, partner, sum(outcomes.values()), outcomes, problems, applied)

    def write_report(self, load: AdviceLoad) -> str:
        file_name = self.con.execute("SELECT file_name FROM inbound_files WHERE file_id = ?",
                                     [load.file_id]).fetchone()[0]
        header = {"file_id": load.file_id, "source_file_name": file_name, "bureau": load.partner,
                  "batch_id": load.batch_id, "processed_at": self.now.isoformat(), "advice_count": load.advice_count,
                  "outcomes": load.outcomes, "problems": load.problems}
        path = write_records_file(
            self.con, self.files, f"outbound/reports/{FEED}/{load.partner}/{file_stem(file_name)}.outcomes.json",
            header, "advices",
            f"""
            SELECT a.position, a.reference, a.reason_code, k.reason_type, k.reason_code AS reason, a.mandate_id,
                   a.account_number, a.action, a.outcome, a.new_sort_code, a.new_account_number,
                   a.effective_date::VARCHAR AS effective_date, a.problem_code, a.problem
            FROM addacs_advices a LEFT JOIN config_mandate_revision_codes k ON k.code = a.reason_code
            WHERE a.batch_id = {sql_literal(load.batch_id)} ORDER BY a.position
            """,
        )
        with self._pushed():
            self.con.execute("UPDATE batches SET output_path = ? WHERE batch_id = ?", [path, load.batch_id])
            if self.mirror is not None:
                self.mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": load.batch_id})
        return path
