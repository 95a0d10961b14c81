"""The FastAPI application: REST (OpenAPI at /openapi.json), the SOAP set-up operation, the sandbox pages."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from cmp_pipelines.api import billing, console, events, history, payments, problems, sandbox_pages, setup, soap
from cmp_pipelines.api.backends import build_backend
from cmp_pipelines.api.context import ApiContext, log
from cmp_pipelines.core.config_payments import load_api_clients, load_provider_settings
from cmp_pipelines.core.db.connection import StoreBusyError
from cmp_pipelines.core.payment_provider import build_provider
from cmp_pipelines.core.security import load_security
from cmp_pipelines.core.settings import paths


def build_context(port: int = 8000) -> ApiContext:
    """`port`: the one `api serve` listens on, for the default public base URL http://127.0.0.1:<port>."""
    p = paths()
    settings = load_provider_settings(p.config_dir)
    clients = load_api_clients(p.config_dir, p.keys_dir)
    missing = [c.client_id for c in clients.values() if not c.key_sha256]
    if missing:
        log.warning("API clients without a key (run `cmp-pipelines api keys init`): %s", ", ".join(missing))
    return ApiContext(backend=build_backend(p.database),
                      provider=build_provider(settings.provider, server=True),
                      settings=settings, clients_by_hash={c.key_sha256: c for c in clients.values() if c.key_sha256},
                      security=load_security(p.config_dir),
                      public_base_url=settings.public_base_url or f"http://127.0.0.1:{port}")


def publish_if_free(wait_seconds: float = 2.0) -> bool:
    """At start-up, refresh the read model when no pipeline run holds the main store (embedded store only: on
    PostgreSQL the API reads the store itself)."""
    from datetime import UTC, datetime

    from cmp_pipelines.core.db.connection import StoreBusyError, connect
    from cmp_pipelines.core.settings import store
    from cmp_pipelines.defs.one_off.flow import publish_accounts

    if store().backend == "postgres":
        return False

    try:
        with connect(paths().database, read_only=True, wait_seconds=wait_seconds) as con:
            publish_accounts(con, datetime.now(UTC))
        return True
    except StoreBusyError:
        log.warning("main store busy: serving the last published read model")
        return False


def close_context(ctx: ApiContext) -> None:
    """What `build_context` opened: the store (PostgreSQL: its pool's threads; SQLite: its checkpoint thread) and
    the provider's state. A server shutting down, or a test's server stopping, leaves no thread behind."""
    ctx.store.close()
    ctx.provider.close()


def create_app(ctx: ApiContext | None = None, port: int = 8000) -> FastAPI:
    """`ctx`: a context the caller owns (and closes); without one the app builds its own and closes it when the
    server shuts down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if ctx is None:
            close_context(app.state.cmp)

    # /docs and /redoc from the Swagger UI and ReDoc files the fastapi-offline package ships, never from a CDN; no
    # online validator badge either (Swagger UI would send the spec's URL to validator.swagger.io).
    app = FastAPIOffline(
        static_url="/docs-assets", swagger_ui_parameters={"validatorUrl": "none"}, lifespan=lifespan,
        title="CMP one-off payments and account set-up",
        version="1.0.0",
        description="Create Payment for AgentView, selfcare and IVR; payment status; account balance; payment "
                    "type, card token and mandate set-up. Every call needs an X-API-Key. Amounts are decimal "
                    "strings with two places. Errors are RFC 9457 problem details naming the field. SOAP: "
                    "`/soap/payment-setup?wsdl`. The Business Configuration console is at `/console/`.",
    )
    app.state.cmp = ctx or build_context(port)
    app.add_exception_handler(problems.Problem, problems.problem_handler)
    app.add_exception_handler(RequestValidationError, problems.validation_handler)
    app.add_exception_handler(StarletteHTTPException, problems.http_handler)
    app.add_exception_handler(StoreBusyError, problems.busy_handler)
    app.add_exception_handler(Exception, problems.unexpected_handler)
    app.include_router(payments.router)
    app.include_router(history.router)
    app.include_router(events.router)
    app.include_router(setup.router)
    app.include_router(billing.router)
    app.include_router(soap.router)
    app.include_router(sandbox_pages.router)
    app.include_router(console.router)

    @app.get("/health", tags=["service"], summary="Liveness, and when the read model was published (on PostgreSQL: "
                                                  "the store's time, as the API reads it directly)")
    def health() -> dict:
        return {"status": "ok", "read_model_published_at": app.state.cmp.backend.published_at()}

    return app
