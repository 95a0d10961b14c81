"""`mandates`: Direct Debit Instructions (create, amend, cancel, resume, convert, held)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from cmp_pipelines.cli.common import _connect, _dd_config, _setup
from cmp_pipelines.cli.identity import authorized


@click.group()
def mandates() -> None:
    """Direct Debit Instructions: set-up, amendment, cancellation."""


@mandates.command("create")
@click.argument("account_number")
@click.option("--sort-code", required=True, help="Payer's sort code, 6 digits (12-34-56 accepted).")
@click.option("--bank-account", required=True, help="Payer's account number, 8 digits.")
@click.option("--account-name", required=True, help="Name on the payer's bank account.")
@click.option("--reference", default=None, help="Mandate reference (default CMP<account>).")
def mandates_create(account_number: str, sort_code: str, bank_account: str, account_name: str,
                    reference: str | None) -> None:
    """Register a mandate for ACCOUNT_NUMBER; it goes to Bacs on the next AUDDIS as 0N."""
    from cmp_pipelines.core.mandates import create_mandate

    authorized("CREATE_MANDATE")
    config = _dd_config()
    view = _setup(lambda con, _: create_mandate(con, account_number, sort_code=sort_code, bank_account=bank_account,
                                                account_name=account_name, config=config, now=datetime.now(UTC),
                                                reference=reference))
    click.echo(json.dumps(view, indent=2))


@mandates.command("amend")
@click.argument("mandate_id")
@click.option("--sort-code", required=True)
@click.option("--bank-account", required=True)
@click.option("--account-name", required=True)
def mandates_amend(mandate_id: str, sort_code: str, bank_account: str, account_name: str) -> None:
    """New bank details for MANDATE_ID; sent as 0C (old details) then 0N (new) on the next AUDDIS."""
    from cmp_pipelines.core.mandates import amend_mandate

    operator, _ = authorized("CHANGE_MANDATE")
    view = _setup(lambda con, _: amend_mandate(con, mandate_id, sort_code=sort_code, bank_account=bank_account,
                                               account_name=account_name, now=datetime.now(UTC),
                                               cause=f"cli {operator}"))
    click.echo(json.dumps(view, indent=2))


@mandates.command("cancel")
@click.argument("mandate_id")
@click.option("--after-final-collection", is_flag=True,
              help="Collect what is due once more (transaction code 19), then cancel.")
def mandates_cancel(mandate_id: str, after_final_collection: bool) -> None:
    """Cancel MANDATE_ID; the bank is told with 0C on the next AUDDIS if it knew of it."""
    from cmp_pipelines.core.mandates import cancel_mandate

    operator, _ = authorized("CHANGE_MANDATE")
    view = _setup(lambda con, _: cancel_mandate(con, mandate_id, now=datetime.now(UTC), cause=f"cli {operator}",
                                                after_final_collection=after_final_collection))
    click.echo(json.dumps(view, indent=2))


@mandates.command("resume")
@click.argument("mandate_id")
@click.option("--reason", required=True, help="Why collection may go on (kept in the mandate's history).")
def mandates_resume(mandate_id: str, reason: str) -> None:
    """Collect again under MANDATE_ID, held by an ARUDD return (`mandates held` lists them)."""
    from cmp_pipelines.core.mandates import resume_mandate

    operator, _ = authorized("CHANGE_MANDATE")
    view = _setup(lambda con, _: resume_mandate(con, mandate_id, now=datetime.now(UTC),
                                                cause=f"{reason} (operator {operator})"))
    click.echo(json.dumps(view, indent=2))


@mandates.command("held")
def mandates_held() -> None:
    """Mandates held by an ARUDD return, and why: each waits for `mandates resume` or `mandates cancel`."""
    with _connect(read_only=True) as con:
        rows = con.execute("SELECT mandate_id, reference, account_number, held_reason FROM mandates "
                           "WHERE status = 'HELD' ORDER BY mandate_id").fetchall()
    for row in rows:
        click.echo("\t".join(str(v) for v in row))
    click.echo(f"{len(rows)} mandate(s) held")


@mandates.command("convert")
@click.argument("mandate_id")
def mandates_convert(mandate_id: str) -> None:
    """Lodge an active paper mandate electronically: 0S on the next AUDDIS."""
    from cmp_pipelines.core.mandates import convert_mandate

    authorized("CHANGE_MANDATE")
    view = _setup(lambda con, _: convert_mandate(con, mandate_id, now=datetime.now(UTC)))
    click.echo(json.dumps(view, indent=2))
