"""MFCC, timbre descriptors and pitch features from the shared spectrogram, against librosa on real signals."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

torch = pytest.importorskip("torch")
librosa = pytest.importorskip("librosa")

from rtaudio.dsp import MFCC, ConvSTFT, LogMel, PitchSalience, SpectralDescriptors, Voicing  # noqa: E402
from rtaudio.train.synth import synth_event  # noqa: E402

SR, N_FFT, HOP = 16000, 512, 160
T = np.arange(SR) / SR


def tone(f0: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * f0 * T)).astype(np.float32)


def harmonic(f0: float, seed: int = 0) -> np.ndarray:
    """Ten partials with a 0.7 spectral tilt and random phases (a voiced, speech-like source)."""
    rng = np.random.default_rng(seed)
    x = sum(0.7 ** (h - 1) * np.sin(2 * np.pi * h * f0 * T + rng.uniform(0, 2 * np.pi)) for h in range(1, 11) if h * f0 < SR / 2 - 100)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def event(label: str, seed: int) -> np.ndarray:
    return np.resize(synth_event(label, np.random.default_rng(seed), SR), SR).astype(np.float32)


@cache
def signals() -> dict[str, np.ndarray]:
    return {
        "tone": tone(440),
        "chirp": (0.3 * np.sin(2 * np.pi * (100 * T + 3000 * T**2))).astype(np.float32),
        "noise": (0.1 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32),
        "speech": event("speech", 0),
        "doorbell": event("doorbell", 1),
        "glass_break": event("glass_break", 2),
    }


def power(x: np.ndarray) -> torch.Tensor:
    return ConvSTFT(N_FFT, HOP)(torch.from_numpy(x)[None])


def librosa_stft_magnitude(x: np.ndarray) -> np.ndarray:
    return np.abs(librosa.stft(x, n_fft=N_FFT, hop_length=HOP, center=True, pad_mode="constant"))


def librosa_descriptors(S: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "centroid": librosa.feature.spectral_centroid(S=S, sr=SR, n_fft=N_FFT),
        "bandwidth": librosa.feature.spectral_bandwidth(S=S, sr=SR, n_fft=N_FFT),
        "flatness": librosa.feature.spectral_flatness(S=S),
        "rolloff": librosa.feature.spectral_rolloff(S=S, sr=SR, n_fft=N_FFT, roll_percent=0.85),
        "contrast": librosa.feature.spectral_contrast(S=S, sr=SR, n_fft=N_FFT),
    }


# --- MFCC ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(signals()))
def test_mfcc_matches_librosa_on_the_same_log_mel(name: str) -> None:
    x = signals()[name]
    ours = MFCC(64, 20)(LogMel(SR, N_FFT, HOP, 64, fmin=50.0)(torch.from_numpy(x)[None]))[0].numpy()
    mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=64, fmin=50.0, center=True, pad_mode="constant")
    # LogMel's floor is log(mel + 1e-6); power_to_db of the same floored mel is the same log in dB
    ref = librosa.feature.mfcc(S=librosa.power_to_db(mel + 1e-6, top_db=80.0), n_mfcc=20)
    assert ours.shape == ref.shape == (20, 101)
    assert np.abs(ours - ref).max() < 2e-3  # dB-scaled coefficients reach +-600


def test_mfcc_matches_librosa_from_the_waveform_where_the_floor_does_not_bite() -> None:
    x = signals()["noise"]  # every mel bin far above LogMel's 1e-6 floor
    ours = MFCC(64, 20)(LogMel(SR, N_FFT, HOP, 64, fmin=50.0)(torch.from_numpy(x)[None]))[0].numpy()
    ref = librosa.feature.mfcc(y=x, sr=SR, n_mfcc=20, n_fft=N_FFT, hop_length=HOP, n_mels=64, fmin=50.0, center=True, pad_mode="constant")
    assert np.abs(ours - ref).max() < 0.02


def test_mfcc_rejects_more_coefficients_than_mel_bands() -> None:
    with pytest.raises(ValueError, match="n_mfcc=80 must be between 1 and n_mels=64"):
        MFCC(64, 80)


# --- timbre descriptors ----------------------------------------------------------------------------

# absolute tolerances per descriptor: Hz for centroid/bandwidth/rolloff, ratio for flatness, dB for contrast
SAME_SPECTRUM = {"centroid": 0.01, "bandwidth": 0.02, "flatness": 1e-6, "rolloff": 0.0, "contrast": 0.01}


@pytest.mark.parametrize("name", list(signals()))
def test_descriptors_match_librosa_on_the_same_spectrum(name: str) -> None:
    p = power(signals()[name])
    ours = SpectralDescriptors(SR, N_FFT)(p)[0].numpy()
    ref = librosa_descriptors(np.sqrt(p[0].double().numpy()))
    slices = SpectralDescriptors(SR, N_FFT).slices
    for key, tolerance in SAME_SPECTRUM.items():
        err = np.abs(ours[slices[key]] - ref[key]).max()
        assert err <= tolerance, f"{key}: max error {err:.3g} > {tolerance}"


@pytest.mark.parametrize("name", list(signals()))
def test_descriptors_match_librosa_from_the_waveform(name: str) -> None:
    x = signals()[name]
    ours = SpectralDescriptors(SR, N_FFT)(power(x))[0].numpy()
    ref = librosa_descriptors(librosa_stft_magnitude(x))
    slices = SpectralDescriptors(SR, N_FFT).slices
    assert np.abs(ours[slices["centroid"]] - ref["centroid"]).max() < 0.02
    assert np.abs(ours[slices["bandwidth"]] - ref["bandwidth"]).max() < 0.05
    assert np.abs(ours[slices["flatness"]] - ref["flatness"]).max() < 1e-5
    rolloff = np.abs(ours[slices["rolloff"]] - ref["rolloff"])
    assert rolloff.max() <= SR / N_FFT and np.mean(rolloff == 0) >= 0.99  # a float32 tie moves it one bin at most
    if name in ("noise", "speech", "glass_break"):  # broadband: valleys well above float32 rounding of the STFT
        assert np.abs(ours[slices["contrast"]] - ref["contrast"]).max() < 0.02
    else:  # pure partials: a valley ~100 dB under the peak is float32 rounding, librosa's is float64's
        assert np.abs(ours[slices["contrast"]] - ref["contrast"]).max() < 15.0


def test_descriptor_values_say_what_they_measure() -> None:
    d = SpectralDescriptors(SR, N_FFT)
    tone_rows, noise_rows = d(power(tone(1000)))[0].numpy(), d(power(signals()["noise"]))[0].numpy()
    assert np.median(tone_rows[d.slices["centroid"]]) == pytest.approx(1000, abs=20)
    assert np.median(tone_rows[d.slices["flatness"]]) < 1e-3 < 0.3 < np.median(noise_rows[d.slices["flatness"]])
    band = 3  # 800-1600 Hz holds the tone
    assert np.median(tone_rows[d.slices["contrast"]][band]) > np.median(noise_rows[d.slices["contrast"]][band]) + 20


def test_contrast_bands_refuse_bands_beyond_nyquist() -> None:
    with pytest.raises(ValueError, match="exceed Nyquist"):
        SpectralDescriptors(8000, N_FFT, fmin=400.0)


# --- pitch salience and voicing ---------------------------------------------------------------------


def salience_f0(x: np.ndarray) -> np.ndarray:
    module = PitchSalience(SR, N_FFT)
    return module.f0s[module(power(x))[0].argmax(0).numpy()]


def semitones(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(12 * np.log2(a / b))


@pytest.mark.parametrize(
    "x",
    [tone(220), tone(330), tone(440), tone(700), harmonic(80), harmonic(120, 1), harmonic(150, 2), harmonic(310, 3)],
    ids=["tone220", "tone330", "tone440", "tone700", "harm80", "harm120", "harm150", "harm310"],
)
def test_salience_peak_is_the_yin_f0(x: np.ndarray) -> None:
    # pure tones below ~130 Hz are not checked: in a 32 ms frame they cannot be told from a subharmonic's comb
    ref = librosa.yin(x, fmin=50, fmax=1000, sr=SR, frame_length=1024, hop_length=HOP, center=True, pad_mode="constant")
    assert np.mean(semitones(salience_f0(x), ref) < 1.0) >= 0.95


def test_salience_follows_speech_pitch() -> None:
    within, voiced = 0, 0
    for seed in range(3):
        x = event("speech", 10 + seed)
        f0, flag, _ = librosa.pyin(x, fmin=50, fmax=1000, sr=SR, frame_length=1024, hop_length=HOP, center=True, pad_mode="constant")
        mask = flag & np.isfinite(f0)
        within += int(np.sum(semitones(salience_f0(x)[mask], f0[mask]) < 1.0))
        voiced += int(mask.sum())
    assert voiced > 50
    assert within / voiced >= 0.7  # speech pitch moves within a frame; pyin uses 64 ms frames, we 32 ms


def test_voicing_is_high_for_periodic_and_low_for_noise() -> None:
    voicing = Voicing(SR, N_FFT)
    level = {
        name: float(np.median(voicing(power(x))[0, 0].numpy()))
        for name, x in {"tone": tone(440), "harmonic": harmonic(150), "noise": signals()["noise"], "water": event("water_running", 3)}.items()
    }
    assert min(level["tone"], level["harmonic"]) > 0.9
    assert max(level["noise"], level["water"]) < 0.4


def test_voicing_separates_voiced_from_unvoiced_speech() -> None:
    x = event("speech", 10)
    _, flag, _ = librosa.pyin(x, fmin=50, fmax=1000, sr=SR, frame_length=1024, hop_length=HOP, center=True, pad_mode="constant")
    p = power(x)
    v = Voicing(SR, N_FFT)(p)[0, 0].numpy()
    energy = p[0].sum(0).numpy()
    unvoiced = ~flag & (energy > 1e-3 * energy.max())  # audible but aperiodic
    assert np.median(v[flag]) > 0.8 and np.median(v[flag]) > np.median(v[unvoiced]) + 0.3


def test_pitch_modules_refuse_impossible_ranges() -> None:
    with pytest.raises(ValueError, match="Nyquist"):
        PitchSalience(SR, N_FFT, fmin=50, fmax=9000)
    with pytest.raises(ValueError, match="raise fmin or n_fft"):
        Voicing(SR, N_FFT, fmin=40.0)
