"""The `cmp-pipelines` command: one module per command group, registered here."""

from __future__ import annotations

import sys

import click

from cmp_pipelines.cli.accounts import accounts, nrp
from cmp_pipelines.cli.api import api
from cmp_pipelines.cli.communications import events, messages, smtp_catcher
from cmp_pipelines.cli.config import config
from cmp_pipelines.cli.db import db
from cmp_pipelines.cli.deliveries import deliveries
from cmp_pipelines.cli.demo import demo
from cmp_pipelines.cli.files import bacs, files
from cmp_pipelines.cli.mandates import mandates
from cmp_pipelines.cli.orders import orders
from cmp_pipelines.cli.reports import probes, summary
from cmp_pipelines.cli.runs import (
    run_auddis,
    run_card_payments,
    run_dd_collections,
    run_enrolment_requests,
    run_pending,
)
from cmp_pipelines.cli.setup import init, keys
from cmp_pipelines.cli.workers import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """cmp-pipelines: the payments back office (files, ledger, probes) around a Dagster code location.

    Every command honours $CMP_DATA_DIR (default ./data), $CMP_KEYS_DIR and $CMP_CONFIG_DIR.
    """


main.add_command(init)
main.add_command(config)
main.add_command(db)
main.add_command(keys)
main.add_command(demo)
main.add_command(files)
main.add_command(bacs)
main.add_command(run_pending)
main.add_command(run_card_payments)
main.add_command(run_auddis)
main.add_command(run_dd_collections)
main.add_command(run_enrolment_requests)
main.add_command(nrp)
main.add_command(accounts)
main.add_command(mandates)
main.add_command(probes)
main.add_command(summary)
main.add_command(orders)
main.add_command(api)
main.add_command(deliveries)
main.add_command(events)
main.add_command(messages)
main.add_command(smtp_catcher)
main.add_command(worker)


if __name__ == "__main__":
    sys.exit(main())
