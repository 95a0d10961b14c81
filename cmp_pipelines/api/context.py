"""What every request handler shares: configuration, the backend (embedded or PostgreSQL), the provider."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from cmp_pipelines.api.problems import Problem
from cmp_pipelines.core.config_payments import ApiClient, ProviderSettings, hash_key
from cmp_pipelines.core.db.api_store import ApiBackend, PaymentRecords
from cmp_pipelines.core.payment_provider import PaymentProvider
from cmp_pipelines.core.security import Refused, SecurityConfig, load_security

log = logging.getLogger("cmp_pipelines.api")
STORE_THREADS = 2


@dataclass
class ApiContext:
    backend: ApiBackend  # where payments are kept and accounts read (api/backends.py)
    provider: PaymentProvider
    settings: ProviderSettings
    clients_by_hash: dict[str, ApiClient]
    # The URL clients reach the API at: redirects, callbacks and the WSDL address are built from it, never from
    # the request's Host header (which the client chooses: `Host: evil.example` must not become a redirect).
    public_base_url: str = "http://127.0.0.1:8000"
    security: SecurityConfig | None = None  # config/security.yaml; None: read when first needed
    _store_threads: CapacityLimiter | None = field(default=None, repr=False)  # made on the event loop, when used

    @property
    def store(self) -> PaymentRecords:
        return self.backend.store

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def off_loop(self, work: Callable, *args):
        """`work(*args)` in a worker thread. When only the store blocks (PostgreSQL statements of a millisecond; the
        provider answers locally), two threads: more only take turns at the GIL; under 50 clients on an idle 2-core
        machine 40 threads gave the same throughput and a p99 1.3-1.9x higher (benchmarks/README). A provider that
        waits on the network keeps the default pool (40 threads), so its slow answers overlap."""
        if self.provider.blocking:
            return await anyio.to_thread.run_sync(work, *args)
        if self._store_threads is None:
            self._store_threads = CapacityLimiter(STORE_THREADS)
        return await anyio.to_thread.run_sync(work, *args, limiter=self._store_threads)

    def authorize(self, who: ApiClient, operation: str) -> None:
        """403 naming the rule unless the client's configured security level may run `operation`."""
        if self.security is None:
            from cmp_pipelines.core.settings import paths

            self.security = load_security(paths().config_dir)
        try:
            self.security.authorize(f"API client {who.client_id}", who.security_level, operation)
        except Refused as exc:
            raise Problem(403, exc.message, field="X-API-Key", slug="forbidden") from None


async def context(request: Request) -> ApiContext:
    return request.app.state.cmp


def authenticate(ctx: ApiContext, key: str | None) -> ApiClient:
    """The client whose key hashes to a configured hash; a missing or unknown key is refused (401)."""
    if not key:
        raise Problem(401, "an API key is required in the X-API-Key header", slug="unauthorized",
                      headers={"WWW-Authenticate": "ApiKey"})
    digest = hash_key(key)
    client = ctx.clients_by_hash.get(digest)
    if client is None or not hmac.compare_digest(client.key_sha256 or "", digest):
        raise Problem(401, "the API key is not valid", slug="unauthorized", headers={"WWW-Authenticate": "ApiKey"})
    return client


class ClientKey(APIKeyHeader):
    """The X-API-Key security scheme (so OpenAPI documents it) that also resolves the key to its client: one
    dependency per request instead of two, on every route."""

    async def __call__(self, request: Request) -> ApiClient:  # type: ignore[override]
        return authenticate(request.app.state.cmp, request.headers.get(self.model.name))


API_KEY = ClientKey(name="X-API-Key", scheme_name="ApiKey", auto_error=False,
                    description="The client's API key (channel AGENT, SELFCARE or IVR).")
Client = Annotated[ApiClient, Depends(API_KEY)]
Ctx = Annotated[ApiContext, Depends(context)]
