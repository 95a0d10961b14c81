"""The hardware-order flows on PostgreSQL (issue 19): what each step pulls, pushes and locks, in one place.

Every step follows core/db/mirror.py: its DuckDB SQL runs unchanged on the run's scratch; it pulls from PostgreSQL
only the rows its rules read and pushes what it wrote in ONE transaction, committed right after the scratch's.

Lock: `hw:state`, one transaction-level advisory lock taken (before the step pulls) by every step that decides from
or changes order, device or enrolment state: the request claim, its fraud check and its send, the dispatch apply,
the enrolment selection and the enrolment response load. Two runs at once therefore decide one after the other from
what the first committed (an order is claimed and sent once, a device allocated once, a settled order billed once).
The lock comes before the pull because row locks alone cannot serialise this: a `SELECT ... FOR UPDATE` finds only
rows committed when it started, so a device or request row another run is inserting would be missed (PostgreSQL
manual, "Transaction Isolation", Read Committed). Each such transaction takes this one lock first (the response
load then the intake's content locks, which no other holder takes before it), so no cycle can form and nothing
deadlocks. The order rows a step changes are also pulled `FOR UPDATE` in order-id order, so an agent's change
through the API or CLI (core/db/pg_duck.py) waits rather than being overwritten. Hardware volumes are small
(README: 100,000 orders in one batch); the lock is held from pull to push, never while a warehouse or manufacturer
file is decrypted or parsed. The fraud service is asked before the lock is taken; the verdicts are applied under it
only if the batch is still CLAIMED.

Each step: what it pulls -> what it pushes.
- claim: the batch row, the orders awaiting generation up to its number (FOR UPDATE) -> the reference tables, the
  batch's request rows, the orders claimed, the batch row.
- check_fraud, send: the batch row, its request rows, orders (FOR UPDATE), lines, fraud checks -> fraud checks,
  orders, history, events (PostgreSQL's ids), deliveries, the batch row.
- dispatch load: the file's intake row and duplicate candidates (core/intake.py) -> the records, the batch and
  intake rows (`Intake.push_loaded`, under its content and file-id locks).
- dispatch apply: the batch and its posting batch, its records, the orders they name (FOR UPDATE), their lines and
  pending charges, the devices they name -> the reference tables, record outcomes, lines, devices, orders, history,
  events, postings (`push_batch_to_postgres`: UNIQUE keys, key order), pending charges, job errors and runs, the
  batch rows.
- posting file, report: the posting batch and its postings (`write_posting_file_postgres`, its own lock), the
  records -> the output paths, the delivery registration.
- enrolment select: the day's batch row and requests, the devices pending (FOR UPDATE) -> the requests, the
  devices, the batch row. Enrolment send: the batch's requests and devices -> deliveries, the batch row.
- enrolment response: the requests the file answers and their devices (FOR UPDATE) -> the answers, the devices,
  events, then (`Intake.push_loaded`) the responses, the batch and intake rows.

Migration 0023 gives PostgreSQL the indexes these pulls use (none on DuckDB).

Append-only rows a step writes without a key to push them by (order history, workflow events, job errors) are
cleared from the scratch when the step starts deciding and pushed whole at its end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from cmp_pipelines.core.db.mirror import Mirror

STATE_LOCK = "hw:state"
_FRESH = ("hw_order_history", "workflow_events", "job_errors")
_REFERENCE = ("hw_products", "hw_settings", "hw_deny_list")


@contextmanager
def deciding(mirror: Mirror | None, pull: Callable[[Mirror], None]) -> Iterator[None]:
    """On PostgreSQL: one transaction holding `hw:state`, in which `pull` reads the step's state; the step decides
    in the scratch and pushes before the block ends (committed then, rolled back on any error). Nothing on DuckDB."""
    if mirror is None:
        yield
        return
    with mirror.transaction():
        mirror.lock(STATE_LOCK)
        mirror.settle()
        for table in _FRESH:
            mirror.con.execute(f"DELETE FROM {table}")  # noqa: S608 - our tables
        pull(mirror)
        yield


def refresh(mirror: Mirror | None, pull: Callable[[Mirror], None]) -> None:
    """On PostgreSQL: what a read-only part of a step reads, pulled without a lock (its own short transaction)."""
    if mirror is not None:
        with mirror.transaction():
            pull(mirror)


def _locked(mirror: Mirror, table: str, key: str, where: str, params: list) -> None:
    """PostgreSQL's rows of `table` matching `where`, locked FOR UPDATE in key order, replacing the scratch's."""
    rows = mirror.query(f"SELECT * FROM {table} WHERE {where} ORDER BY {key} FOR UPDATE", params)  # noqa: S608
    mirror.load(table, rows, key=[key])


def push_reference(mirror: Mirror) -> None:
    """The catalogue, settings and deny list the step synced from config/hardware_orders.yaml (probes read them)."""
    for table in _REFERENCE:
        mirror.execute(f"DELETE FROM {table}")  # noqa: S608 - our tables
        mirror.push(table, "TRUE")


def push_common(mirror: Mirror) -> None:
    """What every deciding step may have written without a key: order history, events (PostgreSQL's ids), job
    errors."""
    mirror.push_new("hw_order_history", "history_seq", "TRUE")  # PostgreSQL's numbers, in the scratch's order
    mirror.push_new("workflow_events", "event_id", "TRUE")
    mirror.push("job_errors", "TRUE")


# ---- Sales Order Request ------------------------------------------------------------------------------------

_BATCH_ORDERS = "SELECT order_id FROM hw_request_orders WHERE batch_id = $1"


def pull_request_batch(mirror: Mirror, batch_id: str, *, lock_orders: bool = False) -> None:
    """A request batch's row, request rows, orders (FOR UPDATE when the step changes them), lines, fraud checks."""
    params = [batch_id]
    mirror.pull("batches", "batch_id = $1", params, key=["batch_id"])
    mirror.pull("hw_request_orders", "batch_id = $1", params, key=["batch_id", "order_id"])
    if lock_orders:
        _locked(mirror, "hw_orders", "order_id", f"order_id IN ({_BATCH_ORDERS})", params)
    else:
        mirror.pull("hw_orders", f"order_id IN ({_BATCH_ORDERS})", params, key=["order_id"])
    mirror.pull("hw_order_lines", f"order_id IN ({_BATCH_ORDERS})", params, key=["order_id", "line_number"])
    mirror.pull("hw_fraud_checks", "batch_id = $1", params, key=["batch_id", "order_id"])
    mirror.pull("hw_products", "TRUE", key=["sku"])


def pull_claimable(batch_id: str, up_to: int) -> Callable[[Mirror], None]:
    def pull(mirror: Mirror) -> None:
        pull_request_batch(mirror, batch_id)
        _locked(mirror, "hw_orders", "order_id", "status = 'AWAITING_GENERATION' AND request_batch_id IS NULL "
                                                 "AND generation_seq <= $1", [up_to])
        mirror.pull("hw_order_lines", "order_id IN (SELECT order_id FROM hw_orders WHERE status = "
                                      "'AWAITING_GENERATION' AND request_batch_id IS NULL AND generation_seq <= $1)",
                    [up_to], key=["order_id", "line_number"])
    return pull


def push_request_batch(mirror: Mirror, batch_id: str, now: datetime, *, reference: bool = False) -> None:
    """A request step's writes: request rows, fraud checks, the batch's orders, history, events, deliveries, the
    batch row."""
    params = {"batch": batch_id}
    if reference:
        push_reference(mirror)
    mirror.push("hw_request_orders", "batch_id = $batch", params, conflict="DO NOTHING")
    mirror.push("hw_fraud_checks", "batch_id = $batch", params, conflict="DO NOTHING")
    mirror.upsert("hw_orders", ["order_id"], "request_batch_id = $batch", params)
    push_common(mirror)
    mirror.push_deliveries(now)
    mirror.upsert("batches", ["batch_id"], "batch_id = $batch", params)


# ---- Sales Order Dispatch -----------------------------------------------------------------------------------

_RECORD_ORDERS = "SELECT order_id FROM hw_dispatch_records WHERE batch_id = $1 AND order_id IS NOT NULL"
_RECORD_DEVICES = ("SELECT coalesce(imei, serial_number) FROM hw_dispatch_records WHERE batch_id = $1 "
                   "AND coalesce(imei, serial_number) IS NOT NULL")


def pull_dispatch_batch(mirror: Mirror, batch_id: str) -> None:
    """A dispatch batch's rows (it and its posting batch) and its records."""
    mirror.pull("batches", "batch_id = $1 OR parent_batch_id = $1", [batch_id], key=["batch_id"])
    mirror.pull("hw_dispatch_records", "batch_id = $1", [batch_id], key=["batch_id", "position"])


def pull_dispatch_state(batch_id: str) -> Callable[[Mirror], None]:
    """What matching, settling and billing a dispatch batch read: the orders its records name (FOR UPDATE), their
    lines and pending charges, and the devices it names (a device is shipped once)."""
    def pull(mirror: Mirror) -> None:
        params = [batch_id]
        pull_dispatch_batch(mirror, batch_id)
        _locked(mirror, "hw_orders", "order_id", f"order_id IN ({_RECORD_ORDERS})", params)
        mirror.pull("hw_order_lines", f"order_id IN ({_RECORD_ORDERS})", params, key=["order_id", "line_number"])
        mirror.pull("hw_pending_charges", f"order_id IN ({_RECORD_ORDERS})", params, key=["order_id"])
        mirror.pull("hw_devices", f"device_id IN ({_RECORD_DEVICES})", params, key=["device_id"])
    return pull


def push_dispatch_applied(mirror: Mirror, batch_id: str, billing: str, now: datetime) -> None:
    from cmp_pipelines.core.ledger import push_batch_to_postgres

    params = {"batch": batch_id}
    orders = "order_id IN (SELECT order_id FROM hw_dispatch_records WHERE batch_id = $batch)"
    push_reference(mirror)
    mirror.push_update("hw_dispatch_records", ["batch_id", "position"], ["outcome", "problem_code", "problem"],
                       "batch_id = $batch", params)
    mirror.upsert("hw_order_lines", ["order_id", "line_number"], orders, params)
    mirror.push("hw_devices", "dispatch_batch_id = $batch", params)
    mirror.upsert("hw_orders", ["order_id"], orders, params)
    push_common(mirror)
    push_batch_to_postgres(mirror.con, mirror.pg, billing)
    mirror.push("hw_pending_charges", "dispatch_batch_id = $batch", params, conflict="DO NOTHING")
    mirror.push("job_runs", "batch_id = $billing AND started_at = $now", {"billing": billing, "now": now})
    mirror.upsert("batches", ["batch_id"], "batch_id IN ($batch, $billing)", {**params, "billing": billing})


def pull_dispatch_applied(batch_id: str) -> Callable[[Mirror], None]:
    """What a dispatch result reads once applied: the batch rows, records, the orders they name, the history the
    batch wrote, its devices and pending charges."""
    def pull(mirror: Mirror) -> None:
        params = [batch_id]
        pull_dispatch_batch(mirror, batch_id)
        mirror.pull("hw_orders", f"order_id IN ({_RECORD_ORDERS})", params, key=["order_id"])
        mirror.settle()
        mirror.con.execute("DELETE FROM hw_order_history WHERE order_id IN (SELECT order_id FROM hw_dispatch_records "
                           "WHERE batch_id = ?)", params)
        mirror.pull("hw_order_history", f"order_id IN ({_RECORD_ORDERS})", params)  # the result counts this batch's
        mirror.pull("hw_devices", "dispatch_batch_id = $1", params, key=["device_id"])
        mirror.pull("hw_pending_charges", "dispatch_batch_id = $1", params, key=["order_id"])
    return pull


# ---- Device Enrolment ---------------------------------------------------------------------------------------

_REQUESTED_DEVICES = "SELECT device_id FROM hw_enrolment_requests WHERE batch_id = $1"


def pull_enrolment_batch(mirror: Mirror, batch_id: str) -> None:
    """An enrolment request batch's row, its requests and their devices."""
    params = [batch_id]
    mirror.pull("batches", "batch_id = $1", params, key=["batch_id"])
    mirror.pull("hw_enrolment_requests", "batch_id = $1", params, key=["request_id"])
    mirror.pull("hw_devices", f"device_id IN ({_REQUESTED_DEVICES})", params, key=["device_id"])


def pull_selectable(batch_id: str) -> Callable[[Mirror], None]:
    def pull(mirror: Mirror) -> None:
        pull_enrolment_batch(mirror, batch_id)
        _locked(mirror, "hw_devices", "device_id", "enrolment_status IN ('ENROL_PENDING', 'UNENROL_PENDING')", [])
    return pull


def push_enrolment_selected(mirror: Mirror, batch_id: str) -> None:
    params = {"batch": batch_id}
    mirror.push("hw_enrolment_requests", "batch_id = $batch", params, conflict="DO NOTHING")
    mirror.upsert("hw_devices", ["device_id"],
                  "device_id IN (SELECT device_id FROM hw_enrolment_requests WHERE batch_id = $batch)", params)
    mirror.upsert("batches", ["batch_id"], "batch_id = $batch", params)


def pull_answered(mirror: Mirror, request_ids: list) -> None:
    """The requests a response file answers and their devices, locked FOR UPDATE: what matching and applying its
    answers read (the ids cross once, as a temp table PostgreSQL joins on)."""
    mirror.stage_keys("answered_requests", "SELECT unnest($ids) AS k", {"ids": request_ids})
    _locked(mirror, "hw_enrolment_requests", "request_id", "request_id IN (SELECT k FROM answered_requests)", [])
    _locked(mirror, "hw_devices", "device_id", "device_id IN (SELECT device_id FROM hw_enrolment_requests WHERE "
                                               "request_id IN (SELECT k FROM answered_requests))", [])


def push_answers(mirror: Mirror, batch_id: str) -> None:
    """A response file's effects (before `Intake.push_loaded` pushes its responses, batch and intake rows)."""
    params = {"batch": batch_id}
    mirror.push_update("hw_enrolment_requests", ["request_id"], ["outcome", "reason", "answered_batch_id"],
                       "answered_batch_id = $batch", params)
    mirror.upsert("hw_devices", ["device_id"], "device_id IN (SELECT device_id FROM hw_enrolment_responses WHERE "
                                               "batch_id = $batch AND outcome <> 'REJECTED')", params)
    push_common(mirror)
