"""Reload without restart: what a changed site.yaml may change live (pure), streams added and removed in the
pipeline, and the daemon reloading on SIGHUP and ``rtaudio reload`` against a real mosquitto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtaudio.config.site import validate_site
from rtaudio.contract import ModelInfo
from rtaudio.runtime.buffer import RingBuffer, Window
from rtaudio.runtime.events import EventTracker
from rtaudio.runtime.health import Health
from rtaudio.runtime.offline import Collector
from rtaudio.runtime.pipeline import Pipeline, Stream
from rtaudio.runtime.rules import build_rules
from rtaudio.runtime.site import restart_keys
from tests.helpers import Broker, Subscriber, demo_site, run_rtaudio, wait_until

LABELS = ["speech", "dog"]
INFO = ModelInfo(model_id="fake", version="1", labels=LABELS, sample_rate=8000, window_s=0.1, hop_s=0.1, thresholds=[0.5, 0.5], onnx_sha256="0" * 64)
BASE: dict[str, Any] = {"site": "lab", "model": "m", "sources": [{"id": "a", "type": "file", "path": "x.wav"}]}


def test_restart_keys_name_what_only_a_restart_applies() -> None:
    old = validate_site(BASE)
    assert restart_keys(old, validate_site({**BASE, "events": {"labels": {"dog": {"threshold": 0.9}}}, "tags": {"top_k": 2}})) == []
    new = validate_site(
        {**BASE, "mqtt": {"port": 1884}, "window": {"max_batch": 4}, "engine": {"type": "onnxruntime"}, "privacy": {"private_labels": ["speech"]}}
    )
    assert restart_keys(old, new) == ["engine", "window.max_batch", "mqtt.port", "privacy"]
    served = validate_site({**BASE, "http": {"listen": "127.0.0.1:9200"}, "clips": {"dir": "/tmp/c", "labels": ["dog"]}, "health": {"source_silent_s": 5}})
    assert restart_keys(old, served) == ["http", "clips"]  # the health limits are applied live


class Engine:
    description, last_ms = "scripted", 0.1

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {"scores": np.tile(np.array([0.0, 0.9], np.float32), (len(batch), 1))}


def test_a_removed_stream_has_its_open_events_closed_and_an_added_one_is_judged() -> None:
    config = validate_site({**BASE, "mqtt": None, "sources": [*BASE["sources"], {"id": "b", "type": "file", "path": "x.wav"}]})
    rules, health, collector = build_rules(config, INFO), Health(), Collector()

    def stream(sid: str) -> Stream:
        tracker = EventTracker(sid, "fake", LABELS, rules[sid].thresholds(), median_windows=1)
        return Stream(sid, RingBuffer(8000, 800, 800, 8), tracker, health.source(sid), rules=rules[sid])

    a = stream("a")
    pipeline = Pipeline(Engine(), INFO, [a], [collector], health, config.tags, health_interval_s=3600)  # type: ignore[arg-type]
    pipeline.step([(a, Window(np.zeros(800, np.float32), 0, 0.0, 1.0))])
    assert [(e.kind, e.label) for e in collector.events] == [("onset", "dog")]
    a.buffer.write(np.zeros(800, np.float32), 1.0)  # a window delivered before the source stopped is still judged
    pipeline.remove_stream("a")
    onset, offset = collector.events
    assert (offset.kind, offset.event_id, offset.reason) == ("offset", onset.event_id, "reload")
    assert offset.offset_time == pytest.approx(1.1, abs=1e-3)  # the end of the buffered window: it was judged first
    assert pipeline.streams == []
    b = stream("b")
    pipeline.add_stream(b)
    pipeline.step([(b, Window(np.zeros(800, np.float32), 0, 0.0, 1.0))])
    assert collector.events[-1].source_id == "b" and collector.events[-1].kind == "onset"


# ---------------------------------------------------------------- the daemon over a real mosquitto

HA = "homeassistant/binary_sensor/rtaudio_demo"


CAPTIONS = {"every_s": 4}  # the default model has caption heads


def _write(path: Path, broker: Broker, sources: list[str], disabled: tuple[str, ...] = (), **over: Any) -> Path:
    return demo_site(path, broker, sources, disabled, source={"loop": True}, **{"homeassistant": {"discovery": True}, **over})


def _start(tmp_path: Path, config: Path) -> tuple[subprocess.Popen[bytes], Path, dict[str, str]]:
    log_path, env = tmp_path / "rtaudio.log", {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    with log_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rtaudio", "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, log_path, env


def _stop(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    text = log_path.read_text()
    assert proc.returncode == 0 and "Traceback" not in text, text[-3000:]
    return text


def _events(sub: Subscriber, source: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.on(f"rtaudio/demo/{source}/events")]


@pytest.mark.integration
def test_sighup_removes_a_source_and_a_label_clears_their_discovery_and_rtaudio_reload_adds_one(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "mosquitto").start()
    sub = Subscriber(broker, "#")
    config = _write(tmp_path / "site.yaml", broker, ["demo", "hall"], captions=CAPTIONS)
    proc, log_path, env = _start(tmp_path, config)
    try:
        assert sub.wait_for(lambda: _events(sub, "demo"), timeout=90), log_path.read_text()[-3000:]
        label = _events(sub, "demo")[0]["label"]  # the demo's first sound, a steady hum: still open at the reload
        assert sub.wait_for(lambda: any(m.payload for m in sub.on(f"{HA}/hall_{label}/config")) and any(m.payload for m in sub.on(f"{HA}/demo_{label}/config")))
        assert wait_until(lambda: (tmp_path / "rtaudio-demo.pid").exists())
        _write(config, broker, ["demo"], disabled=(label,), window={"max_batch": 4}, health={"source_silent_s": 0.001}, captions=CAPTIONS)
        proc.send_signal(signal.SIGHUP)
        assert sub.wait_for(lambda: any(m.payload == b"" for m in sub.on(f"{HA}/demo_{label}/config")), timeout=20), log_path.read_text()[-3000:]
        assert sub.wait_for(lambda: any(m.payload == b"" for m in sub.on(f"{HA}/hall_{label}/config")))
        assert sub.wait_for(lambda: any(m.payload == b"" for m in sub.on("homeassistant/sensor/rtaudio_demo/hall_level/config")))
        assert sub.wait_for(lambda: [e for e in _events(sub, "demo") if e["kind"] == "offset" and e["label"] == label])
        closed = [e for e in _events(sub, "demo") if e["kind"] == "offset" and e["label"] == label]
        assert closed[0]["reason"] == "reload", closed
        assert sub.wait_for(lambda: [m.payload for m in sub.on(f"rtaudio/demo/demo/state/{label}")][-1:] == [b"OFF"])
        assert sub.wait_for(lambda: all(m.payload == b"OFF" for m in sub.on(f"rtaudio/demo/hall/state/{label}")[-1:]))
        assert any(m.payload for m in sub.on(f"{HA}/demo_speech/config")) and not any(m.payload == b"" for m in sub.on(f"{HA}/demo_speech/config"))
        assert wait_until(lambda: "reload: not applied until a restart: window.max_batch" in log_path.read_text())
        assert proc.poll() is None
        # a removed source is gone from health (so never "silent" to /healthz or the watchdog)
        count = len(sub.on("rtaudio/demo/health"))
        assert sub.wait_for(lambda: len(sub.on("rtaudio/demo/health")) > count, timeout=20)
        assert list(json.loads(sub.on("rtaudio/demo/health")[-1].payload)["sources"]) == ["demo"]
        # the health limits apply live: 1 ms without audio now fails the check (blocks come every ~0.1 s)
        assert sub.wait_for(lambda: any(f["check"] == "source_silent" for m in sub.on("rtaudio/demo/health") for f in json.loads(m.payload)["failing"]))
        mark = len(_events(sub, "hall"))
        sub.messages.clear()
        # rtaudio reload finds the process by its pid file and brings the hall back
        _write(config, broker, ["demo", "hall"], disabled=(label,), window={"max_batch": 4}, captions=CAPTIONS)
        done = run_rtaudio("reload", "--config", str(config), env=env)
        assert done.returncode == 0 and f"pid {proc.pid}" in done.stdout, done.stderr
        assert sub.wait_for(lambda: any(m.payload for m in sub.on("homeassistant/sensor/rtaudio_demo/hall_level/config")), timeout=20)
        assert sub.wait_for(lambda: _events(sub, "hall"), timeout=30), mark
        assert sub.wait_for(lambda: sub.on("rtaudio/demo/hall/caption"), timeout=30)  # the source a reload added is captioned
        assert sub.wait_for(lambda: [json.loads(m.payload)["healthy"] for m in sub.on("rtaudio/demo/health")][-1:] == [True])  # default limits back
        assert proc.poll() is None
    finally:
        text = _stop(proc, log_path)
        sub.close()
        broker.stop()
    assert text.count("not applied until a restart") == 2  # one line per reload
    assert not (tmp_path / "rtaudio-demo.pid").exists()


@pytest.mark.integration
def test_sighup_with_an_invalid_file_logs_one_line_and_keeps_running(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "mosquitto").start()
    sub = Subscriber(broker, "#")
    config = _write(tmp_path / "site.yaml", broker, ["demo"])
    proc, log_path, env = _start(tmp_path, config)
    try:
        assert sub.wait_for(lambda: _events(sub, "demo"), timeout=90), log_path.read_text()[-3000:]
        good = config.read_text()
        config.write_text(good.replace("loop: true", "loop: maybe").replace("health_interval_s: 2", "health_interval_s: -1"))
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload:" in log_path.read_text(), timeout=20)
        lines = [line for line in log_path.read_text().splitlines() if "reload:" in line]
        assert len(lines) == 1 and "not applied, still running with the previous settings" in lines[0] and "and 1 more problem" in lines[0], lines
        done = run_rtaudio("reload", "--config", str(config), env=env)  # the command checks first and signals nothing
        assert done.returncode == 2 and "error:" in done.stderr and "not reloaded" in done.stderr
        health = len(sub.on("rtaudio/demo/health"))
        assert sub.wait_for(lambda: len(sub.on("rtaudio/demo/health")) > health + 1)  # still running and publishing
        assert proc.poll() is None
        config.write_text(good)
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload: " in log_path.read_text() and " applied: 1 source(s) running" in log_path.read_text(), timeout=20)
    finally:
        _stop(proc, log_path)
        sub.close()
        broker.stop()
