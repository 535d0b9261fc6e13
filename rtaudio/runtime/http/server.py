"""The site's small HTTP server: the status page, ``/api/status``, ``/metrics``, ``/healthz``, ``/readyz`` and ``/clips/``.

Standard library only (``ThreadingHTTPServer``, daemon threads). It reads ``Health``,
``HealthChecks`` and ``StatusBoard.snapshot()`` and writes nothing the audio or inference
threads wait on, so a slow or hostile client costs at most one of its own threads. Its work is
bounded: at most ``max_requests`` connections are served at once (the next is answered 503 by one
small rejecter thread, or closed when even that one's queue is full), each socket read or write
times out after ``timeout_s``, only GET and HEAD are allowed, and every body is small or streamed.

Auth: with a token (``http.token`` or ``http.token_file``, read once at start) every route
needs ``Authorization: Bearer TOKEN`` or the token as the basic-auth password, except
``/healthz`` and ``/readyz`` while ``http.health_open`` is true.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hmac
import json
import logging
import os
import queue
import re
import socket
import socketserver
import stat
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder

from rtaudio.config.site import HttpConfig, split_listen
from rtaudio.runtime.checks import HealthChecks
from rtaudio.runtime.health import Health
from rtaudio.runtime.http.metrics import build_registry
from rtaudio.runtime.logs import LogLimiter

if TYPE_CHECKING:  # the status board is the STATUS engineer's module; only its snapshot() is used here
    from rtaudio.runtime.http.status import StatusBoard

log = logging.getLogger(__name__)
ERRORS = LogLimiter(log)  # a failing route polled every second logs once per 10 s, not every request

PAGE = Path(__file__).with_name("page.html")
PLACEHOLDER_PAGE = b"<!doctype html><meta charset=utf-8><title>rtaudio</title><p>rtaudio is running; the status page is not installed.</p>\n"
PAGE_CSP = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; media-src 'self'"
CLIP_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
CLIP_TYPES = {".flac": "audio/flac", ".wav": "audio/wav"}
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
MAX_REQUESTS = 8
TIMEOUT_S = 10.0
REJECT_QUEUE = 32  # connections waiting for their 503; beyond it they are closed at once
CHUNK = 64 * 1024
BUSY_BODY = b"busy: too many requests, retry\n"
BUSY_RESPONSE = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    + f"Content-Length: {len(BUSY_BODY)}\r\n".encode()
    + b"Retry-After: 1\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"
    + BUSY_BODY
)


def bind_address(listen: str) -> tuple[str, int]:
    """``http.listen`` -> (host, port). Port 0 (any free port) is accepted here for tests; the config refuses it."""
    host, _, port = listen.rpartition(":")
    if port == "0":
        return split_listen(f"{host}:1")[0], 0
    return split_listen(listen)


def listen_error(listen: str, exc: OSError) -> str:
    """A clear sentence for a failed bind of ``listen``: what happened and what to change."""
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {listen}: the host does not resolve ({exc.strerror or exc}); set http.listen to an address of this machine"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {listen}: the port is in use by another program (is rtaudio already running?); free it or change http.listen"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {listen}: the host is not an address of this machine; use one of its addresses, 127.0.0.1 or 0.0.0.0"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {listen}: permission denied (ports below 1024 need privileges); use a port above 1023"
    return f"cannot listen on {listen}: {exc.strerror or exc}"


def _listen_oserror(listen: str, exc: OSError) -> OSError:
    """An OSError whose text is ``listen_error``'s sentence alone, keeping the errno."""
    error = OSError(listen_error(listen, exc))
    error.errno = exc.errno
    return error


def _resolve(listen: str) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """``listen`` -> (address family, socket address) to bind: IPv6 for "[::1]:9108", "[::]:9108" and names that resolve only to IPv6."""
    host, port = bind_address(listen)
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return family, tuple(sockaddr)


def probe_listen(listen: str) -> None:
    """Bind ``listen`` and close at once (``rtaudio doctor``); OSError with ``listen_error``'s sentence when it cannot."""
    try:
        family, sockaddr = _resolve(listen)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: a port in TIME_WAIT is free
            sock.bind(sockaddr)
    except OSError as exc:
        raise _listen_oserror(listen, exc) from exc


class _Server(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with the request cap: a thread per connection only while a slot is free."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[Any, ...], family: socket.AddressFamily, app: HttpServer):
        self.address_family = family
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the address (it can hang for seconds on an offline device)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.app._acquire():
            self.app._reject(request)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread, which releases the slot
        except BaseException:
            self.app._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.app._release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("http: connection from %s failed", client_address, exc_info=True)


class HttpServer:
    """The HTTP server of one site; ``start()`` binds at once (OSError naming the address), ``close()`` stops it."""

    def __init__(
        self,
        config: HttpConfig,
        health: Health,
        checks: HealthChecks,
        board: StatusBoard | None = None,
        clips_dir: Path | None = None,
        max_requests: int = MAX_REQUESTS,
        timeout_s: float = TIMEOUT_S,
    ):
        if max_requests < 1 or timeout_s <= 0:
            raise ValueError(f"max_requests {max_requests} must be >= 1 and timeout_s {timeout_s} > 0")
        self.config, self.health, self.checks, self.board = config, health, checks, board
        self.clips_dir = Path(clips_dir) if clips_dir is not None else None
        self.max_requests, self.timeout_s = max_requests, timeout_s
        self.registry = build_registry(health, checks)
        self.token: bytes | None = None
        self.page = PLACEHOLDER_PAGE
        self._rejects: queue.Queue[socket.socket | None] = queue.Queue(REJECT_QUEUE)
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually bound."""
        if self._server is None:
            raise RuntimeError("the HTTP server is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def in_flight(self) -> int:
        """Connections being served now (at most ``max_requests``)."""
        return self._in_flight

    def start(self) -> None:
        """Read the token and the page, bind ``config.listen`` and serve on daemon threads."""
        config = self.config
        try:
            token = config.resolved_token()
        except OSError as exc:
            raise OSError(f"cannot read http.token_file {config.token_file}: {exc.strerror or exc}") from exc
        if not token and (config.token is not None or config.token_file is not None):
            raise ValueError(f"http.{'token' if config.token is not None else f'token_file {config.token_file}'} is empty; give it a token or remove it")
        self.token = token.encode() if token else None
        try:
            self.page = PAGE.read_bytes()
        except OSError:
            self.page = PLACEHOLDER_PAGE
        try:
            family, sockaddr = _resolve(self.config.listen)
            self._server = _Server(sockaddr, family, self)
        except OSError as exc:
            raise _listen_oserror(self.config.listen, exc) from exc
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.25}, name="rtaudio-http", daemon=True),
            threading.Thread(target=self._reject_loop, name="rtaudio-http-busy", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        host, port = self.address
        log.info("HTTP server on http://%s:%d/ (%s)", f"[{host}]" if ":" in host else host, port, "token required" if self.token else "no token")

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, close the socket; requests in progress end on their own (daemon threads)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        try:
            self._rejects.put(None, timeout=timeout)
        except queue.Full:
            pass
        for thread in self._threads:
            thread.join(timeout)

    # ------------------------------------------------------------ the cap

    def _acquire(self) -> bool:
        """Take a request slot if one is free (never waits)."""
        with self._lock:
            if self._in_flight >= self.max_requests:
                return False
            self._in_flight += 1
            return True

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _reject(self, sock: socket.socket) -> None:
        """Hand a connection over the cap to the rejecter thread, or close it when that one is swamped too."""
        try:
            self._rejects.put_nowait(sock)
        except queue.Full:
            _close(sock)

    def _reject_loop(self) -> None:
        """Answer each queued connection 503: read what it sent (briefly), write the answer, close."""
        while (sock := self._rejects.get()) is not None:
            try:
                sock.settimeout(min(1.0, self.timeout_s))
                sock.recv(CHUNK)  # the request head: closing with it unread would reset the connection before the 503 is read
                sock.sendall(BUSY_RESPONSE)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            finally:
                _close(sock)

    # ------------------------------------------------------------ auth

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the token (bearer, or basic with any user name)."""
        if self.token is None:
            return True
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            offered = value.encode()
        elif scheme.lower() == "basic":
            try:
                offered = base64.b64decode(value, validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                return False
        else:
            return False
        return hmac.compare_digest(offered, self.token)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    """One connection: one request (HTTP/1.0), GET or HEAD."""

    server: _Server
    server_version = "rtaudio"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.app.timeout_s)  # every read and write: a silent or stalled client is dropped

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # any other method (POST, PUT, DELETE, OPTIONS, made-up ones): 405, not 501
            return self._not_allowed
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()  # as GET; _send and _clip leave the body out

    def _not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"only GET and HEAD are allowed\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"})

    # ------------------------------------------------------------ routes

    def _route(self) -> None:
        app = self.server.app
        path = urlsplit(self.path).path
        try:
            if not (app.config.health_open and path in ("/healthz", "/readyz")) and not app.authorized(self.headers.get("Authorization")):
                self._send(
                    HTTPStatus.UNAUTHORIZED,
                    b"a token is required: 'Authorization: Bearer TOKEN', or the token as the basic-auth password\n",
                    "text/plain; charset=utf-8",
                    {"WWW-Authenticate": 'Basic realm="rtaudio", charset="UTF-8"'},
                )
            elif path == "/":
                self._send(HTTPStatus.OK, app.page, "text/html; charset=utf-8", {"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"})
            elif path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(HTTPStatus.OK, encoder(app.registry), content_type, {"Cache-Control": "no-store"})
            elif path == "/healthz":
                self._checks(app.checks.failing())
            elif path == "/readyz":
                self._checks(app.checks.unready())
            elif path == "/api/status" and app.board is not None:
                self._json(HTTPStatus.OK, app.board.snapshot())
            elif path.startswith("/clips/") and app.clips_dir is not None:
                self._clip(app.clips_dir, path[len("/clips/") :])
            else:
                self._send(HTTPStatus.NOT_FOUND, f"not found: {path}\n".encode(), "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:
            ERRORS.log(logging.ERROR, f"route {path[:64]}", "http: %s %s failed", self.command, path, exc_info=True)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error (see the rtaudio log)\n", "text/plain; charset=utf-8")

    def _checks(self, checks: list[dict[str, Any]]) -> None:
        status = HTTPStatus.SERVICE_UNAVAILABLE if checks else HTTPStatus.OK
        self._json(status, {"status": "failing" if checks else "ok", "checks": checks})

    def _json(self, status: HTTPStatus, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", {"Cache-Control": "no-store"})

    def _clip(self, clips_dir: Path, name: str) -> None:
        """A clip file: a plain name, a regular file directly in the clips directory, .flac or .wav; one byte range."""
        suffix = os.path.splitext(name)[1].lower()
        file = None
        if CLIP_NAME.match(name) and not name.startswith(".") and suffix in CLIP_TYPES:
            try:  # O_NOFOLLOW: a symlink is refused even if it appears after the name was checked
                file = os.fdopen(os.open(clips_dir / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb")
            except OSError:
                file = None
        if file is not None and not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            file.close()
            file = None
        if file is None:
            self._send(HTTPStatus.NOT_FOUND, b"no such clip\n", "text/plain; charset=utf-8")
            return
        with file:
            size = os.fstat(file.fileno()).st_size
            start, end = 0, size - 1
            status, headers = HTTPStatus.OK, {"Accept-Ranges": "bytes"}
            wanted = _byte_range(self.headers.get("Range"), size)
            if wanted == "unsatisfiable":
                self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
                return
            if isinstance(wanted, tuple):
                start, end = wanted
                status, headers["Content-Range"] = HTTPStatus.PARTIAL_CONTENT, f"bytes {start}-{end}/{size}"
            self._head(status, CLIP_TYPES[suffix], end - start + 1, headers)
            if self.command != "HEAD":
                file.seek(start)
                left = end - start + 1
                while left > 0 and (chunk := file.read(min(CHUNK, left))):
                    self.wfile.write(chunk)
                    left -= len(chunk)

    # ------------------------------------------------------------ writing

    def _head(self, status: HTTPStatus, content_type: str, length: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self._head(status, content_type, len(body), headers)
        if self.command != "HEAD":
            self.wfile.write(body)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=a-b`` / ``a-`` / ``-n`` range -> (first, last) within ``size``; "unsatisfiable"; None for none or one not understood."""
    match = RANGE.match(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # the last n bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else "unsatisfiable"
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return "unsatisfiable" if start >= size else None
    return start, end
