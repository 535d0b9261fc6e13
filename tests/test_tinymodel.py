"""The tiny test model gives the scores other tests rely on, in ONNX Runtime and in torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from rtaudio.contract import load_model_dir
from tests.tinymodel import TORCH_FILE, make_tiny_model, tone, white_noise

SIGNALS = {
    "tone_440": tone(440, phase=0.3),
    "tone_1000": tone(1000, phase=1.1),
    "noise": white_noise(seed=3),
    "silence": np.zeros(16000, np.float32),
}


def _run(path: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    scores, emb = session.run(["scores", "embedding"], {"waveform": batch})
    return {"scores": scores, "embedding": emb}


def _check(labels: list[str], name: str, scores: np.ndarray) -> None:
    for label, score in zip(labels, scores):
        if label == name:
            assert score > 0.9, f"{name}: {label} scored {score}"
        else:
            assert score < 0.1, f"{name}: {label} scored {score}"


@pytest.mark.parametrize("name", list(SIGNALS))
def test_scores_batch1(tmp_path: Path, name: str) -> None:
    model = make_tiny_model(tmp_path)
    out = _run(tmp_path, SIGNALS[name][None])
    assert out["scores"].shape == (1, 3) and out["embedding"].shape == (1, 8)
    _check(model.info.labels, name, out["scores"][0])


def test_scores_batch4_rows_independent(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path)
    batch = np.stack(list(SIGNALS.values()))
    out = _run(tmp_path, batch)
    assert out["scores"].shape == (4, 3) and out["embedding"].shape == (4, 8)
    for row, name in zip(out["scores"], SIGNALS):
        _check(model.info.labels, name, row)
    single = _run(tmp_path, batch[2:3])["scores"]
    np.testing.assert_allclose(out["scores"][2:3], single, atol=1e-6)


def test_contract_and_custom_labels(tmp_path: Path) -> None:
    make_tiny_model(tmp_path, labels=("noise", "tone_2000"), window_s=0.5, hop_s=0.25)
    info = load_model_dir(tmp_path).info
    assert info.labels == ["noise", "tone_2000"] and info.window_samples == 8000
    scores = _run(tmp_path, tone(2000, seconds=0.5)[None])["scores"][0]
    assert scores[1] > 0.9 and scores[0] < 0.1
    with pytest.raises(ValueError, match="tone_<hz>"):
        make_tiny_model(tmp_path / "bad", labels=("dog",))


def test_torch_equivalent(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    make_tiny_model(tmp_path, with_torch=True)
    module = torch.jit.load(str(tmp_path / TORCH_FILE))
    batch = np.stack(list(SIGNALS.values()))
    scores, emb = module(torch.from_numpy(batch))
    ref = _run(tmp_path, batch)
    np.testing.assert_allclose(scores.numpy(), ref["scores"], atol=1e-4)
    np.testing.assert_allclose(emb.numpy(), ref["embedding"], atol=1e-3, rtol=1e-4)
