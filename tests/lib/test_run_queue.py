"""The run queue the project's instance gets: Dagster's queued coordinator, passed every half second."""

import dagster as dg
import yaml
from dagster._core.instance.ref import InstanceRef
from dagster._daemon.controller import create_daemon_of_type
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.lib.instance_config import for_home, write_for_home
from cmp_pipelines.lib.run_queue import PromptQueuedRunCoordinator


def _instance(home):
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def test_the_projects_instance_queues_runs_every_half_second_with_its_limits_unchanged(tmp_path):
    write_for_home(tmp_path)
    with _instance(tmp_path) as instance:
        coordinator = instance.run_coordinator
        assert type(coordinator) is PromptQueuedRunCoordinator
        daemon = create_daemon_of_type(QueuedRunCoordinatorDaemon.daemon_type(), instance)
        assert daemon.interval_seconds == 0.5  # what the daemon's queue thread waits between passes
        queue = instance.get_concurrency_config().run_queue_config
        pools = instance.get_concurrency_config().pool_config
    # the `concurrency` block still governs: four runs at once, one `cmp_db` slot on the embedded store
    assert (queue.max_concurrent_runs, queue.should_block_op_concurrency_limited_runs) == (4, True)
    assert (pools.default_pool_limit, pools.pool_granularity.value) == (1, "run")


def test_an_interval_set_in_the_config_is_kept_as_given(tmp_path):
    settings = yaml.safe_load(for_home((PROJECT_ROOT / "dagster.yaml").read_bytes(), tmp_path))
    settings["run_coordinator"]["config"] = {"dequeue_interval_seconds": 3}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(settings))
    with _instance(tmp_path) as instance:
        assert instance.run_coordinator.dequeue_interval_seconds == 3
        assert create_daemon_of_type(QueuedRunCoordinatorDaemon.daemon_type(), instance).interval_seconds == 3
