"""Synthetic building sounds: deterministic, audible, and shaped like the real thing."""

from __future__ import annotations

import numpy as np
import pytest

from rtaudio.train.synth import LABELS, audible_segments, make_scene, speech_backend, synth_event
from rtaudio.train.synth_speech import babble

SR = 16000


def _frame_rms(x: np.ndarray, at_s: float, width_s: float = 0.1) -> float:
    i = int((at_s - width_s / 2) * SR)
    return float(np.sqrt(np.mean(x[i : i + int(width_s * SR)] ** 2)))


def test_same_seed_same_audio_different_seed_different() -> None:
    for label in LABELS:
        a = synth_event(label, np.random.default_rng(3), SR)
        b = synth_event(label, np.random.default_rng(3), SR)
        c = synth_event(label, np.random.default_rng(4), SR)
        assert np.array_equal(a, b), label
        assert a.shape != c.shape or not np.allclose(a, c), label
    scene_a, events_a = make_scene(np.random.default_rng(9), 12.0)
    scene_b, events_b = make_scene(np.random.default_rng(9), 12.0)
    assert np.array_equal(scene_a, scene_b) and events_a == events_b


@pytest.mark.parametrize("label", LABELS)
def test_each_label_is_audible_and_of_plausible_length(label: str) -> None:
    rng = np.random.default_rng(11)
    for _ in range(3):
        clip = synth_event(label, rng, SR)
        assert clip.dtype == np.float32 and np.isfinite(clip).all()
        assert 0.3 <= clip.size / SR <= 12.0, f"{label}: {clip.size / SR:.2f} s"
        assert 0.2 <= np.abs(clip).max() <= 0.9  # peak -12..-1 dBFS
        segments = audible_segments(clip, SR)
        assert segments and segments[0][0] < 0.2, f"{label}: should start at once, got {segments}"


def test_sustained_sounds_honour_duration_and_others_refuse_it() -> None:
    clip = synth_event("hvac_hum", np.random.default_rng(0), SR, duration_s=7.0, reverb=False)
    assert clip.size == 7 * SR
    with pytest.raises(ValueError, match="sustained"):
        synth_event("knock", np.random.default_rng(0), SR, duration_s=3.0)
    with pytest.raises(ValueError, match="allowed: smoke_alarm"):
        synth_event("chainsaw", np.random.default_rng(0), SR)


@pytest.mark.parametrize("seed", range(4))
def test_smoke_alarm_has_the_temporal_three_envelope(seed: int) -> None:
    clip = synth_event("smoke_alarm", np.random.default_rng(seed), SR, reverb=False)
    peak = max(_frame_rms(clip, 0.25), 1e-9)
    for k in range(3):  # three beeps 1 s apart, 0.5 s on, 0.5 s off
        assert _frame_rms(clip, k + 0.25) > 0.5 * peak, f"beep {k} missing"
        if k < 2:
            assert _frame_rms(clip, k + 0.75) < 1e-3 * peak, f"gap after beep {k} not silent"
    cycles = len(audible_segments(clip, SR))  # the 1.5 s pause splits cycles; 0.5 s gaps do not
    assert cycles in (1, 2) and abs(clip.size / SR - (2.5 if cycles == 1 else 6.5)) < 0.3
    if cycles == 2:
        assert _frame_rms(clip, 3.2) < 1e-3 * peak and _frame_rms(clip, 4.25) > 0.5 * peak


@pytest.mark.parametrize("seed", range(3))
def test_alarm_energy_peaks_near_3_khz(seed: int) -> None:
    for label in ("smoke_alarm", "co_alarm"):
        clip = synth_event(label, np.random.default_rng(seed), SR)
        spectrum = np.abs(np.fft.rfft(clip))
        peak_hz = np.fft.rfftfreq(clip.size, 1 / SR)[np.argmax(spectrum)]
        assert 2900 <= peak_hz <= 3550, f"{label}: peak at {peak_hz:.0f} Hz"


def test_co_alarm_has_four_short_beeps() -> None:
    clip = np.pad(synth_event("co_alarm", np.random.default_rng(2), SR, reverb=False), (0, SR))
    on = np.array([_frame_rms(clip, t, 0.02) for t in np.arange(0.01, 0.8, 0.02)]) > 1e-3
    onsets = np.flatnonzero(on[1:] & ~on[:-1]).size + int(on[0])
    assert onsets == 4


def test_scene_timeline_matches_its_audio() -> None:
    audio, events = make_scene(np.random.default_rng(5), 20.0, labels=("knock", "doorbell"), background="hvac_hum")
    assert audio.dtype == np.float32 and audio.size == 20 * SR and np.abs(audio).max() <= 0.99
    assert [e[1] for e in events] == sorted(e[1] for e in events)
    assert {e[0] for e in events} <= {"knock", "doorbell", "hvac_hum"} and {"knock", "doorbell"} & {e[0] for e in events}
    hum = [e for e in events if e[0] == "hvac_hum"]
    assert hum and hum[0][1] < 0.5 and hum[-1][2] > 19.5
    for _, onset, offset in events:
        assert 0 <= onset < offset <= 20.0



def test_timeline_marks_where_the_sound_is() -> None:
    audio, events = make_scene(np.random.default_rng(5), 20.0, labels=("knock",), snr_db=(20, 20), gap_s=(1.5, 2.0))
    inside = np.zeros(audio.size, bool)
    for _, onset, offset in events:
        inside[int(onset * SR) : int(offset * SR)] = True
    assert events and np.sqrt(np.mean(audio[inside] ** 2)) > 3 * np.sqrt(np.mean(audio[~inside] ** 2))


def test_scripted_scene_keeps_the_order() -> None:
    order = ("speech", "doorbell", "glass_break")
    _, events = make_scene(np.random.default_rng(1), 30.0, order=order, gap_s=(1.0, 1.0))
    firsts = []
    for label, _, _ in events:
        if label not in firsts:
            firsts.append(label)
    assert tuple(firsts) == order
    with pytest.raises(ValueError, match="background"):
        make_scene(np.random.default_rng(1), 5.0, background="knock")


def test_speech_backend_and_babble() -> None:
    assert speech_backend() in ("espeak-ng", "babble")
    voice = babble(np.random.default_rng(0), SR)
    assert 1.0 <= voice.size / SR <= 5.0
    spectrum = np.abs(np.fft.rfft(voice)) ** 2
    freqs = np.fft.rfftfreq(voice.size, 1 / SR)
    assert spectrum[freqs < 4000].sum() > 0.8 * spectrum.sum()  # voiced energy sits in the formant range
