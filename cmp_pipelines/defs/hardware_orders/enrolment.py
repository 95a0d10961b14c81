"""Device Enrolment Request and Response jobs, and the agent's enrolment and unenrolment requests.

Request (daily batch DER-<yyyymmdd>, chosen once and frozen): every handset waiting for enrolment (its order
asked for it) or unenrolment, one JSON batch per manufacturer (schema device_enrolment_request.schema.json),
sent through the device manufacturer resource. Response (one file per partition): the manufacturer's answer
per request, validated, each device moved to ENROLLED, UNENROLLED or ..._FAILED with the reason, in the same
transaction that loads the file, so a re-dropped or re-run file changes nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

import duckdb

from cmp_pipelines.core.config import Partner
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import sql_literal, transaction
from cmp_pipelines.core.db.mirror import Mirror
from cmp_pipelines.core.delivery import enqueue
from cmp_pipelines.core.files import record_file
from cmp_pipelines.core.files.errors import FileRejected
from cmp_pipelines.core.files.record_file import RecordFileSpec
from cmp_pipelines.core.files.record_scan import read_record_file
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.intake import Intake, Received, file_stem, sha256_hex
from cmp_pipelines.core.ledger import json_document, write_records_file
from cmp_pipelines.defs.hardware_orders import pg
from cmp_pipelines.defs.hardware_orders.adaptors import chosen
from cmp_pipelines.defs.hardware_orders.config import HardwareConfig
from cmp_pipelines.defs.hardware_orders.device_card_numbers import with_card_numbers_masked
from cmp_pipelines.defs.hardware_orders.dispatch_rules import first_broken
from cmp_pipelines.defs.hardware_orders.enrolment_rules import (
    ACTIONS,
    ENROL_FROM,
    RESPONSE_RULES,
    RESULT_STATUS_SQL,
    UNENROL_FROM,
)
from cmp_pipelines.defs.hardware_orders.orders import OrderError
from cmp_pipelines.defs.hardware_orders.rules import ENROLMENT_FAILED_EVENT

FEED = "device_enrolment"
REQUEST_KIND = "ENROLMENT_REQUEST"
RESPONSE_KIND = "ENROLMENT_RESPONSE"
RESPONSE_FILE = RecordFileSpec("device_enrolment_response", "device enrolment response", "results",
                               ("record_id", "request_id", "device_id", "result", "reason"), "result")


class ManufacturerChannel(Protocol):
    def send_batch(self, files: FileStoreLike, keyring: PartnerKeyring, manufacturer: str, file_id: str,
                   parts: list[bytes | Path]) -> str: ...


# ---- the agent's requests ------------------------------------------------------------------------------

def _ask(con: duckdb.DuckDBPyConnection, device_id: str, action: str, allowed: tuple[str, ...],
         now: datetime) -> dict:
    pending = ACTIONS[action][0]
    with transaction(con):
        row = con.execute(
            "SELECT d.enrolment_status, p.product_type, d.manufacturer FROM hw_devices d "
            "LEFT JOIN hw_products p USING (sku) WHERE d.device_id = ?", [device_id]
        ).fetchone()
        if row is None:
            raise OrderError("device_id", f"device {device_id!r} has not been dispatched", status=404)
        status, product_type, manufacturer = row
        if manufacturer is None or (product_type is not None and product_type != "HANDSET"):
            raise OrderError("device_id", f"device {device_id} is not a handset with a manufacturer to enrol it")
        if status not in allowed:
            raise OrderError("device_id", f"device {device_id} is {status}: {action.lower()} is possible from "
                                          f"{', '.join(allowed)}", status=409)
        con.execute("UPDATE hw_devices SET enrolment_status = ?, enrolment_reason = NULL, enrolment_updated_at = ? "
                    "WHERE device_id = ?", [pending, now, device_id])
    return device_view(con, device_id)


def request_enrolment(con: duckdb.DuckDBPyConnection, device_id: str, *, now: datetime) -> dict:
    return _ask(con, device_id, "ENROL", ENROL_FROM, now)


def request_unenrolment(con: duckdb.DuckDBPyConnection, device_id: str, *, now: datetime) -> dict:
    return _ask(con, device_id, "UNENROL", UNENROL_FROM, now)


def device_view(con: duckdb.DuckDBPyConnection, device_id: str) -> dict:
    row = con.execute(
        "SELECT device_id, imei, serial_number, sku, manufacturer, order_id, account_number, enrolment_status, "
        "enrolment_reason FROM hw_devices WHERE device_id = ?", [device_id]
    ).fetchone()
    if row is None:
        raise OrderError("device_id", f"device {device_id!r} has not been dispatched", status=404)
    keys = ("device_id", "imei", "serial_number", "sku", "manufacturer", "order_id", "account_number",
            "enrolment_status", "enrolment_reason")
    view = dict(zip(keys, row, strict=True))
    view["requests"] = [
        {"request_id": r[0], "action": r[1], "outcome": r[2], "reason": r[3]}
        for r in con.execute("SELECT request_id, action, outcome, reason FROM hw_enrolment_requests "
                             "WHERE device_id = ? ORDER BY requested_at, request_id", [device_id]).fetchall()
    ]
    return view


# ---- Device Enrolment Request ----------------------------------------------------------------------------

@dataclass
class EnrolmentBatch:
    batch_id: str
    business_date: date
    status: str  # SELECTED now, or as an earlier run left it (SELECTED, SENT)
    enrol_count: int
    unenrol_count: int
    by_manufacturer: dict[str, int] = field(default_factory=dict)


def request_batch_id(day: date) -> str:
    return f"DER-{day:%Y%m%d}"


class EnrolmentRequests:
    def __init__(self, con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                 channel: ManufacturerChannel, now: datetime | None = None, config: HardwareConfig | None = None,
                 mirror: Mirror | None = None):
        """`channel` reaches a manufacturer whose `enrolment` adaptor `config` does not set; `mirror`: on
        PostgreSQL, the run's link to the store (each step's pulls, pushes and lock: pg.py)."""
        self.con, self.files, self.keyring, self.channel, self.mirror = con, files, keyring, channel, mirror
        self.now = now or datetime.now(UTC)
        self.config = config

    def select(self, day: date) -> EnrolmentBatch:
        batch_id = request_batch_id(day)
        with pg.deciding(self.mirror, pg.pull_selectable(batch_id)), transaction(self.con):
            if not self.con.execute("SELECT count(*) FROM batches WHERE batch_id = ?", [batch_id]).fetchone()[0]:
                self.con.execute(
                    """
                    INSERT INTO hw_enrolment_requests (request_id, batch_id, manufacturer, device_id, action,
                                                       requested_at)
                    SELECT $batch || '-' || row_number() OVER (ORDER BY manufacturer, device_id), $batch,
                           manufacturer, device_id,
                           CASE enrolment_status WHEN 'ENROL_PENDING' THEN 'ENROL' ELSE 'UNENROL' END, $now
                    FROM hw_devices WHERE enrolment_status IN ('ENROL_PENDING', 'UNENROL_PENDING')
                      AND manufacturer IS NOT NULL
                    """,
                    {"batch": batch_id, "now": self.now},
                )
                self.con.execute(
                    """
                    UPDATE hw_devices d SET enrolment_status = r.action || '_REQUESTED', enrolment_updated_at = $now
                    FROM hw_enrolment_requests r WHERE r.batch_id = $batch AND r.device_id = d.device_id
                    """,
                    {"batch": batch_id, "now": self.now},
                )
                self.con.execute(
                    "INSERT INTO batches (batch_id, kind, feed, status, record_count, created_at) "
                    "SELECT ?, ?, ?, 'SELECTED', count(*), ? FROM hw_enrolment_requests WHERE batch_id = ?",
                    [batch_id, REQUEST_KIND, FEED, self.now, batch_id],
                )
                if self.mirror is not None:
                    pg.push_enrolment_selected(self.mirror, batch_id)
        return self.batch(day)

    def batch(self, day: date) -> EnrolmentBatch:
        batch_id = request_batch_id(day)
        pg.refresh(self.mirror, lambda mirror: pg.pull_enrolment_batch(mirror, batch_id))
        row = self.con.execute("SELECT status FROM batches WHERE batch_id = ? AND kind = ?",
                               [batch_id, REQUEST_KIND]).fetchone()
        if row is None:
            raise LookupError(f"enrolment request batch {batch_id} does not exist: materialise "
                              "device_enrolment_request_batch first")
        counts = self.con.execute(
            "SELECT count(*) FILTER (action = 'ENROL'), count(*) FILTER (action = 'UNENROL') "
            "FROM hw_enrolment_requests WHERE batch_id = ?", [batch_id]
        ).fetchone()
        by_manufacturer = dict(self.con.execute(
            "SELECT manufacturer, count(*) FROM hw_enrolment_requests WHERE batch_id = ? GROUP BY 1 ORDER BY 1",
            [batch_id]
        ).fetchall())
        return EnrolmentBatch(batch_id, day, row[0], counts[0], counts[1], by_manufacturer)

    def _channel(self, manufacturer: str) -> ManufacturerChannel:
        known = self.config.manufacturers.get(manufacturer) if self.config else None
        return chosen(known.enrolment if known else None, self.channel)

    def send(self, batch: EnrolmentBatch) -> list[str]:
        """One batch per manufacturer, the same content on a re-run."""
        created = self.con.execute("SELECT created_at FROM batches WHERE batch_id = ?",
                                   [batch.batch_id]).fetchone()[0]
        sent = []
        for manufacturer, count in batch.by_manufacturer.items():
            enrol, unenrol = self.con.execute(
                "SELECT count(*) FILTER (action = 'ENROL'), count(*) FILTER (action = 'UNENROL') "
                "FROM hw_enrolment_requests WHERE batch_id = ? AND manufacturer = ?", [batch.batch_id, manufacturer]
            ).fetchone()
            file_id = f"{batch.batch_id}-{manufacturer}"
            header = {"file_id": file_id, "batch_id": batch.batch_id, "sender": "CMP", "recipient": manufacturer,
                      "business_date": batch.business_date.isoformat(),
                      "created_at": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "record_count": count,
                      "enrol_count": enrol, "unenrol_count": unenrol}
            with json_document(
                self.con, header, "requests",
                f"""
                SELECT r.request_id, r.action, r.device_id, d.imei, d.serial_number, d.sku, d.order_id,
                       d.account_number AS customer_reference
                FROM hw_enrolment_requests r JOIN hw_devices d USING (device_id)
                WHERE r.batch_id = {sql_literal(batch.batch_id)} AND r.manufacturer = {sql_literal(manufacturer)}
                ORDER BY split_part(r.request_id, '-', 3)::INTEGER
                """,
            ) as document:
                sent.append(self._channel(manufacturer).send_batch(self.files, self.keyring, manufacturer, file_id,
                                                                   [document]))
            if sent[-1].startswith("outbound/"):  # dropped as a file (not posted to an API): transmitted from here
                enqueue(self.con, self.files, "ENROLMENT_REQUEST", sent[-1], partner=manufacturer, reference=file_id,
                        now=self.now)
        self.con.execute("UPDATE batches SET status = 'SENT', completed_at = ?, output_path = ? WHERE batch_id = ?",
                         [self.now, ", ".join(sent) or None, batch.batch_id])
        if self.mirror is not None:  # the same files on a re-run: registered once, the batch row replaced
            with self.mirror.transaction():
                self.mirror.push_deliveries(self.now)
                self.mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": batch.batch_id})
        return sent


# ---- Device Enrolment Response ---------------------------------------------------------------------------

@dataclass
class ResponseLoad:
    file_id: str
    batch_id: str
    status: str  # LOADED now or ALREADY_LOADED
    manufacturer: str
    record_count: int
    outcomes: dict[str, int] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)


class EnrolmentResponses:
    def __init__(self, con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                 partners: dict[str, Partner], now: datetime | None = None, mirror: Mirror | None = None):
        self.con, self.files, self.mirror = con, files, mirror
        self.now = now or datetime.now(UTC)
        self.intake = Intake(con, files, keyring, partners, FEED, self.now, mirror=mirror)

    def load(self, file_id: str) -> ResponseLoad:
        status = self.intake.load(file_id, self._load_new)
        return self._result(file_id, status)

    def loaded(self, file_id: str) -> ResponseLoad:
        return self._result(file_id, "ALREADY_LOADED")

    def _load_new(self, received: Received) -> None:
        plaintext = self.intake.decrypt(received)
        read = read_record_file(RESPONSE_FILE, plaintext, self.con)
        header = read.header
        record_file.check_sender(header, received.partner, "manufacturer")
        if header["record_count"] != read.record_count:
            raise FileRejected("CONTROL_TOTALS", f"header record_count is {header['record_count']} but the file "
                                                 f"holds {read.record_count} result records")
        content_sha = sha256_hex(plaintext)
        self.intake.refuse_duplicate(received, content_sha, header["file_id"])
        table = with_card_numbers_masked(read.table, read.shape_errors,
                                         ("record_id", "request_id", "result", "reason"), ("device_id",))
        batch_id = f"DEN-{content_sha[:16]}"
        params = {"batch": batch_id, "manufacturer": received.partner, "now": self.now}
        answered = table.column("request_id").to_pylist()
        with pg.deciding(self.mirror, lambda mirror: pg.pull_answered(mirror, answered)):
            self._load_answers(received, table, content_sha, header["file_id"], batch_id, params)

    def _load_answers(self, received: Received, table, content_sha: str, header_file_id: str, batch_id: str,
                      params: dict) -> None:
        code, message = first_broken(RESPONSE_RULES)
        with transaction(self.con):
            self.con.register("raw", table)
            try:
                self.con.execute(
                    f"""
                    INSERT INTO hw_enrolment_responses
                    SELECT $batch, r.position, r.record_id, r.request_id, r.device_id, q.action, r.result, r.reason,
                           CASE WHEN {code} IS NULL THEN r.result ELSE 'REJECTED' END, {code}, {message}
                    FROM raw r
                    LEFT JOIN hw_enrolment_requests q ON q.request_id = r.request_id
                    ORDER BY r.position
                    """,
                    {"batch": batch_id, "manufacturer": received.partner},
                )
            finally:
                self.con.unregister("raw")
            self.con.execute(
                """
                UPDATE hw_enrolment_responses t SET outcome = 'REJECTED', problem_code = 'REPEATED_IN_FILE',
                    problem = 'request ' || t.request_id || ' is answered more than once in this file'
                FROM (SELECT position, row_number() OVER (PARTITION BY request_id ORDER BY position) AS n
                      FROM hw_enrolment_responses WHERE batch_id = $batch AND outcome <> 'REJECTED') x
                WHERE t.batch_id = $batch AND t.position = x.position AND x.n > 1
                """,
                {"batch": batch_id},
            )
            self._apply(params)
            self.con.execute(
                "INSERT INTO batches (batch_id, kind, feed, partner, source_file_id, status, created_at, "
                "completed_at, record_count, accepted_count, rejected_count) "
                "SELECT ?, ?, ?, ?, ?, 'APPLIED', ?, ?, count(*), count(*) FILTER (outcome <> 'REJECTED'), "
                "count(*) FILTER (outcome = 'REJECTED') FROM hw_enrolment_responses WHERE batch_id = ?",
                [batch_id, RESPONSE_KIND, FEED, received.partner, received.file_id, self.now, self.now, batch_id],
            )
            self.intake.record_loaded(received, batch_id, content_sha, header_file_id)
            if self.mirror is not None:
                pg.push_answers(self.mirror, batch_id)
            self.intake.push_loaded(received, content_sha, header_file_id, batch_id,
                                    {"hw_enrolment_responses": "batch_id = $batch_id"})

    def _apply(self, params: dict) -> None:
        accepted = "s.batch_id = $batch AND s.outcome <> 'REJECTED'"
        self.con.execute(
            f"""
            UPDATE hw_enrolment_requests q SET outcome = s.result, reason = s.reason, answered_batch_id = $batch
            FROM hw_enrolment_responses s WHERE s.request_id = q.request_id AND {accepted}
            """,
            {"batch": params["batch"]},
        )
        self.con.execute(
            f"""
            UPDATE hw_devices d SET enrolment_status = {RESULT_STATUS_SQL}, enrolment_reason = s.reason,
                enrolment_updated_at = $now
            FROM hw_enrolment_responses s WHERE s.device_id = d.device_id AND {accepted}
              AND d.enrolment_status = s.action || '_REQUESTED'
            """,
            {"batch": params["batch"], "now": params["now"]},
        )
        self.con.execute(
            f"""
            INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, raised_at)
            SELECT '{ENROLMENT_FAILED_EVENT[0]}', '{ENROLMENT_FAILED_EVENT[1]}', d.account_number, s.device_id,
                   lower(s.action) || 'ment of ' || s.device_id || ' failed at ' || $manufacturer || ': ' || s.reason,
                   $now
            FROM hw_enrolment_responses s JOIN hw_devices d USING (device_id)
            WHERE {accepted} AND s.result = 'FAILED' ORDER BY s.position
            """,
            params,
        )

    def _result(self, file_id: str, status: str) -> ResponseLoad:
        batch_id, partner, _ = self.intake.loaded_batch(file_id)
        if self.mirror is not None:
            with self.mirror.transaction():
                self.mirror.pull("hw_enrolment_responses", "batch_id = $1", [batch_id], key=["batch_id", "position"])
        outcomes = dict(self.con.execute(
            "SELECT outcome, count(*) FROM hw_enrolment_responses WHERE batch_id = ? GROUP BY 1 ORDER BY 1",
            [batch_id]).fetchall())
        problems = dict(self.con.execute(
            "SELECT problem_code, count(*) FROM hw_enrolment_responses WHERE batch_id = ? "
            "AND problem_code IS NOT NULL GROUP BY 1 ORDER BY 1", [batch_id]).fetchall())
        return ResponseLoad(file_id, batch_id, status, partner, sum(outcomes.values()), outcomes, problems)

    def write_report(self, load: ResponseLoad) -> str:
        file_name = self.con.execute("SELECT file_name FROM inbound_files WHERE file_id = ?",
                                     [load.file_id]).fetchone()[0]
        header = {"file_id": load.file_id, "source_file_name": file_name, "manufacturer": load.manufacturer,
                  "batch_id": load.batch_id, "processed_at": self.now.isoformat(),
                  "record_count": load.record_count, "outcomes": load.outcomes, "problems": load.problems}
        return write_records_file(
            self.con, self.files, f"outbound/reports/{FEED}/{load.manufacturer}/{file_stem(file_name)}.outcomes.json",
            header, "records",
            f"""
            SELECT position, record_id, request_id, device_id, action, result, outcome, reason, problem_code, problem
            FROM hw_enrolment_responses WHERE batch_id = {sql_literal(load.batch_id)} ORDER BY position
            """,
        )
