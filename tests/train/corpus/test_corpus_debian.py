"""The Debian real-audio corpus: rules, reserved packages, and a build from a real .deb (dpkg-deb, ffmpeg)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rtaudio.cli import main
from rtaudio.train.config import ManifestData
from rtaudio.train.corpus import debian
from rtaudio.train.corpus.rules import PACKAGE_SPLITS, check_rules, label_path
from rtaudio.train.data import load_clips

needs_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in ("dpkg-deb", "ffmpeg")), reason="needs dpkg-deb and ffmpeg")


def test_rules_table_is_sound() -> None:
    assert check_rules() == []


def test_first_matching_rule_labels_a_file() -> None:
    assert label_path("redeclipse-data", "usr/share/games/redeclipse/data/sounds/voice/haha1.ogg") == ("laughter",)
    assert label_path("redeclipse-data", "usr/share/games/redeclipse/data/sounds/voice/thanks.ogg") == ("speech",)
    assert label_path("torcs-data", "usr/share/games/torcs/data/sound/porsche_engine.wav") == ("engine", "vehicle")
    assert label_path("nexuiz-data", "usr/share/games/nexuiz/data/data.pk3!sound/weather/rain.ogg") == ("rain",)
    assert label_path("nexuiz-data", "usr/share/games/nexuiz/data/data.pk3!sound/misc/menu1.wav") == ()
    assert label_path("torcs-data", "usr/share/games/redeclipse/data/sounds/voice/haha1.ogg") == ()  # rules are per package


def test_reserved_packages_are_refused(tmp_path: Path) -> None:
    assert debian.is_reserved("supertuxkart-data") and debian.is_reserved("asterisk-core-sounds-de-wav")
    assert not debian.is_reserved("redeclipse-data")
    assert not any(debian.is_reserved(p) for p in PACKAGE_SPLITS)
    with pytest.raises(debian.CorpusError, match="reserved"):
        debian.build_corpus(tmp_path / "out", ["megaglest-data", "0ad-data"])
    with pytest.raises(debian.CorpusError, match="0ad-data is reserved"):
        debian.fetch_deb("0ad-data", tmp_path)
    assert main(["data", "debian", "--out", str(tmp_path / "cli"), "--package", "sound-theme-freedesktop"]) == 2


def _catalogue(entries: list[tuple[str, bytes]]) -> bytes:
    """An OpenTTD sound catalogue: (offset | flag, size) uint32 pairs, then length-prefixed descriptions and WAVs."""
    import struct

    table, body, offset = b"", b"", 8 * len(entries)
    for description, wav in entries:
        entry = bytes([len(description) + 1]) + description.encode("latin-1") + b"\0" + wav
        table += struct.pack("<II", (offset + len(body)) | 0x80000000, len(entry))
        body += entry
    return table + body


def test_openttd_catalogue_members_are_named_by_their_title(tmp_path: Path) -> None:
    import io

    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(np.arange(8000) / 3.0)).astype(np.float32), 16000, format="WAV")
    wav = buffer.getvalue()
    data = _catalogue(
        [
            ('"Modern bus start". Original "london bus.wav" by "x". License: CC BY 3.0.', wav),
            ('"Unused/Nothing". Trivial empty sound file.', b""),
            ('"Toyland: Jet take off". By y.', wav),
        ]
    )
    members = list(debian.catalogue_members(data))
    assert [name for name, _ in members] == ["00-modern-bus-start.wav", "02-toyland-jet-take-off.wav"]  # empty entry skipped
    assert members[0][1] == wav and len(debian.decode(members[0][1], 16000)) == 8000
    cat = "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
    assert label_path("openttd-opensfx", f"{cat}!00-modern-bus-start.wav") == ("vehicle", "engine")
    assert label_path("openttd-opensfx", f"{cat}!02-toyland-jet-take-off.wav") == ()  # cartoon mixes stay unlabelled
    assert list(debian.catalogue_members(b"\x00")) == []


def test_licence_names_come_from_the_copyright_file() -> None:
    text = "Files: *\nCopyright: 2009 A\nLicense: GPL-2+\n\nFiles: sounds/*\nLicense: CC-BY-SA-3.0\n\nLicense: GPL-2+\n text\n"
    assert debian.licence_of(text) == "GPL-2+; CC-BY-SA-3.0"
    assert debian.licence_of("") == "see copyright"


def test_trim_and_pieces() -> None:
    sr = 16000
    audio = np.concatenate([np.zeros(sr), 0.5 * np.sin(np.arange(2 * sr) / 5.0), np.zeros(sr)]).astype(np.float32)
    trimmed = debian.trim_silence(audio, sr)
    assert abs(len(trimmed) - 2 * sr) <= sr // 50
    assert len(debian.trim_silence(np.zeros(sr, np.float32), sr)) == 0
    parts = debian.pieces_of(np.ones(25 * sr, np.float32), sr, 10.0, 2)
    assert [len(p) for p in parts] == [10 * sr, 10 * sr]


def _tone(path: Path, freq: float, seconds: float, sr: int = 44100) -> None:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


def _make_deb(tmp: Path, package: str) -> Path:
    """A real .deb holding audio at paths the rules know, a duplicate, a silent file and a copyright file."""
    root = tmp / "pkg"
    sounds = root / "usr/share/games/torcs/data/sound"
    sounds.mkdir(parents=True)
    _tone(sounds / "porsche_engine.wav", 110, 1.5)
    shutil.copy(sounds / "porsche_engine.wav", sounds / "skid.wav")  # same samples: dropped as a duplicate
    _tone(sounds / "boom.wav", 60, 0.6)  # no rule: unlabelled
    sf.write(str(sounds / "quiet.wav"), np.zeros(44100, np.float32), 44100)  # silent: dropped
    music = root / "usr/share/games/torcs/data/music"
    music.mkdir(parents=True)
    _tone(music / "torcs.ogg", 440, 25.0, 22050)  # 25 s -> pieces of 10 s
    doc = root / "usr/share/doc" / package
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-2+\n")
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(f"Package: {package}\nVersion: 1.2-3\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n test\n")
    deb = tmp / f"{package}_1.2-3_all.deb"
    subprocess.run(["dpkg-deb", "--build", "-Zgzip", str(root), str(deb)], check=True, capture_output=True)
    return deb


@needs_tools
def test_build_from_a_real_deb(tmp_path: Path) -> None:
    deb = _make_deb(tmp_path, "torcs-data")
    out = tmp_path / "corpus"
    summary = debian.build_corpus(out, ["torcs-data"], debs={"torcs-data": deb}, max_clip_s=10.0, max_pieces=2)

    rows = list(csv.DictReader(open(out / "manifest.csv")))
    by_source = {r["source"]: r for r in rows}
    assert set(by_source) == {
        "usr/share/games/torcs/data/sound/porsche_engine.wav",
        "usr/share/games/torcs/data/music/torcs.ogg",
        "usr/share/games/torcs/data/music/torcs.ogg#1",
    }
    assert by_source["usr/share/games/torcs/data/sound/porsche_engine.wav"]["labels"] == "engine;vehicle"
    caption = by_source["usr/share/games/torcs/data/sound/porsche_engine.wav"]["caption"].lower()
    assert "engine" in caption or "motor" in caption  # a caption from its labels, for the text heads
    assert {r["split"] for r in rows} == {"train"} and {r["package"] for r in rows} == {"torcs-data"}
    unlabelled = list(csv.DictReader(open(out / "unlabelled.csv")))
    assert [r["source"] for r in unlabelled] == ["usr/share/games/torcs/data/sound/boom.wav"]
    assert summary["pieces"] == {"labelled": 3, "unlabelled": 1, "duplicates_dropped": 1}
    assert summary["labels"]["music"] == {"train": 2}

    audio, sr = sf.read(str(out / by_source["usr/share/games/torcs/data/music/torcs.ogg"]["path"]))
    assert sr == 16000 and len(audio) == 10 * sr  # converted to the model rate, cut at 10 s
    packages = list(csv.DictReader(open(out / "packages.csv")))
    assert packages[0]["licence"] == "GPL-2+" and packages[0]["version"] == "1.2-3" and len(packages[0]["deb_sha256"]) == 64
    assert "GPL-2+" in (out / "licences/torcs-data.copyright").read_text()
    assert json.loads((out / "corpus.json").read_text())["pieces"]["labelled"] == 3

    clips = load_clips(ManifestData(type="manifest", path=out / "manifest.csv"))  # the trainer reads it as it is
    assert sorted(c.labels for c in clips)[0] == ["engine", "vehicle"]
