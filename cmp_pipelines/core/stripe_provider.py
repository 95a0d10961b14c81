"""Stripe behind one-off payments, with the official `stripe` library (chosen in config/payment_provider.yaml).

- Card on file: the account's card token is `<customer id>-<payment method id>` (a PaymentMethod saved on a Stripe
  Customer; Stripe ids hold only letters, digits and `_`). A charge is an off-session PaymentIntent created and
  confirmed at once, with our payment id as the idempotency key, so a retried request never charges twice.
- A card that needs the customer (SCA: `authentication_required`, or a PaymentIntent left `requires_action`) is not
  a decline: `ActionRequired` carries a Checkout Session for the same amount, and the API sends the customer there.
- The hosted page is Stripe Checkout; its outcome arrives as a webhook verified by its `Stripe-Signature`
  (stripe.Webhook.construct_event: HMAC over the timestamped body, tolerance in seconds) and an event id is taken
  once (a replay inside the tolerance is refused too).
- A decline's `decline_code` maps to our rejection code (config/payment_provider.yaml `stripe.decline_codes`,
  checked against config/rejection_codes.yaml). A timeout, a network error or a 5xx leaves the outcome unknown:
  ProviderTimeout, and reconciliation asks Stripe later (PaymentIntent search by our reference).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import stripe

from cmp_pipelines.core.db.sqlite import LocalSqlite
from cmp_pipelines.core.payment_provider import (
    ActionRequired,
    BadSignature,
    HostedSession,
    PaymentProvider,
    ProviderOutcome,
    ProviderTimeout,
)

CARD_ON_FILE = re.compile(r"^(?P<customer>cus_[A-Za-z0-9_]{1,40})-(?P<method>(?:pm|card)_[A-Za-z0-9_]{1,40})$")
REFERENCE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # our payment ids: safe inside a search query
STATE_SCHEMA = """
CREATE TABLE webhook_events (event_id TEXT PRIMARY KEY, received_at TEXT NOT NULL)
"""


@dataclass(frozen=True)
class StripeSettings:
    api_key: str
    webhook_secret: str
    decline_codes: dict[str, str]  # Stripe decline_code -> our rejection code
    default_decline_code: str
    success_url: str
    cancel_url: str
    api_base: str | None = None  # tests: a local server answering as Stripe does
    timeout_seconds: float = 10.0


class StripeProvider(PaymentProvider):
    name = "STRIPE"
    blocking = True
    signature_header = "Stripe-Signature"

    def __init__(self, settings: StripeSettings, reasons: dict[str, str], state_path: Path):
        self.settings, self.reasons = settings, reasons
        self.client = stripe.StripeClient(
            settings.api_key, base_addresses={"api": settings.api_base} if settings.api_base else None,
            http_client=stripe.HTTPXClient(timeout=settings.timeout_seconds, allow_sync_methods=True),
            max_network_retries=0)
        self.state = LocalSqlite(state_path, STATE_SCHEMA)

    # ---- outcomes ----------------------------------------------------------------------------------------

    def _declined(self, reference: str, decline_code: str | None) -> ProviderOutcome:
        code = self.settings.decline_codes.get(decline_code or "", self.settings.default_decline_code)
        return ProviderOutcome("DECLINED", reference, code, self.reasons.get(code))

    def _outcome(self, intent, merchant_reference: str) -> ProviderOutcome | None:
        last_four = None
        if intent.status == "succeeded":
            return ProviderOutcome("SUCCEEDED", intent.id, last_four=last_four)
        if intent.status in ("requires_payment_method", "canceled"):
            error = intent.last_payment_error
            return self._declined(intent.id, getattr(error, "decline_code", None) if error else None)
        return None  # processing, requires_action...: not final

    # ---- PaymentProvider ---------------------------------------------------------------------------------

    def charge(self, *, merchant_reference: str, card_token: str, amount_minor: int, currency: str,
               holder_present: bool = True) -> ProviderOutcome:
        """`holder_present=False` (a recurring batch: nobody to send to Checkout): a card that needs its holder is
        declined with the code `decline_codes` maps `authentication_required` to."""
        card = CARD_ON_FILE.fullmatch(card_token)
        if card is None:
            return ProviderOutcome("DECLINED", "", self.settings.default_decline_code,
                                   "the card token is not a Stripe customer and payment method (cus_...-pm_...)")
        try:
            intent = self.client.v1.payment_intents.create(
                {"amount": amount_minor, "currency": currency.lower(), "customer": card["customer"],
                 "payment_method": card["method"], "off_session": True, "confirm": True,
                 "metadata": {"merchant_reference": merchant_reference}},
                {"idempotency_key": f"charge-{merchant_reference}"})
        except stripe.CardError as exc:
            intent = (exc.json_body or {}).get("error", {}).get("payment_intent") or {}
            if exc.code == "authentication_required" and not holder_present:
                return self._declined(intent.get("id") or "", "authentication_required")
            if exc.code == "authentication_required":
                raise ActionRequired(self.start_hosted_payment(
                    merchant_reference=merchant_reference, amount_minor=amount_minor, currency=currency,
                    callback_url="", page_base_url=""), intent.get("id")) from None
            return self._declined(intent.get("id") or "", getattr(exc.error, "decline_code", None))
        except (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError) as exc:
            raise ProviderTimeout(f"stripe: {type(exc).__name__}") from None
        if intent.status == "requires_action" and not holder_present:
            return self._declined(intent.id, "authentication_required")
        if intent.status == "requires_action":
            raise ActionRequired(self.start_hosted_payment(
                merchant_reference=merchant_reference, amount_minor=amount_minor, currency=currency,
                callback_url="", page_base_url=""), intent.id)
        outcome = self._outcome(intent, merchant_reference)
        if outcome is None:
            raise ProviderTimeout(f"stripe: payment intent {intent.id} is {intent.status}")
        return outcome

    def start_hosted_payment(self, *, merchant_reference: str, amount_minor: int, currency: str,
                             callback_url: str, page_base_url: str) -> HostedSession:
        """Stripe Checkout; its outcome comes as the `checkout.session.*` webhook (configured at Stripe, so
        `callback_url` and `page_base_url`, the sandbox's, are not used)."""
        price = {"currency": currency.lower(), "unit_amount": amount_minor, "product_data": {"name": "Account payment"}}
        try:
            session = self.client.v1.checkout.sessions.create(
                {"mode": "payment", "client_reference_id": merchant_reference,
                 "line_items": [{"quantity": 1, "price_data": price}],
                 "success_url": self.settings.success_url, "cancel_url": self.settings.cancel_url,
                 "metadata": {"merchant_reference": merchant_reference},
                 "payment_intent_data": {"metadata": {"merchant_reference": merchant_reference}}},
                {"idempotency_key": f"checkout-{merchant_reference}"})
        except (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError) as exc:
            raise ProviderTimeout(f"stripe: {type(exc).__name__}") from None
        return HostedSession(session.id, session.url)

    def lookup(self, merchant_reference: str) -> ProviderOutcome | None:
        if not REFERENCE.fullmatch(merchant_reference):
            return None
        try:
            found = self.client.v1.payment_intents.search(
                {"query": f"metadata['merchant_reference']:'{merchant_reference}'", "limit": 1})
        except (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError) as exc:
            raise ProviderTimeout(f"stripe: {type(exc).__name__}") from None
        return self._outcome(found.data[0], merchant_reference) if found.data else None

    def refund(self, *, provider_reference: str, amount_minor: int, refund_reference: str) -> str:
        """A refund of a succeeded PaymentIntent; the refund's id. Idempotent by our refund reference."""
        try:
            refund = self.client.v1.refunds.create(
                {"payment_intent": provider_reference, "amount": amount_minor,
                 "metadata": {"refund_reference": refund_reference}},
                {"idempotency_key": f"refund-{refund_reference}"})
        except (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError) as exc:
            raise ProviderTimeout(f"stripe: {type(exc).__name__}") from None
        return refund.id

    def refund_card_on_file(self, *, refund_reference: str, card_token: str, amount_minor: int,
                            currency: str) -> ProviderOutcome:
        """A refund the recurring extract asks for. Stripe refunds a PaymentIntent, which the generic extract does
        not name: the customer's newest succeeded one in the currency that covers the amount (the list API, which
        reads its own writes; search may lag). None, or Stripe refusing the refund: DECLINED with the code
        `transaction_not_allowed` maps to. The refund's idempotency key is `refund-<refund reference>`."""
        card = CARD_ON_FILE.fullmatch(card_token)
        refused = self.settings.decline_codes.get("transaction_not_allowed", self.settings.default_decline_code)
        if card is None:
            return ProviderOutcome("DECLINED", "", refused, "the card token is not a Stripe customer and payment "
                                                            "method (cus_...-pm_...)")
        try:
            page = self.client.v1.payment_intents.list({"customer": card["customer"], "limit": 100})
        except (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError) as exc:
            raise ProviderTimeout(f"stripe: {type(exc).__name__}") from None
        paid = [i for i in page.data if i.status == "succeeded" and i.currency == currency.lower()
                and i.amount_received >= amount_minor]
        if not paid:
            return ProviderOutcome("DECLINED", "", refused, f"no payment of at least {amount_minor} {currency} "
                                                            "at Stripe to refund")
        try:
            return ProviderOutcome("SUCCEEDED", self.refund(provider_reference=paid[0].id, amount_minor=amount_minor,
                                                            refund_reference=refund_reference))
        except stripe.InvalidRequestError as exc:
            return ProviderOutcome("DECLINED", paid[0].id, refused, f"Stripe refused the refund: {exc.user_message}")

    def verify_callback(self, body: bytes, signature: str | None, tolerance_seconds: int) -> dict:
        """The webhook as the callback the API understands: {session_id, status, provider_reference, reason_code}."""
        if not signature:
            raise BadSignature(f"the {self.signature_header} header is missing")
        try:
            event = stripe.Webhook.construct_event(body, signature, self.settings.webhook_secret,
                                                   tolerance=tolerance_seconds)
        except stripe.SignatureVerificationError as exc:
            raise BadSignature(str(exc.user_message or "signature does not match")) from None
        except ValueError:
            raise BadSignature("the webhook body is not a Stripe event") from None
        if not self.state.write_one("INSERT INTO webhook_events VALUES (?, datetime('now')) ON CONFLICT DO NOTHING",
                                    [event.id]):
            raise BadSignature(f"event {event.id} was already received (replayed webhook)")
        session = event.data.object.to_dict()
        status = {"checkout.session.completed": "SUCCEEDED" if session.get("payment_status") == "paid" else None,
                  "checkout.session.async_payment_succeeded": "SUCCEEDED",
                  "checkout.session.async_payment_failed": "DECLINED",
                  "checkout.session.expired": "DECLINED"}.get(event.type)
        if status is None:  # another event type (Stripe sends what the endpoint subscribes to): nothing to move
            return {"ignored": True, "event_type": event.type}
        return {"session_id": session.get("id"), "status": status, "provider_reference": session.get("payment_intent"),
                "reason_code": self.settings.default_decline_code if status == "DECLINED" else None,
                "last_four": None}


def _secret(name: str, keys_dir: Path) -> str:
    """$CMP_<NAME>, else the file <name> in the keys folder; never in configuration, never logged."""
    value = os.environ.get(f"CMP_{name.upper()}")
    path = keys_dir / name
    if not value and path.exists():
        value = path.read_text().strip()
    if not value:
        raise ValueError(f"the Stripe provider needs $CMP_{name.upper()} (or {path})")
    return value


def stripe_from_config(config_dir: Path, keys_dir: Path) -> StripeProvider:
    """The provider config/payment_provider.yaml describes; every decline code it maps must be a configured card
    rejection code."""
    from cmp_pipelines.core.config import load_rejection_codes
    from cmp_pipelines.core.config_payments import load_provider_settings
    from cmp_pipelines.core.settings import paths

    section = load_provider_settings(config_dir).stripe
    if section is None:
        raise ValueError("config/payment_provider.yaml has no stripe section")
    reasons = {code: c.description for code, c in load_rejection_codes(config_dir).card_codes.items()}
    unknown = sorted({section.default_decline_code, *section.decline_codes.values()} - set(reasons))
    if unknown:
        raise ValueError(f"config/payment_provider.yaml stripe maps to {', '.join(unknown)}, not card rejection codes "
                         "of config/rejection_codes.yaml")
    settings = StripeSettings(_secret("stripe_secret_key", keys_dir), _secret("stripe_webhook_secret", keys_dir),
                              dict(section.decline_codes), section.default_decline_code, section.success_url,
                              section.cancel_url, os.environ.get("CMP_STRIPE_API_BASE"),
                              float(section.timeout_seconds))
    return StripeProvider(settings, reasons, paths().data_dir / "stripe_provider.sqlite")
