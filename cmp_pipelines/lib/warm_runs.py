"""The daemon's run launcher on one machine (issue 16): runs forked from a warm process instead of spawned cold.

Dagster's default launcher asks the code server to start each run, and the code server spawns a fresh interpreter
(`multiprocessing` "spawn", hard-coded) that imports Dagster, our libraries and the expectation suite's Great
Expectations again: 2.3-2.8 s before a run's first event and another ~3-4 s before its first expectation check, on
every run, while the run holds the store's pool slot. With files queued behind one DuckDB writer that fixed cost was
most of the demo's backlog (96 s -> 64 s with this launcher, `benchmarks/demo_backlog.py`).

`WarmRunLauncher` keeps a fork server: a child of the daemon that has imported those libraries once
(`preload_modules`) and forks a run worker per run, which then does exactly what `dagster api execute_run` does (the
entry point Dagster's Docker and Kubernetes launchers start). Our definitions are preloaded too; so that a code
change reaches the next run as it does with the default launcher, every launch compares a fingerprint of the
package's source files (count, sizes, newest change: ~300 stats) with the server's and starts a new server when
they differ, that run going the default way (definitions do not read configuration at import: checked; an upgrade
of the preloaded libraries needs a daemon restart, as any code server does). Dagster's multiprocess executor uses
the same technique for steps (`start_method: forkserver` with `preload_modules`).

Whatever the fork server cannot take is launched the default way, through the code server: a run before the fork
server has finished importing, a code location running in another Python environment, a fork server that died.
Runs it forked are cancelled by SIGTERM (Dagster's run worker treats it as an interrupt and marks the run
CANCELED) and carry `cmp/launcher` so termination knows which way a run went; a run worker that dies is found by
`lib/recovery` (every run is tagged with its process), as with the default launcher.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

from dagster import Array, Field
from dagster._core.launcher import DefaultRunLauncher, LaunchRunContext

LAUNCHER_TAG = "cmp/launcher"
FORKED = "forked"
DEFAULT_PRELOAD = ["dagster", "dagster._cli.api", "duckdb", "pyarrow", "pandas", "great_expectations", "psycopg",
                   "cryptography", "jsonschema", "pydantic", "httpx", "yaml", "orjson", "cmp_pipelines.definitions"]
CODE_PACKAGE = Path(__file__).resolve().parent.parent  # cmp_pipelines: the code whose changes renew the server
READY = "ready"
READY_LOG = "cmp run fork server ready"


def _serve(modules: list[str]) -> None:
    """The fork server's loop: import `modules`, say ready, then for each line on stdin (a serialized
    `ExecuteRunArgs`) fork a run worker and answer its pid on stdout. The worker is a grandchild (the intermediate
    child exits at once), so the server never has a child to reap and a worker outlives the server and the daemon."""
    import importlib
    import time

    started = time.monotonic()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the daemon's terminal: the server ends with its stdin
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by a module goes to the daemon's log, never into the replies
    for module in modules:
        importlib.import_module(module)
    print(f"{READY_LOG} (pid {os.getpid()}, {len(modules)} modules in {time.monotonic() - started:.1f} s)",
          file=sys.stderr, flush=True)
    reply.write(READY + "\n")
    for line in sys.stdin:
        payload = line.strip()
        if not payload:
            continue
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read_end)
            worker = os.fork()
            if worker:
                os.write(write_end, f"{worker}\n".encode())
                os._exit(0)
            os.close(write_end)
            reply.close()
            _execute(payload)
        os.close(write_end)
        with os.fdopen(read_end) as answer:
            pid = answer.readline().strip()
        os.waitpid(child, 0)
        reply.write(f"{pid}\n")


_RUN_WORKER = False


def mark_run_worker() -> None:
    """Name this process one that executes runs and nothing else (a forked worker, a Celery run worker's pool
    process)."""
    global _RUN_WORKER
    _RUN_WORKER = True


def in_run_worker() -> bool:
    """Whether this process exists only to execute runs: forked here, marked (a Celery run worker's), `dagster api
    execute_run`/`resume_run` (a run pod's), or the code server's child for one run (the default launcher's way,
    which this one falls back to: a multiprocessing child carries its parent's argv, `dagster api grpc`). Not a
    test's or the CLI's process that executes a run in-process and goes on, nor a uvicorn worker."""
    import multiprocessing

    if _RUN_WORKER or {"execute_run", "resume_run"} & set(sys.argv):
        return True
    return multiprocessing.parent_process() is not None and "grpc" in sys.argv


def _execute(payload: str) -> None:
    """In the forked run worker: what `dagster api execute_run <payload>` does, then exit without returning into
    the fork server's loop."""
    from cmp_pipelines.lib import warm_runs  # the server runs as __main__: the flag goes on the module others import

    warm_runs.mark_run_worker()
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        from dagster._cli.api import execute_run_command

        execute_run_command.callback(input_json=payload, compressed_input_json=None)  # the command's body
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - a worker must never fall back into the fork server's loop
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def code_fingerprint(package: Path = CODE_PACKAGE) -> tuple[int, int, int]:
    """(files, total size, newest modification) of the package's Python sources."""
    count = size = newest = 0
    pending = [str(package)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        pending.append(entry.path)
                elif entry.name.endswith(".py"):
                    stat = entry.stat(follow_symlinks=False)
                    count, size, newest = count + 1, size + stat.st_size, max(newest, stat.st_mtime_ns)
    return count, size, newest


class ForkServer:
    """The daemon's handle on one fork server process: started in the background, used once ready."""

    def __init__(self, modules: list[str]):
        self._lock = threading.Lock()
        self.fingerprint = code_fingerprint()  # taken before the server imports: an edit meanwhile renews it
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, *modules], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, bufsize=1, env={"OPENBLAS_NUM_THREADS": "1", **os.environ},  # no idle BLAS threads to fork
        )
        self._ready = threading.Event()
        threading.Thread(target=self._await_ready, name="cmp-fork-server-ready", daemon=True).start()

    def _await_ready(self) -> None:
        if self._process.stdout.readline().strip() == READY:
            self._ready.set()

    def alive(self) -> bool:
        return self._process.poll() is None

    def ready(self) -> bool:
        return self._ready.is_set() and self.alive()

    def fork(self, payload: str, timeout: float = 10.0) -> int:
        """Fork a run worker for `payload`; its pid."""
        with self._lock:
            self._process.stdin.write(payload + "\n")
            self._process.stdin.flush()
            readable, _, _ = select.select([self._process.stdout], [], [], timeout)
            if not readable:
                raise TimeoutError(f"the run fork server did not answer in {timeout:.0f} s")
            answer = self._process.stdout.readline().strip()
        if not answer.isdigit():
            raise RuntimeError(f"the run fork server failed to fork a run worker (answered {answer!r})")
        return int(answer)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()  # end of input: the server exits; run workers it forked go on
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()


def _same_environment(executable: str | None) -> bool:
    """A code location whose Python is this daemon's (the same virtual environment's bin folder)."""
    return bool(executable) and Path(executable).parent.absolute() == Path(sys.executable).parent.absolute()


def _in_daemon() -> bool:
    """The `dagster-daemon` process (alone or under `dagster dev`/`dg dev`) is the one that launches queued runs;
    the webserver, code servers, CLI commands and tests also build the instance's launcher and must not pay for a
    fork server they will never use."""
    program = sys.argv[0] if sys.argv else ""
    return Path(program).name == "dagster-daemon" or program.endswith(os.path.join("_daemon", "__main__.py"))


class WarmRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` whose runs are forked from a warm fork server (see the module's docstring)."""

    def __init__(self, inst_data=None, preload_modules: list[str] | None = None):
        super().__init__(inst_data=inst_data)
        self._modules = list(preload_modules or DEFAULT_PRELOAD)
        self._server: ForkServer | None = None
        self._server_lock = threading.Lock()

    @classmethod
    def config_type(cls):
        return {"preload_modules": Field(Array(str), is_required=False,
                                         description="Libraries the fork server imports once for every run.")}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, preload_modules=config_value.get("preload_modules"))

    def _warm(self) -> ForkServer | None:
        """The fork server, started by the daemon's first launch, and again if it died or the code changed; None
        outside the daemon."""
        if not _in_daemon():
            return None
        with self._server_lock:
            server = self._server
            if server is not None and server.alive() and server.fingerprint != code_fingerprint():
                server.close()  # the runs it forked go on; the next server imports the new code
                server = None
            if server is None or not server.alive():
                server = self._server = ForkServer(self._modules)
            return server

    def launch_run(self, context: LaunchRunContext) -> None:
        from dagster._grpc.types import ExecuteRunArgs
        from dagster._serdes import serialize_value

        run = context.dagster_run
        origin = run.job_code_origin
        server = self._warm()
        if origin is None or not _same_environment(origin.executable_path) or server is None or not server.ready():
            super().launch_run(context)  # the code server spawns it, as Dagster's default does
            return
        self._instance.add_run_tags(run.run_id, {LAUNCHER_TAG: FORKED})
        payload = serialize_value(ExecuteRunArgs(job_origin=origin, run_id=run.run_id,
                                                 instance_ref=self._instance.get_ref()))
        pid = server.fork(payload)
        self._instance.report_engine_event(f"Run worker forked from the warm fork server (pid: {pid}).", run,
                                           cls=self.__class__)
        self._run_ids.add(run.run_id)

    def terminate(self, run_id: str) -> bool:
        from cmp_pipelines.core import processes
        from cmp_pipelines.lib.recovery import PID_RUN_TAG, PID_TAG

        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or run.tags.get(LAUNCHER_TAG) != FORKED:
            return super().terminate(run_id)
        if run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        token = run.tags.get(PID_TAG) if run.tags.get(PID_RUN_TAG) == run_id else None
        if token is None or not processes.alive(token):
            return False  # not started far enough to name its process (the run monitor's start timeout ends it)
        try:
            os.kill(int(token.split("-")[0]), signal.SIGTERM)  # Dagster's run worker: an interrupt -> CANCELED
        except ProcessLookupError:
            return False
        return True

    def dispose(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


if __name__ == "__main__":
    _serve(sys.argv[1:])
