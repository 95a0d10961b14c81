"""Configuration of the HTTP API and the payment provider (`config/api_clients.yaml`, `config/payment_provider.yaml`).

Validated like the Payments module files: every error names file, entry and field. API keys are never in
configuration: a client carries the SHA-256 of its key, here or in `$CMP_KEYS_DIR/api_clients.sha256` (written by
`cmp-pipelines api keys init`, which shows each new key once).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cmp_pipelines.core.config import (
    PARTNER_ID,
    ConfigError,
    WorkflowEvent,
    read_document,
    read_workflow_event,
    reject_unknown_fields,
    require_field,
)

CHANNELS = ("AGENT", "SELFCARE", "IVR")
PROVIDERS = ("SANDBOX",)
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
KEY_HASH_FILE = "api_clients.sha256"


@dataclass(frozen=True)
class ApiClient:
    client_id: str
    name: str
    channel: str
    key_sha256: str | None


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


def hash_key(key: str) -> str:
    """API keys are 32 random bytes, so one SHA-256 is enough (a slow hash would only cost every request)."""
    return hashlib.sha256(key.encode()).hexdigest()


def load_api_clients(config_dir: Path, keys_dir: Path | None = None) -> dict[str, ApiClient]:
    file = config_dir / "api_clients.yaml"
    document = read_document(file, "api_clients")
    reject_unknown_fields(file, "-", document, {"api_clients"})
    entries = document["api_clients"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(file, "-", "api_clients", "must be a non-empty list of client entries")
    issued = read_key_hashes(keys_dir) if keys_dir else {}
    clients: dict[str, ApiClient] = {}
    for index, raw in enumerate(entries):
        entry = raw["client_id"] if isinstance(raw, dict) and isinstance(raw.get("client_id"), str) \
            else f"api_clients[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(file, entry, "-", "must be a mapping")
        reject_unknown_fields(file, entry, raw, {"client_id", "name", "channel", "key_sha256"})
        client_id = require_field(file, entry, raw, "client_id", str)
        if not PARTNER_ID.match(client_id):
            raise ConfigError(file, entry, "client_id", "must be 2-32 of A-Z, 0-9, _ starting with a letter")
        if client_id in clients:
            raise ConfigError(file, entry, "client_id", "is defined twice")
        channel = require_field(file, entry, raw, "channel", str)
        if channel not in CHANNELS:
            raise ConfigError(file, entry, "channel", f"must be one of {', '.join(CHANNELS)}, got {channel!r}")
        name = raw.get("name", client_id)
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(file, entry, "name", f"must be a non-empty string, got {name!r}")
        key_hash = raw.get("key_sha256")
        if key_hash is not None and (not isinstance(key_hash, str) or not SHA256_HEX.match(key_hash)):
            raise ConfigError(file, entry, "key_sha256", "must be 64 lower-case hex digits: the SHA-256 of the key, "
                                                         "never the key itself")
        clients[client_id] = ApiClient(client_id, name, channel, key_hash or issued.get(client_id))
    return clients


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


def load_provider_settings(config_dir: Path) -> ProviderSettings:
    file = config_dir / "payment_provider.yaml"
    raw = read_document(file, "payment_provider")["payment_provider"]
    entry = "payment_provider"
    if not isinstance(raw, dict):
        raise ConfigError(file, entry, "-", "must be a mapping")
    reject_unknown_fields(file, entry, raw, {"provider", "hosted_page_url", "reconcile_after_seconds",
                                             "hosted_session_minutes", "callback_tolerance_seconds", "failure_event",
                                             "public_base_url"})
    provider = require_field(file, entry, raw, "provider", str)
    if provider not in PROVIDERS:
        raise ConfigError(file, entry, "provider", f"must be one of {', '.join(PROVIDERS)} (a real provider plugs "
                                                   f"in as a PaymentProvider subclass), got {provider!r}")
    url = raw.get("hosted_page_url")
    if url is not None and (not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url)):
        raise ConfigError(file, entry, "hosted_page_url", f"must be an http(s) URL, got {url!r}")
    public = raw.get("public_base_url")
    if public is not None and not valid_base_url(public):
        raise ConfigError(file, entry, "public_base_url", "must be an http(s) URL with a host and no query, "
                                                          f"fragment, user or spaces, got {public!r}")
    numbers = {}
    for field, low, high in (("reconcile_after_seconds", 0, 86_400), ("hosted_session_minutes", 1, 1_440),
                             ("callback_tolerance_seconds", 10, 3_600)):
        numbers[field] = require_field(file, entry, raw, field, int)
        if not low <= numbers[field] <= high:
            raise ConfigError(file, entry, field, f"must be between {low} and {high}, got {numbers[field]}")
    event = read_workflow_event(file, entry, raw, "failure_event")
    if event is None:
        raise ConfigError(file, entry, "failure_event", "the workflow event a failed one-off payment raises is "
                                                        "required")
    return ProviderSettings(provider, url, numbers["reconcile_after_seconds"], numbers["hosted_session_minutes"],
                            numbers["callback_tolerance_seconds"], event, public.rstrip("/") if public else None)


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
