"""The third-party adapter of the recurring card extract, for Stripe (seed: "the JSON formatted files can be converted
by a third party adapter to the required format expected by the payment provider").

Our generic extract (RCX-..., schema card_payment_extract) stays as it is; this adapter reads it, charges each
PAYMENT as an off-session PaymentIntent through StripeProvider (idempotency key `charge-<transaction id>`, one per
extract record), and writes the declines back as a card rejection file in OUR format (schema card_rejections) in
`inbound/card_rejections/<partner>/`, encrypted for that partner, so the card rejections flow takes it unchanged.

- A timeout, a network error or a 5xx is retried with the same idempotency key, so Stripe answers the first
  result and never charges twice; when the retries run out, Stripe is asked (PaymentIntent search by our
  reference). An outcome still unknown is UNRESOLVED in the report, never guessed: neither rejected (which would
  reverse a payment that may have been taken) nor dropped; running the adapter again on the same extract resolves
  it with the same keys.
- A card that needs SCA cannot be completed in a batch: it is declined with the code `authentication_required`
  maps to (config/payment_provider.yaml).
- A REFUND refunds the customer's newest succeeded PaymentIntent that covers it (StripeProvider.refund_card_on_file,
  key `refund-<transaction id>`); none, or Stripe refusing, is a rejection like a decline.
The report (`outbound/reports/stripe_batch/<file id>.json`) lists every record's outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.files.schemas import first_error
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.money import format_minor, parse_amount
from cmp_pipelines.core.payment_provider import ProviderTimeout
from cmp_pipelines.core.stripe_provider import StripeProvider


class ExtractError(ValueError):
    """The extract cannot be taken: which file and why."""


@dataclass
class BatchResult:
    file_id: str
    outcomes: dict[str, str] = field(default_factory=dict)  # transaction id -> SUCCEEDED | DECLINED | ...
    rejections: list[dict] = field(default_factory=list)
    rejection_path: str | None = None
    report_path: str | None = None

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)


def read_extract(files: FileStoreLike, keyring: PartnerKeyring, path: str, partner: str) -> dict:
    """The decrypted extract, held to its schema and its header's control totals."""
    try:
        document = orjson.loads(keyring.decrypt(partner, files.read_bytes(path)))
    except orjson.JSONDecodeError as exc:
        raise ExtractError(f"{path}: not JSON ({exc})") from None
    problem = first_error("card_payment_extract", document)
    if problem:
        raise ExtractError(f"{path}: {problem}")
    header, records = document["header"], document["transactions"]
    total = sum(parse_amount(r["amount"]) for r in records)
    if (header["record_count"], parse_amount(header["total_amount"])) != (len(records), total):
        raise ExtractError(f"{path}: header says {header['record_count']} records for {header['total_amount']}, the "
                           f"file holds {len(records)} for {format_minor(total)}")
    return document


def charge_extract(document: dict, provider: StripeProvider, *, now: datetime | None = None,
                   attempts: int = 3, backoff_seconds: float = 1.0,
                   sleep: Callable[[float], None] = time.sleep) -> BatchResult:
    """Every PAYMENT of the extract charged at Stripe; the declines as rejection records in our format."""
    now = now or datetime.now(UTC)
    result = BatchResult(document["header"]["file_id"])
    for record in document["transactions"]:
        reference = record["transaction_id"]
        amount = parse_amount(record["amount"])
        outcome = None
        for attempt in range(attempts):
            try:
                if record["type"] == "PAYMENT":
                    outcome = provider.charge(merchant_reference=reference, card_token=record["card_token"],
                                              amount_minor=amount, currency=record["currency"], holder_present=False)
                else:
                    outcome = provider.refund_card_on_file(refund_reference=reference, card_token=record["card_token"],
                                                           amount_minor=amount, currency=record["currency"])
                break
            except ProviderTimeout:
                if attempt + 1 < attempts:
                    sleep(backoff_seconds * 2 ** attempt)
        if outcome is None and record["type"] == "PAYMENT":
            try:
                outcome = provider.lookup(reference)
            except ProviderTimeout:
                outcome = None
        if outcome is None:
            result.outcomes[reference] = "UNRESOLVED"
            continue
        result.outcomes[reference] = outcome.status
        if outcome.status == "DECLINED":
            result.rejections.append({
                "record_id": str(len(result.rejections) + 1), "transaction_id": reference,
                "account_number": record["account_number"], "amount": record["amount"],
                "reason_code": outcome.reason_code, "reason_text": (outcome.reason or "")[:200] or None,
                "rejected_at": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    return result


def rejection_document(result: BatchResult, *, sender: str, currency: str, now: datetime) -> dict:
    total = sum(parse_amount(r["amount"]) for r in result.rejections)
    return {"header": {"file_id": f"{result.file_id}-REJ", "sender": sender,
                       "created_at": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "currency": currency,
                       "record_count": len(result.rejections), "total_amount": format_minor(total)},
            "rejections": result.rejections}


def run_stripe_batch(files: FileStoreLike, keyring: PartnerKeyring, extract_path: str, provider: StripeProvider, *,
                     partner: str, now: datetime | None = None, **retry) -> BatchResult:
    """Extract in, rejection file (only when something was declined) and report out."""
    now = now or datetime.now(UTC)
    document = read_extract(files, keyring, extract_path, partner)
    result = charge_extract(document, provider, now=now, **retry)
    if result.rejections:
        rejections = rejection_document(result, sender=partner, currency=document["header"]["currency"], now=now)
        problem = first_error("card_rejections", rejections)
        if problem:  # our own output: a bug, never a file the rejections flow would quarantine
            raise ExtractError(f"{extract_path}: the rejection file would not match its schema: {problem}")
        name = f"inbound/card_rejections/{partner}/{rejections['header']['file_id']}.json.enc"
        result.rejection_path = files.write_bytes(name, keyring.encrypt(partner, orjson.dumps(rejections)))
    report = {"file_id": result.file_id, "provider": provider.name, "extract": extract_path,
              "rejection_file": result.rejection_path, "created_at": now.astimezone(UTC).isoformat(),
              "counts": {o: result.count(o) for o in sorted(set(result.outcomes.values()))},
              "records": [{"transaction_id": t, "outcome": o} for t, o in result.outcomes.items()]}
    result.report_path = files.write_bytes(f"outbound/reports/stripe_batch/{result.file_id}.json",
                                           orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return result
