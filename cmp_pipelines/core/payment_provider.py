"""The card payment provider behind one-off payments: an interface for real providers, and the sandbox.

A provider charges a token it issued (never a card number), runs a hosted card page whose outcome comes
back as an HMAC-signed callback, and answers "what happened to payment X?" for reconciliation after a
timeout. The sandbox keeps its own state in `$CMP_DATA_DIR/sandbox_provider.sqlite`, so the API process
and a Dagster run see the same provider, and its answers are deterministic by token:

    tok_decline_<code>           declined with that configured rejection code (config/rejection_codes.yaml)
    tok_timeout                  the charge succeeds at the provider but the answer never arrives
    tok_timeout_decline_<code>   declined at the provider, answer lost
    tok_timeout_lost             the provider never received it (reconciliation finds nothing)
    any other token              success

No Dagster import here: the API process loads this module, and a smaller heap keeps its GC pauses short
(the Dagster resource is `payment_provider_resource.py`).
"""

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from cmp_pipelines.core.cards import find_pan
from cmp_pipelines.core.config import load_rejection_codes
from cmp_pipelines.core.db.sqlite import LocalSqlite
from cmp_pipelines.core.settings import paths

SIGNATURE_HEADER = "X-Provider-Signature"
SECRET_FILE = "payment_provider.secret"


class ProviderTimeout(Exception):
    """The provider did not answer in time: the outcome is unknown until reconciliation asks."""


class BadSignature(Exception):
    pass


class UnknownSession(LookupError):
    pass


@dataclass(frozen=True)
class ProviderOutcome:
    status: str  # SUCCEEDED or DECLINED
    provider_reference: str
    reason_code: str | None = None
    reason: str | None = None
    last_four: str | None = None


@dataclass(frozen=True)
class HostedSession:
    session_id: str
    redirect_url: str


class ActionRequired(Exception):
    """A card charge that needs its holder (SCA): send them to `session.redirect_url`; the outcome comes back as
    a signed callback, as for a hosted page."""

    def __init__(self, session: HostedSession, provider_reference: str | None):
        super().__init__("the card needs the customer's authentication")
        self.session, self.provider_reference = session, provider_reference


class PaymentProvider(ABC):
    """What one-off payments need of a card provider; a real provider implements these over its API."""

    name: str
    blocking: bool = True  # True: calls wait on the network, so the API makes them from a worker thread

    @abstractmethod
    def charge(self, *, merchant_reference: str, card_token: str, amount_minor: int, currency: str) -> ProviderOutcome:
        """Charge a token the provider issued. Raises ProviderTimeout when the answer does not come."""

    @abstractmethod
    def start_hosted_payment(self, *, merchant_reference: str, amount_minor: int, currency: str,
                             callback_url: str, page_base_url: str) -> HostedSession:
        """A card page at the provider; its outcome arrives later as a signed callback to `callback_url`."""

    @abstractmethod
    def lookup(self, merchant_reference: str) -> ProviderOutcome | None:
        """The outcome the provider holds for our reference, or None when it never received the payment."""

    @abstractmethod
    def verify_callback(self, body: bytes, signature: str | None, tolerance_seconds: int) -> dict:
        """The callback's payload when its signature is good and fresh; BadSignature otherwise."""

    def close(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release what the provider holds (a local state store and its checkpoint thread)."""
        state = getattr(self, "state", None)
        if state is not None:
            state.close()


def callback_secret(keys_dir: Path | None = None) -> bytes:
    """The HMAC secret shared with the provider: $CMP_PROVIDER_SECRET, else a file in the keys folder."""
    if os.environ.get("CMP_PROVIDER_SECRET"):
        return os.environ["CMP_PROVIDER_SECRET"].encode()
    path = (keys_dir or paths().keys_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # first writer wins; a racing process reads the winner's secret
        tmp.unlink(missing_ok=True)
    return path.read_text().strip().encode()


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


# Stripe's `Stripe-Signature` scheme (stripe-python `WebhookSignature`): HMAC-SHA256 of "<t>.<body>" as lower-case
# hex, with the Unix time it was signed at. Held to its exact shape: one `t` of digits (no sign, no space, no
# leading zero), one `v1` of 64 hex digits, nothing else. `int(" 123")` is 123 in Python, so splitting on "," and
# "=" and trusting int() accepted `t= 123`; a header of any other shape is refused before any arithmetic.
SIGNATURE_FORMAT = re.compile(r"t=(?P<t>0|[1-9][0-9]{0,11}),v1=(?P<v1>[0-9a-f]{64})")
MAX_SIGNATURE_HEADER = 128  # "t=" + 12 digits + ",v1=" + 64: anything longer is not ours


def verify(secret: bytes, body: bytes, header: str | None, tolerance_seconds: int, now: float | None = None) -> None:
    """Refuse (BadSignature) a callback whose header is malformed, whose HMAC does not match the body (compared
    in constant time), or whose timestamp is more than `tolerance_seconds` from now either way: too old is a
    replay; too far ahead would stay "fresh" for ever after (stripe-python checks only the past)."""
    if not header:
        raise BadSignature(f"the {SIGNATURE_HEADER} header is missing")
    match = SIGNATURE_FORMAT.fullmatch(header) if len(header) <= MAX_SIGNATURE_HEADER else None
    if match is None:
        raise BadSignature(f"malformed {SIGNATURE_HEADER} header: expected exactly t=<unix seconds>,v1=<64 "
                           "lower-case hex digits>")
    timestamp = int(match["t"])
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), match["v1"].encode()):
        raise BadSignature("signature does not match the body")
    age = (time.time() if now is None else now) - timestamp
    if age > tolerance_seconds:
        raise BadSignature(f"signature timestamp is more than {tolerance_seconds} s old (replayed callback?)")
    if age < -tolerance_seconds:
        raise BadSignature(f"signature timestamp is more than {tolerance_seconds} s in the future")


SANDBOX_SCHEMA = """
CREATE TABLE transactions (
    merchant_reference TEXT PRIMARY KEY,
    provider_reference TEXT NOT NULL,
    status TEXT NOT NULL,
    reason_code TEXT,
    amount_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    merchant_reference TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    callback_url TEXT NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0
)
"""


class SandboxProvider(PaymentProvider):
    name = "SANDBOX"
    blocking = False  # local SQLite, microseconds

    def __init__(self, state_path: Path | None = None, secret: bytes | None = None,
                 config_dir: Path | None = None, server: bool = False):
        self.state = LocalSqlite(state_path or paths().data_dir / "sandbox_provider.sqlite", SANDBOX_SCHEMA,
                                 background_checkpoint=server)
        self.secret = secret or callback_secret()
        codes = load_rejection_codes(config_dir or paths().config_dir).card_codes
        self.reasons = {code: c.description for code, c in codes.items()}

    def _decide(self, merchant_reference: str, token: str, amount_minor: int, currency: str) -> ProviderOutcome:
        """The outcome a token gets, recorded once: asking again for the same reference gives the same answer."""
        timeout = token.startswith("tok_timeout")
        rest = token.removeprefix("tok_timeout").lstrip("_") if timeout else token
        if timeout and rest == "lost":
            raise ProviderTimeout("sandbox: request lost before reaching the provider")
        status, code = "SUCCEEDED", None
        if rest.startswith("decline_") or rest.startswith("tok_decline_"):
            code = rest.rsplit("_", 1)[1]
            status = "DECLINED"
            if code not in self.reasons:
                code = "14" if "14" in self.reasons else next(iter(self.reasons))
        reference = "SBX-" + hashlib.sha256(merchant_reference.encode()).hexdigest()[:16].upper()
        self.state.write_one("INSERT INTO transactions VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                             [merchant_reference, reference, status, code, amount_minor, currency,
                              datetime.now(UTC).isoformat()])
        if timeout:
            raise ProviderTimeout("sandbox: the provider took the payment but its answer timed out")
        return ProviderOutcome(status, reference, code, self.reasons.get(code) if code else None)

    def charge(self, *, merchant_reference: str, card_token: str, amount_minor: int, currency: str) -> ProviderOutcome:
        return self._decide(merchant_reference, card_token, amount_minor, currency)

    def start_hosted_payment(self, *, merchant_reference: str, amount_minor: int, currency: str,
                             callback_url: str, page_base_url: str) -> HostedSession:
        session_id = "hs_" + secrets.token_hex(12)
        with self.state.write() as con:
            con.execute("INSERT INTO sessions (session_id, merchant_reference, amount_minor, currency, callback_url) "
                        "VALUES (?, ?, ?, ?, ?)", [session_id, merchant_reference, amount_minor, currency,
                                                   callback_url])
        return HostedSession(session_id, f"{page_base_url.rstrip('/')}/pay/{session_id}")

    def session(self, session_id: str) -> dict:
        row = self.state.one("SELECT * FROM sessions WHERE session_id = ?", [session_id])
        if row is None:
            raise UnknownSession(session_id)
        return dict(row)

    def complete_hosted_payment(self, session_id: str, card_token: str) -> tuple[str, bytes, str]:
        """What the sandbox page does when the customer submits: decide, then the signed callback to deliver.

        Returns (callback_url, body, signature header). A typed card number is refused, never stored."""
        if find_pan(card_token):
            raise ValueError("this test page takes a sandbox test token, never a card number")
        session = self.session(session_id)
        try:
            outcome = self._decide(session["merchant_reference"], card_token, session["amount_minor"],
                                   session["currency"])
        except ProviderTimeout:
            outcome = self.lookup(session["merchant_reference"])
        with self.state.write() as con:
            con.execute("UPDATE sessions SET completed = 1 WHERE session_id = ?", [session_id])
        payload = {"session_id": session_id, "merchant_reference": session["merchant_reference"],
                   "status": outcome.status if outcome else "DECLINED",
                   "provider_reference": outcome.provider_reference if outcome else None,
                   "reason_code": outcome.reason_code if outcome else "96",
                   "last_four": None}
        body = orjson.dumps(payload)
        return session["callback_url"], body, sign(self.secret, body)

    def lookup(self, merchant_reference: str) -> ProviderOutcome | None:
        row = self.state.one("SELECT provider_reference, status, reason_code FROM transactions "
                             "WHERE merchant_reference = ?", [merchant_reference])
        if row is None:
            return None
        code = row["reason_code"]
        return ProviderOutcome(row["status"], row["provider_reference"], code, self.reasons.get(code) if code else None)

    def verify_callback(self, body: bytes, signature: str | None, tolerance_seconds: int) -> dict:
        verify(self.secret, body, signature, tolerance_seconds)
        return orjson.loads(body)


def build_provider(kind: str = "SANDBOX", server: bool = False) -> PaymentProvider:
    """`server`: for the long-lived API process (see LocalSqlite's background checkpoint)."""
    if kind == "SANDBOX":
        return SandboxProvider(server=server)
    if kind == "STRIPE":
        from cmp_pipelines.core.stripe_provider import stripe_from_config

        return stripe_from_config(paths().config_dir, paths().keys_dir)
    raise ValueError(f"unknown payment provider {kind!r}")
