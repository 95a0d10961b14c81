"""Runs on worker machines (issue 20): Dagster's Celery run launcher hands each run to a Celery worker through a
broker, and the worker executes the whole run in its own process, the in-process executor inside it, as the
daemon's default launcher would on its own machine.

Why at the run, not the step: a run's steps share one store connection and its scratch (lib/resources/database);
a run is the unit our recovery, pools and idempotency already reason about. Any worker can take any run: the
workers share only the Dagster instance and the store in PostgreSQL and the files in the object store.

`CMP_CELERY_BROKER_URL` (e.g. `redis://host:6379/0`) selects it. `cmp-pipelines init` then writes the
`run_launcher` block into the instance's dagster.yaml (the URL referenced by name, never written), and
`cmp-pipelines worker` starts a worker. The broker is also the result backend: the daemon's run monitoring asks
it whether a run's task is alive (`check_run_worker_health`).
"""

from __future__ import annotations

import os

BROKER_SETTING = "CMP_CELERY_BROKER_URL"
QUEUE = "dagster"

# acks_late: a task is acknowledged when its run ends, so a message is never lost with a worker; prefetch 1: a
# worker reserves one run at a time, so a second worker takes the next file instead of waiting behind it.
WORKER_SETTINGS = {"task_acks_late": True, "worker_prefetch_multiplier": 1, "task_track_started": True,
                   "broker_connection_retry_on_startup": True}

RUN_LAUNCHER_BLOCK = f"""
# {BROKER_SETTING} is set: each run is executed by a Celery worker (`cmp-pipelines worker`), not by this machine
run_launcher:
  module: dagster_celery.launcher
  class: CeleryRunLauncher
  config:
    broker:
      env: {BROKER_SETTING}
    backend:
      env: {BROKER_SETTING}
    default_queue: {QUEUE}
    config_source:
""" + "".join(f"      {key}: {str(value).lower()}\n" for key, value in WORKER_SETTINGS.items())


def broker_url() -> str | None:
    return (os.environ.get(BROKER_SETTING) or "").strip() or None


def make_worker_app():
    """The worker's Celery app: the same broker, queue and settings as the launcher's, with dagster-celery's run
    tasks registered (execute a run, resume a run)."""
    from celery.signals import worker_process_init
    from dagster_celery.config import DEFAULT_CONFIG
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

    url = broker_url()
    if url is None:
        raise RuntimeError(f"{BROKER_SETTING} is not set: a run worker needs the broker the daemon sends runs to")
    app = make_app(app_args={"broker": url, "backend": url, "include": [],
                             "config_source": {**DEFAULT_CONFIG, **WORKER_SETTINGS}, "task_default_queue": QUEUE})
    create_execute_job_task(app)
    create_resume_job_task(app)
    worker_process_init.connect(_runs_only, weak=False)
    return app


def _runs_only(**_) -> None:
    """A pool process of a run worker executes runs and nothing else: it yields the CPU as a daemon-launched run's
    process does (CMP_RUN_NICE, at the store resource's set-up)."""
    from cmp_pipelines.lib.warm_runs import mark_run_worker

    mark_run_worker()


def __getattr__(name: str):
    """`celery -A cmp_pipelines.lib.run_workers worker` looks up `app` here; built on first use, so importing this
    module (lint, tests) needs no broker."""
    if name == "app":
        globals()["app"] = make_worker_app()
        return globals()["app"]
    raise AttributeError(name)
