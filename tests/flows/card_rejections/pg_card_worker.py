"""One card run in a process of its own, on the PostgreSQL store, for the concurrency and kill tests
(tests/flows/card_rejections/test_card_postgres_concurrency.py).

    python -m tests.flows.card_rejections.pg_card_worker URL DATA_DIR day YYYY-MM-DD START_FILE
    python -m tests.flows.card_rejections.pg_card_worker URL DATA_DIR rejections PARTITION_KEY START_FILE

Waits for START_FILE (every worker starts together), runs the CARD-mode job's steps for the day or the Rejections
job's steps for the file on a scratch DuckDB linked to URL, and prints what it did as JSON. CMP_CRASHPOINT kills it
where it says.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

from cmp_pipelines.core.config import load_partners, load_rejection_codes
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.mirror import mirrored
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.card_payments.flow import RecurringCardPayments
from cmp_pipelines.defs.card_rejections.flow import CardRejections
from cmp_pipelines.lib.resources.file_store import LocalFileStore

CONFIG = PROJECT_ROOT / "config"


def main(url: str, root: str, mode: str, arg: str, start_file: str) -> None:
    Path(f"{start_file}.ready.{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not Path(start_file).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    files, keyring = LocalFileStore(base_dir=root), PartnerKeyring(Path(root) / "keys")
    with mirrored(url) as mirror:
        if mode == "day":
            day = date.fromisoformat(arg)
            flow = RecurringCardPayments(mirror.con, files, keyring, load_partners(CONFIG),
                                         datetime(day.year, day.month, day.day, 2, tzinfo=UTC), mirror=mirror)
            flow.raise_notices(day)
            due = flow.select_due(day)
            posted = flow.post(flow.due(day))
            flow.write_extracts(flow.due(day))
            flow.write_posting_file(flow.posted(due))
            print(json.dumps({"status": due.status, "selected": due.record_count, "posted_now": posted.posted_now}))
            return
        flow = CardRejections(mirror.con, files, keyring, load_partners(CONFIG), load_rejection_codes(CONFIG),
                              datetime(2026, 12, 1, 10, tzinfo=UTC), mirror=mirror)
        load = flow.load(arg)
        applied = flow.apply(flow.loaded(arg))
        flow.write_posting_file(flow.applied(load))
        flow.write_reports(flow.loaded(arg))
        print(json.dumps({"status": load.status, "applied_now": applied.applied_now,
                          "reversed": applied.posting_count, "outcomes": flow.loaded(arg).outcomes}))


if __name__ == "__main__":
    main(*sys.argv[1:])
