"""The embedded MQTT broker of `swapfleet up` on machines without Mosquitto:
`python -m app.local.embedded_broker --port N`.

amqtt is a pure-Python broker that speaks MQTT 3.1.1 only (no MQTT 5: no shared subscriptions,
no session expiry, no Receive Maximum), keeps its sessions in memory only, and forgets a QoS 1
message it has sent once the subscriber disconnects or has not acknowledged it within 5 s. It
moves a few thousand messages a second: enough for one machine's demo, never for production.
Like the private Mosquitto it listens on loopback only and lets any client in.
"""

import argparse
import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

log = logging.getLogger("app.local.embedded_broker")

HOST = "127.0.0.1"


class LoopbackAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """Lets every client in, without marking its session anonymous.

    amqtt's own AnonymousAuthPlugin marks sessions anonymous, and amqtt neither queues messages
    for an offline anonymous session nor keeps it: the ingest's persistent session
    (clean_session=False) would lose what devices publish while it restarts. The listener is on
    loopback only, so whoever connects is on this machine already.
    """

    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session: Session) -> bool:
        return True


def broker_config(port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
        # Only authentication: amqtt's default packet and event loggers and $SYS publisher
        # cost throughput and say nothing a demo needs.
        "plugins": {"app.local.embedded_broker.LoopbackAuthPlugin": {}},
    }


async def serve(port: int) -> None:
    broker = Broker(broker_config(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    log.info("event=embedded_broker_started host=%s port=%d", HOST, port)
    await stop.wait()
    await broker.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Embedded MQTT 3.1.1 broker (amqtt) for a demo")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    # amqtt logs every connection at INFO and every timed-out PUBACK at WARNING.
    logging.getLogger("app.local.embedded_broker").setLevel(logging.INFO)
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
