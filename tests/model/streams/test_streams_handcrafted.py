"""The pitch and timbre streams: shapes, size, and ONNX export matching PyTorch with TensorRT-friendly ops."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from rtaudio.model.common import EMBED_DIM, FrontEnd  # noqa: E402
from rtaudio.model.config import ModelConfig  # noqa: E402
from rtaudio.model.fused import FusedTagger  # noqa: E402
from rtaudio.model.streams.pitch import PitchStream  # noqa: E402
from rtaudio.model.streams.timbre import TimbreStream  # noqa: E402

SR = 16000
LABELS = ["smoke_alarm", "speech", "glass_break"]
# every op the exported pitch/timbre graphs may use: all have TensorRT importers (TopK with a constant k)
ALLOWED_OPS = {
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Exp",
    "Gather",
    "Gemm",
    "Identity",
    "LayerNormalization",
    "Less",
    "Log",
    "MatMul",
    "Max",
    "Mod",
    "Mul",
    "Pad",
    "Pow",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Sqrt",
    "Squeeze",
    "Sub",
    "TopK",
    "Transpose",
    "Unsqueeze",
}
TOLERANCE = 1e-4  # ONNX Runtime vs eager PyTorch, absolute, on scores and embeddings


def config(stream: str, window_s: float = 1.0) -> ModelConfig:
    return ModelConfig(labels=LABELS, streams=[stream], window_s=window_s, layers=1, heads=2)


@pytest.mark.parametrize("cls", [PitchStream, TimbreStream])
def test_stream_shapes_and_size(cls: type) -> None:
    cfg = config(cls.name)
    stream = cls(cfg)
    features = FrontEnd(SR, cfg.n_fft, cfg.stft_hop, cfg.n_mels)(0.1 * torch.randn(3, SR))
    out = stream.train()(features)
    frames = features.power.shape[-1] // 2  # 101 STFT frames, averaged in pairs
    assert out.frames.shape == (3, frames, EMBED_DIM) and out.pooled.shape == (3, EMBED_DIM)
    assert out.aux == {}
    assert torch.isfinite(out.frames).all()
    assert sum(p.numel() for p in cls(ModelConfig(labels=LABELS)).parameters()) < 150_000  # default 2 layers


@pytest.mark.parametrize("stream", ["pitch", "timbre"])
def test_silence_gives_finite_outputs_and_gradients(stream: str) -> None:
    model = FusedTagger(config(stream))
    waveform = torch.cat([torch.zeros(1, SR), 0.1 * torch.randn(1, SR)])  # log(0), 0/0 in the descriptors
    scores, embedding = model(waveform)
    assert torch.isfinite(scores).all() and torch.isfinite(embedding).all()
    scores.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.streams[stream].parameters())


@pytest.mark.parametrize("stream", ["pitch", "timbre"])
@pytest.mark.parametrize("sample_rate", [8000, 48000])
def test_streams_build_at_other_sample_rates(stream: str, sample_rate: int) -> None:
    cfg = ModelConfig(labels=LABELS, streams=[stream], sample_rate=sample_rate, n_fft=1024, stft_hop=sample_rate // 100, layers=1, heads=2)
    scores, _ = FusedTagger(cfg).eval()(0.1 * torch.randn(2, sample_rate))
    assert scores.shape == (2, len(LABELS)) and torch.isfinite(scores).all()


def export(model: torch.nn.Module, samples: int) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.zeros(1, samples),),
        buffer,
        input_names=["waveform"],
        output_names=["scores", "embedding"],
        dynamic_axes={"waveform": {0: "batch"}, "scores": {0: "batch"}, "embedding": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return buffer.getvalue()


@pytest.mark.parametrize("window_s", [1.0, 2.0])
@pytest.mark.parametrize("stream", ["pitch", "timbre"])
def test_onnx_matches_pytorch(stream: str, window_s: float) -> None:
    torch.manual_seed(0)
    model = FusedTagger(config(stream, window_s))
    model.train()
    with torch.no_grad():  # move BatchNorm's running statistics off their defaults so they matter
        for _ in range(3):
            model(0.1 * torch.randn(4, int(window_s * SR)))
    model.eval()
    samples = int(window_s * SR)
    graph = export(model, samples)
    ops = {node.op_type for node in onnx.load_from_string(graph).graph.node}
    assert ops <= ALLOWED_OPS, f"ops outside the TensorRT-friendly list: {sorted(ops - ALLOWED_OPS)}"
    assert not ops & {"STFT", "DFT"}
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    t = np.arange(samples) / SR
    for batch in (1, 8):
        x = (0.1 * rng.standard_normal((batch, samples)) + 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000, (batch, 1)) * t)).astype(np.float32)
        scores, embedding = session.run(None, {"waveform": x})
        with torch.no_grad():
            expected_scores, expected_embedding = model(torch.from_numpy(x))
        assert scores.shape == (batch, len(LABELS)) and embedding.shape == (batch, EMBED_DIM)
        assert np.abs(scores - expected_scores.numpy()).max() < TOLERANCE
        assert np.abs(embedding - expected_embedding.numpy()).max() < TOLERANCE
