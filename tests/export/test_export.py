"""``rtaudio export``: checkpoint -> simplified ONNX with metadata, parity with PyTorch, the TensorRT
ONNX-parser op check and the FP16-safety pass.

Exports run on a tiny six-stream FusedTagger built here (untrained but deterministic), except the
last test, which exports the shipped default model ``engines/default/model.ckpt`` at two window
lengths. Parity tolerance: 1e-4 on scores, 1e-3 on the embedding (ONNX Runtime vs eager PyTorch).
The TensorRT and FP16 checks on hand-made graphs need neither TensorRT nor a GPU: they are static
or run on ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from rtaudio.cli import main
from rtaudio.contract import load_model_dir
from rtaudio.export.fp16 import FP16_MAX, analyse_fp16
from rtaudio.export.onnx import EMBEDDING_ATOL, SCORE_ATOL, export_checkpoint, onnx_bytes, onnx_metadata, with_window
from rtaudio.model.config import DEFAULT_STREAMS, ModelConfig
from rtaudio.model.fused import FusedTagger, load_checkpoint, save_checkpoint
from rtaudio.tensorrt.ops import check_model
from rtaudio.train.parity_windows import synthetic_windows
from tests.helpers import REPO

LABELS = ["smoke_alarm", "doorbell", "speech"]
THRESHOLDS = [0.3, 0.6, 0.45]

DEFAULT_CHECKPOINT = REPO / "engines" / "default" / "model.ckpt"
METADATA_KEYS = {
    "model_id",
    "version",
    "labels",
    "thresholds",
    "median_windows",
    "sample_rate",
    "window_s",
    "hop_s",
    "embedding_dim",
    "streams",
    "checkpoint_sha256",
    "exporters",
    "fusion",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small FusedTagger with every stream, BN statistics and codebooks moved by one training pass."""
    torch.manual_seed(0)
    model = FusedTagger(ModelConfig(labels=LABELS, streams=list(DEFAULT_STREAMS), layers=1, n_mels=32, window_s=0.5, hop_s=0.25))
    with torch.no_grad():
        model.train().run(torch.from_numpy(synthetic_windows(16000, 8000, count=4)[0]))
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    save_checkpoint(model.eval(), path, thresholds=THRESHOLDS)
    return path


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tiny model exported through the CLI, and what the CLI printed."""
    out = tmp_path_factory.mktemp("engines") / "tiny"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(tiny_checkpoint), "-o", str(out), "--id", "tiny", "--version", "9.9.9"]) == 0
    return out, printed.getvalue()


def torch_outputs(checkpoint: Path, windows: np.ndarray, window_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    model, _ = load_checkpoint(checkpoint)
    model = (with_window(model, window_s) if window_s else model).eval()
    with torch.no_grad():
        scores, embedding = model(torch.from_numpy(windows))
    return scores.numpy(), embedding.numpy()


def assert_parity(onnx_path: Path, checkpoint: Path, windows: np.ndarray, window_s: float | None = None) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for batch in (1, 8):
        x = windows[:batch]
        got_scores, got_embedding = session.run(["scores", "embedding"], {"waveform": x})
        want_scores, want_embedding = torch_outputs(checkpoint, x, window_s)
        np.testing.assert_allclose(got_scores, want_scores, atol=SCORE_ATOL, rtol=0, err_msg=f"scores, batch {batch}")
        np.testing.assert_allclose(got_embedding, want_embedding, atol=EMBEDDING_ATOL, rtol=0, err_msg=f"embedding, batch {batch}")


def test_cli_export_writes_a_loadable_model_dir_with_metadata(exported: tuple[Path, str], tiny_checkpoint: Path) -> None:
    out, printed = exported
    model_dir = load_model_dir(out)
    info, extra = model_dir.info, model_dir.info.extra
    assert (info.model_id, info.version, info.labels, info.thresholds) == ("tiny", "9.9.9", LABELS, pytest.approx(THRESHOLDS))
    assert (info.sample_rate, info.window_s, info.hop_s, info.embedding_dim, info.streams) == (16000, 0.5, 0.25, 64 * 6, list(DEFAULT_STREAMS))
    meta = onnx_metadata(model_dir.onnx_path)
    assert set(meta) == METADATA_KEYS
    assert {k: meta[k] for k in ("model_id", "version", "labels", "sample_rate", "window_s", "hop_s", "streams")} == {
        "model_id": "tiny",
        "version": "9.9.9",
        "labels": LABELS,
        "sample_rate": 16000,
        "window_s": 0.5,
        "hop_s": 0.25,
        "streams": list(DEFAULT_STREAMS),
    }
    assert meta["thresholds"] == pytest.approx(THRESHOLDS)
    written_ckpt = hashlib.sha256((out / "model.ckpt").read_bytes()).hexdigest()
    assert meta["checkpoint_sha256"] == extra["checkpoint_sha256"] == written_ckpt
    assert extra["source_checkpoint"]["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert meta["exporters"] == extra["exporters"]
    assert meta["exporters"]["opset"] == 17 and meta["exporters"]["torch"] == torch.__version__
    assert meta["exporters"]["onnx"] == onnx.__version__ and meta["exporters"]["onnxslim"]
    assert extra["export"]["tensorrt_check"]["ok"] and extra["export"]["simplified"]
    assert extra["export"]["torchscript_parity"]["scores_max_abs_diff"] <= SCORE_ATOL
    assert set(extra["fp16"]) >= {"fp32_nodes", "max_abs", "checked_on", "findings"}
    node_names = {n.name for n in onnx.load(str(model_dir.onnx_path)).graph.node}
    assert set(extra["fp16"]["fp32_nodes"]) <= node_names  # the builder pins layers by these names
    _, saved = load_checkpoint(out / "model.ckpt")
    assert saved["thresholds"] == pytest.approx(THRESHOLDS)
    assert torch.jit.load(str(out / "model.pt")) is not None
    assert "parity vs PyTorch" in printed and "TensorRT 8.6, 10.3: supported" in printed and "FP16 safety" in printed


def test_simplified_graph_matches_pytorch_at_batch_1_and_8(exported: tuple[Path, str], tiny_checkpoint: Path) -> None:
    out, _ = exported
    simplified = onnx.load(str(out / "model.onnx"))
    model, _ = load_checkpoint(tiny_checkpoint)
    raw = onnx.load_from_string(onnx_bytes(model.eval().requires_grad_(True), 8000))
    assert len(simplified.graph.node) < len(raw.graph.node)  # onnxslim folded something
    assert all(node.name for node in simplified.graph.node)
    windows, _ = synthetic_windows(16000, 8000, count=10, seed=3)
    assert_parity(out / "model.onnx", tiny_checkpoint, windows)
    parity = load_model_dir(out).info.extra["export"]["parity"]
    assert parity["batches"] == [1, 8] and parity["scores_max_abs_diff"] <= SCORE_ATOL


def test_tensorrt_check_passes_on_the_export(exported: tuple[Path, str]) -> None:
    report = check_model(exported[0] / "model.onnx")
    assert report.ok, report.format()
    assert report.versions == ("8.6", "10.3") and report.opset == 17 and "LayerNormalization" in report.op_types


def hand_made(nodes: list, initializers: list | None = None, opset: int = 17, output_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "hand_made",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [helper.make_tensor_value_info("y", output_type, None)],
        initializers or [],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def test_tensorrt_check_names_an_unsupported_op_and_attribute() -> None:
    model = hand_made(
        [
            helper.make_node("Hardmax", ["x"], ["h"], name="pick_max", axis=1),  # importer added in 9.2
            helper.make_node("MaxPool", ["h"], ["y"], name="dilated_pool", kernel_shape=[2, 2], dilations=[2, 2]),
        ]
    )
    report = check_model(model)
    assert not report.ok
    problems = {(i.node, i.op): i for i in report.errors}
    assert problems[("pick_max", "Hardmax")].versions == ("8.6",)
    assert "dilations" in problems[("dilated_pool", "MaxPool")].problem
    assert problems[("dilated_pool", "MaxPool")].versions == ("8.6", "10.3")
    text = report.format()
    assert "NOT supported" in text and "'pick_max' (Hardmax)" in text and "'dilated_pool' (MaxPool)" in text


def test_tensorrt_check_refuses_double_tensors_custom_ops_and_old_opset_attributes() -> None:
    casts = hand_made(
        [
            helper.make_node("Cast", ["x"], ["d"], name="to_double", to=TensorProto.DOUBLE),
            helper.make_node("Cast", ["d"], ["y"], name="back", to=TensorProto.FLOAT),
        ]
    )
    lines = check_model(casts).format()
    assert "'to_double' (Cast): cast to DOUBLE unsupported" in lines and "tensor 'd': DOUBLE tensor" in lines
    argmax = hand_made([helper.make_node("ArgMax", ["x"], ["y"], name="last_max", axis=1, select_last_index=1)], opset=11, output_type=TensorProto.INT64)
    assert any(i.node == "last_max" and "select_last_index" in i.problem for i in check_model(argmax).errors)
    custom = hand_made([helper.make_node("Mystery", ["x"], ["y"], name="plugin_op", domain="com.acme")])
    custom.opset_import.append(helper.make_opsetid("com.acme", 1))
    assert any(i.node == "plugin_op" and "custom domain" in i.problem for i in check_model(custom).errors)
    ok = hand_made([helper.make_node("Relu", ["x"], ["y"], name="relu")])
    assert check_model(ok).ok and not check_model(ok).issues


def test_export_refuses_what_tensorrt_refuses_unless_allowed(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "opset18"
    assert main(["export", str(tiny_checkpoint), "-o", str(out), "--opset", "18"]) == 1  # TensorRT 8.6 parses up to opset 17
    err = capsys.readouterr().err
    assert "opset 18 outside the supported 1..17 [TensorRT 8.6]" in err and not (out / "model.json").exists()
    assert main(["export", str(tiny_checkpoint), "-o", str(out), "--opset", "18", "--allow-unsupported", "--no-simplify"]) == 0
    assert load_model_dir(out).info.extra["export"]["tensorrt_check"]["ok"] is False
    assert "NOT supported" in capsys.readouterr().out


def test_export_without_thresholds_warns_and_uses_half(tiny_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, _ = load_checkpoint(tiny_checkpoint)
    bare = tmp_path / "bare.ckpt"
    save_checkpoint(model, bare, train_config={"model_id": "from-training", "version": "1.2.3"})
    smoothing = {LABELS[0]: 1, "not_a_label": 1}  # export keeps the model's labels only
    model_dir = export_checkpoint(
        bare, tmp_path / "out", simplify=False, windows=synthetic_windows(16000, 8000, count=4)[0], windows_description="4 windows", median_windows=smoothing
    )
    assert model_dir.info.thresholds == [0.5] * len(LABELS)
    assert model_dir.info.median_windows == {LABELS[0]: 1}
    assert (model_dir.info.model_id, model_dir.info.version) == ("from-training", "1.2.3")
    assert "has no thresholds" in caplog.text


def fp16_graph(nodes: list, initializers: list) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "fp16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def const(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def test_fp16_pass_flags_overflow_and_underflow_and_passes_a_benign_graph() -> None:
    windows = np.random.default_rng(0).uniform(-1, 1, (6, 64)).astype(np.float32)
    loud = fp16_graph(
        [
            helper.make_node("Mul", ["x", "gain"], ["amplified"], name="amplify"),
            helper.make_node("ReduceMean", ["amplified"], ["y"], name="average", axes=[1], keepdims=0),
        ],
        [const("gain", 1e5)],
    )
    report = analyse_fp16(loud, windows, "uniform noise")
    assert report.fp32_nodes == ["amplify", "average"]  # the op that overflows and the one reading its output
    assert report.findings[0].kind == "overflow" and report.max_abs > FP16_MAX / report.margin
    assert report.max_abs_node == "amplify"

    quiet = fp16_graph(
        [
            helper.make_node("Mul", ["x", "x"], ["power"], name="square"),
            helper.make_node("Add", ["power", "eps"], ["floored"], name="add_eps"),
            helper.make_node("Log", ["floored"], ["y"], name="log"),
        ],
        [const("eps", 1e-6)],
    )
    report = analyse_fp16(quiet, windows * 1e-3, "noise at -60 dBFS")
    assert report.fp32_nodes == ["square", "add_eps", "log"]
    assert {f.node: f.kind for f in report.findings} == {"square": "upstream", "add_eps": "upstream", "log": "underflow"}
    assert json.loads(json.dumps(report.to_json()))["fp32_nodes"] == report.fp32_nodes

    benign = fp16_graph(
        [helper.make_node("Mul", ["x", "gain"], ["scaled"], name="scale"), helper.make_node("Add", ["scaled", "gain"], ["y"], name="shift")],
        [const("gain", 2.0)],
    )
    report = analyse_fp16(benign, windows, "uniform noise")
    assert report.fp32_nodes == [] and report.max_abs == pytest.approx(np.abs(windows * 2 + 2).max(), rel=1e-6)


def test_fp16_pass_flags_an_accumulator_whose_result_fits() -> None:
    """Every value and the mean fit fp16, but the sum a mean over 64 elements accumulates does not."""
    windows = np.full((2, 64), 0.5, dtype=np.float32)
    graph = fp16_graph(
        [
            helper.make_node("Mul", ["x", "gain"], ["level"], name="scale"),
            helper.make_node("ReduceMean", ["level"], ["y"], name="average", axes=[1], keepdims=0),
        ],
        [const("gain", 800.0)],
    )
    report = analyse_fp16(graph, windows, "constant windows")
    assert report.fp32_nodes == ["average"] and report.findings[0].kind == "accumulator"
    assert report.findings[0].value == pytest.approx(64 * 400.0) and report.max_abs == pytest.approx(400.0)
    assert analyse_fp16(graph, windows * 0.01, "quieter").fp32_nodes == []


def test_default_model_exports_checks_and_matches_pytorch_at_two_window_lengths(tmp_path: Path) -> None:
    """engines/default/model.ckpt (the shipped fused model) -> export -> TensorRT check -> parity, at 1 s and 2 s."""
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    window_s = model.config.window_s
    for length in (window_s, 2 * window_s):
        samples = round(length * model.config.sample_rate)
        windows, description = synthetic_windows(model.config.sample_rate, samples, count=8, seed=1)
        model_dir = export_checkpoint(
            DEFAULT_CHECKPOINT, tmp_path / f"w{length}", window_s=length, windows=windows, windows_description=description, scenes=synthetic_windows
        )
        assert model_dir.info.window_s == length
        report = check_model(model_dir.onnx_path)
        assert report.ok, report.format()
        assert_parity(model_dir.onnx_path, DEFAULT_CHECKPOINT, windows, window_s=length)
