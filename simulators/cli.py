"""`swapfleet simulate`: run a simulated fleet against the real backend, or in memory.

Wire into the main command with `cli.add_typer(simulate_cli, name="simulate")`; the callback
runs without a sub-command, so `swapfleet simulate --stations 20 --vehicles 300` works.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from devices.client import BrokerSettings, PublishOptions
from devices.contract import DEFAULT_TOPIC_PREFIX
from devices.rest import SwapApiClient
from simulators.backend import MqttDeviceSink, RestFleetRegistrar, RestSwapRecorder
from simulators.fleet import Fleet, FleetConfig, FleetStats
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


def default_start(days: float, speed: float | None, now: datetime | None = None) -> datetime:
    """Backfills end now (history up to the present); paced runs begin now."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
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
    for note in notes:
        table.add_row("note", note)
    console.print(table)


@simulate_cli.callback(invoke_without_command=True)
def simulate(
    stations: Annotated[int, typer.Option(min=1, help="Swap stations.")] = 20,
    vehicles: Annotated[int, typer.Option(min=0, help="Vehicles.")] = 300,
    days: Annotated[float, typer.Option(min=0.0, help="Simulated days.")] = 30.0,
    speed: Annotated[
        str, typer.Option(help="`max`, or simulated seconds per wall second (1 = real time).")
    ] = "max",
    seed: Annotated[int, typer.Option(help="Same seed, same fleet and same run.")] = 1,
    start: Annotated[
        datetime | None,
        typer.Option(help="Simulated start (UTC); default: now minus --days for `max`, else now."),
    ] = None,
    prefix: Annotated[
        str | None, typer.Option(help="Prefix of every code and serial; default sim<seed>.")
    ] = None,
    slots: Annotated[int, typer.Option(min=2, help="Slots per station.")] = 12,
    station_power_kw: Annotated[
        float, typer.Option(min=0.1, help="Grid power limit per station (kW).")
    ] = 24.0,
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
    outbox_dir: Annotated[
        Path | None, typer.Option(help="Keep the devices' outboxes here (default: a temp dir).")
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
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Simulate stations and vehicles; register them, record swaps and publish telemetry."""
    pace = parse_speed(speed)
    config = FleetConfig(
        stations=stations,
        vehicles=vehicles,
        days=days,
        seed=seed,
        start=(start.replace(tzinfo=start.tzinfo or UTC) if start else default_start(days, pace)),
        code_prefix=prefix,
        slots_per_station=slots,
        station_power_kw=station_power_kw,
        faulty_share=faulty_share,
    )
    console = Console(stderr=False)
    notes: list[str] = []
    with ExitStack() as stack:
        sink: RecordSink
        recorder: SwapRecorder | None = None
        counter = InMemorySink(keep_records=False)
        mqtt_sink: MqttDeviceSink | None = None
        if not offline and mqtt_url:
            mqtt_sink = MqttDeviceSink(
                BrokerSettings.from_url(mqtt_url),
                outbox_dir=outbox_dir,
                prefix=topic_prefix,
                options=PublishOptions(batch_max_records=500, batch_interval_s=0.5),
            )
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
            swap_client = stack.enter_context(SwapApiClient(api_url, api_key))
            choose = backend_chooses if backend_chooses is not None else pace is not None
            recorder = RestSwapRecorder(swap_client, let_backend_choose=choose)
            notes.append(f"swaps recorded at {api_url}")
        else:
            notes.append("swaps kept in memory (no --api-key)")

        fleet = Fleet(config, sink, swap_recorder=recorder, truth=writer)
        fleet_holder.append(fleet)
        if recorder is not None and register:
            console.print(
                f"registering {len(fleet.manifest.stations)} stations, "
                f"{len(fleet.manifest.vehicles)} vehicles and "
                f"{len(fleet.manifest.batteries)} batteries at {api_url}"
            )
            RestFleetRegistrar(http).register(fleet.manifest)

        wall_start = time.monotonic()
        stats = fleet.stats
        try:
            with _progress(console, fleet, progress) as (bar, task):

                def report(s: FleetStats) -> None:
                    if mqtt_sink is not None:
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

                stats = fleet.run(speed=pace, progress=report)
        except KeyboardInterrupt:
            notes.append("interrupted: the run stopped early")
        finally:
            if mqtt_sink is not None:
                console.print(f"flushing {mqtt_sink.pending_records():,} records to the broker")
                if not mqtt_sink.close(timeout=120.0):
                    notes.append("some records were not acknowledged by the broker in time")
        wall = time.monotonic() - wall_start
        if writer is not None:
            notes.append(f"ground truth: {writer.rows:,} rows in {truth}")
        _render_summary(console, fleet, stats, wall, notes)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="ts=%(asctime)s level=%(levelname)s %(message)s")
    simulate_cli()


if __name__ == "__main__":
    main()
