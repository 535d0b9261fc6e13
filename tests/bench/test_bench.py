"""``rtaudio bench`` with the tiny model and very short measurements (figures are not judged, only shape and sense)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from rtaudio.bench import capacity
from rtaudio.bench import engine as bench_engine
from rtaudio.bench.capacity import Trial, find_capacity
from rtaudio.bench.engine import MIN_PAIRS, WARMUP_CALLS, PairedPoint, batch_sizes, bench_engines, candidates, time_batches, time_pairs
from rtaudio.bench.suite import SCHEMA, ratios
from rtaudio.bench.yardsticks import Cost, Yardstick
from rtaudio.cli import main
from rtaudio.contract import ModelDir
from rtaudio.runtime.engines import OnnxRuntimeEngine
from tests.helpers import quick_bench
from tests.tinymodel import make_tiny_model


@pytest.fixture
def tiny(tmp_path: Path) -> ModelDir:
    return make_tiny_model(tmp_path / "tiny", window_s=0.5, hop_s=0.25)


def test_batch_sizes_double_up_to_the_max() -> None:
    assert batch_sizes(1) == [1]
    assert batch_sizes(8) == [1, 2, 4, 8]
    assert batch_sizes(6) == [1, 2, 4, 6]
    with pytest.raises(ValueError, match="at least 1"):
        batch_sizes(0)


def test_engine_table_has_onnxruntime_rows_at_every_batch(tiny: ModelDir) -> None:
    bench = bench_engines(tiny, ["onnxruntime"], max_batch=4, seconds=0.05)
    cpu = [p for p in bench.points if p.backend == "onnxruntime-cpu"]
    assert [p.batch for p in cpu] == [1, 2, 4]
    assert all(p.engine == "onnxruntime:CPUExecutionProvider" and p.calls >= 3 for p in cpu)
    assert all(p.ms_per_batch > 0 and p.windows_per_s == pytest.approx(1000 * p.batch / p.ms_per_batch, rel=1e-2) for p in cpu)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "no CUDAExecutionProvider" in bench.skipped["onnxruntime-cuda"]


def test_backends_come_from_the_registry_with_reasons(tiny: ModelDir) -> None:
    found, skipped = candidates(tiny)
    assert "onnxruntime-cpu" in [c.id for c in found]
    assert "no model.pt" in skipped["torch"]  # the tiny model has no TorchScript beside it
    with pytest.raises(ValueError, match="unknown backend 'openvino'.*onnxruntime"):
        candidates(tiny, ["openvino"])


def test_capacity_search_runs_the_real_site(tiny: ModelDir) -> None:
    result = find_capacity(tiny.path, seconds=0.6, backlog=8, max_streams=3)  # the site default backlog: robust on a busy CI machine
    assert result.streams >= 1
    assert [t.streams for t in result.trials][:2] == [1, 2]
    assert result.p50_ms is not None and 0 < result.p50_ms <= result.p99_ms
    assert result.engine.startswith("onnxruntime") and result.hop_s == 0.25
    first = result.trials[0]
    assert first.windows >= 2 and first.dropped == 0 and first.real_time_factor is not None


def test_capacity_search_doubles_then_bisects(tiny: ModelDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit test of the search order: ``run_trial`` is faked to sustain up to 5 streams (the real one is tested above)."""
    asked: list[int] = []

    def fake_trial(model, audio, n, seconds, engine, max_batch, backlog) -> Trial:
        asked.append(n)
        ok = n <= 5
        return Trial(n, seconds, "fake", 10 * n, 0 if ok else 3, 0, 1.0, 2.0, 0.1, ok)

    monkeypatch.setattr(capacity, "run_trial", fake_trial)
    result = find_capacity(tiny.path, max_streams=64)
    assert asked == [1, 2, 4, 8, 6, 5]
    assert result.streams == 5 and not result.limit_reached and result.p99_ms == 2.0
    asked.clear()
    assert find_capacity(tiny.path, max_streams=4).limit_reached and asked == [1, 2, 4]
    with pytest.raises(ValueError, match="1..256"):
        find_capacity(tiny.path, max_streams=300)


def test_yardsticks_have_their_architectures_sizes_and_export(tiny: ModelDir) -> None:
    pytest.importorskip("torch", reason="the yardsticks are built in torch")
    from rtaudio.bench.yardsticks import bench_yardsticks, build_yardsticks

    params = {name: sum(p.numel() for p in module.parameters()) for name, _, module, _ in build_yardsticks(tiny.info)}
    assert 3.6e6 < params["yamnet-arch"] < 3.9e6  # YAMNet: 3.75M
    assert 4.7e6 < params["efficientat-mn10-like"] < 5.1e6  # EfficientAT mn10: 4.88M
    with OnnxRuntimeEngine(tiny, ["CPUExecutionProvider"]) as own:  # one export keeps the test short
        (yamnet,) = bench_yardsticks(tiny.info, max_batch=2, seconds=0.02, names=["yamnet-arch"], model_engine=own)
    assert yamnet.cost.params == params["yamnet-arch"]
    assert 50e6 < yamnet.cost.macs < 200e6  # ~69M MACs per 0.96 s patch, plus the STFT
    assert [b for b, _, _ in yamnet.points] == [1, 2] and all(ms > 0 for _, ms, _ in yamnet.points)
    assert [p.batch for p in yamnet.paired] == [1, 2]
    assert all(p.pairs >= MIN_PAIRS and p.a_ms > 0 and p.b_ms > 0 and 0 < p.ratio_p25 <= p.ratio <= p.ratio_p75 for p in yamnet.paired)


def test_model_cost_comes_from_its_fused_checkpoint(tiny: ModelDir) -> None:
    pytest.importorskip("torch", reason="the cost is counted in torch")
    from rtaudio.bench.yardsticks import model_cost
    from rtaudio.model.config import ModelConfig
    from rtaudio.model.fused import FusedTagger, save_checkpoint

    cost, why = model_cost(tiny)
    assert cost is None and "no model.ckpt" in why
    tagger = FusedTagger(ModelConfig(labels=["a", "b"], streams=["e2e", "pitch"], layers=1, n_mels=32, window_s=0.5, hop_s=0.25))
    save_checkpoint(tagger, tiny.path / "model.ckpt")
    cost, why = model_cost(tiny)
    assert cost is not None and "model.ckpt" in why
    assert 0 < cost.params <= sum(p.numel() for p in tagger.parameters()) and cost.macs > 0


class FakeClock:
    """Stands in for ``time`` in ``rtaudio.bench.engine``: fake engines advance it by what they report."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class DriftingEngine:
    """``base_ms`` per call times a machine load that rises with the (fake) time, alike for every engine on the clock."""

    def __init__(self, clock: FakeClock, base_ms: float) -> None:
        self.clock, self.base_ms, self.last_ms = clock, base_ms, 0.0

    def infer(self, x: np.ndarray) -> None:
        self.last_ms = self.base_ms * (1 + self.clock.now)  # the load doubles over the first second
        self.clock.now += self.last_ms / 1000


class ScriptedEngine:
    """Reports the given times, one per call."""

    def __init__(self, times: list[float]) -> None:
        self.times, self.last_ms = iter(times), 0.0

    def infer(self, x: np.ndarray) -> None:
        self.last_ms = next(self.times)


def test_pairs_report_median_and_quartiles_of_the_per_pair_ratios() -> None:
    warm = [1.0] * WARMUP_CALLS
    a = ScriptedEngine(warm + [1.0, 2.0, 3.0, 4.0, 5.0])
    b = ScriptedEngine(warm + [1.0] * 5)
    assert MIN_PAIRS == 5  # seconds=0: exactly the minimum, no more calls than scripted
    (point,) = time_pairs(a, b, window=8, batches=[4], seconds=0.0)  # type: ignore[arg-type]
    assert point == PairedPoint(4, 3.0, 1.0, 3.0, 2.0, 4.0, 5)


def test_interleaved_ratio_cancels_a_load_drift_that_separate_medians_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(bench_engine, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    model, yardstick = DriftingEngine(clock, 2.0), DriftingEngine(clock, 1.0)  # the true ratio is 2
    paired = time_pairs(model, yardstick, window=8, batches=[1, 2], seconds=1.0)  # type: ignore[arg-type]
    for p in paired:
        assert p.ratio == pytest.approx(2.0, rel=0.01) and p.ratio_p25 <= p.ratio <= p.ratio_p75
        assert p.ratio_p75 - p.ratio_p25 < 0.01 and p.pairs > 100
    ((_, model_ms, _),) = time_batches(model, 8, [1], seconds=1.0)  # type: ignore[arg-type]
    ((_, yardstick_ms, _),) = time_batches(yardstick, 8, [1], seconds=1.0)  # type: ignore[arg-type]
    assert model_ms / yardstick_ms < 1.7  # the yardstick, timed later under more load, looks slower than it is


def test_ratios_rows_come_from_the_interleaved_pairs() -> None:
    sticks = [
        Yardstick(
            "y",
            "arch",
            Cost(1, 1),
            [(1, 1.0, 1000.0), (4, 8.0, 500.0)],
            [PairedPoint(1, 2.0, 1.0, 1.9, 1.8, 2.1, 7), PairedPoint(4, 4.0, 8.0, 0.5, 0.45, 0.55, 6)],
        )
    ]
    rows = ratios(sticks)
    assert [(r["batch"], r["ratio"], r["ratio_p25"], r["ratio_p75"], r["pairs"]) for r in rows] == [(1, 1.9, 1.8, 2.1, 7), (4, 0.5, 0.45, 0.55, 6)]
    assert [(r["model_ms_per_window"], r["yardstick_ms_per_window"]) for r in rows] == [(2.0, 1.0), (1.0, 2.0)]
    assert all(r["yardstick"] == "y" for r in rows)


def test_cli_json_is_valid(tiny: ModelDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = quick_bench(tiny.path, out, 2)
    assert code == 0
    result = json.loads(out.read_text())
    assert result["schema"] == SCHEMA and result["machine"]["cores"] >= 1 and result["versions"]["onnxruntime"]
    assert [p["batch"] for p in result["engine"]["points"]] == [1, 2]
    assert result["capacity"] == {"skipped": "--skip-capacity"} and result["yardsticks"] == {"skipped": "--skip-yardsticks"}
    assert result["command"].startswith("rtaudio bench --model")
    assert "Engine alone" in capsys.readouterr().out


def test_cli_refuses_a_bad_model_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--model", str(tmp_path / "nothing"), "--skip-capacity", "--skip-yardsticks"]) == 2
    assert "does not exist" in capsys.readouterr().err
