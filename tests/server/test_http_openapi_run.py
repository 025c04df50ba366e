"""Integration test: schemathesis over ``/openapi.json`` of a live server, every built-in check
(server errors, status codes, content types, headers, response schemas, negative data rejection,
ignored auth, ...), as four callers: anonymous, a patient, a clinic key and an administrator.

Bounded: a few examples per operation and caller (hypothesis, no database, no deadline), so the
run takes well under a minute here. Every failure of every operation is collected and reported.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config._checks import PositiveDataAcceptanceConfig

from server.identity.accounts import Role
from tests.server.conftest import LiveServer

EXAMPLES = 25  # per operation, callers drawn among the four


def schema_refusal_of_valid_data(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """Data the document calls valid may still be refused for its meaning (a date past the
    horizon, a time off the clinic's grid): 422 with the route's own message. Refused by the
    models themselves (pydantic's messages, capitalised) means the document and the models
    disagree — that is the failure."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    error = response.json()["error"]
    if error["message"][:1].isupper():
        raise AssertionError(f"schema-valid data refused by the models: {error}")
    return None


def test_the_openapi_document_holds_for_every_caller(live: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    # 422 for valid data is fine when it is about meaning; schema_refusal_of_valid_data checks which.
    schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
        expected_statuses=["2xx", "3xx", "401", "403", "404", "409", "410", "422", "429"]
    )
    callers: dict[str, dict[str, str]] = {
        "anonymous": {},
        "patient": {"Authorization": f"Bearer {live.user()[1]}"},
        "clinic key": {"Authorization": f"Bearer {live.accounts.create_clinic_key('AB-c1')}"},
        "admin": {"Authorization": f"Bearer {live.user(Role.ADMIN)[1]}"},
    }
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy(), caller=st.sampled_from(sorted(callers)))
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def run(case: schemathesis.Case, caller: str) -> None:
            headers = {**(case.headers or {}), **callers[caller]}
            response = case.call(base_url=live.url, headers=headers, timeout=10)
            statuses[response.status_code] += 1
            case.validate_response(
                response,
                additional_checks=[schema_refusal_of_valid_data],
                headers=headers,
                transport_kwargs={"base_url": live.url},
            )

        try:
            run()
        except (AssertionError, BaseExceptionGroup) as exc:  # a check failed: collect every operation's
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert not failures, f"{len(failures)} operations fail:\n" + "\n".join(failures)
    assert sum(statuses.values()) >= 5 * len(operations), statuses
    assert not any(status >= 500 for status in statuses), statuses


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
