"""Shared fixtures: a real mosquitto on a free loopback port, and a real paho subscriber.

``mosquitto`` is a started default broker (anonymous, no persistence). ``make_mosquitto``
builds others (TLS listener, password file, persistence). A ``Broker`` can be stopped and
started again on the SAME port, to test reconnects.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``predicate`` every 20 ms until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Broker:
    """A mosquitto process with its own config in ``directory``; restartable on the same port."""

    host = "127.0.0.1"

    def __init__(self, directory: Path, port: int | None = None, listener: Sequence[str] = (),
                 settings: Sequence[str] = (), anonymous: bool = True, persistence: bool = False):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = self.directory / "mosquitto.log"
        self.config_path = self.directory / "mosquitto.conf"
        lines = [
            f"listener {self.port} {self.host}",
            *listener,
            f"allow_anonymous {'true' if anonymous else 'false'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.directory}/",
            f"log_dest file {self.log_path}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            *settings,
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to 'mosquitto' and cannot read tmp files
        self.config_path.write_text("\n".join(lines) + "\n")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        self._process = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}:\n{self.log}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s:\n{self.log}")

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


class Subscriber:
    """A paho client that records every message on ``topic``; ``wait_for`` polls with a timeout.

    ``broker`` is anything with ``host`` and ``port``. With ``clean=False`` and a fixed
    ``client_id`` (MQTT 3.1.1) its session, and the QoS 1 messages queued for it, survive its
    own reconnects and, on a broker with persistence, a broker restart.
    """

    def __init__(self, broker: Broker, topic: str = "#", protocol: int = mqtt.MQTTv311,
                 client_id: str = "", clean: bool = True, qos: int = 1,
                 username: str | None = None, password: str | None = None):
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        kwargs = {} if protocol == mqtt.MQTTv5 else {"clean_session": clean}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs)
        self.client.reconnect_delay_set(1, 1)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, 30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError(f"subscriber could not subscribe to {topic} on port {broker.port}")

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
        return wait_until(predicate, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def make_mosquitto(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Factory of started brokers (keyword arguments as ``Broker``); all stopped at teardown."""
    brokers: list[Broker] = []

    def make(**kwargs: object) -> Broker:
        broker = Broker(tmp_path / f"mosquitto-{len(brokers)}", **kwargs)  # type: ignore[arg-type]
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(make_mosquitto: Callable[..., Broker]) -> Broker:
    """A started anonymous mosquitto on a free 127.0.0.1 port."""
    return make_mosquitto()


@pytest.fixture
def make_subscriber() -> Iterator[Callable[..., Subscriber]]:
    """Factory of connected, subscribed ``Subscriber``s; all closed at teardown."""
    subscribers: list[Subscriber] = []

    def make(broker: Broker, topic: str = "#", **kwargs: object) -> Subscriber:
        subscriber = Subscriber(broker, topic, **kwargs)  # type: ignore[arg-type]
        subscribers.append(subscriber)
        return subscriber

    yield make
    for subscriber in subscribers:
        subscriber.close()


@pytest.fixture(scope="session")
def text_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small fused model WITH caption and audio-text heads, really trained (2 streams, 2 epochs
    on 8 synthetic scenes, ~20 s on an idle CPU) and exported: what the text-head tests run against."""
    from rtaudio.train.config import TrainConfig
    from rtaudio.train.loop import train

    out = tmp_path_factory.mktemp("text_model")
    config = TrainConfig.model_validate({
        "data": {"type": "synthetic", "scenes": 8, "duration_s": 8.0, "seed": 5, "val_fraction": 0.25, "test_fraction": 0.25,
                 "labels": ["knock", "doorbell", "hvac_hum", "water_running", "dog_bark"]},
        "output": str(out), "model": {"streams": ["e2e", "timbre"], "layers": 1}, "epochs": 2, "batch_size": 16,
        "captions": {"batch_size": 4, "tokenizer_size": 200, "max_tokens": 32}, "model_id": "text-test"})
    path = train(config)
    assert path is not None
    return path
