"""Dagster's SQLite instance storage, with each database's SQLAlchemy engine made once per process.

Dagster 1.13's SQLite run, schedule and event-log storages call `create_engine` on every `connect()`, and a new
engine initialises its dialect (version and settings queries) on its first connection; the schedule storage then
asks SQLite for its table list (`has_instigators_table`, `has_secondary_index_table`) several times per call. The
daemon does that for every sensor tick and every pass of the run queue, the code server for every tick's run
queries, a run for each of its ~60 events: py-spy of an idle daemon found a quarter of a core there, on a 2-core
machine where it is CPU the runs lack. Here each database keeps one engine (still `NullPool`: every `connect()`
opens its own SQLite connection, as before, so threads and processes share nothing), made again after a fork, and a
table or index once seen is remembered (they are only ever added, by `dagster instance migrate`; one not seen yet is
asked for again). The files, their schema and their migrations are Dagster's, unchanged: an instance written by
this storage opens with Dagster's own and the reverse.

Added by `cmp-pipelines init` to the home's dagster.yaml (`storage: custom`, naming the home's own folder, where
Dagster's default keeps the same files: lib/instance_config.py); on PostgreSQL init adds dagster-postgres's instead.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._config import StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SQLITE_BUSY_TIMEOUT_SECONDS, SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._utils import mkdir_p
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

EVENT_SHARD_ENGINES = 64  # a run's events go to its own file: the recent runs' engines are kept, not every run's


class _Engines:
    """Engines by connection string for this process. A forked child starts with none of its parent's (and a fresh
    lock, in case the fork came while another thread held it); a NullPool engine holds no connection, so dropping the
    parent's leaks nothing."""

    def __init__(self, limit: int | None = None, **options):
        self._limit, self._options = limit, options
        self._reset()
        _ALL.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._engines: OrderedDict[str, Engine] = OrderedDict()

    def get(self, conn_string: str) -> Engine:
        with self._lock:
            engine = self._engines.get(conn_string)
            if engine is None:
                engine = self._engines[conn_string] = create_engine(conn_string, poolclass=NullPool, **self._options)
                if self._limit is not None and len(self._engines) > self._limit:
                    self._engines.popitem(last=False)
            else:
                self._engines.move_to_end(conn_string)
            return engine


_ALL: weakref.WeakSet[_Engines] = weakref.WeakSet()
os.register_at_fork(after_in_child=lambda: [engines._reset() for engines in list(_ALL)])


def _remembering(*checks: str):
    """Each named schema check (a table, a column, a built index; the arguments name which) answers True from memory
    once it has answered True: migrations only ever add. A connection argument is not part of what is asked."""

    def decorate(cls):
        for name in checks:
            ask = inspect.getattr_static(cls, name)
            if not inspect.isfunction(ask):  # e.g. a cached_property: a method in its place would always be truthy
                raise TypeError(f"{cls.__name__}.{name} is not a plain method to remember")
            setattr(cls, name, _remembered(name, ask))
        return cls
    return decorate


def _remembered(name: str, ask):
    @functools.wraps(ask)
    def remembered(self, *args):
        key = (name, *(a for a in args if isinstance(a, str)))
        seen = self.__dict__.setdefault("_schema_seen", set())
        if key in seen:
            return True
        if ask(self, *args):
            seen.add(key)
            return True
        return False
    return remembered


@contextmanager
def _begin(engine: Engine) -> Iterator:
    with engine.connect() as conn, conn.begin():
        yield conn


class _OneEngine:
    """`connect()` through this process's one engine for the storage's database (a run or schedule storage)."""

    def __init__(self, conn_string: str, inst_data=None):
        self._engines = _Engines()  # before Dagster's own set-up, which connects
        super().__init__(conn_string, inst_data)

    @contextmanager
    def connect(self) -> Iterator:
        with _begin(self._engines.get(self._conn_string)) as conn:
            yield conn


@_remembering("has_built_index", "has_run_stats_index_cols", "has_bulk_actions_selector_cols", "has_backfill_id_column",
              "has_bulk_action_job_name_column", "has_backfill_tags_table")
class QuickSqliteRunStorage(_OneEngine, SqliteRunStorage):
    pass


@_remembering("_has_instigators_table", "has_instigators_table", "_has_asset_daemon_asset_evaluations_table",
              "has_secondary_index_table", "has_built_index")
class QuickSqliteScheduleStorage(_OneEngine, SqliteScheduleStorage):
    pass


@_remembering("has_table", "has_asset_key_col", "has_asset_key_index_cols", "_has_asset_key_index_cols_on_connection",
              "has_secondary_index")  # has_concurrency_limits_table and has_default_pool_limit_col: cached by Dagster
class QuickSqliteEventLogStorage(SqliteEventLogStorage):
    def __init__(self, base_dir: str, inst_data=None):
        self._engines = _Engines(EVENT_SHARD_ENGINES, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        super().__init__(base_dir, inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator:
        with self._db_lock:
            engine = self._engines.get(self.conn_string_for_shard(shard))
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with _begin(engine) as conn:
                yield conn


class QuickSqliteStorage(DagsterSqliteStorage):
    """`storage: custom` in dagster.yaml: Dagster's SQLite storage under `base_dir` with the storages above."""

    def __init__(self, base_dir: str, inst_data=None):
        self.base_dir = base_dir
        self._run_storage = QuickSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = QuickSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = QuickSqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def config_type(cls):
        return {"base_dir": StringSource}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> QuickSqliteStorage:
        mkdir_p(config_value["base_dir"])
        return cls(config_value["base_dir"], inst_data=inst_data)
