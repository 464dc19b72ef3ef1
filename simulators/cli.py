"""`swapfleet simulate`: run a simulated fleet against the real backend, or in memory.

Wire into the main command with `cli.add_typer(simulate_cli, name="simulate")`; the callback
runs without a sub-command, so `swapfleet simulate --stations 20 --vehicles 300` works.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from devices.client import BrokerSettings, PublishOptions
from devices.contract import DEFAULT_TOPIC_PREFIX, MqttProtocol
from devices.rest import SwapApiClient
from simulators.backend import (
    MqttDeviceSink,
    RestFleetRegistrar,
    RestSwapRecorder,
    SharedMqttSink,
)
from simulators.fleet import Fleet, FleetStats
from simulators.ocpp_station import OcppFleetStations, provision_ocpp, ws_url
from simulators.scenarios import (
    DEMO_PREFIX,
    DEMO_SCENARIO,
    DEMO_SEED,
    DEMO_STATIONS,
    DEMO_VEHICLES,
    SCENARIOS,
)
from simulators.sinks import GroundTruthWriter, InMemorySink, RecordSink, SwapRecorder

log = logging.getLogger(__name__)

simulate_cli = typer.Typer(
    help="Run a simulated fleet of swap stations and vehicles.",
    pretty_exceptions_enable=False,
)


def parse_speed(value: str) -> float | None:
    """`max` (as fast as possible) or simulated seconds per wall second, e.g. `60`."""
    if value.strip().lower() in ("max", "inf", "fast"):
        return None
    try:
        speed = float(value.lower().removesuffix("x"))
    except ValueError as exc:
        raise typer.BadParameter("use `max` or a number such as 1, 60 or 3600") from exc
    if speed <= 0:
        raise typer.BadParameter("speed must be positive")
    return speed


def wall_clock() -> datetime:
    return datetime.now(UTC)


# Where the command that hosts this one puts its clock (a () -> datetime) in click's context
# meta, shared by every nested context: app/cli puts app.core.clock.now there. The simulation's
# "now" (the default start, the present a paced run never gets ahead of) must be the backend's:
# the backend refuses records from its future and records older than its retention, so a
# simulator on the wall clock beside a backend whose clock is shifted (SWAPFLEET_CLOCK_OFFSET_S,
# as the tests run it) sends records the backend dead-letters. simulators/ imports nothing from
# app/, hence this hook; run on its own (python -m simulators.cli) it is the wall clock.
CLOCK_META_KEY = "swapfleet.clock"


def hosted_clock(ctx: typer.Context) -> Callable[[], datetime]:
    found = ctx.meta.get(CLOCK_META_KEY)
    return found if callable(found) else wall_clock


def default_start(days: float, speed: float | None, now: datetime | None = None) -> datetime:
    """Backfills end now (history up to the present); paced runs begin now."""
    now = (now or wall_clock()).replace(microsecond=0)
    return now - timedelta(days=days) if speed is None else now


@contextmanager
def _progress(
    console: Console, fleet: Fleet, enabled: bool
) -> Iterator[tuple[Progress | None, TaskID]]:
    if not enabled:
        yield None, TaskID(0)
        return
    progress = Progress(
        TextColumn("[bold]simulating"),
        BarColumn(),
        TextColumn("{task.fields[sim]}"),
        TextColumn("msgs {task.fields[messages]:,}"),
        TextColumn("records {task.fields[records]:,}"),
        TextColumn("swaps {task.fields[swaps]:,}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task(
            "sim", total=fleet.end - fleet.start, sim="", messages=0, records=0, swaps=0
        )
        yield progress, task


def _render_summary(
    console: Console, fleet: Fleet, stats: FleetStats, wall_s: float, notes: list[str]
) -> None:
    table = Table(title="Simulation summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    start = datetime.fromtimestamp(fleet.start, UTC)
    reached = datetime.fromtimestamp(stats.sim_time, UTC)
    table.add_row("simulated", f"{start:%Y-%m-%d %H:%M} -> {reached:%Y-%m-%d %H:%M} UTC")
    sizes = f"{len(fleet.stations)} / {len(fleet.vehicles)} / {len(fleet.batteries)}"
    table.add_row("stations / vehicles / batteries", sizes)
    table.add_row("faulty batteries (ground truth)", str(len(fleet.faulty_serials())))
    table.add_row("wall time", f"{wall_s:.1f} s")
    table.add_row("messages", f"{stats.messages:,}")
    for kind, count in sorted(stats.records.items()):
        table.add_row(f"records: {kind}", f"{count:,}")
    rate = stats.total_records / wall_s if wall_s > 0 else 0.0
    table.add_row("records total", f"{stats.total_records:,} ({rate:,.0f}/s)")
    table.add_row("swaps completed", f"{stats.swaps:,}")
    for reason, count in sorted(stats.swaps_rejected.items()):
        table.add_row(f"swaps rejected: {reason}", f"{count:,}")
    if stats.swap_mismatches:
        table.add_row("swaps the backend and the sim disagreed on", f"{stats.swap_mismatches:,}")
    table.add_row("drivers who queued / went elsewhere", f"{stats.waits:,} / {stats.redirects:,}")
    table.add_row("charges completed", f"{stats.charges_completed:,}")
    load = fleet.station_load
    table.add_row("energy charged", f"{load.energy_kwh / 1000.0:,.1f} MWh")
    table.add_row("highest load of one station", f"{load.peak_station_kw:,.0f} kW")
    packs = sorted({(b.spec.code, b.spec.nominal_energy_kwh) for b in fleet.batteries})
    table.add_row("pack types", ", ".join(f"{code} ({kwh:.0f} kWh)" for code, kwh in packs))
    for note in notes:
        table.add_row("note", note)
    console.print(table)


class ScenarioName(StrEnum):
    # simulators.scenarios.SCENARIOS, spelled out for the command line's help.
    heavy_truck = "heavy-truck"
    urban_van = "urban-van"
    passenger_car = "passenger-car"
    mixed = "mixed"


class StationProtocol(StrEnum):
    mqtt = "mqtt"
    ocpp = "ocpp"


@simulate_cli.callback(invoke_without_command=True)
def simulate(
    ctx: typer.Context,
    scenario: Annotated[
        ScenarioName,
        typer.Option(
            help="The fleet: heavy trucks, urban vans, passenger cars, or all three "
            "(docs/scenarios.md)."
        ),
    ] = ScenarioName.mixed,
    stations: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Swap stations, split among the scenario's segments; default: the scenario's.",
        ),
    ] = None,
    vehicles: Annotated[
        int | None, typer.Option(min=0, help="Vehicles; default: the scenario's.")
    ] = None,
    days: Annotated[float, typer.Option(min=0.0, help="Simulated days.")] = 30.0,
    speed: Annotated[
        str, typer.Option(help="`max`, or simulated seconds per wall second (1 = real time).")
    ] = "max",
    seed: Annotated[int, typer.Option(help="Same seed, same fleet and same run.")] = 1,
    start: Annotated[
        datetime | None,
        typer.Option(help="Simulated start (UTC); default: now minus --days for `max`, else now."),
    ] = None,
    flat_out_until: Annotated[
        datetime | None,
        typer.Option(
            help="With a paced --speed and a --start in the past: run flat out up to this time "
            "(UTC), a backfill of history, then at --speed. A paced run never gets ahead of "
            "the real clock."
        ),
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option(help='Prefix of every code and serial; default sim<seed>; "" for none.'),
    ] = None,
    slots: Annotated[
        int | None,
        typer.Option(min=2, help="Slots per station; default: each station kind's own."),
    ] = None,
    station_power_kw: Annotated[
        float | None,
        typer.Option(
            min=0.1, help="Grid power limit per station (kW); default: each station kind's own."
        ),
    ] = None,
    faulty_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of faulty batteries.")
    ] = 0.05,
    truth: Annotated[
        Path | None, typer.Option(help="Write the ground truth here (.csv or .jsonl).")
    ] = None,
    api_url: Annotated[
        str, typer.Option(envvar="SWAPFLEET_API_URL", help="The swapfleet API.")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="SWAPFLEET_API_KEY", help="An admin key: registers the fleet."),
    ] = None,
    mqtt_url: Annotated[
        str | None, typer.Option(envvar="SWAPFLEET_MQTT_URL", help="mqtt://[user:pw@]host:port")
    ] = None,
    topic_prefix: Annotated[
        str, typer.Option(envvar="SWAPFLEET_MQTT_TOPIC_PREFIX", help="MQTT topic prefix.")
    ] = DEFAULT_TOPIC_PREFIX,
    mqtt_protocol: Annotated[
        MqttProtocol,
        typer.Option(
            envvar="SWAPFLEET_MQTT_PROTOCOL", help="MQTT version: 3.1.1 for brokers without 5."
        ),
    ] = "5",
    device_connections: Annotated[
        bool,
        typer.Option(
            help="One MQTT connection, outbox and Last Will per station and vehicle, as real "
            "devices have (at most ~150 devices in one process). Default: one shared "
            "connection for the whole fleet.",
        ),
    ] = False,
    mqtt_client_id: Annotated[
        str | None, typer.Option(help="Client id of the shared MQTT connection.")
    ] = None,
    outbox_dir: Annotated[
        Path | None,
        typer.Option(help="With --device-connections: keep the outboxes here (default: temp)."),
    ] = None,
    register: Annotated[
        bool, typer.Option(help="Register the fleet through REST before running.")
    ] = True,
    backend_chooses: Annotated[
        bool | None,
        typer.Option(
            "--backend-chooses/--station-chooses",
            help="Who picks the battery to install. Default: the backend for paced runs; the "
            "station for `max`, where the backend's SoC readings (via the ingest) lag far "
            "behind simulated time.",
        ),
    ] = None,
    offline: Annotated[
        bool, typer.Option(help="Run in memory only, ignoring any API or broker settings.")
    ] = False,
    station_protocol: Annotated[
        StationProtocol,
        typer.Option(
            help="How stations talk to the backend: `mqtt` (telemetry over MQTT, swaps over "
            "REST) or `ocpp` (OCPP 2.1 to the API's /ocpp gateway: heartbeats, meter values "
            "and BatterySwap; health, capacity and vehicle records still over MQTT). `ocpp` "
            "needs --api-key: it provisions each station's OCPP password and each vehicle's "
            "idToken through REST.",
        ),
    ] = StationProtocol.mqtt,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    wait: Annotated[
        float,
        typer.Option(
            min=0.0, help="Seconds to wait for the API and the broker to come up (for `up`)."
        ),
    ] = 0.0,
) -> None:
    """Simulate stations and vehicles; register them, record swaps and publish telemetry."""
    pace = parse_speed(speed)
    now = hosted_clock(ctx)
    # One line per swap request would drown the summary.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if threading.current_thread() is threading.main_thread():
        # `up` stops its children with SIGTERM: end like Ctrl-C, flushing what is buffered and
        # marking the stations offline.
        signal.signal(signal.SIGTERM, _interrupt)
    if start is None:
        start = default_start(days, pace, now())
    chosen = SCENARIOS[scenario.value].with_stations(slots=slots, grid_kw=station_power_kw)
    sizes = {"stations": stations, "vehicles": vehicles}
    config = chosen.config(
        days=days,
        seed=seed,
        start=start.replace(tzinfo=start.tzinfo or UTC),
        code_prefix=prefix,
        faulty_share=faulty_share,
        **{name: value for name, value in sizes.items() if value is not None},
    )
    console = Console(stderr=False)
    notes: list[str] = []
    with ExitStack() as stack:
        sink: RecordSink
        recorder: SwapRecorder | None = None
        counter = InMemorySink(keep_records=False)
        mqtt_sink: MqttDeviceSink | SharedMqttSink | None = None
        if not offline and mqtt_url:
            broker = BrokerSettings.from_url(mqtt_url, protocol=mqtt_protocol)
            if device_connections:
                mqtt_sink = MqttDeviceSink(
                    broker,
                    outbox_dir=outbox_dir,
                    prefix=topic_prefix,
                    options=PublishOptions(batch_max_records=500, batch_interval_s=0.5),
                )
            else:
                mqtt_sink = SharedMqttSink(broker, prefix=topic_prefix, client_id=mqtt_client_id)
                mqtt_sink.start(timeout=max(10.0, wait))
            stack.callback(mqtt_sink.close, 5.0)
            sink = mqtt_sink
            notes.append(f"telemetry published to {mqtt_url}")
        else:
            sink = counter
            notes.append("telemetry kept in memory (no --mqtt-url)")
        writer = stack.enter_context(GroundTruthWriter(truth)) if truth else None

        fleet_holder: list[Fleet] = []
        if not offline and api_key:
            http = stack.enter_context(
                httpx.Client(
                    base_url=api_url,
                    headers={"Authorization": f"Bearer {api_key}"},
                    timeout=30.0,
                )
            )
            if wait > 0:
                wait_until_ready(http, wait)
            swap_client = stack.enter_context(SwapApiClient(api_url, api_key))
            # Flat out (and so during a backfill) the backend's SoC readings, which arrive
            # through the ingest, lag far behind simulated time: the station chooses.
            paced_only = pace is not None and flat_out_until is None
            choose = backend_chooses if backend_chooses is not None else paced_only
            recorder = RestSwapRecorder(swap_client, let_backend_choose=choose)
            notes.append(f"swaps recorded at {api_url}")
        else:
            notes.append("swaps kept in memory (no --api-key)")

        fleet = Fleet(config, sink, swap_recorder=recorder, truth=writer)
        ocpp_stations: OcppFleetStations | None = None
        fleet_holder.append(fleet)
        if recorder is not None and register:
            console.print(
                f"registering {len(fleet.manifest.stations)} stations, "
                f"{len(fleet.manifest.vehicles)} vehicles and "
                f"{len(fleet.manifest.batteries)} batteries at {api_url}"
            )
            report = RestFleetRegistrar(http).register(fleet.manifest)
            if report.battery_locations:
                moved = fleet.adopt_custody(report.battery_locations, report.battery_soc)
                notes.append(
                    f"fleet registered before: reused {report.existing:,} objects, "
                    f"{moved:,} batteries placed where the backend has them"
                )

        if station_protocol is StationProtocol.ocpp:
            if recorder is None:
                console.print("--station-protocol ocpp needs --api-key (and no --offline)")
                raise typer.Exit(code=2)
            passwords = provision_ocpp(http, fleet.manifest)
            # Health, capacity and vehicle records have no OCPP message: the other sink.
            ocpp = ocpp_stations = OcppFleetStations(api_url, passwords, sink).start()
            stack.callback(ocpp.close)
            fleet.sink = ocpp
            fleet.recorder = ocpp
            notes.append(f"stations speak OCPP 2.1 to {ws_url(api_url, '<code>')}")

        wall_start = time.monotonic()
        stats = fleet.stats
        try:
            with _progress(console, fleet, progress) as (bar, task):

                def on_progress(s: FleetStats) -> None:
                    # Paced, records should not wait for a batch to fill; flat out they
                    # fill fast, and bigger messages are cheaper for everyone.
                    if mqtt_sink is not None and pace is not None:
                        mqtt_sink.flush_buffers()
                    if bar is None:
                        return
                    bar.update(
                        task,
                        completed=s.sim_time - fleet.start,
                        sim=f"{datetime.fromtimestamp(s.sim_time, UTC):%Y-%m-%d %H:%M}",
                        messages=s.messages,
                        records=s.total_records,
                        swaps=s.swaps,
                    )

                stats = fleet.run(
                    speed=pace,
                    flat_out_until=(
                        flat_out_until.replace(tzinfo=flat_out_until.tzinfo or UTC).timestamp()
                        if flat_out_until
                        else None
                    ),
                    progress=on_progress,
                    clock=lambda: now().timestamp(),
                )
        except KeyboardInterrupt:
            notes.append("interrupted: the run stopped early")
        finally:
            if mqtt_sink is not None:
                console.print(f"flushing {mqtt_sink.pending_records():,} records to the broker")
                if not mqtt_sink.close(timeout=120.0):
                    notes.append("some records were not acknowledged by the broker in time")
                if isinstance(mqtt_sink, SharedMqttSink):
                    published = mqtt_sink.stats
                    notes.append(
                        f"MQTT: {published.messages_acked:,} of {published.messages_published:,} "
                        f"messages acknowledged, {sum(published.records_published.values()):,} "
                        f"records published ({published.statuses_superseded:,} stale station "
                        "statuses superseded by newer ones)"
                    )
        wall = time.monotonic() - wall_start
        if ocpp_stations is not None:
            notes.append(
                f"OCPP: {len(ocpp_stations.stations)} stations, {ocpp_stations.calls:,} calls, "
                f"CALLERRORs by action: {dict(ocpp_stations.failed) or 'none'}"
            )
        if writer is not None:
            notes.append(f"ground truth: {writer.rows:,} rows in {truth}")
        _render_summary(console, fleet, stats, wall, notes)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def wait_until_ready(http: httpx.Client, timeout: float) -> None:
    """Poll /readyz: under `up` the simulator starts alongside the API it talks to."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() >= deadline:
            raise typer.Exit(code=1)
        time.sleep(0.5)


# What `swapfleet up` runs by default: the demo network (simulators.scenarios.demo_config, the
# world `swapfleet seed-demo` registers), so that a newcomer sees its swaps and telemetry arrive
# at once. On a new database it first backfills UP_BACKFILL_DAYS of history flat out, so that
# reports and charts have data, then runs UP_SPEED times faster than real time through
# UP_RUNWAY_DAYS, and from the present on in real time (a backend refuses records from the
# future). The seed's codes, seed and size make every `up` on the same database find the
# network registered; it goes on from the present.
UP_BACKFILL_DAYS = 3
UP_RUNWAY_DAYS = 2
UP_SPEED = 60.0
UP_FLEET_ARGS = (
    "--scenario", DEMO_SCENARIO, "--stations", str(DEMO_STATIONS), "--vehicles",
    str(DEMO_VEHICLES), "--days", "3650", "--seed", str(DEMO_SEED), "--prefix", DEMO_PREFIX,
    "--no-progress", "--wait", "60",
)  # fmt: skip


def up_simulator_command(
    api_url: str,
    api_key: str,
    mqtt_url: str,
    *,
    topic_prefix: str | None = None,
    base_env: Mapping[str, str] | None = None,
    backfill: bool = False,
    speed: float = UP_SPEED,
    now: datetime | None = None,
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the simulator child of `swapfleet up`.

    api_key must be an admin key (the simulator registers organizations and the catalog).
    The child is `python -m app.cli simulate ...`, configured through SWAPFLEET_* variables
    like the other children; it waits up to a minute for the API and the broker.
    """
    env = dict(os.environ if base_env is None else base_env)
    env["SWAPFLEET_API_URL"] = api_url
    env["SWAPFLEET_API_KEY"] = api_key
    env["SWAPFLEET_MQTT_URL"] = mqtt_url
    if topic_prefix is not None:
        env["SWAPFLEET_MQTT_TOPIC_PREFIX"] = topic_prefix
    argv = [sys.executable, "-m", "app.cli", "simulate", *UP_FLEET_ARGS, "--speed", f"{speed:g}"]
    if backfill:
        now = (now or wall_clock()).replace(microsecond=0)
        runway = now - timedelta(days=UP_RUNWAY_DAYS)
        start = runway - timedelta(days=UP_BACKFILL_DAYS)
        argv += ["--start", start.isoformat(), "--flat-out-until", runway.isoformat()]
    return argv, env


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="ts=%(asctime)s level=%(levelname)s %(message)s")
    simulate_cli()


if __name__ == "__main__":
    main()
