import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.routing import Match

from app.auth.dependencies import AdminPrincipal
from app.config import get_settings
from app.db import get_engine
from app.errors import install_error_handlers, problem
from app.metrics import HTTP_LATENCY, HTTP_REQUESTS
from app.reports.swap_rollup import SwapRollup

API_DESCRIPTION = """
Battery custody, swaps and telemetry for fleets of battery-swap stations.

Every route except `/healthz` and `/readyz` needs an API key sent as
`Authorization: Bearer <key>`. Errors are RFC 9457 problem details.
"""


def route_template(request: Request) -> str:
    # Label by template, never by raw path: a raw path would carry serials and VINs.
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    interval_s = get_settings().swap_rollup_interval_s
    rollup = SwapRollup(interval_s) if interval_s > 0 else None
    if rollup is not None:
        rollup.start()
    try:
        yield
    finally:
        if rollup is not None:
            rollup.stop()


def create_app() -> FastAPI:
    from app.batteries.router import router as batteries_router
    from app.catalog.router import router as catalog_router
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
    for router in (
        organizations_router,
        catalog_router,
        stations_router,
        batteries_router,
        vehicles_router,
        swaps_router,
        telemetry_router,
        reports_router,
        passport_router,
    ):
        v1.include_router(router)
    app.include_router(v1)

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        route = route_template(request)
        try:
            response = await call_next(request)
        except Exception:
            HTTP_REQUESTS.labels(request.method, route, "500").inc()
            raise
        HTTP_LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        return response

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
