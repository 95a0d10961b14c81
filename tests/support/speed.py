"""Test-process speed-ups that change no behaviour under test.

Dagster checks the schema revision of each SQLite storage it opens (run, event log, schedules) against the head
of its own Alembic scripts, and Alembic finds the head by executing every one of its ~90 revision files again,
each time: ~0.15 s of CPU per storage, three storages per instance, and a `run-pending` opens an instance for
the command and one more for each sensor that reads its context's instance. The scripts cannot change while a
test process runs, so the script directory (and the revision map it memoises) is read once per process and
shared; the database's own revision is still read and compared on every open.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from alembic.script import ScriptDirectory
from dagster._core.storage import sql as _dagster_sql

_LOCK = threading.Lock()
_SCRIPTS: dict[tuple, ScriptDirectory] = {}


class _SharedScriptDirectory:
    """Stands in for `ScriptDirectory` in `dagster._core.storage.sql` (its only use there: `from_config`)."""

    @staticmethod
    def from_config(config) -> ScriptDirectory:
        key = (config.get_alembic_option("script_location"), tuple(config.get_version_locations_list() or ()))
        with _LOCK:
            if key not in _SCRIPTS:
                _SCRIPTS[key] = ScriptDirectory.from_config(config)
            return _SCRIPTS[key]


def share_alembic_scripts() -> None:
    _dagster_sql.ScriptDirectory = _SharedScriptDirectory


# Dagster's SQLite storages create a new SQLAlchemy engine for every connection they open (NullPool: no connection
# is kept). An engine is cheap to keep but dear to make (~1.5 ms), and SQLAlchemy caches each statement's compiled
# SQL on its engine, so a fresh engine compiles every statement again: together a quarter of the CPU of a run-pending
# (measured on the crash sweeps). One engine per (database file, options) is kept per process instead; every
# connection is still a new SQLite connection, opened and closed as before (NullPool), so nothing the tests observe
# changes. Forked children inherit the engines, which hold no connection.
_SQLITE_STORAGE_MODULES = (
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log",
    "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage",
)
_ENGINES: OrderedDict[tuple, object] = OrderedDict()  # the most recently used last; a worker opens thousands
_MAX_ENGINES = 64  # of per-run event-log files over a session, the live ones are few


def _shared_engine(url, **kwargs):
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    text = str(url)
    if kwargs.get("poolclass") is not NullPool or not text.startswith("sqlite:///") or text == "sqlite:///:memory:":
        return create_engine(url, **kwargs)  # only file databases without a pool are shared
    key = (text, repr(sorted(kwargs.items(), key=lambda item: item[0])))
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = create_engine(url, **kwargs)
            if len(_ENGINES) > _MAX_ENGINES:
                _ENGINES.popitem(last=False)
        else:
            _ENGINES.move_to_end(key)
        return engine


def share_sqlite_engines() -> None:
    import importlib

    for name in _SQLITE_STORAGE_MODULES:
        importlib.import_module(name).create_engine = _shared_engine
