"""Request and response bodies. Amounts are decimal strings with two places, never numbers."""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cmp_pipelines.core.cards import find_pan
from cmp_pipelines.core.money import AMOUNT_PATTERN

ACCOUNT = re.compile(r"^[A-Z0-9]{3,20}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")


def check_account(value: str) -> str:
    if find_pan(value):
        raise ValueError("looks like a card number; give the account number")
    if not ACCOUNT.fullmatch(value):
        raise ValueError("must be an account number: 3-20 upper-case letters or digits")
    return value


def _no_pan(value: str | None) -> str | None:
    if value is not None and find_pan(value):
        raise ValueError("looks like a card number; card numbers are never accepted here")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreatePayment(Strict):
    account_number: str = Field(description="The account the payment is made against.", examples=["ACC00000001"],
                                json_schema_extra={"pattern": ACCOUNT.pattern})
    amount: str = Field(description="Decimal string with exactly two places, more than 0.00.", examples=["12.34"],
                        json_schema_extra={"pattern": AMOUNT_PATTERN.pattern})
    currency: str = Field("GBP", description="ISO 4217 code; must be the account's currency.",
                          json_schema_extra={"pattern": CURRENCY.pattern})
    method: Literal["CARD_ON_FILE", "HOSTED_PAGE"] = Field(
        description="CARD_ON_FILE charges the account's registered card token; HOSTED_PAGE returns a redirect "
                    "to the provider's card page, whose signed callback completes the payment.")
    reference: str | None = Field(None, max_length=40, description="Free text shown with the payment.")

    _account = field_validator("account_number")(check_account)
    _reference = field_validator("reference")(_no_pan)

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: str) -> str:
        if not AMOUNT_PATTERN.fullmatch(value):
            raise ValueError("must be a decimal string with exactly two decimal places, e.g. \"12.34\"")
        if value in ("0.00",):
            raise ValueError("must be more than 0.00")
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not CURRENCY.fullmatch(value):
            raise ValueError("must be an ISO 4217 code of three upper-case letters")
        return value


class Ledger(BaseModel):
    state: Literal["WAITING", "DUE", "RECORDED"] = Field(
        description="WAITING: outcome not final yet; DUE: final, the Ledger Monitor has not taken it yet; "
                    "RECORDED: posted (success) or its workflow event raised (failure).")
    batch_id: str | None


class WorkflowEvent(BaseModel):
    type: str
    code: str


class Payment(BaseModel):
    payment_id: str
    account_number: str
    amount: str
    currency: str
    method: str
    status: Literal["AWAITING_CARD", "PENDING", "SUCCEEDED", "DECLINED", "FAILED"]
    reason_code: str | None
    reason: str | None
    channel: Literal["AGENT", "SELFCARE", "IVR"]
    client_id: str
    reference: str | None
    provider: str
    provider_reference: str | None
    redirect_url: str | None
    last_four: str | None
    created_at: str
    completed_at: str | None
    ledger: Ledger
    workflow_event: WorkflowEvent | None = Field(
        description="For a failure the Ledger Monitor has recorded: the workflow event it raised (nothing posted).")


class HistoryRow(BaseModel):
    payment_ref: str = Field(description="The flow's own id: NRP batch:record, card transaction, refund, direct-debit "
                                         "collection, rejection batch:position, one-off payment id.")
    date: str = Field(description="YYYY-MM-DD: paid, extracted, collected, rejected or due (an approved refund).")
    source: Literal["NRP", "CARD", "DIRECT_DEBIT", "ONE_OFF"]
    method: str | None
    kind: Literal["PAYMENT", "REFUND", "REVERSAL", "RETURN"]
    amount: str | None = Field(description="Positive decimal string; null for a record rejected for its amount.")
    currency: str | None
    status: str
    reason_code: str | None
    reason: str | None
    invoice_number: str | None
    reference: str | None
    batch_id: str | None


class PaymentHistory(BaseModel):
    account_number: str
    total: int = Field(description="Rows matching the filters, on every page.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="The offset of the next page; null on the last one.")
    payments: list[HistoryRow]


class Balance(BaseModel):
    account_number: str
    currency: str
    balance: str = Field(description="What the account owes (negative: in credit), from the sales ledger.")
    as_of: str = Field(description="When the pipelines last published the ledger to the API.")
    awaiting_ledger: str = Field(description="Succeeded one-off payments the Ledger Monitor has not posted yet.")


class CardFields(Strict):
    card_token: str | None = Field(None, description="The provider's token for the card; never a card number.")
    last_four: str | None = None
    expiry: str | None = Field(None, description="MM/YY or YYYY-MM.")
    provider: str | None = Field(None, description="Card provider partner id (default: the only one).")

    _pan = field_validator("last_four", "expiry", "provider")(_no_pan)


class SetPaymentType(CardFields):
    payment_type: Literal["MANUAL", "RECURRING_CARD", "DIRECT_DEBIT"]


class RegisterCard(CardFields):
    card_token: str = Field(description="The provider's token for the card; never a card number.")


class CreateMandate(Strict):
    sort_code: str = Field(examples=["12-34-56"])
    bank_account: str = Field(examples=["12345678"])
    account_name: str
    reference: str | None = None

    _pan = field_validator("account_name", "reference")(_no_pan)


class ApproveRefund(Strict):
    amount: str = Field(description="Decimal string with exactly two places, more than 0.00.", examples=["12.50"],
                        json_schema_extra={"pattern": AMOUNT_PATTERN.pattern})
    due_on: date | None = Field(None, description="Pay on or after this day (default: today).")
    reason: str | None = Field(None, max_length=100, description="Why the refund was approved.")

    _reason = field_validator("reason")(_no_pan)


class CardRefund(BaseModel):
    refund_id: str
    account_number: str
    amount: str
    currency: str
    due_on: str
    reason: str | None
    approved_by: str = Field(description="The API client that approved it.")


class Card(BaseModel):
    provider: str
    card_token: str
    last_four: str | None
    expiry: str | None


class PaymentProfile(BaseModel):
    account_number: str
    payment_type: str
    suspended_until: str | None
    card: Card | None


class SetupRequest(BaseModel):
    request_id: str
    kind: Literal["PAYMENT_TYPE", "CARD", "MANDATE", "REFUND"]
    account_number: str
    status: Literal["QUEUED", "APPLIED", "FAILED"] = Field(
        description="QUEUED: a pipeline run holds the store; the next api_sync_job run applies it.")
    result: dict | None
    problem: dict | None
    created_at: str
    applied_at: str | None
