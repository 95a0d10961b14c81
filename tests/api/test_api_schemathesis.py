"""Schema-driven fuzzing of the OpenAPI document the API serves: no generated request gets a 5xx.

Examples per operation stay modest (the module runs in well under a minute); the requests carry a valid key
so the fuzzing reaches the handlers, not only the 401 in front of them."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.support.api import KEYS

EXAMPLES = 12


def test_no_generated_request_is_a_server_error(api):
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9  # every REST route is in the document
    for operation in operations:
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def call(case):
            case.call_and_validate(headers={"X-API-Key": KEYS["AGENTVIEW"]}, checks=[not_a_server_error])

        call()
