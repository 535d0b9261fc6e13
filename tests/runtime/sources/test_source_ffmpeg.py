"""FfmpegSource against a real ffmpeg: files, HTTP on loopback, killed and stalled processes."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from rtaudio.runtime.sources.ffmpeg import FfmpegConfig as FfmpegSourceConfig
from rtaudio.runtime.sources.ffmpeg import FfmpegSource
from tests.helpers import AudioSink, needs_ffmpeg, peak_hz, wait_until, write_stereo_tone

RATE = 16000


def make(sink: AudioSink, **kwargs) -> FfmpegSource:
    return FfmpegSource(FfmpegSourceConfig(id="cam", type="ffmpeg", **kwargs), RATE, sink)


def gone(pid: int) -> bool:
    """True once ``pid`` no longer exists (killed and reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[type], str]]:
    """Start an HTTP server on a free loopback port with a handler class; yield its base URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(handler: type) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(tmp_path)))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_command_line() -> None:
    rtsp = make(AudioSink(), url="rtsp://cam/stream", extra_args=["-fflags", "nobuffer"]).command()
    assert rtsp[rtsp.index("-rtsp_transport") + 1] == "tcp"
    assert rtsp.index("-rtsp_transport") < rtsp.index("-fflags") < rtsp.index("-i")
    assert rtsp[rtsp.index("-i") + 1] == "rtsp://cam/stream"
    assert rtsp[-8:] == ["-vn", "-ac", "1", "-ar", str(RATE), "-f", "s16le", "pipe:1"]
    assert "-nostdin" in rtsp
    assert "-rtsp_transport" not in make(AudioSink(), url="http://host/a.mp3").command()


@pytest.mark.integration
@needs_ffmpeg
def test_decodes_a_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = AudioSink()
    source = make(sink, url=str(write_stereo_tone(tmp_path / "t.wav", 1.0)))
    source.start()
    # At the end of the file ffmpeg exits 0 and a restart is scheduled (0.5 s backoff): stop then.
    assert wait_until(lambda: source.health.restarts >= 1, 20)
    source.stop()
    assert not source.alive
    audio = sink.audio()
    assert abs(audio.size - RATE) <= 32
    assert abs(peak_hz(audio) - 440) < 2
    assert 0.45 < np.max(np.abs(audio)) < 0.55
    assert any("exited with code 0" in r.getMessage() for r in caplog.records)


@pytest.mark.integration
@needs_ffmpeg
def test_killed_process_is_restarted(tmp_path: Path, serve, caplog: pytest.LogCaptureFixture) -> None:
    write_stereo_tone(tmp_path / "t.wav", 6.0)
    base = serve(SimpleHTTPRequestHandler)
    sink = AudioSink()
    source = make(sink, url=f"{base}/t.wav", extra_args=["-re"])  # -re: paced like a live stream
    source.start()
    try:
        assert wait_until(lambda: sink.samples >= RATE // 2, 20)
        first_pid = source.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        assert wait_until(lambda: source.health.restarts == 1 and source.pid not in (None, first_pid), 20)
        at_restart = sink.samples
        assert wait_until(lambda: sink.samples >= at_restart + RATE // 2, 20), "no data after the restart"
        assert source.health.connected
        second_pid = source.pid
    finally:
        source.stop()
    assert not source.alive
    assert second_pid is not None and wait_until(lambda: gone(second_pid), 5), "ffmpeg outlived stop()"
    assert gone(first_pid)
    assert any("exited with code -9" in r.getMessage() for r in caplog.records)
    assert abs(peak_hz(sink.audio()[-RATE // 2 :]) - 440) < 4


class StallingHandler(SimpleHTTPRequestHandler):
    """Sends the headers and the first part of the file, then hangs with the socket open."""

    release = threading.Event()

    def do_GET(self) -> None:
        body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 4])
        self.wfile.flush()
        self.release.wait(30)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.integration
@needs_ffmpeg
def test_stalled_stream_is_restarted_by_the_watchdog(tmp_path: Path, serve, caplog: pytest.LogCaptureFixture) -> None:
    write_stereo_tone(tmp_path / "t.wav", 4.0)
    base = serve(StallingHandler)
    sink = AudioSink()
    # Small probe, so ffmpeg decodes what it got before the server hangs.
    source = make(sink, url=f"{base}/t.wav", stall_timeout_s=1.5, extra_args=["-probesize", "32", "-analyzeduration", "0"])
    source.start()
    try:
        assert wait_until(lambda: source.pid is not None, 10)
        first_pid = source.pid
        assert wait_until(lambda: sink.samples > 0, 10), "no audio before the stall"
        assert wait_until(lambda: source.health.restarts >= 1, 1.5 + 10), "watchdog did not fire"
        assert wait_until(lambda: gone(first_pid), 5), "the stalled ffmpeg was not killed"
    finally:
        source.stop()
        StallingHandler.release.set()
    assert not source.alive and not source.health.connected
    fired = next(r.created for r in caplog.records if "no audio from ffmpeg for 1.5 s" in r.getMessage())
    before = [(t, b.size) for t, b in zip(sink.arrivals, sink.blocks) if t < fired]
    assert fired - before[-1][0] >= 1.4  # not before the stall timeout
    assert sum(n for _, n in before) < 2 * RATE  # only the part the server sent (1 s of 4 s)


@pytest.mark.integration
def test_missing_ffmpeg_backs_off_without_crashing(caplog: pytest.LogCaptureFixture) -> None:
    source = make(AudioSink(), url="http://127.0.0.1:9/none", ffmpeg="/nonexistent/ffmpeg", restart_backoff_max_s=1.0)
    source.start()
    time.sleep(2.2)  # attempts at about 0, 0.5, 1.5 s
    assert source.alive
    source.stop()
    assert not source.alive
    assert 2 <= source.health.errors <= 5, "no retry, or retries without backoff"
    assert source.health.restarts == source.health.errors - 1
    assert not source.health.connected
    lines = [r.getMessage() for r in caplog.records if "/nonexistent/ffmpeg" in r.getMessage()]
    assert lines and "No such file" in lines[0] and "restarting in 0.5 s" in lines[0]


class FlakyHandler(SimpleHTTPRequestHandler):
    """Answers 503 to the first two requests, then serves files."""

    requests = 0

    def do_GET(self) -> None:
        FlakyHandler.requests += 1
        if FlakyHandler.requests <= 2:
            self.send_error(503)
        else:
            super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.integration
@needs_ffmpeg
def test_backoff_grows_on_failures_and_resets_after_a_healthy_run(
    tmp_path: Path, serve, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rtaudio.runtime.sources.ffmpeg.HEALTHY_RUN_S", 1.0)
    write_stereo_tone(tmp_path / "t.wav", 2.0)
    base = serve(FlakyHandler)
    source = make(AudioSink(), url=f"{base}/t.wav", extra_args=["-re"])
    source.start()
    try:
        assert wait_until(lambda: sum("restarting in" in r.getMessage() for r in caplog.records) >= 3, 20)
    finally:
        source.stop()
    delays = [r.getMessage().rsplit("restarting in ", 1)[1] for r in caplog.records if "restarting in" in r.getMessage()]
    assert delays[:3] == ["0.5 s", "1.0 s", "0.5 s"]  # 503, 503, then a healthy 2 s stream ended
