"""A trained ``FusedTagger`` -> ``engines/NAME/``: model.onnx + model.json (the runtime contract),
model.ckpt (to fine-tune from) and model.pt (TorchScript for the torch engine).

The ONNX graph maps ``waveform [batch, samples]`` to ``scores [batch, classes]`` and
``embedding [batch, 64 * streams]``; batch is dynamic. Parity with PyTorch is checked here.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from rtaudio.contract import ModelDir, write_model_dir
from rtaudio.model.common import EMBED_DIM
from rtaudio.model.fused import CHECKPOINT_FILE, FusedTagger, save_checkpoint

TORCHSCRIPT_FILE = "model.pt"
OPSET = 17


def _exportable(model: FusedTagger) -> FusedTagger:
    """An eval-mode CPU copy whose parameters require grad: with frozen (no-grad) parameters
    PyTorch takes the fused Transformer fast path, which has no ONNX export."""
    return copy.deepcopy(model).cpu().eval().requires_grad_(True)


def onnx_bytes(model: FusedTagger, samples: int) -> bytes:
    """The exported graph (opset 17, dynamic batch), traced at ``samples`` per window."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation notices
        torch.onnx.export(model, (torch.zeros(2, samples),), buffer, input_names=["waveform"], output_names=["scores", "embedding"],
                          dynamic_axes={name: {0: "batch"} for name in ("waveform", "scores", "embedding")}, opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def export_model(model: FusedTagger, out: str | Path, thresholds: Sequence[float], model_id: str, version: str,
                 extra: dict[str, Any] | None = None) -> ModelDir:
    """Write the four files into ``out`` and return the checked model directory."""
    model = _exportable(model)
    config = model.config
    samples = round(config.window_s * config.sample_rate)
    model_dir = write_model_dir(
        out, onnx_bytes(model, samples), model_id=model_id, version=version, labels=list(config.labels),
        thresholds=[float(t) for t in thresholds], sample_rate=config.sample_rate, window_s=config.window_s,
        hop_s=min(config.hop_s, config.window_s), embedding_dim=EMBED_DIM * len(config.streams), streams=list(config.streams),
        extra={"fusion": config.fusion, **(extra or {})},
    )
    save_checkpoint(model, model_dir.path / CHECKPOINT_FILE, thresholds=[float(t) for t in thresholds])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # check_trace re-runs under no_grad, where the Transformer takes its fused fast path: a
        # different (equivalent) graph; parity is checked on outputs in the tests instead
        torch.jit.trace(model, torch.zeros(2, samples), check_trace=False).save(str(model_dir.path / TORCHSCRIPT_FILE))
    return model_dir


def onnx_parity(model: FusedTagger, onnx_path: str | Path, batches: Sequence[int] = (1, 8), seed: int = 0) -> float:
    """Largest |ONNX Runtime - PyTorch| over both outputs at each batch size (noise input)."""
    import onnxruntime as ort

    model = _exportable(model)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng, worst = np.random.default_rng(seed), 0.0
    samples = round(model.config.window_s * model.config.sample_rate)
    for batch in batches:
        x = (0.1 * rng.standard_normal((batch, samples))).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x))
        got = session.run(["scores", "embedding"], {"waveform": x})
        worst = max(worst, *(float(np.abs(e.numpy() - g).max()) for e, g in zip(expected, got)))
    return worst
