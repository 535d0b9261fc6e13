"""TensorRT plans and backend: naming, sidecar checks, calibration data, config, selection, CLI, builder and engine.

Tests marked "fake" run rtaudio's builder and engine against ``tests/fake_tensorrt.py``
(stand-ins for tensorrt and cuda-python that record calls and run the graph with ONNX
Runtime): unit tests of rtaudio's side of the boundary (calls, buffers, batch splits, files),
never of what the fakes make up about TensorRT. The ``needs_gpu`` tests at the end use the real
TensorRT on a real GPU and skip, saying why, where either is missing.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import soundfile as sf

from rtaudio.config.load import load_site_config
from rtaudio.config.loader import ConfigError
from rtaudio.config.site import validate_site
from rtaudio.contract import ModelDir, load_model_dir, write_model_dir
from rtaudio.runtime.engines import EngineError, OnnxRuntimeEngine, TensorRtEngine, create_engine
from rtaudio.runtime.engines.base import AutoConfig as AutoEngine
from rtaudio.runtime.engines.tensorrt import TensorRtConfig as TrtConfig
from rtaudio.tensorrt import cuda as nvidia
from rtaudio.tensorrt.calibration import CalibrationError, calibration_batches, calibration_windows
from rtaudio.tensorrt.plan import PlanError, PlanKey, read_checked_plan, sanitise, sidecar_path, write_plan
from tests import fake_tensorrt
from tests.helpers import REPO
from tests.tinymodel import tone, white_noise

SR = 16000
ROOT = REPO


def real_tensorrt() -> str | None:
    """None when TensorRT, cuda-python and a GPU are all here; otherwise why not."""
    try:
        nvidia.tensorrt_and_gpu()
    except (nvidia.NvidiaUnavailable, nvidia.CudaError) as exc:
        return str(exc)
    return None


def key_for(model: ModelDir, gpu: str = "NVIDIA Jetson AGX Orin (64GB)", trt: str = "10.3.0") -> PlanKey:
    return PlanKey.for_model(model.info, gpu, "8.7", trt, "fp16", 32)


def signals() -> np.ndarray:
    return np.stack([tone(440), tone(1000), white_noise(), np.zeros(SR, np.float32)])


# ---------------------------------------------------------------- plan names and sidecars


def test_plan_name_encodes_model_gpu_trt_precision_and_batch(tiny_model: ModelDir) -> None:
    key = key_for(tiny_model)
    sha = tiny_model.info.onnx_sha256[:12]
    assert key.filename == f"tiny.{sha}.NVIDIA-Jetson-AGX-Orin-64GB-sm87.trt10.3.0.fp16.b32.plan"
    assert key.timing_cache_name == "NVIDIA-Jetson-AGX-Orin-64GB-sm87.trt10.3.0.timing-cache"
    assert key.calibration_cache_name == f"tiny.{sha}.trt10.3.0.int8-cache"
    assert sanitise("a/b c..d") == "a-b-c..d" and sanitise("///") == "unnamed"
    with pytest.raises(ValueError, match="precision 'bf16' is not allowed; expected one of fp32, fp16, int8"):
        PlanKey.for_model(tiny_model.info, "gpu", "8.7", "10.3.0", "bf16", 32)  # type: ignore[arg-type]


def test_sidecar_sha_refuses_a_tampered_plan(tiny_model: ModelDir, tmp_path: Path) -> None:
    key = key_for(tiny_model)
    plan = tmp_path / key.filename
    digest = write_plan(plan, b"plan-bytes" * 100, key, {"workspace_mb": 1024})
    assert read_checked_plan(plan, key) == b"plan-bytes" * 100
    assert json.loads(sidecar_path(plan).read_text())["plan_sha256"] == digest
    data = bytearray(plan.read_bytes())
    data[5] ^= 0xFF
    plan.write_bytes(bytes(data))
    with pytest.raises(PlanError) as err:
        read_checked_plan(plan, key)
    assert digest in str(err.value) and "does not match" in str(err.value) and "rtaudio build-engine" in str(err.value)
    sidecar_path(plan).unlink()
    with pytest.raises(PlanError, match="sidecar .* is missing or unreadable"):
        read_checked_plan(plan, key)


def test_plan_for_another_gpu_or_tensorrt_is_refused(tiny_model: ModelDir, tmp_path: Path) -> None:
    orin, thor = key_for(tiny_model), key_for(tiny_model, gpu="NVIDIA Thor", trt="10.7.0")
    plan = tmp_path / orin.filename
    write_plan(plan, b"x", orin, {})
    with pytest.raises(PlanError, match=f"named for another model, device or build; this device and model need {thor.filename}"):
        read_checked_plan(plan, thor)
    renamed = tmp_path / thor.filename  # copied under this device's name: the sidecar still tells
    renamed.write_bytes(plan.read_bytes())
    sidecar_path(renamed).write_text(sidecar_path(plan).read_text())
    with pytest.raises(PlanError) as err:
        read_checked_plan(renamed, thor)
    assert "gpu: plan 'NVIDIA Jetson AGX Orin (64GB)', here 'NVIDIA Thor'" in str(err.value)
    assert "tensorrt: plan '10.3.0', here '10.7.0'" in str(err.value)


# ---------------------------------------------------------------- calibration data


def test_calibration_windows_and_batches_from_a_folder(tiny_model: ModelDir, tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "a.wav", tone(440, 1.3), SR)  # 1 window
    import soxr

    wide = soxr.resample(white_noise(2.5), SR, 44100)
    sf.write(folder / "sub" / "b.flac", np.stack([wide, wide], axis=1), 44100)  # stereo 44.1 kHz: 2 windows
    sf.write(folder / "c.ogg", tone(1000, 0.2), SR)  # shorter than a window: padded to 1
    (folder / "notes.txt").write_text("not audio")
    windows = calibration_windows(folder, tiny_model.info)
    assert windows.shape == (4, SR) and windows.dtype == np.float32
    np.testing.assert_allclose(windows[0], tone(440, 1.3)[:SR], atol=1e-4)  # 16-bit WAV
    assert not windows[1, SR // 5 + 10 :].any()  # files in sorted order: a.wav, c.ogg (zero-padded), sub/b.flac
    batches = calibration_batches(windows, 2)
    assert [b.shape for b in batches] == [(2, SR), (2, SR)] and all(b.flags.c_contiguous for b in batches)
    assert calibration_windows(folder, tiny_model.info, max_windows=3).shape == (3, SR)
    with pytest.raises(CalibrationError, match="4 calibration windows cannot fill one batch of 8"):
        calibration_batches(windows, 8)


def test_calibration_folder_errors(tiny_model: ModelDir, tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="does not exist or is not a directory"):
        calibration_windows(tmp_path / "nope", tiny_model.info)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match=r"holds no audio files; expected \.wav, \.flac, \.ogg"):
        calibration_windows(tmp_path / "empty", tiny_model.info)


# ---------------------------------------------------------------- config


def test_config_validation_errors(tiny_model: ModelDir) -> None:
    base = {"site": "s", "model": str(tiny_model.path), "sources": [{"id": "a", "type": "file", "path": "x.wav"}]}
    with pytest.raises(ConfigError) as err:
        validate_site({**base, "engine": {"type": "tensorrt", "precision": "int8"}})
    assert "engine: precision int8 needs calibration: a folder of audio files" in str(err.value)
    with pytest.raises(ConfigError) as err:
        validate_site({**base, "engine": {"type": "tensorrt", "precision": "bf16", "max_batch": 0, "plans": "x"}})
    text = str(err.value)
    assert "engine.precision: 'bf16' is not allowed; expected one of 'fp32', 'fp16', 'int8'" in text
    assert "engine.max_batch: 0: Input should be greater than or equal to 1" in text
    assert "engine.plans: unknown key; allowed keys: type, precision, max_batch, workspace_mb, plan_dir, calibration, timing_cache" in text
    assert validate_site({**base, "engine": "tensorrt"}).engine == TrtConfig(type="tensorrt")


def test_config_resolves_tensorrt_paths_and_checks_calibration(tiny_model: ModelDir, tmp_path: Path) -> None:
    sf.write(tmp_path / "x.wav", tone(440), SR)
    site = tmp_path / "site.yaml"
    site.write_text(
        f"site: s\nmodel: {tiny_model.path}\nsources: [{{id: a, type: file, path: x.wav}}]\n"
        "engine: {type: tensorrt, precision: int8, calibration: calib, plan_dir: plans}\n"
    )
    with pytest.raises(ConfigError, match=f"engine.calibration: {tmp_path / 'calib'} is not a directory"):
        load_site_config(site)
    (tmp_path / "calib").mkdir()
    engine = load_site_config(site).engine
    assert isinstance(engine, TrtConfig) and engine.plan_dir == tmp_path / "plans" and engine.calibration == tmp_path / "calib"


# ---------------------------------------------------------------- selection and CLI on this machine


def test_auto_without_tensorrt_chooses_onnxruntime_and_says_why(tiny_model: ModelDir, caplog: pytest.LogCaptureFixture) -> None:
    why = real_tensorrt()
    if why is None:
        pytest.skip("TensorRT and a GPU are present here: auto rightly chooses tensorrt")
    caplog.set_level(logging.INFO)
    assert isinstance(create_engine(AutoEngine(type="auto"), tiny_model), OnnxRuntimeEngine)
    assert "engine auto: chose onnxruntime" in caplog.text and f"skipped tensorrt: {why}" in caplog.text
    with pytest.raises(EngineError) as err:
        create_engine(TrtConfig(type="tensorrt"), tiny_model)
    assert str(err.value) == f"engine tensorrt is not usable: {why}"


def test_build_engine_cli_exits_2_with_the_reason(tiny_model: ModelDir) -> None:
    why = real_tensorrt()
    if why is None:
        pytest.skip("TensorRT and a GPU are present here: build-engine would build")
    result = subprocess.run(
        [sys.executable, "-m", "rtaudio", "build-engine", str(tiny_model.path), "--precision", "fp32"], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"error: build-engine needs TensorRT and an NVIDIA GPU: {why}" in result.stderr


def test_available_names_what_is_missing(tiny_model: ModelDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake: TensorRT present, no GPU, then cuda-python missing."""
    fake_tensorrt.install(monkeypatch, gpus=0)
    ok, why = TensorRtEngine.available(tiny_model)
    assert not ok and "no usable CUDA GPU (cudaGetDeviceCount failed: cudaErrorNoDevice)" in why
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    ok, why = TensorRtEngine.available(tiny_model)
    assert not ok and why.startswith("cuda-python is not importable")


# ---------------------------------------------------------------- builder and engine against the fakes


@pytest.fixture
def named_model(tiny_model: ModelDir, tmp_path: Path) -> ModelDir:
    """The tiny model with named nodes and an exporter-style FP16-unsafe list (its ReduceSumSquare and Log nodes)."""
    graph = onnx.load(str(tiny_model.onnx_path))
    for i, node in enumerate(graph.graph.node):
        node.name = f"/{node.op_type}_{i}"
    unsafe = [n.name for n in graph.graph.node if n.op_type in ("ReduceSumSquare", "Log")] + ["/folded_away"]
    info = tiny_model.info.model_dump(exclude={"onnx_sha256", "extra"})
    return write_model_dir(tmp_path / "named", graph.SerializeToString(), extra={"fp16": {"fp32_nodes": unsafe}}, **info)


@pytest.fixture(autouse=True)
def _fresh_trt_logger() -> None:
    yield
    nvidia.trt_logger.cache_clear()  # never leave a fake module's logger cached


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_builder_call_sequence(named_model: ModelDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, version: str) -> None:
    """Fake: explicit batch flag per version, workspace, profile, FP16 with unsafe nodes pinned, timing cache, sidecar."""
    from rtaudio.tensorrt.build import build_engine

    trt, _ = fake_tensorrt.install(monkeypatch, version)
    caplog.set_level(logging.INFO)
    plan = build_engine(named_model.path, "fp16", max_batch=16, workspace_mb=256, out_dir=tmp_path / "plans")
    builder = fake_tensorrt.Builder.last
    assert builder is not None and builder.network is not None and builder.config is not None
    config, network = builder.config, builder.network
    assert network.flags == (1 if version.startswith("8.") else 0)
    assert config.pools == {"WORKSPACE": 256 << 20}
    assert config.profiles[0].shapes == {"waveform": ((1, SR), (16, SR), (16, SR))}
    assert config.flags == {"FP16", "OBEY_PRECISION_CONSTRAINTS"}
    unsafe = named_model.info.extra["fp16"]["fp32_nodes"][:-1]  # the ReduceSumSquare and Log nodes; not /folded_away
    pinned = [layer for layer in network.layers if layer.precision == trt.float32]
    assert sorted(layer.metadata.removeprefix("[ONNX Layer: ").removesuffix("]") or layer.name for layer in pinned) == sorted(unsafe)
    assert all(layer.output_types == {0: trt.float32} for layer in pinned)
    assert f"pinned {len(pinned)} layers from {len(unsafe)} FP16-unsafe ONNX nodes to FP32" in caplog.text and "/folded_away" in caplog.text
    key = PlanKey.for_model(named_model.info, "Fake GPU 8GB", "8.7", version, "fp16", 16)
    assert plan == tmp_path / "plans" / key.filename
    sidecar = json.loads(sidecar_path(plan).read_text())
    assert sidecar["build"]["workspace_mb"] == 256 and sidecar["build"]["fp32_pinned_layers"] == len(pinned)
    read_checked_plan(plan, key)
    timing = tmp_path / "plans" / key.timing_cache_name
    assert timing.read_bytes() == b"+"
    build_engine(named_model.path, "fp16", max_batch=16, workspace_mb=256, out_dir=tmp_path / "plans")
    assert builder.config is not fake_tensorrt.Builder.last.config  # a second build...
    assert fake_tensorrt.Builder.last.config.timing_cache.data == b"+"  # ...starts from the saved timing cache
    assert timing.read_bytes() == b"++"


def test_fp32_pinning_finds_layers_by_onnx_metadata_or_name(caplog: pytest.LogCaptureFixture) -> None:
    """rtaudio's side of pinning, on layers laid out by hand: a layer belongs to a node by 10.x's
    ``[ONNX Layer: NODE]`` metadata or by 8.6's name (``NODE``, ``NODE_1``...); a node may give several
    layers; only floating layers are pinned; a node with no layer is named in a warning."""
    from rtaudio.tensorrt.build import pin_fp32_nodes

    trt, f32, i64 = fake_tensorrt.fake_tensorrt("10.3.0"), fake_tensorrt.float32, fake_tensorrt.int64
    network = fake_tensorrt.Network(0)
    network.layers = [
        fake_tensorrt.Layer("layer0", "[ONNX Layer: /Log_3]", f32),
        fake_tensorrt.Layer("/ReduceSumSquare_2", "", f32),
        fake_tensorrt.Layer("/ReduceSumSquare_2_1", "", f32),  # the same node's second layer
        fake_tensorrt.Layer("/ReduceSumSquare_20", "", f32),  # another node
        fake_tensorrt.Layer("/Shape_5", "", i64),  # listed, but not floating
        fake_tensorrt.Layer("layer5", "[ONNX Layer: /MatMul_1]", f32),
    ]
    caplog.set_level(logging.INFO)
    assert pin_fp32_nodes(trt, network, ["/Log_3", "/ReduceSumSquare_2", "/Shape_5", "/folded_away"]) == 3
    pinned = [layer for layer in network.layers if layer.precision == trt.float32]
    assert [layer.name for layer in pinned] == ["layer0", "/ReduceSumSquare_2", "/ReduceSumSquare_2_1"]
    assert all(layer.output_types == {0: trt.float32} for layer in pinned)
    assert "pinned 3 layers from 3 FP16-unsafe ONNX nodes to FP32" in caplog.text
    assert "FP16-unsafe nodes with no TensorRT layer (folded away or renamed): /folded_away" in caplog.text


def test_builder_int8_uses_calibration_cache_and_fixed_profile(named_model: ModelDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake: INT8 with FP16 fallback, a fixed-shape calibration profile, scales read from the existing cache."""
    from rtaudio.tensorrt.build import build_engine

    fake_tensorrt.install(monkeypatch)
    with pytest.raises(ValueError, match="int8 needs calibration audio"):
        build_engine(named_model.path, "int8", out_dir=tmp_path)
    key = PlanKey.for_model(named_model.info, "Fake GPU 8GB", "8.7", "10.3.0", "int8", 32)
    (tmp_path / key.calibration_cache_name).write_bytes(b"TRT-calibration")
    build_engine(named_model.path, "int8", out_dir=tmp_path)
    config = fake_tensorrt.Builder.last.config
    assert {"INT8", "FP16"} <= config.flags
    assert config.calibration_profile.shapes == {"waveform": ((8, SR), (8, SR), (8, SR))}
    assert config.int8_calibrator.read_calibration_cache() == b"TRT-calibration"
    assert config.int8_calibrator.get_batch(["waveform"]) is None  # no audio given: TensorRT uses the cache


def test_engine_builds_on_first_start_then_reuses_its_plan_and_buffers(
    tiny_model: ModelDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Fake: first start builds (with a progress line), buffers are allocated once, big batches split and come back in order."""
    _, cudart = fake_tensorrt.install(monkeypatch)
    caplog.set_level(logging.INFO)
    plans = tmp_path / "plans"
    engine = create_engine(TrtConfig(type="tensorrt", precision="fp32", max_batch=3, plan_dir=plans), tiny_model)
    with engine:
        assert "building TensorRT fp32 plan for" in caplog.text and "(first start, takes minutes)" in caplog.text
        allocated = cudart.allocations
        assert allocated == 6  # device + pinned buffer for the input and both outputs
        batch = np.concatenate([signals(), signals()[:3]])  # 7 windows: runs of 3, 3 and 1
        got = engine.infer(batch)
        again = engine.infer(batch[:2])
        assert cudart.allocations == allocated
        context = engine.runner._context
        assert context.runs == 4 and context.shape_calls == [(3, SR), (1, SR), (2, SR)]
    assert not cudart.blocks  # close() freed everything
    assert got["scores"].shape == (7, 3) and got["embedding"].shape == (7, 8)
    assert list(got["scores"].argmax(axis=1)[:3]) == [0, 1, 2] and got["scores"][3].max() < 0.1  # 440 Hz, 1 kHz, noise, silence
    for name in ("scores", "embedding"):  # windows 4-6 repeat 0-2 across the run boundaries; the smaller batch agrees
        np.testing.assert_allclose(got[name][4:], got[name][:3], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(again[name], got[name][:2], rtol=1e-5, atol=1e-6)
    caplog.clear()
    with create_engine(TrtConfig(type="tensorrt", precision="fp32", max_batch=3, plan_dir=plans), tiny_model) as engine:
        assert "building" not in caplog.text and engine.description.endswith(".fp32.b3.plan")
    plan = engine.plan_path
    plan.write_bytes(plan.read_bytes() + b" ")
    with pytest.raises(EngineError, match="does not match .* recorded in"):
        create_engine(TrtConfig(type="tensorrt", precision="fp32", max_batch=3, plan_dir=plans), tiny_model).open()


# ---------------------------------------------------------------- real TensorRT on a real GPU

# Tolerances on scores against ONNX Runtime (CPU, fp32), stated per precision:
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.15}


@pytest.mark.needs_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_real_plan_matches_onnxruntime(tiny_model: ModelDir, tmp_path: Path, precision: str) -> None:
    """Real TensorRT: build the tiny model's plan, run it, compare with ONNX Runtime within the stated tolerance."""
    calibration = None
    if precision == "int8":
        calibration = tmp_path / "calib"
        calibration.mkdir()
        for i, hz in enumerate((440, 1000, 300, 2000)):
            sf.write(calibration / f"t{i}.wav", tone(hz, 4.0), SR)
        sf.write(calibration / "noise.wav", white_noise(8.0), SR)
    plans = tmp_path / "plans"
    config = TrtConfig(type="tensorrt", precision=precision, max_batch=8, plan_dir=plans, calibration=calibration)
    batch = np.concatenate([signals()] * 3)  # 12 windows: split into 8 + 4
    with create_engine(config, tiny_model) as engine:
        got = engine.infer(batch)
    with OnnxRuntimeEngine(tiny_model, ["CPUExecutionProvider"]) as ort_engine:
        want = ort_engine.infer(batch)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=TOLERANCE[precision])
    assert list(got["scores"].argmax(axis=1)[:3]) == [0, 1, 2]
    assert load_model_dir(tiny_model.path).info.onnx_sha256[:12] in engine.plan_path.name


@pytest.mark.needs_gpu
def test_real_onnx_parser_and_the_static_op_check_agree_the_default_model_is_supported() -> None:
    """Real TensorRT's ONNX parser on the shipped engines/default/model.onnx: the operators it
    refuses (none expected) are those the static check (rtaudio.tensorrt.ops, no GPU) refuses for
    this TensorRT version's table."""
    from rtaudio.tensorrt.ops import check_model

    onnx_path = ROOT / "engines" / "default" / "model.onnx"
    trt = nvidia.load_tensorrt()
    builder = trt.Builder(nvidia.trt_logger())
    major = int(trt.__version__.split(".")[0])
    network = builder.create_network(0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, nvidia.trt_logger())
    parsed = parser.parse_from_file(str(onnx_path))
    nodes = onnx.load(str(onnx_path), load_external_data=False).graph.node
    errors = [parser.get_error(i) for i in range(parser.num_errors)]

    def op_of(error: Any) -> str:  # 10.x names the operator; 8.6 gives the node's index
        if hasattr(error, "node_operator"):
            return error.node_operator() or "?"
        index = error.node()
        return nodes[index].op_type if 0 <= index < len(nodes) else "?"

    refused_by_parser = sorted({op_of(e) for e in errors})
    static = check_model(onnx_path, versions=["10.3" if major >= 10 else "8.6"])
    refused_by_check = sorted({issue.op for issue in static.errors})
    assert refused_by_parser == refused_by_check == [], f"parser: {[str(e) for e in errors]}; static check:\n{static.format()}"
    assert parsed and static.ok and network.num_layers > 0
