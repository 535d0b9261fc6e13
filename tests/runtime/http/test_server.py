"""The HTTP server over real sockets with a real client (``urllib.request``): routes, auth,
/healthz and /readyz following a ``HealthChecks``, the clip route, the request cap, IPv6, and bind errors."""

from __future__ import annotations

import base64
import errno
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from rtaudio.config.site import HealthConfig, HttpConfig
from rtaudio.runtime.checks import HealthChecks
from rtaudio.runtime.health import Health
from rtaudio.runtime.http import server as server_module
from rtaudio.runtime.http.server import PAGE_CSP, PLACEHOLDER_PAGE, HttpServer, probe_listen
from rtaudio.runtime.http.status import StatusBoard
from tests.helpers import wait_until

Response = tuple[int, dict[str, str], bytes]


def http_config(listen: str = "127.0.0.1:9108", **fields: Any) -> HttpConfig:
    """A validated HttpConfig, then moved to ``listen`` (port 0: any free port, which the config itself refuses)."""
    return HttpConfig.model_validate({"listen": "127.0.0.1:9108", **fields}).model_copy(update={"listen": listen})


def request(server: HttpServer, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> Response:
    """One request with urllib (the path sent as written, any method): (status, lower-cased headers, body)."""
    host, port = server.address
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers or {}), timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


class Clock:
    """A settable wall clock for HealthChecks."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def serve() -> Iterator[Callable[..., HttpServer]]:
    """Start HttpServers on free loopback ports; each is closed after the test."""
    started: list[HttpServer] = []

    def start(config: HttpConfig | None = None, health: Health | None = None, checks: HealthChecks | None = None, **kwargs: Any) -> HttpServer:
        health = health if health is not None else Health()
        checks = checks if checks is not None else HealthChecks(HealthConfig(), health, mqtt=False)
        server = HttpServer(config or http_config("127.0.0.1:0"), health, checks, **kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def test_routes_answer_with_their_types_and_unknown_paths_and_methods_are_refused(serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_bytes(b"<!doctype html><title>status</title><script>1</script>\n")
    monkeypatch.setattr(server_module, "PAGE", page)
    health = Health(engine="onnxruntime")
    health.source("lobby").windows_processed = 3
    board = StatusBoard("demo", "tiny", health, clock=lambda: 1_700_000_000.0)
    server = serve(health=health, board=board)

    status, headers, body = request(server, "/")
    assert status == 200 and body == page.read_bytes() and headers["content-type"].startswith("text/html")
    assert headers["content-security-policy"] == PAGE_CSP and headers["x-content-type-options"] == "nosniff"

    status, headers, body = request(server, "/api/status")
    assert status == 200 and headers["content-type"] == "application/json" and headers["cache-control"] == "no-store"
    assert json.loads(body) == json.loads(json.dumps(board.snapshot()))

    status, headers, body = request(server, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=") and b'rtaudio_windows_total{source="lobby"} 3.0' in body

    status, headers, body = request(server, "/healthz?verbose=1")  # a query string does not change the route
    assert (status, json.loads(body)) == (200, {"status": "ok", "checks": []})
    assert headers["content-type"] == "application/json" and headers["cache-control"] == "no-store"

    status, headers, body = request(server, "/healthz", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) == len(json.dumps({"status": "ok", "checks": []}))

    assert request(server, "/nope")[0] == 404
    assert request(server, "/metrics/")[0] == 404
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "BREW"):
        status, headers, _ = request(server, "/metrics", method=method)
        assert (status, headers["allow"]) == (405, "GET, HEAD"), method


def test_without_a_board_or_a_page_file(serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(server_module, "PAGE", tmp_path / "absent.html")
    server = serve()
    assert request(server, "/api/status")[0] == 404
    assert request(server, "/clips/a.flac")[0] == 404  # no clips directory
    status, _, body = request(server, "/")
    assert (status, body) == (200, PLACEHOLDER_PAGE)


def test_a_route_that_fails_answers_500_and_the_server_keeps_serving(serve) -> None:
    class BrokenBoard:
        def snapshot(self) -> dict[str, Any]:
            raise RuntimeError("board broke")

    server = serve(board=BrokenBoard())
    assert request(server, "/api/status")[0] == 500
    assert request(server, "/healthz")[0] == 200


def test_token_is_required_as_bearer_or_basic_password_except_on_open_health_routes(serve) -> None:
    server = serve(http_config("127.0.0.1:0", token="s3cret-token"))
    basic = "Basic " + base64.b64encode(b"anyone:s3cret-token").decode()
    for path in ("/", "/metrics", "/api/status", "/clips/a.flac", "/nope"):
        status, headers, _ = request(server, path)
        assert status == 401 and headers["www-authenticate"].startswith('Basic realm="rtaudio"'), path
    assert request(server, "/metrics", headers={"Authorization": "Bearer s3cret-token"})[0] == 200
    assert request(server, "/metrics", headers={"Authorization": basic})[0] == 200
    assert request(server, "/nope", headers={"Authorization": basic})[0] == 404  # past auth, then routed
    wrong = [
        "Bearer s3cret-tokeX",
        "Bearer ",
        "Basic " + base64.b64encode(b"s3cret-token:wrong").decode(),  # the token as the user name is not the password
        "Basic " + base64.b64encode(b"s3cret-token").decode(),  # no colon: no password
        "Basic !!!notbase64",
        "Token s3cret-token",
    ]
    for header in wrong:
        assert request(server, "/metrics", headers={"Authorization": header})[0] == 401, header
    assert request(server, "/healthz")[0] == 200  # health_open (the default)
    assert request(server, "/readyz")[0] == 503  # open too: answered, not refused (the site has not started)

    closed = serve(http_config("127.0.0.1:0", token="s3cret-token", health_open=False))
    assert request(closed, "/healthz")[0] == 401 and request(closed, "/readyz")[0] == 401
    assert request(closed, "/healthz", headers={"Authorization": "Bearer s3cret-token"})[0] == 200


def test_token_file_is_read_once_at_start(serve, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    server = serve(http_config("127.0.0.1:0", token_file=str(token_file)))
    token_file.write_text("second\n")
    assert request(server, "/metrics", headers={"Authorization": "Bearer first"})[0] == 200
    assert request(server, "/metrics", headers={"Authorization": "Bearer second"})[0] == 401
    token_file.write_text("\n")  # an empty token must not turn auth off
    with pytest.raises(ValueError, match="token_file .* is empty"):
        HttpServer(http_config("127.0.0.1:0", token_file=str(token_file)), Health(), HealthChecks(HealthConfig(), Health(), mqtt=False)).start()


def test_healthz_goes_503_naming_the_silent_source_and_back_to_200(serve) -> None:
    clock = Clock(1000.0)
    health = Health(started=1000.0)
    health.source("lobby").last_data = 1000.0
    checks = HealthChecks(HealthConfig(source_silent_s=5), health, mqtt=False, clock=clock)
    server = serve(health=health, checks=checks)

    clock.now = 1004.0
    assert request(server, "/healthz")[0] == 200
    clock.now = 1010.0
    status, _, body = request(server, "/healthz")
    failing = json.loads(body)
    assert status == 503 and failing["status"] == "failing"
    assert [(c["check"], c["source"]) for c in failing["checks"]] == [("source_silent", "lobby")] and "limit 5 s" in failing["checks"][0]["detail"]
    health.source("lobby").last_data = 1009.5  # audio again
    assert request(server, "/healthz")[0] == 200


def test_readyz_follows_start_sources_and_stop(serve) -> None:
    health = Health()
    health.source("lobby")
    checks = HealthChecks(HealthConfig(), health, mqtt=False)
    server = serve(health=health, checks=checks)

    status, _, body = request(server, "/readyz")
    assert status == 503 and [c["check"] for c in json.loads(body)["checks"]] == ["starting"]
    checks.started = True
    status, _, body = request(server, "/readyz")
    assert status == 503 and json.loads(body)["checks"][0] == {"check": "source_waiting", "source": "lobby", "detail": "no audio delivered yet"}
    health.source("lobby").on_samples(np.zeros(160, np.float32))
    assert request(server, "/readyz")[:1] == (200,) and json.loads(request(server, "/readyz")[2]) == {"status": "ok", "checks": []}
    checks.stopping = True
    assert json.loads(request(server, "/readyz")[2])["checks"][0]["check"] == "stopping"


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    """A clips directory with a FLAC and a WAV, plus what must never be served: another suffix, a symlink
    to a file outside, a subdirectory's file, a hidden file; and a WAV outside the directory."""
    directory = tmp_path / "clips"
    (directory / "sub").mkdir(parents=True)
    audio = (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    sf.write(directory / "lobby_20250101T000000_glass_break.flac", audio, 16000)
    sf.write(directory / "b.wav", audio, 16000)
    (directory / "notes.txt").write_text("not audio")
    sf.write(tmp_path / "secret.wav", audio, 16000)
    (directory / "link.wav").symlink_to(tmp_path / "secret.wav")
    sf.write(directory / "sub" / "x.wav", audio, 16000)
    sf.write(directory / ".partial.wav", audio, 16000)
    return directory


def test_clip_route_serves_only_audio_files_directly_in_the_clips_dir(serve, clips: Path) -> None:
    server = serve(clips_dir=clips)
    status, headers, body = request(server, "/clips/lobby_20250101T000000_glass_break.flac")
    assert status == 200 and headers["content-type"] == "audio/flac" and headers["accept-ranges"] == "bytes"
    assert body == (clips / "lobby_20250101T000000_glass_break.flac").read_bytes()
    status, headers, body = request(server, "/clips/b.wav")
    assert (status, headers["content-type"], body) == (200, "audio/wav", (clips / "b.wav").read_bytes())
    refused = [
        "/clips/notes.txt",
        "/clips/link.wav",
        "/clips/sub/x.wav",
        "/clips/.partial.wav",
        "/clips/../secret.wav",
        "/clips/..%2Fsecret.wav",
        "/clips/%2E%2E/secret.wav",
        "/clips/sub%2Fx.wav",
        "/clips/",
        "/clips/missing.flac",
        "/clips/b.wav%00.txt",
    ]
    for path in refused:
        assert request(server, path)[0] == 404, path


def test_clip_route_serves_byte_ranges(serve, clips: Path) -> None:
    server = serve(clips_dir=clips)
    data = (clips / "b.wav").read_bytes()
    size = len(data)
    for header, (first, last) in {
        "bytes=10-19": (10, 19),
        "bytes=100-": (100, size - 1),
        "bytes=-16": (size - 16, size - 1),
        "bytes=0-99999999": (0, size - 1),
    }.items():
        status, headers, body = request(server, "/clips/b.wav", headers={"Range": header})
        assert status == 206 and headers["content-range"] == f"bytes {first}-{last}/{size}", header
        assert body == data[first : last + 1] and int(headers["content-length"]) == last - first + 1, header
    status, headers, _ = request(server, "/clips/b.wav", headers={"Range": f"bytes={size}-"})
    assert (status, headers["content-range"]) == (416, f"bytes */{size}")
    status, _, body = request(server, "/clips/b.wav", headers={"Range": "bytes=0-1,5-6"})  # several ranges: not supported, the whole file
    assert (status, body) == (200, data)
    status, headers, body = request(server, "/clips/b.wav", method="HEAD", headers={"Range": "bytes=0-9"})
    assert (status, headers["content-length"], body) == (206, "10", b"")


def slow_client(server: HttpServer, sent: bytes) -> socket.socket:
    """A connection that sends ``sent`` (an unfinished request, or nothing) and then waits."""
    sock = socket.create_connection(server.address, timeout=10)
    if sent:
        sock.sendall(sent)
    return sock


def test_requests_beyond_the_cap_are_answered_503_at_once(serve) -> None:
    server = serve(max_requests=2, timeout_s=30)
    slow = [slow_client(server, b"GET /healthz HTTP/1.0\r\n") for _ in range(2)]  # no blank line: the head never ends
    try:
        assert wait_until(lambda: server.in_flight == 2, timeout=10)
        status, headers, body = request(server, "/healthz")
        assert (status, headers["retry-after"]) == (503, "1") and body.startswith(b"busy")
        assert server.in_flight == 2
        slow[0].sendall(b"\r\n")  # the first slow client finishes its request and is answered
        assert slow[0].recv(64).startswith(b"HTTP/1.0 200")
        assert wait_until(lambda: server.in_flight == 1, timeout=10)
        assert request(server, "/healthz")[0] == 200
    finally:
        for sock in slow:
            sock.close()


def test_a_silent_client_is_dropped_after_the_socket_timeout(serve) -> None:
    server = serve(max_requests=1, timeout_s=0.3)
    sock = slow_client(server, b"")
    try:
        assert wait_until(lambda: server.in_flight == 1, timeout=10)
        assert wait_until(lambda: server.in_flight == 0, timeout=10)  # the server gave up on it: the slot is free again
        assert sock.recv(64) == b""  # and closed the connection
        assert request(server, "/healthz")[0] == 200
    finally:
        sock.close()


def test_ipv6_loopback(serve) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback on this host: {exc}")
    server = serve(http_config("[::1]:0"))
    host, port = server.address
    assert host == "::1" and port > 0
    assert request(server, "/healthz")[0] == 200


def test_start_names_the_address_when_the_port_is_in_use_or_the_host_is_not_here(serve) -> None:
    first = serve()
    port = first.address[1]
    with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{port}: the port is in use") as busy:
        HttpServer(http_config(f"127.0.0.1:{port}"), Health(), HealthChecks(HealthConfig(), Health(), mqtt=False)).start()
    assert busy.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError, match=r"cannot listen on 192\.0\.2\.1:9108: the host is not an address of this machine"):
        probe_listen("192.0.2.1:9108")  # TEST-NET-1: never this machine's


def test_close_stops_listening(serve) -> None:
    server = serve()
    address = server.address
    server.close()
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=2).close()
    server.close()  # twice is harmless
