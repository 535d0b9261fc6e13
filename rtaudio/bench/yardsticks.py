"""Yardsticks timed in the same run as the model, so its cost per window reads as a ratio.

Each reference architecture (``yardstick_models``) is built with random weights at the
model's sample rate and window, exported to ONNX (opset 17, dynamic batch) in a temporary
model directory and timed through the same ONNX Runtime CPU engine at the same batch sizes:
alone, and interleaved with the model (model, yardstick, model, ...) for the ratios, so that
both halves of each pair see the same machine load.
Parameters and multiply-accumulates per window are counted the way ``rtaudio.model.summary``
counts the fused model's (``FlopCounterMode`` on a batch-1 eval forward, FLOPs / 2).
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtaudio.bench.engine import PairedPoint, batch_sizes, time_batches, time_pairs
from rtaudio.contract import ModelDir, ModelInfo, write_model_dir
from rtaudio.runtime.engines import Engine, OnnxRuntimeEngine

log = logging.getLogger(__name__)


@dataclass
class Cost:
    """Size and arithmetic of one model for one window."""

    params: int
    macs: int  # multiply-accumulates per window (batch 1)


@dataclass
class Yardstick:
    name: str
    architecture: str
    cost: Cost
    points: list[tuple[int, float, float]]  # (batch, ms per batch, windows/s) on ONNX Runtime CPU, timed alone
    paired: list[PairedPoint] = field(default_factory=list)  # interleaved with the model: a = model, b = this yardstick


def torch_missing() -> str | None:
    """Why the yardsticks cannot be built here, or None when torch is importable."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (the yardsticks are built in torch; install the 'train' extra)"
    return None


def count_cost(module: Any, samples: int) -> Cost:
    """Parameters and MACs of one eval forward of a ``[1, samples]`` waveform."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, samples))
    return Cost(sum(p.numel() for p in module.parameters()), counter.get_total_flops() // 2)


def export_yardstick(module: Any, info: ModelInfo, name: str, classes: int, out: Path) -> ModelDir:
    """``module`` as a contract model directory at ``out`` (same rate, window and hop as ``info``)."""
    from rtaudio.export.onnx import onnx_bytes

    module.eval()
    return write_model_dir(
        out,
        onnx_bytes(module, info.window_samples, outputs=("scores",)),
        model_id=name,
        version="random-weights",
        labels=[f"class_{i}" for i in range(classes)],
        thresholds=[0.5] * classes,
        sample_rate=info.sample_rate,
        window_s=info.window_s,
        hop_s=info.hop_s,
        extra={"purpose": "benchmark yardstick: random weights, cost only"},
    )


def build_yardsticks(info: ModelInfo) -> list[tuple[str, str, Any, int]]:
    """(name, architecture, torch module, classes) for each yardstick, at ``info``'s rate and window."""
    from rtaudio.bench.yardstick_models import AUDIOSET_CLASSES, YAMNET_CLASSES, EfficientAtMn10Like, YamnetLike

    return [
        ("yamnet-arch", "MobileNetV1 on 96x64 log-mel patches (YAMNet)", YamnetLike(info.sample_rate, info.window_samples), YAMNET_CLASSES),
        (
            "efficientat-mn10-like",
            "MobileNetV3-Large, SE, width 1.0, 128-band log-mel (EfficientAT mn10)",
            EfficientAtMn10Like(info.sample_rate),
            AUDIOSET_CLASSES,
        ),
    ]


def bench_yardsticks(
    info: ModelInfo, max_batch: int, seconds: float, names: Sequence[str] | None = None, model_engine: Engine | None = None
) -> list[Yardstick]:
    """Build, export and time each yardstick on ONNX Runtime CPU at batch 1..``max_batch``.

    Each is timed alone, then, when the model's open ``model_engine`` is given, interleaved
    with it (``Yardstick.paired``, the ratios).
    """
    results = []
    batches = batch_sizes(max_batch)
    with tempfile.TemporaryDirectory(prefix="rtaudio-yardsticks-") as tmp:
        for name, architecture, module, classes in build_yardsticks(info):
            if names is not None and name not in names:
                continue
            cost = count_cost(module, info.window_samples)
            model = export_yardstick(module, info, name, classes, Path(tmp) / name)
            log.info("bench: timing yardstick %s (%.2fM params, %.1fM MACs per window)", name, cost.params / 1e6, cost.macs / 1e6)
            with OnnxRuntimeEngine(model, ["CPUExecutionProvider"]) as engine:
                timed = time_batches(engine, info.window_samples, batches, seconds)
                paired = [] if model_engine is None else time_pairs(model_engine, engine, info.window_samples, batches, seconds)
            results.append(Yardstick(name, architecture, cost, [(b, round(ms, 3), round(1000 * b / ms, 1)) for b, ms, _ in timed], paired))
    return results


def model_cost(model: ModelDir) -> tuple[Cost | None, str]:
    """The model's own cost from its ``model.ckpt`` (FusedTagger), or None and why not."""
    why = torch_missing()
    if why:
        return None, why
    from rtaudio.contract.files import CHECKPOINT_FILE
    from rtaudio.model.fused import load_checkpoint
    from rtaudio.model.summary import model_summary

    checkpoint = model.path / CHECKPOINT_FILE
    if not model.has_checkpoint:
        return None, f"no {CHECKPOINT_FILE} in {model.path} (parameters and MACs are counted from the FusedTagger checkpoint)"

    try:
        tagger, _ = load_checkpoint(checkpoint)
    except (OSError, RuntimeError, ValueError) as exc:  # torch reports a mismatched state dict as RuntimeError
        return None, f"{checkpoint} does not load: {str(exc).splitlines()[0]}"
    total = model_summary(tagger, model.info.window_s)[-1]
    return Cost(total["inference_params"], total["macs"]), f"from {CHECKPOINT_FILE} (parameters used at inference)"
