"""The delivery register: every outbound document, from the moment it is published until the partner has it.

A flow publishes a document in its outbound folder and calls `enqueue` (one row, PENDING; the same document
enqueued again is a no-op: UNIQUE partner, remote name, checksum). The deliverer (`deliver_due`, run by the
platform's delivery job) claims the rows that are due, sends them through the partner's transport
(`core.transports`) with no store connection held, then records SENT or FAILED (attempts, backoff, the error).
A claim expires, so a deliverer that died mid-send is taken over; the transports never overwrite a final name
and recognise a document already there, so a retry never sends twice. A receipt (`confirm`) marks it CONFIRMED.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

import duckdb

from cmp_pipelines.core.files.store import FileStoreLike

log = logging.getLogger("cmp_pipelines.delivery")

STATUSES = ("PENDING", "SENT", "FAILED", "CONFIRMED")
DOCUMENT_KINDS = (
    "LEDGER_POSTING", "NRP_ACKNOWLEDGEMENT", "AUDDIS", "DD_COLLECTION", "CARD_EXTRACT", "SALES_ORDER_REQUEST",
    "ENROLMENT_REQUEST", "BILLING_ACKNOWLEDGEMENT",
)
# The kinds whose partner answers with a receipt (item 3 of issue 17): the sales ledger accepts a posting file,
# the Bacs bureau reports on a submission. Only these wait for CONFIRMED.
RECEIPTED_KINDS = ("LEDGER_POSTING", "AUDDIS", "DD_COLLECTION")
# Who receives each kind when the caller does not say: the ledger's files go to the sales ledger; the others are
# addressed to the partner their folder names (outbound/<kind>/<PARTNER>/...).
SALES_LEDGER = "SALES_LEDGER"
MAX_ATTEMPTS = 8
BACKOFF_SECONDS = 60  # first retry after a minute, then 2, 4, 8 ... capped at MAX_BACKOFF
MAX_BACKOFF = timedelta(hours=2)
CLAIM_SECONDS = 900  # a deliverer that has not recorded a result by then is presumed dead


@dataclass(frozen=True)
class Delivery:
    delivery_id: int
    document_kind: str
    partner: str
    local_path: str
    remote_name: str
    sha256: str
    size_bytes: int
    attempts: int


@dataclass
class DeliveryResult:
    """What a transport did with one document: sent (or found already there), or the error, free of secrets."""

    delivery_id: int
    ok: bool
    detail: str = ""


@dataclass
class DeliveryReport:
    sent: list[Delivery] = field(default_factory=list)
    failed: list[tuple[Delivery, str]] = field(default_factory=list)


def file_digest(path: Path) -> tuple[str, int]:
    """sha256 and size, streamed: a card extract of a million records is not read into memory."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _digest_in_store(files: FileStoreLike, path: str) -> tuple[str, int]:
    root = getattr(files, "root", None)
    if callable(root):
        return file_digest(Path(root()) / path)
    data = files.read_bytes(path)
    return hashlib.sha256(data).hexdigest(), len(data)


def enqueue(con: duckdb.DuckDBPyConnection, files: FileStoreLike, kind: str, path: str, *,
            partner: str | None = None, reference: str | None = None, now: datetime | None = None,
            digest: tuple[str, int] | None = None) -> None:
    """Register a document just published at `path` (store-relative) for delivery to `partner` (default: the
    sales ledger for posting files, else the partner its folder names). Enqueuing it again does nothing.
    `digest`: its sha256 and size when the caller hashed it before publishing (core/files/prepared.py)."""
    if kind not in DOCUMENT_KINDS:
        raise ValueError(f"unknown document kind {kind!r}; known kinds: {', '.join(DOCUMENT_KINDS)}")
    partner = partner or default_partner(kind, path)
    sha, size = digest or _digest_in_store(files, path)
    now = now or datetime.now(UTC)
    name = PurePosixPath(path).name
    # a partition run again rewrites its document (a new created_at): the version not yet sent replaces the old
    con.execute(
        "UPDATE delivery_register SET sha256 = ?, size_bytes = ?, local_path = ?, updated_at = ? "
        "WHERE partner = ? AND remote_name = ? AND status IN ('PENDING', 'FAILED') AND claimed_by IS NULL "
        "AND sha256 <> ?", [sha, size, path, now, partner, name, sha],
    )
    con.execute(
        "INSERT INTO delivery_register (delivery_id, document_kind, partner, local_path, remote_name, sha256, "
        "size_bytes, reference, status, attempts, next_attempt_at, created_at, updated_at) "
        "VALUES (nextval('delivery_register_seq'), ?, ?, ?, ?, ?, ?, ?, 'PENDING', 0, ?, ?, ?) ON CONFLICT DO NOTHING",
        [kind, partner, path, name, sha, size, reference, now, now, now],
    )


def default_partner(kind: str, path: str) -> str:
    if kind == "LEDGER_POSTING":
        return SALES_LEDGER
    parts = PurePosixPath(path).parts
    if len(parts) < 3:
        raise ValueError(f"{path}: name the partner of a {kind} document; its folder does not")
    return parts[-2]


# ---- the deliverer -------------------------------------------------------------------------------------------

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]
Send = Callable[[str, list[Delivery]], list[DeliveryResult]]  # (partner, its documents) -> one result each


def worker_id() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def claim_due(con: duckdb.DuckDBPyConnection, worker: str, now: datetime, *, max_attempts: int = MAX_ATTEMPTS,
              limit: int = 500, ids: list[int] | None = None) -> list[Delivery]:
    """Take the due documents for `worker` (PENDING, or FAILED with a retry due, not claimed by a live deliverer).
    A concurrent deliverer that claimed the same rows first wins; this one gets nothing."""
    only = f"AND delivery_id IN ({', '.join(str(int(i)) for i in ids)})" if ids else ""
    try:
        rows = con.execute(
            f"""
            UPDATE delivery_register SET claimed_by = $worker, claim_expires_at = $until, updated_at = $now
            WHERE delivery_id IN (
                SELECT delivery_id FROM delivery_register
                WHERE status IN ('PENDING', 'FAILED') AND attempts < $max AND next_attempt_at <= $now
                  AND (claim_expires_at IS NULL OR claim_expires_at <= $now) {only}
                ORDER BY delivery_id LIMIT $limit)
              -- again on the row itself: PostgreSQL re-checks these (not the subquery) on a row another claimer
              -- changed meanwhile, so the later claimer skips it instead of claiming it twice
              AND status IN ('PENDING', 'FAILED') AND (claim_expires_at IS NULL OR claim_expires_at <= $now)
            RETURNING delivery_id, document_kind, partner, local_path, remote_name, sha256, size_bytes, attempts
            """,
            {"worker": worker, "until": now + timedelta(seconds=CLAIM_SECONDS), "now": now, "max": max_attempts,
             "limit": limit},
        ).fetchall()
    except duckdb.TransactionException:
        return []  # another deliverer's claim on the same rows committed first
    return sorted((Delivery(*row) for row in rows), key=lambda d: d.delivery_id)


def backoff(attempts: int, base_seconds: int = BACKOFF_SECONDS) -> timedelta:
    return min(timedelta(seconds=base_seconds * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def record_result(con: duckdb.DuckDBPyConnection, worker: str, result: DeliveryResult, now: datetime,
                  transport: str, base_seconds: int = BACKOFF_SECONDS) -> None:
    """SENT, or FAILED with the next attempt after an exponential backoff; only by the deliverer holding the claim."""
    if result.ok:
        con.execute(
            "UPDATE delivery_register SET status = 'SENT', attempts = attempts + 1, sent_at = $now, updated_at = $now, "
            "last_error = NULL, claimed_by = NULL, claim_expires_at = NULL, transport = $transport "
            "WHERE delivery_id = $id AND claimed_by = $worker",
            {"now": now, "transport": transport, "id": result.delivery_id, "worker": worker},
        )
        return
    attempts = con.execute("SELECT attempts + 1 FROM delivery_register WHERE delivery_id = ?",
                           [result.delivery_id]).fetchone()[0]
    con.execute(
        "UPDATE delivery_register SET status = 'FAILED', attempts = $attempts, next_attempt_at = $next, "
        "last_error = $error, updated_at = $now, claimed_by = NULL, claim_expires_at = NULL, transport = $transport "
        "WHERE delivery_id = $id AND claimed_by = $worker",
        {"attempts": attempts, "next": now + backoff(attempts, base_seconds), "error": result.detail[:2000],
         "now": now, "transport": transport, "id": result.delivery_id, "worker": worker},
    )


def deliver_due(connect: Connect, send: Send, transport_of: Callable[[str], str], *,
                now: Callable[[], datetime] = lambda: datetime.now(UTC), max_attempts: int = MAX_ATTEMPTS,
                base_seconds: int = BACKOFF_SECONDS, ids: list[int] | None = None) -> DeliveryReport:
    """Claim what is due, send it partner by partner with the store closed (a slow partner never holds the
    store's single writer), and record each result."""
    worker = worker_id()
    with connect() as con:
        due = claim_due(con, worker, now(), max_attempts=max_attempts, ids=ids)
    report = DeliveryReport()
    by_partner: dict[str, list[Delivery]] = {}
    for item in due:
        by_partner.setdefault(item.partner, []).append(item)
    results: list[tuple[Delivery, DeliveryResult, str]] = []
    for partner, items in by_partner.items():
        try:
            kind = transport_of(partner)
            outcome = {r.delivery_id: r for r in send(partner, items)}
        except Exception as exc:  # noqa: BLE001 (a bad partner configuration fails its documents, not the others)
            kind, outcome = "-", {i.delivery_id: DeliveryResult(i.delivery_id, False, str(exc)) for i in items}
        for item in items:
            result = outcome.get(item.delivery_id) or DeliveryResult(item.delivery_id, False, "not attempted")
            results.append((item, result, kind))
    with connect() as con:
        for item, result, kind in results:
            record_result(con, worker, result, now(), kind, base_seconds)
            if result.ok:
                report.sent.append(item)
            else:
                report.failed.append((item, result.detail))
                log.warning("delivery %s (%s to %s) failed: %s", item.delivery_id, item.remote_name, item.partner,
                            result.detail)
    return report


def due_state(con: duckdb.DuckDBPyConnection, now: datetime, max_attempts: int = MAX_ATTEMPTS) -> str | None:
    """A key naming the documents due now (ids, attempts, claims), or None: a run key that changes exactly when
    there is something new to send, so the sensor never asks twice for the same state."""
    row = con.execute(
        """
        SELECT count(*),
               md5(string_agg(delivery_id || ':' || attempts || ':' || coalesce(claim_expires_at::VARCHAR, ''),
                              ',' ORDER BY delivery_id))
        FROM delivery_register
        WHERE status IN ('PENDING', 'FAILED') AND attempts < $max AND next_attempt_at <= $now
          AND (claim_expires_at IS NULL OR claim_expires_at <= $now)
        """,
        {"max": max_attempts, "now": now},
    ).fetchone()
    return f"{row[0]}-{row[1][:16]}" if row[0] else None


# ---- operators -----------------------------------------------------------------------------------------------


def list_deliveries(con: duckdb.DuckDBPyConnection, status: str | None = None, partner: str | None = None,
                    limit: int = 100) -> list[dict]:
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    rows = con.execute(
        "SELECT delivery_id, document_kind, partner, remote_name, status, attempts, last_error, created_at, "
        "sent_at, confirmed_at, next_attempt_at, local_path, sha256 FROM delivery_register "
        "WHERE ($status IS NULL OR status = $status) AND ($partner IS NULL OR partner = $partner) "
        "ORDER BY delivery_id DESC LIMIT $limit",
        {"status": status, "partner": partner, "limit": limit},
    )
    names = [d[0] for d in rows.description]
    return [dict(zip(names, row, strict=True)) for row in rows.fetchall()]


def retry(con: duckdb.DuckDBPyConnection, delivery_ids: list[int] | None, now: datetime) -> int:
    """FAILED documents due again now, with their attempts reset (all of them when no id is given)."""
    only = "AND delivery_id IN (SELECT unnest($ids))" if delivery_ids else ""
    params: dict = {"now": now}
    if delivery_ids:
        params["ids"] = [int(i) for i in delivery_ids]
    rows = con.execute(
        f"UPDATE delivery_register SET status = 'PENDING', attempts = 0, next_attempt_at = $now, updated_at = $now, "
        f"claimed_by = NULL, claim_expires_at = NULL WHERE status = 'FAILED' {only} RETURNING delivery_id",
        params,
    ).fetchall()
    return len(rows)


def reject(con: duckdb.DuckDBPyConnection, partner: str, reference: str, why: str, now: datetime) -> int:
    """The partner refused the document: FAILED with its reason and no automatic resend (the same bytes would be
    refused again); `deliveries retry` sends it once corrected."""
    rows = con.execute(
        "UPDATE delivery_register SET status = 'FAILED', last_error = $why, confirmation = $why, "
        "attempts = greatest(attempts, $max), updated_at = $now "
        "WHERE partner = $partner AND status IN ('SENT', 'FAILED', 'PENDING') "
        "AND (reference = $ref OR remote_name = $ref) RETURNING delivery_id",
        {"why": why[:2000], "max": MAX_ATTEMPTS, "now": now, "partner": partner, "ref": reference},
    ).fetchall()
    return len(rows)


def confirm(con: duckdb.DuckDBPyConnection, partner: str, reference: str, note: str, now: datetime) -> int:
    """A partner's receipt: its SENT (or FAILED after all: the partner has it) documents named `reference` (the
    document's id or file name) become CONFIRMED. Returns how many rows it confirmed."""
    rows = con.execute(
        "UPDATE delivery_register SET status = 'CONFIRMED', confirmed_at = $now, confirmation = $note, "
        "updated_at = $now WHERE partner = $partner AND status IN ('SENT', 'FAILED', 'PENDING') "
        "AND (reference = $ref OR remote_name = $ref) RETURNING delivery_id",
        {"now": now, "note": note[:500], "partner": partner, "ref": reference},
    ).fetchall()
    return len(rows)
