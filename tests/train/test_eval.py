"""``rtaudio eval`` end to end on a tiny fused model and a manifest of tone WAVs; the report files."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import torch
from sklearn.metrics import average_precision_score

from rtaudio.cli import main
from rtaudio.contract import write_model_dir
from rtaudio.contract.files import CHECKPOINT_FILE
from rtaudio.model.config import ModelConfig
from rtaudio.model.fused import FusedTagger, save_checkpoint
from rtaudio.train.config import SyntheticData
from rtaudio.train.data import Clip, ClipDataset, DataError, load_clips
from rtaudio.train.evaluate import evaluate, load_data_spec
from rtaudio.train.report import PLOTS, EvalResult, cooccurrence_rows, markdown, write_report
from rtaudio.train.windowing import clip_windows

LABELS = ["high", "low"]
RATE = 16000
WINDOW_S = 0.5
FILE_RATE = 22050  # files at another rate: the evaluator resamples


def make_model_dir(path: Path, seed: int, labels: list[str] = LABELS, model_id: str = "tiny") -> Path:
    """An untrained one-stream FusedTagger exported to ONNX + model.json, with its checkpoint."""
    torch.manual_seed(seed)
    config = ModelConfig(labels=labels, streams=["e2e"], window_s=WINDOW_S, hop_s=0.25, layers=1, heads=2, n_mels=32, dropout=0.0)
    model = FusedTagger(config).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(2, round(WINDOW_S * RATE)),),
            buffer,
            input_names=["waveform"],
            output_names=["scores", "embedding"],
            dynamic_axes={n: {0: "batch"} for n in ("waveform", "scores", "embedding")},
            opset_version=17,
            dynamo=False,
        )
    write_model_dir(
        path,
        buffer.getvalue(),
        model_id=model_id,
        version="0.0.1",
        labels=labels,
        thresholds=[0.5] * len(labels),
        sample_rate=RATE,
        window_s=WINDOW_S,
        hop_s=0.25,
        embedding_dim=64,
        streams=["e2e"],
        extra={"fusion": "concat"},
    )
    save_checkpoint(model, path / CHECKPOINT_FILE)
    return path


def tone(freqs: list[float], seconds: float, seed: int) -> np.ndarray:
    t = np.arange(round(seconds * FILE_RATE)) / FILE_RATE
    rng = np.random.default_rng(seed)
    audio = 0.01 * rng.standard_normal(t.size) + sum(0.3 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in freqs)
    return audio.astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    model = make_model_dir(root / "model", seed=0)
    other = make_model_dir(root / "scratch", seed=1, model_id="scratch")
    (root / "audio").mkdir()
    rows = ["path,labels,split"]
    kinds = [(["high"], [3000.0]), (["low"], [300.0]), (["high", "low"], [300.0, 3000.0]), ([], [])]
    for i in range(16):
        labels, freqs = kinds[i % 4]
        split = "val" if i < 8 else "test"
        seconds = 1.2 if i == 15 else (0.3, 0.5, 0.45)[i % 3]  # padded, exact, one longer than the window
        sf.write(root / "audio" / f"c{i}.wav", tone(freqs, seconds, i), FILE_RATE)
        rows.append(f"audio/c{i}.wav,{';'.join(labels)},{split}")
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    return {"root": root, "model": model, "other": other, "csv": root / "data.csv"}


def test_cli_eval_writes_the_report(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = setup["root"] / "report"
    rc = main(["eval", "--model", str(setup["model"]), "--data", str(setup["csv"]), "--out", str(out), "--compare", str(setup["other"])])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "e2e alone" in printed and str(out / "eval.md") in printed
    summary = json.loads((out / "eval.json").read_text())
    assert summary["clips"] == 8 and summary["split"] == "test" and summary["labels"] == LABELS
    assert summary["command"].startswith("rtaudio eval --model ")
    assert summary["onnx_vs_torch_max_abs"] < 1e-4
    names = [row["name"] for row in summary["ablation"]]
    assert names == ["e2e alone", "fused (concat) — tiny", "fused — scratch (scratch)"]
    for row in summary["ablation"]:
        assert 0.0 <= row["map"] <= 1.0 and 0.0 <= row["micro_f1"] <= 1.0
    assert summary["tuned"]["tuned_on"] == "val"
    assert all(0.0 <= c["threshold_tuned"] <= 1.0 and c["threshold_saved"] == 0.5 for c in summary["per_class"])
    assert [c["positives"] for c in summary["per_class"]] == [4, 4]
    text = (out / "eval.md").read_text()
    for name in names:
        assert f"| {name} | " in text
    assert "| high | 4 |" in text and summary["command"] in text
    for png in PLOTS.values():
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_headline_matches_onnxruntime_and_sklearn(setup: dict[str, Path]) -> None:
    """Independent check of label order, resampling and pooling on clips no longer than the window."""
    summary = evaluate(setup["model"], setup["csv"], split="val")
    assert summary["tuned"]["tuned_on"] == "val (the same clips: optimistic)"
    clips = [c for c in load_clips(load_data_spec(setup["csv"])) if c.split == "val"]
    data = ClipDataset(clips, LABELS, RATE, WINDOW_S, train=False)
    batch = np.stack([data[i][0].numpy() for i in range(len(data))])
    session = ort.InferenceSession(str(setup["model"] / "model.onnx"), providers=["CPUExecutionProvider"])
    scores = session.run(["scores"], {"waveform": batch})[0]
    y = data.targets()
    expected = [average_precision_score(y[:, c], scores[:, c]) for c in range(len(LABELS))]
    assert [c["ap"] for c in summary["per_class"]] == pytest.approx(expected, abs=1e-5)
    assert summary["headline"]["map"] == pytest.approx(np.mean(expected), abs=1e-5)


def test_clip_windows_pad_short_and_cover_long() -> None:
    short = Clip(None, [], "test", audio=np.ones(300, np.float32), sample_rate=RATE)
    assert clip_windows(short, RATE, 1000, 500).shape == (1, 1000)
    ramp = np.arange(2300, dtype=np.float32)
    windows = clip_windows(Clip(None, [], "test", audio=ramp, sample_rate=RATE), RATE, 1000, 500)
    assert [w[0] for w in windows] == [0, 500, 1000, 1300]  # the last one ends at the clip's end
    assert windows[-1][-1] == 2299


def test_data_spec_from_yaml(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text("type: synthetic\nscenes: 2\nseed: 3\n")
    assert load_data_spec(tmp_path / "spec.yaml") == SyntheticData(type="synthetic", scenes=2, seed=3)
    (tmp_path / "train.yaml").write_text("data:\n  - {type: synthetic, scenes: 1}\n  - {type: manifest, path: x.csv}\noutput: out\n")
    assert [s.type for s in load_data_spec(tmp_path / "train.yaml")] == ["synthetic", "manifest"]
    (tmp_path / "bad.yaml").write_text("type: audioset\n")
    with pytest.raises(DataError, match="manifest, fsd50k, esc50 or synthetic"):
        load_data_spec(tmp_path / "bad.yaml")


def test_clear_errors(setup: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "train_only.csv").write_text(f"path,labels,split\n{setup['root'] / 'audio' / 'c0.wav'},high,train\n")
    with pytest.raises(DataError, match="no clips in split 'test'"):
        evaluate(setup["model"], tmp_path / "train_only.csv")
    alien = make_model_dir(tmp_path / "alien", seed=2, labels=["x", "other"])
    with pytest.raises(DataError, match="none of its labels"):
        evaluate(setup["model"], setup["csv"], compare=[alien])
    assert main(["eval", "--model", str(tmp_path / "missing"), "--data", str(setup["csv"])]) == 2


def test_compare_with_another_label_set_uses_the_shared_labels(setup: dict[str, Path], tmp_path: Path) -> None:
    odd = make_model_dir(tmp_path / "odd", seed=2, labels=["high", "other"])
    rows = {r["name"]: r for r in evaluate(setup["model"], setup["csv"], compare=[odd])["ablation"]}
    theirs = next(name for name in rows if "on the 1 shared labels" in name)
    ours = next(name for name in rows if "on the same 1 labels" in name)
    assert 0.0 <= rows[theirs]["map"] <= 1.0 and 0.0 <= rows[ours]["map"] <= 1.0


def test_report_with_a_class_without_positives(tmp_path: Path) -> None:
    labels = ["a", "b", "c"]
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    scores = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.6], [0.7, 0.4, 0.2]])
    summary = {
        "command": "rtaudio eval --model m --data d.csv",
        "model_id": "m",
        "data": "manifest d.csv",
        "split": "test",
        "clips": 3,
        "engine": "onnxruntime",
        "headline": {"map": 1.0, "micro_f1": 0.8, "macro_f1": 0.75},
        "onnx_vs_torch_max_abs": None,
        "tuned": {"tuned_on": None, "micro_f1": None, "macro_f1": None},
        "excluded": ["c"],
        "ablation": [{"name": "fused", "map": 1.0, "micro_f1": 0.8, "macro_f1": float("nan")}],
        "per_class": [
            {
                "label": lb,
                "positives": int(y[:, i].sum()),
                "ap": [1.0, 1.0, float("nan")][i],
                "f1": 0.5,
                "f1_tuned": None,
                "threshold_saved": 0.5,
                "threshold_tuned": None,
            }
            for i, lb in enumerate(labels)
        ],
    }
    files = write_report(EvalResult(summary, labels, y, scores, np.full(3, 0.5)), tmp_path)
    assert {f.name for f in files} == {"eval.json", "eval.md", *PLOTS.values()}
    assert json.loads((tmp_path / "eval.json").read_text())["ablation"][0]["macro_f1"] is None  # NaN -> null
    text = markdown(summary)
    assert "| fused | 1.000 | 0.800 | – |" in text
    assert "left out of mAP and macro-F1): c." in text
    assert "not tuned (no validation clips)" in text
    assert "| c | 0 | – | 0.500 | – | 0.50 | – |" in text
    assert "– (no model.ckpt)" in text


def test_cooccurrence_rows_add_background_false_alarms() -> None:
    y = np.array([[1, 0], [0, 0], [0, 0]])
    scores = np.array([[0.9, 0.7], [0.6, 0.1], [0.8, 0.9]])
    rows, counts = cooccurrence_rows(EvalResult({}, ["a", "b"], y, scores, np.array([0.5, 0.5])))
    assert rows == ["a", "b", "(no label)"]
    np.testing.assert_array_equal(counts, [[1, 1], [0, 0], [2, 1]])
    rows, _ = cooccurrence_rows(EvalResult({}, ["a", "b"], y[:1], scores[:1], np.array([0.5, 0.5])))
    assert rows == ["a", "b"]
