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
