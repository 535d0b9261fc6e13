"""Sound level per source: an IEC 61672 A-weighting filter and a meter (Leq, Lmax fast, L90) over intervals.

The filter is the standard's analogue A-curve (double poles at 20.6 Hz and 12194 Hz, single poles at
107.7 Hz and 737.9 Hz) mapped by the bilinear transform to the source's sample rate, as three
second-order sections, normalised to 0 dB at 1 kHz, with the high pole re-fitted per sample rate
against the bilinear transform's squeeze near Nyquist (``a_weighting_sos``); which IEC 61672-1
class 2 bands each rate meets is in tests/runtime/test_level.py.

The filter runs without a Python loop per sample. The three sections form one 6-state linear
system; a block is cut into chunks of ``CHUNK`` samples and each chunk's output is
``T @ x + O @ state`` (``T`` the chunk's lower-triangular impulse-response matrix, ``O`` the
response to the state), the state carried from chunk to chunk (one 6-vector update per chunk).
That is the exact recursion, in float64, as a few matrix products per block.

The meter runs on the source thread (inside the pipeline's sink) and keeps everything bounded:
per-interval sums, the fast levels of the current interval (one per 10 ms), a short history of
10 ms energies for the ``min_level_db`` gate, and at most ``MAX_READINGS`` readings not yet taken
by the pipeline thread (older ones are dropped and counted).
"""

from __future__ import annotations

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
CHUNK = 128  # samples per matrix step of the filter
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


class AWeighting:
    """A streaming A-weighting filter (its state carried from block to block); vectorised per block."""

    def __init__(self, sample_rate: int, chunk: int = CHUNK):
        self.sample_rate, self.chunk = sample_rate, chunk
        self.sos = a_weighting_sos(sample_rate)
        a_m, b_m, c_m, d = _state_space(self.sos)
        order = a_m.shape[0]
        powers = [np.eye(order)]
        for _ in range(chunk):
            powers.append(a_m @ powers[-1])
        self._powers = np.stack(powers)  # A^0 .. A^chunk
        h = np.array([d] + [c_m @ powers[k - 1] @ b_m for k in range(1, chunk)])
        idx = np.arange(chunk)
        lag = idx[:, None] - idx[None, :]
        self._t = np.where(lag >= 0, h[np.clip(lag, 0, None)], 0.0)  # [L, L] zero-state response
        self._o = np.stack([c_m @ powers[k] for k in range(chunk)])  # [L, order] response to the state
        self._g = np.stack([powers[chunk - 1 - k] @ b_m for k in range(chunk)], axis=1)  # [order, L] input -> end state
        self._state = np.zeros(order)

    def reset(self) -> None:
        """Forget the past (the state of a fresh filter)."""
        self._state[:] = 0.0

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Filter one block (any length); float64 out, the state kept for the next block."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        n, size = x.size, self.chunk
        out = np.empty(n)
        full = n - n % size
        state = self._state
        if full:
            chunks = x[:full].reshape(-1, size)
            ends = chunks @ self._g.T  # each chunk's end state from its input alone
            starts = np.empty((chunks.shape[0], state.size))
            a_l = self._powers[size]
            for j in range(chunks.shape[0]):  # one 6-vector step per chunk, not per sample
                starts[j] = state
                state = a_l @ state + ends[j]
            out[:full] = (chunks @ self._t.T + starts @ self._o.T).reshape(-1)
        rest = n - full
        if rest:
            tail = x[full:]
            out[full:] = self._t[:rest, :rest] @ tail + self._o[:rest] @ state
            state = self._powers[rest] @ state + self._g[:, size - rest :] @ tail
        self._state = state
        return out


def _exp_average(values: np.ndarray, alpha: float, state: float) -> np.ndarray:
    """``e[k] = alpha e[k-1] + (1 - alpha) v[k]`` from ``e[-1] = state``, without a Python loop per value."""
    out = np.empty(values.size)
    step = 128  # alpha ** -128 stays far from overflow for any alpha used here (>= 0.5)
    for start in range(0, values.size, step):
        v = values[start : start + step]
        k = np.arange(1, v.size + 1)
        out[start : start + v.size] = alpha**k * (state + (1 - alpha) * np.cumsum(v * alpha ** (-k)))
        state = float(out[start + v.size - 1])
    return out


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

    ``feed`` runs on the source thread; ``take_readings`` and ``window_level`` on the pipeline thread.
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
        self._count = 0  # samples fed (the stream sample index)
        self._int_sum, self._int_count = 0.0, 0
        self._int_fast: list[np.ndarray] = []  # fast mean squares at the bin ends of this interval
        self._bin_sum, self._bin_count = 0.0, 0  # the bin not yet complete
        self._fast: float | None = None  # exponential average state (None: warm-start at the first bin)
        hist = max(16, math.ceil(history_s / BIN_S) + 2)
        self._hist_end = np.full(hist, -1, dtype=np.int64)  # stream index one past each bin's last sample
        self._hist_sum = np.zeros(hist)  # that bin's sum of squares
        self._hist_pos = 0
        self._lock = threading.Lock()
        self._readings: deque[LevelReading] = deque()

    def feed(self, samples: np.ndarray, capture_time: float) -> None:
        """Meter one block whose first sample was captured at ``capture_time``; NaN or infinite samples count as silence
        (they would poison the filter's state for good)."""
        if not np.isfinite(samples).all():
            samples = np.nan_to_num(np.asarray(samples, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        sq = np.square(self.filter.process(samples))
        done = 0
        while done < sq.size:
            take = min(sq.size - done, self.interval - self._int_count)
            self._accumulate(sq[done : done + take])
            done += take
            if self._int_count == self.interval:
                self._emit(capture_time + done / self.sample_rate)

    def _accumulate(self, sq: np.ndarray) -> None:
        """Add samples within one interval: the interval's energy, the 10 ms bins and their fast levels."""
        n = sq.size
        cum = np.cumsum(sq)
        first = self.bin - self._bin_count - 1  # index in ``sq`` of the first bin's last sample
        ends = np.arange(first, n, self.bin)
        if ends.size:
            sums = np.diff(cum[ends], prepend=0.0)
            sums[0] += self._bin_sum
            if self._fast is None:
                self._fast = float(sums[0] / self.bin)
            fast = _exp_average(sums / self.bin, self.alpha, self._fast)
            self._fast = float(fast[-1])
            self._int_fast.append(fast)
            self._remember(self._count + ends + 1, sums)
            self._bin_sum, self._bin_count = float(cum[-1] - cum[ends[-1]]), n - 1 - int(ends[-1])
        else:
            self._bin_sum, self._bin_count = self._bin_sum + float(cum[-1]), self._bin_count + n
        self._int_sum += float(cum[-1])
        self._int_count += n
        self._count += n

    def _remember(self, ends: np.ndarray, sums: np.ndarray) -> None:
        size = self._hist_end.size
        ends, sums = ends[-size:], sums[-size:]
        idx = (self._hist_pos + np.arange(ends.size)) % size
        with self._lock:
            self._hist_end[idx] = ends
            self._hist_sum[idx] = sums
        self._hist_pos = int((self._hist_pos + ends.size) % size)

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
        if not self.readings_on:
            return
        with self._lock:
            if len(self._readings) >= MAX_READINGS:
                self._readings.popleft()
                self.dropped += 1
            self._readings.append(reading)

    def take_readings(self) -> list[LevelReading]:
        """The completed intervals' readings not yet taken, oldest first."""
        with self._lock:
            readings = list(self._readings)
            self._readings.clear()
        return readings

    def window_level(self, start: int, end: int) -> float | None:
        """A-weighted Leq (dB, same unit as the readings) of stream samples ``start``..``end`` (end excluded),
        from the 10 ms bins whose middle falls inside; None when those bins are no longer (or not yet) remembered."""
        half = self.bin // 2
        with self._lock:
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
