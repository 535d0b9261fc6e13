"""The learned streams (neuralogram, generative VAE, discrete codes) and the residual VQ.

Shapes, training-only aux losses, and the quantiser's maths: matmul + argmin equals brute force,
EMA k-means lowers the error. ONNX parity (each stream's slice of the embedding) and the absence
of the training-only parts from the graph are checked on the whole model in test_fused_model.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from rtaudio.model.common import EMBED_DIM, FrontEnd, Stream
from rtaudio.model.config import ModelConfig
from rtaudio.model.rvq import ResidualVQ, nearest_code
from rtaudio.model.streams.codes import CodePretext, CodesStream
from rtaudio.model.streams.generative import GenerativeStream
from rtaudio.model.streams.neuralogram import NeuralogramStream

LEARNED = ("neuralogram", "generative", "codes")
AUX = {"neuralogram": set(), "generative": {"recon", "kl"}, "codes": {"mlm", "contrastive"}}
CONFIG = ModelConfig(labels=["a", "b"])


def clips(batch: int, seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Tones over noise, different per clip."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * CONFIG.sample_rate)) / CONFIG.sample_rate
    freqs = 200 + 3000 * torch.rand(batch, 1, generator=g)
    return 0.3 * torch.sin(2 * math.pi * freqs * t) + 0.05 * torch.randn(batch, t.numel(), generator=g)


def make(name: str) -> Stream:
    torch.manual_seed(0)
    return Stream.registry[name](CONFIG)


@pytest.mark.parametrize("name", LEARNED)
def test_shapes_and_training_only_aux_losses(name: str) -> None:
    stream, features = make(name), FrontEnd()(clips(2))
    frames_in = features.logmel.shape[-1]
    expected_frames = {"neuralogram": frames_in // 2, "codes": frames_in // 2, "generative": (frames_in - 8) // 4 + 1}[name]
    out = stream.train()(features)
    assert out.frames.shape == (2, expected_frames, EMBED_DIM) and out.pooled.shape == (2, EMBED_DIM)
    assert set(out.aux) == AUX[name]
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.aux.values())
    (out.pooled.square().mean() + sum(out.aux.values(), torch.tensor(0.0))).backward()
    assert all(p.grad is not None for p in stream.parameters())
    stream.eval()
    with torch.no_grad():
        first, second = stream(features), stream(features)
    assert first.aux == {}
    assert torch.equal(first.pooled, second.pooled)  # no sampling, no masking at inference


def test_neuralogram_starts_as_a_mel_spaced_filterbank() -> None:
    stream = NeuralogramStream(CONFIG)
    t = torch.arange(CONFIG.sample_rate) / CONFIG.sample_rate

    def loudest(freq: float) -> int:
        with torch.no_grad():
            return int(stream.neuralogram(torch.sin(2 * math.pi * freq * t)[None])[0].mean(-1).argmax())

    peaks = [loudest(f) for f in (300.0, 1000.0, 4000.0)]
    assert peaks == sorted(peaks) and len(set(peaks)) == 3
    # mel spacing: 500 Hz low down spans several times as many filters as 500 Hz high up
    assert loudest(1000.0) - loudest(500.0) >= 3 * (loudest(7500.0) - loudest(7000.0))


def test_generative_kl_and_recon_respond_to_the_posterior() -> None:
    stream = GenerativeStream(CONFIG).train()
    features = FrontEnd()(clips(2))
    with torch.no_grad():
        for head in (stream.mu, stream.logvar):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        prior = stream(features).aux  # q = N(0, 1): KL is exactly zero
        stream.mu.bias.fill_(2.0)
        shifted = stream(features).aux
    assert float(prior["kl"]) == pytest.approx(0.0, abs=1e-7)
    assert float(shifted["kl"]) == pytest.approx(2.0, rel=1e-5)  # 0.5 * mu^2 per dimension


def test_nearest_code_matmul_equals_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    x, codebook = torch.randn(5, 40, 16, generator=g), torch.randn(64, 16, generator=g)
    brute = ((x[..., None, :] - codebook) ** 2).sum(-1).argmin(-1)
    assert torch.equal(nearest_code(x, codebook), brute)


def test_rvq_codes_in_range_and_residual_refines() -> None:
    rvq = ResidualVQ(16, codebooks=3, size=32).train()
    x = torch.randn(4, 50, 16)
    rvq(x)  # seeds the codebooks from x
    rvq.eval()
    codes, quantized = rvq(x)
    assert codes.shape == (4, 50, 3) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 32
    vectors = [rvq.codebook[k][codes[..., k]] for k in range(3)]
    assert torch.allclose(quantized, sum(vectors), atol=1e-6)
    errors = [float(((x - sum(vectors[: k + 1])) ** 2).mean()) for k in range(3)]
    assert errors[0] > errors[1] > errors[2]


def test_rvq_ema_moves_codebooks_toward_the_data() -> None:
    torch.manual_seed(4)
    centres = torch.randn(8, 16) * 3
    x = (centres[torch.randint(8, (512,))] + 0.3 * torch.randn(512, 16))[None]
    rvq = ResidualVQ(16, codebooks=2, size=16, decay=0.8).train()

    def error() -> float:
        rvq.eval()
        with torch.no_grad():
            err = float(((x - rvq(x)[1]) ** 2).mean())
        rvq.train()
        return err

    rvq(x)
    before = error()
    for _ in range(10):
        rvq(x)
    after = error()
    assert after < 0.7 * before
    frozen = rvq.codebook.clone()
    rvq.eval()(x)
    assert torch.equal(rvq.codebook, frozen)  # no updates at inference


def _rvq_rank(rank: int, directory: str) -> None:
    """One gloo rank: EMA steps on data only this rank sees (rank 0 near +4, rank 1 near -4)."""
    dist.init_process_group("gloo", init_method=f"file://{directory}/rendezvous", rank=rank, world_size=2)
    torch.manual_seed(rank)  # different random seeding per rank: only the sync makes them agree
    rvq = ResidualVQ(8, codebooks=2, size=8, decay=0.5).train()
    for _ in range(3):
        rvq(4.0 - 8.0 * rank + torch.randn(1, 64, 8))
    torch.save({k: v.clone() for k, v in rvq.state_dict().items()}, f"{directory}/rank{rank}.pt")
    dist.destroy_process_group()


def test_rvq_keeps_ranks_identical_under_gloo(tmp_path: Path) -> None:
    mp.spawn(_rvq_rank, args=(str(tmp_path),), nprocs=2)
    first, second = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(first[k], second[k]) for k in first)
    signs = first["codebook"][0].mean(-1).sign()
    assert {float(v) for v in signs} == {1.0, -1.0}  # codes for both ranks' data
    assert float(first["cluster_size"][0].sum()) == pytest.approx(128.0, rel=1e-4)  # counts summed over ranks


def test_codes_tokenizer_is_fixed_by_the_data_and_uses_many_codes() -> None:
    """No loss can move the features under the quantiser (the MLM collapse), and varied audio gets varied codes."""
    stream = make("codes").train()
    features = FrontEnd()(clips(8))
    for _ in range(3):  # EMA k-means steps
        stream(features)
    assert not any(p.requires_grad for p in stream.norm.parameters()) and not list(stream.quantizer.parameters())
    codes = stream.eval().codes(features)
    assert len(torch.unique(codes[..., 0])) >= 16


def test_multi_positive_contrastive_prefers_agreeing_views() -> None:
    torch.manual_seed(5)
    pretext = CodePretext(codebooks=3, size=8, mask_ratio=0.25, temperature=0.1)
    clip_vectors = torch.randn(4, EMBED_DIM) * 3
    agree = clip_vectors.repeat(3, 1)  # view-major: the same vector in each of the 3 views of a clip
    disagree = torch.randn(12, EMBED_DIM) * 3
    assert float(pretext._multi_positive_nce(agree, 4)) < float(pretext._multi_positive_nce(disagree, 4))


def test_constructor_errors_name_the_option() -> None:
    with pytest.raises(ValueError, match="codebooks >= 2"):
        CodesStream(CONFIG, codebooks=1)
    with pytest.raises(ValueError, match="mask_ratio"):
        CodesStream(CONFIG, mask_ratio=0.0)
    with pytest.raises(ValueError, match="stride"):
        GenerativeStream(CONFIG, patch=4, stride=8)
    with pytest.raises(ValueError, match="decay"):
        ResidualVQ(8, decay=1.0)
