"""Headless runs: `run-pending` (the sensors, as the daemon runs them) and the daily jobs on demand."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from cmp_pipelines.cli.common import _business_day, _dagster_home, _date_option, _fail, _service_connect


@click.command("run-pending")
@click.option("--max-ticks", default=100, show_default=True, help="At most this many ticks per sensor.")
def run_pending(max_ticks: int) -> None:
    """Tick every running sensor as the daemon does and execute the runs it asks for, here.

    Cursors and ticks are kept in the Dagster instance (the UI's), so a run key is launched once, whether by this
    command or by the daemon; the runs show in the UI under their job. Exits 1 when a sensor's tick failed.
    """
    _dagster_home()
    from cmp_pipelines.lib.headless import run_pending_sensors

    outcomes = run_pending_sensors(max_ticks=max_ticks, echo=click.echo)
    failed = [o for o in outcomes if not o.success]
    click.echo(f"{len(outcomes)} run(s), {len(failed)} failed")
    if outcomes.errors:
        _fail(f"{len(outcomes.errors)} sensor tick(s) failed; see the sensors' ticks in the UI")


def _run_day(job_name: str, day: str | None, batch_prefix: str, what: str) -> None:
    """One daily partition of a job, created as its schedule's tick would create it (tied to the code location,
    so the UI shows it on the job's page), executed here; then the batch it made (`<batch_prefix>-YYYYMMDD`)."""
    business_day = _business_day(day)
    batch_id = f"{batch_prefix}-{business_day:%Y%m%d}"
    if business_day > datetime.now(UTC).date():
        _fail(f"{business_day} is in the future: a daily job runs for today or an earlier day")
    _dagster_home()
    from cmp_pipelines.lib.headless import run_partition

    outcome = run_partition(job_name, business_day.isoformat())
    if not outcome.success:
        _fail(f"{job_name} {business_day} failed: {outcome.error}")
    with _service_connect(read_only=True) as con:
        count, total, path = con.execute(
            "SELECT record_count, minor_to_decimal(total_minor), output_path FROM batches WHERE batch_id = ?",
            [batch_id],
        ).fetchone()
    click.echo(f"{business_day}: {count} {what}, {total} in total -> {path or 'no file (nothing due)'}")


@click.command("run-card-payments")
@_date_option
def run_card_payments(day: str | None) -> None:
    """Run the Recurring Payments job in CARD mode for one day, as its daily schedule does (idempotent)."""
    _run_day("recurring_payments_card_job", day, "RCX", "card transaction(s)")


@click.command("run-auddis")
@_date_option
def run_auddis(day: str | None) -> None:
    """Run the AUDDIS extract for one day, as its daily schedule does (idempotent)."""
    _run_day("auddis_extract_job", day, "AUD", "instruction(s)")


@click.command("run-dd-collections")
@_date_option
def run_dd_collections(day: str | None) -> None:
    """Run the Recurring Payments job in DD mode for one day, as its daily schedule does (idempotent)."""
    _run_day("recurring_payments_dd_job", day, "DDX", "debit(s)")


@click.command("run-enrolment-requests")
@_date_option
def run_enrolment_requests(day: str | None) -> None:
    """Run the Device Enrolment Request job for one day, as its daily schedule does (idempotent)."""
    _run_day("device_enrolment_request_job", day, "DER", "enrolment request(s)")
