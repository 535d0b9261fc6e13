"""The tests' shared plain helpers: waiting, ports, a restartable mosquitto and a paho subscriber,
audio files and sinks, the ``rtaudio`` command line, a tiny site directory, training clips.

Fixtures built on these live in ``conftest.py``; test modules import what they call from here
(``from tests.helpers import ...``), never from ``conftest.py`` (pytest imports that under its
own module name, so importing it again makes a second copy) nor from another test module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import soundfile as sf
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from rtaudio.contract import ModelDir
from tests.tinymodel import make_tiny_model, tone

REPO = Path(__file__).resolve().parents[1]  # the repository root (engines/, config/, tools/)

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")

# ---------------------------------------------------------------- waiting, ports, times


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0) -> bool:
    """Poll ``predicate`` every 20 ms until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def free_port(udp: bool = False) -> int:
    """A TCP (or, with ``udp``, UDP) port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def iso_seconds(stamp: str) -> float:
    """An ISO 8601 UTC time as the payloads write it ("...Z") -> Unix seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- MQTT: mosquitto and a subscriber


class Broker:
    """A mosquitto process with its own config in ``directory``; restartable on the same port.

    ``users`` ({name: password}) writes a password file with ``mosquitto_passwd`` and turns
    anonymous access off."""

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        listener: Sequence[str] = (),
        settings: Sequence[str] = (),
        anonymous: bool = True,
        persistence: bool = False,
        users: Mapping[str, str] | None = None,
    ):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = self.directory / "mosquitto.log"
        self.config_path = self.directory / "mosquitto.conf"
        if users:
            passwords = self.directory / "passwd"
            for i, (name, password) in enumerate(users.items()):
                subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(passwords), name, password], check=True)
            settings, anonymous = [*settings, f"password_file {passwords}"], False
        lines = [
            f"listener {self.port} {self.host}",
            *listener,
            f"allow_anonymous {'true' if anonymous else 'false'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.directory}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            *settings,
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to 'mosquitto' and cannot read tmp files
        self.config_path.write_text("\n".join(lines) + "\n")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        self._process = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

    def __init__(
        self,
        broker: Any,
        topic: str = "#",
        protocol: int = mqtt.MQTTv311,
        client_id: str = "",
        clean: bool = True,
        qos: int = 1,
        username: str | None = None,
        password: str | None = None,
    ):
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

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0) -> bool:
        return wait_until(predicate, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------- audio: files, a source's sink, pitch

NATIVE_RATE = 44100


def write_stereo_tone(path: Path, seconds: float, fmt: str | None = None, subtype: str | None = None, right: float = 1.0) -> Path:
    """A 0.5-amplitude 440 Hz tone, stereo at 44.1 kHz, the right channel ``right`` times the left;
    ``fmt``/``subtype`` as soundfile's (None: from the suffix, 16-bit PCM for WAV)."""
    t = np.arange(int(seconds * NATIVE_RATE)) / NATIVE_RATE
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(str(path), np.stack([left, right * left], axis=1), NATIVE_RATE, format=fmt, subtype=subtype)
    return path


def peak_hz(audio: np.ndarray, rate: int = 16000, last: int | None = None) -> float:
    """The strongest frequency of ``audio`` (of its ``last`` samples when given), Hann-windowed."""
    x = audio[-last:] if last else audio
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate / x.size)


class AudioSink:
    """A source's sink: keeps every block, its capture time and the wall time it arrived (thread-safe)."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.capture_times: list[float] = []
        self.arrivals: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, samples: np.ndarray, capture_time: float) -> None:
        with self.lock:
            self.blocks.append(samples.copy())
            self.capture_times.append(capture_time)
            self.arrivals.append(time.time())

    @property
    def samples(self) -> int:
        with self.lock:
            return sum(b.size for b in self.blocks)

    def audio(self) -> np.ndarray:
        with self.lock:
            return np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.float32)


def write_pcm(path: Path, rate: int, seconds: float, *channels: np.ndarray | float) -> Path:
    """Headerless int16 little-endian PCM; each channel a sine frequency (Hz) or an int16 array."""
    t = np.arange(int(rate * seconds)) / rate
    columns = [c if isinstance(c, np.ndarray) else (0.3 * np.sin(2 * np.pi * c * t) * 32767) for c in channels]
    np.stack(columns, axis=1).astype("<i2").tofile(path)
    return path


def file_device(tmp_path: Path, infile: Path) -> dict[str, str]:
    """An environment whose ALSA has ``filemic`` (and ``default``) reading ``infile`` (see
    shared/testing/virtual-microphone.md): a capture device for real PortAudio without a sound card."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(f"""
pcm.filemic {{
  type file
  slave.pcm "null"
  file "/dev/null"
  infile "{infile}"
  format "raw"
  hint {{ show on description "file-backed test microphone" }}
}}
pcm.!default {{ type plug slave.pcm "filemic" }}
""")
    return {**os.environ, "HOME": str(home)}


# ---------------------------------------------------------------- the command line and a site directory


def run_rtaudio(*args: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``python -m rtaudio ARGS`` to the end, output captured as text."""
    return subprocess.run([sys.executable, "-m", "rtaudio", *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def spawn_rtaudio(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """``python -m rtaudio ARGS`` started, stdout and stderr piped as text."""
    return subprocess.Popen([sys.executable, "-m", "rtaudio", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def tiny_site(root: Path, clip: str = "clip.wav", audio: np.ndarray | None = None, rate: int = 16000) -> ModelDir:
    """A site directory: the tiny model in ``root/model`` and ``root/clip`` holding ``audio``
    (default 1 s of 440 Hz at 16 kHz); the site.yaml is the test's. Returns the model."""
    root.mkdir(parents=True, exist_ok=True)
    model = make_tiny_model(root / "model")
    sf.write(root / clip, tone(440, 1.0) if audio is None else audio, rate)
    return model


# ---------------------------------------------------------------- training data

TRAIN_RATE = 16000
TONES = {"low": 300.0, "high": 2500.0, "mid": 1000.0}


def write_labelled_tone(path: Path, labels: list[str], seconds: float = 0.7, rate: int = TRAIN_RATE, seed: int = 0) -> Path:
    """A WAV of the ``TONES`` of ``labels`` over faint noise."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    for label in labels:
        x += 0.3 * np.sin(2 * np.pi * TONES[label] * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), rate)
    return path


def tone_manifest(root: Path, names: tuple[str, ...] = ("low", "high"), clips: int = 16) -> Path:
    """Tone WAVs (two sample rates, various lengths) and a manifest with train and val rows."""
    rows = ["path,labels,split"]
    combos = [[names[0]], [names[1]], list(names)]
    for i in range(clips):
        labels = combos[i % 3]
        write_labelled_tone(root / "wav" / f"c{i}.wav", labels, seconds=0.4 + 0.1 * (i % 4), rate=(TRAIN_RATE, 22050)[i % 2], seed=i)
        rows.append(f"wav/c{i}.wav,{';'.join(labels)},{'val' if i % 4 == 0 else 'train'}")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    return root / "m.csv"


def tiny_config(root: Path, manifest: Path, **over: object) -> dict:
    """A training config for ``manifest`` small enough for a test (one e2e stream, 2 epochs)."""
    config = {
        "data": {"type": "manifest", "path": str(manifest)},
        "output": str(root / "out"),
        "model": {"streams": ["e2e"], "layers": 1, "n_mels": 32, "window_s": 0.5, "hop_s": 0.25},
        "schedule": {"type": "staged", "stream_epochs": 1},
        "epochs": 2,
        "batch_size": 4,
        "augment": {"mixup_alpha": 0.4, "balanced": True},
        "lr": 3e-3,
    }
    config.update(over)
    return config


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server on a free loopback port serving ``handler``; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def demo_site(
    path: Path, broker: Broker, sources: Sequence[str] = ("demo",), disabled: Sequence[str] = (), source: Mapping[str, Any] | None = None, **over: Any
) -> Path:
    """Write a site.yaml at ``path``: each of ``sources`` a file source playing config/demo.flac (with the
    ``source`` options, e.g. ``loop`` or ``realtime``) through engines/default to ``broker``, the
    ``disabled`` labels off, a quiet console, health every 2 s; ``over`` replaces top-level keys."""
    data: dict[str, Any] = {
        "site": "demo",
        "model": str(REPO / "engines" / "default"),
        "sources": [{"id": sid, "type": "file", "path": str(REPO / "config" / "demo.flac"), **(source or {})} for sid in sources],
        "events": {"labels": {label: {"enabled": False} for label in disabled}},
        "console": {"tags": False, "events": False, "captions": False},
        "mqtt": {"broker": broker.host, "port": broker.port, "health_interval_s": 2},
    }
    data.update(over)
    path.write_text(yaml.safe_dump(data))
    return path


def quick_bench(model: Path, out: Path, max_batch: int) -> int:
    """``rtaudio bench`` in-process, engine timing only (ONNX Runtime CPU, 0.02 s per point, no capacity search
    or yardsticks), JSON to ``out``; the exit code."""
    from rtaudio.cli import main

    return main(
        ["bench", "--model", str(model), "--backends", "onnxruntime-cpu", "--max-batch", str(max_batch), "--seconds", "0.02"]
        + ["--skip-capacity", "--skip-yardsticks", "--json", str(out)]
    )
