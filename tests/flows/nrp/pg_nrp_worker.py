"""One NRP run in a process of its own, on the PostgreSQL store, for the concurrency and kill tests
(tests/flows/nrp/test_nrp_postgres_concurrency.py).

    python -m tests.flows.nrp.pg_nrp_worker URL DATA_DIR PARTITION_KEY START_FILE

Waits for START_FILE (every worker starts together), runs the four steps of the job for the file on a scratch
DuckDB linked to URL, and prints {"status": ..., "posted_now": n}. CMP_CRASHPOINT kills it where it says.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.mirror import mirrored
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.nrp.flow import FileQuarantined, NonRecurringPayments
from cmp_pipelines.lib.resources.file_store import LocalFileStore

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def main(url: str, root: str, key: str, start_file: str) -> None:
    Path(f"{start_file}.ready.{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not Path(start_file).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    files = LocalFileStore(base_dir=root)
    with mirrored(url) as mirror:
        flow = NonRecurringPayments(mirror.con, files, PartnerKeyring(Path(root) / "keys"),
                                    load_partners(PROJECT_ROOT / "config"), NOW, mirror)
        try:
            load = flow.load(key)
        except FileQuarantined as quarantined:
            print(json.dumps({"status": "QUARANTINED", "code": quarantined.code, "posted_now": 0}))
            return
        posted = flow.post(load)
        flow.write_posting_file(posted)
        flow.acknowledge(load)
    print(json.dumps({"status": load.status, "posted_now": posted.posted_now, "held": load.held_count}))


if __name__ == "__main__":
    main(*sys.argv[1:])
