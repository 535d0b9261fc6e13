"""AudioCaps and Clotho loaders on tiny fake distributions with real WAV files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydantic
import pytest
import soundfile as sf

from rtaudio.train.config import AudioCapsData, ClothoData
from rtaudio.train.data import DataError, load_clips
from rtaudio.train.evaluate import load_data_spec

SR = 16000
AUDIOCAPS_HEADER = "audiocap_id,youtube_id,start_time,caption"


def wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.sin(np.arange(SR // 10) * 0.2)).astype(np.float32), SR)


def audiocaps(root: Path) -> Path:
    """train: one caption per row; val: two clips with 5 and 2 captions (one of them quoted with a comma)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.csv").write_text(f"{AUDIOCAPS_HEADER}\n1,aaa,30,A dog barks\n2,bbb,0,Rain falls\n")
    val = [f"{10 + i},ccc,10,Caption {i}" for i in range(5)] + ['20,ddd,5,"Wind, then a door"', "21,ddd,5,A door slams"]
    (root / "val.csv").write_text("\n".join([AUDIOCAPS_HEADER, *val]) + "\n")
    for split, name in (("train", "aaa_30"), ("train", "bbb_0"), ("val", "ccc_10"), ("val", "ddd_5")):
        wav(root / split / f"{name}.wav")
    return root


def clotho(root: Path, parts: tuple[str, ...] = ("development", "validation", "evaluation")) -> Path:
    header = "file_name," + ",".join(f"caption_{i}" for i in range(1, 6))
    for part in parts:
        name = f"{part} clip.wav"  # Clotho names contain spaces
        (root / f"clotho_captions_{part}.csv").parent.mkdir(parents=True, exist_ok=True)
        caps = ",".join(f'"{part} caption {i}, quoted"' for i in range(1, 6))
        (root / f"clotho_captions_{part}.csv").write_text(f"{header}\n{name},{caps}\n")
        wav(root / part / name)
    return root


def test_audiocaps_groups_captions_per_clip(tmp_path: Path) -> None:
    root = audiocaps(tmp_path / "audiocaps")
    clips = load_clips(AudioCapsData(type="audiocaps", root=root))  # test.csv missing: skipped
    by_path = {c.path.relative_to(root).as_posix(): c for c in clips}
    assert sorted(by_path) == ["train/aaa_30.wav", "train/bbb_0.wav", "val/ccc_10.wav", "val/ddd_5.wav"]
    assert by_path["train/aaa_30.wav"].captions == ["A dog barks"] and by_path["train/aaa_30.wav"].split == "train"
    assert by_path["val/ccc_10.wav"].captions == [f"Caption {i}" for i in range(5)]
    assert by_path["val/ddd_5.wav"].captions == ["Wind, then a door", "A door slams"]
    assert {c.split for c in clips} == {"train", "val"}
    assert all(not c.tagged and c.labels == [] and c.path.is_file() for c in clips)


def test_audiocaps_pattern_with_audiocap_id(tmp_path: Path) -> None:
    root = tmp_path / "ac"
    root.mkdir()
    (root / "test.csv").write_text(f"{AUDIOCAPS_HEADER}\n7,xxx,20,A car passes\n8,xxx,20,Traffic noise\n")
    wav(root / "wavs" / "7.wav")  # named by the clip's first caption id
    clips = load_clips(AudioCapsData(type="audiocaps", root=root, audio="wavs/{audiocap_id}.wav"))
    assert [(c.path, c.split, c.captions) for c in clips] == [(root / "wavs" / "7.wav", "test", ["A car passes", "Traffic noise"])]
    with pytest.raises(pydantic.ValidationError, match=r"allowed fields: \{split\}, \{youtube_id\}"):
        AudioCapsData(type="audiocaps", root=root, audio="{ytid}.wav")
    with pytest.raises(pydantic.ValidationError, match="names no clip"):
        AudioCapsData(type="audiocaps", root=root, audio="{split}.wav")


def test_clotho_splits_and_five_captions(tmp_path: Path) -> None:
    root = clotho(tmp_path / "clotho")
    clips = load_clips(ClothoData(type="clotho", root=root))
    assert [(c.path, c.split) for c in clips] == [
        (root / "development" / "development clip.wav", "train"),
        (root / "validation" / "validation clip.wav", "val"),
        (root / "evaluation" / "evaluation clip.wav", "test"),
    ]
    assert clips[1].captions == [f"validation caption {i}, quoted" for i in range(1, 6)]
    assert all(not c.tagged and c.labels == [] for c in clips)


def test_clotho_missing_split_file_skipped_all_missing_error(tmp_path: Path) -> None:
    root = clotho(tmp_path / "partial", parts=("validation",))
    assert [c.split for c in load_clips(ClothoData(type="clotho", root=root))] == ["val"]
    with pytest.raises(DataError, match="clotho_captions_development.csv, clotho_captions_validation.csv, clotho_captions_evaluation.csv"):
        load_clips(ClothoData(type="clotho", root=tmp_path / "empty"))
    with pytest.raises(DataError, match="train.csv, val.csv, test.csv"):
        load_clips(AudioCapsData(type="audiocaps", root=tmp_path / "empty"))


def test_missing_audio_skipped_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = audiocaps(tmp_path / "ac")
    (root / "train" / "bbb_0.wav").unlink()
    (root / "val" / "ddd_5.wav").unlink()
    with caplog.at_level(logging.WARNING, logger="rtaudio.train.data"):
        clips = load_clips(AudioCapsData(type="audiocaps", root=root))
    assert sorted(c.path.name for c in clips) == ["aaa_30.wav", "ccc_10.wav"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 of 4 audio files missing" in warnings[0] and "bbb_0.wav" in warnings[0]

    for wav_file in root.rglob("*.wav"):
        wav_file.unlink()
    with pytest.raises(DataError, match="none of the 4 audio files exist"):
        load_clips(AudioCapsData(type="audiocaps", root=root))

    croot = clotho(tmp_path / "clotho")
    (croot / "evaluation" / "evaluation clip.wav").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rtaudio.train.data"):
        assert [c.split for c in load_clips(ClothoData(type="clotho", root=croot))] == ["train", "val"]
    assert any("1 of 3 audio files missing" in r.getMessage() for r in caplog.records)


def test_bad_columns_name_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "ac"
    root.mkdir()
    (root / "train.csv").write_text("audiocap_id,youtube_id,caption\n1,aaa,A dog\n")
    with pytest.raises(DataError, match=r"train.csv: missing column\(s\) start_time"):
        load_clips(AudioCapsData(type="audiocaps", root=root))
    (root / "train.csv").write_text(f"{AUDIOCAPS_HEADER}\n1,aaa,30,A dog\n2,bbb,0,\n")
    with pytest.raises(DataError, match=r"train.csv:3: empty caption; expected a caption"):
        load_clips(AudioCapsData(type="audiocaps", root=root))
    (root / "train.csv").write_text(f"{AUDIOCAPS_HEADER}\n1,aaa,half,A dog\n")
    with pytest.raises(DataError, match=r"train.csv:2: start_time 'half' is not a number"):
        load_clips(AudioCapsData(type="audiocaps", root=root))

    croot = clotho(tmp_path / "clotho", parts=("development",))
    (croot / "clotho_captions_development.csv").write_text("file_name,caption_1,caption_2\na.wav,x,y\n")
    with pytest.raises(DataError, match=r"missing column\(s\) caption_3, caption_4, caption_5"):
        load_clips(ClothoData(type="clotho", root=croot))
    header = "file_name," + ",".join(f"caption_{i}" for i in range(1, 6))
    (croot / "clotho_captions_development.csv").write_text(f"{header}\n,a,b,c,d,e\n")
    with pytest.raises(DataError, match=r"clotho_captions_development.csv:2: empty file_name"):
        load_clips(ClothoData(type="clotho", root=croot))


def test_load_data_spec_reads_caption_specs(tmp_path: Path) -> None:
    (tmp_path / "clotho.yaml").write_text(f"type: clotho\nroot: {tmp_path / 'clotho'}\n")
    assert load_data_spec(tmp_path / "clotho.yaml") == ClothoData(type="clotho", root=tmp_path / "clotho")
    (tmp_path / "both.yaml").write_text(
        f"data:\n  - {{type: audiocaps, root: {tmp_path}, audio: '{{audiocap_id}}.wav'}}\n  - {{type: clotho, root: {tmp_path}}}\noutput: out\n"
    )
    specs = load_data_spec(tmp_path / "both.yaml")
    assert [s.type for s in specs] == ["audiocaps", "clotho"] and specs[0].audio == "{audiocap_id}.wav"
    (tmp_path / "bad.yaml").write_text("type: clotho\nroot: x\nfolders: y\n")
    with pytest.raises(DataError, match="audiocaps, clotho, manifest"):
        load_data_spec(tmp_path / "bad.yaml")
