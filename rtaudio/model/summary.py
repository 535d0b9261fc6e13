"""Parameter counts and multiply-accumulates per window, for each stream and the whole model.

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one eval forward of a
batch-1 window (matmuls and convolutions; FLOPs / 2), with attention on the math backend so its
two batched matmuls are counted too. ``inference_params`` counts the parameters of modules that
run at inference, so training-only parts (the VAE decoder, the codes stream's pretraining heads)
are in ``params`` but not there.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from rtaudio.model.common import Stream
from rtaudio.model.fused import FusedTagger


def _params(module: nn.Module, ran: set[int] | None = None) -> int:
    return sum(p.numel() for m in module.modules() if ran is None or id(m) in ran for p in m.parameters(recurse=False))


def _called(module: nn.Module) -> list[int]:
    """Ids a call of ``module`` runs: attention uses its ``out_proj`` functionally, so it counts whole."""
    return [id(m) for m in module.modules()] if isinstance(module, nn.MultiheadAttention) else [id(module)]


def _macs(counts: dict[str, dict[Any, int]], module: str) -> int:
    return sum(counts.get(module, {}).values()) // 2


def model_summary(model: FusedTagger, window_s: float) -> list[dict[str, Any]]:
    """One row per part (``frontend``, each stream, ``heads+fusion``) and a ``total`` row.

    Each row: ``part``, ``kind``, ``params``, ``inference_params``, ``macs`` (per window of ``window_s``).
    """
    if window_s <= 0:
        raise ValueError(f"model_summary: window_s must be > 0 seconds (got {window_s})")
    ran: set[int] = set()
    hooks = [m.register_forward_hook(lambda mod, *_: ran.update(_called(mod))) for m in model.modules()]
    waveform = torch.zeros(1, round(window_s * model.config.sample_rate))
    was_training, fastpath = model.training, torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel hides its matmuls from the counter
    try:
        model.eval()
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(waveform)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    counts = counter.get_flop_counts()
    top = type(model).__name__
    total = _macs(counts, "Global")
    rows: list[dict[str, Any]] = [
        {
            "part": "frontend",
            "kind": "dsp",
            "params": _params(model.frontend),
            "inference_params": _params(model.frontend, ran),
            "macs": _macs(counts, f"{top}.frontend"),
        }
    ]
    for name, stream in model.streams.items():
        rows.append(
            {
                "part": name,
                "kind": type(cast(Stream, stream)).kind,
                "params": _params(stream),
                "inference_params": _params(stream, ran),
                "macs": _macs(counts, f"{top}.streams.{name}"),
            }
        )
    heads = [model.stream_heads, model.fusion, *([model.probe] if model.probe is not None else [])]
    rows.append(
        {
            "part": "heads+fusion",
            "kind": "classifier",
            "params": sum(_params(m) for m in heads),
            "inference_params": sum(_params(m, ran) for m in heads),
            "macs": total - sum(r["macs"] for r in rows),
        }
    )
    rows.append({"part": "total", "kind": "model", "params": _params(model), "inference_params": _params(model, ran), "macs": total})
    return rows
