"""The station's REST client for swaps: against the real API, and against a failing server."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import SwapEvent
from devices.rest import RetryPolicy, SwapApiClient, SwapDeliveryError
from tests.fixtures.swap_world import build_swap_world

NO_WAIT = RetryPolicy(max_attempts=4, initial_delay_s=0.01, max_delay_s=0.02)


def test_recorded_swap_is_accepted_and_a_retry_with_its_key_is_replayed(
    client: TestClient, session: Session
) -> None:
    world = build_swap_world(session)
    api = SwapApiClient("http://unused", world.operator_key, http=client, retry=NO_WAIT)
    first = api.record_swap(world.swap_body(), idempotency_key="station-1-swap-1")
    again = api.record_swap(world.swap_body(), idempotency_key="station-1-swap-1")

    assert first.accepted
    assert first.status_code == 201
    assert (first.replayed, again.replayed) == (False, True)
    assert again.body["id"] == first.body["id"]
    rows = session.scalars(select(SwapEvent).where(SwapEvent.vin == world.vehicle.vin)).all()
    assert len(rows) == 1


def test_rejected_swap_is_a_result_not_a_retry(client: TestClient, session: Session) -> None:
    world = build_swap_world(session)
    api = SwapApiClient("http://unused", world.operator_key, http=client, retry=NO_WAIT)
    result = api.record_swap(world.swap_body(installed_battery_serial="NOT-IN-THIS-STATION"))
    assert result.status_code == 422
    assert not result.accepted
    assert result.code is not None
    assert result.attempts == 1


class ScriptedServer:
    """A real HTTP server answering from a script: a status code, or "drop" the connection."""

    def __init__(self, script: list[int | str]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
                length = int(self.headers.get("Content-Length", 0))
                outer.requests.append(
                    {
                        "path": self.path,
                        "key": self.headers.get("Idempotency-Key"),
                        "body": self.rfile.read(length),
                    }
                )
                step = outer.script.pop(0) if outer.script else 201
                if step == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                assert isinstance(step, int)
                payload = orjson.dumps({"id": "swap-1"} if step < 400 else {"code": f"E{step}"})
                self.send_response(step)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def swap() -> dict[str, object]:
    return {"station_code": "ST-1", "vin": "WVWZZZ1JZXW000001", "removed_battery_serial": "B-1"}


def test_server_errors_and_dropped_connections_are_retried_with_the_same_key(
    swap: dict[str, object],
) -> None:
    with ScriptedServer([503, "drop", 502, 201]) as server:
        with SwapApiClient(server.url, "key", retry=NO_WAIT) as api:
            result = api.record_swap(swap)
    assert result.accepted
    assert result.attempts == 4
    assert len(server.requests) == 4
    assert len({r["key"] for r in server.requests}) == 1
    assert result.idempotency_key == server.requests[0]["key"]
    assert {r["body"] for r in server.requests} == {orjson.dumps(swap)}
    assert {r["path"] for r in server.requests} == {"/v1/swaps"}


@pytest.mark.parametrize("status", [409, 422, 400, 401, 404])
def test_client_errors_are_returned_after_one_attempt(swap: dict[str, object], status: int) -> None:
    with ScriptedServer([status]) as server:
        with SwapApiClient(server.url, "key", retry=NO_WAIT) as api:
            result = api.record_swap(swap, idempotency_key="k-9")
    assert (result.status_code, result.attempts, result.code) == (status, 1, f"E{status}")
    assert len(server.requests) == 1


def test_giving_up_reports_the_key_to_retry_with_later(swap: dict[str, object]) -> None:
    with ScriptedServer([500, 500, 500, 500, 500]) as server:
        with SwapApiClient(server.url, "key", retry=NO_WAIT) as api:
            with pytest.raises(SwapDeliveryError) as failure:
                api.record_swap(swap, idempotency_key="k-10")
    assert failure.value.idempotency_key == "k-10"
    assert failure.value.attempts == 4
    assert len(server.requests) == 4


def test_unreachable_server_is_retried_then_reported() -> None:
    with ScriptedServer([]) as server:
        url = server.url
    with (
        SwapApiClient(url, "key", retry=NO_WAIT) as api,
        pytest.raises(SwapDeliveryError) as failure,
    ):
        api.record_swap({"station_code": "ST-1"})
    assert "ConnectError" in failure.value.last_error
