"""The one root conftest: it only registers the shared fixtures, which live in tests/support/."""

from tests.support.api import api, api_instance  # noqa: F401
from tests.support.dagster import dagster_home_template, instance  # noqa: F401
from tests.support.hardware import hardware  # noqa: F401
from tests.support.platform import platform, platform_template  # noqa: F401
