from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import KeyRole, OrgRole
from tests.fixtures.factories import auth, make_key, make_org


def test_metrics_without_key_is_401_problem(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "Unauthorized"


def test_metrics_with_operator_key_is_403(client: TestClient, session: Session) -> None:
    key = make_key(session, KeyRole.operator, make_org(session, OrgRole.operator))
    response = client.get("/metrics", headers=auth(key))
    assert response.status_code == 403
    assert response.json()["code"] == "Forbidden"


def test_metrics_with_oem_key_is_403(client: TestClient, session: Session) -> None:
    key = make_key(session, KeyRole.oem, make_org(session, OrgRole.oem))
    assert client.get("/metrics", headers=auth(key)).status_code == 403


def test_metrics_with_admin_key_serves_prometheus_text(
    client: TestClient, session: Session
) -> None:
    key = make_key(session, KeyRole.admin)
    client.get("/healthz")
    response = client.get("/metrics", headers=auth(key))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'swapfleet_http_requests_total{method="GET",route="/healthz",status="200"}' in (
        response.text
    )
