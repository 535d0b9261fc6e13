"""Synthetic building soundscapes for training and demos (numpy only, deterministic by seed).

``synth_event`` renders one labelled sound (generators in ``synth_sounds``, ``synth_speech``
and ``synth_music``) in a random room; ``make_scene`` lays events over room ambience at a
chosen SNR and returns the audio with its timeline; ``make_captioned_scene`` adds a
one-sentence caption (``captions``). Timeline entries are the AUDIBLE stretches of each event (a
silence longer than ``split_gap_s`` splits an event, e.g. the pause of a smoke alarm's T3
cycle), so 1 s windows can be labelled from them directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rtaudio.train import synth_sounds as sounds
from rtaudio.train.synth_captions import caption_scene
from rtaudio.train.synth_music import music, music_backend
from rtaudio.train.synth_speech import baby_cry, speech, speech_backend

__all__ = [
    "LABELS",
    "SUSTAINED",
    "synth_event",
    "make_scene",
    "make_captioned_scene",
    "room_reverb",
    "ambience",
    "audible_segments",
    "speech_backend",
    "music_backend",
]

Event = tuple[str, float, float]

GENERATORS: dict[str, sounds.Generator] = {
    "smoke_alarm": sounds.smoke_alarm,
    "co_alarm": sounds.co_alarm,
    "doorbell": sounds.doorbell,
    "knock": sounds.knock,
    "glass_break": sounds.glass_break,
    "dog_bark": sounds.dog_bark,
    "speech": speech,
    "footsteps": sounds.footsteps,
    "water_running": sounds.water_running,
    "hvac_hum": sounds.hvac_hum,
    "siren": sounds.siren,
    "phone_ring": sounds.phone_ring,
    "door_slam": sounds.door_slam,
    "music": music,
    "vacuum_cleaner": sounds.vacuum_cleaner,
    "baby_cry": baby_cry,
    "typing": sounds.typing,
}
LABELS: tuple[str, ...] = tuple(GENERATORS)
SUSTAINED = frozenset({"water_running", "hvac_hum", "vacuum_cleaner", "music"})  # these honour ``duration_s``
FRAME_S = 0.02


def _convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:n]


def room_reverb(x: np.ndarray, rng: np.random.Generator, sample_rate: int, rt60_s: float | None = None, drr_db: float | None = None) -> np.ndarray:
    """Add a diffuse tail: convolution with exponentially decaying noise (RT60), at a direct-to-reverberant ratio."""
    rt60 = rt60_s if rt60_s is not None else rng.uniform(0.15, 0.7)
    drr = drr_db if drr_db is not None else rng.uniform(0.0, 12.0)
    t = sounds.times(max(2, int(rt60 * sample_rate)), sample_rate)
    tail = rng.standard_normal(len(t)) * np.exp(-6.91 * t / rt60)
    tail[: int(0.003 * sample_rate)] = 0.0  # the first reflections arrive after the direct sound
    tail /= np.sqrt(np.sum(tail**2)) + 1e-12
    dry = np.concatenate([x, np.zeros(len(tail) - 1)])
    return dry + _convolve(x, tail) * 10 ** (-drr / 20)


def ambience(rng: np.random.Generator, samples: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS room tone: pinkish noise with a slow level drift."""
    room = sounds.shaped_noise(rng, samples, sample_rate, 20, 8000, tilt_db_oct=rng.uniform(-4.5, -2.0))
    drift = 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * sounds.times(samples, sample_rate) + rng.uniform(0, 6.3))
    return room * drift


def _frame_rms(x: np.ndarray, sample_rate: int) -> np.ndarray:
    hop = int(FRAME_S * sample_rate)
    frames = len(x) // hop
    return np.sqrt(np.mean(x[: frames * hop].reshape(frames, hop) ** 2, axis=1)) if frames else np.zeros(0)


def audible_segments(clip: np.ndarray, sample_rate: int, floor: float = 0.0, range_db: float = 30.0, split_gap_s: float = 1.0) -> list[tuple[float, float]]:
    """(start, end) seconds where ``clip`` is within ``range_db`` of its peak and above ``floor`` RMS."""
    rms = _frame_rms(clip, sample_rate)
    if not rms.size or rms.max() <= floor:
        return []
    active = np.flatnonzero(rms > max(floor, rms.max() * 10 ** (-range_db / 20)))
    breaks = np.flatnonzero(np.diff(active) * FRAME_S > split_gap_s)
    starts, ends = np.r_[active[0], active[breaks + 1]], np.r_[active[breaks], active[-1]]
    return [(float(s * FRAME_S), float((e + 1) * FRAME_S)) for s, e in zip(starts, ends)]


def _active_rms(clip: np.ndarray, sample_rate: int) -> float:
    """RMS over the frames within 30 dB of the peak, so sparse sounds (knocks) get a fair level."""
    rms = _frame_rms(clip, sample_rate)
    return float(np.sqrt(np.mean(rms[rms > rms.max() * 10 ** (-1.5)] ** 2))) if rms.size and rms.max() > 0 else 0.0


def synth_event(label: str, rng: np.random.Generator, sample_rate: int = 16000, duration_s: float | None = None, reverb: bool = True) -> np.ndarray:
    """Render one ``label`` sound (float32, mono) in a random room at a random gain (peak -12..-1 dBFS)."""
    if label not in GENERATORS:
        raise ValueError(f"unknown label {label!r}; allowed: {', '.join(LABELS)}")
    if duration_s is not None and label not in SUSTAINED:
        raise ValueError(f"duration_s applies only to sustained sounds ({', '.join(sorted(SUSTAINED))}), not {label!r}")
    if not 8000 <= sample_rate <= 48000:
        raise ValueError(f"sample_rate {sample_rate} Hz is outside the allowed 8000..48000 Hz")
    clip = GENERATORS[label](rng, sample_rate, duration_s)
    if reverb:
        clip = room_reverb(clip, rng, sample_rate)
    peak = np.max(np.abs(clip)) + 1e-12
    return (clip / peak * 10 ** (rng.uniform(-12, -1) / 20)).astype(np.float32)


def make_scene(
    rng: np.random.Generator,
    duration_s: float,
    labels: Sequence[str] = LABELS,
    sample_rate: int = 16000,
    snr_db: tuple[float, float] = (3.0, 25.0),
    gap_s: tuple[float, float] = (0.3, 2.0),
    ambience_dbfs: tuple[float, float] = (-55.0, -40.0),
    background: str | None = None,
    background_snr_db: tuple[float, float] = (0.0, 10.0),
    overlap_p: float = 0.15,
    order: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[Event]]:
    """A scene of random ``labels`` events over ambience (and an optional sustained ``background``).

    ``order`` scripts the scene instead: exactly those events, in that order, ``gap_s`` apart
    (for demos). Returns float32 audio and ``[(label, onset_s, offset_s)]`` sorted by onset.
    """
    if order is not None:
        labels, overlap_p = list(order), 0.0
    bad = [lb for lb in [*labels, *([background] if background else [])] if lb not in GENERATORS]
    if bad or not labels:
        raise ValueError(f"labels {bad or list(labels)} not usable; allowed: {', '.join(LABELS)}")
    if background is not None and background not in SUSTAINED:
        raise ValueError(f"background {background!r} must be a sustained sound: {', '.join(sorted(SUSTAINED))}")
    total = int(duration_s * sample_rate)
    amb = 10 ** (rng.uniform(*ambience_dbfs) / 20)
    mix = ambience(rng, total, sample_rate) * amb
    events: list[Event] = []

    def add(label: str, clip: np.ndarray, onset: float, snr: tuple[float, float]) -> float:
        clip = clip * (amb * 10 ** (rng.uniform(*snr) / 20) / (_active_rms(clip, sample_rate) + 1e-12))
        i = int(onset * sample_rate)
        piece = clip[: max(0, total - i)]
        mix[i : i + len(piece)] += piece
        segments = audible_segments(piece, sample_rate, floor=0.5 * amb)
        events.extend((label, round(onset + s, 3), round(onset + e, 3)) for s, e in segments)
        return onset + (segments[-1][1] if segments else 0.0)

    if background is not None:
        add(background, synth_event(background, rng, sample_rate, duration_s=duration_s), 0.0, background_snr_db)
    onset = rng.uniform(*gap_s) if order is not None else rng.uniform(0.0, gap_s[1])
    script = iter(order) if order is not None else None
    while onset < duration_s - 0.3:
        label = next(script, None) if script is not None else str(rng.choice(list(labels)))
        if label is None:
            break
        end = add(label, synth_event(label, rng, sample_rate), onset, snr_db)
        if rng.random() < overlap_p:
            onset += max(0.2, rng.uniform(0.2, 0.8) * (end - onset))
        else:
            onset = end + rng.uniform(*gap_s)
    peak = float(np.max(np.abs(mix)))
    if peak > 0.99:
        mix *= 0.99 / peak
    return mix.astype(np.float32), sorted(events, key=lambda e: (e[1], e[0]))


def make_captioned_scene(rng: np.random.Generator, duration_s: float, **options: object) -> tuple[np.ndarray, list[Event], str]:
    """``make_scene`` (same ``options``) plus a one-sentence caption of its timeline, drawn from the same ``rng``."""
    audio, timeline = make_scene(rng, duration_s, **options)  # type: ignore[arg-type]
    return audio, timeline, caption_scene(timeline, rng)
