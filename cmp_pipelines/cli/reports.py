"""`probes` and `summary`: what an operator checks first."""

from __future__ import annotations

import json

import click

from cmp_pipelines.cli.common import _service_connect

PROBE_COLUMNS = ("STATUS", "TYPE", "VALUE", "THRESHOLD", "PROBE")


def probe_table(rows: list[tuple], indent: str = "") -> list[str]:
    """The latest result of each probe under labelled columns; widths follow the widest value, so a large count
    never pushes its row out of line. Value and threshold are right-aligned (numbers)."""
    cells = [("TRIPPED" if r[5] else "OK", str(r[2]), "-" if r[3] is None else str(r[3]),
              "-" if r[4] is None else str(r[4]), str(r[1])) for r in rows]
    widths = [max(len(row[i]) for row in [PROBE_COLUMNS, *cells]) for i in range(len(PROBE_COLUMNS))]

    def line(row: tuple) -> str:
        status, kind, value, threshold, name = row
        return (f"{indent}{status:<{widths[0]}}  {kind:<{widths[1]}}  {value:>{widths[2]}}  "
                f"{threshold:>{widths[3]}}  {name}")

    return [line(PROBE_COLUMNS), *(line(row) for row in cells)]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def probes(as_json: bool) -> None:
    """The latest value and status of every probe."""
    from cmp_pipelines.core.probe_queries import latest

    with _service_connect(read_only=True) as con:
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
        return
    for line in probe_table(rows):
        click.echo(line)


@click.command()
def summary() -> None:
    """Batches, postings, quarantined files and probe results, at a glance."""
    from cmp_pipelines.core.accounts import platform_summary
    from cmp_pipelines.core.probe_queries import latest

    with _service_connect(read_only=True) as con:
        text, rows = platform_summary(con), latest(con)
    # The probe section is drawn here, with the same labelled columns as `probes`.
    click.echo(text)
    click.echo("Probes:")
    for line in probe_table(rows, indent="  ") if rows else ["  (none yet)"]:
        click.echo(line)
