"""The DuckDB store resource. Every asset or check that writes through it declares pool `cmp_db`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import PrivateAttr

from cmp_pipelines.core.db.connection import connect
from cmp_pipelines.core.settings import paths, sweep_scratch
from cmp_pipelines.lib.recovery import tag_run_process

DB_POOL = "cmp_db"


class Database(dg.ConfigurableResource):
    """In a run, one connection serves every step (the in-process executor initialises resources once per run):
    the run holds pool `cmp_db` from start to end anyway, and a connection per step paid DuckDB's open and its
    checkpoint at every close, and read what the previous step had just written back from disk (issue 16:
    steps 2-14x slower in the run than in the bench). Outside a run (sensors, tests) each call opens its own."""

    path: str | None = None
    _run: ExitStack | None = PrivateAttr(default=None)
    _con: duckdb.DuckDBPyConnection | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """At run start: name this process on the run (so a kill is detected) and remove what killed runs left
        in scratch (decrypted partner data)."""
        if context.instance is not None and context.run_id:
            tag_run_process(context.instance, context.run_id)
            self._run = ExitStack()
        sweep_scratch()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._run is not None:
            self._con = None
            self._run.close()  # closes the run's connection: DuckDB checkpoints once, after the last step

    def file(self) -> Path:
        return Path(self.path) if self.path else paths().database

    @contextmanager
    def connection(self, read_only: bool = False, wait_seconds: float = 600.0) -> Iterator[duckdb.DuckDBPyConnection]:
        """Waits (sleeping) while another process writes: a run the CLI executes does not pass the run queue, so a
        step can find a daemon-launched run's step holding the store for as long as a big file takes."""
        if self._run is None:
            with connect(self.file(), read_only=read_only, wait_seconds=wait_seconds) as con:
                yield con
            return
        if self._con is None:
            self._con = self._run.enter_context(connect(self.file(), wait_seconds=wait_seconds))
        yield self._con
