"""The instance storage dagster.yaml sets: Dagster's SQLite files, each database's engine made once per process."""

import os
import uuid

import dagster as dg
import pytest
import sqlalchemy
from click.testing import CliRunner
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.dagster_run import DagsterRun

from cmp_pipelines.cli import main
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.lib import instance_storage
from cmp_pipelines.lib.instance_config import for_home, write_for_home
from cmp_pipelines.lib.instance_storage import _Engines


def _open(home):
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def _add_run(instance, job: str = "a_job") -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name=job, run_id=run_id))
    return run_id


def test_the_files_are_dagsters_own_and_open_with_dagsters_storage_either_way(tmp_path):
    home, plain = tmp_path / "home", tmp_path / "plain"
    home.mkdir(), plain.mkdir()
    write_for_home(home)
    with _open(home) as instance:
        assert {type(s).__name__ for s in (instance.run_storage, instance.event_log_storage,
                                           instance.schedule_storage)} == {
            "QuickSqliteRunStorage", "QuickSqliteEventLogStorage", "QuickSqliteScheduleStorage"}
        ours = _add_run(instance)
    assert (home / "history" / "runs.db").is_file() and (home / "schedules" / "schedules.db").is_file()
    # Dagster's own SQLite storage over the same folder (what an instance without our block would use)
    (plain / "dagster.yaml").write_text(f'storage:\n  sqlite:\n    base_dir: "{home}"\n')
    with _open(plain) as theirs:
        assert type(theirs.run_storage).__name__ == "SqliteRunStorage"
        assert [r.run_id for r in theirs.get_runs()] == [ours]
        back = _add_run(theirs, "from_dagsters_storage")
    with _open(home) as instance:
        assert {r.run_id for r in instance.get_runs()} == {ours, back}


def test_an_instance_opened_by_its_folder_keeps_its_own_storage_whatever_dagster_home_says(tmp_path, monkeypatch):
    first, second, elsewhere = tmp_path / "first", tmp_path / "second", tmp_path / "elsewhere"
    for folder in (first, second, elsewhere):
        folder.mkdir()
        write_for_home(folder)
    monkeypatch.setenv("DAGSTER_HOME", str(elsewhere))
    with dg.DagsterInstance.get() as by_env:
        noise = _add_run(by_env)
    with _open(first) as one, _open(second) as two:
        run_id = _add_run(one)
        assert [r.run_id for r in one.get_runs()] == [run_id]
        assert two.get_runs() == []
    with dg.DagsterInstance.get() as by_env:
        assert [r.run_id for r in by_env.get_runs()] == [noise]


def test_each_database_makes_its_engine_once_and_reads_its_schema_once(tmp_path, monkeypatch):
    write_for_home(tmp_path)
    made, inspected = [], []
    real_engine, real_inspect = instance_storage.create_engine, sqlalchemy.inspect
    monkeypatch.setattr(instance_storage, "create_engine", lambda *a, **k: made.append(a[0]) or real_engine(*a, **k))
    monkeypatch.setattr(sqlalchemy, "inspect", lambda *a: inspected.append(a) or real_inspect(*a))
    with _open(tmp_path) as instance:
        run_id = _add_run(instance)
        instance.report_engine_event("one", instance.get_run_by_id(run_id))
        state = [s for s in instance.all_instigator_state()]
        made_at_open, inspected_at_open = len(made), len(inspected)
        for n in range(20):
            instance.get_runs()
            instance.report_engine_event(f"again {n}", instance.get_run_by_id(run_id))
            instance.all_instigator_state()
            instance.schedule_storage.has_instigators_table()
            instance.schedule_storage.has_secondary_index_table()
    assert state == []
    # runs, schedules, the event index and this run's events: one engine each, made the first time
    assert len(made) == made_at_open == len(set(made)), made
    assert len(inspected) == inspected_at_open, "the schedule storage asked SQLite for its tables again"


def test_a_forked_process_makes_its_own_engine_and_recent_shards_only_are_kept():
    engines = _Engines(limit=2)
    first = engines.get("sqlite:///one.db")
    assert engines.get("sqlite:///one.db") is first
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new engine for the same database
        os.write(write, b"new" if engines.get("sqlite:///one.db") is not first else b"same")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 8) == b"new"
    engines.get("sqlite:///two.db")
    engines.get("sqlite:///one.db")  # used again: the most recent
    engines.get("sqlite:///three.db")
    assert list(engines._engines) == ["sqlite:///one.db", "sqlite:///three.db"]  # noqa: SLF001 - two was oldest


def test_init_names_the_homes_own_folder_and_the_project_file_names_none(tmp_path, monkeypatch):
    """The project's file opens anywhere (Dagster's commands without DAGSTER_HOME make a temporary instance from the
    file in the working folder); `init` adds the SQLite storage block naming the home; a storage in the project file
    is refused rather than doubled."""
    project = (PROJECT_ROOT / "dagster.yaml").read_bytes()
    assert b"\nstorage:" not in project and b"env: DAGSTER_HOME" not in project
    home = tmp_path / "data" / "dagster_home"
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("CMP_DATABASE_URL", raising=False)
    done = CliRunner().invoke(main, ["init"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    written = (home / "dagster.yaml").read_bytes()
    assert written == for_home(project, home) and written.startswith(project)
    assert f'      base_dir: "{home}"\n'.encode() in written
    with _open(home) as instance:
        assert type(instance.run_storage).__name__ == "QuickSqliteRunStorage"
        assert instance.event_log_storage.has_concurrency_limits_table is True  # Dagster's cached property, kept
    with pytest.raises(ValueError, match="names a storage of its own"):
        for_home(written, home)


def test_only_plain_methods_are_remembered():
    class Checks:
        @property
        def has_table(self):
            return False

    with pytest.raises(TypeError, match="not a plain method"):
        instance_storage._remembering("has_table")(Checks)
