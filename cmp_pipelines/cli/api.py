"""`cmp-pipelines api ...`: serve the HTTP API, issue client keys, publish the read model."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import click

from cmp_pipelines.core.settings import paths


@click.group()
def api() -> None:
    """The HTTP API for one-off payments and account set-up (AgentView, selfcare, IVR)."""


@api.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--no-access-log", is_flag=True, help="Leave out one log line a request (benchmarks).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 32),
              help="Worker processes (they share the SQLite stores).")
def serve(host: str, port: int, no_access_log: bool, workers: int) -> None:
    """Serve REST (OpenAPI at /docs), SOAP (/soap/payment-setup?wsdl) and the sandbox provider's card page."""
    from cmp_pipelines.api.server import serve as run

    run(host, port, access_log=not no_access_log, workers=workers)


@api.group("keys")
def keys() -> None:
    """API client keys: only their SHA-256 is kept ($CMP_KEYS_DIR/api_clients.sha256)."""


@keys.command("init")
@click.option("--client", "client_ids", multiple=True, help="Client id (default: every client without a key).")
@click.option("--rotate", is_flag=True, help="Issue a new key even when the client has one (the old one stops).")
def keys_init(client_ids: tuple[str, ...], rotate: bool) -> None:
    """Issue keys and print each once: it cannot be shown again, only replaced."""
    from cmp_pipelines.core.config import ConfigError
    from cmp_pipelines.core.config_payments import hash_key, load_api_clients, write_key_hash

    try:
        clients = load_api_clients(paths().config_dir, paths().keys_dir)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    for client_id in client_ids or tuple(clients):
        if client_id not in clients:
            raise click.ClickException(f"{client_id} is not in config/api_clients.yaml")
        if clients[client_id].key_sha256 and not rotate:
            click.echo(f"{client_id}: has a key (use --rotate for a new one)")
            continue
        key = f"cmp_{secrets.token_urlsafe(32)}"
        write_key_hash(paths().keys_dir, client_id, hash_key(key))
        click.echo(f"{client_id} ({clients[client_id].channel}): {key}")


@api.command("publish")
def publish() -> None:
    """Publish accounts, cards and balances from the main store to the API's read model now."""
    from cmp_pipelines.core.db.connection import StoreBusyError, connect
    from cmp_pipelines.core.settings import store
    from cmp_pipelines.defs.one_off.flow import publish_accounts

    if store().backend == "postgres":
        click.echo("nothing to publish: on the PostgreSQL store the API reads accounts and balances directly")
        return
    try:
        with connect(paths().database, read_only=True, wait_seconds=30) as con:
            count = publish_accounts(con, datetime.now(UTC))
    except StoreBusyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"published {count} accounts to the API read model")
