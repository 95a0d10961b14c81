"""The demo of `make demo` (the Makefile's `prepare`, then `run-pending`) on PostgreSQL gives what it gives on the
embedded store: the seeding commands run their DuckDB SQL in a scratch and push what they wrote (cli/demo.py
`_seeding`), the other commands read PostgreSQL, and every run they start keeps PostgreSQL as its store. Both
stores are run here, in this process, and compared: ledger, batches, record outcomes, acknowledgements, runs."""

from __future__ import annotations

import multiprocessing
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import psycopg
import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, DagsterRunStatus

from cmp_pipelines.cli import main
from cmp_pipelines.core.probe_queries import PROBE_SQL

# slow as well: a demo on each store (about 45 s of CPU, 17 runs on each), and slow tests are handed out first
pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# The Makefile's `prepare` on a fresh data folder (its "unless files are there already" guards all pass), then the
# headless drain of `make demo`. Fewer accounts than the Makefile's 1000: enough for every sample file.
STEPS = (["init"], ["keys", "init"], ["demo", "seed", "--accounts", "40", "--seed", "42"], ["demo", "files"],
         ["demo", "cards"], ["run-card-payments"], ["demo", "card-rejections"], ["demo", "direct-debit"],
         ["run-auddis"], ["run-dd-collections"], ["demo", "bacs-reports"], ["demo", "orders"],
         ["demo", "warehouse-dispatch"], ["demo", "billing-run"], ["run-pending"])
OUTCOMES = {
    "ledger": "SELECT kind, count(*), sum(amount_minor)::BIGINT FROM ledger_postings GROUP BY kind ORDER BY kind",
    "batches": "SELECT kind, status, count(*), sum(record_count)::BIGINT, sum(total_minor)::BIGINT FROM batches "
               "GROUP BY kind, status ORDER BY kind, status",
    "nrp_records": "SELECT outcome, count(*) FROM nrp_records GROUP BY outcome ORDER BY outcome",
    "mandates": "SELECT status, count(*) FROM mandates GROUP BY status ORDER BY status",
    "orders": "SELECT status, count(*) FROM hw_orders GROUP BY status ORDER BY status",
    "codes": "SELECT count(*) FROM config_rejection_codes",
}


def _demo(data: Path, url: str | None, monkeypatch=None) -> dict:
    """The demo in a fresh data folder, on PostgreSQL at `url` or (None) the embedded store; what it left."""
    env = {"CMP_DATA_DIR": str(data), "DAGSTER_HOME": str(data / "dagster_home"), "CMP_KEYS_DIR": None,
           "CMP_DATABASE_URL": url}
    for name, value in env.items():
        if monkeypatch is not None:  # in this process: put back after the test
            monkeypatch.setenv(name, value) if value else monkeypatch.delenv(name, raising=False)
        elif value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)
    for step in STEPS:
        done = CliRunner().invoke(main, step, catch_exceptions=False)
        assert done.exit_code == 0, (step, done.output[-2000:])
    assert "0 failed" in done.output
    # the probe for batches left without their posting file, two hours on: every flow of the demo wrote its file
    unfiled = PROBE_SQL["ledger_posting_files_missing"]
    later = {"older_than": datetime.now(UTC) + timedelta(hours=2)}
    if url:
        assert not list(data.rglob("*.duckdb"))  # nothing went to an embedded store by mistake
        with psycopg.connect(url) as con:
            outcome = {name: con.execute(sql).fetchall() for name, sql in OUTCOMES.items()}
            outcome["unfiled"] = con.execute(unfiled.replace("$older_than", "%(older_than)s"), later).fetchall()
    else:
        with duckdb.connect(str(data / "cmp.duckdb"), read_only=True) as con:
            outcome = {name: con.execute(sql).fetchall() for name, sql in OUTCOMES.items()}
            outcome["unfiled"] = con.execute(unfiled, later).fetchall()
    outcome["acknowledgements"] = sorted(
        p.parent.relative_to(data / "outbound" / "acknowledgements").as_posix()
        for p in (data / "outbound" / "acknowledgements").rglob("*") if p.is_file())
    with DagsterInstance.from_config(str(data / "dagster_home")) as instance:
        runs = instance.get_runs()
        outcome["runs"] = sorted(r.job_name for r in runs)
        assert [r.job_name for r in runs if r.status != DagsterRunStatus.SUCCESS] == []
    return outcome


def test_the_demo_on_postgres_gives_what_it_gives_on_duckdb(tmp_path, monkeypatch, pg_url):
    """The embedded demo runs in a spawned process meanwhile (spawned, not forked: this process has threads): on
    two cores the test takes the longer demo's time, not both."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        embedded = pool.apply_async(_demo, (tmp_path / "duckdb", None))
        on_postgres = _demo(tmp_path / "postgres", pg_url, monkeypatch)
        embedded = embedded.get(timeout=600)
    assert on_postgres == embedded
    assert on_postgres["unfiled"] == [(0,)]
    ledger = {kind: (n, total) for kind, n, total in on_postgres["ledger"]}
    # every flow of the demo posted: the sample files and the daily jobs all reached the ledger
    assert {"INVOICE", "PAYMENT", "CARD_PAYMENT", "CARD_REVERSAL", "DD_COLLECTION", "DD_REVERSAL",
            "HARDWARE_CHARGE"} <= set(ledger)
    assert ledger["CARD_REVERSAL"][0] == 3 and ledger["DD_REVERSAL"][0] == 2
    batches = {(kind, status): (n, records) for kind, status, n, records, _ in on_postgres["batches"]}
    assert batches[("NRP_LOAD", "ACKNOWLEDGED")] == (4, 50) and batches[("BILLING_LOAD", "ACKNOWLEDGED")][0] == 1
    assert on_postgres["acknowledgements"].count("nrp/PAYPOINT") == 3 and "billing/BILLSYS" in on_postgres[
        "acknowledgements"]
    assert len(on_postgres["runs"]) >= 15 and on_postgres["codes"][0][0] > 0
