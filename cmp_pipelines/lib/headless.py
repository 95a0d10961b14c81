"""Running the platform without the daemon, with the daemon's own semantics.

`run_pending_sensors` ticks every running sensor through Dagster's sensor-daemon machinery
(`dagster._daemon.sensor`): the cursor and last run key live in the instance's instigator state and each tick in
its tick storage, so a cursor persists between calls (and is shared with a `dagster-daemon` on the same instance),
a run key is never launched twice, and a tick interrupted part-way is resumed, exactly as the daemon does.
`run_partition` creates a run as a schedule tick does. Both create runs with the code location's remote job
origin (location `cmp_pipelines`, module `cmp_pipelines.definitions`, as workspace.yaml declares it), so the UI
lists them on their job's page like the daemon's runs.

What differs from the daemon, on purpose: sensors are evaluated now, whatever their minimum interval (the command
is "run what is pending"), in the repository's order, and each run is launched in this process and finished before
the next tick (the daemon's launcher starts a process per run through the code server). Running here keeps the
crash-recovery model (a run is tagged with the process executing it, `cmp_pipelines.lib.recovery`), lets tests pass
their own Definitions (swapped resources) and avoids ~5 s of imports per run on a small machine. The run queue
is not consulted either: a run started here goes straight to its launcher, as `execute_in_process` did before.
These functions use private Dagster modules (pinned `dagster>=1.13,<1.14`); the tests drive both paths.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import dagster as dg
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.definitions.sensor_definition import SensorEvaluationContext, SensorExecutionData
from dagster._core.errors import DagsterUserCodeProcessError, SensorExecutionError, user_code_error_boundary
from dagster._core.execution.api import execute_run
from dagster._core.execution.resources_init import get_transitive_required_resource_keys
from dagster._core.launcher import LaunchRunContext, RunLauncher
from dagster._core.origin import DEFAULT_DAGSTER_ENTRY_POINT
from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin
from dagster._core.remote_representation.code_location import InProcessCodeLocation
from dagster._core.remote_representation.external import RemoteRepository
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._core.remote_representation.handle import RepositoryHandle
from dagster._core.run_coordinator.sync_in_memory_run_coordinator import SyncInMemoryRunCoordinator
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.workspace import CodeLocationEntry, CodeLocationLoadStatus, DefinitionsSource
from dagster._daemon.sensor import (
    SensorLaunchContext,
    _evaluate_sensor,
    _get_evaluation_tick,
    _resume_tick,
    _sensor_instigator_data,
    mark_sensor_state_for_tick,
)
from dagster._time import get_current_datetime, get_current_timestamp
from dagster._utils.error import serializable_error_info_from_exc_info

from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.lib.inbound_sensor import no_waiting
from cmp_pipelines.lib.recovery import RECOVERY_SENSOR, process_tags, reap_dead_runs

# The code location as workspace.yaml and pyproject's [tool.dagster] name it (a test keeps the three in step).
LOCATION_NAME = "cmp_pipelines"
MODULE_NAME = "cmp_pipelines.definitions"
CLI_TRIGGER_TAG = "cmp/trigger"
_LOG = logging.getLogger("cmp_pipelines.headless")


@dataclass
class RunOutcome:
    sensor: str
    partition_key: str | None
    run_id: str
    success: bool
    error: str | None


class Outcomes(list):
    """The runs launched, in order; `errors` names the ticks that failed (a sensor that raised is recorded as a
    failed tick, its cursor kept, and the other sensors still tick, as under the daemon)."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []


def location_origin() -> ManagedGrpcPythonEnvCodeLocationOrigin:
    """The origin `dagster-daemon` and `dg dev` give the location when they read the project's workspace.yaml
    (equal to it, a test checks), so runs and sensor state made here are the ones they make."""
    return ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(module_name=MODULE_NAME, working_directory="."), location_name=LOCATION_NAME,
    )


_SNAPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def repository_snap(repository: dg.RepositoryDefinition) -> RepositorySnap:
    """The repository's snapshot, made once per definitions object (~1 s of CPU for this code location): a
    process that runs pending work more than once with the same Definitions (the tests, forked runs) pays once."""
    snap = _SNAPS.get(repository)
    if snap is None:
        snap = _SNAPS[repository] = RepositorySnap.from_def(repository)
    return snap


class _Location(InProcessCodeLocation):
    """The code location loaded in this process from a Definitions object (the module's, or a test's with swapped
    resources), under the workspace's origin: remote jobs, sensors and runs name `cmp_pipelines` and the module."""

    def __init__(self, origin, instance: dg.DagsterInstance, definitions: dg.Definitions):
        self._origin = origin
        self._instance = instance
        repository = definitions.get_repository_def()
        pointer = ModuleCodePointer(MODULE_NAME, "defs", str(PROJECT_ROOT))
        recon = ReconstructableRepository(pointer, executable_path=sys.executable)
        self._loaded_repositories = SimpleNamespace(
            definitions_by_name={repository.name: repository}, reconstructables_by_name={repository.name: recon},
            code_pointers_by_repo_name={repository.name: pointer},
        )
        self._repository_code_pointer_dict = {repository.name: pointer}
        self._repositories = {repository.name: RemoteRepository(
            repository_snap(repository),
            RepositoryHandle.from_location(repository_name=repository.name, code_location=self),
            auto_materialize_use_sensors=instance.auto_materialize_use_sensors,
        )}

    @property
    def origin(self):  # the workspace's origin, not an in-process one
        return self._origin

    @property
    def executable_path(self) -> str:
        return sys.executable

    @property
    def container_image(self) -> None:
        return None

    @property
    def container_context(self) -> None:
        return None

    @property
    def entry_point(self) -> list[str]:
        return DEFAULT_DAGSTER_ENTRY_POINT

    def repository_def(self, name: str) -> dg.RepositoryDefinition:
        return self._get_repo_def(name)

    def get_sensor_execution_data(self, instance, repository_handle, name, last_tick_completion_time, last_run_key,
                                  cursor, log_key, last_sensor_start_time) -> SensorExecutionData:
        """Dagster's `get_external_sensor_execution` (what a code server runs for the daemon), given this
        process's instance: the stock in-process location hands the sensor an instance reference, and every sensor
        that reads its context's instance or has resources opens a new instance from it (its three storages and
        their schema checks, ~0.15 s each tick)."""
        repository = self._get_repo_def(repository_handle.repository_name)
        try:
            sensor_def = repository.get_sensor_def(name)
            required = get_transitive_required_resource_keys(sensor_def.required_resource_keys,
                                                             repository.get_top_level_resources())
            with SensorEvaluationContext(
                instance.get_ref(), instance=instance, last_tick_completion_time=last_tick_completion_time,
                last_run_key=last_run_key, cursor=cursor, log_key=log_key, repository_name=repository.name,
                repository_def=repository, sensor_name=name, last_sensor_start_time=last_sensor_start_time,
                resources={k: v for k, v in repository.get_top_level_resources().items() if k in required},
                code_location_origin=self.origin,
            ) as context, user_code_error_boundary(
                SensorExecutionError, lambda: f"Error occurred during the execution of evaluation_fn for sensor {name}",
            ), no_waiting():
                return sensor_def.evaluate_tick(context)
        except Exception:  # as the code server reports it: the tick fails with the error, the cursor is kept
            error = serializable_error_info_from_exc_info(sys.exc_info())
        raise DagsterUserCodeProcessError.from_error_info(error)


class _Workspace(WorkspaceProcessContext):
    """A workspace holding the one code location, loaded here (no code server)."""

    def __init__(self, instance: dg.DagsterInstance, definitions: dg.Definitions):
        self._definitions = definitions
        super().__init__(instance, None)

    @property
    def _origins(self):
        return [location_origin()]

    def _load_location(self, origin, reload: bool) -> CodeLocationEntry:
        location = _Location(origin, self.instance, self._definitions)
        return CodeLocationEntry(
            origin=origin, code_location=location, load_error=None, load_status=CodeLocationLoadStatus.LOADED,
            display_metadata=location.get_display_metadata(), update_timestamp=get_current_timestamp(),
            version_key=str(get_current_timestamp()), definitions_source=DefinitionsSource.CODE_SERVER,
        )

    def location(self) -> _Location:
        return self.create_request_context().get_code_location(LOCATION_NAME)


class _LaunchHere(RunLauncher):
    """Executes a launched run in this process, to its end, with the Definitions the workspace loaded."""

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.remote_job_origin
        location = context.workspace.get_code_location(origin.repository_origin.code_location_origin.location_name)
        job = location.repository_def(origin.repository_origin.repository_name).get_job(run.job_name)
        self._instance.add_run_tags(run.run_id, process_tags(run.run_id))  # who executes it (crash recovery)
        execute_run(InMemoryJob(job), self._instance.get_run_by_id(run.run_id), self._instance)

    def terminate(self, run_id: str) -> bool:
        return False  # a run launched here ends with the call that launched it

    @property
    def inst_data(self):
        return None


@contextmanager
def _headless(definitions: dg.Definitions | None, instance: dg.DagsterInstance | None) -> Iterator[_Workspace]:
    """The instance (this one, or $DAGSTER_HOME's) with runs submitted straight to a launcher in this process, and
    the workspace; dead runs are reaped first, so a run this command left when it was killed no longer looks under
    way."""
    if definitions is None:
        from cmp_pipelines.definitions import defs as definitions
    own_instance = instance is None
    instance = instance or dg.DagsterInstance.get()
    saved = instance._run_coordinator, instance._run_launcher  # noqa: SLF001 - no public way to launch here
    coordinator, launcher = SyncInMemoryRunCoordinator(), _LaunchHere()
    coordinator.register_instance(instance)
    launcher.register_instance(instance)
    instance._run_coordinator, instance._run_launcher = coordinator, launcher  # noqa: SLF001
    try:
        reap_dead_runs(instance)
        with _Workspace(instance, definitions) as workspace:
            yield workspace
    finally:
        instance._run_coordinator, instance._run_launcher = saved  # noqa: SLF001
        if own_instance:
            instance.dispose()


def _tick(workspace: _Workspace, sensor) -> tuple[list[str], list[str], bool]:
    """One tick of one sensor as the daemon's `_process_tick_generator` makes it, minus its minimum-interval
    check: (the run ids it launched, the errors it met, whether it only finished a tick cut short)."""
    instance = workspace.instance
    now = get_current_datetime()
    state = instance.get_instigator_state(sensor.get_remote_origin_id(), sensor.selector_id)
    if state is None:
        state = InstigatorState(
            sensor.get_remote_origin(), InstigatorType.SENSOR, InstigatorStatus.DECLARED_IN_CODE,
            SensorInstigatorData(min_interval=sensor.min_interval_seconds, last_sensor_start_timestamp=now.timestamp(),
                                 sensor_type=sensor.sensor_type),
        )
        instance.add_instigator_state(state)
    mark_sensor_state_for_tick(instance, sensor, state, now)
    errors: list[str] = []
    context, resumed = None, False
    try:
        tick = _get_evaluation_tick(instance, sensor, _sensor_instigator_data(state), now.timestamp(), _LOG)
        retention = instance.get_tick_retention_settings(InstigatorType.SENSOR)
        with SensorLaunchContext(sensor, tick, instance, _LOG, retention) as context:
            context.add_log_key(context.log_key)
            with partition_loading_context(dynamic_partitions_store=instance):
                resumed = bool(tick.unsubmitted_run_ids_with_requests)
                if resumed:  # a tick cut short (this command was killed): finish it, as the daemon does
                    steps = _resume_tick(workspace, context, tick, sensor, None)
                else:
                    steps = _evaluate_sensor(workspace, context, sensor, state, None)
                errors += [_innermost(error) for error in steps if error is not None]
    except Exception:  # the launch context has marked the tick failed, its cursor kept, as the daemon's is
        errors.append(_innermost(serializable_error_info_from_exc_info(sys.exc_info())))
    return (list(context.tick.run_ids) if context else []), errors, resumed


def run_pending_sensors(
    definitions: dg.Definitions | None = None,
    instance: dg.DagsterInstance | None = None,
    max_ticks: int = 100,
    echo: Callable[[str], None] = print,
) -> Outcomes:
    """Tick every running sensor until it asks for nothing new (at most `max_ticks` ticks each); the outcome of
    every run launched, in order."""
    outcomes = Outcomes()
    with _headless(definitions, instance) as workspace:
        location = workspace.location()
        states = {s.selector_id: s for s in workspace.instance.all_instigator_state(
            instigator_type=InstigatorType.SENSOR)}
        for repository in location.get_repositories().values():
            # recovery first: an interrupted partition is finished before newer files (lib/recovery.py)
            for sensor in sorted(repository.get_sensors(), key=lambda s: (s.name != RECOVERY_SENSOR, s.name)):
                if not sensor.get_current_instigator_state(states.get(sensor.selector_id)).is_running:
                    continue  # stopped in the UI: the daemon leaves it alone too
                for _ in range(max_ticks):
                    run_ids, errors, resumed = _tick(workspace, sensor)
                    for error in errors:
                        outcomes.errors.append(f"{sensor.name}: {error}")
                        echo(f"ERROR  {outcomes.errors[-1]}")
                    for run_id in run_ids:
                        outcome = _outcome(workspace.instance, sensor.name, run_id)
                        outcomes.append(outcome)
                        echo(f"{'ok    ' if outcome.success else 'FAILED'} {sensor.name} {outcome.partition_key}"
                             + (f"\n       {outcome.error}" if outcome.error else ""))
                    if not run_ids and not resumed:  # after a resumed tick, the sensor itself is asked
                        break
    return outcomes


def run_partition(
    job_name: str, partition_key: str, definitions: dg.Definitions | None = None,
    instance: dg.DagsterInstance | None = None, tags: Mapping[str, str] | None = None,
) -> RunOutcome:
    """One partition of a job, created as a schedule tick creates it (the code location's job origin, the
    partition's tags and config) and executed here."""
    with _headless(definitions, instance) as workspace:
        instance = workspace.instance
        location = workspace.location()
        [repository] = location.get_repositories().values()
        job_def = location.repository_def(repository.name).get_job(job_name)
        request = dg.RunRequest(partition_key=partition_key, tags={CLI_TRIGGER_TAG: "cli", **(tags or {})})
        request = request.with_resolved_tags_and_config(job_def, [], instance)
        remote_job = location.get_job(JobSubsetSelector(
            location_name=location.name, repository_name=repository.name, job_name=job_name, op_selection=None))
        plan = location.get_execution_plan(remote_job, request.run_config, step_keys_to_execute=None,
                                           known_state=None, instance=instance)
        run = instance.create_run(
            job_name=job_name, run_id=None, run_config=request.run_config,
            resolved_op_selection=remote_job.resolved_op_selection, step_keys_to_execute=None,
            op_selection=remote_job.op_selection, status=dg.DagsterRunStatus.NOT_STARTED, root_run_id=None,
            parent_run_id=None, tags={**remote_job.run_tags, **request.tags}, job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot, parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin(),
            asset_selection=None, asset_check_selection=None, asset_graph=repository.asset_graph,
        )
        instance.submit_run(run.run_id, workspace.create_request_context())
        return _outcome(instance, job_name, run.run_id)


def _innermost(error) -> str:
    """The root cause's first line (the sensor's own exception, not Dagster's wrapper)."""
    while error.cause is not None:
        error = error.cause
    return (error.message.strip().splitlines() or [error.cls_name or "error"])[0]


def _outcome(instance: dg.DagsterInstance, name: str, run_id: str) -> RunOutcome:
    run = instance.get_run_by_id(run_id)
    success = run.status == dg.DagsterRunStatus.SUCCESS
    return RunOutcome(name, run.tags.get("dagster/partition"), run_id, success,
                      None if success else _run_error(instance, run))


def _run_error(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    if not run.is_finished:
        return f"run is {run.status.value}"
    failures = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1).records
    if failures:
        return _failure_text(failures[0].event_log_entry.dagster_event.step_failure_data)
    return "run failed"


def _failure_text(data) -> str:
    """The operator-facing reason: a Failure's description, else the innermost exception's message."""
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    error = data.error
    while error.cause is not None:
        error = error.cause
    return error.message.strip()
