"""The project's own small text encoder for free-text queries: word vocabulary -> Transformer -> unit vector.

Captions are lower-cased and split into words; the vocabulary is built from the training
captions and saved as JSON next to the model, so the runtime can tokenise a query with nothing
but the JSON file and run the exported ONNX graph (``ids [B, L]`` + ``mask [B, L]`` ->
``embedding [B, 128]``) on ONNX Runtime, without torch. Nothing is downloaded.
"""

from __future__ import annotations

import copy
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rtaudio.model.attention import Attention
from rtaudio.model.common import SinusoidalPosition

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
VOCAB_FORMAT = 1
SHARED_DIM = 128
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` ("A dog's bark!" -> ["a", "dog's", "bark"]); punctuation is dropped."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Word <-> id map built from training captions; ids 0 and 1 are ``<pad>`` and ``<unk>``."""

    def __init__(self, tokens: Sequence[str], max_len: int = 32):
        if list(tokens[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {list(tokens[:2])}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")
        self.tokens = list(tokens)
        self.max_len = max_len
        self.index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None, max_len: int = 32) -> Vocabulary:
        """Most frequent words first (ties alphabetical, so the same captions give the same ids)."""
        counts = Counter(word for caption in captions for word in words(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: max(0, max_size - 2)]
        return cls([PAD, UNK, *kept], max_len)

    def __len__(self) -> int:
        return len(self.tokens)

    def ids(self, text: str) -> list[int]:
        """Word ids of one text, unknown words -> ``<unk>``, cut to ``max_len``; an empty text is one ``<unk>``."""
        out = [self.index.get(word, UNK_ID) for word in words(text)][: self.max_len]
        return out or [UNK_ID]

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """A batch -> ``ids`` and ``mask`` (int64 ``[B, L]``, L the longest text; mask 1 on real words)."""
        rows = [self.ids(text) for text in texts]
        length = max((len(row) for row in rows), default=1)
        ids = np.full((len(rows), length), PAD_ID, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
        return ids, mask

    def to_json(self) -> dict[str, Any]:
        return {"format": VOCAB_FORMAT, "kind": "rtaudio.words", "lowercase": True, "word_pattern": _WORD.pattern,
                "max_len": self.max_len, "tokens": self.tokens}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a saved vocabulary; refuses a file of another kind or format."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        missing = [k for k in ("format", "kind", "max_len", "tokens") if k not in data]
        if missing or data["kind"] != "rtaudio.words" or data["format"] != VOCAB_FORMAT:
            raise ValueError(f"{path}: not an rtaudio word vocabulary (missing {missing or 'nothing'}, "
                             f"kind {data.get('kind')!r}, format {data.get('format')!r})")
        return cls(data["tokens"], int(data["max_len"]))


class _Block(nn.Module):
    """Pre-norm Transformer encoder layer with an explicit additive padding mask (``Attention``)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``x [B, L, D]``, ``bias [B, 1, 1, L]`` (0 on words, -1e4 on padding)."""
        h = self.norm1(x)
        x = x + self.drop(self.attn.attend(h, *self.attn.keys_values(h), bias))
        return x + self.drop(self.mlp(self.norm2(x)))


class TextEncoder(nn.Module):
    """Word ids ``[B, L]`` + mask ``[B, L]`` -> L2-normalised embedding ``[B, out_dim]`` in the shared audio-text space.

    Embedding + sinusoidal positions -> pre-norm Transformer blocks (padding masked) -> mean
    over real words -> linear projection -> unit length.
    """

    def __init__(self, vocab_size: int, dim: int = 128, layers: int = 2, heads: int = 4, out_dim: int = SHARED_DIM,
                 dropout: float = 0.1):
        super().__init__()
        self.config = {"vocab_size": vocab_size, "dim": dim, "layers": layers, "heads": heads, "out_dim": out_dim,
                       "dropout": dropout}
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        self.position = SinusoidalPosition(dim)
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Linear(dim, out_dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.to(torch.float32)
        bias = ((1.0 - keep) * -1e4)[:, None, None, :]  # additive, so a padded row never turns into NaN
        x = self.position(self.embed(ids))
        for block in self.blocks:
            x = block(x, bias)
        x = self.norm(x)
        pooled = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
        return F.normalize(self.project(pooled), dim=-1)

    def embed_texts(self, vocab: Vocabulary, texts: Sequence[str]) -> torch.Tensor:
        """Convenience: tokenise with ``vocab`` and encode (on the module's device)."""
        ids, mask = vocab.encode(texts)
        device = self.embed.weight.device
        return self(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))


def export_text_encoder(encoder: TextEncoder, path: str | Path | None = None, opset: int = 17) -> bytes:
    """ONNX graph ``ids, mask -> embedding`` with dynamic batch and length; written to ``path`` when given.

    Exported from an eval-mode CPU copy, so dropout is off and the caller's module is untouched.
    """
    model = copy.deepcopy(encoder).cpu().eval()
    ids = torch.full((2, 5), UNK_ID, dtype=torch.int64)
    mask = torch.ones(2, 5, dtype=torch.int64)
    buffer = io.BytesIO()
    axes = {"ids": {0: "batch", 1: "length"}, "mask": {0: "batch", 1: "length"}, "embedding": {0: "batch"}}
    torch.onnx.export(model, (ids, mask), buffer, input_names=["ids", "mask"], output_names=["embedding"],
                      dynamic_axes=axes, opset_version=opset, dynamo=False)
    data = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
