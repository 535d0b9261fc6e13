"""Event clips: pre-roll + event + post-roll audio of chosen labels, saved as FLAC or WAV files.

Three threads meet here, and none waits on another's I/O:

- the **source thread** calls ``feed(source_id)``'s writer for every block: an O(block) copy into a
  bounded per-source ring (``pre_s + lag_s`` long) with capture-time anchors;
- the **pipeline thread** calls ``on_event``: an onset of a clipped label queues a clip (bounded job
  queue; full -> the clip is dropped and counted), its offset fixes where the clip ends and returns
  the offset with ``clip`` (file name, start, planned duration);
- the **clip writer thread** drains the rings into the open clips' files as the audio arrives (so an
  event longer than the ring needs no longer ring), waits for the post-roll, writes each clip under
  a hidden temporary name and renames it into place when complete, then applies retention.

Whatever fails (directory missing or unwritable, disk full, ring overrun because the writer fell
behind) costs that clip only: counted in ``SourceHealth.clips_dropped``, one rate-limited log line,
its temporary file removed. See docs/clips.md.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from rtaudio.config.site import ClipsConfig
from rtaudio.runtime.buffer import write_circular
from rtaudio.runtime.events import Event
from rtaudio.runtime.health import Health
from rtaudio.runtime.logs import LogLimiter
from rtaudio.runtime.publish.messages import iso

log = logging.getLogger(__name__)

DEFAULT_LAG_S = 20.0  # how late after capture a sample may still be read: onset decision delay + pipeline backlog + writer lag
DEFAULT_STALL_S = 5.0  # after an offset, wait at most post_s + this for the post-roll (a source that stopped)
MAX_JOBS = 64  # clips queued for the writer and not yet taken
MAX_OPEN = 64  # clips being written at once (beyond: dropped and counted)
POLL_S = 0.02  # writer's poll while clips are open
IDLE_S = 0.5  # writer's wait for a job while none is open
CHUNK_S = 1.0  # the most audio copied out of a ring under its lock at once
MB = 1_000_000  # clips.max_total_mb unit (bytes)
FORMATS = {"flac": ("FLAC", "PCM_16"), "wav": ("WAV", "PCM_16")}

_CORE = r"[A-Za-z0-9_.-]+_\d{8}T\d{6}\.\d{3}_[A-Za-z0-9-]{1,8}\.(?:flac|wav)"
NAME_RE = re.compile(rf"^{_CORE}$")  # every name this recorder gives a clip; retention touches nothing else
TEMP_RE = re.compile(rf"^\.{_CORE}\.part$")  # a clip being written (left behind only by a killed process)


def clip_name(source_id: str, label: str, onset_time: float, event_id: str, fmt: str) -> str:
    """``{source}_{label}_{UTC yyyymmddTHHMMSS.mmm of onset}_{event_id[:8]}.{ext}``, only ``[A-Za-z0-9_.-]``."""
    stamp = datetime.fromtimestamp(onset_time, timezone.utc)
    when = stamp.strftime("%Y%m%dT%H%M%S.") + f"{stamp.microsecond // 1000:03d}"
    short = re.sub(r"[^A-Za-z0-9-]", "-", event_id[:8]) or "0"
    return f"{_safe(source_id)}_{_safe(label)}_{when}_{short}.{fmt}"


def _safe(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_.-]`` made ``-``, never leading with a dot, at most 64 long."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:64]
    return ("-" + cleaned[1:] if cleaned.startswith(".") else cleaned) or "-"


class _Ring:
    """One source's last ``capacity`` samples and their capture times; written by the source thread only.

    Anchors are (stream sample index, capture time) pairs; a block whose time follows from the last
    anchor (within half a sample) adds none, so a steady stream keeps a handful."""

    def __init__(self, sample_rate: int, capacity: int):
        self.sample_rate, self.capacity = sample_rate, capacity
        self.data = np.zeros(capacity, dtype=np.float32)
        self.written = 0  # stream samples ever written
        self.anchors: deque[tuple[int, float]] = deque(maxlen=65536)
        self.first_time: float | None = None  # capture time of the stream's first sample
        self.last_write = 0.0  # monotonic time of the latest block
        self.lock = threading.Lock()

    def write(self, samples: np.ndarray, capture_time: float) -> None:
        """The source thread's writer (``feed``): O(block), never waits on I/O."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        n = samples.size
        if n == 0:
            return
        with self.lock:
            if self.first_time is None:
                self.first_time = capture_time
            if not self.anchors or abs(capture_time - self._extrapolate(self.written)) > 0.5 / self.sample_rate:
                self.anchors.append((self.written, capture_time))
            write_circular(self.data, self.written, samples)
            self.written += n
            oldest = self.written - self.capacity
            while len(self.anchors) > 1 and self.anchors[1][0] <= oldest:
                self.anchors.popleft()  # the next anchor covers every sample still held
            self.last_write = time.monotonic()

    def _extrapolate(self, index: int) -> float:
        a_index, a_time = self.anchors[-1]
        return a_time + (index - a_index) / self.sample_rate

    def end_time(self) -> float:
        """Capture time just past the latest sample (call under ``lock``, with audio written)."""
        return self._extrapolate(self.written)

    def index_of(self, t: float) -> int:
        """The stream sample index at capture time ``t`` (call under ``lock``): from the latest anchor at or
        before ``t``, never past the next anchor (a gap in the stream), never below 0."""
        anchors = list(self.anchors)
        for k in range(len(anchors) - 1, -1, -1):
            a_index, a_time = anchors[k]
            if a_time <= t:
                index = a_index + round((t - a_time) * self.sample_rate)
                if k + 1 < len(anchors):
                    index = min(index, anchors[k + 1][0])
                return max(index, 0)
        a_index, a_time = anchors[0]
        return max(a_index + round((t - a_time) * self.sample_rate), 0)


@dataclass(eq=False)
class _Clip:
    """One clip: planned on the pipeline thread, written on the writer thread."""

    source_id: str
    event_id: str
    label: str
    name: str
    onset_time: float
    start_time: float
    end_time: float | None = None  # set by the offset (pipeline thread), already capped at max_s
    offset_mono: float = 0.0  # monotonic time the offset was seen (the post-roll wait starts then)
    failed: bool = False  # set by the writer: the offset then names no clip
    # writer thread only
    next_index: int = -1  # next stream sample to write (-1: not started)
    frames: int = 0
    handle: Any = None
    temp: Path | None = None


class ClipRecorder:
    """Saves pre-roll + event + post-roll of ``config.labels`` (never of a label in ``private``) per source.

    ``feed(source_id)`` is the source thread's writer, ``on_event`` the pipeline's hook (``EventHook``);
    ``start`` runs retention and the writer thread; ``close`` finishes open clips with the audio there is.
    ``lag_s`` sizes each ring beyond ``pre_s``: it must cover the onset's decision delay (median windows,
    ``min_duration_s``) plus the time the writer may lag behind the audio (a few seconds). Until a clip's
    end is known the writer stays ``lag_s / 2`` behind the newest audio, so a clip does not run past
    ``offset + post_s`` when the offset is decided up to ``lag_s / 2 + post_s`` after its stream time.
    """

    def __init__(
        self,
        config: ClipsConfig,
        sample_rate: int,
        health: Health,
        private: Iterable[str] = (),
        lag_s: float = DEFAULT_LAG_S,
        stall_s: float = DEFAULT_STALL_S,
        max_jobs: int = MAX_JOBS,
    ):
        if sample_rate <= 0:
            raise ValueError(f"sample_rate {sample_rate} is not allowed; expected a positive rate in Hz")
        if lag_s <= 0 or stall_s < 0 or max_jobs < 1:
            raise ValueError(f"lag_s ({lag_s}) must be > 0, stall_s ({stall_s}) >= 0 and max_jobs ({max_jobs}) >= 1")
        self.config, self.sample_rate, self.health, self.stall_s = config, sample_rate, health, stall_s
        self.dir = Path(config.dir)
        self.private = frozenset(private)
        refused = sorted(self.private & set(config.labels))
        if refused:
            log.warning("clips: %s private (privacy.private_labels): never clipped", ", ".join(refused))
        self.labels = frozenset(config.labels) - self.private
        self.capacity = math.ceil((config.pre_s + lag_s) * sample_rate)
        self.holdback = round(lag_s / 2 * sample_rate)  # while the end is unknown, audio this recent stays in the ring only
        self.format, self.subtype = FORMATS[config.format]
        self._rings: dict[str, _Ring] = {}
        self._rings_lock = threading.Lock()
        self._plans: dict[tuple[str, str], _Clip] = {}  # pipeline thread only: clips whose offset is still to come
        self._jobs: queue.Queue[_Clip | None] = queue.Queue(max_jobs)
        self._open: list[_Clip] = []  # writer thread only
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._logs = LogLimiter(log)

    # ------------------------------------------------------------ source threads

    def feed(self, source_id: str) -> Callable[[np.ndarray, float], None]:
        """The writer for ``source_id``'s blocks (mono float32 at ``sample_rate``, first sample captured at
        ``capture_time``); the same ring again for a source id already fed (a restarted source)."""
        with self._rings_lock:
            ring = self._rings.get(source_id)
            if ring is None:
                ring = self._rings[source_id] = _Ring(self.sample_rate, self.capacity)
        return ring.write

    # ------------------------------------------------------------ pipeline thread

    def on_event(self, event: Event) -> Event:
        """Plan a clip at a clipped label's onset; at its offset return the event with ``clip``. Never blocks."""
        if event.label not in self.labels or event.label in self.private:
            return event
        key = (event.source_id, event.event_id)
        if event.kind == "onset":
            self._plan(event, key)
            return event
        clip = self._plans.pop(key, None)
        if clip is None or event.offset_time is None:  # no onset seen here (e.g. reason "restart")
            return event
        end = min(event.offset_time + self.config.post_s, clip.start_time + self.config.max_s)
        clip.offset_mono = time.monotonic()
        clip.end_time = max(end, clip.start_time)  # the writer reads end_time last
        if clip.failed:
            return event
        info = {
            "file": clip.name,
            "start": iso(clip.start_time),
            "duration_s": round(clip.end_time - clip.start_time, 3),
            "pre_s": round(clip.onset_time - clip.start_time, 3),
            "post_s": round(max(clip.end_time - event.offset_time, 0.0), 3),
        }
        return dataclasses.replace(event, clip=info)

    def _plan(self, event: Event, key: tuple[str, str]) -> None:
        ring = self._rings.get(event.source_id)
        first = ring.first_time if ring is not None else None
        start = event.onset_time - self.config.pre_s
        if first is not None:
            start = max(start, min(first, event.onset_time))  # not before the source's first sample
        name = clip_name(event.source_id, event.label, event.onset_time, event.event_id, self.config.format)
        clip = _Clip(event.source_id, event.event_id, event.label, name, event.onset_time, start)
        if len(self._plans) >= MAX_OPEN * 4:
            self._drop(clip, "too_many", "clips: %d clips await their offsets; dropped %s", len(self._plans), name)
            return
        try:
            self._jobs.put_nowait(clip)
        except queue.Full:
            self._drop(clip, "queue", "clips: the writer's queue is full (%d clips); dropped %s", self._jobs.maxsize, name)
            return
        self._plans[key] = clip

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the writer thread (it first applies retention, and removes clips a killed run left half-written)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="clips", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Finish every open and queued clip with the audio there is now, then stop the writer (idempotent)."""
        self._closing.set()
        if self._thread is None:
            return
        try:
            self._jobs.put_nowait(None)  # wake the writer
        except queue.Full:
            pass
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("clips: the writer did not finish within %.1f s; %d clip(s) may be missing", timeout, len(self._open))
        self._logs.flush()

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        self._mkdir()
        self.retention(startup=True)
        while True:
            try:
                job = self._jobs.get(timeout=POLL_S if self._open or self._closing.is_set() else IDLE_S)
            except queue.Empty:
                job = None
            while job is not None or not self._jobs.empty():
                if job is not None:
                    self._take(job)
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    job = None
            closing = self._closing.is_set()
            for clip in list(self._open):
                self._advance(clip, closing)
            if closing and not self._open and self._jobs.empty():
                return

    def _take(self, clip: _Clip) -> None:
        if len(self._open) >= MAX_OPEN:
            self._drop(clip, "too_many", "clips: %d clips are being written; dropped %s", len(self._open), clip.name)
            return
        self._open.append(clip)

    def _advance(self, clip: _Clip, closing: bool) -> None:
        """Write what audio of ``clip`` has arrived; finish it once its end has arrived (or cannot any more)."""
        ring = self._rings.get(clip.source_id)
        try:
            if clip.handle is None:  # at once, so that a directory that cannot be written costs the offset's clip too
                self._create(clip)
            if ring is None:  # a source never fed
                if closing:
                    self._drop(clip, "no_audio", "clips: source %s delivered no audio; dropped %s", clip.source_id, clip.name)
                return
            chunk: np.ndarray | None
            end: int | None
            while True:
                with ring.lock:
                    if ring.written == 0:  # no audio yet
                        chunk, end, final = np.zeros(0, np.float32), (clip.next_index if closing else None), closing
                    else:
                        chunk, end, final = self._slice(clip, ring, closing)
                if chunk is None:
                    self._drop(clip, "overrun", "clips: the audio of %s was overwritten before the writer got to it (writer behind); dropped", clip.name)
                    return
                if chunk.size:
                    self._write(clip, chunk)
                if end is None or clip.next_index < end:
                    if chunk.size:
                        continue  # more has arrived than one chunk
                    return  # wait for more audio
                if final:
                    if clip.next_index > end:
                        late = (clip.next_index - end) / self.sample_rate
                        self._logs.warning(
                            "long", "clips: %s is %.2f s longer than planned: its offset came more than lag_s / 2 + post_s late", clip.name, late
                        )
                    self._finish(clip)
                return
        except (OSError, RuntimeError) as exc:  # sf.LibsndfileError is a RuntimeError
            self._drop(clip, "write", "clips: cannot write %s in %s: %s", clip.name, self.dir, exc)
        except Exception as exc:  # a bug here must cost this clip only, never the writer thread
            self._logs.exception("bug-trace", "clips: unexpected error writing %s", clip.name)
            self._drop(clip, "bug", "clips: dropped %s after an unexpected error: %s", clip.name, exc)

    def _slice(self, clip: _Clip, ring: _Ring, closing: bool) -> tuple[np.ndarray | None, int | None, bool]:
        """Under ``ring.lock``, with audio in the ring: the next chunk of ``clip`` held in the ring (None: overwritten), the clip's
        end index when known (else None) and whether it is final."""
        if clip.next_index < 0:
            clip.next_index = ring.index_of(clip.start_time)
        arrived = ring.end_time()
        cap = clip.start_time + self.config.max_s
        target = cap if clip.end_time is None else min(clip.end_time, cap)
        end: int | None
        if arrived >= target:
            end, final = ring.index_of(target), True
        elif closing or (clip.end_time is not None and time.monotonic() > clip.offset_mono + self.config.post_s + self.stall_s):
            end, final = ring.written, True  # the source stopped: the clip ends where its audio ended
        else:
            end, final = None, False
        upto = ring.written - self.holdback if end is None else min(end, ring.written)
        if clip.next_index < ring.written - self.capacity:
            return None, end, final
        n = max(min(upto - clip.next_index, round(CHUNK_S * self.sample_rate)), 0)
        if n == 0:
            return np.zeros(0, np.float32), end, final
        idx = np.arange(clip.next_index, clip.next_index + n) % self.capacity
        return ring.data[idx], end, final

    def _create(self, clip: _Clip) -> None:
        """Make the directory (again: it may have come back) and the clip's hidden temporary file."""
        self._mkdir(raise_=True)
        clip.temp = self.dir / f".{clip.name}.part"
        clip.handle = sf.SoundFile(str(clip.temp), "w", samplerate=self.sample_rate, channels=1, format=self.format, subtype=self.subtype)

    def _write(self, clip: _Clip, chunk: np.ndarray) -> None:
        pcm = np.clip(np.round(chunk.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
        clip.handle.write(pcm)
        clip.next_index += chunk.size
        clip.frames += chunk.size

    def _finish(self, clip: _Clip) -> None:
        if clip.handle is None or clip.frames == 0:
            self._drop(clip, "no_audio", "clips: no audio arrived for %s; dropped", clip.name)
            return
        handle, clip.handle = clip.handle, None
        handle.close()
        assert clip.temp is not None
        os.replace(clip.temp, self.dir / clip.name)
        clip.temp = None
        self._open.remove(clip)
        self.health.source(clip.source_id).clips_saved += 1
        log.info("clips: saved %s (%.2f s)", clip.name, clip.frames / self.sample_rate)
        self.retention()

    def _drop(self, clip: _Clip, key: str, message: str, *args: object) -> None:
        """Give up ``clip``: count it, log one rate-limited line, remove its temporary file."""
        clip.failed = True
        if clip.handle is not None:
            try:
                clip.handle.close()
            except (OSError, RuntimeError):
                pass
            clip.handle = None
        if clip.temp is not None:
            try:
                clip.temp.unlink(missing_ok=True)
            except OSError as exc:
                self._logs.warning("unlink", "clips: cannot remove %s: %s", clip.temp, exc)
            clip.temp = None
        if clip in self._open:
            self._open.remove(clip)
        self.health.source(clip.source_id).clips_dropped += 1
        self._logs.warning(key, message, *args)

    def _mkdir(self, raise_: bool = False) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if raise_:
                raise
            self._logs.warning("dir", "clips: cannot create %s: %s; clips are dropped until it can be", self.dir, exc.strerror or exc)

    # ------------------------------------------------------------ retention

    def retention(self, startup: bool = False, now: float | None = None) -> int:
        """Delete this recorder's clips (names matching ``NAME_RE``) older than ``max_age_days``, then the
        oldest until the rest fit in ``max_total_mb``; at ``startup`` also half-written ones a killed run
        left. Other files in the directory are never touched. Returns how many files were deleted."""
        now = time.time() if now is None else now
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            self._logs.warning("retention", "clips: cannot list %s for retention: %s", self.dir, exc.strerror or exc)
            return 0
        clips: list[tuple[float, str, int]] = []
        doomed: list[str] = []
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if startup and TEMP_RE.match(entry.name):
                    doomed.append(entry.name)
                elif NAME_RE.match(entry.name):
                    info = entry.stat(follow_symlinks=False)
                    clips.append((info.st_mtime, entry.name, info.st_size))
            except OSError:
                continue
        clips.sort()
        if self.config.max_age_days is not None:
            cutoff = now - self.config.max_age_days * 86400
            doomed += [name for mtime, name, _ in clips if mtime < cutoff]
            clips = [c for c in clips if c[0] >= cutoff]
        if self.config.max_total_mb is not None:
            total, limit = sum(c[2] for c in clips), self.config.max_total_mb * MB
            for _, name, size in clips:
                if total <= limit:
                    break
                doomed.append(name)
                total -= size
        deleted = 0
        for name in doomed:
            try:
                (self.dir / name).unlink()
                deleted += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._logs.warning("retention", "clips: cannot delete %s: %s", self.dir / name, exc.strerror or exc)
        if deleted:
            log.info("clips: retention deleted %d file(s) in %s", deleted, self.dir)
        return deleted
