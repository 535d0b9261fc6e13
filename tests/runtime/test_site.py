"""The whole daemon: `rtaudio run` as a process, a real mosquitto, a real subscriber.

The broker is stopped for 10 s in the middle of a run: every event must arrive afterwards,
in order, with its original times.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from rtaudio.runtime.publish.messages import load_schema
from tests.helpers import file_device, free_port, iso_seconds, run_rtaudio, spawn_rtaudio, tiny_site, write_pcm
from tests.tinymodel import tone

pytestmark = pytest.mark.integration
SR = 16000
CYCLE_S = 3.0  # the test recording: 1.5 s of 440 Hz, 1.5 s of silence, looped


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    tiny_site(tmp_path, "bursts.wav", np.concatenate([tone(440, 1.5), np.zeros(int(1.5 * SR), np.float32)]))
    return tmp_path


def start_run(site: Path, port: int, extra: str = "") -> subprocess.Popen[str]:
    config = site / "site.yaml"
    config.write_text(f"""\
site: lab
model: model
sources:
  - {{id: hall, type: file, path: bursts.wav, realtime: true, loop: true}}
events: {{median_windows: 1}}
mqtt: {{broker: 127.0.0.1, port: {port}, health_interval_s: 1, reconnect_max_s: 2, shutdown_flush_s: 10{extra}}}
""")
    return spawn_rtaudio("run", "--config", str(config))


def stop_run(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def test_topics_payloads_and_status(site: Path, mosquitto, make_subscriber) -> None:
    sub = make_subscriber(mosquitto, "rtaudio/#")
    proc = start_run(site, mosquitto.port)
    try:
        assert sub.wait_for(lambda: sub.on("rtaudio/lab/hall/events") and sub.on("rtaudio/lab/health"), timeout=30), proc.stderr
    finally:
        out, err = stop_run(proc)
    status = [(m.payload.decode(), m.retain) for m in sub.on("rtaudio/lab/status")]
    assert status[0][0] == "online" and status[-1][0] == "offline"
    for topic, kind in (("rtaudio/lab/hall/tags", "tags"), ("rtaudio/lab/hall/events", "events"), ("rtaudio/lab/health", "health")):
        for message in sub.on(topic):
            jsonschema.validate(json.loads(message.payload), load_schema(kind))
    tags = [json.loads(m.payload) for m in sub.on("rtaudio/lab/hall/tags")]
    assert tags[0]["model"] == "tiny" and tags[0]["source"] == "hall"
    assert any(t["labels"] and t["labels"][0]["label"] == "tone_440" for t in tags)
    health = json.loads(sub.on("rtaudio/lab/health")[-1].payload)
    assert health["sources"]["hall"]["windows_processed"] > 0 and health["sources"]["hall"]["latency_ms"]["n"] > 0
    assert "tone_440" in out  # the console publisher prints too
    late = make_subscriber(mosquitto, "rtaudio/lab/status")  # retained: a late subscriber sees the last word
    assert late.wait_for(lambda: bool(late.messages)) and late.messages[-1].payload == b"offline"


def test_broker_down_10s_loses_no_event(site: Path, make_mosquitto, make_subscriber) -> None:
    broker = make_mosquitto(persistence=True)  # the subscriber's session survives the restart
    sub = make_subscriber(broker, "rtaudio/lab/+/events", client_id="facility-bms", clean=False, qos=1)
    proc = start_run(site, broker.port)
    try:
        assert sub.wait_for(lambda: len(sub.messages) >= 2, timeout=30)
        broker.stop()
        down_at = time.time()
        time.sleep(10)
        broker.start()
        time.sleep(CYCLE_S * 2)
    finally:
        out, err = stop_run(proc)
    time.sleep(3)  # let the last deliveries land
    events = list({(e["event_id"], e["kind"]): e for e in (json.loads(m.payload) for m in sub.messages)}.values())  # QoS 1 may repeat
    onsets = [e for e in events if e["kind"] == "onset"]
    # Every burst of the looped recording gave one onset and one offset, in order, none missing.
    assert [e["kind"] for e in events] == ["onset", "offset"] * (len(events) // 2) and len(events) % 2 == 0
    assert [e["event_id"] for e in events[0::2]] == [e["event_id"] for e in events[1::2]]
    starts = [iso_seconds(e["onset"]) for e in onsets]
    gaps = np.diff(starts)
    assert np.all(np.abs(gaps - CYCLE_S) < 0.6), gaps  # a lost event would show as a 6 s gap
    during = [e for e in onsets if down_at < iso_seconds(e["onset"]) < down_at + 10]
    assert len(during) >= 2  # events that happened while the broker was down arrived later, with their times
    assert all(iso_seconds(e["published"]) > down_at + 9 for e in during)
    assert starts[-1] > down_at + 10


def test_microphone_through_real_portaudio_to_mqtt(site: Path, tmp_path: Path, mosquitto, make_subscriber) -> None:
    """`rtaudio devices` and `rtaudio run` on a file-backed ALSA capture device (real PortAudio)."""
    env = file_device(tmp_path, write_pcm(tmp_path / "mic.raw", 48000, 3.0, 1000.0))
    devices = run_rtaudio("devices", "--json", env=env, timeout=60)
    assert devices.returncode == 0, devices.stderr
    assert "filemic" in [d["name"] for d in json.loads(devices.stdout)]
    config = site / "mic.yaml"
    config.write_text(f"""\
site: lab
model: model
sources:
  - {{id: desk, type: microphone, device: filemic, sample_rate: 48000}}
mqtt: {{broker: 127.0.0.1, port: {mosquitto.port}, health_interval_s: 1}}
""")
    sub = make_subscriber(mosquitto, "rtaudio/lab/#")
    proc = spawn_rtaudio("run", "--config", str(config), env=env)
    try:

        def heard() -> bool:
            tags = [json.loads(m.payload) for m in sub.on("rtaudio/lab/desk/tags")]
            return any(t["labels"] and t["labels"][0]["label"] == "tone_1000" for t in tags) and bool(sub.on("rtaudio/lab/health"))

        assert sub.wait_for(heard, timeout=30)
    finally:
        stop_run(proc)
    health = json.loads(sub.on("rtaudio/lab/health")[-1].payload)["sources"]["desk"]
    assert health["windows_processed"] > 0 and health["level_dbfs"] > -20  # a 0.3-amplitude tone is about -13 dBFS


def test_rtp_stream_from_real_ffmpeg_to_mqtt(site: Path, mosquitto, make_subscriber) -> None:
    rtp_port = free_port()
    config = site / "rtp.yaml"
    config.write_text(f"""\
site: lab
model: model
sources:
  - {{id: paging, type: rtp, bind: 127.0.0.1, port: {rtp_port}, payload: L16, sample_rate: 48000}}
mqtt: {{broker: 127.0.0.1, port: {mosquitto.port}, health_interval_s: 1}}
""")
    sub = make_subscriber(mosquitto, "rtaudio/lab/#")
    proc = spawn_rtaudio("run", "--config", str(config))
    sender = None
    try:
        time.sleep(2)  # let the receiver bind
        sender = subprocess.Popen(
            [
                "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=1000:sample_rate=48000:duration=6",
                "-ac",
                "1",
                "-c:a",
                "pcm_s16be",
                "-f",
                "rtp",
                f"rtp://127.0.0.1:{rtp_port}",
            ]
        )

        def heard() -> bool:
            events = [json.loads(m.payload) for m in sub.on("rtaudio/lab/paging/events")]
            return any(e["label"] == "tone_1000" and e["kind"] == "onset" for e in events)

        assert sub.wait_for(heard, timeout=30)
    finally:
        if sender is not None:
            sender.wait(30)
        stop_run(proc)
    assert sub.wait_for(lambda: any(json.loads(m.payload)["kind"] == "offset" for m in sub.on("rtaudio/lab/paging/events")), timeout=5)
    health = json.loads(sub.on("rtaudio/lab/health")[-1].payload)["sources"]["paging"]
    assert health["packets_lost"] == 0 and health["windows_processed"] >= 8
