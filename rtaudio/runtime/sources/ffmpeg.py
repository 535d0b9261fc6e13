"""ffmpeg source: anything ffmpeg opens (RTSP cameras, HTTP streams, files), audio track only.

ffmpeg decodes to mono s16le at the model rate on its stdout. The source thread reads it
with ``select`` and a stall watchdog: no bytes for ``stall_timeout_s`` (a hung server, a
half-open TCP connection) kills the process. A dead or killed process is restarted with
exponential backoff, reset after a healthy run; the stream sample counter just continues.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import threading
import time
from collections import deque
from typing import Literal

import numpy as np
from pydantic import Field

from rtaudio.config.base import SourceBase
from rtaudio.runtime.health import SourceHealth
from rtaudio.runtime.sources.base import Sink, Source

log = logging.getLogger(__name__)

HEALTHY_RUN_S = 10.0  # a process still delivering audio this long after its start resets the backoff
EXIT_WAIT_S = 2.0  # after EOF on stdout, how long ffmpeg gets to exit by itself
READ_BYTES = 32768
STDERR_LINES = 20


class FfmpegConfig(SourceBase):
    """``type: ffmpeg``: anything ffmpeg opens (RTSP cameras, HTTP streams, files)."""

    type: Literal["ffmpeg"] = Field(title="Source type")
    url: str = Field(title="Input URL", min_length=1, description="Anything ffmpeg opens: rtsp://, http://, a file path.")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", title="RTSP transport")
    stall_timeout_s: float = Field(
        10.0, title="Stall timeout (s)", gt=0, le=600, description="No audio for this long restarts ffmpeg (also catches half-open TCP)."
    )
    restart_backoff_max_s: float = Field(30.0, title="Longest restart backoff (s)", gt=0, le=600)
    extra_args: list[str] = Field(default_factory=list, title="Extra ffmpeg input options", description="Inserted before -i.")
    ffmpeg: str = Field("ffmpeg", title="ffmpeg executable")


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
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_LINES)

    @property
    def pid(self) -> int | None:
        """Process id of the running ffmpeg, if any (for diagnostics and tests)."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def command(self) -> list[str]:
        """The ffmpeg command line for this source's config."""
        cfg = self.config
        cmd = [cfg.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]
        if cfg.url.lower().startswith(("rtsp://", "rtsps://")):
            cmd += ["-rtsp_transport", cfg.rtsp_transport]
        cmd += [*cfg.extra_args, "-i", cfg.url, "-vn", "-ac", "1", "-ar", str(self.sample_rate), "-f", "s16le", "pipe:1"]
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
            with self._lock:
                if self.stopping.is_set():
                    return None
                self._proc = proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
        last = self.stderr_tail[-1] if self.stderr_tail else "no message"
        if stalled:
            return f"no audio from ffmpeg for {self.config.stall_timeout_s:g} s, killed it (ffmpeg said: {last})"
        if proc.returncode != 0:
            self.health.errors += 1
        return f"ffmpeg exited with code {proc.returncode} (ffmpeg said: {last})"

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

    def _drain_stderr(self, pipe: object) -> None:
        """Keep the latest stderr lines so ffmpeg never blocks on a full pipe."""
        for raw in pipe:  # type: ignore[attr-defined]
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self.stderr_tail.append(line)

    def _close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.kill()
