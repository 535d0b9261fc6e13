"""Microphones and multi-channel interfaces through sounddevice/PortAudio.

Several sources may share one device, one channel each: a module-level registry keeps one
``InputStream`` per (device, rate), fans its channels out to the subscribed sources and
closes it when the last one leaves. The PortAudio callback only copies each subscriber's
channel into that subscriber's bounded queue (oldest block dropped and counted when full);
the source thread converts, resamples and emits. Samples travel as int16 (every device
and PortAudio's own conversion support it; half the queue memory of float32). sounddevice is imported lazily, so rtaudio imports
on machines without PortAudio.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from types import ModuleType
from typing import Any, Literal

import numpy as np
from pydantic import Field

from rtaudio.config.base import SampleRate, SourceBase
from rtaudio.runtime.logs import LogLimiter
from rtaudio.runtime.sources.base import Resampler, Source

log = logging.getLogger(__name__)

QUEUE_SECONDS = 2.0  # audio each subscriber may hold before its oldest blocks are dropped
STALL_SECONDS = 5.0  # no block for this long counts as a device failure


class DeviceError(RuntimeError):
    """The configured input device is missing or cannot provide what was asked."""


def _sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing PortAudio into a clear error."""
    try:
        import sounddevice
    except (OSError, ImportError) as exc:  # OSError: the PortAudio library itself is missing
        raise DeviceError(
            f"cannot use audio input devices: {exc}; install PortAudio (Debian/Ubuntu: apt install libportaudio2) and the sounddevice package"
        ) from None
    return sounddevice


def _default_input_index(sd: ModuleType) -> int | None:
    try:
        return int(sd.query_devices(kind="input")["index"])
    except (sd.PortAudioError, ValueError):
        return None


def list_input_devices() -> list[dict[str, Any]]:
    """Every PortAudio device with input channels (for ``rtaudio devices`` and error messages)."""
    sd = _sounddevice()
    default = _default_input_index(sd)
    devices = []
    for info in sd.query_devices():
        if info["max_input_channels"] > 0:
            devices.append(
                {
                    "index": int(info["index"]),
                    "name": info["name"],
                    "hostapi": sd.query_hostapis(info["hostapi"])["name"],
                    "max_input_channels": int(info["max_input_channels"]),
                    "default_samplerate": float(info["default_samplerate"]),
                    "is_default": info["index"] == default,
                }
            )
    return devices


def _describe_devices(devices: list[dict[str, Any]]) -> str:
    if not devices:
        return "no input devices are available (is a sound card or USB microphone connected?)"
    lines = [
        f"  [{d['index']}] {d['name']} ({d['hostapi']}, {d['max_input_channels']} in, {d['default_samplerate']:g} Hz){' default' if d['is_default'] else ''}"
        for d in devices
    ]
    return "available input devices:\n" + "\n".join(lines)


def resolve_device(spec: str | int | None) -> dict[str, Any]:
    """The input device for a config value: an index, a name substring (exact name wins), or None for the default."""
    devices = list_input_devices()
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec)
    if spec is None:
        matches = [d for d in devices if d["is_default"]]
        wanted = "default input device"
    elif isinstance(spec, int):
        matches = [d for d in devices if d["index"] == spec]
        wanted = f"input device index {spec}"
    else:
        exact = [d for d in devices if d["name"].lower() == spec.lower()]
        matches = exact or [d for d in devices if spec.lower() in d["name"].lower()]
        wanted = f"input device matching {spec!r}"
    if len(matches) == 1:
        return matches[0]
    problem = "is ambiguous" if matches else "not found"
    raise DeviceError(f"{wanted} {problem}; {_describe_devices(matches or devices)}")


class _Subscription:
    """One source's view of a shared stream: its channel and its bounded block queue."""

    def __init__(self, channel: int, capacity: int):
        self.channel = channel
        self.stream: _SharedStream | None = None
        self.dropped = 0  # blocks lost: device overflow or a full queue
        self.failure: str | None = None
        self._blocks: deque[tuple[np.ndarray, float]] = deque(maxlen=capacity)
        self._ready = threading.Condition()

    @property
    def depth(self) -> int:
        return len(self._blocks)

    @property
    def capacity(self) -> int:
        return self._blocks.maxlen or 0

    def push(self, block: np.ndarray, capture_time: float, lost: int) -> None:
        """Called from the PortAudio callback: append, dropping the oldest block when full."""
        with self._ready:
            self.dropped += lost + (len(self._blocks) == self._blocks.maxlen)
            self._blocks.append((block, capture_time))
            self._ready.notify()

    def pop(self, timeout: float) -> tuple[np.ndarray, float] | None:
        with self._ready:
            if not self._blocks and self.failure is None:
                self._ready.wait(timeout)
            return self._blocks.popleft() if self._blocks else None

    def fail(self, reason: str) -> None:
        with self._ready:
            self.failure = self.failure or reason
            self._ready.notify()

    def wake(self) -> None:
        with self._ready:
            self._ready.notify()


def _capture_time(time_info: Any, frames: int, rate: float) -> float:
    """Wall-clock time of a block's first sample: PortAudio's ADC time when valid, else now - block."""
    wall = time.time()
    adc, current = time_info.inputBufferAdcTime, time_info.currentTime
    if adc > 0 and current > 0 and 0 <= current - adc < 10:
        return wall - (current - adc)
    return wall - frames / rate


class _SharedStream:
    """One PortAudio InputStream on one device at one rate, fanning channels out to subscriptions."""

    def __init__(self, sd: ModuleType, device: dict[str, Any], rate: int, channels: int, blocksize: int):
        self.device, self.rate, self.channels, self.blocksize = device, rate, channels, blocksize
        self.subscriptions: tuple[_Subscription, ...] = ()  # replaced, never mutated: the callback reads it unlocked
        self.failed = False
        self._closing = False
        self._stream = sd.InputStream(
            device=device["index"],
            samplerate=rate,
            channels=channels,
            blocksize=blocksize,
            dtype="int16",
            callback=self._callback,
            finished_callback=self._finished,
        )
        self._stream.start()

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status and not status.input_overflow:
            self.fail(f"PortAudio reported {status}")
            return
        capture_time = _capture_time(time_info, frames, self.rate)
        lost = int(bool(status.input_overflow))
        for sub in self.subscriptions:
            sub.push(indata[:, sub.channel].copy(), capture_time, lost)

    def _finished(self) -> None:
        if not self._closing:
            self.fail("the input stream stopped")

    def fail(self, reason: str) -> None:
        """Mark the stream dead; every subscriber reopens."""
        self.failed = True
        for sub in self.subscriptions:
            sub.fail(reason)

    def close(self) -> None:
        """Stop and release the device; idempotent."""
        if self._closing:
            return
        self._closing = True
        try:
            self._stream.close(ignore_errors=True)
        except Exception:  # a dying device may fail even to close
            log.debug("closing %s failed", self.device["name"], exc_info=True)


_registry_lock = threading.Lock()
_streams: dict[tuple[int, int], _SharedStream] = {}


def _refresh_portaudio(sd: ModuleType) -> None:
    """Re-scan devices (a USB microphone plugged in later); only safe while no stream is open."""
    if not _streams:
        sd._terminate()
        sd._initialize()


def _subscribe(spec: str | int | None, rate: int | None, channel: int, blocksize: int) -> tuple[_Subscription, int]:
    """Join (or open) the shared stream for a device; returns the subscription and the stream rate."""
    sd = _sounddevice()
    with _registry_lock:
        try:
            device = resolve_device(spec)
        except DeviceError:
            _refresh_portaudio(sd)
            device = resolve_device(spec)
        if channel >= device["max_input_channels"]:
            raise DeviceError(
                f"channel {channel} is not available on [{device['index']}] {device['name']}: "
                f"it has {device['max_input_channels']} input channel(s), 0-{device['max_input_channels'] - 1}"
            )
        rate = rate or int(device["default_samplerate"])
        key = (device["index"], rate)
        shared = _streams.pop(key, None)
        carried: tuple[_Subscription, ...] = ()
        if shared is not None and not shared.failed and channel < shared.channels:
            _streams[key] = shared
        elif shared is not None:  # failed, or too few channels: close, then reopen with every subscriber
            shared.close()
            carried = () if shared.failed else shared.subscriptions
            blocksize = shared.blocksize
        if key not in _streams:
            channels = max([channel] + [sub.channel for sub in carried]) + 1
            try:
                shared = _SharedStream(sd, device, rate, channels, blocksize)
            except Exception as exc:
                for sub in carried:
                    sub.fail(f"reopening with {channels} channels failed: {exc}")
                raise DeviceError(f"cannot open [{device['index']}] {device['name']} at {rate} Hz, {channels} channel(s): {exc}") from None
            _streams[key] = shared
        shared = _streams[key]
        sub = _Subscription(channel, max(4, int(QUEUE_SECONDS * rate / shared.blocksize)))
        for member in carried + (sub,):
            member.stream = shared
        shared.subscriptions = shared.subscriptions + carried + (sub,)
        return sub, rate


def _unsubscribe(sub: _Subscription) -> None:
    """Leave the shared stream; the last subscriber closes it."""
    with _registry_lock:
        shared = sub.stream
        if shared is None:
            return
        shared.subscriptions = tuple(s for s in shared.subscriptions if s is not sub)
        sub.stream = None
        if not shared.subscriptions:
            shared.close()
            key = (shared.device["index"], shared.rate)
            if _streams.get(key) is shared:
                del _streams[key]


class MicrophoneConfig(SourceBase):
    """``type: microphone``: one channel of a PortAudio input device."""

    type: Literal["microphone"] = Field(title="Source type")
    device: str | int | None = Field(None, title="Input device", description="PortAudio device index, or a substring of its name; null for the system default.")
    channel: int = Field(
        0, title="Channel", ge=0, le=63, description="0-based channel of a multi-channel interface; several sources may share one device, one channel each."
    )
    sample_rate: SampleRate | None = Field(
        None, title="Native sample rate (Hz)", description="Rate to open the device at; null uses the device default. Resampled to the model rate."
    )
    blocksize: int = Field(1024, title="Frames per callback", ge=64, le=16384)
    reopen_backoff_max_s: float = Field(30.0, title="Longest reopen backoff (s)", gt=0, le=600)


class MicrophoneSource(Source):
    """A PortAudio input device (or one channel of it), resampled to the model rate."""

    type_key = "microphone"
    config_class = MicrophoneConfig

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sub: _Subscription | None = None

    def run(self) -> None:
        delays = self.backoff(maximum=self.config.reopen_backoff_max_s)
        logs = LogLimiter(log)  # a flapping device reopens every 0.5 s: one line, then a count every 10 s
        attempt = 0
        while not self.stopping.is_set():
            if attempt:
                self.health.restarts += 1
            attempt += 1
            reason: str | None
            try:
                sub, rate = _subscribe(self.config.device, self.config.sample_rate, self.config.channel, self.config.blocksize)
            except DeviceError as exc:
                reason = str(exc)
            except Exception as exc:  # PortAudio itself failing (e.g. re-initialising): retry, never die
                reason = f"{type(exc).__name__}: {exc}"
            else:
                self._sub = sub
                try:
                    reason, got_audio = self._pump(sub, rate)
                finally:
                    self._sub = None
                    _unsubscribe(sub)
                if reason is None:
                    return
                if got_audio:
                    delays = self.backoff(maximum=self.config.reopen_backoff_max_s)
            self.health.errors += 1
            self.health.connected = False
            delay = next(delays)
            logs.warning("reopen", "microphone %s: %s; reopening in %.1f s", self.id, reason, delay)
            if not self.sleep(delay):
                return

    def _pump(self, sub: _Subscription, rate: int) -> tuple[str | None, bool]:
        """Resample and emit blocks until stopping (None) or a device failure (its reason)."""
        resample = Resampler(rate, self.sample_rate)
        fed = produced = counted_drops = 0
        last_capture = float("-inf")
        last_block = time.monotonic()
        stall = max(STALL_SECONDS, 20 * sub.stream.blocksize / rate) if sub.stream else STALL_SECONDS
        while not self.stopping.is_set():
            item = sub.pop(timeout=0.25)
            dropped = sub.dropped
            self.health.packets_lost += dropped - counted_drops
            counted_drops = dropped
            if sub.failure is not None:
                return sub.failure, fed > 0
            if item is None:
                if time.monotonic() - last_block > stall:
                    if sub.stream is not None:
                        sub.stream.fail(f"no audio for {stall:.0f} s")
                    return f"no audio for {stall:.0f} s", fed > 0
                continue
            last_block = time.monotonic()
            block, block_time = item
            out = resample(block.astype(np.float32) / np.float32(32768))
            # the resampler delays its output; keep capture times non-decreasing even when the device outruns the clock
            capture = max(block_time + produced / self.sample_rate - fed / rate, last_capture)
            fed += block.size
            produced += out.size
            if out.size:
                self.emit(out, capture)
                last_capture = capture
        return None, fed > 0

    def _close(self) -> None:
        sub = self._sub
        if sub is not None:
            sub.wake()
