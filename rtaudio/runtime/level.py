"""Sound level per source: an IEC 61672 A-weighting filter and a meter (Leq, Lmax fast, L90) over intervals.

The filter is the standard's analogue A-curve (double poles at 20.6 Hz and 12194 Hz, single poles at
107.7 Hz and 737.9 Hz) mapped by the bilinear transform to the source's sample rate, as three
second-order sections, normalised to 0 dB at 1 kHz, with the high pole re-fitted per sample rate
against the bilinear transform's squeeze near Nyquist (``a_weighting_sos``); which IEC 61672-1
class 2 bands each rate meets is in tests/runtime/test_level.py.

The filter runs without a Python step per sample or per chunk: a fixed dozen matrix products per
pass of up to ``SPAN`` samples. The three sections form one 6-state linear system (s' = A s + B x,
y = C s + D x). A pass lays the samples out as rows of ``CHUNK`` (zero-padded at the end), the rows
in groups of ``GROUP``. One product gives every row's output from its own input (``T``, the row's
lower-triangular impulse-response matrix), one the state each row's input leaves at its end
(``G``); a block lower-triangular matrix in the powers of A^CHUNK turns a group's start state and
its rows' end states into each row's start state, the same one level up (powers of A^(CHUNK GROUP))
gives each group's start state from the incoming one, and each row's start state's response
(``O``) is added. That is the exact recursion in float64 (tests/runtime/test_level.py checks it
against the per-sample one), at about 60 multiply-adds per sample.

The meter's ``feed`` runs on every source thread (inside the pipeline's sink), where the old
per-block metering (a few dozen small numpy calls per 50 ms block, 1.2-2.5 ms of CPU per second
of audio, holding the GIL against the pipeline thread) cost a fifth of the runtime's capacity at
50 sources (docs/BENCHMARKS.md). So ``feed`` only copies the block into a bounded buffer of
``PENDING`` samples; the buffered audio is metered in one go when the buffer is full (on the source
thread), when ``window_level`` is asked (the gate, pipeline thread: the window's samples are
metered first), or when ``take_readings`` finds an interval complete. Readings and window levels
are those of metering block by block; a reading is at most one buffer of audio later.

Everything is bounded: the buffered samples, per-interval sums, the fast levels of the current
interval (one per 10 ms), a short history of 10 ms energies for the ``min_level_db`` gate, and at
most ``MAX_READINGS`` readings not yet taken by the pipeline thread (older ones are dropped and counted).
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

A_POLES_HZ = (20.598997, 107.65265, 737.86223, 12194.217)  # IEC 61672-1 annex E: f1, f2 (fA), f3 (fB), f4
FAST_TAU_S = 0.125  # time weighting F
BIN_S = 0.01  # the fast level is sampled every 10 ms (for Lmax and L90)
CHUNK = 32  # samples per row of the filter's matrix products
GROUP = 16  # rows per group (the filter's second level)
SPAN = 8192  # the most samples one pass of the filter takes (longer blocks go in turns; bounds its matrices)
PENDING = 8192  # samples a meter buffers before metering them (0.51 s at 16 kHz): one pass of the filter
FAST_RUN = 64  # bins whose fast levels one matrix product gives (longer runs go in turns)
FLOOR_MS = 1e-14  # mean square floor (-140 dBFS): digital silence stays a finite number
MAX_READINGS = 64  # readings waiting for the pipeline thread, per source


def a_weighting_analog_db(freqs: np.ndarray | float) -> np.ndarray:
    """The analogue A-weighting curve in dB (IEC 61672-1 annex E, 0 dB at 1 kHz): the reference the filter approximates."""
    f2 = np.square(np.asarray(freqs, dtype=np.float64))
    p1, p2, p3, p4 = (p * p for p in A_POLES_HZ)
    with np.errstate(divide="ignore"):
        ra = p4 * f2 * f2 / ((f2 + p1) * np.sqrt((f2 + p2) * (f2 + p3)) * (f2 + p4))
        return 20 * np.log10(ra) - 20 * np.log10(_ra_1k())


def _ra_1k() -> float:
    f2 = 1000.0**2
    p1, p2, p3, p4 = (p * p for p in A_POLES_HZ)
    return float(p4 * f2 * f2 / ((f2 + p1) * math.sqrt((f2 + p2) * (f2 + p3)) * (f2 + p4)))


@functools.lru_cache(maxsize=8)
def a_weighting_sos(sample_rate: int) -> np.ndarray:
    """Second-order sections ``[3, 6]`` (``b0 b1 b2 a0 a1 a2``, scipy's layout) of the A-weighting filter at ``sample_rate``.

    Bilinear transform of the analogue poles: the four zeros at s = 0 go to z = 1, the two at infinity
    to z = -1; the gain makes the response exactly 0 dB at 1 kHz. The transform squeezes the whole
    analogue axis into 0..Nyquist, which pulls the high roll-off (the 12194 Hz double pole) down into
    the audible band at 8-48 kHz rates; so the digital filter's high pole is re-fitted per rate (a
    one-dimensional search) to the analogue curve from 20 Hz to 0.7 x Nyquist and to pink noise's
    A-weighted level. At 16 kHz that takes the largest deviation below 5.6 kHz from 2.8 dB to 0.3 dB
    and pink noise's from -0.56 dB to -0.15 dB (tests/runtime/test_level.py).
    """
    if sample_rate <= 2000:
        raise ValueError(f"sample rate {sample_rate} Hz is too low for A-weighting (1 kHz must be below Nyquist); expected at least 8000")
    band = np.geomspace(20.0, min(0.7 * sample_rate / 2, 20000.0), 200)
    want = a_weighting_analog_db(band)
    pink = np.linspace(sample_rate / 4000, sample_rate / 2, 4000)  # pink noise: power density 1/f
    pink_want = float(np.sum(np.power(10.0, a_weighting_analog_db(pink) / 10) / pink))

    def error(sos: np.ndarray) -> float:
        band_err = np.max(np.abs(20 * np.log10(np.abs(sos_response(sos, band, sample_rate))) - want))
        pink_err = abs(10 * np.log10(float(np.sum(np.abs(sos_response(sos, pink, sample_rate)) ** 2 / pink)) / pink_want))
        return float(max(band_err, pink_err))

    return min((_bilinear_sos(sample_rate, high) for high in np.geomspace(A_POLES_HZ[3] * 0.8, A_POLES_HZ[3] * 6, 150)), key=error)


def _bilinear_sos(sample_rate: int, high_pole_hz: float) -> np.ndarray:
    """The A-curve's sections by bilinear transform with the high double pole at ``high_pole_hz``, 0 dB at 1 kHz."""
    fs2 = 2.0 * sample_rate
    z1, z2, z3, z4 = ((fs2 - 2 * math.pi * f) / (fs2 + 2 * math.pi * f) for f in (*A_POLES_HZ[:3], high_pole_hz))
    sos = np.array(
        [
            [1.0, -2.0, 1.0, 1.0, -2 * z1, z1 * z1],
            [1.0, -2.0, 1.0, 1.0, -(z2 + z3), z2 * z3],
            [1.0, 2.0, 1.0, 1.0, -2 * z4, z4 * z4],
        ]
    )
    sos[0, :3] /= abs(complex(sos_response(sos, np.array([1000.0]), sample_rate)[0]))
    return sos


def sos_response(sos: np.ndarray, freqs: np.ndarray, sample_rate: int) -> np.ndarray:
    """Complex frequency response of second-order sections at ``freqs`` (Hz)."""
    z = np.exp(-1j * 2 * np.pi * np.asarray(freqs, dtype=np.float64) / sample_rate)  # z^-1
    h = np.ones_like(z)
    for b0, b1, b2, a0, a1, a2 in sos:
        h *= (b0 + b1 * z + b2 * z * z) / (a0 + a1 * z + a2 * z * z)
    return h


def _state_space(sos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(A, B, C, D) of the cascade of transposed direct-form-II sections: s' = A s + B x, y = C s + D x."""
    a_m, b_m, c_m, d = np.zeros((0, 0)), np.zeros(0), np.zeros(0), 1.0
    for b0, b1, b2, _a0, a1, a2 in sos / sos[:, 3:4]:
        a_i = np.array([[-a1, 1.0], [-a2, 0.0]])
        b_i = np.array([b1 - a1 * b0, b2 - a2 * b0])
        c_i = np.array([1.0, 0.0])
        n = a_m.shape[0]
        a_new = np.zeros((n + 2, n + 2))
        a_new[:n, :n] = a_m
        a_new[n:, :n] = np.outer(b_i, c_m)
        a_new[n:, n:] = a_i
        a_m, b_m, c_m, d = a_new, np.concatenate([b_m, b_i * d]), np.concatenate([b0 * c_m, c_i]), b0 * d
    return a_m, b_m, c_m, d


def _block_recursion(step: np.ndarray, count: int) -> np.ndarray:
    """``[(count + 1) n, (count + 1) n]``: ``[s_0, e_0, .., e_{count-1}]`` -> ``[s_0, .., s_count]`` for ``s_{j+1} = step s_j + e_j``.

    Block lower triangular (block ``(j, 0)`` is step^j, block ``(j, i + 1)`` step^(j-1-i) for i < j), so its top-left
    corner of ``(k + 1) n`` rows and columns is the same map for any k <= count."""
    n = step.shape[0]
    powers = [np.eye(n)]
    for _ in range(count):
        powers.append(step @ powers[-1])
    w = np.zeros(((count + 1) * n, (count + 1) * n))
    for j in range(count + 1):
        w[j * n : (j + 1) * n, :n] = powers[j]
        for i in range(j):
            w[j * n : (j + 1) * n, (i + 1) * n : (i + 2) * n] = powers[j - 1 - i]
    return w


class AWeighting:
    """A streaming A-weighting filter (its state carried from block to block); a dozen matrix products per pass."""

    def __init__(self, sample_rate: int, chunk: int = CHUNK, group: int = GROUP, span: int = SPAN):
        if chunk < 1 or group < 1 or span < chunk * group:
            raise ValueError(f"chunk {chunk}, group {group}, span {span}: expected chunk >= 1, group >= 1, span >= chunk x group")
        self.sample_rate, self.chunk, self.group = sample_rate, chunk, group
        self.sos = a_weighting_sos(sample_rate)
        a_m, b_m, c_m, d = _state_space(self.sos)
        order = self._order = a_m.shape[0]
        groups = span // (chunk * group)
        self.span = groups * chunk * group
        powers = [np.eye(order)]
        for _ in range(chunk):
            powers.append(a_m @ powers[-1])
        self._powers = np.stack(powers)  # A^0 .. A^L (a partial last row's end state)
        h = np.array([d] + [c_m @ powers[k - 1] @ b_m for k in range(1, chunk)])
        lag = np.arange(chunk)[None, :] - np.arange(chunk)[:, None]  # [input k, output n]: n - k
        self._tt = np.where(lag >= 0, h[np.clip(lag, 0, None)], 0.0)  # [L, L]: a row's input -> its zero-state output
        self._gt = np.stack([powers[chunk - 1 - k] @ b_m for k in range(chunk)])  # [L, order]: a row's input -> its end state
        self._ot = np.stack([c_m @ powers[k] for k in range(chunk)], axis=1)  # [order, L]: a row's start state -> its output
        rows = _block_recursion(powers[chunk], group)  # within a group: [start, row end states] -> row start states
        self._rows_t = np.ascontiguousarray(rows[: group * order].T)  # [(g + 1) order, g order]
        self._group_end_t = np.ascontiguousarray(rows[group * order :, order:].T)  # [g order, order]: rows' end states -> the group's
        self._groups = _block_recursion(np.linalg.matrix_power(powers[chunk], group), groups)  # the same across groups
        self._buf = np.zeros(self.span)  # the pass's samples as float64, padded to whole groups
        self._z = np.zeros((groups, group + 1, order))  # per group: [start state, each row's zero-state end state]
        self._v = np.zeros((groups + 1, order))  # [incoming state, each group's zero-state end state]
        self._state = np.zeros(order)

    def reset(self) -> None:
        """Forget the past (the state of a fresh filter)."""
        self._state = np.zeros(self._order)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Filter one block (any length); float64 out, the state kept for the next block."""
        x = np.asarray(samples).reshape(-1)
        if x.size <= self.span:
            return self._pass(x)
        return np.concatenate([self._pass(x[i : i + self.span]) for i in range(0, x.size, self.span)])

    def _pass(self, x: np.ndarray) -> np.ndarray:
        """Filter at most ``span`` samples."""
        n, size, group, order = x.size, self.chunk, self.group, self._order
        if not n:
            return np.zeros(0)
        m = -(-n // size)  # rows holding samples
        groups = -(-m // group)
        buf = self._buf[: groups * group * size]
        buf[:n] = x
        buf[n:] = 0.0
        rows = buf.reshape(groups * group, size)
        z, v = self._z[:groups], self._v[: groups + 1]
        z[:, 1:] = (rows @ self._gt).reshape(groups, group, order)  # each row's end state from its own input
        flat = z.reshape(groups, (group + 1) * order)
        v[0] = self._state
        np.matmul(flat[:, order:], self._group_end_t, out=v[1:])  # each group's end state from its own input
        starts = self._groups[: (groups + 1) * order, : (groups + 1) * order] @ v.reshape(-1)  # each group's start state, then the end
        z[:, 0] = starts[: groups * order].reshape(groups, order)
        row_starts = (flat @ self._rows_t).reshape(groups * group, order)  # each row's start state
        y = rows @ self._tt
        y += row_starts @ self._ot
        rest = n - (m - 1) * size  # samples in the last row (the padding's zeros would move the state on)
        if rest == size:
            self._state = starts[groups * order :] if m == groups * group else row_starts[m]
        else:
            self._state = self._powers[rest] @ row_starts[m - 1] + buf[(m - 1) * size : n] @ self._gt[size - rest :]
        return y.reshape(-1)[:n]


@dataclass(frozen=True)
class LevelReading:
    """One source's A-weighted levels over one interval, in dB (SPL when calibrated, else dBFS)."""

    source_id: str
    end_time: float  # capture time (UNIX s) just after the interval's last sample
    interval_s: float
    leq_db: float
    lmax_db: float
    l90_db: float
    calibrated: bool
    weighting: str = "A"


def _db(mean_square: float | np.ndarray, offset_db: float) -> np.ndarray:
    return 10 * np.log10(np.maximum(mean_square, FLOOR_MS)) + offset_db


class LevelMeter:
    """A-weighted Leq, Lmax (fast) and L90 of one source over consecutive intervals of its audio.

    ``feed`` runs on the source thread and only buffers the block (metering the buffer when it is full);
    ``take_readings`` and ``window_level`` run on the pipeline thread and meter what is buffered when their
    answer needs it. One lock guards it all; it is held for at most one pass over ``PENDING`` samples.
    ``offset_db`` turns dBFS (RMS 1.0 = 0 dB) into the reported unit: ``calibration_db - gain_db``, so a
    calibration survives a change of the gain applied before tagging. ``history_s`` is how far back
    ``window_level`` can look (the window plus the ring buffer's backlog).
    """

    def __init__(self, source_id: str, sample_rate: int, interval_s: float | None, offset_db: float = 0.0, calibrated: bool = False, history_s: float = 30.0):
        if interval_s is not None and interval_s <= 0:
            raise ValueError(f"interval_s {interval_s} must be positive (or None: no readings, the gate only)")
        self.source_id, self.sample_rate, self.offset_db, self.calibrated = source_id, sample_rate, offset_db, calibrated
        self.filter = AWeighting(sample_rate)
        self.readings_on = interval_s is not None
        self.interval = max(1, round((interval_s or 10.0) * sample_rate))
        self.bin = max(1, round(BIN_S * sample_rate))
        self.alpha = math.exp(-self.bin / sample_rate / FAST_TAU_S)
        self.dropped = 0  # readings the pipeline thread did not take in time
        self._count = 0  # samples metered (the stream sample index)
        self._int_sum, self._int_count = 0.0, 0
        self._int_fast: list[np.ndarray] = []  # fast mean squares at the bin ends of this interval (kept only when readings are on)
        self._bin_sum, self._bin_count = 0.0, 0  # the bin not yet complete
        self._fast: float | None = None  # exponential average state (None: warm-start at the first bin)
        # The fast weighting over a run of bins: fast[j] = alpha^(j+1) fast[-1] + sum_i<=j (1 - alpha) alpha^(j-i) energy[i] / bin.
        lag = np.arange(FAST_RUN)[:, None] - np.arange(FAST_RUN)[None, :]
        self._fast_k = np.where(lag >= 0, (1 - self.alpha) * self.alpha ** np.maximum(lag, 0) / self.bin, 0.0)
        self._fast_a = self.alpha ** np.arange(1, FAST_RUN + 1)
        hist = max(16, math.ceil(history_s / BIN_S) + 2)
        self._hist_end = np.full(hist, -1, dtype=np.int64)  # stream index one past each bin's last sample
        self._hist_sum = np.zeros(hist)  # that bin's sum of squares
        self._hist_pos = 0
        self._steps = np.arange(max(hist, PENDING // self.bin + 2), dtype=np.int64) * self.bin  # offsets of consecutive bin ends
        self._pending = np.zeros(PENDING)  # fed, not yet metered
        self._pending_n = 0
        self._pending_at: list[int] = []  # where each buffered block starts in ``_pending``
        self._pending_time: list[float] = []  # and its capture time
        self._lock = threading.Lock()
        self._readings: deque[LevelReading] = deque()

    def feed(self, samples: np.ndarray, capture_time: float) -> None:
        """Take one block whose first sample was captured at ``capture_time`` (source thread): a copy into the buffer,
        which is metered when full. NaN or infinite samples count as silence (they would poison the filter's state for good)."""
        x = np.asarray(samples).reshape(-1)
        n = x.size
        if not n:
            return
        with self._lock:
            if self._pending_n + n > self._pending.size:
                self._flush()
            if n >= self._pending.size:  # a long block is metered as it is, a buffer's length at a time
                for i in range(0, n, self._pending.size):
                    self._meter(x[i : i + self._pending.size], [0], [capture_time + i / self.sample_rate])
                return
            self._pending[self._pending_n : self._pending_n + n] = x
            self._pending_at.append(self._pending_n)
            self._pending_time.append(capture_time)
            self._pending_n += n

    def _flush(self) -> None:
        """Meter the buffered samples (lock held)."""
        if self._pending_n:
            self._meter(self._pending[: self._pending_n], self._pending_at, self._pending_time)
            self._pending_n, self._pending_at, self._pending_time = 0, [], []

    def _meter(self, x: np.ndarray, starts: list[int], times: list[float]) -> None:
        """Meter consecutive samples ``x``, made of blocks starting at ``starts`` captured at ``times`` (lock held): one pass
        of the filter, one square, one ``reduceat`` for the 10 ms bins, one product per 64 bins for their fast levels."""
        if not math.isfinite(x.sum()):  # any NaN or inf makes the sum so (as may a finite overflow: cleaning that changes nothing)
            x = np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        sq = self.filter.process(x)
        np.multiply(sq, sq, out=sq)
        n, size = sq.size, self.bin
        first = size - self._bin_count - 1  # index in ``x`` of the first bin's last sample
        done = (n - 1 - first) // size + 1 if first < n else 0  # bins completed
        tail = first + 1 + (done - 1) * size if done else 0  # where the incomplete bin at the end starts
        count = done + (tail < n)  # segments: the rest of the pending bin, each later complete bin, the incomplete one
        steps = self._steps if count <= self._steps.size else np.arange(count, dtype=np.int64) * size
        idx = steps[:count] + (first + 1 - size)
        idx[0] = 0
        parts = np.add.reduceat(sq, idx)
        total = float(parts.sum())
        fast = np.zeros(0)
        if done:
            sums = parts[:done]
            sums[0] += self._bin_sum
            self._bin_sum, self._bin_count = (float(parts[done]) if tail < n else 0.0), n - tail
            fast = np.concatenate([self._fast_run(sums[i : i + FAST_RUN]) for i in range(0, done, FAST_RUN)]) if done > FAST_RUN else self._fast_run(sums)
            self._remember(self._count + first + 1, sums)
        else:
            self._bin_sum, self._bin_count = self._bin_sum + total, self._bin_count + n
        self._count += n
        if self.readings_on:
            self._add_to_intervals(sq, total, fast, first, starts, times)

    def _fast_run(self, sums: np.ndarray) -> np.ndarray:
        """The fast levels at the ends of up to ``FAST_RUN`` consecutive bins of energies ``sums``, carried on from ``_fast``."""
        k = sums.size
        start = float(sums[0] / self.bin) if self._fast is None else self._fast  # warm start at the first bin
        fast = self._fast_k[:k, :k] @ sums + self._fast_a[:k] * start
        self._fast = float(fast[-1])
        return fast

    def _add_to_intervals(self, sq: np.ndarray, total: float, fast: np.ndarray, first: int, starts: list[int], times: list[float]) -> None:
        """Add the samples' energy and their bins' fast levels to the current interval, emitting each interval they complete."""
        n = sq.size
        if n < self.interval - self._int_count:  # inside one interval
            self._int_sum += total
            self._int_count += n
            if fast.size:
                self._int_fast.append(fast)
            return
        start = taken = 0
        while n - start >= self.interval - self._int_count:
            end = start + self.interval - self._int_count
            bins = min(fast.size, (end - 1 - first) // self.bin + 1) if end > first else 0  # the bins ending before ``end``
            if bins > taken:
                self._int_fast.append(fast[taken:bins])
            self._int_sum += float(sq[start:end].sum())
            self._int_count = self.interval
            block = bisect.bisect_right(starts, end - 1) - 1  # the block of the interval's last sample
            self._emit(times[block] + (end - starts[block]) / self.sample_rate)
            start, taken = end, max(taken, bins)
        if start < n:
            self._int_sum += float(sq[start:].sum())
            self._int_count += n - start
            if fast.size > taken:
                self._int_fast.append(fast[taken:])

    def _remember(self, first_end: int, sums: np.ndarray) -> None:
        """Keep the bins just completed (one past their last samples: ``first_end``, then every ``bin``) for ``window_level``."""
        size = self._hist_end.size
        if sums.size > size:
            first_end += (sums.size - size) * self.bin
            sums = sums[-size:]
        count, pos = sums.size, self._hist_pos
        ends = self._steps[:count] + first_end
        head = min(count, size - pos)
        self._hist_end[pos : pos + head] = ends[:head]
        self._hist_sum[pos : pos + head] = sums[:head]
        if head < count:
            self._hist_end[: count - head] = ends[head:]
            self._hist_sum[: count - head] = sums[head:]
        self._hist_pos = (pos + count) % size

    def _emit(self, end_time: float) -> None:
        fast = np.concatenate(self._int_fast) if self._int_fast else np.array([self._int_sum / max(self._int_count, 1)])
        fast_db = _db(fast, self.offset_db)
        reading = LevelReading(
            self.source_id,
            end_time,
            round(self.interval / self.sample_rate, 3),
            round(float(_db(self._int_sum / self._int_count, self.offset_db)), 2),
            round(float(fast_db.max()), 2),
            round(float(np.percentile(fast_db, 10)), 2),
            self.calibrated,
        )
        self._int_sum, self._int_count, self._int_fast = 0.0, 0, []
        if len(self._readings) >= MAX_READINGS:
            self._readings.popleft()
            self.dropped += 1
        self._readings.append(reading)

    def take_readings(self) -> list[LevelReading]:
        """The completed intervals' readings not yet taken, oldest first (the buffered audio is metered first when it
        completes an interval)."""
        with self._lock:
            if self.readings_on and self._int_count + self._pending_n >= self.interval:
                self._flush()
            readings = list(self._readings)
            self._readings.clear()
        return readings

    def window_level(self, start: int, end: int) -> float | None:
        """A-weighted Leq (dB, same unit as the readings) of stream samples ``start``..``end`` (end excluded),
        from the 10 ms bins whose middle falls inside; None when those bins are no longer (or not yet) remembered."""
        half = self.bin // 2
        with self._lock:
            if end > self._count:
                self._flush()
            middles = self._hist_end - self.bin + half
            inside = (self._hist_end >= 0) & (middles >= start) & (middles < end)
            count = int(inside.sum())
            if not count:
                return None
            total = float(self._hist_sum[inside].sum())
        return float(_db(total / (count * self.bin), self.offset_db))


def build_meter(source: Any, level: Any, sample_rate: int, history_s: float) -> LevelMeter | None:
    """The meter of one source (a ``SourceBase``) under the site's ``level`` section (a ``LevelConfig``);
    None when the source needs none (levels off and no ``min_level_db``)."""
    if not level.enabled and source.min_level_db is None:
        return None
    calibration = source.calibration_db
    offset = (calibration or 0.0) - source.gain_db
    interval = level.interval_s if level.enabled else None
    return LevelMeter(source.id, sample_rate, interval, offset, calibration is not None, history_s)
