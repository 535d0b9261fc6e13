"""FileSource: decoding, mixing, resampling, pacing, looping, backpressure, bad files."""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from rtaudio.runtime.buffer import RingBuffer
from rtaudio.runtime.sources.file import FileConfig as FileSourceConfig
from rtaudio.runtime.sources.file import FileSource
from tests.helpers import AudioSink, peak_hz, wait_until, write_stereo_tone

RATE = 16000
# A 440 Hz tone, stereo at 44.1 kHz, the right channel quieter, so mixing is exercised.
write_tone = partial(write_stereo_tone, right=0.5)


def make(path: Path, sink, **kwargs) -> FileSource:
    return FileSource(FileSourceConfig(id="f", type="file", path=path, **kwargs), RATE, sink)


def run_to_end(source: FileSource, timeout: float = 20.0) -> float:
    begin = time.monotonic()
    source.start()
    source._thread.join(timeout)
    assert not source.alive, "file source did not finish"
    return time.monotonic() - begin


@pytest.mark.parametrize("fmt,subtype,name", [("WAV", "PCM_16", "t.wav"), ("FLAC", None, "t.flac"), ("OGG", "VORBIS", "t.ogg")])
def test_decodes_mixes_and_resamples(tmp_path: Path, caplog: pytest.LogCaptureFixture, fmt: str, subtype: str | None, name: str) -> None:
    path = write_tone(tmp_path / name, 1.0, fmt, subtype)
    sink = AudioSink()
    source = make(path, sink, realtime=False)
    with caplog.at_level(logging.INFO):
        run_to_end(source)
    audio = sink.audio()
    assert abs(audio.size - RATE) <= 2
    assert abs(peak_hz(audio) - 440) < 2
    assert 0.3 < np.max(np.abs(audio[1000:-1000])) < 0.45  # mean of 0.5 and 0.25 amplitude
    assert not source.health.connected
    assert [r for r in caplog.records if "end of" in r.getMessage()]


def test_capture_clock_follows_samples(tmp_path: Path) -> None:
    sink = AudioSink()
    before = time.time()
    run_to_end(make(write_tone(tmp_path / "t.wav", 1.0), sink, realtime=False))
    first = sink.capture_times[0]
    assert before <= first <= time.time()
    offset = 0
    for block, capture_time in zip(sink.blocks, sink.capture_times):
        assert capture_time == pytest.approx(first + offset / RATE, abs=1e-6)
        offset += block.size


def test_realtime_takes_the_file_duration(tmp_path: Path) -> None:
    sink = AudioSink()
    elapsed = run_to_end(make(write_tone(tmp_path / "t.wav", 1.0), sink, block_s=0.1))
    assert elapsed >= 0.8
    assert abs(sink.samples - RATE) <= 2


def test_not_realtime_is_not_paced(tmp_path: Path) -> None:
    sink = AudioSink()
    elapsed = run_to_end(make(write_tone(tmp_path / "t.wav", 10.0), sink, realtime=False))
    assert elapsed < 5.0  # half the file's duration: it was not paced
    assert abs(sink.samples - 10 * RATE) <= 2


def test_loop_delivers_more_than_the_file(tmp_path: Path) -> None:
    sink = AudioSink()
    source = make(write_tone(tmp_path / "t.wav", 0.5), sink, realtime=False, loop=True)
    source.start()
    wait_until(lambda: sink.samples >= 3 * RATE, 10)
    assert source.alive
    source.stop()
    assert not source.alive
    assert sink.samples >= 3 * RATE
    assert abs(peak_hz(sink.audio()[: 3 * RATE]) - 440) < 2  # seamless: still one clean tone


def pending(ring: RingBuffer) -> int:
    """Complete windows the reader has not taken yet."""
    total = (ring.written - ring.window) // ring.hop + 1 if ring.written >= ring.window else 0
    return total - ring.emitted - ring.dropped


def test_ready_hook_applies_backpressure(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "t.wav", 3.0)
    ring = RingBuffer(RATE, window=8000, hop=4000, max_backlog=2)
    source = make(path, ring.write, realtime=False, block_s=0.1)
    source.ready = lambda: pending(ring) < ring.max_backlog
    windows = []
    source.start()
    while source.alive or pending(ring):
        windows += ring.due_windows()
        time.sleep(0.02)  # a slow reader
    assert ring.dropped == 0
    assert len(windows) == (3 * RATE - 8000) // 4000 + 1
    assert [w.end_index for w in windows] == list(range(8000, 3 * RATE + 1, 4000))


def test_without_hook_a_slow_reader_drops(tmp_path: Path) -> None:
    """The control for the test above: the same reader, no hook, windows are lost."""
    ring = RingBuffer(RATE, window=8000, hop=4000, max_backlog=2)
    run_to_end(make(write_tone(tmp_path / "t.wav", 3.0), ring.write, realtime=False, block_s=0.1))
    ring.due_windows()
    assert ring.dropped > 0


@pytest.mark.parametrize("content", [None, b"RIFF\x00\x00 this is not audio at all" * 10])
def test_bad_file_logs_and_ends(tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes | None) -> None:
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    sink = AudioSink()
    source = make(path, sink)
    run_to_end(source, timeout=5)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(path) in errors[0] and "WAV, FLAC or OGG" in errors[0]
    assert source.health.errors == 1 and not source.health.connected
    assert sink.samples == 0
