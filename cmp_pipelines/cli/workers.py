"""`worker`: a Celery run worker for the daemon's runs (issue 20, lib/run_workers)."""

from __future__ import annotations

import os
import re
import socket
import sys

import click

from cmp_pipelines.cli.common import _dagster_home, _fail


@click.command()
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Runs this worker executes at once (one process each).")
@click.option("--name", default=None, help="Worker name (default: cmp@<host>-<pid>), shown on each run it executes.")
@click.option("--queue", "queues", multiple=True, metavar="NAME",
              help="Broker queue to take runs from (repeatable; default: the launcher's default queue, `dagster`). A "
                   "run tagged `dagster-celery/queue: NAME` goes only to workers taking NAME.")
def worker(concurrency: int, name: str | None, queues: tuple[str, ...]) -> None:
    """Execute the daemon's runs on this machine: takes runs from the broker named by CMP_CELERY_BROKER_URL, each in
    its own process, with the Dagster instance and the store this machine's settings name."""
    from cmp_pipelines.lib.run_workers import BROKER_SETTING, QUEUE, broker_url

    if broker_url() is None:
        _fail(f"{BROKER_SETTING} is not set: a worker takes its runs from that broker (e.g. redis://host:6379/0)")
    bad = [q for q in queues if not re.fullmatch(r"[A-Za-z0-9_.-]+", q)]
    if bad:
        _fail(f"--queue {bad[0]!r}: a queue name is letters, digits, '_', '.' or '-'")
    _dagster_home()  # the instance's dagster.yaml, as init writes it, so a run reports where the daemon reads
    name = name or f"cmp@{socket.gethostname()}-{os.getpid()}"
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "cmp_pipelines.lib.run_workers", "worker",
                              "--queues", ",".join(queues or (QUEUE,)), "--concurrency", str(concurrency),
                              "--hostname", name,
                              "--pool", "prefork", "--without-gossip", "--without-mingle", "--loglevel", "INFO"])
