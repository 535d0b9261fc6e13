"""The command line: offline tagging, run on file sources without MQTT, version, devices."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_rtaudio, spawn_rtaudio, tiny_site
from tests.tinymodel import tone, white_noise

SR = 16000


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    silence = np.zeros(SR, np.float32)
    # 0-1 s silence, 1-4 s 440 Hz, 4-5 s silence, 5-8 s noise, 8-9 s silence; at 44.1 kHz stereo
    audio = np.concatenate([silence, tone(440, 3.0), silence, white_noise(3.0), silence])
    import soxr

    wide = soxr.resample(audio, SR, 44100)
    tiny_site(root, "scene.flac", np.stack([wide, wide], axis=1), 44100)
    return root


def test_version() -> None:
    from rtaudio import __version__

    assert run_rtaudio("--version").stdout.strip() == f"rtaudio {__version__}"


def test_tag_json_lines_have_times_and_events(site: Path) -> None:
    result = run_rtaudio("tag", str(site / "scene.flac"), "--model", str(site / "model"), "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    tags = [r for r in lines if r["type"] == "tags"]
    assert len(tags) == 17  # (9 s - 1 s window) / 0.5 s hop + 1
    top = {round(t["start"], 1): t["labels"][0]["label"] for t in tags if t["labels"]}
    assert top[2.0] == "tone_440" and top[6.0] == "noise"
    events = [(r["kind"], r["label"]) for r in lines if r["type"] == "event"]
    assert events == [("onset", "tone_440"), ("offset", "tone_440"), ("onset", "noise"), ("offset", "noise")]
    offsets = {r["label"]: r for r in lines if r["type"] == "event" and r["kind"] == "offset"}
    assert 0.5 <= offsets["tone_440"]["onset_time"] <= 1.5 and 3.5 <= offsets["tone_440"]["offset_time"] <= 4.6
    assert 4.5 <= offsets["noise"]["onset_time"] <= 5.5


def test_tag_table_and_unreadable_file(site: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    result = run_rtaudio("tag", str(site / "scene.flac"), str(bad), "--model", str(site / "model"))
    assert result.returncode == 1
    assert "tone_440" in result.stdout and "events:" in result.stdout
    assert f"{bad}: cannot read audio" in result.stderr


def test_tag_refuses_bad_model_dir(tmp_path: Path) -> None:
    result = run_rtaudio("tag", "x.wav", "--model", str(tmp_path))
    assert result.returncode == 2 and "has no model.json" in result.stderr


def test_run_file_source_without_mqtt_prints_tags_and_exits_at_end(site: Path) -> None:
    config = site / "run.yaml"
    config.write_text("site: t\nmodel: model\nmqtt: null\nsources:\n  - {id: f, type: file, path: scene.flac, realtime: false}\n")
    result = run_rtaudio("run", "--config", str(config), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "tone_440" in result.stdout and "noise" in result.stdout
    assert "every source has ended" in result.stderr


def test_sigterm_stops_cleanly_with_exit_0(site: Path) -> None:
    config = site / "loop.yaml"
    config.write_text("site: t\nmodel: model\nmqtt: null\nsources:\n  - {id: f, type: file, path: scene.flac, loop: true}\n")
    proc = spawn_rtaudio("run", "--config", str(config))
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping" in err


def test_run_config_error_exits_2_and_starts_nothing(site: Path) -> None:
    config = site / "bad.yaml"
    config.write_text("site: t\nmodel: model\nsources:\n  - {id: f, type: file, path: scene.flac, relatime: false}\n")
    result = run_rtaudio("run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {config}:4: sources[0].relatime: unknown key; allowed keys: id, enabled, gain_db, calibration_db, min_level_db, silent_after_s, labels, events, when, type, path, realtime, loop, block_s; did you mean 'realtime'?"
    ]


def test_log_format_json(site: Path) -> None:
    config = site / "json.yaml"
    config.write_text("site: t\nmodel: model\nmqtt: null\nsources:\n  - {id: f, type: file, path: scene.flac, realtime: false}\n")
    result = run_rtaudio("--log-format", "json", "run", "--config", str(config))
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
