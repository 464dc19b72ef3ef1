"""A real MQTT subscriber for tests that collects every message and its records."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    # Set on the broker's own redelivery to this subscriber, not on a device's resend.
    dup: bool = False

    def records(self) -> list[dict[str, Any]]:
        document = orjson.loads(self.payload)
        if isinstance(document, dict) and "records" in document:
            return list(document["records"])
        return [document]


class Collector:
    def __init__(
        self,
        port: int,
        topic_filter: str,
        *,
        username: str | None = None,
        password: str | None = None,
        persistent: bool = False,
    ) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._filter = topic_filter
        self.port = port
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"collector-{uuid.uuid4().hex[:10]}",
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._persistent = persistent

    def start(self, timeout: float = 10.0) -> Collector:
        properties = None
        if self._persistent:
            # The broker keeps the subscription and queues for it across a restart.
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 3600
        self._client.connect(
            "127.0.0.1", self.port, clean_start=not self._persistent, properties=properties
        )
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"subscription to {self._filter} not acknowledged")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if not rc.is_failure:
            client.subscribe(self._filter, qos=1)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        self.granted = codes
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(
                Received(message.topic, bytes(message.payload), message.retain, bool(message.dup))
            )

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def records(self, topic: str | None = None, *, dups: bool = True) -> list[dict[str, Any]]:
        return [
            record
            for message in self.snapshot()
            if (topic is None or message.topic == topic) and (dups or not message.dup)
            for record in message.records()
        ]

    def wait_until(self, condition: Callable[[Collector], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self):
                return True
            time.sleep(0.05)
        return condition(self)
