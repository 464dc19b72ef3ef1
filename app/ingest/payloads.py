"""Turning one MQTT message into validated records and dead letters, without the database.

This runs in paho's network thread, so it only decodes and validates; identity checks
against the registry happen in the writer, once per batch.
"""

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from app.core.config import Settings
from app.ingest.partitions import retention
from devices.contract import (
    MAX_RECORDS_PER_MESSAGE,
    RECORD_MODELS,
    PayloadError,
    RecordKind,
    TopicIdentity,
    parse_topic,
    split_records,
    validate_record,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetterRow:
    topic: str
    payload: bytes
    payload_bytes: int
    record_index: int | None
    reason: str
    detail: str
    station_code: str | None
    vin: str | None
    received_at: datetime


class DecodedRecord:
    """One valid record of a message; a slotted class, as there is one per record."""

    __slots__ = ("index", "raw", "record")

    def __init__(self, index: int | None, raw: Any, record: BaseModel) -> None:
        # Position in {"records": [...]}, or None for a message that is one bare record.
        self.index = index
        # The record's JSON as decoded, or None when it was validated straight from the
        # payload (a refusal decodes the payload again: refusals are rare, records are not).
        self.raw = raw
        self.record = record


@dataclass
class DecodedMessage:
    topic: str
    identity: TopicIdentity | None
    payload: bytes
    received_at: datetime
    records: list[DecodedRecord] = field(default_factory=list)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)

    def dead_letter(
        self, reason: str, detail: str, *, limit: int, index: int | None = None, raw: Any = None
    ) -> None:
        self.dead_letters.append(self.refusal(reason, detail, limit=limit, index=index, raw=raw))

    def refusal(
        self, reason: str, detail: str, *, limit: int, index: int | None = None, raw: Any = None
    ) -> DeadLetterRow:
        # A refused record of a batch keeps only its own JSON; the rest of the batch is stored.
        body = self.payload
        if index is not None:
            try:
                if raw is None:
                    raw = split_records(self.payload)[0][index]
                body = orjson.dumps(raw)
            except (PayloadError, TypeError):
                # orjson encodes less than it decodes (nesting beyond 255 levels, integers
                # beyond 64 bits): keep the whole message rather than lose the refusal.
                pass
        return DeadLetterRow(
            topic=self.topic,
            payload=body[:limit],
            payload_bytes=len(body),
            record_index=index,
            reason=reason,
            # Texts of exceptions and of pydantic's locations quote the payload's keys, and
            # PostgreSQL text cannot hold NUL.
            detail=detail.replace("\x00", "\\u0000")[:1000],
            station_code=self.identity.station_code if self.identity else None,
            vin=self.identity.vin if self.identity else None,
            received_at=self.received_at,
        )


def record_ts(record: BaseModel) -> datetime | None:
    """The record's ts, moved to UTC in the record itself.

    pydantic gives every parsed datetime a tzinfo object of its own, and comparing aware
    datetimes whose tzinfo objects differ costs two utcoffset() calls: about 10 x a plain
    comparison. The writer compares each ts a dozen times (sorting, custody spans, month
    bounds), so one conversion here pays for itself many times over; the instant is the same.
    """
    fields = record.__dict__
    ts = fields.get("ts")
    if not isinstance(ts, datetime):
        return None
    ts = fields["ts"] = in_utc(ts)
    return ts


def in_utc(ts: datetime) -> datetime:
    try:
        return ts.astimezone(UTC)
    except OverflowError as exc:
        # "9999-12-31T23:59:59-14:00" and "0001-01-01T00:00:00+14:00" are valid RFC 3339 but
        # fall outside the years datetime can hold once moved to UTC.
        raise PayloadError(
            "impossible_value", f"ts {ts.isoformat()}: not representable in UTC"
        ) from exc


def unstorable_extra(record: BaseModel) -> str | None:
    """Why the record's extra fields cannot be stored as jsonb, or None.

    Refused here, record by record, rather than by the database: a refusal there rolls back
    the whole batch, which is then written again message by message."""
    extra = record.__pydantic_extra__
    if not extra:
        return None
    try:
        encoded = orjson.dumps(extra)
    except TypeError:
        return "extra fields: nested deeper than 255 levels or an integer beyond 64 bits"
    if b"\\u0000" in encoded:
        return "extra fields: text cannot hold U+0000"
    try:
        # pydantic's JSON parser reads NaN and Infinity, which orjson writes as null and
        # jsonb refuses; the stdlib encoder is the one psycopg stores jsonb with.
        json.dumps(extra, allow_nan=False)
    except ValueError:
        return "extra fields: numbers must be finite"
    return None


def _batch_model(kind: RecordKind) -> type[BaseModel]:
    class Batch(BaseModel):
        # split_records ignores anything beside "records" too.
        model_config = ConfigDict(extra="ignore")
        records: list[RECORD_MODELS[kind]]  # type: ignore[valid-type]

    return Batch


# Whole messages validated from their bytes in pydantic's Rust core, without a Python dict
# per record; anything that fails goes the record-by-record way for its precise reasons.
_BATCH_MODELS: dict[RecordKind, type[BaseModel]] = {
    kind: _batch_model(kind) for kind in RECORD_MODELS if kind is not RecordKind.status
}


def _validate_whole(kind: RecordKind, payload: bytes) -> tuple[list[BaseModel], bool] | None:
    """The records of a message whose every record is valid, and whether it was a batch;
    None to take the record-by-record way."""
    batch_model = _BATCH_MODELS.get(kind)
    if batch_model is None:
        return None
    try:
        if b'"records"' in payload:
            records: list[BaseModel] = batch_model.model_validate_json(payload).__dict__["records"]
            if not 0 < len(records) <= MAX_RECORDS_PER_MESSAGE:
                return None
            return records, True
        return [RECORD_MODELS[kind].model_validate_json(payload)], False
    except ValidationError:
        return None


# Devices publish on a few thousand topics at most; parsing one costs more than the lookup.
_TOPICS: dict[tuple[str, str], TopicIdentity | None] = {}
_TOPICS_MAX = 100_000


def topic_identity(topic: str, prefix: str) -> TopicIdentity | None:
    key = (topic, prefix)
    try:
        return _TOPICS[key]
    except KeyError:
        pass
    if len(_TOPICS) >= _TOPICS_MAX:
        _TOPICS.clear()
    identity = _TOPICS[key] = parse_topic(topic, prefix)
    return identity


def decode_message(
    topic: str, payload: bytes, *, settings: Settings, received_at: datetime
) -> DecodedMessage:
    """Never raises: whatever a payload makes the decoder raise is that message's fault, and
    the message is dead-lettered as `unprocessable` (a raise here would end the writer)."""
    try:
        return _decode_message(topic, payload, settings=settings, received_at=received_at)
    except Exception as exc:
        log.exception("event=message_unprocessable topic=%s bytes=%d", topic, len(payload))
        message = DecodedMessage(topic, None, payload, received_at)
        message.dead_letter(
            "unprocessable",
            f"{type(exc).__name__}: {exc}",
            limit=settings.ingest_dead_letter_payload_bytes,
        )
        return message


def _decode_message(
    topic: str, payload: bytes, *, settings: Settings, received_at: datetime
) -> DecodedMessage:
    identity = topic_identity(topic, settings.mqtt_topic_prefix)
    message = DecodedMessage(topic, identity, payload, received_at)
    limit = settings.ingest_dead_letter_payload_bytes
    if identity is None:
        message.dead_letter("unknown_topic", "topic is outside the v1 contract", limit=limit)
        return message
    if len(payload) > settings.ingest_max_payload_bytes:
        message.dead_letter(
            "oversized",
            f"{len(payload)} bytes; at most {settings.ingest_max_payload_bytes}",
            limit=limit,
        )
        return message
    future_limit = received_at + timedelta(seconds=settings.ingest_max_future_skew_s)
    oldest = (
        received_at - retention(settings, identity.kind)
        if identity.kind is not RecordKind.status
        else None
    )
    whole = _validate_whole(identity.kind, payload)
    if whole is not None and oldest is not None:
        records, batched = whole
        for record in records:
            # record_ts, inlined on the path every valid record takes; every record kind
            # validated whole has a ts.
            fields = record.__dict__
            try:
                ts = fields["ts"] = fields["ts"].astimezone(UTC)
            except OverflowError:
                break  # refused with its reason on the record-by-record way
            if not oldest <= ts <= future_limit:
                break
            if record.__pydantic_extra__ and unstorable_extra(record) is not None:
                break
        else:
            message.records = [
                DecodedRecord(i if batched else None, None, r) for i, r in enumerate(records)
            ]
            return message
    try:
        raws, batched = split_records(payload)
    except PayloadError as exc:
        message.dead_letter(exc.reason, exc.detail, limit=limit)
        return message

    for position, raw in enumerate(raws):
        index = position if batched else None
        try:
            record = validate_record(identity.kind, raw)
        except PayloadError as exc:
            message.dead_letter(exc.reason, exc.detail, limit=limit, index=index, raw=raw)
            continue
        decoded = DecodedRecord(index, raw, record)
        try:
            ts = record_ts(record)
        except PayloadError as exc:
            message.dead_letter(exc.reason, exc.detail, limit=limit, index=index, raw=raw)
            continue
        unstorable = unstorable_extra(record)
        if unstorable is not None:
            message.dead_letter("schema", unstorable, limit=limit, index=index, raw=raw)
            continue
        if ts is not None and ts > future_limit:
            message.dead_letter(
                "ts_in_future",
                f"ts {ts.isoformat()} is more than {settings.ingest_max_future_skew_s:g} s ahead",
                limit=limit,
                index=index,
                raw=raw,
            )
        elif ts is not None and oldest is not None and ts < oldest:
            message.dead_letter(
                "ts_too_old",
                f"ts {ts.isoformat()} is older than the retention of {identity.kind.value}",
                limit=limit,
                index=index,
                raw=raw,
            )
        else:
            message.records.append(decoded)
    return message
