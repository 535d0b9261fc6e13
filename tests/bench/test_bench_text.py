"""The text-head section of ``rtaudio bench`` on the small trained model with heads (figures are not judged, only shape and sense)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rtaudio.bench.text_heads import (
    CAPTION_BATCHES,
    QUERIES,
    SCORING_BATCHES,
    bench_text,
    median_ms,
)
from rtaudio.contract import load_model_dir
from tests.helpers import quick_bench
from tests.tinymodel import make_tiny_model


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_text_bench_times_captions_and_queries(text_model_dir: Path) -> None:
    model = load_model_dir(text_model_dir)
    result = bench_text(model, [], "onnxruntime-cpu", repeats=2, seconds=0.05)
    assert result is not None and result["repeats"] == 2 and Path(result["audio"]).name == "demo.flac"

    rows = result["captions"]
    assert [r["batch"] for r in rows] == list(CAPTION_BATCHES)
    clips = max(CAPTION_BATCHES)
    max_tokens = model.info.extra["text"]["max_tokens"]
    for r in rows:
        assert all(_positive(r[k]) for k in ("encode_ms", "decode_ms", "ms_per_caption"))
        assert len(r["steps"]) == clips // r["batch"] and len(r["tokens"]) == len(r["captions"]) == clips
        assert all(1 <= s <= max_tokens - 1 for s in r["steps"]) and r["memory_frames"] > 0
        assert all(isinstance(c, str) for c in r["captions"])
        assert r["ms_per_caption"] == pytest.approx((r["encode_ms"] + r["decode_ms"]) * len(r["steps"]) / clips, rel=0.01, abs=0.02)
    # every batch size captions the same clips, greedily, so the captions agree
    assert rows[0]["tokens"] == rows[-1]["tokens"] and rows[0]["captions"] == rows[-1]["captions"]
    # a batch decodes until its longest caption ends (its <eos> is one more step, unless the cap cut it)
    assert rows[-1]["steps"][0] >= max(rows[-1]["tokens"])

    assert result["queries"] == QUERIES and _positive(result["embed_query_ms"])
    assert [r["batch"] for r in result["scoring"]] == list(SCORING_BATCHES)
    for r in result["scoring"]:
        assert _positive(r["scoring_ms"]) and _positive(r["tagging_ms"])
        assert r["ratio"] == pytest.approx(r["scoring_ms"] / r["tagging_ms"], rel=0.05, abs=1e-6)


def test_text_bench_reuses_the_engine_table(text_model_dir: Path) -> None:
    """Batches the engine table already timed on the ratio backend are not timed again; others are."""
    points = [{"backend": "onnxruntime-cpu", "batch": b, "ms_per_batch": 1000.0 * b} for b in (1, 8)]
    points.append({"backend": "torch-cpu", "batch": 32, "ms_per_batch": 5.0})
    result = bench_text(load_model_dir(text_model_dir), points, "onnxruntime-cpu", repeats=1, seconds=0.05)
    assert result is not None
    tagging = {r["batch"]: r["tagging_ms"] for r in result["scoring"]}
    assert tagging[1] == 1000.0 and tagging[8] == 8000.0
    assert tagging[32] not in (5.0, 32000.0) and _positive(tagging[32])


def test_no_text_section_without_heads(tmp_path: Path) -> None:
    tiny = make_tiny_model(tmp_path / "tiny", window_s=0.5, hop_s=0.25)
    assert bench_text(tiny, [], "onnxruntime-cpu", repeats=1) is None
    out = tmp_path / "bench.json"
    assert quick_bench(tiny.path, out, 1) == 0
    assert "text" not in json.loads(out.read_text())


def test_cli_prints_and_writes_the_text_section(text_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert quick_bench(text_model_dir, out, 2) == 0
    text = json.loads(out.read_text())["text"]
    assert [r["batch"] for r in text["captions"]] == list(CAPTION_BATCHES) and len(text["scoring"]) == len(SCORING_BATCHES)
    printed = capsys.readouterr().out
    assert "Captions (ONNX Runtime CPU" in printed and "Query scoring, 8 queries" in printed and "embedding one query" in printed


def test_median_needs_a_repeat() -> None:
    calls: list[int] = []
    assert median_ms(lambda: calls.append(1), 2) >= 0 and len(calls) == 5  # warm-up calls, then the timed ones
    with pytest.raises(ValueError, match="at least 1"):
        median_ms(lambda: None, 0)
