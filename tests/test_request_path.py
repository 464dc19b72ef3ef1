"""The API's request path: API keys checked against a per-process cache with a stated
lifetime, requests counted by route template, several worker processes."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from app.core.config import get_settings
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.auth.service import principal_cache
from app.models import KeyRole
from tests.conftest import TEST_DATABASE_URL
from tests.fixtures.api_server import running_api
from tests.fixtures.factories import auth, make_key


@pytest.fixture
def key_cache_ttl(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    principal_cache.clear()
    yield
    principal_cache.clear()
    get_settings.cache_clear()


def set_ttl(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    monkeypatch.setenv("SWAPFLEET_API_KEY_CACHE_TTL_S", str(seconds))
    get_settings.cache_clear()


def revoke(session: Session, raw_key: str) -> None:
    session.execute(
        text("UPDATE api_keys SET revoked_at = now() WHERE prefix = :p"), {"p": raw_key[:10]}
    )


@pytest.mark.usefixtures("key_cache_ttl")
def test_a_checked_key_is_not_looked_up_again_within_the_ttl(
    session: Session, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_ttl(monkeypatch, 60)
    key = make_key(session, KeyRole.admin)
    assert client.get("/v1/batteries/NO-SUCH", headers=auth(key)).status_code == 404
    revoke(session, key)
    # Still the cached principal: this request did not ask the database about the key.
    assert client.get("/v1/batteries/NO-SUCH", headers=auth(key)).status_code == 404


@pytest.mark.usefixtures("key_cache_ttl")
def test_a_revoked_key_fails_once_its_cached_check_is_older_than_the_ttl(
    session: Session, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_ttl(monkeypatch, 0.5)
    key = make_key(session, KeyRole.admin)
    assert client.get("/v1/batteries/NO-SUCH", headers=auth(key)).status_code == 404
    revoke(session, key)
    time.sleep(0.6)
    assert client.get("/v1/batteries/NO-SUCH", headers=auth(key)).status_code == 401


@pytest.mark.usefixtures("key_cache_ttl")
def test_without_a_ttl_every_request_checks_the_key(
    session: Session, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_ttl(monkeypatch, 0)
    key = make_key(session, KeyRole.admin)
    assert client.get("/v1/batteries/NO-SUCH", headers=auth(key)).status_code == 404
    revoke(session, key)
    assert client.get("/v1/batteries/NO-SUCH", headers=auth(key)).status_code == 401


def test_requests_are_counted_by_their_full_route_template(
    session: Session, client: TestClient
) -> None:
    key = make_key(session, KeyRole.admin)
    assert client.get("/v1/batteries/SERIAL-IN-NO-LABEL", headers=auth(key)).status_code == 404
    metrics = client.get("/metrics", headers=auth(key)).text
    assert 'route="/v1/batteries/{serial}",status="404"' in metrics
    assert "SERIAL-IN-NO-LABEL" not in metrics


@pytest.fixture
def committed_admin_key(engine: Engine) -> Iterator[str]:
    with Session(engine) as session:
        key = make_key(session, KeyRole.admin)
        session.commit()
    yield key
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM api_keys WHERE prefix = :p"), {"p": key[:10]})


TTL_S = 1.0


def test_a_revoked_key_stops_working_in_every_worker_within_the_ttl(
    committed_admin_key: str, engine: Engine, tmp_path: Path
) -> None:
    """Two worker processes, each with its own cache: after the TTL no worker accepts the
    revoked key. Sixty fresh connections are spread over both workers by the kernel."""
    key = committed_admin_key
    with running_api(
        TEST_DATABASE_URL,
        tmp_path / "api.log",
        "--workers",
        "2",
        startup_s=120,
        env={"SWAPFLEET_API_KEY_CACHE_TTL_S": str(TTL_S)},
    ) as api:

        def statuses(n: int) -> set[int]:
            seen = set()
            for _ in range(n):
                # A new connection each time, so that both workers answer some.
                response = httpx.get(
                    f"{api.base_url}/v1/batteries/NO-SUCH", headers=auth(key), timeout=10
                )
                seen.add(response.status_code)
            return seen

        assert statuses(30) == {404}
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE api_keys SET revoked_at = now() WHERE prefix = :p"), {"p": key[:10]}
            )
        # Every worker checked the key before the revocation: its cached check is older
        # than the TTL from here on.
        time.sleep(TTL_S + 0.1)
        assert statuses(60) == {401}
        pids = set()
        log = (tmp_path / "api.log").read_text()
        for line in log.splitlines():
            if "Started server process" in line:
                pids.add(line.split("[")[-1].rstrip("]"))
        assert len(pids) == 2, log
