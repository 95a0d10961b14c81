"""The sandbox provider's hosted card page, served beside the API so the demo needs no outside service.

A real provider hosts this page itself; the API only ever sees its signed callback. Submitting the page
makes the sandbox decide (by test token) and deliver that callback, signed, to the API's callback URL.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from cmp_pipelines.api.context import ApiContext, Ctx
from cmp_pipelines.api.problems import Problem
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.payment_provider import SIGNATURE_HEADER, SandboxProvider, UnknownSession

router = APIRouter(prefix="/sandbox-provider", include_in_schema=False)


def _sandbox(ctx: ApiContext) -> SandboxProvider:
    if not isinstance(ctx.provider, SandboxProvider):
        raise Problem(404, "the sandbox provider is not in use")
    return ctx.provider


def _session(provider: SandboxProvider, session_id: str) -> dict:
    try:
        return provider.session(session_id)
    except UnknownSession:
        raise Problem(404, "no such card page session", field="session_id") from None


@router.get("/pay/{session_id}", response_class=HTMLResponse)
def card_page(session_id: str, ctx: Ctx) -> str:
    session = _session(_sandbox(ctx), session_id)
    amount = f"{html.escape(session['currency'])} {format_minor(session['amount_minor'])}"
    return (f"<!doctype html><title>Sandbox card page</title><h1>Pay {amount}</h1>"
            f"<form method=post><label>Test card token <input name=card_token value=tok_success></label>"
            f"<button>Pay</button></form><p>Tokens: tok_success, tok_decline_&lt;code&gt;, tok_timeout...</p>")


@router.post("/pay/{session_id}", response_class=HTMLResponse)
async def submit_card_page(session_id: str, request: Request, ctx: Ctx) -> str:
    provider = _sandbox(ctx)
    session = _session(provider, session_id)
    if session["completed"]:
        raise Problem(409, "this card page was already submitted")
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    card_token = (form.get("card_token") or [""])[0]
    try:
        url, body, signature = await run_in_threadpool(provider.complete_hosted_payment, session_id, card_token)
    except ValueError as exc:
        raise Problem(422, str(exc), field="card_token") from None
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(url, content=body, headers={SIGNATURE_HEADER: signature,
                                                             "Content-Type": "application/json"})
    outcome = answer.json().get("status", "unknown") if answer.is_success \
        else f"callback refused ({answer.status_code})"
    return f"<!doctype html><title>Sandbox card page</title><h1>Payment {html.escape(outcome)}</h1>"
