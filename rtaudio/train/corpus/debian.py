"""``rtaudio data debian``: a real-audio corpus from sounds shipped in Debian packages.

Each package is fetched with ``apt-get download`` (nothing is installed) and unpacked with
``dpkg-deb -x``; its audio files (and those inside .pk3/.zip archives and OpenTTD .cat sound catalogues) are labelled by the
reviewed rules in ``rules.py``, decoded by ffmpeg to mono at the model rate, trimmed of
leading and trailing silence, cut into pieces of at most ``max_clip_s`` (long music and
ambience loops give a few pieces, not hundreds), de-duplicated by a hash of their samples
and written as FLAC. Splits are whole packages. Reserved evaluation packages are refused.

Written to ``out``: ``audio/<package>/...flac``, ``manifest.csv`` (labelled: path, labels,
split, package, source), ``unlabelled.csv`` (same columns, empty labels: distillation and
self-supervised data only, never tag negatives), ``packages.csv`` (version, split, licence,
.deb SHA-256, counts), ``licences/<package>.copyright`` and ``corpus.json`` (counts per label
and split).
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import logging
import re
import shutil
import struct
import subprocess
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf

from rtaudio.audiofile import read_mono
from rtaudio.train.corpus.rules import PACKAGE_SPLITS, PACKAGES, label_path

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".ogg", ".flac", ".mp3", ".opus", ".wv")
ARCHIVE_SUFFIXES = (".pk3", ".zip")
CATALOGUE_SUFFIX = ".cat"  # OpenTTD's sound catalogue (openttd-opensfx)
COLUMNS = ("path", "labels", "split", "package", "source", "caption")


class CorpusError(RuntimeError):
    """A package that cannot be used (reserved, not downloadable, not unpackable); the message says which and why."""


def reserved_patterns() -> list[str]:
    """The reserved evaluation packages (``a*`` matches any suffix), shipped with rtaudio."""
    text = resources.files("rtaudio.train.corpus").joinpath("reserved-packages.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def is_reserved(package: str) -> bool:
    return any(fnmatch.fnmatchcase(package, pattern) for pattern in reserved_patterns())


@dataclass
class Piece:
    """One corpus row before it is written."""

    package: str
    source: str  # path inside the package (archive!member for archived files)
    labels: tuple[str, ...]
    audio: np.ndarray


@dataclass
class PackageInfo:
    name: str
    version: str = ""
    deb_sha256: str = ""
    licence: str = ""
    split: str = "train"
    counts: Counter = field(default_factory=Counter)


def fetch_deb(package: str, cache: Path) -> Path:
    """The package's .deb in ``cache`` (downloaded with ``apt-get download`` unless present)."""
    if is_reserved(package):
        raise CorpusError(f"{package} is reserved for independent evaluation (reserved-packages.txt); it is never used for training")
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    result = subprocess.run(["apt-get", "download", package], cwd=cache, capture_output=True, text=True)
    found = sorted(cache.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not found:
        reason = (result.stderr.strip().splitlines() or ["no .deb written"])[-1]
        raise CorpusError(f"{package}: apt-get download failed ({reason}); run `apt-get update` first, or check the name")
    return found[-1]


def deb_field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


def licence_of(copyright_text: str) -> str:
    """The distinct ``License:`` short names of a (DEP-5) copyright file, or 'see copyright'."""
    names = []
    for match in re.finditer(r"^License:\s*(\S[^\n]*)$", copyright_text, flags=re.MULTILINE):
        name = match.group(1).strip()
        if len(name) > 40 or ":" in name:  # prose in a pre-DEP-5 file, not a short licence name
            continue
        if name not in names:
            names.append(name)
    return "; ".join(names) if names else "see copyright"


def decode(data_or_path: bytes | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 at ``sample_rate``: libsndfile + soxr in-process where it reads the file (WAV, OGG, FLAC),
    else ffmpeg (MP3, WavPack, odd WAVs); empty when neither decodes it."""
    try:
        return read_mono(io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path, sample_rate)
    except ValueError:
        pass
    source = "pipe:0" if isinstance(data_or_path, bytes) else str(data_or_path)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", source, "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "pipe:1"]
    result = subprocess.run(cmd, input=data_or_path if isinstance(data_or_path, bytes) else None, capture_output=True)
    if result.returncode != 0:
        return np.zeros(0, np.float32)
    return np.frombuffer(result.stdout, dtype=np.float32).copy()


def trim_silence(audio: np.ndarray, sample_rate: int, below_peak_db: float = 50.0, floor_dbfs: float = -70.0) -> np.ndarray:
    """``audio`` without leading and trailing 10 ms frames quieter than peak - ``below_peak_db`` or ``floor_dbfs``
    (all of it when nothing is louder)."""
    frame = max(1, sample_rate // 100)
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)
    db = 20 * np.log10(rms)
    loud = np.flatnonzero((db > db.max() - below_peak_db) & (db > floor_dbfs))
    if len(loud) == 0:
        return audio[:0]
    return audio[loud[0] * frame : min(len(audio), (loud[-1] + 1) * frame)]


def pieces_of(audio: np.ndarray, sample_rate: int, max_clip_s: float, max_pieces: int) -> list[np.ndarray]:
    """Cut ``audio`` into at most ``max_pieces`` consecutive pieces of at most ``max_clip_s``."""
    size = round(max_clip_s * sample_rate)
    return [audio[i : i + size] for i in range(0, len(audio), size)][:max_pieces]


def catalogue_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(``NN-title.wav``, WAV bytes) of an OpenTTD sound catalogue: a table of (offset, size) uint32 pairs
    (the offset's top bit is a flag), each entry a length-prefixed description then a RIFF WAV. The title is
    the description's first quoted phrase, lower-cased, so rules can match what the sound is."""
    if len(data) < 8:
        return
    count = (struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF) // 8
    for index in range(count):
        offset, size = struct.unpack_from("<II", data, index * 8)
        offset &= 0x7FFFFFFF
        if offset + size > len(data) or size < 2:
            continue
        length = data[offset]
        description = data[offset + 1 : offset + 1 + length].rstrip(b"\0").decode("latin-1")
        wav = data[offset + 1 + length : offset + size]
        if not wav.startswith(b"RIFF"):
            continue
        quoted = re.match(r'\s*"([^"]+)"', description)
        title = re.sub(r"[^a-z0-9]+", "-", (quoted.group(1) if quoted else description).lower()).strip("-")
        yield f"{index:02d}-{title}.wav", wav


def _audio_files(root: Path) -> Iterator[tuple[str, bytes | Path]]:
    """(path inside the package, file path or archived bytes) for every audio file under ``root``."""
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(root).as_posix()
        suffix = path.suffix.lower()
        if suffix in AUDIO_SUFFIXES:
            yield rel, path
        elif suffix in ARCHIVE_SUFFIXES and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in sorted(archive.namelist()):
                    if member.lower().endswith(AUDIO_SUFFIXES):
                        yield f"{rel}!{member}", archive.read(member)
        elif suffix == CATALOGUE_SUFFIX:
            for member, wav in catalogue_members(path.read_bytes()):
                yield f"{rel}!{member}", wav


def package_pieces(package: str, deb: Path, sample_rate: int, max_clip_s: float = 10.0, max_pieces: int = 3, min_s: float = 0.2) -> tuple[list[Piece], str]:
    """Every usable piece of audio of one .deb, labelled by the rules, and its copyright text."""
    with tempfile.TemporaryDirectory(prefix=f"rtaudio-{package}-") as tmp:
        root = Path(tmp)
        result = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True)
        if result.returncode != 0:
            raise CorpusError(f"{deb}: dpkg-deb -x failed ({result.stderr.strip()})")
        copyright_file = root / "usr" / "share" / "doc" / package / "copyright"
        copyright_text = copyright_file.read_text(errors="replace") if copyright_file.is_file() else ""
        files = list(_audio_files(root))
        with ThreadPoolExecutor(max_workers=2) as pool:
            decoded = list(pool.map(lambda item: decode(item[1], sample_rate), files))
    pieces = []
    for (rel, _), audio in zip(files, decoded):
        audio = trim_silence(audio, sample_rate)
        if len(audio) < min_s * sample_rate or not np.isfinite(audio).all():
            continue
        labels = label_path(package, rel)
        for i, part in enumerate(pieces_of(audio, sample_rate, max_clip_s, max_pieces)):
            if len(part) >= min_s * sample_rate:
                pieces.append(Piece(package, rel if i == 0 else f"{rel}#{i}", labels, part))
    return pieces, copyright_text


def label_caption(labels: Sequence[str], seconds: float, key: str) -> str:
    """A one-sentence caption of a labelled piece from its labels (the synthetic scenes' phrasings,
    chosen by a hash of ``key`` so a rebuild writes the same text); empty for unlabelled pieces."""
    from rtaudio.train.synth_captions import caption_scene

    if not labels:
        return ""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    return caption_scene([(label, 0.0, seconds) for label in labels], rng)


def _file_name(source: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", source.replace("!", "__").replace("#", "_part")).strip("_")
    return f"{stem[-150:]}.flac"


def build_corpus(
    out: Path,
    packages: Sequence[str] = PACKAGES,
    cache: Path | None = None,
    sample_rate: int = 16000,
    max_clip_s: float = 10.0,
    max_pieces: int = 3,
    debs: dict[str, Path] | None = None,
) -> dict[str, object]:
    """Build the corpus in ``out`` from ``packages`` (``debs`` maps a package to a local .deb instead of
    downloading it); returns the summary also written to corpus.json."""
    refused = [p for p in packages if is_reserved(p)]
    if refused:
        raise CorpusError(f"reserved for independent evaluation, never used for training: {', '.join(refused)}")
    cache = cache or out / "debs"
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "licences").mkdir(exist_ok=True)
    seen: dict[str, str] = {}
    rows: list[dict[str, str]] = []
    infos: list[PackageInfo] = []
    duplicates = 0
    for package in packages:
        deb = (debs or {}).get(package) or fetch_deb(package, cache)
        info = PackageInfo(package, deb_field(deb, "Version"), hashlib.sha256(deb.read_bytes()).hexdigest(), split=PACKAGE_SPLITS.get(package, "train"))
        pieces, copyright_text = package_pieces(package, deb, sample_rate, max_clip_s, max_pieces)
        info.licence = licence_of(copyright_text)
        (out / "licences" / f"{package}.copyright").write_text(copyright_text or "(no copyright file in the package)\n")
        folder = out / "audio" / package
        folder.mkdir(exist_ok=True)
        for piece in pieces:
            pcm = np.clip(np.round(piece.audio * 32767), -32768, 32767).astype(np.int16)
            digest = hashlib.sha256(pcm.tobytes()).hexdigest()
            if digest in seen:
                duplicates += 1
                log.debug("%s:%s duplicates %s", package, piece.source, seen[digest])
                continue
            seen[digest] = f"{package}:{piece.source}"
            path = folder / _file_name(piece.source)
            sf.write(str(path), pcm, sample_rate, format="FLAC", subtype="PCM_16")
            rows.append(
                {
                    "path": path.relative_to(out).as_posix(),
                    "labels": ";".join(piece.labels),
                    "split": info.split,
                    "package": package,
                    "source": piece.source,
                    "caption": label_caption(piece.labels, len(piece.audio) / sample_rate, f"{package}:{piece.source}"),
                }
            )
            info.counts["labelled" if piece.labels else "unlabelled"] += 1
        infos.append(info)
        log.info(
            "%s %s (%s, %s): %d labelled, %d unlabelled pieces",
            package,
            info.version,
            info.split,
            info.licence,
            info.counts["labelled"],
            info.counts["unlabelled"],
        )
    _write_csv(out / "manifest.csv", [r for r in rows if r["labels"]])
    _write_csv(out / "unlabelled.csv", [r for r in rows if not r["labels"]])
    with open(out / "packages.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["package", "version", "split", "licence", "deb_sha256", "labelled", "unlabelled"])
        for info in infos:
            writer.writerow([info.name, info.version, info.split, info.licence, info.deb_sha256, info.counts["labelled"], info.counts["unlabelled"]])
    summary = _summary(rows, infos, duplicates, sample_rate)
    (out / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _summary(rows: list[dict[str, str]], infos: list[PackageInfo], duplicates: int, sample_rate: int) -> dict[str, object]:
    per_label: dict[str, Counter] = {}
    for row in rows:
        for label in filter(None, row["labels"].split(";")):
            per_label.setdefault(label, Counter())[row["split"]] += 1
    return {
        "sample_rate": sample_rate,
        "packages": {i.name: {"version": i.version, "split": i.split, "licence": i.licence} for i in infos},
        "pieces": {"labelled": sum(1 for r in rows if r["labels"]), "unlabelled": sum(1 for r in rows if not r["labels"]), "duplicates_dropped": duplicates},
        "labels": {label: dict(sorted(c.items())) for label, c in sorted(per_label.items())},
    }


def which_tools() -> list[str]:
    """The external programs the builder needs that are missing here."""
    return [tool for tool in ("apt-get", "dpkg-deb", "ffmpeg") if shutil.which(tool) is None]
