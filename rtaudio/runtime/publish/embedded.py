"""An in-process MQTT 3.1.1 broker (amqtt) on 127.0.0.1, for demos (``mqtt: {broker: embedded}``).

It runs its own asyncio loop in its own daemon thread, so nothing else in rtaudio needs
asyncio. Anonymous, no TLS, no persistence: a real site uses a real broker (mosquitto).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0


class EmbeddedBroker:
    """Handle of a running embedded broker; ``stop()`` shuts it down and joins its thread."""

    def __init__(self, port: int):
        self.host, self.port = HOST, port
        self._loop = asyncio.new_event_loop()
        self._started: Future[Any] = Future()
        self._broker: Any = None
        self._thread = threading.Thread(target=self._main, name=f"mqtt-broker-{port}", daemon=True)

    def start(self) -> EmbeddedBroker:
        _check_port_free(self.port)
        self._thread.start()
        try:
            self._started.result(START_TIMEOUT_S)
        except Exception as exc:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT_S)
            raise RuntimeError(f"cannot start the embedded MQTT broker on {HOST}:{self.port}: {exc}") from exc
        log.info("embedded MQTT broker listening on %s:%d (for demos; production uses a real broker)", HOST, self.port)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        if self._broker is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(timeout)
            except Exception as exc:  # shutting down anyway
                log.warning("embedded MQTT broker did not shut down cleanly: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except Exception as exc:
            self._started.set_exception(exc)
            return
        self._started.set_result(True)
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
            # Explicit plugins: anonymous access only, no $SYS chatter, no per-packet logging.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._broker = Broker(config, loop=self._loop)
        await self._broker.start()


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise RuntimeError(
                f"cannot start the embedded MQTT broker: {HOST}:{port} is in use ({exc.strerror}); "
                "set mqtt.port to a free port, or set mqtt.broker to the broker already running there"
            ) from None


def start_embedded_broker(port: int = 1883) -> EmbeddedBroker:
    """Start an amqtt broker on 127.0.0.1:``port`` in its own thread; returns a handle with ``stop()``.

    amqtt is an optional dependency (the ``demo`` extra): a site with a real broker never needs it."""
    try:
        import amqtt  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "mqtt.broker 'embedded' needs the amqtt package, which is not installed: install it with "
            "pip install 'rtaudio[demo]' (tools/dev.sh demo does), or set mqtt.broker to a running broker "
            "such as mosquitto"
        ) from None
    return EmbeddedBroker(port).start()
