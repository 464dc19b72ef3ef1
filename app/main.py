import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.dependencies import AdminPrincipal
from app.core.config import get_settings
from app.core.db import close_async_pool, get_engine
from app.core.errors import install_error_handlers, problem
from app.core.metrics import HTTP_LATENCY, HTTP_REQUESTS
from app.rollups.swap_rollup import SwapRollup

API_DESCRIPTION = """
Battery custody, swaps and telemetry for fleets of battery-swap stations.

Every route except `/healthz` and `/readyz` needs an API key sent as
`Authorization: Bearer <key>`. Errors are RFC 9457 problem details.
"""


def route_template(scope: Scope, prefixed: dict[int, str]) -> str:
    # Label by template, never by raw path: a raw path would carry serials and VINs. The
    # router records the route it matched in the scope (unmatched paths have none): the
    # route as its own router declared it, without the prefixes it was included under.
    route = scope.get("route")
    if route is None:
        return "unmatched"
    return prefixed.get(id(route)) or str(getattr(route, "path", "unmatched"))


class ObserveRequests:
    """Counts and times every request by method, route template and status. Plain ASGI:
    Starlette's BaseHTTPMiddleware (`@app.middleware`) runs each request in an extra task
    and streams the response through a queue, and the old route lookup matched the path
    against every route a second time."""

    def __init__(self, app: ASGIApp, prefixed: dict[int, str]) -> None:
        self.app = app
        self.prefixed = prefixed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = ""

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            HTTP_REQUESTS.labels(scope["method"], route_template(scope, self.prefixed), "500").inc()
            raise
        route = route_template(scope, self.prefixed)
        HTTP_LATENCY.labels(scope["method"], route).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(scope["method"], route, status).inc()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    interval_s = get_settings().swap_rollup_interval_s
    rollup = SwapRollup(interval_s) if interval_s > 0 else None
    if rollup is not None:
        rollup.start()
    # Everything imported and built so far lives as long as the process: out of the
    # collector's sight, a full collection no longer walks it (it stalled requests for tens
    # of milliseconds: the read p99 of bench/bench_swaps.py).
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        if rollup is not None:
            rollup.stop()
        await close_async_pool()


def create_app() -> FastAPI:
    from app.batteries.router import router as batteries_router
    from app.catalog.router import router as catalog_router
    from app.ocpp.gateway import router as ocpp_router
    from app.ocpp.router import router as ocpp_rest_router
    from app.organizations.router import router as organizations_router
    from app.reports.router import passport_router
    from app.reports.router import router as reports_router
    from app.stations.router import router as stations_router
    from app.swaps.router import router as swaps_router
    from app.telemetry.router import router as telemetry_router
    from app.vehicles.router import router as vehicles_router

    app = FastAPI(
        title="swapfleet", version="0.1.0", description=API_DESCRIPTION, lifespan=lifespan
    )
    install_error_handlers(app)

    v1 = APIRouter(prefix="/v1")
    routers = (
        organizations_router,
        catalog_router,
        stations_router,
        batteries_router,
        vehicles_router,
        swaps_router,
        telemetry_router,
        reports_router,
        passport_router,
        ocpp_rest_router,
    )
    for router in routers:
        v1.include_router(router)
    app.include_router(v1)
    # The OCPP 2.1 gateway's WebSocket endpoint, /ocpp/{station_code} (docs/ocpp.md).
    app.include_router(ocpp_router)

    app.add_middleware(
        ObserveRequests,
        prefixed={
            id(route): v1.prefix + str(getattr(route, "path", ""))
            for router in routers
            for route in router.routes
        },
    )

    @app.get("/healthz", tags=["health"], summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="The database is reachable")
    def readyz() -> Response:
        try:
            with get_engine().connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # any failure to reach the database means "not ready"
            return problem(503, "NotReady", "Database unreachable", type(exc).__name__)
        return Response('{"status":"ready"}', media_type="application/json")

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=False)
    def metrics(_: AdminPrincipal) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
