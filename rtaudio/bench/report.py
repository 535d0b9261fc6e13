"""Tables for a ``run_bench`` result (rich), and the JSON file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rtaudio.bench.suite import RATIO_BACKEND

PIPE_WIDTH = 140  # rich wraps at 80 columns when stdout is not a terminal; a file or pipe has room


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(value: float) -> str:
    """Three significant digits, trailing zeros kept so a spread lines up (1.20, not 1.2)."""
    return f"{value:#.3g}".rstrip(".")


def _millions(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.2f}M"


def print_report(result: dict[str, Any], console: Console | None = None) -> None:
    """Machine line, engine table, capacity, yardsticks and ratios, text heads (when timed)."""
    console = console or Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
    m, model = result["machine"], result["model"]
    gpu = "; ".join(m["gpu"]) or "none"
    console.print(escape(f"rtaudio bench {result['date']}: {m['cpu']}, {m['cores']} cores, GPU: {gpu}; command: {result['command']}"))
    console.print(
        escape(
            f"model {model['path']} ({model['model_id']} {model['version']}, window {model['window_s']} s, hop {model['hop_s']} s, {model['sample_rate']} Hz)"
        )
    )

    table = Table("backend", "runs as", "batch", "ms / batch", "windows / s", "ms / window", title="Engine alone")
    for p in result["engine"]["points"]:
        table.add_row(
            p["backend"], p["engine"], str(p["batch"]), f"{p['ms_per_batch']:.2f}", f"{p['windows_per_s']:.1f}", f"{p['ms_per_batch'] / p['batch']:.3f}"
        )
    console.print(table)
    for backend, why in result["engine"]["skipped"].items():
        console.print(escape(f"  not timed: {backend}: {why}"))

    _capacity(console, result["capacity"])
    _yardsticks(console, result["yardsticks"], result["engine"]["points"])
    if "text" in result:
        _text(console, result["text"])


def _capacity(console: Console, capacity: dict[str, Any]) -> None:
    if "skipped" in capacity:
        console.print(escape(f"Capacity: skipped ({capacity['skipped']})"))
        return
    table = Table("streams", "sustained", "windows", "dropped", "p50 ms", "p99 ms", "RTF", title="Capacity search (whole runtime)")
    for t in capacity["trials"]:
        table.add_row(
            str(t["streams"]),
            "yes" if t["sustained"] else "[red]no[/]",
            str(t["windows"]),
            str(t["dropped"]),
            _ms(t["p50_ms"]),
            _ms(t["p99_ms"]),
            "-" if t["real_time_factor"] is None else f"{t['real_time_factor']:.3f}",
        )
    console.print(table)
    more = " (the limit asked for: it may take more)" if capacity["limit_reached"] else ""
    console.print(
        escape(
            f"capacity: {capacity['streams']} real-time stream(s){more} on {capacity['engine']}, hop {capacity['hop_s']} s, "
            f"backlog bound {capacity['backlog']} windows; capture -> publish p50 {_ms(capacity['p50_ms'])} ms, "
            f"p99 {_ms(capacity['p99_ms'])} ms; audio: {capacity['audio']}"
        ),
        style="bold",
    )


def _yardsticks(console: Console, yardsticks: dict[str, Any], points: list[dict[str, Any]]) -> None:
    if "skipped" in yardsticks:
        console.print(escape(f"Yardsticks: skipped ({yardsticks['skipped']})"))
        return
    cost = yardsticks["model_cost"] or {}
    own = [(p["batch"], p["ms_per_batch"]) for p in points if p["backend"] == RATIO_BACKEND]
    table = Table("model", "params", "MACs / window", "ms / window (batch 1)", "ms / window (largest batch)", title="Yardsticks (ONNX Runtime CPU)")
    table.add_row("this model", _millions(cost.get("params")), _millions(cost.get("macs")), *_per_window(own))
    for y in yardsticks["models"]:
        table.add_row(y["name"], _millions(y["cost"]["params"]), _millions(y["cost"]["macs"]), *_per_window([(b, ms) for b, ms, _ in y["points"]]))
    console.print(table)
    for y in yardsticks["models"]:
        console.print(escape(f"  {y['name']}: {y['architecture']}, random weights"))
    console.print(escape(f"  this model's parameters and MACs: {yardsticks['model_cost_note']}"))
    if yardsticks["ratios"]:
        ratio = Table("yardstick", "batch", "model ms / window", "yardstick ms / window", "model / yardstick (p25-p75)", "pairs", title="Cost ratio")
        for r in yardsticks["ratios"]:
            ratio.add_row(
                r["yardstick"],
                str(r["batch"]),
                f"{r['model_ms_per_window']:.3f}",
                f"{r['yardstick_ms_per_window']:.3f}",
                f"{_ratio(r['ratio'])}x ({_ratio(r['ratio_p25'])}-{_ratio(r['ratio_p75'])})",
                str(r["pairs"]),
            )
        console.print(ratio)
        console.print(
            escape(
                f"  model and yardstick timed interleaved (model, yardstick, model, ...) on {RATIO_BACKEND}, so both see the same load; "
                "median of the per-pair ratios (25th-75th percentile)"
            )
        )


def _text(console: Console, text: dict[str, Any]) -> None:
    if "captions" in text:
        table = Table(
            "batch",
            "memory frames",
            "encode ms / call",
            "decode ms / call",
            "decode steps",
            "tokens per caption",
            "ms / caption",
            title=f"Captions (ONNX Runtime CPU, {text['caption_threads']} thread, median of {text['repeats']})",
        )
        for r in text["captions"]:
            table.add_row(
                str(r["batch"]),
                str(r["memory_frames"]),
                f"{r['encode_ms']:.1f}",
                f"{r['decode_ms']:.1f}",
                " ".join(map(str, r["steps"])),
                " ".join(map(str, r["tokens"])),
                f"{r['ms_per_caption']:.1f}",
            )
        console.print(table)
        first = text["captions"][0]
        console.print(escape(f'  the same {len(first["tokens"])} clips of {text["audio"]} at every batch size; the first: "{first["captions"][0]}"'))
    else:
        console.print(escape(f"Captions: not timed ({text['captions_skipped']})"))
    if "scoring" in text:
        table = Table("batch", "scoring ms", "tagging ms", "scoring / tagging", title=f"Query scoring, {text['queries']} queries")
        for r in text["scoring"]:
            table.add_row(str(r["batch"]), f"{r['scoring_ms']:.3f}", f"{r['tagging_ms']:.2f}", f"{100 * r['ratio']:.3f} %")
        console.print(table)
        console.print(escape(f"  per tagging batch, median of {text['repeats']}; embedding one query (text_encoder.onnx): {text['embed_query_ms']:.2f} ms"))
    else:
        console.print(escape(f"Queries: not timed ({text['queries_skipped']})"))


def _per_window(points: list[tuple[int, float]]) -> tuple[str, str]:
    """ms per window at batch 1 and at the largest batch, from (batch, ms per batch) pairs."""
    if not points:
        return "-", "-"
    (b1, ms1), (bn, msn) = points[0], points[-1]
    return f"{ms1 / b1:.3f}", f"{msn / bn:.3f} (batch {bn})"


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
