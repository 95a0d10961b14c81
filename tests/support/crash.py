"""The crash-point sweep (kill -9 at every point where a run makes work durable, then the next `run-pending` as cron
would start it), shared by every flow's crash tests: runs execute in forked children (the parent has imported
everything once), killed by `CMP_CRASHPOINT=N`.

A test module uses it by importing `crash_everywhere`, `execute` and `shards`, and the fixtures `home` (the
platform with the project's dagster.yaml) and `tmp_path` (memory-backed) into its namespace.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from cmp_pipelines.core.settings import SCRATCH_PREFIX
from cmp_pipelines.definitions import build_definitions
from cmp_pipelines.lib.headless import repository_snap, run_partition, run_pending_sensors
from cmp_pipelines.lib.instance_config import write_for_home

FORK = multiprocessing.get_context("fork")
HANG_SECONDS = 300
OPEN_SECONDS = 60
_DEFINITIONS: list[dg.Definitions] = []


def _definitions() -> dg.Definitions:
    """The code location built once in the parent, with its repository snapshot (~1 s of CPU), which every forked
    run inherits, as a code server keeps one Definitions for every run it serves."""
    if not _DEFINITIONS:
        import great_expectations  # noqa: F401  imported once in the parent so each forked run does not pay for it;
        # here, not at module import, so collecting the suite (every xdist worker) does not pay 3 s for it either
        definitions = build_definitions()
        repository_snap(definitions.get_repository_def())
        _DEFINITIONS.append(definitions)
    return _DEFINITIONS[0]


def _child(definitions: dg.Definitions, crash_at: int | None, log: str, job: str | None,
           partition: str | None, opened) -> None:
    os.environ["CMP_CRASHPOINT"] = "" if crash_at is None else str(crash_at)
    os.environ["CMP_CRASHPOINT_LOG"] = log
    # where a child stuck past the parent's patience was: every thread's stack, read back by `execute`
    faulthandler.dump_traceback_later(HANG_SECONDS - 30, file=open(log + ".hang", "w"))  # noqa: SIM115
    with dg.DagsterInstance.get() as instance:
        opened.set()
        if job:
            run_partition(job, partition, definitions, instance)
        else:
            run_pending_sensors(definitions, instance, echo=lambda _: None)


def execute(crash_at: int | None = None, job: str | None = None, partition: str | None = None) -> int:
    """One `run-pending` (or one job partition) in its own process; -9 when the crash point killed it.

    A child that has not even opened the Dagster instance after OPEN_SECONDS is forked again (twice at most): the
    xdist worker that forks it is multi-threaded, and a thread of an earlier test inside SQLite at the moment of the
    fork leaves one of SQLite's process-wide mutexes held in the child, whose first `sqlite3.connect` then waits
    for ever (CI, twice: the stacks `execute` prints showed exactly that). Nothing durable happens before the
    instance is open, so the second fork is the same run; a child stuck anywhere later fails with its stacks."""
    log = os.environ["CMP_DATA_DIR"] + "/crash.log"
    for attempt in range(3):
        opened = FORK.Event()
        child = FORK.Process(target=_child, args=(_definitions(), crash_at, log, job, partition, opened))
        child.start()
        if opened.wait(OPEN_SECONDS) or child.exitcode is not None or attempt == 2:
            break
        child.kill()
        child.join()
        print(f"crash test: a forked child could not open the Dagster instance in {OPEN_SECONDS} s (a fork beside "
              "a thread inside SQLite); forked again", file=sys.stderr)
    child.join(HANG_SECONDS)
    if child.exitcode is None:
        child.kill()
        child.join()
        stacks = Path(log + ".hang").read_text() if Path(log + ".hang").exists() else "(no stacks written)"
        raise AssertionError(f"the run hung ({'run-pending' if job is None else job}, crash point {crash_at}); "
                             f"its threads {HANG_SECONDS - 30} s in:\n{stacks}")
    Path(log + ".hang").unlink(missing_ok=True)
    return child.exitcode


@pytest.fixture
def tmp_path():
    """The platform on a memory-backed folder where there is one: these tests run a hundred runs, and every
    commit of the store and of the Dagster instance is an fsync that a disk makes slow."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    folder = Path(tempfile.mkdtemp(prefix="cmp-crash-test-", dir=base))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def home(platform):
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(exist_ok=True)
    write_for_home(home)
    return platform


def state(platform) -> dict:
    """What must be the same however the run was interrupted (a killed run is a failed run: the alert saying so is
    the one file an interrupted day adds, by design)."""
    postings = platform.query(
        "SELECT kind, count(*), sum(amount_minor) FROM ledger_postings WHERE kind <> 'INVOICE' GROUP BY 1 ORDER BY 1")
    root = platform.root
    files = [f"{p.relative_to(root).parts[0]}/{p.name}" for p in root.rglob("*")
             if p.is_file() and p.relative_to(root).parts[0] not in ("dagster_home", "keys") and p.parent != root]
    files = sorted(re.sub(r"-[0-9a-f]{16}\.eml$", "-<id>.eml", re.sub(r"^(outbound/)\d{8}T\d+-", r"\1<time>-", f))
                   for f in files if not f.endswith("crash.log") and "-cmp-alert-run-failed-" not in f)
    return {"postings": postings, "files": files}


def settled(platform) -> dict:
    """The state once further run-pendings change nothing: documents are delivered and events dispatched by the
    run-pending after the one that published or raised them (issue 17)."""
    now = state(platform)
    for _ in range(4):
        assert execute() == 0
        now, before = state(platform), now
        if now == before:
            break
    return now


def leftovers(platform) -> list[str]:
    """Scratch files of dead processes and half-written files anywhere under the data dir."""
    dead = []
    for base in {"/dev/shm", tempfile.gettempdir()}:
        for name in os.listdir(base) if os.path.isdir(base) else []:
            if name.startswith(SCRATCH_PREFIX) and any(Path(base, name).iterdir()):
                pid = int(name[len(SCRATCH_PREFIX):].split("-")[0])
                if not Path(f"/proc/{pid}").exists():
                    dead.append(name)
    parts = [str(p) for p in platform.root.rglob("*.part")]
    return dead + parts


def unfinished_runs() -> list[str]:
    with dg.DagsterInstance.get() as instance:
        return [r.run_id for r in instance.get_runs(filters=dg.RunsFilter(statuses=[
            dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]))]


# Each sweep is split into this many tests, each killing at every SHARDS-th point (after its own uninterrupted
# run), so that pytest-xdist spreads one sweep over the workers instead of one worker taking all of it.
SHARDS = 2
shards = pytest.mark.parametrize("shard", range(SHARDS), ids=[f"shard{i + 1}of{SHARDS}" for i in range(SHARDS)])


def crash_everywhere(platform, prepare, run, finish, shard: int = 0) -> tuple[list[str], dict]:
    """List the crash points an uninterrupted run passes; then, for each point where work became durable (after
    every commit, publish and move, and before the first commit) that falls to this shard, on a fresh copy of the
    platform: kill the run there, let the next run-pending recover, and compare with the uninterrupted outcome.
    Returns every kill point of the sweep (all shards) and that outcome."""
    root = platform.root
    (root / "crash.log").unlink(missing_ok=True)
    pristine = Path(tempfile.mkdtemp(dir=root.parent)) / "pristine"
    shutil.copytree(root, pristine)
    prepare()
    assert run(0) == 0
    expected = settled(platform)
    points = (root / "crash.log").read_text().splitlines()
    first_before = next((p for p in points if p.split(" ", 1)[1] == "before commit"), None)
    chosen = [p for p in points if p == first_before or p.split(" ", 1)[1] != "before commit"]
    assert chosen, "the run passed no crash point"
    for point in chosen[shard::SHARDS]:
        shutil.rmtree(root)
        shutil.copytree(pristine, root)
        prepare()
        assert run(int(point.split(" ", 1)[0])) == -9, f"not killed at {point}"
        assert (root / "crash.log").read_text().strip() == point, "the run takes the same path every time"
        assert execute() == 0  # the next run-pending: reaps the dead run, recovers its partition
        now = settled(platform)
        assert now == expected, (f"after a kill at {point}: postings {now['postings']} vs {expected['postings']}; "
                                 f"files gained {Counter(now['files']) - Counter(expected['files'])}, "
                                 f"lost {Counter(expected['files']) - Counter(now['files'])}")
        assert unfinished_runs() == [], f"after a kill at {point}"
        assert leftovers(platform) == [], f"after a kill at {point}"
    finish()  # after the last kill and its recovery, new work still flows
    return chosen, expected
