"""Property-based fuzz of the whole OpenAPI schema: any request gets a 4xx or a 2xx, never 500."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy.orm import Session

from app.main import create_app
from app.models import KeyRole
from tests.conftest import override_units, same_session, savepoint_unit_of_work
from tests.fixtures.factories import make_key
from tests.fixtures.swap_world import build_swap_world


@pytest.fixture
def api_schema(session: Session) -> schemathesis.BaseSchema:
    app = create_app()

    override_units(app, savepoint_unit_of_work(session), same_session(session))
    # Some real rows so that generated requests can also hit existing resources' paths.
    build_swap_world(session, charged_socs=(95.0, 97.0))
    app.state.fuzz_admin_key = make_key(session, KeyRole.admin)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_no_request_causes_a_server_error(case: schemathesis.Case) -> None:
    app = case.operation.schema.app
    headers = {"Authorization": f"Bearer {app.state.fuzz_admin_key}"}
    response = case.call(headers=headers)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
