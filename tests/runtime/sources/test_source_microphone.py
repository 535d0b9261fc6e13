"""MicrophoneSource through real sounddevice -> PortAudio -> ALSA, fed by a file-backed capture device.

ALSA's ``type file`` device reads raw PCM from a file (see shared/testing/virtual-microphone.md);
each probe runs in a fresh process whose HOME holds the test's ``.asoundrc``. That device
does not pace: it delivers far faster than real time, so every run also overloads the source.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rtaudio.runtime.sources import microphone
from tests.helpers import file_device, peak_hz, write_pcm

PROBE = Path(__file__).with_name("mic_probe.py")


def probe(tmp_path: Path, env: dict[str, str], **spec) -> dict:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, str(PROBE), json.dumps({"out": str(out), **spec})], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["data"] = {sid: dict(np.load(out / f"{sid}.npz")) for sid in result.get("sources", {})}
    return result


def assert_clock_monotonic(data: dict) -> None:
    assert np.all(np.diff(data["times"]) >= 0), "capture times went backwards"
    assert np.all(np.diff(data["counters"]) > 0), "sample counter did not increase"


# ---------------------------------------------------------------- integration: real PortAudio


@pytest.mark.integration
def test_list_input_devices_and_resolution_errors(tmp_path):
    env = file_device(tmp_path, write_pcm(tmp_path / "mic.raw", 16000, 1, 440))
    result = probe(tmp_path, env, mode="devices", resolve=["filemic", "FILEMIC", "ilemi", "nosuch", 99, "f"])
    devices = {d["name"]: d for d in result["devices"]}
    filemic = devices["filemic"]
    assert filemic["hostapi"] == "ALSA" and filemic["max_input_channels"] >= 2 and filemic["default_samplerate"] > 0
    assert [d["name"] for d in result["devices"] if d["is_default"]] == ["default"]
    resolved = result["resolve"]
    assert resolved["filemic"] == resolved["FILEMIC"] == resolved["ilemi"] == filemic["index"]
    listing = f"[{filemic['index']}] filemic (ALSA, {filemic['max_input_channels']} in, {filemic['default_samplerate']:g} Hz)"
    assert "input device matching 'nosuch' not found; available input devices" in resolved["nosuch"]
    assert listing in resolved["nosuch"] and "default" in resolved["nosuch"]
    assert "input device index 99 not found" in resolved["99"] and listing in resolved["99"]
    assert "is ambiguous" in resolved["f"]  # both filemic and default contain "f"


@pytest.mark.integration
def test_samples_are_the_files_samples(tmp_path):
    ramp = (np.arange(16000 * 3) % 32768).astype(np.int16)  # every sample names its position in the file
    env = file_device(tmp_path, write_pcm(tmp_path / "ramp.raw", 16000, 3, ramp))
    result = probe(tmp_path, env, sources=[{"id": "m", "device": "filemic", "sample_rate": 16000, "blocksize": 1600}], need=16000)
    data, health = result["data"]["m"], result["sources"]["m"]["health"]
    assert data["samples"].size >= 16000 and health["samples"] == result["sources"]["m"]["total"]
    values = np.round(data["samples"] * 32768).astype(np.int64)
    assert np.allclose(values, data["samples"] * 32768)  # exact int16 values, no gain or dither
    start = 0
    for size in data["sizes"]:  # 16k -> 16k: each chunk is one device block, a contiguous piece of the file
        chunk = values[start : start + size]
        start += size
        assert np.all(np.diff(chunk) % 32768 == 1), "a block is not a contiguous piece of the file"
    assert_clock_monotonic(data)
    assert result["streams_after_stop"] == 0 and not result["sources"]["m"]["alive_after_stop"]


@pytest.mark.integration
@pytest.mark.parametrize("file_rate, configured", [(48000, 48000), (44100, None)], ids=["48k-configured", "device-default-rate"])
def test_resamples_to_model_rate(tmp_path, file_rate, configured):
    env = file_device(tmp_path, write_pcm(tmp_path / "mic.raw", file_rate, 2, 440))
    config = {"id": "m", "device": "ilemi", "sample_rate": configured, "blocksize": file_rate // 10}
    result = probe(tmp_path, env, sources=[config], model_rate=16000, need=32000)
    data = result["data"]["m"]
    assert data["samples"].size >= 32000
    assert abs(peak_hz(data["samples"], 16000, last=8192) - 440) < 5
    assert_clock_monotonic(data)


@pytest.mark.integration
@pytest.mark.parametrize("order", [(1, 0), (0, 1)], ids=["join", "reopen-with-more-channels"])
def test_two_channels_feed_two_sources_from_one_stream(tmp_path, order):
    env = file_device(tmp_path, write_pcm(tmp_path / "stereo.raw", 16000, 3, 440, 1000))
    sources = [{"id": f"ch{c}", "device": "filemic", "channel": c, "sample_rate": 16000, "blocksize": 1600} for c in order]
    # keep_last: the headerless test file reads as interleaved noise while the stream is still
    # open with one channel, so judge each source on what it got after both had joined
    result = probe(tmp_path, env, sources=sources, need=48000, stagger=True, keep_last=True)
    assert abs(peak_hz(result["data"]["ch0"]["samples"], 16000, last=8192) - 440) < 5
    assert abs(peak_hz(result["data"]["ch1"]["samples"], 16000, last=8192) - 1000) < 5
    assert result["max_streams"] == 1  # one PortAudio stream shared by both sources
    assert result["streams_after_stop"] == 0  # closed when the last source stopped
    for sid in ("ch0", "ch1"):
        assert result["sources"][sid]["health"]["restarts"] == 0  # growing the stream is not a failure


@pytest.mark.integration
def test_queue_stays_bounded_when_device_outruns_consumer(tmp_path):
    env = file_device(tmp_path, write_pcm(tmp_path / "mic.raw", 16000, 3, 440))
    config = {"id": "m", "device": "filemic", "sample_rate": 16000, "blocksize": 1600}
    result = probe(tmp_path, env, sources=[config], need=16000, duration=1.5, sink_delay=0.002)
    health = result["sources"]["m"]["health"]
    assert result["queue_capacity"] == int(microphone.QUEUE_SECONDS * 16000 / 1600)
    assert 0 < result["max_queue_depth"] <= result["queue_capacity"]
    assert health["packets_lost"] > 0  # the dropped blocks are counted
    assert result["rss_growth"] < 20 * 2**20  # the device delivered hundreds of MB; memory did not follow
    assert health["errors"] == 0 and health["restarts"] == 0
    assert_clock_monotonic(result["data"]["m"])


@pytest.mark.integration
def test_reopens_after_the_stream_aborts(tmp_path):
    env = file_device(tmp_path, write_pcm(tmp_path / "mic.raw", 16000, 3, 440))
    config = {"id": "m", "device": "filemic", "sample_rate": 16000, "blocksize": 1600}
    result = probe(tmp_path, env, sources=[config], need=64000, abort_after=16000)
    health = result["sources"]["m"]["health"]
    assert result["samples_at_abort"] is not None
    assert result["sources"]["m"]["total"] >= 64000 > result["samples_at_abort"][0]
    assert health["restarts"] >= 1 and health["errors"] >= 1
    assert any("input stream stopped; reopening in" in line for line in result["logs"])
    assert_clock_monotonic(result["data"]["m"])


@pytest.mark.integration
def test_device_that_appears_later_is_opened(tmp_path):
    late = tmp_path / "late.raw"  # missing at start: ALSA lists filemic without inputs
    env = file_device(tmp_path, late)
    source_file = write_pcm(tmp_path / "mic.raw", 16000, 3, 440)
    config = {"id": "m", "device": "filemic", "sample_rate": 16000, "blocksize": 1600}
    result = probe(tmp_path, env, sources=[config], need=16000, create_file=[str(source_file), str(late), 1.0])  # late enough for a loaded machine
    health = result["sources"]["m"]["health"]
    assert result["sources"]["m"]["total"] >= 16000
    assert health["restarts"] >= 1
    assert any("'filemic' not found" in line for line in result["logs"])
    assert abs(peak_hz(result["data"]["m"]["samples"], 16000, last=8192) - 440) < 5


@pytest.mark.integration
def test_missing_device_is_logged_with_the_device_list_and_retried(tmp_path):
    env = file_device(tmp_path, write_pcm(tmp_path / "mic.raw", 16000, 1, 440))
    config = {"id": "m", "device": "nosuch", "reopen_backoff_max_s": 0.5}
    result = probe(tmp_path, env, sources=[config], duration=1.3)
    health = result["sources"]["m"]["health"]
    assert result["sources"]["m"]["total"] == 0 and not result["sources"]["m"]["alive_after_stop"]
    assert health["errors"] >= 2 and health["restarts"] >= 1 and not health["connected"]
    first = next(line for line in result["logs"] if line.startswith("microphone m:"))
    assert first.startswith("microphone m: input device matching 'nosuch' not found; available input devices")
    assert "filemic (ALSA" in first and "reopening in 0.5 s" in first


# ---------------------------------------------------------------- unit: no PortAudio needed


def test_queue_drops_oldest_and_counts():
    sub = microphone._Subscription(channel=0, capacity=3)
    for i in range(5):
        sub.push(np.full(4, i, np.int16), float(i), lost=0)
    sub.push(np.full(4, 5, np.int16), 5.0, lost=1)  # a device overflow is counted too
    assert sub.depth == sub.capacity == 3
    assert sub.dropped == 2 + 1 + 1
    assert [sub.pop(0.0)[1] for _ in range(3)] == [3.0, 4.0, 5.0]
    assert sub.pop(0.0) is None


class _TimeInfo:
    def __init__(self, adc: float, current: float):
        self.inputBufferAdcTime, self.currentTime = adc, current


def test_capture_time_uses_adc_time_when_valid():
    import time

    before = time.time()
    assert microphone._capture_time(_TimeInfo(100.0, 100.25), 1600, 16000) == pytest.approx(before - 0.25, abs=0.05)
    # no ADC time (0): now minus the block's duration
    assert microphone._capture_time(_TimeInfo(0.0, 0.0), 1600, 16000) == pytest.approx(before - 0.1, abs=0.05)
    # nonsense ADC time (after the current time): same fallback
    assert microphone._capture_time(_TimeInfo(101.0, 100.0), 1600, 16000) == pytest.approx(before - 0.1, abs=0.05)


def test_missing_portaudio_names_libportaudio2(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(microphone.DeviceError, match="libportaudio2"):
        microphone.list_input_devices()
