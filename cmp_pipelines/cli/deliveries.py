"""`deliveries`: the delivery register of outbound documents (list, retry, send now)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from cmp_pipelines.cli.common import _config, _fail, _service_connect


@click.group()
def deliveries() -> None:
    """Outbound documents and their delivery to partners: PENDING -> SENT / FAILED -> CONFIRMED."""


@deliveries.command("list")
@click.option("--status", type=click.Choice(["PENDING", "SENT", "FAILED", "CONFIRMED"]), default=None)
@click.option("--partner", default=None, help="Only this partner's documents.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per document.")
def deliveries_list(status: str | None, partner: str | None, limit: int, as_json: bool) -> None:
    """The newest documents of the register, with their status, attempts and last error."""
    from cmp_pipelines.core.delivery import list_deliveries

    with _service_connect(read_only=True) as con:
        rows = list_deliveries(con, status, partner, limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no documents" + (f" with status {status}" if status else ""))
        return
    for r in rows:
        when = r["confirmed_at"] or r["sent_at"] or r["next_attempt_at"]
        click.echo(f"{r['delivery_id']:>6}  {r['status']:<9} {r['partner']:<14} {r['document_kind']:<20} "
                   f"{r['remote_name']}  attempts={r['attempts']}  {when:%Y-%m-%d %H:%M:%S}")
        if r["last_error"] and r["status"] in ("FAILED", "PENDING"):
            click.echo(f"        last error: {r['last_error']}")


@deliveries.command("retry")
@click.argument("delivery_ids", nargs=-1, type=int)
@click.option("--all", "all_failed", is_flag=True, help="Every FAILED document.")
@click.option("--now", "send_now", is_flag=True, help="Send them here and now instead of at the sensor's next tick.")
def deliveries_retry(delivery_ids: tuple[int, ...], all_failed: bool, send_now: bool) -> None:
    """Make FAILED documents due again with their attempts reset (those given by id, or --all)."""
    from cmp_pipelines.core.delivery import retry
    from cmp_pipelines.core.settings import paths
    from cmp_pipelines.core.transports import deliver_pending
    from cmp_pipelines.lib.resources.file_store import object_store

    if not delivery_ids and not all_failed:
        _fail("name the documents to retry (their ids, from `deliveries list --status FAILED`) or give --all")
    with _service_connect() as con:
        count = retry(con, list(delivery_ids) or None, datetime.now(UTC))
    click.echo(f"{count} document(s) due again")
    if send_now and count:
        partners, _ = _config()
        p = paths()
        report = deliver_pending(lambda: _service_connect(), partners, p.data_dir, p.keys_dir, store=object_store(),
                                 ids=list(delivery_ids) or None)
        for item in report.sent:
            click.echo(f"sent    {item.partner} {item.remote_name}")
        for item, why in report.failed:
            click.echo(f"FAILED  {item.partner} {item.remote_name}: {why}")
        if report.failed:
            _fail(f"{len(report.failed)} document(s) failed again")
