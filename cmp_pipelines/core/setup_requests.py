"""Account set-up asked for through the API (payment type, card token, mandate), applied to the main store.

The API applies a request at once when `cmp.duckdb` is free within a short wait; when a pipeline run holds
it, the request is queued in the API store (the client gets 202 and a status resource) and the next
`api_sync_job` run applies the queue in order. Either way the same services do the work.
"""

from __future__ import annotations

import json
from datetime import date, datetime

import duckdb

from cmp_pipelines.core.config import load_direct_debit, load_partners
from cmp_pipelines.core.db.api_store import ApiStore
from cmp_pipelines.core.mandates import create_mandate
from cmp_pipelines.core.payment_setup import (
    SetupError,
    approve_card_refund,
    payment_profile,
    refund_view,
    register_card,
    set_payment_type,
)
from cmp_pipelines.core.settings import paths


def apply_request(con: duckdb.DuckDBPyConnection, kind: str, account_number: str, body: dict, *, now: datetime,
                  cause: str) -> dict:
    """Apply one request with the shared set-up services; SetupError says which field is at fault."""
    config_dir = paths().config_dir
    partners = load_partners(config_dir)
    card = {k: body.get(k) for k in ("card_token", "last_four", "expiry", "provider")}
    if kind == "PAYMENT_TYPE":
        return set_payment_type(con, account_number, body["payment_type"], partners=partners, now=now, cause=cause,
                                **card)
    if kind == "CARD":
        register_card(con, account_number, partners=partners, now=now, **card)
        return payment_profile(con, account_number)
    if kind == "MANDATE":
        return create_mandate(con, account_number, sort_code=body["sort_code"], bank_account=body["bank_account"],
                              account_name=body["account_name"], reference=body.get("reference"),
                              config=load_direct_debit(config_dir, partners), now=now)
    if kind == "REFUND":
        due_on = date.fromisoformat(body["due_on"]) if body.get("due_on") else None
        refund_id = approve_card_refund(con, account_number, body["amount"], now=now, due_on=due_on,
                                        reason=body.get("reason"))
        return {**refund_view(con, refund_id), "approved_by": body.get("approved_by")}
    raise ValueError(f"unknown set-up request kind {kind!r}")


def record_overlay(api: ApiStore, kind: str, result: dict, now: datetime) -> None:
    """What the API must know before the next read-model publish: the account's payment type and card."""
    if kind not in ("PAYMENT_TYPE", "CARD"):
        return
    card = result.get("card") or {}
    with api.write() as con:
        con.execute(
            "INSERT INTO account_overlay VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account_number) DO UPDATE SET "
            "payment_type = excluded.payment_type, card_provider = excluded.card_provider, "
            "card_token = excluded.card_token, last_four = excluded.last_four, expiry = excluded.expiry, "
            "applied_at = excluded.applied_at",
            [result["account_number"], result["payment_type"], card.get("provider"), card.get("card_token"),
             card.get("last_four"), card.get("expiry"), now.isoformat()],
        )


def apply_queued(con: duckdb.DuckDBPyConnection, api: ApiStore, now: datetime, limit: int = 1000) -> dict[str, int]:
    """Apply queued requests oldest first; a refused one is FAILED with its problem, never retried."""
    counts = {"APPLIED": 0, "FAILED": 0}
    for row in api.query("SELECT request_id, kind, account_number, body, channel FROM setup_requests "
                         "WHERE status = 'QUEUED' ORDER BY created_at, request_id LIMIT ?", [limit]):
        try:
            result = apply_request(con, row["kind"], row["account_number"], json.loads(row["body"]), now=now,
                                   cause=f"api {row['channel'].lower()} (queued)")
        except SetupError as exc:
            status, result_text = "FAILED", None
            problem = json.dumps({"field": exc.field, "detail": exc.message, "status": exc.status})
        else:
            status, result_text, problem = "APPLIED", json.dumps(result, default=str), None
            record_overlay(api, row["kind"], result, now)
        with api.write() as w:
            w.execute("UPDATE setup_requests SET status = ?, result = ?, problem = ?, applied_at = ? "
                      "WHERE request_id = ? AND status = 'QUEUED'",
                      [status, result_text, problem, now.isoformat(), row["request_id"]])
        counts[status] += 1
    return counts
