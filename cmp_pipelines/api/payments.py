"""Create Payment (idempotent), payment status, an account's payments and balance, the provider callback."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
from datetime import datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Path, Request, Response

from cmp_pipelines.api.context import ApiContext, Client, Ctx, log
from cmp_pipelines.api.models import ACCOUNT, Balance, CreatePayment, Payment, check_account
from cmp_pipelines.api.problems import Problem
from cmp_pipelines.core.cards import find_pan, mask_pans_in
from cmp_pipelines.core.config_payments import ApiClient
from cmp_pipelines.core.money import format_minor, parse_amount
from cmp_pipelines.core.payment_provider import SIGNATURE_HEADER, ActionRequired, BadSignature, ProviderTimeout
from cmp_pipelines.defs.one_off.flow import finish

router = APIRouter()
PROBLEM = {"model": dict, "content": {"application/problem+json": {}}}
ERRORS = {401: PROBLEM, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM, 503: PROBLEM}
IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                       pattern=r"^[\x21-\x7e]+$",
                                       description="Required. The same key and body return the same payment; "
                                                   "the same key with another body is a 409.")]

AccountPath = Annotated[str, Path(description="The account number.", examples=["ACC00000001"],
                                  json_schema_extra={"pattern": ACCOUNT.pattern})]


def valid_account(value: str) -> str:
    try:
        return check_account(value)
    except ValueError as exc:
        raise Problem(422, f"account_number: {exc}", field="account_number") from None


def account(ctx: ApiContext, number: str) -> dict:
    """The account as the backend has it (embedded: the published read model with the API's own set-up changes
    laid over it; PostgreSQL: the store now)."""
    view = ctx.backend.account(number)
    if view is None:
        if ctx.backend.published_at() is None:
            raise Problem(503, "account data has not been published to the API yet; run `cmp-pipelines api "
                               "publish` or wait for the next api_sync_job run", slug="not-ready")
        raise Problem(404, f"account {number} does not exist", field="account_number")
    return view


def payment_view(row: sqlite3.Row | dict, ctx: ApiContext) -> dict:
    failed = row["status"] in ("DECLINED", "FAILED") and row["ledger_state"] == "RECORDED"
    event = ctx.settings.failure_event
    return {
        "payment_id": row["payment_id"], "account_number": row["account_number"],
        "amount": format_minor(row["amount_minor"]), "currency": row["currency"], "method": row["method"],
        "status": row["status"], "reason_code": row["reason_code"], "reason": row["reason"],
        "channel": row["channel"], "client_id": row["client_id"], "reference": row["reference"],
        "provider": row["provider"], "provider_reference": row["provider_reference"],
        "redirect_url": row["redirect_url"], "last_four": row["last_four"], "created_at": row["created_at"],
        "completed_at": row["completed_at"],
        "ledger": {"state": row["ledger_state"], "batch_id": row["ledger_batch_id"]},
        "workflow_event": {"type": event.event_type, "code": event.event_code} if failed else None,
    }


def _get(ctx: ApiContext, payment_id: str) -> sqlite3.Row | dict:
    row = ctx.store.payment(payment_id)
    if row is None:
        raise Problem(404, f"payment {payment_id} does not exist", field="payment_id")
    return row


def _validate_target(ctx: ApiContext, body: CreatePayment) -> dict:
    target = account(ctx, body.account_number)
    if body.currency != target["currency"]:
        raise Problem(422, f"currency: account {body.account_number} is billed in {target['currency']}",
                      field="currency")
    if target["status"] != "ACTIVE":
        raise Problem(422, f"account_number: account {body.account_number} is {target['status']}",
                      field="account_number")
    if body.method == "CARD_ON_FILE" and not target["card_token"]:
        raise Problem(422, f"method: account {body.account_number} has no card on file; register one or use "
                           "HOSTED_PAGE", field="method")
    return target


def payment_id(now: datetime) -> str:
    """`PAY-<date>-P<12 hex>`: the letter keeps the date's digits and the random ones from forming one run that a
    card-number scan could read as a Luhn-valid number and mask in a message (1 id in ~10 did before)."""
    return f"PAY-{now:%Y%m%d}-P{secrets.token_hex(6).upper()}"


def _record(ctx: ApiContext, who: ApiClient, key: str, body: CreatePayment) -> tuple[dict, dict | None]:
    """(payment row, account) for a new payment; (existing row, None) for a replay; 409 for another body.

    Only a new key is checked against the account, so a replay answers as the first call did. Twin requests
    racing with one new key meet at the UNIQUE (client, key) insert: the loser replays the winner's payment.
    A store that can check the account and insert in one statement (`insert_if_valid`, PostgreSQL) tries that
    first; when it inserts nothing (a replay, a bad target) the steps below find out which, as they always did."""
    digest = hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()
    now = ctx.now()
    row = {
        "payment_id": payment_id(now), "client_id": who.client_id,
        "channel": who.channel, "idempotency_key": key, "request_hash": digest,
        "account_number": body.account_number, "amount_minor": parse_amount(body.amount),
        "currency": body.currency, "method": body.method, "reference": body.reference,
        "status": "PENDING" if body.method == "CARD_ON_FILE" else "AWAITING_CARD",
        "provider": ctx.provider.name, "created_at": now.isoformat(), "updated_at": now.isoformat(),
        "reason_code": None, "reason": None, "provider_reference": None, "redirect_url": None,
        "last_four": None, "completed_at": None, "ledger_state": "WAITING", "ledger_batch_id": None,
    }
    target = ctx.store.insert_if_valid(row, INSERTED)
    if target is not None:
        return row, target
    existing = ctx.store.payment_by_key(who.client_id, key)
    if existing is None:
        target = _validate_target(ctx, body)
        if ctx.store.insert_payment(row, INSERTED):
            return row, target
        existing = ctx.store.payment_by_key(who.client_id, key)
    if existing["request_hash"] != digest:
        raise Problem(409, f"Idempotency-Key was already used by payment {existing['payment_id']} with a "
                           "different body; use a new key for a new payment", field="Idempotency-Key",
                      slug="idempotency-key-reused")
    return dict(existing), None


INSERTED = ("payment_id", "client_id", "channel", "idempotency_key", "request_hash", "account_number",
            "amount_minor", "currency", "method", "reference", "status", "provider", "created_at", "updated_at")


def _create(ctx: ApiContext, who: ApiClient, key: str, body: CreatePayment) -> tuple[int, dict, dict]:
    row, target = _record(ctx, who, key, body)
    if target is None:
        return 200, payment_view(row, ctx), {"Idempotent-Replayed": "true"}
    payment_id, headers = row["payment_id"], {}
    if body.method == "CARD_ON_FILE":
        try:
            outcome = ctx.provider.charge(merchant_reference=payment_id, card_token=target["card_token"],
                                          amount_minor=row["amount_minor"], currency=row["currency"])
        except ProviderTimeout:
            log.warning("payment %s: provider timed out; left PENDING for reconciliation", payment_id)
        except ActionRequired as action:  # SCA: the customer finishes it on the provider's page, like HOSTED_PAGE
            ctx.store.action_required(payment_id, action.session.session_id, action.session.redirect_url,
                                      action.provider_reference)
            row.update(status="AWAITING_CARD", redirect_url=action.session.redirect_url,
                       provider_reference=action.provider_reference)
            headers["Location"] = action.session.redirect_url
        else:
            now = ctx.now()
            if finish(ctx.store, payment_id, ("PENDING",), outcome.status, now, reason_code=outcome.reason_code,
                      reason=outcome.reason, provider_reference=outcome.provider_reference,
                      last_four=target["last_four"]):
                row.update(status=outcome.status, reason_code=outcome.reason_code, reason=outcome.reason,
                           provider_reference=outcome.provider_reference, last_four=target["last_four"],
                           updated_at=now.isoformat(), completed_at=now.isoformat(), ledger_state="DUE")
            else:
                row = dict(_get(ctx, payment_id))
    else:
        base_url = ctx.public_base_url  # never the request's Host header: a client could name any host there
        session = ctx.provider.start_hosted_payment(
            merchant_reference=payment_id, amount_minor=row["amount_minor"], currency=row["currency"],
            callback_url=f"{base_url}/v1/provider/callbacks",
            page_base_url=ctx.settings.hosted_page_url or f"{base_url}/sandbox-provider")
        ctx.store.set_hosted(payment_id, session.session_id, session.redirect_url)
        row.update(redirect_url=session.redirect_url)
        headers["Location"] = session.redirect_url
    return 201, payment_view(row, ctx), headers


UUID_KEY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def holds_card_number(idempotency_key: str) -> bool:
    """A canonical UUID, what most clients send (Stripe's advice too), is never read as a card number: its
    8-4-4-4-12 hex groups are no printed card layout, yet about one random UUID in 500 holds a Luhn-valid window."""
    return not UUID_KEY.fullmatch(idempotency_key) and find_pan(idempotency_key) is not None


@router.post("/v1/payments", status_code=201, response_model=Payment, tags=["payments"],
             responses={200: {"model": Payment, "description": "Replay: this key already made this payment."},
                        **ERRORS},
             summary="Create a one-off card payment")
async def create_payment(body: CreatePayment, idempotency_key: IdempotencyKey, request: Request,
                         who: Client) -> Response:
    """Runs on the event loop: its store work is a few SQLite statements of microseconds, and a thread hop
    per request cost more than the work under load. A provider that blocks on the network runs in a thread.
    The context comes straight from the app rather than through a dependency: on the busiest route each
    dependency FastAPI solves is a measurable share of the request."""
    ctx: ApiContext = request.app.state.cmp
    if holds_card_number(idempotency_key):  # the key is stored with the payment: a card number must never become one
        raise Problem(422, f"Idempotency-Key {mask_pans_in(idempotency_key)!r} contains a card number; use "
                           "another random key", field="Idempotency-Key")
    args = (ctx, who, idempotency_key, body)
    if ctx.provider.blocking or ctx.store.blocking:  # PostgreSQL: each statement waits on the network
        status, view, headers = await ctx.off_loop(_create, *args)
    else:
        status, view, headers = _create(*args)
    return Response(orjson.dumps(view), status_code=status, headers=headers, media_type="application/json")


@router.get("/v1/payments/{payment_id}", response_model=Payment, tags=["payments"], responses=ERRORS,
            summary="A payment and its status")
def get_payment(payment_id: Annotated[str, Path(max_length=64)], who: Client,
                ctx: Ctx) -> dict:
    return payment_view(_get(ctx, payment_id), ctx)


@router.get("/v1/accounts/{account_number}/balance", response_model=Balance, tags=["accounts"], responses=ERRORS,
            summary="The account's sales-ledger balance")
def get_balance(account_number: AccountPath, who: Client,
                ctx: Ctx) -> dict:
    number = valid_account(account_number)
    target = account(ctx, number)
    waiting = ctx.store.awaiting_ledger(number)
    return {"account_number": number, "currency": target["currency"], "balance": format_minor(target["balance_minor"]),
            "as_of": target["published_at"], "awaiting_ledger": format_minor(waiting)}


@router.post("/v1/provider/callbacks", tags=["provider"], responses={400: PROBLEM, 401: PROBLEM, 404: PROBLEM,
                                                                      409: PROBLEM},
             summary="The payment provider's signed outcome of a hosted card page (HMAC, not an API key)")
async def provider_callback(request: Request, ctx: Ctx,
                            signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None) -> dict:
    body = await request.body()
    header = getattr(ctx.provider, "signature_header", SIGNATURE_HEADER)  # Stripe signs with Stripe-Signature
    if header != SIGNATURE_HEADER:
        signature = request.headers.get(header)
    try:
        payload = ctx.provider.verify_callback(body, signature, ctx.settings.callback_tolerance_seconds)
    except BadSignature as exc:
        raise Problem(401, f"callback refused: {exc}", field=header, slug="bad-signature") from None
    if isinstance(payload, dict) and payload.get("ignored"):  # a provider event that moves no payment
        return {"payment_id": None, "status": "IGNORED"}
    if not isinstance(payload, dict) or payload.get("status") not in ("SUCCEEDED", "DECLINED") \
            or not isinstance(payload.get("session_id"), str):
        raise Problem(400, "callback payload needs session_id and status SUCCEEDED or DECLINED", field="status")
    # Stored with the payment: masked, never refused (a refused genuine outcome would be retried for ever, and a
    # provider's numeric reference can pass the card-number test by chance)
    for name in ("provider_reference", "reason_code", "last_four"):
        if isinstance(payload.get(name), str):
            payload[name] = mask_pans_in(payload[name])
    if ctx.store.blocking:  # PostgreSQL: the statements wait on the network, so off the event loop
        return await ctx.off_loop(_finish_hosted, ctx, payload)
    return _finish_hosted(ctx, payload)


def _finish_hosted(ctx: ApiContext, payload: dict) -> dict:
    row = ctx.store.payment_by_session(payload["session_id"])
    if row is None:
        raise Problem(404, "no payment has this hosted session", field="session_id")
    code = payload.get("reason_code") if payload["status"] == "DECLINED" else None
    reason = getattr(ctx.provider, "reasons", {}).get(code) if code else None
    if not finish(ctx.store, row["payment_id"], ("AWAITING_CARD", "PENDING"), payload["status"], ctx.now(),
                  reason_code=code, reason=reason, provider_reference=payload.get("provider_reference"),
                  last_four=payload.get("last_four")):
        current = _get(ctx, row["payment_id"])
        if current["status"] != payload["status"]:
            raise Problem(409, f"payment {row['payment_id']} is already {current['status']}", field="status")
    return {"payment_id": row["payment_id"], "status": _get(ctx, row["payment_id"])["status"]}
