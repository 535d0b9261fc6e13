"""Procedural building sounds, one generator per label (numpy only, deterministic by ``rng``).

Each generator takes ``(rng, sample_rate, duration_s)`` and returns a dry float32 clip that
starts at its onset; ``duration_s`` is honoured by sustained sounds only. Pitch, timing and
timbre are randomised within ranges a real device or room would show. Speech lives in
``synth_speech``; reverb, gain and mixing in ``synth``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Rng = np.random.Generator
Generator = Callable[[Rng, int, "float | None"], np.ndarray]


def times(n: int, sr: int) -> np.ndarray:
    """Sample times in seconds."""
    return np.arange(n) / sr


def shaped_noise(rng: Rng, n: int, sr: int, lo: float, hi: float, tilt_db_oct: float = 0.0) -> np.ndarray:
    """Unit-RMS Gaussian noise band-limited to [lo, hi] Hz with a spectral tilt, via the FFT."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    hi = min(hi, 0.48 * sr)
    gain = np.where((f >= lo) & (f <= hi), (np.maximum(f, 1.0) / max(lo, 1.0)) ** (tilt_db_oct / 6.02), 0.0)
    y = np.fft.irfft(spec * gain, n)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def envelope(n: int, sr: int, attack_s: float, release_s: float) -> np.ndarray:
    """Linear attack, flat, linear release."""
    env = np.ones(n)
    a, r = min(n, max(1, int(attack_s * sr))), min(n, max(1, int(release_s * sr)))
    env[:a] *= np.linspace(0, 1, a)
    env[n - r :] *= np.linspace(1, 0, r)
    return env


def decaying_partials(rng: Rng, sr: int, n: int, freqs: list[float], amps: list[float], taus: list[float]) -> np.ndarray:
    """Sum of exponentially decaying sines (bells, glass, resonant wood) at random phases."""
    t = times(n, sr)
    out = np.zeros(n)
    for f, a, tau in zip(freqs, amps, taus):
        if f < 0.48 * sr:
            out += a * np.exp(-t / tau) * np.sin(2 * math.pi * f * t + rng.uniform(0, 2 * math.pi))
    return out


def harmonic_voice(f0: np.ndarray, sr: int, formants: list[tuple[float, float]], tilt_db_oct: float = -9.0) -> np.ndarray:
    """A harmonic source following the pitch track ``f0`` (Hz per sample), shaped by formants."""
    phase = 2 * math.pi * np.cumsum(f0) / sr
    mean_f0 = float(np.mean(f0))
    out = np.zeros(len(f0))
    for h in range(1, int(0.45 * sr / np.max(f0)) + 1):
        fh = h * mean_f0
        gain = sum(1.0 / (1.0 + ((fh - fc) / bw) ** 2) for fc, bw in formants) + 0.02
        out += gain * h ** (tilt_db_oct / 6.02) * np.sin(h * phase)
    return out


def place(total: int, pieces: list[tuple[float, np.ndarray]], sr: int) -> np.ndarray:
    """Mix (onset seconds, clip) pieces into one buffer of ``total`` samples."""
    out = np.zeros(total)
    for onset, clip in pieces:
        i = int(onset * sr)
        j = min(total, i + len(clip))
        out[i:j] += clip[: j - i]
    return out


def smoke_alarm(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """Temporal-3 pattern: 3 x (0.5 s on, 0.5 s off), 1.5 s pause; ~3.1 kHz piezo tone."""
    f = rng.uniform(2950, 3300)
    on, off = 0.5 * rng.uniform(0.96, 1.04), 0.5 * rng.uniform(0.96, 1.04)
    cycles = int(rng.choice([1, 2], p=[0.6, 0.4]))
    n_on = int(on * sr)
    t = times(n_on, sr)
    wobble = 1 + 0.003 * np.sin(2 * math.pi * rng.uniform(4, 9) * t)
    phase = 2 * math.pi * f * np.cumsum(wobble) / sr
    beep = (np.sin(phase) + 0.2 * np.sin(2 * phase) * (2 * f < 0.48 * sr)) * envelope(n_on, sr, 0.004, 0.004)
    onsets = [c * (3 * on + 2 * off + 1.5) + k * (on + off) for c in range(cycles) for k in range(3)]
    return place(int((onsets[-1] + on) * sr), [(o, beep) for o in onsets], sr)


def co_alarm(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """Temporal-4 pattern: 4 x (0.1 s on, 0.1 s off), 5 s pause; ~3.2 kHz."""
    f = rng.uniform(3000, 3500)
    on, off = 0.1 * rng.uniform(0.9, 1.1), 0.1 * rng.uniform(0.9, 1.1)
    cycles = int(rng.choice([1, 2], p=[0.7, 0.3]))
    n_on = int(on * sr)
    beep = np.sin(2 * math.pi * f * times(n_on, sr)) * envelope(n_on, sr, 0.003, 0.003)
    onsets = [c * (4 * on + 3 * off + 5.0) + k * (on + off) for c in range(cycles) for k in range(4)]
    return place(int((onsets[-1] + on) * sr), [(o, beep) for o in onsets], sr)


def doorbell(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """Ding-dong: two struck bar tones a third apart, each with decaying inharmonic partials."""
    f1 = rng.uniform(520, 900)
    notes = [f1, f1 / rng.choice([1.26, 1.19, 1.33])]
    gap = rng.uniform(0.35, 0.7)
    tau = rng.uniform(0.4, 1.0)
    n = int(5 * tau * sr)  # ring down to -43 dB, then fade, so the clip never ends in a click
    strikes = []
    for f in notes:
        ratios, amps = [1.0, 2.76, 5.40, 8.93], [1.0, 0.45, 0.2, 0.08]
        taus = [tau / math.sqrt(i + 1) for i in range(4)]
        strikes.append(decaying_partials(rng, sr, n, [f * r for r in ratios], amps, taus) * envelope(n, sr, 0.001, 0.1))
    return place(int((gap + n / sr) * sr), [(0.0, strikes[0]), (gap, strikes[1])], sr)


def knock(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """2-5 knuckle raps on a door: damped wood resonances plus a click."""
    count = int(rng.integers(2, 6))
    base = rng.uniform(0.12, 0.3)
    modes = [rng.uniform(110, 300), rng.uniform(400, 900), rng.uniform(1200, 2500)]
    n = int(0.15 * sr)
    pieces, onset = [], 0.0
    for _ in range(count):
        taus = [rng.uniform(0.015, 0.04), rng.uniform(0.008, 0.02), rng.uniform(0.004, 0.01)]
        rap = decaying_partials(rng, sr, n, modes, [1.0, 0.6, 0.3], taus)
        click = shaped_noise(rng, n, sr, 500, 6000) * np.exp(-times(n, sr) / 0.002) * 0.5
        pieces.append((onset, (rap + click) * rng.uniform(0.7, 1.0)))
        onset += base * rng.uniform(0.9, 1.1)
    return place(int((onset + 0.15) * sr), pieces, sr)


def glass_break(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """An impact burst, bright ringing shards, then scattered tinkling debris."""
    n = int(rng.uniform(1.2, 2.0) * sr)
    t = times(n, sr)
    burst = shaped_noise(rng, n, sr, 1500, 8000) * np.exp(-t / rng.uniform(0.03, 0.08))
    k = int(rng.integers(10, 25))
    ring = decaying_partials(rng, sr, n, list(rng.uniform(2500, 7500, k)), list(rng.uniform(0.1, 0.4, k)), list(rng.uniform(0.04, 0.3, k)))
    debris = []
    for _ in range(int(rng.integers(6, 20))):
        m = int(0.08 * sr)
        at = rng.uniform(0.1, n / sr - 0.1)
        tink = decaying_partials(rng, sr, m, list(rng.uniform(3000, 7500, 3)), [0.3, 0.2, 0.1], list(rng.uniform(0.01, 0.05, 3)))
        debris.append((at, tink * math.exp(-at / 0.6)))
    return 1.2 * burst + ring + place(n, debris, sr)


def dog_bark(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """1-4 barks: falling-pitch harmonic yelps with a noisy component and a sharp attack."""
    count = int(rng.integers(1, 5))
    size = rng.uniform(0.7, 1.4)  # big dogs: lower pitch and formants
    pieces, onset = [], 0.0
    for _ in range(count):
        dur = rng.uniform(0.12, 0.3)
        m = int(dur * sr)
        f0 = np.linspace(rng.uniform(350, 650) / size, rng.uniform(200, 350) / size, m)
        formants = [(rng.uniform(700, 1200) / size, 300.0), (rng.uniform(1800, 2800) / size, 500.0)]
        voice = harmonic_voice(f0, sr, formants, tilt_db_oct=-6.0)
        voice /= np.sqrt(np.mean(voice**2)) + 1e-12
        rough = shaped_noise(rng, m, sr, 400, 4000) * rng.uniform(0.2, 0.5)
        env = np.minimum(1.0, times(m, sr) / 0.01) * np.exp(-times(m, sr) / (0.45 * dur))
        pieces.append((onset, (voice + rough) * env))
        onset += dur + rng.uniform(0.15, 0.5)
    return place(int(onset * sr), pieces, sr)


def footsteps(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """3-8 steps at a walking pace: a low heel thud and a brighter toe scuff."""
    count = int(rng.integers(3, 9))
    pace = rng.uniform(0.45, 0.65)
    bright = rng.uniform(0.1, 0.6)  # hard floor vs carpet
    n = int(0.25 * sr)
    t = times(n, sr)
    pieces = []
    for i in range(count):
        thud = decaying_partials(rng, sr, n, [rng.uniform(60, 120)], [1.0], [0.03])
        thud += shaped_noise(rng, n, sr, 40, 900) * np.exp(-t / 0.02) * 0.6
        scuff_at = int(rng.uniform(0.06, 0.12) * sr)
        scuff = np.zeros(n)
        scuff[scuff_at:] = shaped_noise(rng, n - scuff_at, sr, 1000, 5000) * np.exp(-t[: n - scuff_at] / 0.03) * bright
        pieces.append((i * pace * rng.uniform(0.95, 1.05), (thud + scuff) * rng.uniform(0.7, 1.0)))
    return place(int((count * pace + 0.3) * sr), pieces, sr)


def water_running(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """A tap or shower: band-limited noise with a slow flutter and bubbling chirps."""
    n = int((duration_s or rng.uniform(2.0, 5.0)) * sr)
    t = times(n, sr)
    flow = shaped_noise(rng, n, sr, rng.uniform(300, 800), rng.uniform(3000, 6500), tilt_db_oct=-2.0)
    flow *= 1 + 0.25 * np.sin(2 * math.pi * rng.uniform(2, 6) * t)
    bubbles = []
    for _ in range(int(rng.uniform(20, 60) * n / sr)):
        m = int(rng.uniform(0.005, 0.02) * sr)
        f = rng.uniform(600, 2500) * np.linspace(1.0, rng.uniform(1.2, 1.6), m)
        bubbles.append((rng.uniform(0, n / sr), np.sin(2 * math.pi * np.cumsum(f) / sr) * np.hanning(m) * 0.6))
    return (flow + place(n, bubbles, sr)) * envelope(n, sr, 0.15, 0.15)


def hvac_hum(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """Mains hum (50/60 Hz harmonics) plus broadband fan noise with a blade-pass tone."""
    n = int((duration_s or rng.uniform(3.0, 6.0)) * sr)
    t = times(n, sr)
    mains = float(rng.choice([50.0, 60.0]))
    amps = rng.uniform(0.1, 1.0, 6)
    amps[1] = 1.0  # transformer hum is strongest at twice mains
    hum = sum(a * np.sin(2 * math.pi * mains * (k + 1) * t + rng.uniform(0, 6.3)) for k, a in enumerate(amps))
    hum /= np.sqrt(np.mean(hum**2)) + 1e-12
    fan = shaped_noise(rng, n, sr, 30, rng.uniform(1500, 4000), tilt_db_oct=-4.0)
    blade = np.sin(2 * math.pi * rng.uniform(90, 250) * t) * (1 + 0.3 * np.sin(2 * math.pi * rng.uniform(0.3, 1.0) * t))
    mix = hum * rng.uniform(0.8, 1.5) + fan * rng.uniform(0.4, 1.0) + blade * rng.uniform(0.1, 0.4)
    return mix * envelope(n, sr, 0.3, 0.3)


def siren(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """An emergency siren outside: wail (slow sweep), yelp (fast sweep) or hi-lo, 600-1500 Hz, passing by."""
    n = int(rng.uniform(2.5, 7.0) * sr)
    t = times(n, sr)
    lo, hi = rng.uniform(620, 800), rng.uniform(1150, 1430)
    mode = str(rng.choice(["wail", "yelp", "hilo"]))
    rate = {"wail": rng.uniform(0.2, 0.4), "yelp": rng.uniform(2.5, 4.0), "hilo": rng.uniform(0.8, 1.3)}[mode]
    cycle = (rate * t + rng.uniform(0, 1)) % 1.0
    if mode == "hilo":
        sweep = (cycle < 0.5).astype(float)
    else:  # rise then fall, the rise quicker on a mechanical wail
        rise = rng.uniform(0.4, 0.6)
        sweep = np.where(cycle < rise, cycle / rise, (1 - cycle) / (1 - rise))
    doppler = 1 - 0.02 * np.tanh((t - rng.uniform(0.3, 0.7) * n / sr) / rng.uniform(0.5, 2.0))  # approaching, then receding
    f = (lo + (hi - lo) * sweep) * doppler
    phase = 2 * math.pi * np.cumsum(f) / sr
    tone = sum(h**-1.5 * np.sin(h * phase) * (h * hi < 0.48 * sr) for h in range(1, 6))
    distance = np.exp(-((t / (n / sr) - rng.uniform(0.3, 0.7)) ** 2) / rng.uniform(0.1, 0.5))
    return tone * (0.3 + 0.7 * distance) * envelope(n, sr, 0.05, 0.3)


# (name, tone pair Hz or None for an electronic trill, cadence of (on_s, off_s) per cycle)
PHONE_CADENCES: tuple[tuple[str, tuple[float, float] | None, tuple[tuple[float, float], ...]], ...] = (
    ("north-america", (440.0, 480.0), ((2.0, 4.0),)),
    ("uk", (400.0, 450.0), ((0.4, 0.2), (0.4, 2.0))),
    ("trill", None, ((1.0, 2.0),)),
)


def phone_ring(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """A telephone: dual-tone rings on a national cadence, or a modern frequency-shift trill."""
    _, tones, cadence = PHONE_CADENCES[int(rng.integers(len(PHONE_CADENCES)))]
    stretch = rng.uniform(0.97, 1.03)
    cycles = int(rng.integers(1, 3)) if cadence[0][0] > 1.5 else int(rng.integers(1, 4))
    trill_hz, pair = rng.uniform(12, 25), (rng.uniform(900, 1400), rng.uniform(1.15, 1.4))
    pieces, onset = [], 0.0
    for _ in range(cycles):
        for on, off in cadence:
            m = int(on * stretch * sr)
            t = times(m, sr)
            if tones is not None:
                burst = np.sin(2 * math.pi * tones[0] * t) + np.sin(2 * math.pi * tones[1] * t)
            else:
                f = pair[0] * np.where((trill_hz * t) % 1.0 < 0.5, 1.0, pair[1])
                phase = 2 * math.pi * np.cumsum(f) / sr
                burst = np.sin(phase) + 0.3 * np.sign(np.sin(phase))  # a piezo's buzzy square-ish edge
            pieces.append((onset, burst * envelope(m, sr, 0.005, 0.005)))
            onset += (on + off) * stretch
    return place(int((onset - cadence[-1][1] * stretch) * sr), pieces, sr)


def door_slam(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """A door slamming: a low panel thud with a crack, then the latch and frame rattling."""
    n = int(rng.uniform(0.6, 1.1) * sr)
    t = times(n, sr)
    body = decaying_partials(
        rng,
        sr,
        n,
        [rng.uniform(45, 90), rng.uniform(110, 220), rng.uniform(300, 600)],
        [1.0, 0.6, 0.25],
        [rng.uniform(0.08, 0.2), rng.uniform(0.04, 0.1), rng.uniform(0.02, 0.05)],
    )
    thump = shaped_noise(rng, n, sr, 30, rng.uniform(600, 1500), tilt_db_oct=-3.0) * np.exp(-t / rng.uniform(0.02, 0.05))
    crack = shaped_noise(rng, n, sr, 800, 7000) * np.exp(-t / rng.uniform(0.003, 0.008)) * rng.uniform(0.3, 0.8)
    rattles, at = [], rng.uniform(0.03, 0.08)
    for _ in range(int(rng.integers(3, 9))):
        m = int(0.03 * sr)
        tick = decaying_partials(rng, sr, m, list(rng.uniform(1500, 5000, 2)), [0.3, 0.2], [0.004, 0.003])
        rattles.append((at, tick * math.exp(-at / 0.15) * rng.uniform(0.5, 1.0)))
        at += rng.uniform(0.015, 0.06)
    return (body + thump + crack) * envelope(n, sr, 0.0005, 0.05) + place(n, rattles, sr)


def vacuum_cleaner(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """A vacuum cleaner: motor whine with harmonics (spinning up, dipping under load) over airflow noise."""
    n = int((duration_s or rng.uniform(3.0, 8.0)) * sr)
    t = times(n, sr)
    spin_up = 1 - (1 - rng.uniform(0.3, 0.5)) * np.exp(-t / rng.uniform(0.2, 0.5))
    load = 1 - 0.05 * np.clip(np.sin(2 * math.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6.3)), 0, None) ** 2
    f0 = rng.uniform(250, 550) * spin_up * load * (1 + 0.003 * shaped_noise(rng, n, sr, 0.5, 5))
    phase = 2 * math.pi * np.cumsum(f0) / sr
    whine_at = rng.uniform(1500, 4000)  # the impeller's blade-pass region
    motor = sum(
        (h**-1.0 + 1.5 * math.exp(-(((h * f0[-1] - whine_at) / 600) ** 2))) * np.sin(h * phase + rng.uniform(0, 6.3))
        for h in range(1, min(17, int(0.45 * sr / f0.max()) + 1))
    )
    motor /= np.sqrt(np.mean(motor**2)) + 1e-12
    air = shaped_noise(rng, n, sr, 80, 7500, tilt_db_oct=rng.uniform(-2.5, -0.5))
    return (motor * rng.uniform(0.4, 0.9) + air * rng.uniform(0.6, 1.2) * spin_up) * envelope(n, sr, 0.05, 0.3)


def typing(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """Typing on a keyboard: key clicks at an irregular 5-10 per second, each with a bottom-out thud."""
    rate = rng.uniform(5.0, 10.0)
    total = rng.uniform(1.5, 4.0)
    key_modes = [rng.uniform(1800, 4500), rng.uniform(500, 1200)]
    m = int(0.05 * sr)
    t = times(m, sr)
    pieces, onset = [], 0.0
    while onset < total:
        space = rng.random() < 0.15  # the space bar: louder, lower
        click = shaped_noise(rng, m, sr, 1500 if not space else 600, 8000) * np.exp(-t / rng.uniform(0.0015, 0.004))
        body = decaying_partials(
            rng,
            sr,
            m,
            [f * rng.uniform(0.9, 1.1) * (0.7 if space else 1.0) for f in key_modes],
            [0.5, 0.4],
            [rng.uniform(0.004, 0.01), rng.uniform(0.005, 0.012)],
        )
        thud_at = int(rng.uniform(0.006, 0.015) * sr)
        thud = np.zeros(m)
        thud[thud_at:] = shaped_noise(rng, m - thud_at, sr, 100, 1500) * np.exp(-t[: m - thud_at] / 0.006) * 0.5
        pieces.append((onset, (click + body + thud) * rng.uniform(0.5, 1.0) * (1.4 if space else 1.0)))
        onset += rng.lognormal(math.log(1 / rate), 0.3)
    return place(int((onset + 0.05) * sr), pieces, sr)
