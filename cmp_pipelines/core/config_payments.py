"""Configuration of the HTTP API and the payment provider (`config/api_clients.yaml`, `config/payment_provider.yaml`).

Typed models like every other file (see core/config.py): every error names file, field path and why. API keys are
never in configuration: a client carries the SHA-256 of its key, here or in `$CMP_KEYS_DIR/api_clients.sha256`
(written by `cmp-pipelines api keys init`, which shows each new key once).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator

from cmp_pipelines.core.config import (
    PARTNER_ID,
    SECURITY_LEVEL,
    ConfigFile,
    Entries,
    FileModel,
    Problems,
    WorkflowEvent,
    between,
    fail,
    matches,
    non_empty,
    one_of,
    register,
    required_event,
)

CHANNELS = ("AGENT", "SELFCARE", "IVR")
PROVIDERS = ("SANDBOX", "STRIPE")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
KEY_HASH_FILE = "api_clients.sha256"


@dataclass(frozen=True)
class ApiClient:
    client_id: str
    name: str
    channel: str
    key_sha256: str | None
    security_level: str | None = None  # config/security.yaml's; None: no guarded set-up call is allowed


@dataclass(frozen=True)
class ProviderSettings:
    provider: str
    hosted_page_url: str | None  # None: the sandbox pages the API serves itself
    reconcile_after_seconds: int  # a PENDING (timed-out) payment is asked about after this long
    hosted_session_minutes: int  # an unfinished hosted card page expires after this long
    callback_tolerance_seconds: int
    failure_event: WorkflowEvent
    # Where clients reach this API (hosted-page redirects, the provider's callback, the WSDL's address); None:
    # http://127.0.0.1:<the port `api serve` listens on>. Never taken from a request's Host header.
    public_base_url: str | None = None
    stripe: StripeSection | None = None  # used when provider is STRIPE


def hash_key(key: str) -> str:
    """API keys are 32 random bytes, so one SHA-256 is enough (a slow hash would only cost every request)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _key_hash(value: object) -> object:
    """Never echoes the value: someone may have pasted the key itself."""
    if value is not None and (not isinstance(value, str) or not SHA256_HEX.match(value)):
        fail("must be 64 lower-case hex digits: the SHA-256 of the key, never the key itself")
    return value


class ApiClientEntry(FileModel):
    client_id: Annotated[str, matches(PARTNER_ID, "must be 2-32 of A-Z, 0-9, _ starting with a letter")]
    name: Annotated[str, AfterValidator(lambda v: v if v.strip() else fail(f"must be a non-empty string, got {v!r}"))] \
        | None = None
    channel: one_of(*CHANNELS)
    key_sha256: Annotated[str | None, BeforeValidator(_key_hash)] = None
    security_level: Annotated[str, matches(SECURITY_LEVEL, lambda v: f"{v!r} is not a security level name")] \
        | None = None


class ApiClientsFile(FileModel):
    api_clients: Annotated[list[ApiClientEntry], non_empty("must be a non-empty list of client entries")]


def _build_api_clients(parsed: ApiClientsFile, problems: Problems, _: object) -> dict[str, ApiClient]:
    clients: dict[str, ApiClient] = {}
    for index, c in enumerate(parsed.api_clients):
        if c.client_id in clients:
            problems.add(("api_clients", index, "client_id"), "is defined twice")
        clients[c.client_id] = ApiClient(c.client_id, c.name or c.client_id, c.channel, c.key_sha256,
                                          c.security_level)
    return clients


API_CLIENTS_FILE = register(ConfigFile("api_clients.yaml", ApiClientsFile, _build_api_clients,
                                       {"api_clients": Entries("client_id")}))


def load_api_clients(config_dir: Path, keys_dir: Path | None = None) -> dict[str, ApiClient]:
    """The configured clients; one without a hash in the file takes the one `api keys init` issued, if any."""
    clients = API_CLIENTS_FILE.load(config_dir)
    issued = read_key_hashes(keys_dir) if keys_dir else {}
    return {cid: c if c.key_sha256 else ApiClient(c.client_id, c.name, c.channel, issued.get(cid), c.security_level)
            for cid, c in clients.items()}


def read_key_hashes(keys_dir: Path) -> dict[str, str]:
    path = keys_dir / KEY_HASH_FILE
    if not path.exists():
        return {}
    hashes = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and SHA256_HEX.match(parts[1]):
            hashes[parts[0]] = parts[1]
    return hashes


def write_key_hash(keys_dir: Path, client_id: str, key_hash: str) -> Path:
    hashes = {**read_key_hashes(keys_dir), client_id: key_hash}
    keys_dir.mkdir(parents=True, exist_ok=True)
    path = keys_dir / KEY_HASH_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{c} {h}\n" for c, h in sorted(hashes.items())))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        fail(f"must be an http(s) URL, got {value!r}")
    return value


def _base_url(value: object) -> object:
    if value is not None and not valid_base_url(value):
        fail(f"must be an http(s) URL with a host and no query, fragment, user or spaces, got {value!r}")
    return value


class StripeSection(FileModel):
    """Stripe's keys are never here: $CMP_STRIPE_SECRET_KEY and $CMP_STRIPE_WEBHOOK_SECRET (or files of those names,
    lower-case, in $CMP_KEYS_DIR)."""

    success_url: Annotated[str, AfterValidator(_http_url)]
    cancel_url: Annotated[str, AfterValidator(_http_url)]
    decline_codes: dict[str, Annotated[str, matches(r"^[A-Za-z0-9]{1,8}$", "must be a rejection code")]]
    default_decline_code: Annotated[str, matches(r"^[A-Za-z0-9]{1,8}$", "must be a rejection code")]
    timeout_seconds: Annotated[int, between(1, 120)] = 10


class PaymentProviderSection(FileModel):
    provider: one_of(*PROVIDERS, why=lambda v: f"must be one of {', '.join(PROVIDERS)} (a real provider plugs in as a "
                                               f"PaymentProvider subclass), got {v!r}")
    hosted_page_url: Annotated[str, AfterValidator(_http_url)] | None = None
    public_base_url: Annotated[str | None, BeforeValidator(_base_url)] = None
    reconcile_after_seconds: Annotated[int, between(0, 86_400)]
    hosted_session_minutes: Annotated[int, between(1, 1_440)]
    callback_tolerance_seconds: Annotated[int, between(10, 3_600)]
    failure_event: required_event("the workflow event a failed one-off payment raises is required")
    stripe: StripeSection | None = None


class PaymentProviderFile(FileModel):
    payment_provider: PaymentProviderSection


def _build_provider(parsed: PaymentProviderFile, problems: Problems, _: object) -> ProviderSettings:
    p = parsed.payment_provider
    if p.provider == "STRIPE" and p.stripe is None:
        problems.add(("payment_provider", "stripe"), "is required when the provider is STRIPE")
    return ProviderSettings(p.provider, p.hosted_page_url, p.reconcile_after_seconds, p.hosted_session_minutes,
                            p.callback_tolerance_seconds, p.failure_event.event(),
                            p.public_base_url.rstrip("/") if p.public_base_url else None, p.stripe)


PAYMENT_PROVIDER_FILE = register(ConfigFile("payment_provider.yaml", PaymentProviderFile, _build_provider,
                                            {"payment_provider": "section"}))


def load_provider_settings(config_dir: Path) -> ProviderSettings:
    return PAYMENT_PROVIDER_FILE.load(config_dir)


def valid_base_url(url: object) -> bool:
    """An absolute http(s) URL to put paths after: a host, perhaps a port and a path prefix, nothing else."""
    if not isinstance(url, str) or not re.fullmatch(r"[\x21-\x7e]+", url):
        return False
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment
            and parts.username is None and "@" not in parts.netloc)
