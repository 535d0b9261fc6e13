"""ffmpeg source: anything ffmpeg opens (RTSP cameras, HTTP streams, files), audio track only.

ffmpeg decodes to mono s16le at the model rate on its stdout. The source thread reads it
with ``select`` and a stall watchdog: no bytes for ``stall_timeout_s`` (a hung server, a
half-open TCP connection) kills the process. A dead or killed process is restarted with
exponential backoff, reset after a healthy run; the stream sample counter just continues.

Why it ended is logged with ffmpeg's last few *meaningful* stderr lines (a bounded ring that
skips banners, stream listings and progress lines). A login (``username``, ``password`` or
``password_file``) goes into the URL percent-encoded, the only way ffmpeg takes RTSP and
HTTP credentials; rtaudio masks the password as ``***`` in everything it logs.
"""

from __future__ import annotations

import logging
import os
import re
import select
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Literal
from urllib.parse import quote

import numpy as np
from pydantic import Field, SecretStr, model_validator

from rtaudio.config.base import SourceBase
from rtaudio.config.loader import resolve_path, secret_value
from rtaudio.runtime.health import SourceHealth
from rtaudio.runtime.sources.base import Sink, Source

log = logging.getLogger(__name__)

HEALTHY_RUN_S = 10.0  # a process still delivering audio this long after its start resets the backoff
EXIT_WAIT_S = 2.0  # after EOF on stdout, how long ffmpeg gets to exit by itself
READ_BYTES = 32768
STDERR_LINES = 20  # meaningful stderr lines kept per run (a ring: the newest win)
STDERR_LINE_CHARS = 400  # longer stderr lines are cut: a hostile server's text stays cheap to keep
QUOTED_LINES = 3  # stderr lines quoted when ffmpeg ends
MASK = "***"

# stderr lines that never say why ffmpeg stopped: the banner, stream listings (indented),
# progress and final statistics, and ffmpeg's generic sign-offs.
_NOISE = re.compile(
    r"^(\s|$)"  # empty, or indented: banner details, Duration/Stream/Metadata listings, "Last message repeated"
    r"|^ffmpeg version |^(Input|Output) #\d|^Stream mapping:|^Press \[q\]|^Guessed Channel Layout"
    r"|^(frame|size)=\s*\S+.*time="  # progress
    r"|^video:\S+ audio:\S+"  # final statistics
    r"|^Exiting normally|^Conversion failed!$"
)
_ADDRESS = re.compile(r" @ 0x[0-9a-fA-F]+\]")  # "[http @ 0x55d0c1a2]" -> "[http]"
_USERINFO_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]*@")  # scheme://user:PASSWORD@


class FfmpegConfig(SourceBase):
    """``type: ffmpeg``: anything ffmpeg opens (RTSP cameras, HTTP streams, files)."""

    type: Literal["ffmpeg"] = Field(title="Source type")
    url: str = Field(
        title="Input URL",
        min_length=1,
        description="Anything ffmpeg opens: rtsp://, http://, a file path. Put a login in username/password, not in the URL.",
    )
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", title="RTSP transport")
    username: str | None = Field(
        None, title="Username", min_length=1, description="Login for an rtsp:// or http(s):// URL; rtaudio adds it to the URL, percent-encoded."
    )
    password: SecretStr | None = Field(
        None,
        title="Password",
        description="Use ${ENV} substitution or password_file; never commit it. Any character may be used (it is percent-encoded). "
        "rtaudio's logs and messages show it as ***. What stays visible: ffmpeg takes RTSP credentials only inside the URL "
        "(and HTTP's alternative, -headers, is a command-line argument too), so while ffmpeg runs, the URL with the password "
        "is in its command line (ps, /proc/PID/cmdline), readable by every local user unless /proc is mounted with hidepid=2 "
        "or rtaudio runs in its own container.",
    )
    password_file: Path | None = Field(
        None,
        title="File holding the password",
        description="Relative to the config file; keep it private (mode 0600 or 0640). Read at every ffmpeg start, so a changed password is picked up.",
    )
    stall_timeout_s: float = Field(
        10.0, title="Stall timeout (s)", gt=0, le=600, description="No audio for this long restarts ffmpeg (also catches half-open TCP)."
    )
    restart_backoff_max_s: float = Field(30.0, title="Longest restart backoff (s)", gt=0, le=600)
    extra_args: list[str] = Field(default_factory=list, title="Extra ffmpeg input options", description="Inserted before -i.")
    ffmpeg: str = Field("ffmpeg", title="ffmpeg executable")

    @model_validator(mode="after")
    def _login(self) -> FfmpegConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("password and password_file are both set; give one of them")
        if (self.password is not None or self.password_file is not None) and self.username is None:
            raise ValueError("a password needs a username; set username too")
        if self.username is None:
            return self
        if ":" in self.username:
            raise ValueError(f"username {self.username!r} contains ':', which a login cannot carry; expected a user name without ':'")
        scheme, sep, rest = self.url.partition("://")
        if not sep:
            raise ValueError(f"username is set but url {self.url!r} is not a network URL; expected rtsp://, rtsps:// or http(s)://")
        if "@" in rest.split("/", 1)[0]:
            raise ValueError(f"url {redact_url(self.url)!r} already holds a login; with username/password give the url without 'user@'")
        return self

    def resolve_paths(self, base: Path, where: str) -> list[str]:
        if self.password_file is None:
            return []
        self.password_file = resolve_path(base, self.password_file)
        if not self.password_file.is_file():
            return [f"{where}.password_file: {self.password_file} does not exist; expected a file holding the password"]
        if not os.access(self.password_file, os.R_OK):
            return [f"{where}.password_file: {self.password_file} is not readable by this user"]
        return []


def url_with_login(url: str, username: str, password: str | None) -> str:
    """``url`` with ``username[:password]@`` inserted after the scheme, both percent-encoded
    (so ``@``, ``:`` and ``/`` in a password cannot break the URL); ffmpeg decodes them."""
    scheme, _, rest = url.partition("://")
    login = quote(username, safe="") + ("" if password is None else ":" + quote(password, safe=""))
    return f"{scheme}://{login}@{rest}"


def redact_url(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced by ``***``."""
    return _USERINFO_PASSWORD.sub(rf"\1{MASK}@", text)


def meaningful(line: str) -> str | None:
    """A stderr line worth quoting, tidied (no object addresses, cut to a bounded length), or None for noise."""
    if _NOISE.match(line):
        return None
    line = _ADDRESS.sub("]", line.rstrip())
    return line if len(line) <= STDERR_LINE_CHARS else line[: STDERR_LINE_CHARS - 3] + "..."


def quote_stderr(lines: list[str] | deque[str], count: int = QUOTED_LINES) -> str:
    """The last ``count`` distinct lines, oldest first, for a log message."""
    picked: list[str] = []
    for line in reversed(lines):
        if line not in picked:
            picked.append(line)
            if len(picked) == count:
                break
    if not picked:
        return "ffmpeg printed no error message"
    return "ffmpeg said: " + " | ".join(reversed(picked))


class FfmpegSource(Source):
    """Runs one ffmpeg process at a time and emits its decoded audio.

    ``_close`` (any thread) kills the process, which unblocks ``run``; ``_lock`` keeps a
    process from being started after ``stop``.
    """

    type_key = "ffmpeg"
    config_class = FfmpegConfig
    config: FfmpegConfig

    def __init__(self, config: FfmpegConfig, sample_rate: int, sink: Sink, health: SourceHealth | None = None):
        super().__init__(config, sample_rate, sink, health)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_LINES)  # meaningful lines of the current run, password masked
        self._secrets: list[str] = []  # the password as given and as encoded, masked in stderr lines

    @property
    def pid(self) -> int | None:
        """Process id of the running ffmpeg, if any (for diagnostics and tests)."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def password(self) -> str | None:
        """The password from the config or its file (read now: a rotated file is picked up); OSError if unreadable."""
        return secret_value(self.config.password, self.config.password_file)

    def command(self, password: str | None = None) -> list[str]:
        """The ffmpeg command line for this source's config; with a login, the URL carries
        ``password`` (pass None for a command line safe to log: the password shows as ``***``)."""
        cfg = self.config
        cmd = [cfg.ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error"]
        if cfg.url.lower().startswith(("rtsp://", "rtsps://")):
            cmd += ["-rtsp_transport", cfg.rtsp_transport]
        url = cfg.url
        if cfg.username is not None:
            if password is not None:
                url = url_with_login(url, cfg.username, password)
            elif cfg.password is not None or cfg.password_file is not None:
                url = redact_url(url_with_login(url, cfg.username, "x"))
            else:
                url = url_with_login(url, cfg.username, None)
        cmd += [*cfg.extra_args, "-i", url, "-vn", "-ac", "1", "-ar", str(self.sample_rate), "-f", "s16le", "pipe:1"]
        return cmd

    def run(self) -> None:
        delays = self.backoff(maximum=self.config.restart_backoff_max_s)
        first = True
        while not self.stopping.is_set():
            if not first:
                self.health.restarts += 1
            first = False
            began = time.time()
            reason = self._run_once()
            self.health.connected = False
            if reason is None:  # stopping
                return
            if self.health.last_data - began >= HEALTHY_RUN_S:
                delays = self.backoff(maximum=self.config.restart_backoff_max_s)
            delay = next(delays)
            log.warning("source %s: %s; restarting in %.1f s", self.id, reason, delay)
            if not self.sleep(delay):
                return

    def _run_once(self) -> str | None:
        """Start ffmpeg and pump its audio until it ends or stalls; why it ended, None if stopping."""
        self.stderr_tail.clear()
        try:
            password = self.password()
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8 text
            self.health.errors += 1
            return f"cannot read password_file {self.config.password_file} ({getattr(exc, 'strerror', None) or exc})"
        self._secrets = [password, quote(password, safe="")] if password else []
        try:
            with self._lock:
                if self.stopping.is_set():
                    return None
                self._proc = proc = subprocess.Popen(self.command(password), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            self.health.errors += 1
            return f"cannot run ffmpeg executable {self.config.ffmpeg!r} ({exc.strerror}); set 'ffmpeg' to its path"
        assert proc.stdout is not None and proc.stderr is not None
        stderr_reader = threading.Thread(target=self._drain_stderr, args=(proc.stderr,), name=f"ffmpeg-stderr-{self.id}", daemon=True)
        stderr_reader.start()
        stalled = True  # until _pump says otherwise: on any error, kill at once
        try:
            stalled = self._pump(proc.stdout.fileno())
        finally:
            with self._lock:  # from here on only this thread signals and reaps the process
                self._proc = None
            if not stalled:  # stdout closed: let ffmpeg finish exiting and report its code
                try:
                    proc.wait(EXIT_WAIT_S)
                except subprocess.TimeoutExpired:
                    pass
            proc.kill()
            proc.wait()
            stderr_reader.join(2.0)
            proc.stdout.close()
            proc.stderr.close()
        if self.stopping.is_set():
            return None
        said = quote_stderr(list(self.stderr_tail))
        if stalled:
            return f"no audio from ffmpeg for {self.config.stall_timeout_s:g} s, killed it ({said})"
        if proc.returncode != 0:
            self.health.errors += 1
        return f"ffmpeg exited with code {proc.returncode} ({said})"

    def _pump(self, fd: int) -> bool:
        """Emit audio from ``fd`` until EOF (False) or ``stall_timeout_s`` without bytes (True)."""
        timeout = self.config.stall_timeout_s
        last_data = time.monotonic()
        carry = b""  # an odd byte left over between reads
        while True:
            left = last_data + timeout - time.monotonic()
            if left <= 0:
                return True
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(fd, READ_BYTES)
            if not chunk:
                return False
            last_data = time.monotonic()
            data = carry + chunk
            usable = len(data) - len(data) % 2
            carry = data[usable:]
            if usable:
                samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
                self.emit(samples, time.time() - samples.size / self.sample_rate)

    def _drain_stderr(self, pipe: IO[bytes]) -> None:
        """Keep the latest meaningful stderr lines (masked) so ffmpeg never blocks on a full pipe.

        Reads at most 4 KiB per line and splits progress lines on ``\\r``: memory stays bounded
        whatever ffmpeg (or a server it quotes) writes."""
        while raw := pipe.readline(4096):
            for part in raw.decode("utf-8", "replace").split("\r"):
                line = meaningful(part)
                if line is not None:
                    self.stderr_tail.append(self._mask(line))

    def _mask(self, text: str) -> str:
        """``text`` with the source's password (as given and percent-encoded) and any URL password shown as ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return redact_url(text)

    def _close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.kill()
