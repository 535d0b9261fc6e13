"""Audio-text heads for free-text queries: a shared embedding space trained with symmetric InfoNCE,
plus DiffATR's generative term as an optional extra loss.

The audio side is an MLP on the fused embedding ``[B, 64 * streams]``; the text side is
``TextEncoder``. Both land L2-normalised in a 128-d space where a query's cosine similarity
ranks clips (and a clip's ranks captions). DiffATR (Xin et al., Interspeech 2024) models the
joint audio-text distribution generatively next to the contrastive objective; here that is a
small DDPM (cosine schedule) whose MLP denoiser recovers the text embedding from noise given the
audio embedding (and/or the reverse), trained by epsilon-prediction MSE (Min-SNR weighted). Its
weight 0 turns it off.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import torch
from torch import nn
from torch.nn import functional as F

from rtaudio.contract.vocab import Vocabulary
from rtaudio.model.text_encoder import SHARED_DIM, TextEncoder

Direction = Literal["text", "audio", "both"]
MAX_LOGIT_SCALE = 100.0  # CLIP's clamp: temperature never below 0.01


class AudioProjection(nn.Module):
    """Fused embedding ``[B, in_dim]`` -> unit vector ``[B, out_dim]`` in the shared space."""

    def __init__(self, in_dim: int = 384, hidden: int = 256, out_dim: int = SHARED_DIM, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(embedding), dim=-1)


class LogitScale(nn.Module):
    """Learnable inverse temperature, CLIP-style: starts at 1/0.07, clamped to [1, 100]."""

    def __init__(self, initial: float = 1 / 0.07):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(initial)))

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(0.0, math.log(MAX_LOGIT_SCALE)).exp()


def _multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over rows with a positive of -log(sum of positive probabilities): other positives
    of a row (another caption of the same clip) are never counted as its negatives."""
    rows = positive.any(dim=1)
    matched = logits.masked_fill(~positive, float("-inf")).logsumexp(dim=1)
    return (logits.logsumexp(dim=1) - matched)[rows].mean()


def info_nce(
    audio: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float, audio_ids: torch.Tensor | None = None, text_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE between unit vectors ``audio [Na, D]`` and ``text [Nt, D]``.

    ``audio_ids``/``text_ids`` name each row's clip: every (audio, text) pair of the same clip is
    a positive, so a clip with several captions (or repeated in the batch) is handled. Without
    ids the pairs are the diagonal (``Na == Nt``).
    """
    if audio_ids is None or text_ids is None:
        if audio.shape[0] != text.shape[0]:
            raise ValueError(f"without clip ids audio and text pair row by row; got {audio.shape[0]} and {text.shape[0]} rows")
        audio_ids = text_ids = torch.arange(audio.shape[0], device=audio.device)
    logits = logit_scale * text @ audio.T  # [Nt, Na]
    positive = text_ids[:, None] == audio_ids[None, :]
    return 0.5 * (_multi_positive_nce(logits, positive) + _multi_positive_nce(logits.T, positive.T))


def cosine_alpha_bar(steps: int, s: float = 0.008) -> torch.Tensor:
    """Cumulative signal fraction ``alpha_bar_t`` of the cosine schedule (Nichol & Dhariwal), t = 1..steps."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0).float()


class Denoiser(nn.Module):
    """MLP on (noisy target, condition, timestep embedding) -> estimate of the clean target x0.

    Predicting x0 and deriving the noise from it (``eps = (x_t - sqrt(a) x0) / sqrt(1 - a)``)
    is the same model as an epsilon-predictor with an exact skip path; a plain MLP predicting
    epsilon directly never learned the conditional map here (samples at chance similarity).
    """

    def __init__(self, dim: int, hidden: int = 256, time_dim: int = 64):
        super().__init__()
        self.time_dim = time_dim
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(2 * dim, hidden)
        self.net = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, noisy: torch.Tensor, condition: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        half = self.time_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        angles = t.float()[:, None] * freqs[None]
        temb = torch.cat([angles.sin(), angles.cos()], dim=-1)
        return self.net(self.inp(torch.cat([noisy, condition], dim=-1)) + self.time(temb))


class JointDiffusion(nn.Module):
    """DDPM over the joint audio-text representation (DiffATR's generative term).

    ``direction`` "text" generates the text embedding given the audio one, "audio" the reverse,
    "both" does each with its own denoiser and averages the losses. Unit vectors (targets and
    conditions) are scaled by sqrt(dim) so their coordinates have about unit variance, like the
    noise. The generation loss is the epsilon-prediction MSE with Min-SNR-5 weighting (Hang et
    al., 2023): ``min(snr, 5) / snr * |eps - eps_hat|^2``, computed in its equal x0 form
    ``min(snr, 5) * |x0 - x0_hat|^2``; unweighted, the near-clean steps (snr ~500 on this
    schedule) swamp the loss and make it jump by orders of magnitude.
    """

    alpha_bar: torch.Tensor  # buffers

    def __init__(self, dim: int = SHARED_DIM, steps: int = 50, hidden: int = 256, direction: Direction = "both", snr_clip: float = 5.0):
        super().__init__()
        self.dim, self.steps, self.direction, self.snr_clip = dim, steps, direction, snr_clip
        self.register_buffer("alpha_bar", cosine_alpha_bar(steps), persistent=False)
        targets = ("text", "audio") if direction == "both" else (direction,)
        self.denoisers = nn.ModuleDict({name: Denoiser(dim, hidden) for name in targets})

    def loss(self, audio: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Generation loss at a random timestep per pair (``audio``, ``text``: paired unit-vector rows)."""
        pairs = {"text": (text, audio), "audio": (audio, text)}
        losses = [self._loss(cast(Denoiser, self.denoisers[name]), *pairs[name]) for name in self.denoisers]
        return torch.stack(losses).mean()

    def _loss(self, denoiser: Denoiser, target: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        radius = math.sqrt(self.dim)
        t = torch.randint(0, self.steps, (target.shape[0],), device=target.device)
        a = self.alpha_bar[t][:, None]
        x0 = target * radius
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn_like(target)
        weight = (a / (1 - a)).clamp(max=self.snr_clip)
        return (weight * (denoiser(noisy, condition * radius, t) - x0) ** 2).mean()

    @torch.no_grad()
    def sample(self, condition: torch.Tensor, target: Literal["text", "audio"] = "text", generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral DDPM sampling of the ``target`` embedding given ``condition`` rows; unit vectors.

        Each step's x0 estimate is put back on the sphere the targets live on (radius sqrt(dim))
        before taking the posterior mean q(x_{t-1} | x_t, x0).
        """
        denoiser = self.denoisers[target]
        radius = math.sqrt(self.dim)
        x = torch.randn(condition.shape, generator=generator).to(condition.device)
        x0 = x
        for step in reversed(range(self.steps)):
            a_bar = self.alpha_bar[step]
            a_prev = self.alpha_bar[step - 1] if step > 0 else torch.ones_like(a_bar)
            alpha = a_bar / a_prev
            x0 = radius * F.normalize(denoiser(x, condition * radius, torch.full((x.shape[0],), step, device=x.device)), dim=-1)
            if step == 0:
                break
            mean = (a_prev.sqrt() * (1 - alpha) * x0 + alpha.sqrt() * (1 - a_prev) * x) / (1 - a_bar)
            sigma = ((1 - a_prev) / (1 - a_bar) * (1 - alpha)).sqrt()  # posterior std
            x = mean + sigma * torch.randn(x.shape, generator=generator).to(x.device)
        return F.normalize(x0, dim=-1)


class RetrievalHeads(nn.Module):
    """Everything the audio-text objective trains: both encoders, the temperature and, when the
    DiffATR term is on, its generator (``diffusion`` is None otherwise)."""

    def __init__(self, vocab_size: int, audio_dim: int = 384, dim: int = SHARED_DIM, diffusion_steps: int | None = 50, direction: Direction = "both"):
        super().__init__()
        self.audio = AudioProjection(audio_dim, out_dim=dim)
        self.text = TextEncoder(vocab_size, out_dim=dim)
        self.logit_scale = LogitScale()
        self.diffusion = JointDiffusion(dim, diffusion_steps, direction=direction) if diffusion_steps else None


@dataclass
class RetrievalTraining:
    """How ``train_retrieval`` runs; ``diffusion_weight`` 0 turns the DiffATR term off."""

    steps: int = 400
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    diffusion_weight: float = 0.0
    diffusion_steps: int = 50
    direction: Direction = "both"
    seed: int = 0
    max_seconds: float | None = None  # stop early once this much wall time has passed


@dataclass
class RetrievalHistory:
    """Per-step losses; ``generation`` stays empty when the DiffATR term is off."""

    contrastive: list[float] = field(default_factory=list)
    generation: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_retrieval(
    audio: torch.Tensor,
    captions: Sequence[str],
    caption_clip: Sequence[int],
    vocab: Vocabulary | None = None,
    options: RetrievalTraining | None = None,
) -> tuple[RetrievalHeads, Vocabulary, RetrievalHistory]:
    """Train the heads on fixed fused embeddings ``audio [N, D]`` and captions (``caption_clip[i]``:
    the row of ``audio`` that caption ``i`` describes); the vocabulary is built from the captions
    unless given. Each batch draws captions; their clips form the audio side, so clips with
    several captions in a batch exercise the multi-positive masking. Seeds torch's global RNG
    with ``options.seed`` (initialisation and diffusion noise) and runs on ``audio``'s device."""
    options = options or RetrievalTraining()
    if len(captions) != len(caption_clip):
        raise ValueError(f"{len(captions)} captions but {len(caption_clip)} caption_clip entries")
    vocab = Vocabulary.build(captions) if vocab is None else vocab
    torch.manual_seed(options.seed)
    use_diffusion = options.diffusion_weight > 0
    heads = RetrievalHeads(len(vocab), audio.shape[1], diffusion_steps=options.diffusion_steps if use_diffusion else None, direction=options.direction).to(
        audio.device
    )
    optimiser = torch.optim.AdamW(heads.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    ids_all, mask_all = (torch.from_numpy(a).to(audio.device) for a in vocab.encode(captions))
    clip_of = torch.as_tensor(list(caption_clip), dtype=torch.long, device=audio.device)
    generator = torch.Generator().manual_seed(options.seed)
    history, start = RetrievalHistory(), time.perf_counter()
    heads.train()
    for _ in range(options.steps):
        chosen = torch.randperm(len(captions), generator=generator)[: options.batch_size].to(audio.device)
        text_ids = clip_of[chosen]
        clips, inverse = text_ids.unique(return_inverse=True)
        length = int(mask_all[chosen].sum(1).max())
        text = heads.text(ids_all[chosen, :length], mask_all[chosen, :length])
        sound = heads.audio(audio[clips])
        loss = info_nce(sound, text, heads.logit_scale(), clips, text_ids)
        history.contrastive.append(loss.item())
        if heads.diffusion is not None:
            generation = heads.diffusion.loss(sound[inverse], text)
            history.generation.append(generation.item())
            loss = loss + options.diffusion_weight * generation
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if options.max_seconds is not None and time.perf_counter() - start > options.max_seconds:
            break
    history.seconds = time.perf_counter() - start
    return heads.eval(), vocab, history


def recall_at_k(audio: torch.Tensor, text: torch.Tensor, caption_clip: Sequence[int] | torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Retrieval recall both ways over unit vectors: text->audio (the caption's clip in the top k)
    and audio->text (any of the clip's captions in the top k). Keys ``t2a_R@k``, ``a2t_R@k``.

    Ties count against the query (a negative scoring the same as the best positive ranks above
    it), so collapsed embeddings score zero rather than perfect recall.
    """
    clip_of = torch.as_tensor(caption_clip, dtype=torch.long, device=text.device)
    sims = text @ audio.T  # [Nt, Na]
    positive = clip_of[:, None] == torch.arange(audio.shape[0], device=text.device)[None, :]

    def ranks(scores: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        best = scores.masked_fill(~pos, float("-inf")).max(1, keepdim=True).values
        return ((scores >= best) & ~pos).sum(1)[pos.any(1)]  # rows without a positive are not queries

    t2a, a2t = ranks(sims, positive), ranks(sims.T, positive.T)
    out = {}
    for k in ks:
        out[f"t2a_R@{k}"] = float((t2a < k).float().mean())
        out[f"a2t_R@{k}"] = float((a2t < k).float().mean())
    return out
