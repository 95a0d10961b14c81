"""The one root conftest: it registers the shared fixtures, which live in tests/support/, and the test-process
speed settings (a memory-backed basetemp, Dagster's schema head read once)."""

import os
import shutil
import tempfile

# Set-up commands need an operator identity (config/operators.yaml); tests act as the demo administrator unless
# they set another (tests/cli/test_operator_security.py)
os.environ.setdefault("CMP_OPERATOR", "demo.admin")

from tests.support.api import api, api_instance  # noqa: F401
from tests.support.billing import any_billing, billing  # noqa: F401
from tests.support.console import console  # noqa: F401
from tests.support.dagster import dagster_home_template, instance  # noqa: F401
from tests.support.hardware import any_hardware, hardware  # noqa: F401
from tests.support.pg_platform import any_platform, pg_platform  # noqa: F401
from tests.support.platform import platform, platform_template  # noqa: F401
from tests.support.postgres import pg_store, pg_template, pg_url, postgres_server  # noqa: F401
from tests.support.redis import redis_url  # noqa: F401
from tests.support.s3 import s3_bucket, s3_server  # noqa: F401
from tests.support.sftp import sftp_server  # noqa: F401
from tests.support.smtp import smtp_server  # noqa: F401
from tests.support.speed import share_alembic_scripts, share_sqlite_engines

share_alembic_scripts()  # before any instance opens: every test and forked run reads Dagster's schema head once
share_sqlite_engines()  # one SQLAlchemy engine (and its compiled-statement cache) per Dagster SQLite file


def pytest_collection_modifyitems(items):
    """Slow tests first, then end-to-end ones: pytest-xdist hands tests out in collection order, so a test of
    minutes drawn last would keep one worker busy alone while the other has finished."""
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None, item.get_closest_marker("e2e") is None))


def pytest_configure(config):
    """Every test's temporary folder on a memory-backed file system where there is one, unless --basetemp names
    another: the tests commit a DuckDB file and a Dagster SQLite instance hundreds of times, and on a disk each
    commit waits for an fsync (an NRP end-to-end test: 110 s on disk, 70 s on /dev/shm on a busy 2-core machine).
    A folder of its own per session, so that concurrent sessions never remove each other's; pytest-xdist workers
    inherit it (basetemp/popen-gwN)."""
    if config.option.basetemp or hasattr(config, "workerinput") or not os.access("/dev/shm", os.W_OK):
        return
    shm = os.statvfs("/dev/shm")
    if shm.f_bavail * shm.f_frsize < 2 * 1024**3:  # a container's small /dev/shm (64 MB by default) would fill up
        return
    config.option.basetemp = tempfile.mkdtemp(prefix="cmp-tests-", dir="/dev/shm")
    config._cmp_shm_basetemp = config.option.basetemp


def pytest_sessionfinish(session, exitstatus):
    """The memory-backed folder is memory: removed after a passing session (a failing one keeps it, for its
    failed tests' folders)."""
    folder = getattr(session.config, "_cmp_shm_basetemp", None)
    if folder and exitstatus == 0:
        shutil.rmtree(folder, ignore_errors=True)
