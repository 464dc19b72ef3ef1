from fastapi.testclient import TestClient


def test_healthz_needs_no_key(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_database_reachable(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
