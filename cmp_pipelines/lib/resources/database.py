"""The store resource. Every asset or check that writes through it declares pool `cmp_db`.

With CMP_DATABASE_URL set, PostgreSQL is the system of record and a run works on a scratch DuckDB linked to it
(core/db/mirror.py): `flow_store()` yields that scratch with its `Mirror`; `connection()` then yields the same
scratch, so a check in the run reads what the run pulled and wrote (the probes' 'today' counts and their results
are not yet PostgreSQL's: left for the next phase). A flow not yet on PostgreSQL is refused with a clear error naming
those that are (`POSTGRES_FLOWS`) rather than left writing into a scratch nobody keeps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import PrivateAttr

from cmp_pipelines.core.db.connection import connect
from cmp_pipelines.core.db.mirror import Mirror, mirrored
from cmp_pipelines.core.db.pg_duck import pg_duck
from cmp_pipelines.core.processes import yield_cpu
from cmp_pipelines.core.settings import paths, run_nice, store, sweep_scratch
from cmp_pipelines.lib.recovery import tag_run_process
from cmp_pipelines.lib.warm_runs import in_run_worker

DB_POOL = "cmp_db"

# The flows that run on PostgreSQL (issue 19), one line each: every other step is refused with this list.
POSTGRES_FLOWS = {
    "non-recurring payments",
    "direct debit (AUDDIS, collections, ADDACS, ARUDD)",
    "recurring card payments",
    "card rejections",
    "billing feed",
    "delivery receipts",
    "hardware orders (sales order request, dispatch, device enrolment)",
}


class Database(dg.ConfigurableResource):
    """In a run, one connection serves every step (the in-process executor initialises resources once per run):
    the run holds pool `cmp_db` from start to end anyway, and a connection per step paid DuckDB's open and its
    checkpoint at every close, and read what the previous step had just written back from disk (issue 16:
    steps 2-14x slower in the run than in the bench). Outside a run (sensors, tests) each call opens its own."""

    path: str | None = None
    _run: ExitStack | None = PrivateAttr(default=None)
    _con: duckdb.DuckDBPyConnection | None = PrivateAttr(default=None)
    _mirror: Mirror | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """At run start: name this process on the run (so a kill is detected), yield the CPU to interactive work
        in a process of the run's own (`CMP_RUN_NICE`, before the store's threads start), and remove what killed
        runs left in scratch (decrypted partner data)."""
        if context.instance is not None and context.run_id:
            tag_run_process(context.instance, context.run_id)
            self._run = ExitStack()
            if in_run_worker() and (nice := run_nice()):
                try:
                    context.log.info(f"This run's process yields the CPU to interactive work: nice "
                                     f"{yield_cpu(nice)} (CMP_RUN_NICE).")
                except OSError as exc:  # a sandbox that forbids it: the run goes on at its priority
                    context.log.warning(f"CMP_RUN_NICE={nice} could not be applied ({exc}); the run keeps its "
                                        "priority.")
        sweep_scratch()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._run is not None:
            self._con, self._mirror = None, None
            self._run.close()  # closes the run's connection: DuckDB checkpoints once, after the last step

    def file(self) -> Path:
        return Path(self.path) if self.path else paths().database

    def on_postgres(self) -> bool:
        return self.path is None and store().backend == "postgres"

    @contextmanager
    def flow_store(self) -> Iterator[tuple[duckdb.DuckDBPyConnection, Mirror | None]]:
        """What a flow step runs on: the DuckDB store and no mirror, or (on PostgreSQL) the run's scratch DuckDB and
        its link to PostgreSQL, one per run (a step of the same run finds the rows earlier steps left in it)."""
        if not self.on_postgres():
            with self.connection() as con:
                yield con, None
            return
        if self._run is None:
            with mirrored() as mirror:
                yield mirror.con, mirror
            return
        if self._mirror is None:
            self._mirror = self._run.enter_context(mirrored())
        yield self._mirror.con, self._mirror

    @contextmanager
    def connection(self, read_only: bool = False, wait_seconds: float = 600.0) -> Iterator[duckdb.DuckDBPyConnection]:
        """Waits (sleeping) while another process writes: a run the CLI executes does not pass the run queue, so a
        step can find a daemon-launched run's step holding the store for as long as a big file takes."""
        if self.on_postgres():
            if self._mirror is None:
                raise RuntimeError(
                    "CMP_DATABASE_URL names a PostgreSQL store, and only these flows run on it so far (issue 19): "
                    f"{', '.join(sorted(POSTGRES_FLOWS))}; this step needs the embedded store: unset "
                    "CMP_DATABASE_URL to run it")
            yield self._mirror.con  # a check after the flow's steps in the same run: what the run pulled and wrote
            return
        if self._run is None:
            with connect(self.file(), read_only=read_only, wait_seconds=wait_seconds) as con:
                yield con
            return
        if self._con is None:
            self._con = self._run.enter_context(connect(self.file(), wait_seconds=wait_seconds))
        yield self._con

    def exists(self) -> bool:
        """Whether there is a store to read: the DuckDB file, or (on PostgreSQL) always (reaching it is checked
        when a connection is opened)."""
        return self.on_postgres() or self.file().exists()

    @contextmanager
    def service(self, read_only: bool = False, wait_seconds: float = 600.0):
        """The daemon's service work (delivery, the workflow dispatcher, probes, recovery): the DuckDB store, or on
        PostgreSQL a direct connection to it (core/db/pg_duck.py) - never a run's scratch, which holds only what
        the run pulled, so a probe after a flow's steps reads what PostgreSQL now holds."""
        if not self.on_postgres():
            with self.connection(read_only=read_only, wait_seconds=wait_seconds) as con:
                yield con
            return
        with pg_duck() as con:
            yield con
