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


def _runs(mask: np.ndarray, hop_s: float) -> list[tuple[bool, float]]:
    """(state, seconds) for each run of equal values in a boolean frame mask."""
    edges = np.flatnonzero(np.diff(mask.astype(int))) + 1
    bounds = np.r_[0, edges, mask.size]
    return [(bool(mask[a]), (b - a) * hop_s) for a, b in zip(bounds[:-1], bounds[1:])]


def _envelope_db(clip: np.ndarray, hop_s: float) -> np.ndarray:
    hop = int(hop_s * SR)
    frames = clip[: clip.size // hop * hop].reshape(-1, hop)
    rms = np.sqrt(np.mean(frames**2, axis=1)) + 1e-12
    return 20 * np.log10(rms / rms.max())


@pytest.mark.parametrize("seed", range(4))
def test_siren_sweeps_within_its_band(seed: int) -> None:
    clip = synth_event("siren", np.random.default_rng(seed), SR, reverb=False)
    win = 2048
    frames = np.lib.stride_tricks.sliding_window_view(clip, win)[:: win // 2] * np.hanning(win)
    spectra = np.abs(np.fft.rfft(frames, axis=1))
    loud = spectra.max(axis=1) > 0.1 * spectra.max()
    peaks = np.fft.rfftfreq(win, 1 / SR)[np.argmax(spectra[loud], axis=1)]
    assert np.all((peaks >= 580) & (peaks <= 1520)), f"peaks outside 600-1500 Hz: {peaks.min():.0f}..{peaks.max():.0f}"
    assert peaks.max() - peaks.min() > 300, "the siren should sweep, not hold one tone"


def test_phone_ring_follows_known_cadences() -> None:
    from rtaudio.train.synth_sounds import PHONE_CADENCES

    seen = set()
    for seed in range(12):
        clip = synth_event("phone_ring", np.random.default_rng(seed), SR, reverb=False)
        runs = _runs(_envelope_db(clip, 0.01) > -20, 0.01)
        on = [s for state, s in runs if state]
        off = [s for state, s in runs if not state]
        matched = [
            name
            for name, _, cadence in PHONE_CADENCES
            if np.allclose(on, [c[0] for c in cadence * len(on)][: len(on)], rtol=0.06, atol=0.03)
            and np.allclose(off, [c[1] for c in cadence * len(on)][: len(off)], rtol=0.06, atol=0.03)
        ]
        assert matched, f"seed {seed}: on {on} off {off} match no cadence"
        seen.update(matched)
    assert seen == {name for name, _, _ in PHONE_CADENCES}


@pytest.mark.parametrize("seed", range(4))
def test_typing_clicks_at_five_to_ten_per_second(seed: int) -> None:
    clip = synth_event("typing", np.random.default_rng(seed), SR, reverb=False)
    env = _envelope_db(clip, 0.005) > -25
    onsets = np.flatnonzero(env[1:] & ~env[:-1]) + 1
    onsets = onsets[np.r_[True, np.diff(onsets) > 8]]  # one keystroke = click + thud within 40 ms
    rate = (onsets.size - 1) / ((onsets[-1] - onsets[0]) * 0.005)
    assert onsets.size >= 8 and 4.0 <= rate <= 11.0, f"{onsets.size} clicks at {rate:.1f}/s"
    gaps = np.diff(onsets) * 0.005
    assert gaps.std() > 0.1 * gaps.mean(), "keystrokes should not be evenly spaced"


@pytest.mark.parametrize("seed", range(3))
def test_baby_cry_pitch_and_door_slam_is_low_and_short(seed: int) -> None:
    cry = synth_event("baby_cry", np.random.default_rng(seed), SR, reverb=False).astype(np.float64)
    win = 1024
    frames = np.lib.stride_tricks.sliding_window_view(cry, win)[::512]
    frames = frames[np.sqrt(np.mean(frames**2, axis=1)) > 0.3 * np.sqrt(np.mean(cry**2))]
    f0s = []
    for frame in frames:
        ac = np.correlate(frame, frame, "full")[win - 1 :]
        lo, hi = SR // 1000, SR // 250  # search 250-1000 Hz
        f0s.append(SR / (lo + np.argmax(ac[lo:hi])))
    assert 330 <= np.median(f0s) <= 600, f"median f0 {np.median(f0s):.0f} Hz"
    slam = synth_event("door_slam", np.random.default_rng(seed), SR, reverb=False)
    spectrum = np.abs(np.fft.rfft(slam)) ** 2
    freqs = np.fft.rfftfreq(slam.size, 1 / SR)
    assert slam.size / SR < 1.5 and spectrum[freqs < 400].sum() > 0.5 * spectrum.sum()  # a thud, not a click


@pytest.fixture(params=["fluidsynth", "procedural"])
def music_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each music backend in turn (fluidsynth only where installed)."""
    from rtaudio.train import synth_music

    if request.param == "fluidsynth" and synth_music.music_backend() != "fluidsynth":
        pytest.skip("fluidsynth or a General-MIDI soundfont is not installed")
    monkeypatch.setattr(synth_music, "music_backend", lambda: request.param)
    return str(request.param)


def test_music_is_deterministic_varied_and_tonal(music_backend: str) -> None:
    from rtaudio.train.synth_music import music

    a = music(np.random.default_rng(21), SR, 3.0)
    b = music(np.random.default_rng(21), SR, 3.0)
    c = music(np.random.default_rng(22), SR, 3.0)
    assert a.size == c.size == 3 * SR and np.array_equal(a, b) and not np.allclose(a, c)
    assert np.sqrt(np.mean(a**2)) > 1e-3, f"{music_backend}: silent"
    spectrum = np.abs(np.fft.rfft(a))
    assert spectrum.max() > 20 * np.median(spectrum), f"{music_backend}: no clear pitched partials"


def test_music_backend_does_not_change_the_scene(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same seed, either backend: the same random draws, so the same events in the same order."""
    from rtaudio.train import synth_music

    if synth_music.music_backend() != "fluidsynth":
        pytest.skip("needs fluidsynth to compare the two backends")
    results = []
    for backend in ("fluidsynth", "procedural"):
        monkeypatch.setattr(synth_music, "music_backend", lambda backend=backend: backend)
        rng = np.random.default_rng(4)
        _, timeline = make_scene(rng, 10.0, labels=("music", "knock", "door_slam"))
        results.append((timeline, rng.random()))
    (first, draw_a), (second, draw_b) = results
    assert draw_a == draw_b and [e[0] for e in first] == [e[0] for e in second] and "music" in {e[0] for e in first}
    for x, y in zip(first, second):  # music's audible edges may differ by a frame or two
        assert abs(x[1] - y[1]) <= 0.1 and abs(x[2] - y[2]) <= 0.1, (x, y)


def test_music_backend_reports_what_is_installed() -> None:
    import shutil

    from rtaudio.train.synth_music import music_backend, soundfont

    expected = "fluidsynth" if shutil.which("fluidsynth") and soundfont() else "procedural"
    assert music_backend() == expected
