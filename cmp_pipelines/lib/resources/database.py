"""The DuckDB store resource. Every asset or check that writes through it declares pool `cmp_db`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from cmp_pipelines.core.db.connection import connect
from cmp_pipelines.core.settings import paths, sweep_scratch
from cmp_pipelines.lib.recovery import tag_run_process

DB_POOL = "cmp_db"


class Database(dg.ConfigurableResource):
    path: str | None = None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """At run start: name this process on the run (so a kill is detected) and remove what killed runs left
        in scratch (decrypted partner data)."""
        if context.instance is not None and context.run_id:
            tag_run_process(context.instance, context.run_id)
        sweep_scratch()

    def file(self) -> Path:
        return Path(self.path) if self.path else paths().database

    @contextmanager
    def connection(self, read_only: bool = False, wait_seconds: float = 600.0) -> Iterator[duckdb.DuckDBPyConnection]:
        """Waits (sleeping) while another process writes: a run the CLI executes does not pass the run queue, so a
        step can find a daemon-launched run's step holding the store for as long as a big file takes."""
        with connect(self.file(), read_only=read_only, wait_seconds=wait_seconds) as con:
            yield con
