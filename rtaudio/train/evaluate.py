"""``rtaudio eval``: score a model directory on a data split and write the report.

The headline numbers come from ``model.onnx`` through the runtime's ONNX Runtime engine, so
they describe what the device runs. ``model.ckpt`` beside it gives the ablation: each
stream through its own head. Clips longer than the window are scored like the runtime
scores a stream: windows at the model's hop, the clip's score the maximum over windows.
Thresholds are tuned per class on the ``val`` split and set against those in model.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import TypeAdapter, ValidationError

from rtaudio.contract import ModelDir, load_model_dir
from rtaudio.contract.files import CHECKPOINT_FILE
from rtaudio.model.fused import FusedTagger, load_checkpoint
from rtaudio.runtime.engines.onnxruntime import OnnxRuntimeEngine
from rtaudio.train import metrics
from rtaudio.train.baselines import baseline_scores
from rtaudio.train.config import DataConfig, ManifestData
from rtaudio.train.data import Clip, ClipDataset, DataError, load_clips
from rtaudio.train.evaluate_text import evaluate_text, has_text_heads
from rtaudio.train.report import EvalResult, write_report
from rtaudio.train.windowing import ScoreFn, score_clips

TUNE_SPLIT = "val"

_SPECS = TypeAdapter(DataConfig | list[DataConfig])


def load_data_spec(path: str | Path) -> DataConfig | list[DataConfig]:
    """A manifest CSV, or a YAML file holding a data spec, a list of them, or a train.yaml's ``data``."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return ManifestData(type="manifest", path=path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read the data spec ({exc})") from exc
    if isinstance(raw, dict) and "data" in raw:
        raw = raw["data"]
    try:
        return _SPECS.validate_python(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
        raise DataError(f"{path}: not a data spec (type audiocaps, clotho, manifest, fsd50k, esc50 or synthetic): {problems}") from exc


def describe(spec: DataConfig | Sequence[DataConfig]) -> str:
    """A short human name for a data spec, for the report title."""
    if isinstance(spec, Sequence):
        return " + ".join(describe(s) for s in spec)
    if spec.type == "synthetic":
        return f"synthetic ({spec.scenes} scenes, seed {spec.seed})"
    return f"{spec.type} {spec.path if isinstance(spec, ManifestData) else spec.root}"


def _onnx_fn(engine: OnnxRuntimeEngine) -> ScoreFn:
    return lambda batch: {"onnx": engine.infer(batch)["scores"]}


def _torch_fn(model: FusedTagger) -> ScoreFn:
    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = model.run(torch.from_numpy(batch))
        scores = {"torch": torch.sigmoid(out.logits).numpy()}
        scores.update({f"stream:{name}": torch.sigmoid(v).numpy() for name, v in out.stream_logits.items()})
        return scores

    return run


def _score_model(model_dir: ModelDir, splits: dict[str, list[Clip]], with_checkpoint: bool) -> dict[str, dict[str, np.ndarray]]:
    """Per split, every score source of one model: ONNX, and PyTorch fused + streams when a checkpoint is there."""
    engine = OnnxRuntimeEngine(model_dir, providers=["CPUExecutionProvider"])
    fns: list[ScoreFn] = [_onnx_fn(engine)]
    ckpt = model_dir.path / CHECKPOINT_FILE
    if with_checkpoint and model_dir.has_checkpoint:
        model, _ = load_checkpoint(ckpt)
        if list(model.config.labels) != list(model_dir.info.labels):
            raise DataError(f"{ckpt}: labels {model.config.labels} differ from model.json's {model_dir.info.labels}; they come from different exports")
        fns.append(_torch_fn(model.eval()))
    engine.open()
    try:
        return {
            split: score_clips(clips, model_dir, lambda b: {k: v for fn in fns for k, v in fn(b).items()}) if clips else {} for split, clips in splits.items()
        }
    finally:
        engine.close()


def _row(name: str, y: np.ndarray, scores: np.ndarray, val_y: np.ndarray | None, val_scores: np.ndarray | None, saved: np.ndarray) -> dict[str, Any]:
    """One ablation row; thresholds tuned on this source's own validation scores when there are any."""
    thresholds = metrics.tune_thresholds(val_y, val_scores) if val_y is not None and val_scores is not None else saved
    return {"name": name, **metrics.summarize(y, scores, thresholds).row()}


def _baseline_rows(
    data_spec: Any,
    clips: list[Clip],
    chosen: dict[str, list[Clip]],
    split: str,
    labels: list[str],
    info: Any,
    y: np.ndarray,
    val_y: np.ndarray | None,
    saved: np.ndarray,
    teacher_cache: str | Path | None,
    out: str | Path | None,
) -> list[dict[str, Any]]:
    """Ablation rows of the two baselines, fitted on the data's train clips."""
    splits = {"train": [c for c in clips if c.split == "train" and c.path is not None], **chosen}
    if not splits["train"]:
        raise DataError(f"{describe(data_spec)}: --baselines needs tagged audio files in the train split to fit on; there are none")
    specs = data_spec if isinstance(data_spec, (list, tuple)) else [data_spec]
    manifest = next((s.path for s in specs if getattr(s, "type", None) == "manifest"), None)
    cache = Path(teacher_cache) if teacher_cache else manifest.parent / "teacher.npz" if manifest else Path(out or ".") / "teacher.npz"
    scored = baseline_scores(splits, labels, info.sample_rate, info.window_s, info.hop_s, cache)
    return [
        _row(f"baseline: {name}", y, scores[split], val_y, scores.get(TUNE_SPLIT) if split != TUNE_SPLIT else None, saved) for name, scores in scored.items()
    ]


def evaluate(
    model_dir: str | Path,
    data_spec: DataConfig | Sequence[DataConfig] | str | Path,
    split: str = "test",
    compare: Sequence[str | Path] = (),
    out: str | Path | None = None,
    command: str | None = None,
    external_metrics: bool = True,
    baselines: bool = False,
    teacher_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Score ``model_dir`` (and ``compare`` models) on ``split``; write the report into ``out`` when given.

    ``baselines`` adds a linear probe on the pretrained (aisfx) embedding and hand-feature logistic
    regression, both fitted on the data's train split (``rtaudio.train.baselines``); their teacher
    embeddings are cached in ``teacher_cache`` (default: beside the manifest, else in ``out``).

    Models with text heads also get caption, retrieval and zero-shot metrics (``evaluate_text``);
    ``external_metrics`` False skips the Java ones (METEOR, SPICE) even where installed.
    """
    if isinstance(data_spec, (str, Path)):
        data_spec = load_data_spec(data_spec)
    model = load_model_dir(model_dir)
    labels = list(model.info.labels)
    others = [(path, load_model_dir(path)) for path in compare]
    for path, other in others:  # checked before any scoring
        if not set(other.info.labels) & set(labels):
            raise DataError(f"--compare {path}: none of its labels {other.info.labels} is among {labels}; nothing to compare")
    every = load_clips(data_spec)
    clips = [c for c in every if c.tagged]
    chosen = {s: [c for c in clips if c.split == s] for s in dict.fromkeys((split, TUNE_SPLIT))}
    if not chosen[split]:
        counts = {s: sum(c.split == s for c in clips) for s in ("train", "val", "test")}
        raise DataError(f"{describe(data_spec)}: no clips in split {split!r}; the data has {counts}")
    targets = {s: ClipDataset(c, labels, model.info.sample_rate, model.info.window_s, train=False).targets() for s, c in chosen.items() if c}
    y = targets[split]
    val_y = targets.get(TUNE_SPLIT)

    scored = _score_model(model, chosen, with_checkpoint=True)
    test, val = scored[split], scored[TUNE_SPLIT] or None
    saved = np.asarray(model.info.thresholds)
    tuned = metrics.tune_thresholds(val_y, val["onnx"]) if val and val_y is not None else None
    head = metrics.summarize(y, test["onnx"], saved)
    at_tuned = metrics.summarize(y, test["onnx"], tuned) if tuned is not None else None

    fusion = model.info.extra.get("fusion")
    ablation = [_row(f"{key.split(':', 1)[1]} alone", y, test[key], val_y, val[key] if val else None, saved) for key in test if key.startswith("stream:")]
    ablation.append(
        _row(
            f"fused ({fusion}) — {model.info.model_id}" if fusion else f"model — {model.info.model_id}",
            y,
            test["onnx"],
            val_y,
            val["onnx"] if val else None,
            saved,
        )
    )
    for other_path, other in others:
        other_scores = _score_model(other, chosen, with_checkpoint=False)
        other_val = other_scores[TUNE_SPLIT]
        name = f"fused — {other.info.model_id} ({Path(other_path).name})"
        if list(other.info.labels) == labels:
            ablation.append(_row(name, y, other_scores[split]["onnx"], val_y, other_val["onnx"] if other_val else None, np.asarray(other.info.thresholds)))
            continue
        # another label set: both models on the labels they share, by name
        shared = [lb for lb in labels if lb in other.info.labels]
        ours, theirs = [labels.index(lb) for lb in shared], [list(other.info.labels).index(lb) for lb in shared]
        sub_val = val_y[:, ours] if val_y is not None else None
        ablation.append(
            _row(
                f"{name} on the {len(shared)} shared labels",
                y[:, ours],
                other_scores[split]["onnx"][:, theirs],
                sub_val,
                other_val["onnx"][:, theirs] if other_val else None,
                np.asarray(other.info.thresholds)[theirs],
            )
        )
        ablation.append(
            _row(
                f"fused — {model.info.model_id} on the same {len(shared)} labels",
                y[:, ours],
                test["onnx"][:, ours],
                sub_val,
                val["onnx"][:, ours] if val else None,
                saved[ours],
            )
        )

    if baselines:
        ablation += _baseline_rows(data_spec, clips, chosen, split, labels, model.info, y, val_y, saved, teacher_cache, out)

    summary: dict[str, Any] = {
        "command": command or f"evaluate({str(model_dir)!r}, split={split!r})",
        "model": str(model_dir),
        "model_id": model.info.model_id,
        "data": describe(data_spec),
        "split": split,
        "clips": len(chosen[split]),
        "engine": "onnxruntime",
        "labels": labels,
        "headline": {"thresholds": "model.json", **head.row()},
        "tuned": {
            "tuned_on": (TUNE_SPLIT if split != TUNE_SPLIT else f"{TUNE_SPLIT} (the same clips: optimistic)") if tuned is not None else None,
            "micro_f1": at_tuned.micro_f1 if at_tuned else None,
            "macro_f1": at_tuned.macro_f1 if at_tuned else None,
        },
        "onnx_vs_torch_max_abs": float(np.abs(test["onnx"] - test["torch"]).max()) if "torch" in test else None,
        "excluded": [labels[i] for i in head.excluded],
        "ablation": ablation,
        "per_class": [
            {
                "label": label,
                "positives": int(y[:, i].sum()),
                "ap": float(head.ap[i]),
                "f1": float(head.f1[i]),
                "f1_tuned": float(at_tuned.f1[i]) if at_tuned else None,
                "threshold_saved": float(saved[i]),
                "threshold_tuned": float(tuned[i]) if tuned is not None else None,
            }
            for i, label in enumerate(labels)
        ],
    }
    text_models = [(f"{model.info.model_id}", model)] + [
        (f"{o.info.model_id} ({Path(p).name})", o) for p, o in others if list(o.info.labels) == labels
    ]  # zero-shot scoring needs the same labels
    text_models = [(name, m) for name, m in text_models if has_text_heads(m)]
    if text_models:
        split_clips = [c for c in every if c.split == split]
        summary["text"] = [{"name": name, **evaluate_text(m, split_clips, chosen[split], y, external=external_metrics)} for name, m in text_models]
    if out is not None:
        write_report(EvalResult(summary, labels, y, test["onnx"], saved), out)
    return summary
