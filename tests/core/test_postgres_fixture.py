"""The test server's own promise: without PostgreSQL binaries a `postgres` test skips saying why, except under
CMP_REQUIRE_POSTGRES=1 (`make test-pg`, CI), where it fails: CI can never go green by skipping them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


def _run_without_binaries(tmp_path, require: bool) -> subprocess.CompletedProcess:
    test = tmp_path / "test_needs_server.py"
    test.write_text("import pytest\n\nfrom tests.support.postgres import postgres_server  # noqa: F401\n\n\n"
                    "@pytest.mark.postgres\ndef test_it(postgres_server):\n    pass\n")
    env = {**os.environ, "CMP_PG_BINDIR": str(tmp_path / "no-binaries-here")}
    env.pop("CMP_REQUIRE_POSTGRES", None)
    if require:
        env["CMP_REQUIRE_POSTGRES"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rsE",
                           "--rootdir", str(PROJECT), "-c", str(PROJECT / "pyproject.toml"), str(test)],
                          cwd=PROJECT, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.e2e
def test_no_binaries_skips_with_the_reason(tmp_path):
    done = _run_without_binaries(tmp_path, require=False)
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout
    assert "no PostgreSQL server binaries (initdb, pg_ctl) on this machine" in done.stdout


@pytest.mark.e2e
def test_no_binaries_fails_when_postgres_is_required(tmp_path):
    done = _run_without_binaries(tmp_path, require=True)
    assert done.returncode == 1, done.stdout
    assert "1 error" in done.stdout and "skipped" not in done.stdout
    assert "CMP_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries" in done.stdout
