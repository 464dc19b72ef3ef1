"""The identities a batch names, and the verdict on each record: does its battery belong to
the station or vehicle of its topic at the record's time (custody, give or take a grace
period)? Read from the registry once per batch.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from app.ingest.payloads import DecodedMessage, DecodedRecord
from devices.contract import ChargingSample, RecordKind, TopicIdentity

Connection = psycopg.Connection[Any]


# Where a battery was: (station_id of its slot, vehicle_id); both None in a warehouse or in
# transit.
Place = tuple[int | None, int | None]
# A closed time span; None for no bound (comparing aware datetimes of different tzinfo
# objects costs a utcoffset() call each, and most spans have no bound at all).
Span = tuple[datetime | None, datetime | None]
# Per battery serial: a span over which it made no move, and the verdict on its place then.
Judged = dict[str, tuple[datetime | None, datetime | None, tuple[str, str] | None]]


@dataclass
class Registry:
    """The identities a batch names, read once per batch."""

    stations: dict[str, int] = field(default_factory=dict)
    slots: set[tuple[int, int]] = field(default_factory=set)
    vehicles: dict[str, int] = field(default_factory=dict)
    # serial -> where it is now, from the custody core.
    batteries: dict[str, Place] = field(default_factory=dict)
    # serial -> its custody moves (time, place it went to), oldest first, covering the
    # batch's time span: records are judged by where the battery was at their ts, so that
    # late (outbox) or backfilled records are not refused after a swap moved the battery.
    moves: dict[str, list[tuple[datetime, Place]]] = field(default_factory=dict)
    # serial -> where it was before its first recorded move (that move's `from`), for records
    # older than the whole history, as a backfill of past telemetry has.
    origins: dict[str, Place] = field(default_factory=dict)
    # Device clocks and the swap times operators record differ by minutes.
    grace: timedelta = timedelta(0)

    def places_near(self, serial: str, ts: datetime) -> set[Place]:
        """Every place the battery occupied within the grace period around ts."""
        moves = self.moves.get(serial, [])
        start, end = ts - self.grace, ts + self.grace
        before = [place for at, place in moves if at <= start]
        during = {place for at, place in moves if start < at <= end}
        if before:
            return {before[-1], *during}
        # ts precedes the recorded history: the battery was where its first move took it from.
        origin = self.origins.get(serial, self.batteries[serial])
        return {origin, *during}

    def stable_span(self, serial: str, ts: datetime) -> Span | None:
        """The widest [lo, hi] around ts (None: unbounded) over which places_near gives the
        same places as at ts: no move lies within the grace period of any instant of it.
        None when a move is that close to ts itself."""
        lo: datetime | None = None
        hi: datetime | None = None
        for at, _ in self.moves.get(serial, []):
            if ts - self.grace < at <= ts + self.grace:
                return None
            if at <= ts - self.grace:
                # places_near keeps this move as "before" while at <= t - grace.
                lo = at + self.grace if lo is None else max(lo, at + self.grace)
            else:
                # ...and must not let it into "during": t + grace < at.
                end = at - self.grace - timedelta(microseconds=1)
                hi = end if hi is None else min(hi, end)
        return lo, hi


def load_registry(
    conn: Connection, messages: Sequence[DecodedMessage], grace: timedelta = timedelta(0)
) -> Registry:
    codes: set[str] = set()
    vins: set[str] = set()
    serials: set[str] = set()
    stamps: list[datetime] = []
    for message in messages:
        if message.identity is None:
            continue
        if message.identity.station_code:
            codes.add(message.identity.station_code)
        if message.identity.vin:
            vins.add(message.identity.vin)
        if message.identity.kind is RecordKind.status or not message.records:
            continue
        # Every other kind has battery_serial and ts (the contract's models require them).
        for decoded in message.records:
            record: Any = decoded.record
            serials.add(record.battery_serial)
            stamps.append(record.ts)
    registry = Registry(grace=grace)
    if codes:
        for code, station_id in conn.execute(
            "SELECT code, id FROM stations WHERE code = ANY(%s)", (list(codes),)
        ):
            registry.stations[code] = station_id
        for station_id, number in conn.execute(
            "SELECT station_id, number FROM slots WHERE station_id = ANY(%s)",
            (list(registry.stations.values()),),
        ):
            registry.slots.add((station_id, number))
    if vins:
        for vin, vehicle_id in conn.execute(
            "SELECT vin, id FROM vehicles WHERE vin = ANY(%s)", (list(vins),)
        ):
            registry.vehicles[vin] = vehicle_id
    if serials:
        for serial, station_id, vehicle_id in conn.execute(
            "SELECT b.serial, s.station_id, b.vehicle_id FROM batteries b"
            " LEFT JOIN slots s ON s.id = b.slot_id WHERE b.serial = ANY(%s)",
            (list(serials),),
        ):
            registry.batteries[serial] = (station_id, vehicle_id)
        load_moves(conn, registry, min(stamps) - grace, max(stamps) + grace)
    return registry


def load_moves(conn: Connection, registry: Registry, start: datetime, end: datetime) -> None:
    """Per battery, the moves inside [start, end] and the last one before start."""
    for serial, at, station_id, vehicle_id in conn.execute(
        "SELECT b.serial, e.at, s.station_id, e.to_vehicle_id"
        " FROM batteries b"
        " JOIN custody_events e ON e.battery_id = b.id"
        " LEFT JOIN slots s ON s.id = e.to_slot_id"
        " WHERE b.serial = ANY(%s) AND e.at <= %s AND e.at >= COALESCE("
        "   (SELECT max(p.at) FROM custody_events p WHERE p.battery_id = b.id AND p.at <= %s),"
        "   '-infinity')"
        " ORDER BY b.serial, e.at, e.id",
        (sorted(registry.batteries), end, start),
    ):
        # In datetime.UTC, as the records' ts are (see payloads.record_ts): comparing it with
        # psycopg's ZoneInfo costs utcoffset() calls, and every record is compared with these.
        registry.moves.setdefault(serial, []).append((at.astimezone(UTC), (station_id, vehicle_id)))
    # For batteries with no move before the window, the records may predate their whole
    # history: keep where each was before its first move (that move's `from`, or for a
    # registration, which has none, the place it was registered in).
    unanchored = [
        serial
        for serial in sorted(registry.batteries)
        if not (registry.moves.get(serial) and registry.moves[serial][0][0] <= start)
    ]
    if not unanchored:
        return
    for serial, registered, station_id, vehicle_id, from_station, from_vehicle in conn.execute(
        "SELECT b.serial, e.from_kind IS NULL, s.station_id, e.to_vehicle_id,"
        " fs.station_id, e.from_vehicle_id"
        " FROM batteries b"
        " CROSS JOIN LATERAL (SELECT * FROM custody_events f WHERE f.battery_id = b.id"
        "   ORDER BY f.at, f.id LIMIT 1) e"
        " LEFT JOIN slots s ON s.id = e.to_slot_id"
        " LEFT JOIN slots fs ON fs.id = e.from_slot_id"
        " WHERE b.serial = ANY(%s)",
        (unanchored,),
    ):
        registry.origins[serial] = (
            (station_id, vehicle_id) if registered else (from_station, from_vehicle)
        )


def mismatch(
    identity: TopicIdentity,
    decoded: DecodedRecord,
    owner_id: int,
    registry: Registry,
    judged: Judged | None = None,
) -> tuple[str, str] | None:
    """Why a record does not belong to its topic's station or vehicle, or None.

    judged: per battery serial, a time span over which the battery made no move (within
    the grace period) and the verdict on its place there, shared by the message's records."""
    record = decoded.record
    extra = record.__pydantic_extra__
    if extra:
        if identity.vin is not None and extra.get("vin", identity.vin) != identity.vin:
            return "identity_mismatch", "the record's vin differs from the topic's"
        if identity.station_code is not None and (
            extra.get("station_code", identity.station_code) != identity.station_code
        ):
            return "identity_mismatch", "the record's station_code differs from the topic's"
    serial: str = record.battery_serial  # type: ignore[attr-defined]
    if serial not in registry.batteries:
        return "unknown_battery", f"battery {serial!r} is not registered"
    ts: datetime = record.ts  # type: ignore[attr-defined]
    verdict: tuple[str, str] | None
    cached = judged.get(serial) if judged is not None else None
    if (
        cached is not None
        and (cached[0] is None or cached[0] <= ts)
        and (cached[1] is None or ts <= cached[1])
    ):
        verdict = cached[2]
        if verdict is not None:
            # The text names the record's own ts.
            verdict = _place_verdict(identity, serial, ts, owner_id, registry)
    else:
        verdict = _place_verdict(identity, serial, ts, owner_id, registry)
        if judged is not None:
            stable = registry.stable_span(serial, ts)
            if stable is not None:
                judged[serial] = (*stable, verdict)
    if verdict is not None or identity.kind is RecordKind.vehicle:
        return verdict
    if isinstance(record, ChargingSample) and (owner_id, record.slot) not in registry.slots:
        return "identity_mismatch", f"the station has no slot {record.slot}"
    return None


def _place_verdict(
    identity: TopicIdentity, serial: str, ts: datetime, owner_id: int, registry: Registry
) -> tuple[str, str] | None:
    places = registry.places_near(serial, ts)
    # Only where the battery was, give or take the grace period that covers custody lagging
    # a move: a battery in the warehouse or in transit has no station or vehicle that could
    # measure it, and a record "for" it from anywhere would feed its OEM's reports with
    # another device's readings (issue 11, finding 9).
    if identity.kind is RecordKind.vehicle:
        if not any(station is None and vehicle == owner_id for station, vehicle in places):
            return "identity_mismatch", f"battery {serial} was not in this vehicle at {ts}"
        return None
    if not any(vehicle is None and station == owner_id for station, vehicle in places):
        return "identity_mismatch", f"battery {serial} was not at this station at {ts}"
    return None


def owner_of(identity: TopicIdentity, registry: Registry) -> tuple[int | None, int | str, str]:
    """The registry id of the topic's station or vehicle, the value stored with its records,
    and the refusal reason when it is unknown."""
    if identity.vin is not None:
        return registry.vehicles.get(identity.vin), identity.vin, "unknown_vehicle"
    station_id = registry.stations.get(identity.station_code or "")
    return station_id, station_id or 0, "unknown_station"
