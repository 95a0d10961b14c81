"""The one root conftest: it only registers the shared fixtures, which live in tests/support/."""

import os

# Set-up commands need an operator identity (config/operators.yaml); tests act as the demo administrator unless
# they set another (tests/cli/test_operator_security.py)
os.environ.setdefault("CMP_OPERATOR", "demo.admin")

from tests.support.speed import share_alembic_scripts  # noqa: E402

share_alembic_scripts()  # before any instance opens: every test and forked run reads Dagster's schema head once

from tests.support.api import api, api_instance  # noqa: F401
from tests.support.dagster import dagster_home_template, instance  # noqa: F401
from tests.support.hardware import hardware  # noqa: F401
from tests.support.platform import platform, platform_template  # noqa: F401
from tests.support.sftp import sftp_server  # noqa: F401
from tests.support.smtp import smtp_server  # noqa: F401


def pytest_collection_modifyitems(items):
    """Slow tests first, then end-to-end ones: pytest-xdist hands tests out in collection order, so a test of
    minutes drawn last would keep one worker busy alone while the other has finished."""
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None, item.get_closest_marker("e2e") is None))
