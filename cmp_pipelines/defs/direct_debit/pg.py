"""The direct debit flows on PostgreSQL (CMP_DATABASE_URL): what each step pulls, pushes and locks.

The flows follow core/db/mirror.py's pattern: the step's DuckDB SQL runs unchanged on the run's scratch; it pulls
what its rules read and pushes what it wrote in one PostgreSQL transaction committed just before the scratch's.

Locks (transaction-level advisory locks, released by the step's COMMIT or ROLLBACK; each transaction takes at most
one of them, so no two runs can wait on each other in a cycle):
- `dd:mandates:<service user number>`: every step that decides from or changes mandate state or a debit's status -
  the AUDDIS selection (pending instructions, activation), the collections selection (active mandates, what was
  collected before, soft returns due again, the cancellation after a final debit), the ADDACS and ARUDD
  applications (amend/cancel mandates, mark debits returned). Each pulls the rows it decides from only once it
  holds the lock, so a run never decides from a state another run is about to change, and an invoice is never
  taken by two selections. The ADDACS and ARUDD applications also row-lock (FOR UPDATE) the accounts their report
  names and then those accounts' mandates, each in key order, so a writer outside the flows (the API) waits for the
  push instead of being overwritten by it; accounts first, as the API's set-up requests and the card rejections
  take them, so no two writers wait on each other in a cycle.
- `dd:notices`: the advance-notice step (two runs would raise the same notice; its id is UNIQUE anyway).
- `bacs:serial:<service user number>`: the Bacs serial register, held only while a serial is drawn and written
  (its own short transaction, committed before the file is written), so two submissions at once never get one
  serial or one file number, and a re-run of a batch finds the serial it was given.
- `config:rejection_codes`: the ARUDD steps' sync of the rejection codes into PostgreSQL (core/reference.py), its
  own short transaction at the start of the step, before any lock above; `config:mandate_revision_codes` the same
  for the ADDACS steps' reasons.
The ledger needs no lock: postings go through `core.ledger.post_to_postgres` (UNIQUE idempotency keys, inserted in
key order) and the reversals of returns have keys of their own.
"""

from __future__ import annotations

from datetime import datetime

from cmp_pipelines.core.db.mirror import Mirror, replace_pulled

DD_ACCOUNTS = "SELECT account_number FROM accounts WHERE payment_type = 'DIRECT_DEBIT'"
# mandates to cancel after their final collection, whatever their account pays by now (FINAL_CANCELLATIONS)
TO_CANCEL = "(final_collection_requested AND status NOT IN ('CANCELLED', 'FAILED'))"
TO_CANCEL_ACCOUNTS = f"SELECT account_number FROM mandates WHERE {TO_CANCEL}"


def mandates_lock(service_user_number: str) -> str:
    return f"dd:mandates:{service_user_number}"


def serial_lock(service_user_number: str) -> str:
    return f"bacs:serial:{service_user_number}"


NOTICES_LOCK = "dd:notices"


def lock_accounts(mirror: Mirror, accounts_sql: str, params: list) -> None:
    """Row-lock the accounts a report names before their mandates, in account order: the API's set-up requests lock
    an account and then change what hangs on it (its mandate, its card), and the card rejections lock accounts too,
    so every writer takes accounts first, in one order, and none can wait on another in a cycle."""
    mirror.query(f"SELECT account_number FROM accounts WHERE account_number IN ({accounts_sql}) "
                 "ORDER BY account_number FOR UPDATE", params)


def pull_batch(mirror: Mirror, batch_id: str) -> None:
    """A batch row, fresh (a re-run, or a later step in a new process, finds what the first one recorded)."""
    mirror.pull("batches", "batch_id = $1", [batch_id], key=["batch_id"])


def pull_rows_of_batch(mirror: Mirror, table: str, batch_id: str) -> None:
    """The rows of one frozen batch (AUDDIS instructions, a day's debits), replacing what the scratch held of it."""
    mirror.settle()
    mirror.con.execute(f"DELETE FROM {table} WHERE batch_id = ?", [batch_id])  # noqa: S608 - our tables
    mirror.pull(table, "batch_id = $1", [batch_id])


def pull_collection_items(mirror: Mirror, batch_id: str) -> None:
    """A day's debits and their invoices (what the file, the postings and the reversal of a return read)."""
    pull_rows_of_batch(mirror, "dd_collections", batch_id)
    mirror.con.execute("DELETE FROM dd_collection_items WHERE collection_id IN "
                       "(SELECT collection_id FROM dd_collections WHERE batch_id = ?)", [batch_id])
    mirror.pull("dd_collection_items", "collection_id IN (SELECT collection_id FROM dd_collections "
                                       "WHERE batch_id = $1)", [batch_id])


def pull_direct_debit_payers(mirror: Mirror, *, lock_mandates: bool) -> None:
    """What the notices and the selection read: the direct-debit accounts, their mandates (and any mandate to be
    cancelled after its final collection, with its account), their invoices and what
    has been paid on those (OUTSTANDING_SQL), their advance notices and, for those not yet SENT, the dispatcher's
    record of the message (notices.refresh_sent)."""
    replace_pulled(mirror, "accounts", f"account_number IN ({DD_ACCOUNTS}) OR account_number IN ({TO_CANCEL_ACCOUNTS})")
    replace_pulled(mirror, "mandates", f"account_number IN ({DD_ACCOUNTS}) OR {TO_CANCEL}", lock_rows=lock_mandates)
    replace_pulled(mirror, "invoices", f"account_number IN ({DD_ACCOUNTS})")
    replace_pulled(mirror, "ledger_postings", "invoice_number IN (SELECT invoice_number FROM invoices "
                                              f"WHERE account_number IN ({DD_ACCOUNTS})) AND kind <> 'INVOICE'")
    replace_pulled(mirror, "collection_notices", f"payment_type = 'DIRECT_DEBIT' AND account_number IN ({DD_ACCOUNTS})")
    unsent = ("SELECT event_id FROM collection_notices WHERE payment_type = 'DIRECT_DEBIT' AND status = 'RAISED' "
              "AND event_id IS NOT NULL")
    replace_pulled(mirror, "workflow_dispatch", f"event_id IN ({unsent})")
    replace_pulled(mirror, "email_outbox", f"kind = 'COMMUNICATION' AND source_ref IN (SELECT event_id::VARCHAR "
                                           f"FROM ({unsent}) u)")


def pull_collection_history(mirror: Mirror) -> None:
    """What the selection reads of earlier debits: every debit under a direct-debit account's mandates (first or
    regular, soft returns due again) and the invoices ever taken by one (never collected twice)."""
    mandates = f"SELECT mandate_id FROM mandates WHERE account_number IN ({DD_ACCOUNTS})"
    replace_pulled(mirror, "dd_collections", f"mandate_id IN ({mandates})")
    replace_pulled(mirror, "dd_collection_items",
                   f"invoice_number IN (SELECT invoice_number FROM invoices WHERE account_number IN ({DD_ACCOUNTS})) "
                   f"OR collection_id IN (SELECT collection_id FROM dd_collections WHERE mandate_id IN ({mandates}))")


def push_mandate_changes(mirror: Mirror, now: datetime) -> None:
    """The mandates a step changed (those with a history row stamped `now`) and that history."""
    mirror.upsert("mandates", ["mandate_id"],
                  "mandate_id IN (SELECT mandate_id FROM mandate_history WHERE changed_at = $now)", {"now": now})
    mirror.push("mandate_history", "changed_at = $now", {"now": now})


def push_events(mirror: Mirror, now: datetime) -> None:
    """The workflow events a step raised (stamped `now`), numbered by PostgreSQL's own sequence in the order raised.
    Not core/db/mirror.push_events: these steps number events in the scratch's own sequence and refer to none by
    id before the push (the notices step sets its notices' event ids in PostgreSQL after it)."""
    mirror.push_new("workflow_events", "event_id", "raised_at = $now", {"now": now})


def pull_collections_named(mirror: Mirror, references_sql: str) -> None:
    """The debits collected under the mandate references a report names (`references_sql`, one column `k` over the
    scratch), replacing what the scratch held of them: what the ARUDD classification matches returns to."""
    mirror.stage_keys("named_references", references_sql)
    mirror.con.execute(f"DELETE FROM dd_collections WHERE reference IN (SELECT k FROM ({references_sql}))")
    mirror.pull("dd_collections", "reference IN (SELECT k FROM named_references)")


_RETURNED = "SELECT collection_id FROM dd_returns WHERE batch_id = $1 AND collection_id IS NOT NULL"
_RETURN_ACCOUNTS = "SELECT account_number FROM dd_returns WHERE batch_id = $1 AND account_number IS NOT NULL"


def pull_returns_state(mirror: Mirror, batch_id: str) -> None:
    """Under the mandates lock, what the rejections engine reads to apply an ARUDD batch: its batch rows and returns,
    the debits returned (their invoices and postings, to reverse), and the accounts and mandates they concern."""
    mirror.pull("batches", "batch_id = $1 OR parent_batch_id = $1", [batch_id], key=["batch_id"])
    mirror.pull("dd_returns", "batch_id = $1", [batch_id], key=["batch_id", "position"])
    mirror.settle()
    returned = [batch_id]
    mirror.con.execute("DELETE FROM dd_collections WHERE collection_id IN (SELECT collection_id FROM dd_returns "
                       "WHERE batch_id = ?)", returned)
    mirror.pull("dd_collections", f"collection_id IN ({_RETURNED})", returned)
    mirror.con.execute("DELETE FROM dd_collection_items WHERE collection_id IN (SELECT collection_id FROM dd_returns "
                       "WHERE batch_id = ?)", returned)
    mirror.pull("dd_collection_items", f"collection_id IN ({_RETURNED})", returned)
    mirror.pull("ledger_postings", f"source_ref IN ({_RETURNED}) AND kind <> 'INVOICE'", returned,
                key=["idempotency_key"])
    lock_accounts(mirror, _RETURN_ACCOUNTS, returned)
    mirror.pull("accounts", f"account_number IN ({_RETURN_ACCOUNTS})", returned, key=["account_number"])
    mirror.pull("payment_cards", f"account_number IN ({_RETURN_ACCOUNTS})", returned, key=["account_number"])
    mirror.con.execute("DELETE FROM mandates WHERE account_number IN (SELECT account_number FROM dd_returns "
                       "WHERE batch_id = ?)", returned)
    rows = mirror.query(f"SELECT * FROM mandates WHERE account_number IN ({_RETURN_ACCOUNTS}) "
                        "ORDER BY mandate_id FOR UPDATE", returned)
    mirror.load("mandates", rows)


def push_returns_applied(mirror: Mirror, batch_id: str, reversal_batch: str, now: datetime) -> None:
    """What applying an ARUDD batch wrote besides its reversal postings: the returns' outcomes, the debits' new
    status and re-presentation dates, suspensions and payment-type reversions (with their history), events,
    communications, mandate actions, the batch rows and the job run."""
    params = {"batch": batch_id}
    mirror.push_update("dd_returns", ["batch_id", "position"],
                       ["outcome", "decline", "retry_due_on", "problem_code", "problem", "new_payment_type",
                        "payment_type_note"], "batch_id = $batch", params)
    mirror.push_update("dd_collections", ["collection_id"],
                       ["status", "reason_code", "rejection_batch_id", "retry_due_on"],
                       "rejection_batch_id = $batch", params)
    mirror.push_update("accounts", ["account_number"], ["payment_type", "suspended_until"],
                       "account_number IN (SELECT account_number FROM dd_returns WHERE batch_id = $batch)", params)
    mirror.push("payment_type_changes", "changed_at = $now", {"now": now})
    push_events(mirror, now)
    mirror.push("customer_communications", "batch_id = $batch", params, conflict="DO NOTHING")
    push_mandate_changes(mirror, now)
    mirror.upsert("batches", ["batch_id"], "batch_id IN ($batch, $reversal)", {**params, "reversal": reversal_batch})
    mirror.push("job_runs", "batch_id = $reversal AND started_at = $now", {"reversal": reversal_batch, "now": now})


_ADVISED = "SELECT mandate_id FROM addacs_advices WHERE batch_id = $1 AND mandate_id IS NOT NULL"
_ADVISED_ACCOUNTS = "SELECT account_number FROM addacs_advices WHERE batch_id = $1 AND account_number IS NOT NULL"


def pull_advices_state(mirror: Mirror, batch_id: str) -> None:
    """Under the mandates lock, what applying an ADDACS batch reads: its batch row and advices, the advised accounts'
    mandates (row-locked: the advised ones change; any ACTIVE one lets the account keep direct debit), the accounts,
    their cards and their payment-type history (a reinstatement restores the type the cancellation changed)."""
    params = [batch_id]
    pull_batch(mirror, batch_id)
    mirror.pull("addacs_advices", "batch_id = $1", params, key=["batch_id", "position"])
    lock_accounts(mirror, _ADVISED_ACCOUNTS, params)
    rows = mirror.query(f"SELECT * FROM mandates WHERE mandate_id IN ({_ADVISED}) OR account_number IN "
                        f"({_ADVISED_ACCOUNTS}) ORDER BY mandate_id FOR UPDATE", params)
    mirror.load("mandates", rows, key=["mandate_id"])
    mirror.pull("accounts", f"account_number IN ({_ADVISED_ACCOUNTS})", params, key=["account_number"])
    mirror.pull("payment_cards", f"account_number IN ({_ADVISED_ACCOUNTS})", params, key=["account_number"])
    mirror.settle()
    mirror.con.execute("DELETE FROM payment_type_changes WHERE account_number IN (SELECT account_number FROM "
                       "addacs_advices WHERE batch_id = ?)", params)
    mirror.pull("payment_type_changes", f"account_number IN ({_ADVISED_ACCOUNTS})", params)


def push_advices_applied(mirror: Mirror, batch_id: str, now: datetime) -> None:
    """What applying an ADDACS batch changed: mandates and their history, payment types and their history, the
    events (PostgreSQL's ids), the batch row."""
    push_mandate_changes(mirror, now)
    mirror.push("payment_type_changes", "changed_at = $now", {"now": now})
    mirror.push_update("accounts", ["account_number"], ["payment_type"],
                       "account_number IN (SELECT account_number FROM addacs_advices WHERE batch_id = $batch)",
                       {"batch": batch_id})
    push_events(mirror, now)
    mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": batch_id})
