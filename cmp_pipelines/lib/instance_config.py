"""The project's dagster.yaml as one instance's own file (no Dagster import: `init` writes it before anything runs).

An embedded instance's file gains its storage block here, naming the home's own folder: Dagster's SQLite files under
it, each database's engine made once per process (lib/instance_storage.py). The project's file has no storage block,
so Dagster commands run without `DAGSTER_HOME` (their temporary instance) still read it, and a process that opens an
instance by its folder (a harness, a test holding two) reads that instance's storage whatever `DAGSTER_HOME` says.
On PostgreSQL, `init` appends dagster-postgres's block instead.
"""

from __future__ import annotations

import json
from pathlib import Path

STORAGE_BLOCK = """
# Dagster's SQLite instance storage: the same files under this home as its default, each database's engine made once
# per process instead of on every call (cmp_pipelines/lib/instance_storage.py), written by `cmp-pipelines init`
storage:
  custom:
    module: cmp_pipelines.lib.instance_storage
    class: QuickSqliteStorage
    config:
      base_dir: {folder}
"""
POSTGRES_STORAGE_BLOCK = b"""
# CMP_DATABASE_URL is set: the instance's run, event log and schedule storage are in that PostgreSQL database
storage:
  postgres:
    postgres_url:
      env: CMP_DATABASE_URL
"""


def for_home(source: bytes, home: Path, postgres: bool = False) -> bytes:
    """`source` (the project's dagster.yaml) with the instance's storage: SQLite under `home`, or the store's
    PostgreSQL (its URL named by variable, so the file holds no password)."""
    if b"\nstorage:" in b"\n" + source:
        raise ValueError("the project's dagster.yaml names a storage of its own; the instance's is added by init")
    if postgres:
        return source + POSTGRES_STORAGE_BLOCK
    folder = json.dumps(str(Path(home).absolute()))  # a JSON string is a double-quoted YAML scalar
    return source + STORAGE_BLOCK.format(folder=folder).encode()


def write_for_home(home: Path) -> Path:
    """The project's dagster.yaml written into `home` as that instance's own (tests, the bench harness)."""
    from cmp_pipelines.core.settings import PROJECT_ROOT

    target = Path(home) / "dagster.yaml"
    target.write_bytes(for_home((PROJECT_ROOT / "dagster.yaml").read_bytes(), Path(home)))
    return target
