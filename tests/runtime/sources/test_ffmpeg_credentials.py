"""ffmpeg source logins: the URL built with percent-encoded user info, the config's rules, and a real
ffmpeg logging in to a local HTTP server with Basic auth; the password never reaches rtaudio's log."""

from __future__ import annotations

import base64
import io
import logging
import os
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote, unquote, urlsplit

import numpy as np
import pytest
from pydantic import ValidationError

from rtaudio.runtime.sources.ffmpeg import FfmpegConfig, FfmpegSource, url_with_login
from tests.helpers import AudioSink, http_server, needs_ffmpeg, peak_hz, wait_until

RATE = 16000
USER, PASSWORD = "cam user", "p@ss:w/rd"


def test_url_is_built_with_percent_encoded_login() -> None:
    url = url_with_login("rtsp://cam.local:554/stream1?channel=1", USER, PASSWORD)
    assert url == "rtsp://cam%20user:p%40ss%3Aw%2Frd@cam.local:554/stream1?channel=1"
    parts = urlsplit(url)
    assert (unquote(parts.username or ""), unquote(parts.password or "")) == (USER, PASSWORD)
    assert (parts.hostname, parts.port, parts.path) == ("cam.local", 554, "/stream1")
    assert url_with_login("http://[::1]:8080/a.wav", "u", None) == "http://u@[::1]:8080/a.wav"


def test_command_carries_the_password_only_when_given_it() -> None:
    source = FfmpegSource(FfmpegConfig(id="cam", type="ffmpeg", url="rtsp://cam.local/s", username=USER, password=PASSWORD), RATE, AudioSink())
    real = source.command(source.password())
    assert real[real.index("-i") + 1] == "rtsp://cam%20user:p%40ss%3Aw%2Frd@cam.local/s"
    shown = " ".join(source.command())
    assert "rtsp://cam%20user:***@cam.local/s" in shown and "p%40ss" not in shown and PASSWORD not in shown
    assert PASSWORD not in repr(source.config) and PASSWORD not in str(source.config.model_dump())


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"username": "u", "password": "p", "password_file": "pw"}, "password and password_file are both set; give one of them"),
        ({"password": "p"}, "a password needs a username; set username too"),
        ({"url": "rtsp://admin:secret@cam/s", "username": "u"}, "already holds a login"),
        ({"url": "/srv/audio.wav", "username": "u"}, "is not a network URL; expected rtsp://"),
        ({"username": "a:b", "password": "p"}, "contains ':'"),
    ],
)
def test_config_rejects_contradictory_logins(fields: dict[str, str], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem) as caught:
        FfmpegConfig.model_validate({"id": "cam", "type": "ffmpeg", "url": "rtsp://cam/s", **fields})
    assert "secret" not in str(caught.value)  # a URL's own password is masked in the message


def test_password_file_resolves_from_the_site_folder_and_must_exist(tmp_path: Path) -> None:
    (tmp_path / "cam.pw").write_text(PASSWORD + "\n")
    config = FfmpegConfig(id="cam", type="ffmpeg", url="rtsp://cam/s", username=USER, password_file=Path("cam.pw"))
    assert config.resolve_paths(tmp_path, "site.yaml: sources[0]") == []
    assert config.password_file == tmp_path / "cam.pw"
    assert FfmpegSource(config, RATE, AudioSink()).password() == PASSWORD  # trailing newline stripped
    missing = FfmpegConfig(id="cam", type="ffmpeg", url="rtsp://cam/s", username=USER, password_file=Path("gone.pw"))
    assert missing.resolve_paths(tmp_path, "site.yaml: sources[0]") == [
        f"site.yaml: sources[0].password_file: {tmp_path / 'gone.pw'} does not exist; expected a file holding the password"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_password_file_is_reported(tmp_path: Path) -> None:
    secret = tmp_path / "cam.pw"
    secret.write_text(PASSWORD)
    secret.chmod(0)
    config = FfmpegConfig(id="cam", type="ffmpeg", url="rtsp://cam/s", username=USER, password_file=secret)
    assert config.resolve_paths(tmp_path, "s") == [f"s.password_file: {secret} is not readable by this user"]


def wav_bytes(seconds: float = 1.0) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * RATE)) / RATE)).astype("<i2").tobytes())
    return buffer.getvalue()


class BasicAuthHandler(BaseHTTPRequestHandler):
    """Serves a 1 s 440 Hz WAV to ``cam user`` / ``p@ss:w/rd`` only; records every Authorization header."""

    body = wav_bytes()
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        got = self.headers.get("Authorization")
        self.seen.append(got)
        if got != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="camera"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def camera() -> Iterator[str]:
    """A loopback HTTP server requiring Basic auth; yields its base URL."""
    BasicAuthHandler.seen.clear()
    with http_server(BasicAuthHandler) as url:
        yield url


@pytest.mark.integration
@needs_ffmpeg
def test_real_ffmpeg_logs_in_with_an_awkward_password_from_a_file(camera: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = tmp_path / "cam.pw"
    secret.write_text(PASSWORD + "\n")
    sink = AudioSink()
    source = FfmpegSource(FfmpegConfig(id="cam", type="ffmpeg", url=f"{camera}/a.wav", username=USER, password_file=secret), RATE, sink)
    source.start()
    try:
        assert wait_until(lambda: source.health.restarts >= 1, 20)  # the file ends, ffmpeg exits 0
    finally:
        source.stop()
    assert BasicAuthHandler.expected in BasicAuthHandler.seen  # ffmpeg decoded the percent-encoding
    assert abs(sink.audio().size - RATE) <= 32 and abs(peak_hz(sink.audio()) - 440) < 2
    assert PASSWORD not in caplog.text and quote(PASSWORD, safe="") not in caplog.text


@pytest.mark.integration
@needs_ffmpeg
def test_refused_login_is_quoted_with_the_password_masked(camera: str, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "Wr0ng:p@ss"
    source = FfmpegSource(FfmpegConfig(id="cam", type="ffmpeg", url=f"{camera}/a.wav", username=USER, password=wrong), RATE, AudioSink())
    source.start()
    try:
        assert wait_until(lambda: any("401 Unauthorized" in r.getMessage() for r in caplog.records), 20), caplog.text
    finally:
        source.stop()
    (message,) = [r.getMessage() for r in caplog.records if "401 Unauthorized" in r.getMessage()][:1]
    assert f"ffmpeg said: {camera.replace('//', '//cam%20user:***@')}/a.wav: Server returned 401 Unauthorized" in message
    assert wrong not in caplog.text and quote(wrong, safe="") not in caplog.text
    assert source.health.errors >= 1


def test_a_password_file_that_cannot_be_read_at_start_is_retried_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "cam.pw"
    secret.write_bytes(b"\xff\xfe not text")  # passed the config check as a file; unreadable as UTF-8 when ffmpeg is due
    source = FfmpegSource(FfmpegConfig(id="cam", type="ffmpeg", url="rtsp://cam/s", username=USER, password_file=secret), RATE, AudioSink())
    source.start()
    try:
        assert wait_until(lambda: source.health.restarts >= 1, 10)
        assert source.alive  # still retrying with backoff
    finally:
        source.stop()
    assert source.health.errors >= 1
    assert any(f"cannot read password_file {secret}" in r.getMessage() for r in caplog.records)
