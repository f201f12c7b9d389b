"""Schemathesis against the server's own OpenAPI schema: generated requests, valid and not,
to every documented route; none may answer a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.integration

#: Examples per operation: enough to reach the error paths, bounded for the suite's time.
EXAMPLES = 25


def test_no_generated_request_gets_a_server_error(serve_url: str) -> None:
    # The Python API rather than schemathesis' pytest plugin: its lazy fixture loader does not
    # work with this pytest.
    schema = schemathesis.openapi.from_url(f"{serve_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/v2/models/{name}/infer"}
    statuses: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:  # type: ignore[no-untyped-def]
            statuses.append(case.call_and_validate(checks=[not_a_server_error]).status_code)

        no_server_error()
    # The run reached both the answers and the refusals.
    assert len(statuses) >= len(operations) * 5
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)
