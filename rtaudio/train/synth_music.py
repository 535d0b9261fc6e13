"""Music for synthetic scenes: a random short score, rendered by fluidsynth with a General-MIDI
soundfont when installed, by additive synthesis otherwise.

All random draws happen while composing the ``Score`` (melody, chords, drums, instruments, a
seed for drum noise), never while rendering, so the same seed gives the same scene timeline
whichever backend plays it. ``music_backend()`` says which is in use.
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from rtaudio.train.synth_sounds import Rng, shaped_noise, times
from rtaudio.train.synth_speech import resample

SOUNDFONTS = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/sounds/sf2/default-GM.sf2"),
    Path("/usr/share/soundfonts/FluidR3_GM.sf2"),
    Path("/usr/share/soundfonts/default.sf2"),
)
# General-MIDI programs that sound like a building's radio, a rehearsal or a phone speaker
MELODY_PROGRAMS = (0, 4, 11, 24, 25, 40, 56, 65, 71, 73, 80, 81)
CHORD_PROGRAMS = (0, 4, 16, 19, 24, 48, 52, 88, 89)
DRUMS = {"kick": 36, "snare": 38, "hat": 42}
MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 0), (1, 4, 0, 0), (5, 3, 0, 4), (0, 5, 3, 4))


@dataclass(frozen=True)
class Note:
    """One note: onset and length in seconds, MIDI pitch and velocity, MIDI channel (9 = drums)."""

    start: float
    length: float
    pitch: int
    velocity: int
    channel: int


@dataclass(frozen=True)
class Score:
    """A short piece: notes, the GM program of each melodic channel, its length, a seed for noise."""

    notes: tuple[Note, ...]
    programs: dict[int, int]
    duration_s: float
    seed: int


def soundfont() -> Path | None:
    """The first General-MIDI soundfont found on this machine, if any."""
    return next((p for p in SOUNDFONTS if p.is_file()), None)


def music_backend() -> str:
    """'fluidsynth' when the program and a GM soundfont are installed, else 'procedural'."""
    return "fluidsynth" if shutil.which("fluidsynth") and soundfont() is not None else "procedural"


def compose(rng: Rng, duration_s: float) -> Score:
    """A random piece: a chord progression, a stepwise melody over it, and (sometimes) a drum groove."""
    beat = 60.0 / rng.uniform(70, 140)
    root = int(rng.integers(55, 68))
    scale = MAJOR if rng.random() < 0.6 else MINOR
    progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    bar = beat * int(rng.choice([2, 4]))
    parts = rng.random(3) < (0.9, 0.8, 0.5)  # melody, chords, drums
    if not parts[:2].any():
        parts[0] = True
    notes: list[Note] = []
    for i, start in enumerate(np.arange(0.0, duration_s, bar)):
        degree = progression[i % len(progression)]
        if parts[1]:
            for k in (0, 2, 4):  # a triad from the scale
                d = degree + k
                pitch = root - 12 + scale[d % 7] + 12 * (d // 7)
                notes.append(Note(float(start), float(bar), pitch, int(rng.integers(50, 80)), 1))
    step, start = int(rng.integers(0, 7)), 0.0
    while parts[0] and start < duration_s:
        length = beat * float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0]))
        step = int(np.clip(step + rng.choice([-2, -1, -1, 0, 1, 1, 2, 4]), -3, 11))
        pitch = root + scale[step % 7] + 12 * (step // 7)
        notes.append(Note(start, length * rng.uniform(0.7, 0.95), pitch, int(rng.integers(70, 110)), 0))
        start += length
    groove = rng.random(8) < 0.85  # which eighth-note hats play
    for eighth, start in enumerate(np.arange(0.0, duration_s, beat / 2) if parts[2] else []):
        hit = eighth % 8
        for drum, on in (("kick", hit in (0, 4) or (hit == 5 and groove[1])), ("snare", hit in (2, 6)), ("hat", groove[hit])):
            if on:
                notes.append(Note(float(start), 0.1, DRUMS[drum], int(rng.integers(60, 110)), 9))
    programs = {0: int(rng.choice(MELODY_PROGRAMS)), 1: int(rng.choice(CHORD_PROGRAMS))}
    kept = tuple(n for n in notes if n.start < duration_s - 0.1)
    return Score(kept, programs, duration_s, int(rng.integers(2**31)))


def midi_bytes(score: Score, ticks_per_beat: int = 480) -> bytes:
    """A format-0 Standard MIDI File of ``score`` at 120 bpm (so one second is 960 ticks)."""

    def vlq(value: int) -> bytes:
        out = [value & 0x7F]
        while value := value >> 7:
            out.append((value & 0x7F) | 0x80)
        return bytes(reversed(out))

    per_s = 2 * ticks_per_beat
    events = [(0, bytes([0xC0 | ch, prog])) for ch, prog in score.programs.items()]
    for n in score.notes:
        events.append((round(n.start * per_s), bytes([0x90 | n.channel, n.pitch, n.velocity])))
        events.append((round((n.start + n.length) * per_s), bytes([0x80 | n.channel, n.pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1][0] & 0xF0 != 0x80))  # note-offs before note-ons at the same tick
    track, now = bytearray(), 0
    for tick, message in events:
        track += vlq(tick - now) + message
        now = tick
    track += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks_per_beat) + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def render_fluidsynth(score: Score, sr: int) -> np.ndarray:
    """Play ``score`` through fluidsynth (its own reverb and chorus off: the scene adds the room)."""
    font = soundfont()
    if font is None or not shutil.which("fluidsynth"):
        raise RuntimeError("fluidsynth and a General-MIDI soundfont are needed; install the fluidsynth and fluid-soundfont-gm packages")
    rate = sr if 8000 <= sr <= 96000 else 16000
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "score.mid", Path(tmp) / "music.wav"
        mid.write_bytes(midi_bytes(score))
        settings = ["-R", "0", "-C", "0", "-g", "1.0", "-o", "synth.dynamic-sample-loading=1"]  # load only the samples played
        cmd = ["fluidsynth", "-ni", "-q", *settings, "-O", "float", "-T", "wav", "-F", str(wav), "-r", str(rate), str(font), str(mid)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        audio, got = sf.read(wav, dtype="float64", always_2d=True)
    return resample(audio.mean(axis=1), got, sr)


# additive timbre per GM family (program // 8): harmonic amplitude exponent, decay time (s, 0 = sustained), attack (s)
FAMILY_TIMBRE = {
    0: (1.2, 1.2, 0.003),
    1: (1.5, 0.8, 0.002),
    2: (0.7, 0.0, 0.01),
    3: (1.3, 0.9, 0.004),
    5: (1.0, 0.0, 0.08),
    6: (1.0, 0.0, 0.06),
    7: (0.8, 0.0, 0.03),
    8: (2.5, 0.0, 0.04),
    9: (0.6, 0.0, 0.05),
    10: (1.0, 0.0, 0.2),
    11: (1.1, 0.0, 0.15),
}


def _tone(note: Note, program: int, sr: int) -> np.ndarray:
    """One pitched note by additive synthesis with an ADSR envelope shaped by the instrument family."""
    slope, decay, attack = FAMILY_TIMBRE.get(program // 8, (1.2, 0.0, 0.02))
    release = 0.08
    n = int((note.length + release) * sr)
    t = times(n, sr)
    f0 = 440.0 * 2 ** ((note.pitch - 69) / 12)
    vibrato = 1 + (0.004 * np.sin(2 * math.pi * 5.5 * t) if decay == 0 else 0.0)
    phase = 2 * math.pi * f0 * np.cumsum(vibrato) / sr
    partials = [h for h in range(1, 12) if h * f0 < 0.45 * sr]
    wave = sum(h**-slope * np.sin(h * phase) * (np.exp(-t * h**0.5 / decay) if decay else 1.0) for h in partials)  # upper partials die first
    held = int(note.length * sr)
    env = np.ones(n)
    a = max(1, min(held, int(attack * sr)))
    env[:a] = np.linspace(0, 1, a)
    if not decay:
        env[a:held] = 1 - 0.3 * (1 - np.exp(-t[: held - a] / 0.15))  # decay to a 0.7 sustain
    env[held:] = env[held - 1] * np.linspace(1, 0, n - held)
    return wave * env * note.velocity / 127


def _drum(note: Note, noise: Rng, sr: int) -> np.ndarray:
    """Kick (falling sine), snare (noise over a low tone) or closed hi-hat (high noise tick)."""
    n = int(0.3 * sr)
    t = times(n, sr)
    if note.pitch == DRUMS["kick"]:
        hit = np.sin(2 * math.pi * np.cumsum(50 + 100 * np.exp(-t / 0.03)) / sr) * np.exp(-t / 0.12)
    elif note.pitch == DRUMS["snare"]:
        hit = (shaped_noise(noise, n, sr, 1000, 8000) * 0.5 + np.sin(2 * math.pi * 185 * t)) * np.exp(-t / 0.06)
    else:
        hit = shaped_noise(noise, n, sr, 6000, 12000) * 0.3 * np.exp(-t / 0.02)
    return hit * note.velocity / 127


def render_procedural(score: Score, sr: int) -> np.ndarray:
    """Play ``score`` by additive synthesis (pitched parts) and simple drum models."""
    noise = np.random.default_rng(score.seed)
    out = np.zeros(int((score.duration_s + 0.5) * sr))
    for note in score.notes:
        clip = _drum(note, noise, sr) if note.channel == 9 else _tone(note, score.programs[note.channel], sr)
        i = int(note.start * sr)
        j = min(len(out), i + len(clip))
        out[i:j] += clip[: j - i] * (0.6 if note.channel == 1 else 1.0)
    return out


def music(rng: Rng, sr: int, duration_s: float | None) -> np.ndarray:
    """A short piece (3-8 s, or ``duration_s``): fluidsynth (75%, when installed) or additive synthesis."""
    duration = duration_s or float(rng.uniform(3.0, 8.0))
    pick_fluidsynth = rng.random() < 0.75  # drawn either way, so later draws do not depend on the machine
    score = compose(rng, duration)
    use = pick_fluidsynth and music_backend() == "fluidsynth"
    audio = render_fluidsynth(score, sr) if use else render_procedural(score, sr)
    n = int(duration * sr)
    audio = np.pad(audio, (0, max(0, n - len(audio))))[:n]
    fade = min(n, int(0.05 * sr))
    audio[n - fade :] *= np.linspace(1, 0, fade)
    return audio
