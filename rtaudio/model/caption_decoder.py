"""Caption decoder: a small Transformer decoder that describes what the fused tagger heard.

Memory is every stream's frame embeddings ``[B, T', 64]`` concatenated along time, each frame
tagged with a learned per-stream type embedding and its position inside its stream, so the
decoder cross-attends to generative and discriminative streams alike. Attention is written out
(not ``nn.MultiheadAttention``) so the per-step decode can take and return its self-attention
keys/values explicitly: the same code serves training (whole sequence, causal mask), the
KV-cache step and the fixed-length decode exported to ONNX (``rtaudio.export.caption_onnx``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from rtaudio.contract.tokenizer import BOS_ID, EOS_ID, PAD_ID, strip
from rtaudio.model.attention import Attention
from rtaudio.model.common import EMBED_DIM, SinusoidalPosition, StreamOutput

NEG_INF = -1e9  # additive mask value (finite: no NaN from fully masked rows, exports everywhere)


class DecoderLayer(nn.Module):
    """Pre-norm block: causal self-attention, cross-attention to memory, feed-forward."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn, self.cross_attn = Attention(dim, heads), Attention(dim, heads)
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, dim))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, past_k: torch.Tensor | None, past_v: torch.Tensor | None, cross_k: torch.Tensor, cross_v: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the new hidden states and the self-attention keys/values including ``past``."""
        h = self.norm1(x)
        k, v = self.self_attn.keys_values(h)
        if past_k is not None and past_v is not None:
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        x = x + self.drop(self.self_attn.attend(h, k, v, mask))
        x = x + self.drop(self.cross_attn.attend(self.norm2(x), cross_k, cross_v))
        return x + self.drop(self.ff(self.norm3(x))), k, v


class CaptionDecoder(nn.Module):
    """Stream frames -> caption token logits (teacher forcing), greedy and beam search."""

    def __init__(
        self,
        vocab_size: int,
        streams: Sequence[str],
        dim: int = 128,
        layers: int = 2,
        heads: int = 4,
        ff: int = 256,
        dropout: float = 0.1,
        max_len: int = 24,
        memory_dim: int = EMBED_DIM,
        label_smoothing: float = 0.1,
    ):
        super().__init__()
        self.vocab_size, self.stream_names, self.max_len = vocab_size, list(streams), max_len
        self.dim, self.heads, self.label_smoothing = dim, heads, label_smoothing
        self.memory_project = nn.Sequential(nn.Linear(memory_dim, dim), nn.LayerNorm(dim))
        self.stream_type = nn.Embedding(len(self.stream_names), dim)
        self.position = SinusoidalPosition(dim)
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ff, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def _layers(self) -> Iterable[DecoderLayer]:
        return cast("Iterable[DecoderLayer]", self.layers)

    # -- memory -------------------------------------------------------------------------------
    def memory(self, streams: Mapping[str, StreamOutput | torch.Tensor]) -> torch.Tensor:
        """Each stream's frames (in ``stream_names`` order) + position + type -> ``[B, sum T', dim]``."""
        parts = []
        for i, name in enumerate(self.stream_names):
            frames = streams[name]
            frames = frames.frames if isinstance(frames, StreamOutput) else frames
            parts.append(self.position(self.memory_project(frames)) + self.stream_type.weight[i])
        return torch.cat(parts, dim=1)

    def cross_keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention K and V for every layer, computed once per clip: ``[layers, B, heads, S, head_dim]``."""
        kv = [layer.cross_attn.keys_values(memory) for layer in self._layers()]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])

    # -- the two decode forms -------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Whole sequence at once: tokens ``[B, L]`` -> logits ``[B, L, vocab]`` under a causal mask."""
        length = tokens.shape[1]
        mask = torch.triu(torch.full((length, length), NEG_INF, device=tokens.device), diagonal=1)
        x = self.position(self.embed(tokens))
        for layer in self._layers():
            ck, cv = layer.cross_attn.keys_values(memory)
            x, _, _ = layer(x, None, None, ck, cv, mask)
        return self.head(self.norm(x))

    def step(
        self, token: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One token ``[B, 1]`` with the cache ``[layers, B, heads, t, head_dim]`` -> logits ``[B, vocab]``, cache with t+1."""
        t = past_k.shape[3]
        x = self.embed(token) + self.position.table[t : t + 1]
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, past_k[i], past_v[i], cross_k[i], cross_v[i], None)
            keys.append(k)
            values.append(v)
        return self.head(self.norm(x))[:, 0], torch.stack(keys), torch.stack(values)

    def empty_cache(self, batch: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The KV cache before the first step (length 0)."""
        shape = (len(self.layers), batch, self.heads, 0, self.dim // self.heads)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    # -- training -------------------------------------------------------------------------------
    def loss(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced cross-entropy with label smoothing; ``tokens`` = ``<bos> ... <eos> <pad>...``."""
        logits = self(tokens[:, :-1], memory)
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), tokens[:, 1:].reshape(-1), ignore_index=PAD_ID, label_smoothing=self.label_smoothing)

    # -- search ---------------------------------------------------------------------------------
    @torch.no_grad()
    def greedy(self, memory: torch.Tensor, max_tokens: int | None = None) -> list[list[int]]:
        """Argmax decoding with the KV cache; token ids per clip without ``<bos>``/``<eos>``."""
        max_tokens = max_tokens or self.max_len - 1
        batch = memory.shape[0]
        cross_k, cross_v = self.cross_keys_values(memory)
        past_k, past_v = self.empty_cache(batch, memory.device)
        token = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=memory.device)
        out = torch.zeros(batch, 0, dtype=torch.long, device=memory.device)
        done = torch.zeros(batch, dtype=torch.bool, device=memory.device)
        for _ in range(max_tokens):
            logits, past_k, past_v = self.step(token, past_k, past_v, cross_k, cross_v)
            token = never_generated(logits).argmax(-1, keepdim=True)
            out = torch.cat([out, token], dim=1)
            done |= token[:, 0] == EOS_ID
            if bool(done.all()):
                break
        return [strip(row) for row in out.tolist()]

    @torch.no_grad()
    def beam(self, memory: torch.Tensor, width: int = 4, length_penalty: float = 0.6, max_tokens: int | None = None) -> list[list[int]]:
        """Beam search per clip; hypotheses ranked by log-probability / length ** ``length_penalty``."""
        return [self._beam_one(memory[b : b + 1], width, length_penalty, max_tokens or self.max_len - 1) for b in range(memory.shape[0])]

    def _beam_one(self, memory: torch.Tensor, width: int, alpha: float, max_tokens: int) -> list[int]:
        cross_k, cross_v = self.cross_keys_values(memory)
        past_k, past_v = self.empty_cache(1, memory.device)
        seqs: list[list[int]] = [[]]
        scores = torch.zeros(1, device=memory.device)
        finished: list[tuple[float, list[int]]] = []
        for step in range(max_tokens):
            last = [s[-1] if s else BOS_ID for s in seqs]
            token = torch.tensor(last, device=memory.device)[:, None]
            n = len(seqs)
            logits, past_k, past_v = self.step(token, past_k, past_v, cross_k.expand(-1, n, -1, -1, -1), cross_v.expand(-1, n, -1, -1, -1))
            total = (scores[:, None] + never_generated(logits).log_softmax(-1)).reshape(-1)
            top = total.topk(min(width, total.numel())).indices  # sorted best first
            keep_rows, keep_seqs, keep_scores = [], [], []
            for index in top.tolist():
                row, tok = divmod(index, self.vocab_size)
                seq, score = seqs[row] + [tok], float(total[index])
                if tok == EOS_ID or step == max_tokens - 1:
                    finished.append((score / max(len(seq), 1) ** alpha, seq))
                else:
                    keep_rows.append(row)
                    keep_seqs.append(seq)
                    keep_scores.append(score)
            if not keep_seqs or len(finished) >= width:  # early stop once `width` hypotheses have ended
                break
            rows = torch.tensor(keep_rows, device=memory.device)
            past_k, past_v = past_k[:, rows], past_v[:, rows]
            seqs, scores = keep_seqs, torch.tensor(keep_scores, device=memory.device)
        return strip(max(finished, key=lambda f: f[0])[1]) if finished else strip(seqs[0])


def never_generated(logits: torch.Tensor) -> torch.Tensor:
    """Logits with ``<pad>`` and ``<bos>`` ruled out (search only; the exported graphs return raw logits)."""
    logits = logits.clone()
    logits[..., [PAD_ID, BOS_ID]] = NEG_INF
    return logits


def pad_captions(captions: Sequence[Sequence[int]], length: int | None = None) -> torch.Tensor:
    """Token id lists (``<bos> ... <eos>``) -> ``[B, length]`` padded with ``<pad>`` (truncated past it)."""
    length = length or max(len(c) for c in captions)
    out = torch.full((len(captions), length), PAD_ID, dtype=torch.long)
    for i, c in enumerate(captions):
        c = list(c)[:length]
        out[i, : len(c)] = torch.tensor(c, dtype=torch.long)
    return out
