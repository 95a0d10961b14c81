"""Direct Debit Instructions (mandates): set-up, amendment and cancellation, as the CLI and HTTP API call them.

Lifecycle: PENDING_SUBMISSION -> (AUDDIS 0N) SUBMITTED -> (no rejection for `activation_days`) ACTIVE;
an amendment of a submitted or active mandate is AMENDMENT_PENDING until the AUDDIS sends 0C then 0N
(then SUBMITTED again); a cancellation is CANCELLED at once and the 0C goes on the next AUDDIS; FAILED is
set by an ADDACS or AUDDIS rejection. Every change is kept in mandate_history.
"""

from __future__ import annotations

import re
from datetime import datetime

import duckdb

from cmp_pipelines.core.config import DirectDebitConfig
from cmp_pipelines.core.db.connection import transaction
from cmp_pipelines.core.payment_setup import SetupError, require_account

REFERENCE = re.compile(r"^[A-Z0-9 ./&-]{6,18}$")
LIVE = ("PENDING_SUBMISSION", "SUBMITTED", "ACTIVE", "AMENDMENT_PENDING")


def validate_bank_details(sort_code: str, bank_account: str, account_name: str) -> tuple[str, str, str]:
    """(sort code without dashes, account number, trimmed name), or a SetupError naming the field at fault."""
    sort_code = (sort_code or "").replace("-", "")
    if not re.fullmatch(r"[0-9]{6}", sort_code):
        raise SetupError("sort_code", "must be 6 digits (dashes allowed: 12-34-56)")
    if not re.fullmatch(r"[0-9]{8}", bank_account or ""):
        raise SetupError("bank_account", "must be 8 digits")
    name = (account_name or "").strip()
    if not name or len(name) > 60:
        raise SetupError("account_name", "must be 1-60 characters (the first 18 go in Bacs files)")
    return sort_code, bank_account, name


def validate_reference(reference: str) -> str:
    if not REFERENCE.fullmatch(reference or ""):
        raise SetupError("reference", "must be 6-18 characters of A-Z 0-9 space . / & -")
    if len(re.sub(r"[^A-Z0-9]", "", reference)) < 6:
        raise SetupError("reference", "needs at least 6 significant characters (letters or digits)")
    if len(set(reference.replace(" ", ""))) == 1:
        raise SetupError("reference", "cannot be one character repeated")
    return reference


def _history(con, mandate_id: str, old: str | None, new: str, cause: str, now: datetime) -> None:
    con.execute("INSERT INTO mandate_history VALUES (?, ?, ?, ?, ?)", [mandate_id, old, new, cause, now])


def create_mandate(
    con: duckdb.DuckDBPyConnection, account_number: str, *, sort_code: str, bank_account: str, account_name: str,
    config: DirectDebitConfig, now: datetime, reference: str | None = None,
) -> dict:
    """A new mandate, pending submission on the next AUDDIS; the reference defaults to 'CMP' + the account."""
    sort_code, bank_account, account_name = validate_bank_details(sort_code, bank_account, account_name)
    reference = validate_reference(reference or f"CMP{account_number}")
    with transaction(con):
        require_account(con, account_number)
        live = con.execute(
            f"SELECT mandate_id, status FROM mandates WHERE account_number = ? AND status IN {LIVE!r}",
            [account_number],
        ).fetchone()
        if live:
            raise SetupError("account_number", f"account {account_number} already has mandate {live[0]} ({live[1]});"
                                               " amend or cancel it", status=409)
        if con.execute("SELECT 1 FROM mandates WHERE service_user_number = ? AND reference = ?",
                       [config.service_user_number, reference]).fetchone():
            raise SetupError("reference", f"{reference!r} is already used under service user "
                                          f"{config.service_user_number}; references are unique", status=409)
        mandate_id = f"DDI-{config.service_user_number}-{reference.replace(' ', '_')}"
        con.execute(
            "INSERT INTO mandates (mandate_id, account_number, service_user_number, reference, sort_code, "
            "bank_account, account_name, status, pending_instruction, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'PENDING_SUBMISSION', 'NEW', ?)",
            [mandate_id, account_number, config.service_user_number, reference, sort_code, bank_account,
             account_name, now],
        )
        _history(con, mandate_id, None, "PENDING_SUBMISSION", "created", now)
    return mandate_view(con, mandate_id)


def amend_mandate(
    con: duckdb.DuckDBPyConnection, mandate_id: str, *, sort_code: str, bank_account: str, account_name: str,
    now: datetime, cause: str = "amended",
) -> dict:
    sort_code, bank_account, account_name = validate_bank_details(sort_code, bank_account, account_name)
    with transaction(con):
        status = _status(con, mandate_id)
        if status in ("CANCELLED", "FAILED"):
            raise SetupError("mandate_id", f"mandate {mandate_id} is {status}; create a new one", status=409)
        if status == "PENDING_SUBMISSION":  # never sent: the 0N simply carries the new details
            con.execute("UPDATE mandates SET sort_code = ?, bank_account = ?, account_name = ? WHERE mandate_id = ?",
                        [sort_code, bank_account, account_name, mandate_id])
        else:
            con.execute(
                """
                UPDATE mandates SET previous_sort_code = coalesce(previous_sort_code, sort_code),
                    previous_bank_account = coalesce(previous_bank_account, bank_account),
                    previous_account_name = coalesce(previous_account_name, account_name),
                    sort_code = ?, bank_account = ?, account_name = ?, status = 'AMENDMENT_PENDING',
                    pending_instruction = 'AMEND'
                WHERE mandate_id = ?
                """,
                [sort_code, bank_account, account_name, mandate_id],
            )
            _history(con, mandate_id, status, "AMENDMENT_PENDING", cause, now)
    return mandate_view(con, mandate_id)


def cancel_mandate(con: duckdb.DuckDBPyConnection, mandate_id: str, *, now: datetime, cause: str = "cancelled",
                   tell_bank: bool = True, after_final_collection: bool = False) -> dict:
    """Cancelled now; a mandate the bank knows of gets its 0C on the next AUDDIS (unless the bank told us).

    `after_final_collection` keeps an active mandate for one last collection (transaction code 19) of what is
    due, then the collection job cancels it."""
    with transaction(con):
        status = _status(con, mandate_id)
        if status in ("CANCELLED", "FAILED"):
            raise SetupError("mandate_id", f"mandate {mandate_id} is already {status}", status=409)
        if after_final_collection:
            if status != "ACTIVE":
                raise SetupError("after_final_collection", f"mandate {mandate_id} is {status}: only an active "
                                                           "mandate can make a final collection", status=409)
            con.execute("UPDATE mandates SET final_collection_requested = TRUE WHERE mandate_id = ?", [mandate_id])
            _history(con, mandate_id, status, status, f"{cause}: cancel after the final collection (19)", now)
            return mandate_view(con, mandate_id)
        instruction = "CANCEL" if tell_bank and status != "PENDING_SUBMISSION" else None
        con.execute("UPDATE mandates SET status = 'CANCELLED', pending_instruction = ?, cancelled_on = ? "
                    "WHERE mandate_id = ?", [instruction, now.date(), mandate_id])
        _history(con, mandate_id, status, "CANCELLED", cause, now)
    return mandate_view(con, mandate_id)


def resume_mandate(con: duckdb.DuckDBPyConnection, mandate_id: str, *, now: datetime, cause: str) -> dict:
    """An operator's decision on a mandate held by an ARUDD return (unmapped return code, account transferred,
    dispute): it collects again. `cancel_mandate` is the other decision."""
    with transaction(con):
        status = _status(con, mandate_id)
        if status != "HELD":
            raise SetupError("mandate_id", f"mandate {mandate_id} is {status}, not HELD: nothing to resume",
                             status=409)
        con.execute("UPDATE mandates SET status = 'ACTIVE', held_reason = NULL WHERE mandate_id = ?", [mandate_id])
        _history(con, mandate_id, status, "ACTIVE", f"resumed by an operator: {cause}", now)
    return mandate_view(con, mandate_id)


def convert_mandate(con: duckdb.DuckDBPyConnection, mandate_id: str, *, now: datetime) -> dict:
    """A paper instruction already held by the payer's bank is lodged electronically with AUDDIS 0S."""
    with transaction(con):
        status = _status(con, mandate_id)
        if status != "ACTIVE":
            raise SetupError("mandate_id", f"mandate {mandate_id} is {status}: only an active paper mandate is "
                                           "converted (0S)", status=409)
        con.execute("UPDATE mandates SET pending_instruction = 'CONVERT' WHERE mandate_id = ?", [mandate_id])
        _history(con, mandate_id, status, status, "conversion to AUDDIS requested (0S)", now)
    return mandate_view(con, mandate_id)


def _status(con, mandate_id: str) -> str:
    row = con.execute("SELECT status FROM mandates WHERE mandate_id = ?", [mandate_id]).fetchone()
    if row is None:
        raise SetupError("mandate_id", f"mandate {mandate_id!r} does not exist", status=404)
    return row[0]


def mandate_view(con: duckdb.DuckDBPyConnection, mandate_id: str) -> dict:
    row = con.execute(
        "SELECT mandate_id, account_number, service_user_number, reference, sort_code, bank_account, account_name, "
        "status, pending_instruction, submitted_on::VARCHAR, activated_on::VARCHAR, cancelled_on::VARCHAR, "
        "coalesce(final_collection_requested, FALSE) "
        "FROM mandates WHERE mandate_id = ?", [mandate_id],
    ).fetchone()
    if row is None:
        raise SetupError("mandate_id", f"mandate {mandate_id!r} does not exist", status=404)
    keys = ("mandate_id", "account_number", "service_user_number", "reference", "sort_code", "bank_account",
            "account_name", "status", "pending_instruction", "submitted_on", "activated_on", "cancelled_on",
            "final_collection_requested")
    return dict(zip(keys, row, strict=True))
