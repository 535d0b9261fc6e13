"""Human voices for synthetic scenes: speech (espeak-ng when installed, a formant babble otherwise) and a baby's cry.

espeak-ng gives real words from varied voices; the babble (glottal harmonics through vowel
formants, with fricative bursts and a falling pitch contour) keeps the training and test
paths alive on machines without it. ``speech_backend()`` says which is in use.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from rtaudio.train.synth_sounds import Rng, envelope, harmonic_voice, shaped_noise, times

SENTENCES = (
    "Could you open the door please",
    "The meeting starts at ten in room four",
    "Has anyone seen the keys to the store room",
    "I will call you back in five minutes",
    "Please check the boiler on the second floor",
    "The delivery is waiting at reception",
    "Turn the lights off when you leave",
    "We need more chairs in the hall",
    "Good morning, how was your weekend",
    "The lift is out of order again",
    "Can you hear that noise from the kitchen",
    "Let us meet after lunch",
)
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029")
VARIANTS = ("", "+m1", "+m3", "+f1", "+f2", "+f4", "+klatt")
# (F1, F2, F3) in Hz for a few vowels
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (570, 840, 2410), (300, 870, 2240), (660, 1720, 2410))


def speech_backend() -> str:
    """'espeak-ng' when the program is on PATH, else 'babble'."""
    return "espeak-ng" if shutil.which("espeak-ng") else "babble"


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling through the FFT (fine for clips of a few seconds)."""
    if sr_in == sr_out:
        return x
    n_out = round(len(x) * sr_out / sr_in)
    spec = np.fft.rfft(x)
    keep = min(len(spec), n_out // 2 + 1)
    return np.fft.irfft(spec[:keep], n_out) * (n_out / len(x))


def espeak(rng: Rng, sr: int) -> np.ndarray:
    """One sentence from a random voice, speed and pitch, at ``sr``."""
    text = str(rng.choice(SENTENCES))
    voice = str(rng.choice(VOICES)) + str(rng.choice(VARIANTS))
    args = ["-v", voice, "-s", str(int(rng.integers(130, 200))), "-p", str(int(rng.integers(25, 75)))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", *args, "-w", str(path), text], check=True, capture_output=True, timeout=30)
        with wave.open(str(path)) as wav:
            rate, frames = wav.getframerate(), wav.readframes(wav.getnframes())
    audio = np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0
    return resample(audio, rate, sr)


def babble(rng: Rng, sr: int) -> np.ndarray:
    """Speech-like babble: syllables of voiced vowels, some with fricative onsets, in words."""
    f0_base = rng.uniform(90, 130) if rng.random() < 0.5 else rng.uniform(170, 240)
    pieces: list[np.ndarray] = []
    total_s = rng.uniform(1.5, 3.5)
    while sum(len(p) for p in pieces) < total_s * sr:
        for _ in range(int(rng.integers(1, 4))):  # syllables in a word
            if rng.random() < 0.35:
                m = int(rng.uniform(0.04, 0.1) * sr)
                pieces.append(shaped_noise(rng, m, sr, 2500, 7000) * envelope(m, sr, 0.01, 0.02) * 0.15)
            m = int(rng.uniform(0.1, 0.25) * sr)
            progress = sum(len(p) for p in pieces) / (total_s * sr)
            f0 = f0_base * (1.1 - 0.25 * progress) * np.linspace(1.0, rng.uniform(0.85, 1.1), m)
            f1, f2, f3 = VOWELS[int(rng.integers(len(VOWELS)))]
            voice = harmonic_voice(f0, sr, [(f1, 90.0), (f2, 120.0), (f3, 180.0)])
            voice /= np.sqrt(np.mean(voice**2)) + 1e-12
            pieces.append(voice * np.hanning(m) ** 0.5 * rng.uniform(0.5, 1.0))
        pieces.append(np.zeros(int(rng.uniform(0.05, 0.2) * sr)))
    return np.concatenate(pieces)


def speech(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """espeak-ng speech (70%) or babble (30%, and always without espeak-ng), so models see both."""
    pick_espeak = rng.random() < 0.7  # drawn either way, so later draws do not depend on the machine
    if pick_espeak and speech_backend() == "espeak-ng":
        return espeak(rng, sr)
    return babble(rng, sr)


def baby_cry(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """An infant crying: 2-6 cries with rising-falling f0 (~350-550 Hz), voice breaks, gasps between."""
    base = rng.uniform(330, 430)
    formants = [(rng.uniform(900, 1300), 250.0), (rng.uniform(2400, 3200), 400.0), (rng.uniform(4000, 4800), 600.0)]
    pieces: list[np.ndarray] = []
    for _ in range(int(rng.integers(2, 7))):
        m = int(rng.uniform(0.4, 1.3) * sr)
        t = times(m, sr) / (m / sr)
        peak_at = rng.uniform(0.3, 0.6)
        contour = np.where(t < peak_at, t / peak_at, (1 - t) / (1 - peak_at))  # rise to a peak, then fall
        f0 = base * (1 + rng.uniform(0.15, 0.35) * contour) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(5, 9) * t * m / sr))
        if rng.random() < 0.4:  # a voice break: a sudden jump up (hyperphonation) for a moment
            a = int(rng.uniform(0.2, 0.7) * m)
            f0[a : a + int(rng.uniform(0.05, 0.15) * sr)] *= rng.uniform(1.5, 1.9)
        voice = harmonic_voice(f0, sr, formants, tilt_db_oct=-6.0)
        voice /= np.sqrt(np.mean(voice**2)) + 1e-12
        rough = shaped_noise(rng, m, sr, 1000, 6000) * rng.uniform(0.05, 0.25)
        pieces.append((voice + rough) * envelope(m, sr, 0.04, 0.1) * rng.uniform(0.6, 1.0))
        gasp = int(rng.uniform(0.15, 0.4) * sr)
        pieces.append(shaped_noise(rng, gasp, sr, 1500, 5000) * np.hanning(gasp) * rng.uniform(0.02, 0.08))
    return np.concatenate(pieces)
