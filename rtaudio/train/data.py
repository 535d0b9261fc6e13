"""Labelled clips from a manifest CSV, FSD50K, ESC-50 or the synthetic generator, captioned clips
from AudioCaps or Clotho, and their Dataset.

``load_clips(spec)`` turns a data spec (``rtaudio.train.config``) into ``Clip``s with a split
each; ``ClipDataset`` reads, mixes to mono, resamples, crops or pads them to the model's
window and gives multi-hot targets. Everything is deterministic: splits come from a hash of
the clip's name, synthetic scenes from their seed.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import torch
from torch.utils.data import Dataset, Sampler

from rtaudio.audiofile import read_mono
from rtaudio.train.config import AudioCapsData, ClothoData, DataConfig, Esc50Data, Fsd50kData, ManifestData, SplitFractions, SyntheticData

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A data spec, manifest row or audio file that cannot be used; the message names it."""


@dataclass
class Clip:
    """One piece of audio: a file, or samples held in memory (synthetic), with labels and/or captions.

    ``tagged`` False marks a caption-only clip (AudioCaps, Clotho, a manifest row with a caption
    and no labels): its missing labels mean "not annotated", so it never serves as a tag negative.
    """

    path: Path | None
    labels: list[str]
    split: str  # "train" | "val" | "test"
    captions: list[str] = field(default_factory=list)
    audio: np.ndarray | None = None  # float32 mono at ``sample_rate`` when in memory
    sample_rate: int | None = None  # of ``audio``
    tagged: bool = True


def hash_split(key: str, spec: SplitFractions) -> str:
    """A stable split for ``key`` (same name -> same split on every machine and run)."""
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return "val" if u < spec.val_fraction else "test" if u < spec.val_fraction + spec.test_fraction else "train"


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a BOM (Excel, some Clotho copies) is not part of a column name
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(reader.fieldnames or []) or 'none'}, required {', '.join(required)}"
            )
        return list(reader)


def _manifest(spec: ManifestData) -> list[Clip]:
    base = spec.path.parent
    clips = []
    for line, row in enumerate(_read_csv(spec.path, ("path", "labels")), start=2):
        where = f"{spec.path}:{line}"
        if not (row.get("path") or "").strip():
            raise DataError(f"{where}: empty path")
        labels = [lb.strip() for lb in (row.get("labels") or "").split(";") if lb.strip()]
        split = (row.get("split") or "").strip().lower() or hash_split(row["path"].strip(), spec)
        if split not in SPLITS:
            raise DataError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)} (or empty for a hashed split)")
        caption = (row.get("caption") or "").strip()
        captions = [caption] if caption else []
        clips.append(Clip(base / row["path"].strip(), labels, split, captions, tagged=bool(labels or not caption)))
    if not clips:
        raise DataError(f"{spec.path}: no rows")
    return clips


def _fsd50k(spec: Fsd50kData) -> list[Clip]:
    truth = spec.root / "FSD50K.ground_truth"
    clips = []
    for part in ("dev", "eval"):
        rows = _read_csv(truth / f"{part}.csv", ("fname", "labels") + (("split",) if part == "dev" else ()))
        audio = spec.root / f"FSD50K.{part}_audio"
        for row in rows:
            split = row["split"].strip() if part == "dev" else "test"
            if split not in SPLITS:
                raise DataError(f"{truth / f'{part}.csv'}: fname {row['fname']}: split {split!r} is not train or val")
            labels = [lb.strip() for lb in row["labels"].split(",") if lb.strip()]
            clips.append(Clip(audio / f"{row['fname'].strip()}.wav", labels, split))
    return clips


def _esc50(spec: Esc50Data) -> list[Clip]:
    meta = spec.root / "meta" / "esc50.csv"
    clips = []
    for row in _read_csv(meta, ("filename", "fold", "category")):
        fold = int(row["fold"])
        split = "test" if fold == spec.test_fold else "val" if fold == spec.val_fold else "train"
        clips.append(Clip(spec.root / "audio" / row["filename"], [row["category"].strip()], split))
    return clips


def _present(clips: list[Clip], name: str, files: Sequence[tuple[Path, str]]) -> list[Clip]:
    """The clips whose audio exists; missing ones are left out with one warning (downloads are often partial)."""
    if not clips:
        raise DataError(f"{name}: no rows in {', '.join(str(path) for path, _ in files)}")
    found = [clip.path is not None and clip.path.is_file() for clip in clips]
    kept = [clip for clip, ok in zip(clips, found) if ok]
    gone = [str(clip.path) for clip, ok in zip(clips, found) if not ok]
    if not kept:
        raise DataError(f"{name}: none of the {len(clips)} audio files exist, e.g. {', '.join(gone[:3])}")
    if gone:
        log.warning("%s: %d of %d audio files missing, skipped (e.g. %s)", name, len(gone), len(clips), ", ".join(gone[:3]))
    return kept


def _split_files(root: Path, parts: Sequence[tuple[str, str]], name: str) -> list[tuple[Path, str]]:
    """(csv, split) for each of ``parts`` present under ``root``; DataError when none is."""
    found = [(root / file, split) for file, split in parts if (root / file).is_file()]
    if not found:
        raise DataError(f"{root}: no {name} caption file; expected any of {', '.join(file for file, _ in parts)}")
    return found


def _cell(row: dict[str, str], column: str, where: str, expected: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise DataError(f"{where}: empty {column}; expected {expected}")
    return value


def _audiocaps(spec: AudioCapsData) -> list[Clip]:
    """One clip per (youtube_id, start_time) of each split file, with all its captions (5 in val/test)."""
    files = _split_files(spec.root, [(f"{split}.csv", split) for split in SPLITS], "AudioCaps")
    groups: dict[tuple[str, str, str], tuple[str, list[str]]] = {}
    for path, split in files:
        for line, row in enumerate(_read_csv(path, ("audiocap_id", "youtube_id", "start_time", "caption")), start=2):
            where = f"{path}:{line}"
            cap_id = _cell(row, "audiocap_id", where, "the caption's id")
            yt = _cell(row, "youtube_id", where, "the YouTube video id")
            start = _cell(row, "start_time", where, "the clip's start in seconds")
            try:
                float(start)
            except ValueError:
                raise DataError(f"{where}: start_time {start!r} is not a number of seconds") from None
            caption = _cell(row, "caption", where, "a caption")
            groups.setdefault((split, yt, start), (cap_id, []))[1].append(caption)
    clips = [
        Clip(spec.root / spec.audio.format(split=split, youtube_id=yt, start_time=start, audiocap_id=cap_id), [], split, captions, tagged=False)
        for (split, yt, start), (cap_id, captions) in groups.items()
    ]
    return _present(clips, f"AudioCaps {spec.root}", files)


CLOTHO_PARTS = (("development", "train"), ("validation", "val"), ("evaluation", "test"))


def _clotho(spec: ClothoData) -> list[Clip]:
    """Clotho's five captions per file; development/validation/evaluation become train/val/test."""
    columns = ("file_name",) + tuple(f"caption_{i}" for i in range(1, 6))
    files = _split_files(spec.root, [(f"clotho_captions_{part}.csv", split) for part, split in CLOTHO_PARTS], "Clotho")
    folder = {split: part for part, split in CLOTHO_PARTS}
    clips = []
    for path, split in files:
        for line, row in enumerate(_read_csv(path, columns), start=2):
            where = f"{path}:{line}"
            name = _cell(row, "file_name", where, "the audio file's name")
            captions = [_cell(row, c, where, "five captions per file") for c in columns[1:]]
            clips.append(Clip(spec.root / folder[split] / name, [], split, captions, tagged=False))
    return _present(clips, f"Clotho {spec.root}", files)


def window_labels(timeline: Iterable[tuple[str, float, float]], t0: float, t1: float, min_heard_s: float) -> list[str]:
    """Labels heard in [t0, t1) for at least ``min_heard_s`` (or 80 % of a shorter event)."""
    heard = {label for label, on, off in timeline if min(t1, off) - max(t0, on) >= min(min_heard_s, 0.8 * (off - on))}
    return sorted(heard)


def window_timeline(timeline: Iterable[tuple[str, float, float]], t0: float, t1: float, heard: Iterable[str]) -> list[tuple[str, float, float]]:
    """The ``heard`` labels' events inside [t0, t1), clipped to it and timed from t0 (what a window's caption narrates)."""
    keep = set(heard)
    return [(label, max(on, t0) - t0, min(off, t1) - t0) for label, on, off in timeline if label in keep and on < t1 and off > t0]


def _cuts(
    audio: np.ndarray, timeline: list, spec: SyntheticData, window_s: float, hop_s: float, split: str, rng: np.random.Generator, tagged: bool
) -> Iterator[Clip]:
    """Windows of one scene, labelled from its timeline and (``captions_per_clip``) captioned from their part of it."""
    from rtaudio.train.synth_captions import caption_scene

    win, hop = round(window_s * spec.sample_rate), round(hop_s * spec.sample_rate)
    for start in range(0, len(audio) - win + 1, hop):
        t0 = start / spec.sample_rate
        heard = window_labels(timeline, t0, t0 + window_s, spec.min_heard_s)
        part = window_timeline(timeline, t0, t0 + window_s, heard)
        captions = [caption_scene(part, rng) for _ in range(spec.captions_per_clip)]
        labels = sorted({spec.names.get(label, label) for label in heard})
        yield Clip(None, labels, split, captions, audio[start : start + win], spec.sample_rate, tagged)  # views share the scene


def _synthetic(spec: SyntheticData) -> list[Clip]:
    from rtaudio.train.synth import LABELS, make_scene

    labels = spec.labels or list(LABELS)
    unknown = sorted((set(labels) | set(spec.names)) - set(LABELS))
    if unknown:
        raise DataError(f"synthetic labels {unknown} are not generated; allowed: {', '.join(LABELS)}")
    clips: list[Clip] = []
    for scene in range(spec.scenes):
        audio, timeline = make_scene(np.random.default_rng([spec.seed, scene]), spec.duration_s, labels=labels, sample_rate=spec.sample_rate)
        split = hash_split(f"synthetic:{spec.seed}:{scene}", spec)  # whole scenes per split: no leakage
        words = np.random.default_rng([spec.seed, scene, 1])  # its own stream: captions never change the audio
        clips.extend(_cuts(audio, timeline, spec, spec.window_s, spec.hop_s, split, words, tagged=True))
        if spec.captions_per_clip and spec.caption_window_s:
            clips.extend(_cuts(audio, timeline, spec, spec.caption_window_s, spec.caption_hop_s, split, words, tagged=False))
    return clips


LOADERS: dict[str, Callable[[Any], list[Clip]]] = {
    "manifest": _manifest,
    "fsd50k": _fsd50k,
    "esc50": _esc50,
    "synthetic": _synthetic,
    "audiocaps": _audiocaps,
    "clotho": _clotho,
}


def load_clips(spec: DataConfig | Sequence[DataConfig]) -> list[Clip]:
    """All clips of one data spec, or of a list of them pooled."""
    if isinstance(spec, Sequence):
        return [clip for one in spec for clip in load_clips(one)]
    return LOADERS[spec.type](spec)


def label_set(clips: Iterable[Clip]) -> list[str]:
    """The sorted union of the clips' labels (the model's classes when none are given)."""
    return sorted({label for clip in clips for label in clip.labels})


def read_audio(path: Path, sample_rate: int) -> np.ndarray:
    """A file as float32 mono at ``sample_rate`` (channels averaged, resampled with soxr)."""
    try:
        return read_mono(path, sample_rate)
    except ValueError as exc:
        raise DataError(str(exc)) from exc


def fit_window(audio: np.ndarray, samples: int, random: bool) -> np.ndarray:
    """Crop ``audio`` to ``samples`` (random offset when ``random``, else centred) or zero-pad it (centred)."""
    excess = len(audio) - samples
    if excess > 0:
        start = int(torch.randint(0, excess + 1, (1,))) if random else excess // 2
        return audio[start : start + samples]
    if excess < 0:
        left = -excess // 2
        return np.pad(audio, (left, -excess - left))
    return audio


class ClipDataset(Dataset):
    """Clips -> ``(waveform float32 [window samples], target float32 [classes])``.

    ``train`` crops at random (torch's RNG, so a seed fixes it); otherwise the centre is taken.
    """

    def __init__(self, clips: Sequence[Clip], labels: Sequence[str], sample_rate: int, window_s: float, train: bool):
        self.clips, self.labels, self.sample_rate, self.train = list(clips), list(labels), sample_rate, train
        self.samples = round(window_s * sample_rate)
        self.index = {label: i for i, label in enumerate(self.labels)}
        unknown = sorted({lb for clip in self.clips for lb in clip.labels} - set(self.index))
        if unknown:
            raise DataError(f"label(s) {', '.join(unknown)} not in the model's labels ({', '.join(self.labels)})")
        missing = [str(c.path) for c in self.clips if c.audio is None and (c.path is None or not c.path.is_file())]
        if missing:
            raise DataError(f"{len(missing)} audio file(s) not found, e.g. {', '.join(missing[:3])}")

    def __len__(self) -> int:
        return len(self.clips)

    def targets(self) -> np.ndarray:
        """Multi-hot targets of every clip, ``[len, classes]``."""
        y = np.zeros((len(self.clips), len(self.labels)), np.float32)
        for i, clip in enumerate(self.clips):
            y[i, [self.index[lb] for lb in clip.labels]] = 1.0
        return y

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        clip = self.clips[i]
        if clip.audio is not None:
            audio = clip.audio
            if clip.sample_rate and clip.sample_rate != self.sample_rate:
                audio = soxr.resample(audio, clip.sample_rate, self.sample_rate).astype(np.float32)
        else:
            assert clip.path is not None  # a clip holds its audio or names its file
            audio = read_audio(clip.path, self.sample_rate)
        target = torch.zeros(len(self.labels))
        target[[self.index[lb] for lb in clip.labels]] = 1.0
        return torch.from_numpy(np.ascontiguousarray(fit_window(audio, self.samples, self.train), dtype=np.float32)), target


def balanced_weights(targets: np.ndarray) -> np.ndarray:
    """Per-clip sampling weights: the mean inverse frequency of its labels (unlabelled clips: of the rarest)."""
    counts = np.maximum(targets.sum(axis=0), 1.0)
    inv = targets / counts
    labelled = targets.sum(axis=1) > 0
    weights = np.where(labelled, inv.sum(axis=1) / np.maximum(targets.sum(axis=1), 1), 1.0 / counts.max())
    return weights / weights.sum()


class EpochSampler(Sampler[int]):
    """Shuffled (or class-balanced, with replacement) indices, sharded across DDP ranks.

    Every rank draws the same epoch order from ``seed + epoch`` and takes its own stride, so
    ranks see disjoint, equally long shards (DistributedSampler's contract, with weights).
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1, weights: np.ndarray | None = None):
        self.size, self.seed, self.rank, self.world, self.epoch = size, seed, rank, world, 0
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.per_rank = math.ceil(size / world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.per_rank * self.world
        if self.weights is None:
            order = torch.randperm(self.size, generator=gen)
            order = torch.cat([order, order[: total - self.size]])
        else:
            order = torch.multinomial(self.weights, total, replacement=True, generator=gen)
        return iter(order[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return self.per_rank
