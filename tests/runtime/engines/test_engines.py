"""Every backend against the same tiny real model: shapes, values, selection, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rtaudio.contract import ModelDir
from rtaudio.runtime.engines import EngineError, OnnxRuntimeEngine, TorchEngine, create_engine
from rtaudio.runtime.engines.base import AutoConfig as AutoEngine
from rtaudio.runtime.engines.onnxruntime import OnnxRuntimeConfig as OrtConfig
from rtaudio.runtime.engines.torch import TorchConfig
from tests.tinymodel import make_tiny_model, tone, white_noise


def signals() -> np.ndarray:
    return np.stack([tone(440), tone(1000), white_noise(), np.zeros(16000, np.float32)])


def test_onnxruntime_scores_and_shapes(tiny_torch_model: ModelDir) -> None:
    with OnnxRuntimeEngine(tiny_torch_model, ["CPUExecutionProvider"]) as engine:
        out = engine.infer(signals())
        assert engine.description == "onnxruntime:CPUExecutionProvider"
        assert engine.last_ms > 0 and engine.calls == 1
    scores = out["scores"]
    assert scores.shape == (4, 3) and out["embedding"].shape == (4, 8)
    assert list(scores.argmax(axis=1)[:3]) == [0, 1, 2]
    assert scores[3].max() < 0.1  # silence


def test_torch_matches_onnxruntime(tiny_torch_model: ModelDir) -> None:
    pytest.importorskip("torch")
    batch = signals()
    with OnnxRuntimeEngine(tiny_torch_model) as ort_engine, TorchEngine(tiny_torch_model, "cpu") as torch_engine:
        a, b = ort_engine.infer(batch), torch_engine.infer(batch)
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-4)
    np.testing.assert_allclose(a["embedding"], b["embedding"], rtol=1e-3, atol=1e-4)


def test_auto_prefers_onnxruntime_and_logs_why(tiny_torch_model: ModelDir, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    engine = create_engine(AutoEngine(type="auto"), tiny_torch_model)
    assert isinstance(engine, OnnxRuntimeEngine)
    assert "engine auto: chose onnxruntime" in caplog.text


def test_torch_without_torchscript_is_refused(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "plain")
    ok, why = TorchEngine.available(model)
    assert not ok and "no model.pt" in why
    with pytest.raises(EngineError, match="engine torch is not usable: no model.pt"):
        create_engine(TorchConfig(type="torch"), model)


def test_shape_checks(tiny_torch_model: ModelDir) -> None:
    with OnnxRuntimeEngine(tiny_torch_model) as engine:
        with pytest.raises(EngineError, match=r"\[batch, samples\]"):
            engine.infer(np.zeros(16000, np.float32))


def test_wrong_label_count_is_caught_on_first_call(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "m")
    bad = ModelDir(path=model.path, info=model.info.model_copy(update={"labels": ["a", "b"], "thresholds": [0.5, 0.5]}))
    with OnnxRuntimeEngine(bad) as engine, pytest.raises(EngineError, match=r"expected \(1, 2\) for 2 labels"):
        engine.infer(np.zeros((1, 16000), np.float32))


def test_missing_provider_reported(tiny_torch_model: ModelDir) -> None:
    engine = create_engine(OrtConfig(type="onnxruntime", providers=["CPUExecutionProvider"]), tiny_torch_model)
    engine.open()
    assert engine.description.endswith("CPUExecutionProvider")
    engine.close()
