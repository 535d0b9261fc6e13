"""Why ffmpeg stopped: its last meaningful stderr lines (not the banner, listings or progress) in the
log, from a bounded ring; with a real ffmpeg failing on a bad file and on a stream cut short."""

from __future__ import annotations

import io
import logging
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest

from rtaudio.runtime.sources.ffmpeg import STDERR_LINE_CHARS, STDERR_LINES, FfmpegConfig, FfmpegSource, meaningful, quote_stderr
from tests.helpers import AudioSink, http_server, needs_ffmpeg, wait_until

RATE = 16000

# What ffmpeg 5.1 writes with -loglevel info for an HTTP stream cut short (addresses varied).
INFO_TRANSCRIPT = """\
ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026 the FFmpeg developers
  built with gcc 12 (Debian 12.2.0-14+deb12u1)
  libavutil      57. 28.100 / 57. 28.100
[http @ 0x557c776b1180] Stream ends prematurely at 16011, should be 64044
    Last message repeated 1 times
Input #0, wav, from 'http://127.0.0.1:35877/a.wav':
  Duration: 00:00:02.00, bitrate: 256 kb/s
  Stream #0:0: Audio: pcm_s16le ([1][0][0][0] / 0x0001), 16000 Hz, mono, s16, 256 kb/s
Stream mapping:
Output #0, s16le, to 'pipe:1':
  Metadata:
    encoder         : Lavf59.27.100
Press [q] to stop, [?] for help
http://127.0.0.1:35877/a.wav: corrupt input packet in stream 0
[pcm_s16le @ 0x557c776c0980] Invalid PCM packet, data has size 1 but at least a size of 2 was expected
Error while decoding stream #0:0: Invalid data found when processing input
http://127.0.0.1:35877/a.wav: Input/output error
size=      16kB time=00:00:00.49 bitrate= 256.0kbits/s speed= 432x
frame=    0 fps=0.0 q=-0.0 size=       0kB time=00:00:00.00 bitrate=N/A speed=   0x
video:0kB audio:16kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 0.000000%
Exiting normally, received signal 15.

"""


def test_noise_is_dropped_and_errors_are_kept_tidied() -> None:
    kept = [line for line in map(meaningful, INFO_TRANSCRIPT.splitlines()) if line is not None]
    assert kept == [
        "[http] Stream ends prematurely at 16011, should be 64044",
        "http://127.0.0.1:35877/a.wav: corrupt input packet in stream 0",
        "[pcm_s16le] Invalid PCM packet, data has size 1 but at least a size of 2 was expected",
        "Error while decoding stream #0:0: Invalid data found when processing input",
        "http://127.0.0.1:35877/a.wav: Input/output error",
    ]
    long = meaningful("x" * 10_000)
    assert long is not None and len(long) == STDERR_LINE_CHARS and long.endswith("...")


def test_quote_is_the_last_three_distinct_lines_oldest_first() -> None:
    assert quote_stderr(["a", "b", "c", "d", "c", "d"]) == "ffmpeg said: b | c | d"
    assert quote_stderr(["only"]) == "ffmpeg said: only"
    assert quote_stderr([]) == "ffmpeg printed no error message"


def test_stderr_ring_is_bounded_and_splits_progress_lines() -> None:
    source = FfmpegSource(FfmpegConfig(id="cam", type="ffmpeg", url="x.wav"), RATE, AudioSink())
    flood = b"".join(b"[aac @ 0x1] error %d\n" % i for i in range(5000))
    progress = b"size=  1kB time=00:00:01.00 bitrate=1k speed=1x\rsize=  2kB time=00:00:02.00 bitrate=1k speed=1x\rreal error\r\n"
    endless = b"y" * 1_000_000  # one line without an end: read in 4 KiB pieces, each cut to STDERR_LINE_CHARS
    source._drain_stderr(io.BytesIO(endless + b"\n" + flood + progress))
    assert len(source.stderr_tail) == STDERR_LINES
    assert all(len(line) <= STDERR_LINE_CHARS for line in source.stderr_tail)
    assert source.stderr_tail[-1] == "real error" and source.stderr_tail[-2] == "[aac] error 4999"


def first_restart_reason(source: FfmpegSource, caplog: pytest.LogCaptureFixture) -> str:
    """Run ``source`` until it logs its first restart (20 s at most), stop it, and return that log line."""
    source.start()
    try:
        assert wait_until(lambda: any("restarting in" in r.getMessage() for r in caplog.records), 20)
    finally:
        source.stop()
    return [r.getMessage() for r in caplog.records if "restarting in" in r.getMessage()][0]


@pytest.mark.integration
@needs_ffmpeg
def test_real_ffmpeg_on_a_bad_file_quotes_its_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio\n" * 100)
    reason = first_restart_reason(FfmpegSource(FfmpegConfig(id="cam", type="ffmpeg", url=str(bad)), RATE, AudioSink()), caplog)
    assert reason.startswith("source cam: ffmpeg exited with code 1 (ffmpeg said: ")
    assert f"{bad}: Invalid data found when processing input" in reason


class CutShortHandler(BaseHTTPRequestHandler):
    """Announces a 2 s WAV, sends a quarter of it and closes: a camera stream dropping."""

    def do_GET(self) -> None:
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(RATE)
            out.writeframes((3000 * np.sin(np.arange(2 * RATE) * 2 * np.pi * 440 / RATE)).astype("<i2").tobytes())
        body = buffer.getvalue()
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 4])
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def cut_short() -> Iterator[str]:
    with http_server(CutShortHandler) as url:
        yield f"{url}/a.wav"


@pytest.mark.integration
@needs_ffmpeg
@pytest.mark.parametrize("loglevel", ["error", "info"])
def test_real_ffmpeg_stream_cut_short_quotes_the_errors_not_the_statistics(cut_short: str, loglevel: str, caplog: pytest.LogCaptureFixture) -> None:
    """At ``-loglevel info`` (an operator debugging through extra_args) ffmpeg's last lines are
    progress and statistics; the log quotes the errors before them instead."""
    caplog.set_level(logging.INFO)
    sink = AudioSink()
    source = FfmpegSource(FfmpegConfig(id="cam", type="ffmpeg", url=cut_short, extra_args=["-loglevel", loglevel]), RATE, sink)
    reason = first_restart_reason(source, caplog)
    assert reason.startswith("source cam: ffmpeg exited with code 0 (ffmpeg said: ")
    assert reason.endswith(f"{cut_short}: Input/output error); restarting in 0.5 s")  # the last error, not the statistics after it
    assert 1 <= reason.count(" | ") <= 2  # two or three lines, as this ffmpeg build words it
    for noise in ("video:0kB", "size=", "encoder", "Stream mapping", "Duration:", "Guessed Channel Layout", " @ 0x"):
        assert noise not in reason
    assert sink.samples > 0  # the quarter that came was decoded
