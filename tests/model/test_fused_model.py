"""The whole fused tagger: parameter budget, ONNX export parity, checkpoints, and the summary table.

Every default stream is in the model (``DEFAULT_STREAMS`` filtered by the registry, so the test covers
the six once they are all written). ONNX Runtime must match eager PyTorch within atol 1e-4 on the
scores and 1e-3 on the embedding, at batch 1 and 8, for 1 s and 2 s windows. One export per
window length keeps CI fast: concat at 1 s, gated at 2 s (fusion does not depend on the window).
"""

from __future__ import annotations

import io
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from rtaudio.model.common import Stream
from rtaudio.model.config import DEFAULT_STREAMS, ModelConfig
from rtaudio.model.fused import FusedTagger, load_checkpoint, save_checkpoint
from rtaudio.model.summary import model_summary

AVAILABLE = [s for s in DEFAULT_STREAMS if s in Stream.registry]
LABELS = ["smoke_alarm", "doorbell", "speech", "dog_bark"]
SCORE_ATOL, EMBEDDING_ATOL = 1e-4, 1e-3


def clips(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * 16000)) / 16000
    freqs = 150 + 4000 * torch.rand(batch, 1, generator=g)
    chirp = torch.sin(2 * math.pi * freqs * t * (1 + 0.5 * t))
    return 0.3 * chirp * torch.rand(batch, 1, generator=g) + 0.03 * torch.randn(batch, t.numel(), generator=g)


@pytest.fixture(scope="module")
def taggers() -> dict[str, FusedTagger]:
    """One model per fusion, as training leaves it: codebooks seeded, BN statistics moved by a training pass."""
    models = {}
    for fusion in ("concat", "gated"):
        torch.manual_seed(0)
        model = FusedTagger(ModelConfig(labels=LABELS, streams=AVAILABLE, fusion=fusion))
        with torch.no_grad():
            model.train().run(clips(2, 1.0, seed=1))
        models[fusion] = model.eval()
    return models


def training_only_weights(model: FusedTagger) -> list[np.ndarray]:
    """The VAE's decoder and log-variance head, the codes stream's pretraining heads."""
    prefixes = ("streams.generative.decoder", "streams.generative.logvar", "streams.codes.pretext")
    return [p.detach().numpy() for n, p in model.named_parameters() if n.startswith(prefixes)]


def test_default_six_stream_model_is_within_budget(taggers: dict[str, FusedTagger]) -> None:
    model = taggers["concat"]  # the default ModelConfig but for the labels
    assert model.config == ModelConfig(labels=LABELS, streams=AVAILABLE)
    assert sum(p.numel() for p in model.parameters()) <= 4_000_000
    assert list(model.streams) == AVAILABLE
    assert training_only_weights(model)  # the export test below has something to look for


@pytest.mark.parametrize(("fusion", "window_s"), [("concat", 1.0), ("gated", 2.0)])
def test_onnx_matches_pytorch(taggers: dict[str, FusedTagger], fusion: str, window_s: float) -> None:
    model = taggers[fusion]
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (clips(1, window_s),),
        buffer,
        opset_version=17,
        dynamo=False,
        input_names=["waveform"],
        output_names=["scores", "embedding"],
        dynamic_axes={"waveform": {0: "batch"}, "scores": {0: "batch"}, "embedding": {0: "batch"}},
    )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    assert not {node.op_type for node in proto.graph.node} & {"STFT", "DFT", "RandomNormalLike", "RandomUniformLike"}
    assert [i.name for i in proto.graph.input] == ["waveform"]
    assert [o.name for o in proto.graph.output] == ["scores", "embedding"]
    initializers = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer]
    for w in training_only_weights(model):  # under no name, as is or transposed
        assert not any(a.shape in (w.shape, w.T.shape) and (np.array_equal(a, w) or np.array_equal(a, w.T)) for a in initializers)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for batch in (1, 8):
        waveform = clips(batch, window_s, seed=2)
        with torch.no_grad():
            scores, embedding = model(waveform)
        got_scores, got_embedding = session.run(None, {"waveform": waveform.numpy()})
        assert got_scores.shape == (batch, len(LABELS)) and got_embedding.shape == (batch, 64 * len(AVAILABLE))
        for i, name in enumerate(AVAILABLE):  # each stream's 64-d slice, so a failure names its stream
            np.testing.assert_allclose(
                got_embedding[:, 64 * i : 64 * (i + 1)],
                embedding[:, 64 * i : 64 * (i + 1)].numpy(),
                atol=EMBEDDING_ATOL,
                rtol=0,
                err_msg=f"stream {name}, batch {batch}",
            )
        np.testing.assert_allclose(got_scores, scores.numpy(), atol=SCORE_ATOL, rtol=0)


def test_checkpoint_round_trip_gives_identical_outputs(taggers: dict[str, FusedTagger], tmp_path) -> None:
    model = taggers["gated"]
    digest = save_checkpoint(model, tmp_path / "model.ckpt", thresholds=[0.3] * len(LABELS))
    loaded, extra = load_checkpoint(tmp_path / "model.ckpt")
    loaded.eval()
    assert len(digest) == 64 and extra["thresholds"] == [0.3] * len(LABELS)
    assert loaded.config == model.config
    waveform = clips(3, 1.0, seed=3)
    with torch.no_grad():
        for got, want in zip(loaded(waveform), model(waveform)):
            assert torch.equal(got, want)


def test_summary_counts_every_stream_and_scales_with_the_window(taggers: dict[str, FusedTagger]) -> None:
    model = taggers["concat"].train()
    one, two = model_summary(model, 0.5), model_summary(model, 1.0)
    parts = [row["part"] for row in one]
    assert parts == ["frontend", *AVAILABLE, "heads+fusion", "total"]
    total = one[-1]
    assert total["params"] == sum(p.numel() for p in model.parameters()) == sum(r["params"] for r in one[:-1])
    assert total["macs"] == sum(r["macs"] for r in one[:-1])
    assert all(r["macs"] > 0 for r in one if r["part"] != "heads+fusion")
    assert 1.8 < two[-1]["macs"] / total["macs"] < 2.6  # linear layers x2, attention a little more
    by_part = {r["part"]: r for r in one}
    for name in ("generative", "codes"):  # VAE decoder and pretraining heads: training only
        if name in by_part:
            assert by_part[name]["inference_params"] < by_part[name]["params"]
    assert model.training  # the summary leaves the mode as it found it
    model.eval()
    with pytest.raises(ValueError, match="window_s"):
        model_summary(model, 0.0)
