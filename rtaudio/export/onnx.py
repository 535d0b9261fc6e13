"""A trained ``FusedTagger`` -> ``engines/NAME/``: model.onnx + model.json (the runtime contract),
model.ckpt (to fine-tune from) and model.pt (TorchScript for the torch engine).

The graph maps ``waveform [batch, samples]`` (fixed window, dynamic batch) to ``scores [batch,
classes]`` and ``embedding [batch, 64 * streams]``, front-end included. It is simplified with
onnxslim, then checked before anything is written: ONNX Runtime must match PyTorch on real
windows at batch 1 and 8, TensorRT's ONNX parser must support every node (``rtaudio.tensorrt.ops``), and the
FP16-safety pass lists the nodes that must stay FP32 (``fp16``). Metadata goes both into the
ONNX ``metadata_props`` and into ``model.json``.
"""

from __future__ import annotations

import copy
import json
import logging
import pickle
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtaudio import __version__
from rtaudio.contract import ModelDir, sha256_file, write_model_dir
from rtaudio.contract.files import CHECKPOINT_FILE, TORCHSCRIPT_FILE
from rtaudio.export.graph import OPSET, ExportError, graph_bytes

log = logging.getLogger(__name__)

# Opset 17: the newest opset TensorRT 8.6 (JetPack 6.0) parses ("up to Opset 17"), inside 10.x's
# 9..20, and the first with LayerNormalization as one op (8.6 imports it as a normalization layer).
SCORE_ATOL, EMBEDDING_ATOL = 1e-4, 1e-3  # ONNX Runtime vs eager PyTorch, absolute
PARITY_BATCHES = (1, 8)
# (sample rate, samples per window, count) -> (float32 [count, samples] windows, what they are)
WindowMaker = Callable[[int, int, int], tuple[np.ndarray, str]]
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Parity:
    """Largest |ONNX Runtime - PyTorch| per output over every window and batch size tried."""

    scores: float
    embedding: float
    batches: tuple[int, ...]
    windows: int

    @property
    def ok(self) -> bool:
        return self.scores <= SCORE_ATOL and self.embedding <= EMBEDDING_ATOL

    def summary(self) -> str:
        return (
            f"parity vs PyTorch ({self.windows} windows, batch {' and '.join(map(str, self.batches))}): scores {self.scores:.2e}, "
            f"embedding {self.embedding:.2e} (tolerance {SCORE_ATOL:g} / {EMBEDDING_ATOL:g})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "scores_max_abs_diff": self.scores,
            "embedding_max_abs_diff": self.embedding,
            "batches": list(self.batches),
            "windows": self.windows,
            "tolerance": {"scores": SCORE_ATOL, "embedding": EMBEDDING_ATOL},
        }


def _exportable(model: Any) -> Any:
    """An eval-mode CPU copy whose parameters require grad: with frozen (no-grad) parameters
    PyTorch takes the fused Transformer fast path, which has no ONNX export."""
    return copy.deepcopy(model).cpu().eval().requires_grad_(True)


def with_window(model: Any, window_s: float) -> Any:
    """The same weights at another window length (the fused model takes any; the graph fixes one)."""
    from pydantic import ValidationError

    from rtaudio.model.fused import FusedTagger

    update = {"window_s": window_s, "hop_s": min(model.config.hop_s, window_s)}
    try:
        config = type(model.config).model_validate(model.config.model_dump() | update)
    except ValidationError as exc:
        raise ValueError(f"window {window_s} s: {exc.errors()[0]['msg']}") from exc
    resized = FusedTagger(config)
    resized.load_state_dict(model.state_dict())
    return resized


def onnx_bytes(model: Any, samples: int, opset: int = OPSET, outputs: Sequence[str] = ("scores", "embedding")) -> bytes:
    """The exported graph (dynamic batch), traced at ``samples`` per window, before simplification."""
    import torch

    return graph_bytes(model, (torch.zeros(2, samples),), ["waveform"], outputs, {name: {0: "batch"} for name in ("waveform", *outputs)}, opset)


def _name_nodes(proto: Any) -> None:
    """Give every node a unique name: the FP16 list and TensorRT layer pinning go by node name."""
    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op_type}_{i}"
        seen.add(node.name)


def build_graph(model: Any, samples: int, opset: int = OPSET, simplify: bool = True) -> Any:
    """Export, simplify with onnxslim (unless ``simplify`` is False), name every node; a checked ModelProto."""
    import onnx

    proto = onnx.load_from_string(onnx_bytes(model, samples, opset))
    if simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
    _name_nodes(proto)
    onnx.checker.check_model(proto)
    return proto


def _torchscript(model: Any, samples: int) -> Any:
    """``model.pt`` for the torch engine, traced at the model's window."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # check_trace re-runs under no_grad, where the Transformer takes its fused fast path: a
        # different (equivalent) graph; the export compares outputs instead
        return torch.jit.trace(model, torch.zeros(2, samples), check_trace=False)


def _parity(model: Any, run: Callable[[np.ndarray], Sequence[np.ndarray]], windows: np.ndarray, batches: Sequence[int]) -> Parity:
    """Every window through ``run`` and eager PyTorch at each batch size; the worst differences.

    ``model`` is the eval-mode copy ``export_model`` made (``_exportable``), not copied again here.
    """
    import torch

    worst = {"scores": 0.0, "embedding": 0.0}
    for batch in batches:
        for start in range(0, len(windows), batch):
            x = windows[start : start + batch]
            with torch.no_grad():
                expected = model(torch.from_numpy(x))
                got = run(x)
            for name, e, g in zip(worst, expected, got):
                worst[name] = max(worst[name], float(np.abs(e.numpy() - g).max()))
    return Parity(worst["scores"], worst["embedding"], tuple(batches), len(windows))


def onnx_parity(model: Any, onnx_model: bytes, windows: np.ndarray, batches: Sequence[int] = PARITY_BATCHES) -> Parity:
    """ONNX Runtime (CPU) against eager PyTorch on ``windows``."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    return _parity(model, lambda x: session.run(["scores", "embedding"], {"waveform": x}), windows, batches)


def torchscript_parity(model: Any, traced: Any, windows: np.ndarray, batches: Sequence[int] = (max(PARITY_BATCHES),)) -> Parity:
    """The traced ``model.pt`` against eager PyTorch on ``windows``."""
    import torch

    return _parity(model, lambda x: [t.numpy() for t in traced(torch.from_numpy(x))], windows, batches)


def exporter_versions(opset: int, simplified: bool) -> dict[str, Any]:
    """Versions of everything that shaped the graph."""
    import onnx
    import onnxruntime
    import torch

    slim = None
    if simplified:
        import onnxslim

        slim = onnxslim.__version__
    return {
        "rtaudio": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxslim": slim,
        "onnxruntime": onnxruntime.__version__,
        "opset": opset,
    }


def onnx_metadata(onnx_model: str | Path | Any) -> dict[str, Any]:
    """The ``metadata_props`` of an exported graph, JSON values decoded."""
    import onnx

    proto = onnx.load(str(onnx_model), load_external_data=False) if isinstance(onnx_model, (str, Path)) else onnx_model
    return {prop.key: json.loads(prop.value) for prop in proto.metadata_props}


def _set_metadata(proto: Any, fields: dict[str, Any]) -> None:
    del proto.metadata_props[:]
    for key, value in fields.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))


def export_model(
    model: Any,
    out: str | Path,
    thresholds: Sequence[float],
    model_id: str,
    version: str,
    extra: dict[str, Any] | None = None,
    *,
    opset: int = OPSET,
    simplify: bool = True,
    allow_unsupported: bool = False,
    windows: np.ndarray | None = None,
    windows_description: str = "",
    scenes: WindowMaker | None = None,
    median_windows: dict[str, int] | None = None,
) -> ModelDir:
    """Check, then write the four files into ``out`` and return the checked model directory.

    ``median_windows`` (label -> odd window count) goes into model.json as the labels' event smoothing
    defaults: the training side's ``rtaudio.train.labels.event_median_windows``.

    Raises ``ExportError`` (nothing written) when ONNX or TorchScript parity is off or, unless
    ``allow_unsupported``, TensorRT's parser would refuse a node. Parity runs on ``windows``
    (``[n, samples]``) or, when not given, on 16 windows from ``scenes`` (the training side's
    synthetic scenes: ``rtaudio.train.parity_windows``); the text heads' clips always come from
    ``scenes``. Export knows no training data of its own.
    """
    from rtaudio.export.fp16 import analyse_fp16
    from rtaudio.model.common import EMBED_DIM
    from rtaudio.model.fused import save_checkpoint
    from rtaudio.tensorrt.ops import check_model

    model = _exportable(model)
    config = model.config
    samples = round(config.window_s * config.sample_rate)
    if len(thresholds) != len(config.labels):
        raise ValueError(f"{len(thresholds)} thresholds for {len(config.labels)} labels; expected one per label")
    if windows is None:
        if scenes is None:
            raise ValueError("export needs parity windows: pass windows=[n, samples] or scenes=rtaudio.train.parity_windows.synthetic_windows")
        windows, windows_description = scenes(config.sample_rate, samples, 16)
    elif windows.ndim != 2 or windows.shape[1] != samples:
        raise ValueError(f"windows have shape {windows.shape}; expected [n, {samples}] (the model's window)")

    proto = build_graph(model, samples, opset, simplify)
    trt = check_model(proto)
    if not trt.ok and not allow_unsupported:
        raise ExportError(f"TensorRT's ONNX parser would refuse this graph (use --allow-unsupported to export anyway):\n{trt.format()}")
    parity = onnx_parity(model, proto.SerializeToString(), windows)
    if not parity.ok:
        hint = "" if not simplify else "; export with --no-simplify to see whether onnxslim is the cause"
        raise ExportError(f"ONNX Runtime disagrees with PyTorch: {parity.summary()}{hint}")
    traced = _torchscript(model, samples)
    script = torchscript_parity(model, traced, windows[: max(PARITY_BATCHES)])
    if not script.ok:
        raise ExportError(f"TorchScript model.pt disagrees with PyTorch: {script.summary()}")
    fp16 = analyse_fp16(proto, windows, windows_description or f"{len(windows)} given windows")

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    if model.text is not None:  # caption decoder and audio-text heads: their own graphs, checked the same way
        from rtaudio.export.text_heads import export_text_heads

        if scenes is None:
            raise ValueError("a model with text heads needs scenes= for its caption clips (rtaudio.train.parity_windows.synthetic_windows)")
        clips, _ = scenes(config.sample_rate, round(config.text.caption_window_s * config.sample_rate), 6)
        extra["text"] = {**export_text_heads(model, root, clips, opset), **extra.get("text", {})}
    thresholds = [float(t) for t in thresholds]
    checkpoint_sha256 = save_checkpoint(model, root / CHECKPOINT_FILE, thresholds=thresholds)
    info: dict[str, Any] = {
        "model_id": model_id,
        "version": version,
        "labels": list(config.labels),
        "thresholds": thresholds,
        "sample_rate": config.sample_rate,
        "window_s": config.window_s,
        "hop_s": min(config.hop_s, config.window_s),
        "embedding_dim": EMBED_DIM * len(config.streams),
        "streams": list(config.streams),
        "median_windows": {label: k for label, k in (median_windows or {}).items() if label in config.labels},
    }
    provenance = {"checkpoint_sha256": checkpoint_sha256, "exporters": exporter_versions(opset, simplify)}
    _set_metadata(proto, {**info, **provenance, "fusion": config.fusion})
    model_dir = write_model_dir(
        root,
        proto.SerializeToString(),
        **info,
        extra={
            "fusion": config.fusion,
            **extra,
            **provenance,
            "export": {"simplified": simplify, "parity": parity.to_json(), "torchscript_parity": script.to_json(), "tensorrt_check": trt.to_json()},
            "fp16": fp16.to_json(),
        },
    )
    traced.save(str(model_dir.path / TORCHSCRIPT_FILE))
    log.info("%s; %s; %s", parity.summary(), trt.verdict(), fp16.summary())
    return model_dir


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, model_id: str | None = None, version: str | None = None, window_s: float | None = None, **options: Any
) -> ModelDir:
    """Export a ``model.ckpt`` (or a training checkpoint): id, version and thresholds from it where it has them.

    Missing thresholds default to 0.5 (logged as a warning); ``options`` go to ``export_model``.
    Raises ``FileNotFoundError``/``ValueError`` for a missing or unusable checkpoint or window.
    """
    from rtaudio.model.fused import load_checkpoint

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        model, saved = load_checkpoint(path)
    except (ValueError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        raise ValueError(f"{path}: not an rtaudio model checkpoint, or not one this code can rebuild ({' '.join(str(exc).split())[:300]})") from exc
    if window_s is not None:
        model = with_window(model, window_s)
    trained = saved.get("train_config") or {}
    thresholds = saved.get("thresholds")
    if thresholds is None:
        log.warning("%s has no thresholds (a training checkpoint?): every label gets %.2f", path, DEFAULT_THRESHOLD)
        thresholds = [DEFAULT_THRESHOLD] * len(model.config.labels)
    source = {"path": str(path), "sha256": sha256_file(path)}
    return export_model(
        model,
        out,
        thresholds,
        model_id or trained.get("model_id") or Path(out).name,
        version or trained.get("version") or "0.1.0",
        {"source_checkpoint": source},
        **options,
    )
