"""The text heads at run time, on ONNX Runtime with numpy only (no torch, no ``tokenizers``).

``Captioner``: audio ``[B, samples]`` (the model's caption window) -> one caption per clip:
caption_audio.onnx gives the decoder's memory, caption_cross.onnx every layer's cross-attention
keys/values once, caption_step.onnx one token at a time with the self-attention KV cache
(chosen over a fixed-length decode by measurement, docs/captions.md), tokenizer.json turns the
ids back into text.

``TextSpace``: free-text queries -> unit vectors (vocab.json + text_encoder.onnx), and the
tagger's window embeddings -> unit vectors in the same space (audio_text.onnx); their dot
product is the cosine similarity a query is scored by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtaudio.contract import load_model_dir
from rtaudio.contract.files import AUDIO_TEXT_FILE, CAPTION_AUDIO_FILE, CAPTION_CROSS_FILE, CAPTION_STEP_FILE, TEXT_ENCODER_FILE
from rtaudio.contract.tokenizer import BOS_ID, EOS_ID, PAD_ID, CaptionTokenizer, strip
from rtaudio.contract.vocab import Vocabulary

NEG_INF = -1e9
DEFAULT_MAX_TOKENS = 32  # caption length cap for a model.json without extra.text.max_tokens


def session(path: Path, threads: int | None = None) -> Any:
    """A CPU ONNX Runtime session for one graph (``threads`` intra-op threads, default ORT's)."""
    import onnxruntime as ort

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; export the model with its text heads (rtaudio train with captions:)")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def next_token(logits: np.ndarray) -> np.ndarray:
    """Greedy choice per row, never ``<pad>`` or ``<bos>`` (as ``CaptionDecoder.greedy``)."""
    logits = logits.copy()
    logits[:, [PAD_ID, BOS_ID]] = NEG_INF
    return logits.argmax(-1)


@dataclass
class GreedyResult:
    tokens: list[list[int]]  # per clip, without <bos>/<eos>
    generated: np.ndarray  # [B, steps]: every id generated, past <eos> too
    logits: np.ndarray  # [B, steps, vocab]: the raw logits each step (for parity checks)


class CachedGreedy:
    """Greedy decoding through caption_cross.onnx + caption_step.onnx."""

    def __init__(self, model_dir: str | Path, threads: int | None = None):
        self.cross, self.step = session(Path(model_dir) / CAPTION_CROSS_FILE, threads), session(Path(model_dir) / CAPTION_STEP_FILE, threads)
        shape = self.step.get_inputs()[1].shape  # [layers, batch, heads, past, head_dim]
        self.layers, self.heads, self.head_dim = shape[0], shape[2], shape[4]

    def __call__(self, memory: np.ndarray, max_tokens: int, stop_at_eos: bool = True) -> GreedyResult:
        batch = memory.shape[0]
        cross_k, cross_v = self.cross.run(None, {"memory": memory.astype(np.float32)})
        past_k = past_v = np.zeros((self.layers, batch, self.heads, 0, self.head_dim), np.float32)
        token = np.full((batch, 1), BOS_ID, np.int64)
        steps, done = [], np.zeros(batch, bool)
        out = np.zeros((batch, 0), np.int64)
        for _ in range(max_tokens):
            logits, past_k, past_v = self.step.run(None, {"token": token, "past_k": past_k, "past_v": past_v, "cross_k": cross_k, "cross_v": cross_v})
            steps.append(logits)
            token = next_token(logits)[:, None]
            out = np.concatenate([out, token], axis=1)
            done |= token[:, 0] == EOS_ID
            if stop_at_eos and done.all():
                break
        return GreedyResult([strip(row) for row in out.tolist()], out, np.stack(steps, axis=1))


class Captioner:
    """Clips of the model's caption window -> captions (greedy, KV cache)."""

    def __init__(self, model_dir: str | Path, max_tokens: int | None = None, threads: int | None = None):
        """``max_tokens`` (with ``<bos>``/``<eos>``) defaults to the model's, from model.json ``extra.text``."""
        root = Path(model_dir)
        self.audio = session(root / CAPTION_AUDIO_FILE, threads)
        self.samples = int(self.audio.get_inputs()[0].shape[1])
        self.decode = CachedGreedy(root, threads)
        self.tokenizer = CaptionTokenizer.load(root)
        if max_tokens is None:
            text = load_model_dir(root, check_hash=False).info.extra.get("text", {})
            max_tokens = int(text.get("max_tokens", DEFAULT_MAX_TOKENS))
        self.max_tokens = max_tokens

    def encode(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[B, samples]`` -> the decoder's memory ``[B, S, D]`` and the clip's fused embedding ``[B, E]``."""
        if audio.ndim != 2 or audio.shape[1] != self.samples:
            raise ValueError(f"caption audio has shape {audio.shape}; expected [clips, {self.samples}] (the model's caption window)")
        memory, embedding = self.audio.run(None, {"waveform": np.ascontiguousarray(audio, dtype=np.float32)})
        return memory, embedding

    def greedy(self, memory: np.ndarray) -> GreedyResult:
        """Greedy decoding of ``encode``'s memory, up to ``max_tokens``."""
        return self.decode(memory, self.max_tokens - 1)

    def describe(self, memory: np.ndarray) -> list[str]:
        """One caption per row of ``encode``'s memory."""
        return [self.tokenizer.decode(ids) for ids in self.greedy(memory).tokens]

    def __call__(self, audio: np.ndarray) -> list[str]:
        return self.describe(self.encode(audio)[0])


class TextSpace:
    """Texts and window embeddings -> unit vectors of the shared audio-text space."""

    def __init__(self, model_dir: str | Path, threads: int | None = None):
        root = Path(model_dir)
        self.vocab = Vocabulary.load(root)
        self.text_encoder = session(root / TEXT_ENCODER_FILE, threads)
        self.projection = session(root / AUDIO_TEXT_FILE, threads)

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), D]``; words the vocabulary lacks are dropped (``Vocabulary.ids``)."""
        ids, mask = self.vocab.encode(list(texts))
        return self.text_encoder.run(None, {"ids": ids, "mask": mask})[0]

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` the model never saw in training (they carry no meaning for it)."""
        return self.vocab.unknown_words(text)

    def audio(self, embedding: np.ndarray) -> np.ndarray:
        """Fused window embeddings ``[B, E]`` -> ``[B, D]``."""
        return self.projection.run(None, {"embedding": np.ascontiguousarray(embedding, dtype=np.float32)})[0]
