"""An account's workflow events and what was done about each (communication, webhook, operator task), from the
published read model (embedded store: the API never waits on the pipeline store) or PostgreSQL itself."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from cmp_pipelines.api.context import Client, Ctx
from cmp_pipelines.api.models import Strict
from cmp_pipelines.api.payments import ERRORS, AccountPath, account, valid_account

router = APIRouter()
Status = Literal["NEW", "PENDING", "DONE", "FAILED"]


class Event(Strict):
    event_id: int
    event_type: str
    event_code: str
    source_ref: str | None
    detail: str | None
    reason_type: str | None = Field(None, description="The reason type of the rejection or mandate revision code "
                                                      "that raised the event (Payments module).")
    reason_code: str | None = Field(None, description="That code's reason code.")
    new_payment_type: str | None = Field(None, description="The payment type the event moved the account to.")
    raised_at: str
    action: str | None
    target: str | None
    status: Status
    attempts: int
    result: str | None
    last_error: str | None


class EventList(Strict):
    account_number: str
    as_of: str | None
    events: list[Event]


@router.get("/v1/accounts/{account_number}/events", response_model=EventList, tags=["accounts"], responses=ERRORS,
            summary="The account's workflow events with their action and dispatch status, newest first")
def list_events(account_number: AccountPath, who: Client, ctx: Ctx, status: Status | None = None,
                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict:
    number = valid_account(account_number)
    target = account(ctx, number)
    rows = ctx.backend.events(number, status, limit)
    return {"account_number": number, "as_of": target["published_at"],
            # a snapshot published before a column existed answers None for it
            "events": [{k: row.get(k) for k in Event.model_fields} for row in rows]}
