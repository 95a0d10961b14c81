"""`probes` and `summary`: what an operator checks first."""

from __future__ import annotations

import json

import click

from cmp_pipelines.cli.common import _connect


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def probes(as_json: bool) -> None:
    """The latest value and status of every probe."""
    from cmp_pipelines.core.probe_queries import latest

    with _connect(read_only=True) as con:
        rows = latest(con)
    records = [
        {"probe": r[0], "name": r[1], "type": r[2], "value": r[3], "threshold": r[4],
         "status": "TRIPPED" if r[5] else "OK", "notified": r[6], "evaluated_at": r[7].isoformat()}
        for r in rows
    ]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    if not records:
        click.echo("no probe has been evaluated yet")
    for r in records:
        click.echo(f"{r['status']:8} {r['type']:6} {r['value']:>8} / {r['threshold']:<8} {r['name']}")


@click.command()
def summary() -> None:
    """Batches, postings, quarantined files and probe results, at a glance."""
    from cmp_pipelines.core.accounts import platform_summary

    with _connect(read_only=True) as con:
        click.echo(platform_summary(con))
