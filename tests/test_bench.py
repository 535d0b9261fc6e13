"""``rtaudio bench`` with the tiny model and very short measurements (figures are not judged, only shape and sense)."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest

from rtaudio.bench import capacity
from rtaudio.bench.capacity import Trial, find_capacity
from rtaudio.bench.engine import batch_sizes, bench_engines, candidates
from rtaudio.bench.suite import ratios
from rtaudio.cli import main
from rtaudio.contract import ModelDir
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
    (yamnet,) = bench_yardsticks(tiny.info, max_batch=2, seconds=0.02, names=["yamnet-arch"])  # one export keeps the test short
    assert yamnet.cost.params == params["yamnet-arch"]
    assert 50e6 < yamnet.cost.macs < 200e6  # ~69M MACs per 0.96 s patch, plus the STFT
    assert [b for b, _, _ in yamnet.points] == [1, 2] and all(ms > 0 for _, ms, _ in yamnet.points)


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


def test_ratios_divide_model_by_yardstick_per_window() -> None:
    points = [{"backend": "onnxruntime-cpu", "batch": 1, "ms_per_batch": 2.0}, {"backend": "onnxruntime-cpu", "batch": 4, "ms_per_batch": 4.0},
              {"backend": "torch-cpu", "batch": 1, "ms_per_batch": 99.0}]
    sticks = [{"name": "y", "points": [(1, 1.0, 1000.0), (4, 8.0, 500.0)]}]
    rows = ratios(points, sticks)
    assert [(r["batch"], r["ratio"]) for r in rows] == [(1, 2.0), (4, 0.5)]


def test_cli_json_is_valid(tiny: ModelDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = main(["bench", "--model", str(tiny.path), "--backends", "onnxruntime-cpu", "--max-batch", "2", "--seconds", "0.02",
                 "--skip-capacity", "--skip-yardsticks", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["schema"] == 1 and result["machine"]["cores"] >= 1 and result["versions"]["onnxruntime"]
    assert [p["batch"] for p in result["engine"]["points"]] == [1, 2]
    assert result["capacity"] == {"skipped": "--skip-capacity"} and result["yardsticks"] == {"skipped": "--skip-yardsticks"}
    assert result["command"].startswith("rtaudio bench --model")
    assert "Engine alone" in capsys.readouterr().out


def test_cli_refuses_a_bad_model_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--model", str(tmp_path / "nothing"), "--skip-capacity", "--skip-yardsticks"]) == 2
    assert "does not exist" in capsys.readouterr().err
