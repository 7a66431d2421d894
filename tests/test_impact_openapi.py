"""schemathesis against the served OpenAPI: the impact-compatible API never answers 5xx and
every answer matches its documented status, content type and schema (bounded examples)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.impact_harness import SHOP_SID, Api, start_api  # noqa: E402
from tests.test_cases import make_env  # noqa: E402

EXAMPLES = int(os.environ.get("RETURNSD_SCHEMATHESIS_EXAMPLES", "12"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]  # fmt: skip


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """The API over the case ledger (SQLite)."""
    api = start_api(make_env(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'st.db'}"))
    yield api
    api.close()


@pytest.fixture
def api_schema(served: Api) -> Any:
    """The served OpenAPI document, impact-compatible routes only."""
    return schemathesis.openapi.from_url(f"{served.base}/openapi.json").include(
        path_regex="^/Advertisers/"
    )


def test_no_5xx_and_answers_match_the_schema(api_schema: Any, served: Api) -> None:
    auth = _basic(f"{SHOP_SID}:{served.tokens['shop']}")
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)  # fmt: skip
        def check(case: Any) -> None:
            case.path_parameters = {**(case.path_parameters or {}), "sid": SHOP_SID}
            for accept in ("application/json", "application/xml"):
                case.call_and_validate(headers={"Authorization": auth, "Accept": accept},
                                       checks=CHECKS)  # fmt: skip

        check()


def _basic(user: str) -> str:
    import base64

    return "Basic " + base64.b64encode(user.encode()).decode()
