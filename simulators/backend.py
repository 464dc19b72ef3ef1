"""The real backend behind the fleet's sinks: REST registration and swaps, MQTT telemetry.

Each simulated station and vehicle publishes through its own `devices.client.DeviceClient`, as
real equipment would (its own connection, outbox and, for a station, retained status and Last
Will). Swaps go through `devices.rest.SwapApiClient`, which retries safely under an
Idempotency-Key; the fleet then installs whatever battery the backend says it installed.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from devices.client import BrokerSettings, DeviceClient, PublishOptions
from devices.contract import DEFAULT_TOPIC_PREFIX, RecordKind
from devices.rest import SwapApiClient, SwapDeliveryError
from simulators.catalog import BatteryEntry, FleetManifest
from simulators.sinks import Record, SwapRequest, SwapResult

log = logging.getLogger(__name__)


class RegistrationError(RuntimeError):
    pass


class RestFleetRegistrar:
    """Creates the fleet's organizations, catalog, stations, vehicles and batteries."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def _post(self, path: str, body: dict[str, Any], *, tolerate_exists: bool) -> None:
        response = self._http.post(path, json=body)
        if response.status_code in (200, 201):
            return
        if response.status_code == 409 and tolerate_exists:
            # Shared parts (the catalog, organizations) may be there from an earlier run.
            return
        raise RegistrationError(
            f"POST {path} failed with {response.status_code}: {response.text[:500]}"
        )

    def register(self, manifest: FleetManifest) -> None:
        if manifest.vehicles:
            probe = self._http.get(f"/v1/vehicles/{manifest.vehicles[0].vin}")
            if probe.status_code == 200:
                raise RegistrationError(
                    f"vehicle {manifest.vehicles[0].vin} is already registered: this fleet ran "
                    "against this backend before; use another --prefix (or --seed)"
                )
        for org in manifest.organizations:
            self._post(
                "/v1/organizations",
                {"code": org.code, "name": org.name, "role": org.role},
                tolerate_exists=True,
            )
        for pack in manifest.pack_types:
            self._post(
                "/v1/pack-types",
                {
                    "code": pack.code,
                    "name": pack.name,
                    "chemistry": pack.chemistry,
                    "nominal_energy_kwh": pack.nominal_energy_kwh,
                    "nominal_capacity_ah": pack.nominal_capacity_ah,
                    "nominal_voltage_v": pack.nominal_voltage_v,
                },
                tolerate_exists=True,
            )
        for model in manifest.vehicle_models:
            self._post(
                "/v1/vehicle-models",
                {
                    "code": model.code,
                    "name": model.name,
                    "oem_code": model.oem_code,
                    "pack_type_codes": list(model.pack_type_codes),
                },
                tolerate_exists=True,
            )
        for station in manifest.stations:
            self._post(
                "/v1/stations",
                {
                    "code": station.code,
                    "name": station.name,
                    "operator_code": station.operator_code,
                    "latitude": station.latitude,
                    "longitude": station.longitude,
                    "timezone": station.timezone,
                    "target_soc_pct": station.target_soc_pct,
                    "slot_count": station.slot_count,
                },
                tolerate_exists=False,
            )
        for vehicle in manifest.vehicles:
            self._post(
                "/v1/vehicles",
                {"vin": vehicle.vin, "model_code": vehicle.model_code},
                tolerate_exists=False,
            )
        for battery in manifest.batteries:
            self._post("/v1/batteries", battery_body(battery), tolerate_exists=False)


def battery_body(battery: BatteryEntry) -> dict[str, Any]:
    location: dict[str, Any]
    if battery.vin is not None:
        location = {"kind": "vehicle", "vin": battery.vin}
    elif battery.station_code is not None and battery.slot_number is not None:
        location = {
            "kind": "slot",
            "station_code": battery.station_code,
            "slot_number": battery.slot_number,
        }
    else:
        location = {"kind": "warehouse"}
    return {
        "serial": battery.serial,
        "pack_type_code": battery.pack_type_code,
        "owner_code": battery.owner_code,
        "oem_code": battery.oem_code,
        "manufactured_on": battery.manufactured_on,
        "location": location,
        "soc_pct": battery.soc_pct,
        "soh_pct": battery.soh_pct,
        "equivalent_full_cycles": battery.equivalent_full_cycles,
    }


class RestSwapRecorder:
    """Records each swap with POST /v1/swaps; by default the backend picks the battery."""

    def __init__(self, client: SwapApiClient, *, let_backend_choose: bool = True) -> None:
        self._client = client
        self._let_backend_choose = let_backend_choose

    def record_swap(self, request: SwapRequest) -> SwapResult:
        body: dict[str, Any] = {
            "station_code": request.station_code,
            "vin": request.vin,
            "removed_battery_serial": request.removed_battery_serial,
            "removed_soc_pct": request.removed_soc_pct,
            "removed_soh_pct": request.removed_soh_pct,
            "started_at": request.started_at,
            "finished_at": request.finished_at,
        }
        if not self._let_backend_choose:
            body["installed_battery_serial"] = request.proposed_battery_serial
            body["installed_soc_pct"] = request.installed_soc_pct
            body["installed_soh_pct"] = request.installed_soh_pct
        try:
            result = self._client.record_swap(body, idempotency_key=request.idempotency_key)
        except SwapDeliveryError as exc:
            log.error("event=swap_undelivered key=%s error=%s", exc.idempotency_key, exc)
            return SwapResult(False, reason_code="Undelivered")
        if not result.accepted:
            return SwapResult(False, reason_code=result.code or f"HTTP{result.status_code}")
        installed = result.body.get("installed_battery_serial")
        return SwapResult(
            True,
            str(installed) if installed else request.proposed_battery_serial,
            swap_id=str(result.body.get("id")),
        )


class MqttDeviceSink:
    """One DeviceClient per station and vehicle, opened on its first message."""

    def __init__(
        self,
        broker: BrokerSettings,
        *,
        outbox_dir: Path | None = None,
        prefix: str = DEFAULT_TOPIC_PREFIX,
        options: PublishOptions | None = None,
        buffer_records: int = 200,
    ) -> None:
        self._broker = broker
        # Each hand-over to a client is one outbox transaction: give it records in bulk.
        self._buffer_records = buffer_records
        self._buffers: dict[tuple[bool, str, RecordKind], list[Record]] = {}
        self._prefix = prefix
        self._options = options or PublishOptions()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if outbox_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="swapfleet-sim-outbox-")
            outbox_dir = Path(self._tmp.name)
        outbox_dir.mkdir(parents=True, exist_ok=True)
        self._outbox_dir = outbox_dir
        self._clients: dict[tuple[bool, str], DeviceClient] = {}

    def _client(self, station: bool, identity: str) -> DeviceClient:
        key = (station, identity)
        client = self._clients.get(key)
        if client is None:
            factory = DeviceClient.for_station if station else DeviceClient.for_vehicle
            client = factory(
                identity,
                self._broker,
                outbox_path=self._outbox_dir / f"{'st' if station else 've'}-{identity}.sqlite",
                prefix=self._prefix,
                options=self._options,
            )
            client.start()
            self._clients[key] = client
        return client

    def publish(self, kind: RecordKind, identity: str, records: Sequence[Record]) -> None:
        if kind is RecordKind.status:
            for record in records:
                self._client(True, identity).publish_status(record)
            return
        key = (kind is not RecordKind.vehicle, identity, kind)
        buffer = self._buffers.setdefault(key, [])
        buffer.extend(records)
        if len(buffer) >= self._buffer_records:
            self._hand_over(key)

    def _hand_over(self, key: tuple[bool, str, RecordKind]) -> None:
        records = self._buffers.pop(key, None)
        if records:
            station, identity, kind = key
            self._client(station, identity).publish_records(kind, records)

    def flush_buffers(self) -> None:
        """Hand every buffered record to its client; call it now and then on paced runs."""
        for key in list(self._buffers):
            self._hand_over(key)

    def pending_records(self) -> int:
        buffered = sum(len(b) for b in self._buffers.values())
        return buffered + sum(c.stats().pending_records for c in self._clients.values())

    def flush(self, timeout: float) -> bool:
        self.flush_buffers()
        return all(c.flush(timeout) for c in self._clients.values())

    def close(self, timeout: float = 30.0) -> bool:
        self.flush_buffers()
        flushed = True
        for client in self._clients.values():
            flushed = client.close(timeout) and flushed
        self._clients.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
        return flushed

    @property
    def clients(self) -> int:
        return len(self._clients)
