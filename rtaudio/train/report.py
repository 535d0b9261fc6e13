"""The eval report: ``eval.json`` (everything), ``eval.md`` (for people) and PNG plots."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtaudio.contract.files import EVAL_JSON_FILE, EVAL_MARKDOWN_FILE
from rtaudio.train import metrics, plots

PLOTS = {"ap": "per_class_ap.png", "pr": "pr_worst.png", "cooccurrence": "cooccurrence.png"}


@dataclass
class EvalResult:
    """What ``evaluate`` measured: a JSON-able summary plus the arrays the plots need."""

    summary: dict[str, Any]
    labels: list[str]
    y_true: np.ndarray  # [clips, classes]
    scores: np.ndarray  # [clips, classes], the headline (ONNX) scores
    thresholds: np.ndarray  # [classes], the headline thresholds (model.json)


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _sci(value: float | None) -> str:
    return "– (no model.ckpt)" if value is None else f"{value:.1e}"


def _json_safe(value: Any) -> Any:
    """NaN -> null, numpy -> Python, so eval.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def markdown(summary: dict[str, Any]) -> str:
    """``eval.md``: headline, ablation table, per-class table, plots, and the command."""
    head, tuned = summary["headline"], summary["tuned"]
    tuned_note = f"tuned per class on the {tuned['tuned_on']} split" if tuned["tuned_on"] else "not tuned (no validation clips)"
    lines = [
        f"# Evaluation: {summary['model_id']} on {summary['data']} ({summary['split']} split, {summary['clips']} clips)",
        "",
        f"Produced by: `{summary['command']}`",
        "",
        f"## Headline ({summary['engine']}: the graph the device runs)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| mAP (macro) | {_num(head['map'])} |",
        f"| micro-F1 at model.json thresholds | {_num(head['micro_f1'])} |",
        f"| macro-F1 at model.json thresholds | {_num(head['macro_f1'])} |",
        f"| micro-F1 at thresholds {tuned_note} | {_num(tuned['micro_f1'])} |",
        f"| macro-F1 at thresholds {tuned_note} | {_num(tuned['macro_f1'])} |",
        f"| max abs(ONNX − PyTorch) score | {_sci(summary['onnx_vs_torch_max_abs'])} |",
        "",
    ]
    if summary["excluded"]:
        lines += [f"Classes with no positive clip in this split (left out of mAP and macro-F1): {', '.join(summary['excluded'])}.", ""]
    lines += [
        "## Ablation",
        "",
        "Each stream through its own head, the fused model, and any compared model, on the same clips; "
        "F1 at thresholds tuned per row on the validation split (model.json thresholds where there is none).",
        "",
        "| model | mAP | micro-F1 | macro-F1 |",
        "|---|---|---|---|",
        *(f"| {row['name']} | {_num(row['map'])} | {_num(row['micro_f1'])} | {_num(row['macro_f1'])} |" for row in summary["ablation"]),
        "",
        "## Per class",
        "",
        "| label | positives | AP | F1 (model.json) | F1 (tuned) | threshold (model.json) | threshold (tuned) |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {c['label']} | {c['positives']} | {_num(c['ap'])} | {_num(c['f1'])} | {_num(c['f1_tuned'])} "
            f"| {_num(c['threshold_saved'], 2)} | {_num(c['threshold_tuned'], 2)} |"
            for c in summary["per_class"]
        ),
        "",
        *_text_section(summary.get("text", [])),
        "## Plots",
        "",
        f"![Per-class AP]({PLOTS['ap']})",
        f"![PR curves of the worst classes]({PLOTS['pr']})",
        f"![True vs predicted labels]({PLOTS['cooccurrence']})",
        "",
    ]
    return "\n".join(lines)


def _text_section(rows: list[dict[str, Any]]) -> list[str]:
    """Captions, retrieval and zero-shot tagging, one row per model with text heads."""
    if not rows:
        return []
    caption_keys = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d", "meteor", "spice")
    retrieval_keys = ("t2a_r@1", "t2a_r@5", "t2a_r@10", "t2a_map@10", "a2t_r@1", "a2t_r@5", "a2t_r@10", "a2t_map@10")
    lines = ["## Captions and free-text queries", "", "Through the exported graphs with the runtime's Captioner and TextSpace (greedy decoding).", ""]
    with_captions = [r for r in rows if r.get("captions")]
    if with_captions:
        first = with_captions[0]["captions"]
        lines += [
            f"Captions of {first['clips']} clips against {first['references']} reference captions:",
            "",
            "| model | " + " | ".join(k.replace("_", "-").upper() for k in caption_keys) + " |",
            "|---|" + "---|" * len(caption_keys),
            *(f"| {r['name']} | " + " | ".join(_num(r["captions"][k]) for k in caption_keys) + " |" for r in with_captions),
            "",
        ]
        skipped = {k: v for r in with_captions for k, v in r["captions"]["skipped"].items()}
        if skipped:
            lines += ["Skipped: " + "; ".join(f"{k.upper()}: {v}" for k, v in skipped.items()) + ".", ""]
        lines += [
            "Retrieval (t2a: a caption finds its clip; a2t: a clip finds its captions):",
            "",
            "| model | " + " | ".join(retrieval_keys) + " |",
            "|---|" + "---|" * len(retrieval_keys),
            *(f"| {r['name']} | " + " | ".join(_num(r["retrieval"][k]) for k in retrieval_keys) + " |" for r in with_captions),
            "",
        ]
        lines += [
            "Examples (generated / first reference):",
            "",
            *(f"- {e['generated']} / {e['references'][0]}" for e in with_captions[0]["captions"]["examples"]),
            "",
        ]
    zero = [r for r in rows if r.get("zero_shot")]
    if zero:
        lines += [
            f"Zero-shot tagging: each label's name as a query, {zero[0]['zero_shot']['clips']} labelled clips:",
            "",
            "| model | top-1 | mAP | query threshold (model.json) |",
            "|---|---|---|---|",
            *(f"| {r['name']} | {_num(r['zero_shot']['top1'])} | {_num(r['zero_shot'].get('map'))} | {_num(r.get('query_threshold'))} |" for r in zero),
            "",
        ]
    return lines


def cooccurrence_rows(result: EvalResult) -> tuple[list[str], np.ndarray]:
    """Row names and counts for the co-occurrence plot: a row per label, plus ``(no label)``
    for tags given to clips without labels (false alarms on background), when there are any."""
    counts = metrics.cooccurrence(result.y_true, result.scores, result.thresholds)
    rows = list(result.labels)
    unlabelled = result.y_true.sum(axis=1) == 0
    if unlabelled.any():
        counts = np.vstack([counts, (result.scores[unlabelled] >= result.thresholds).sum(axis=0)])
        rows.append("(no label)")
    return rows, counts


def write_report(result: EvalResult, out_dir: str | Path) -> list[Path]:
    """Write eval.json, eval.md and the plots into ``out_dir``; return the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = _json_safe(result.summary)
    json_path = out / EVAL_JSON_FILE
    json_path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    md_path = out / EVAL_MARKDOWN_FILE
    md_path.write_text(markdown(summary))
    ap = metrics.per_class_ap(result.y_true, result.scores)
    rows, counts = cooccurrence_rows(result)
    return [
        json_path,
        md_path,
        plots.ap_bars(result.labels, ap, out / PLOTS["ap"]),
        plots.worst_pr_curves(result.labels, result.y_true, result.scores, ap, out / PLOTS["pr"]),
        plots.cooccurrence_plot(rows, result.labels, counts, out / PLOTS["cooccurrence"]),
    ]
