"""One ``rtaudio bench`` run: the machine, the engine table, the capacity search, the yardsticks,
and the text heads when the model has them.

``run_bench`` returns a JSON-ready dict (``SCHEMA`` versioned); ``report.print_report``
renders it. Ratios are model / yardstick per-window time on ONNX Runtime CPU, both timed in
this run, so they travel between machines better than absolute figures; the two are timed
interleaved (model, yardstick, model, ...) so a shift in the machine's load hits both alike.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtaudio import __version__
from rtaudio.bench.engine import bench_engines
from rtaudio.contract import load_model_dir

if TYPE_CHECKING:
    from rtaudio.bench.yardsticks import Yardstick

log = logging.getLogger(__name__)

SCHEMA = 2  # 2: ratios from interleaved pairs, with ratio_p25, ratio_p75 and pairs
RATIO_BACKEND = "onnxruntime-cpu"
PACKAGES = ("numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "torch", "tensorrt", "paho-mqtt")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    from rtaudio.tensorrt.cuda import gpu_names

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "gpu": gpu_names(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str | None]:
    """Installed versions (read from package metadata, nothing imported); None when absent."""
    found: dict[str, str | None] = {"rtaudio": __version__}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def ratios(yardsticks: Sequence[Yardstick]) -> list[dict[str, Any]]:
    """Model / yardstick ms per window at each batch size, from their interleaved pairs: the
    median of the per-pair ratios and its 25th and 75th percentiles."""
    rows = []
    for y in yardsticks:
        for p in y.paired:
            rows.append(
                {
                    "yardstick": y.name,
                    "batch": p.batch,
                    "model_ms_per_window": round(p.a_ms / p.batch, 4),
                    "yardstick_ms_per_window": round(p.b_ms / p.batch, 4),
                    "ratio": round(p.ratio, 3),
                    "ratio_p25": round(p.ratio_p25, 3),
                    "ratio_p75": round(p.ratio_p75, 3),
                    "pairs": p.pairs,
                }
            )
    return rows


def run_bench(
    model_path: Path,
    backends: Sequence[str] | None = None,
    max_batch: int = 32,
    seconds: float = 2.0,
    audio: Path | None = None,
    capacity_engine: str = "auto",
    max_streams: int = 256,
    backlog: int = 2,
    skip_capacity: bool = False,
    skip_yardsticks: bool = False,
    command: str = "",
    text_repeats: int = 20,
) -> dict[str, Any]:
    """Run the parts asked for and return the results as one JSON-ready dict.

    ``audio`` is played by the capacity streams and captioned by the text bench (default config/demo.flac there).
    """
    model = load_model_dir(model_path)
    info = model.info
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "versions": versions(),
        "model": {
            "path": str(model_path),
            "model_id": info.model_id,
            "version": info.version,
            "sample_rate": info.sample_rate,
            "window_s": info.window_s,
            "hop_s": info.hop_s,
            "classes": len(info.labels),
            "streams": info.streams,
        },
        "settings": {"max_batch": max_batch, "seconds": seconds, "backends": list(backends) if backends else "all usable"},
    }
    engine = bench_engines(model, backends, max_batch, seconds)
    result["engine"] = {"points": [asdict(p) for p in engine.points], "skipped": engine.skipped}
    if skip_capacity:
        result["capacity"] = {"skipped": "--skip-capacity"}
    else:
        from rtaudio.bench.capacity import find_capacity

        result["capacity"] = asdict(find_capacity(model_path, audio, capacity_engine, seconds, max_batch, backlog, max_streams))
    result["yardsticks"] = _yardsticks(model, max_batch, seconds, skip_yardsticks)
    from rtaudio.bench.text_heads import bench_text

    text = bench_text(model, result["engine"]["points"], RATIO_BACKEND, text_repeats, seconds, audio)
    if text is not None:
        result["text"] = text
    return result


def _yardsticks(model: Any, max_batch: int, seconds: float, skip: bool) -> dict[str, Any]:
    from rtaudio.bench.yardsticks import bench_yardsticks, model_cost, torch_missing
    from rtaudio.runtime.engines import EngineError, OnnxRuntimeEngine

    if skip:
        return {"skipped": "--skip-yardsticks"}
    why = torch_missing()
    if why:
        log.warning("bench: yardsticks skipped: %s", why)
        return {"skipped": why}
    cost, note = model_cost(model)
    engine = OnnxRuntimeEngine(model, ["CPUExecutionProvider"])  # RATIO_BACKEND, whatever --backends says: the yardsticks run there
    try:
        engine.open()
    except EngineError as exc:
        note += f"; no ratios: the model does not open on {RATIO_BACKEND}: {exc}"
        timed = bench_yardsticks(model.info, max_batch, seconds)
    else:
        try:
            timed = bench_yardsticks(model.info, max_batch, seconds, model_engine=engine)
        finally:
            engine.close()
    table = ratios(timed)
    models = [asdict(y) for y in timed]
    for m in models:
        del m["paired"]  # in the ratios table
    return {"models": models, "model_cost": asdict(cost) if cost else None, "model_cost_note": note, "ratios": table}
