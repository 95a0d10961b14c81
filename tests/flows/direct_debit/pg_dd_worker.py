"""One direct debit job in a process of its own, on the PostgreSQL store, for the concurrency and kill tests
(tests/flows/direct_debit/test_dd_postgres_concurrency.py).

    python -m tests.flows.direct_debit.pg_dd_worker URL DATA_DIR START_FILE JOB ARG...

JOB is `auddis DAY`, `collect DAY`, `arudd KEY DAY` or `addacs KEY DAY`. Waits for START_FILE (every worker starts
together), runs the job's steps as tests/support/direct_debit_pg.py runs them (each in a session of its own) and
prints a JSON summary. CMP_CRASHPOINT kills it where it says.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.lib.resources.file_store import LocalFileStore
from tests.support.direct_debit_pg import addacs_day, arudd_day, auddis_day, collection_day


class Target:
    """What the day helpers need of a platform: the store's URL, the files and the keys."""

    def __init__(self, url: str, root: str):
        self.url, self.root = url, Path(root)
        self.files = LocalFileStore(base_dir=root)
        self.keyring = PartnerKeyring(self.root / "keys")


def main(url: str, root: str, start_file: str, job: str, *args: str) -> None:
    Path(f"{start_file}.ready.{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not Path(start_file).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    target = Target(url, root)
    if job == "auddis":
        batch, text = auddis_day(target, date.fromisoformat(args[0]))
        print(json.dumps({"status": batch.status, "by_code": batch.by_code, "serial": text[:80] if text else None}))
    elif job == "collect":
        batch, text, posted, _ = collection_day(target, date.fromisoformat(args[0]))
        print(json.dumps({"status": batch.status, "by_code": batch.by_code, "posted_now": posted.posted_now,
                          "total_minor": batch.total_minor}))
    elif job == "arudd":
        load, posted, report = arudd_day(target, args[0], date.fromisoformat(args[1]))
        outcomes = Counter(r["outcome"] for r in report["returns"])  # as applied (a debit another report took since
        print(json.dumps({"status": load.status, "outcomes": outcomes,  # loading is REJECTED then)
                          "posted_now": posted.posted_now}))
    elif job == "addacs":
        load, applied, _ = addacs_day(target, args[0], date.fromisoformat(args[1]))
        print(json.dumps({"status": load.status, "outcomes": applied.outcomes}))
    else:
        raise SystemExit(f"unknown job {job!r}: auddis, collect, arudd or addacs")


if __name__ == "__main__":
    main(*sys.argv[1:])
