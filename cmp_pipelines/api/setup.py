"""Account set-up over REST: payment type, card token, mandate. On PostgreSQL always applied at once (one
transaction); on the embedded store applied at once when cmp.duckdb is free, else queued (202 + a status
resource) for the next `api_sync_job` run: a pipeline run never fails a request."""

from __future__ import annotations

import json
import secrets
from datetime import date

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cmp_pipelines.api.context import ApiContext, Client, Ctx
from cmp_pipelines.api.models import (
    ApproveRefund,
    CardRefund,
    CreateMandate,
    PaymentProfile,
    RegisterCard,
    SetPaymentType,
    SetupRequest,
)
from cmp_pipelines.api.payments import ERRORS, AccountPath, account, valid_account
from cmp_pipelines.api.problems import Problem
from cmp_pipelines.core import mandates, payment_setup
from cmp_pipelines.core.config import PAYMENT_TYPES, load_partners
from cmp_pipelines.core.config_payments import ApiClient
from cmp_pipelines.core.payment_setup import SetupError
from cmp_pipelines.core.settings import paths

router = APIRouter()
OPERATIONS = {"PAYMENT_TYPE": "SET_PAYMENT_TYPE", "CARD": "REGISTER_CARD", "MANDATE": "CREATE_MANDATE",
              "REFUND": "APPROVE_REFUND"}  # config/security.yaml's rule for each kind of set-up request
QUEUED = {202: {"model": SetupRequest, "description": "A pipeline run holds the store: queued, see Location."}}


def _problem(exc: SetupError) -> Problem:
    return Problem(exc.status, f"{exc.field}: {exc.message}", field=exc.field)


def prevalidate(kind: str, body: dict, today: date) -> None:
    """The checks that need no database, so a queued request can only fail on the account's state."""
    if kind in ("PAYMENT_TYPE", "CARD"):
        if kind == "PAYMENT_TYPE" and body.get("payment_type") not in PAYMENT_TYPES:
            raise SetupError("payment_type", f"use one of {', '.join(PAYMENT_TYPES)}")
        if body.get("card_token") is not None:
            payment_setup.validate_card(body["card_token"], body.get("last_four"), body.get("expiry"),
                                        body.get("provider"), load_partners(paths().config_dir), today)
        elif kind == "CARD" or body.get("last_four") or body.get("expiry") or body.get("provider"):
            raise SetupError("card_token", "the provider's card token is required with card details")
    elif kind == "REFUND":
        payment_setup.validate_refund(body.get("amount"), body.get("due_on"), body.get("reason"))
    elif kind == "MANDATE":
        mandates.validate_bank_details(body.get("sort_code"), body.get("bank_account"), body.get("account_name"))
        if body.get("reference") is not None:
            mandates.validate_reference(body["reference"])


def submit(ctx: ApiContext, who: ApiClient, kind: str, account_number: str, body: dict,
           applied_status: int = 200) -> tuple[int, dict, dict]:
    """(HTTP status, body, headers): applied now, or queued when the backend cannot apply it now (embedded store
    only: a pipeline run holds cmp.duckdb past the short wait).

    The client's configured security level is checked first: a refused client learns nothing about the account."""
    ctx.authorize(who, OPERATIONS[kind])
    if kind == "PAYMENT_TYPE" and body.get("card_token") is not None:
        ctx.authorize(who, "REGISTER_CARD")
    number = valid_account(account_number)
    account(ctx, number)
    now = ctx.now()
    try:
        prevalidate(kind, body, now.date())
    except SetupError as exc:
        raise _problem(exc) from None
    request_id = f"SR-{now:%Y%m%d}-{secrets.token_hex(6).upper()}"
    try:
        result = ctx.backend.apply_setup(kind, number, body, now=now, cause=f"api {who.channel.lower()}",
                                         client_id=who.client_id, channel=who.channel, request_id=request_id)
    except SetupError as exc:
        raise _problem(exc) from None
    if result is not None:
        return applied_status, result, {}
    ctx.store.queue_setup_request(request_id, who.client_id, who.channel, kind, number, json.dumps(body),
                                  now.isoformat())
    return 202, request_view(ctx, request_id), {"Location": f"/v1/setup-requests/{request_id}"}


def request_view(ctx: ApiContext, request_id: str) -> dict:
    row = ctx.store.setup_request(request_id)
    if row is None:
        raise Problem(404, f"set-up request {request_id} does not exist", field="request_id")
    return {"request_id": row["request_id"], "kind": row["kind"], "account_number": row["account_number"],
            "status": row["status"], "result": json.loads(row["result"]) if row["result"] else None,
            "problem": json.loads(row["problem"]) if row["problem"] else None, "created_at": row["created_at"],
            "applied_at": row["applied_at"]}


def _respond(outcome: tuple[int, dict, dict]) -> JSONResponse:
    status, body, headers = outcome
    return JSONResponse(body, status_code=status, headers=headers)


@router.put("/v1/accounts/{account_number}/payment-type", response_model=PaymentProfile, tags=["accounts"],
            responses={**QUEUED, **ERRORS}, summary="Set how the account pays (RECURRING_CARD needs a card token)")
def put_payment_type(account_number: AccountPath, body: SetPaymentType, who: Client,
                     ctx: Ctx) -> JSONResponse:
    return _respond(submit(ctx, who, "PAYMENT_TYPE", account_number, body.model_dump()))


@router.put("/v1/accounts/{account_number}/card", response_model=PaymentProfile, tags=["accounts"],
            responses={**QUEUED, **ERRORS}, summary="Register the provider's card token for the account")
def put_card(account_number: AccountPath, body: RegisterCard, who: Client,
             ctx: Ctx) -> JSONResponse:
    return _respond(submit(ctx, who, "CARD", account_number, body.model_dump()))


@router.post("/v1/accounts/{account_number}/mandates", status_code=201, tags=["accounts"],
             responses={**QUEUED, **ERRORS}, summary="Create a Direct Debit Instruction (mandate)")
def post_mandate(account_number: AccountPath, body: CreateMandate, who: Client,
                 ctx: Ctx) -> JSONResponse:
    return _respond(submit(ctx, who, "MANDATE", account_number, body.model_dump(), applied_status=201))


@router.post("/v1/accounts/{account_number}/card-refunds", response_model=CardRefund, status_code=201,
             tags=["accounts"], responses={**QUEUED, **ERRORS, 403: ERRORS[401]},
             summary="Approve a refund to the card on file (the CARD-mode run pays it); needs a client whose "
                     "security level may APPROVE_REFUND")
def post_card_refund(account_number: AccountPath, body: ApproveRefund, who: Client, ctx: Ctx) -> JSONResponse:
    fields = {**body.model_dump(mode="json"), "approved_by": f"API client {who.client_id}"}
    return _respond(submit(ctx, who, "REFUND", account_number, fields, applied_status=201))


@router.get("/v1/setup-requests/{request_id}", response_model=SetupRequest, tags=["accounts"], responses=ERRORS,
            summary="A queued set-up request: QUEUED, APPLIED (with the result) or FAILED (with the problem)")
def get_setup_request(request_id: str, who: Client, ctx: Ctx) -> dict:
    return request_view(ctx, request_id)
