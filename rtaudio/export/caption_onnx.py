"""The caption decoder in ONNX (opset 17), in the two forms the runtime could run, and their timing.

(a) KV cache: ``caption_cross.onnx`` maps memory to every layer's cross-attention K/V once per
    clip; ``caption_step.onnx`` takes one token and the past self-attention K/V and returns the
    logits and the cache one step longer.
(b) Fixed length: ``caption_full.onnx`` takes the whole ``[B, max_len]`` token buffer and the
    memory and returns logits at every position under a causal mask; greedy decoding calls it
    once per token and reads position t. Static shapes, no cache, everything recomputed.

Both greedy loops use only numpy and ONNX Runtime; form (a), the one shipped, lives in the
runtime (``rtaudio.runtime.text_heads.CachedGreedy``). ``time_greedy`` measures both forms
(docs/captions.md has the numbers and the choice).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtaudio.contract.files import CAPTION_CROSS_FILE, CAPTION_FULL_FILE, CAPTION_STEP_FILE
from rtaudio.contract.tokenizer import BOS_ID, EOS_ID, PAD_ID, strip
from rtaudio.export.graph import graph_bytes
from rtaudio.model.caption_decoder import CaptionDecoder
from rtaudio.runtime.text_heads import CachedGreedy, GreedyResult, next_token, session

KV_CACHE_FILES, ALL_FILES = (CAPTION_CROSS_FILE, CAPTION_STEP_FILE), (CAPTION_CROSS_FILE, CAPTION_STEP_FILE, CAPTION_FULL_FILE)


def export_caption_onnx(decoder: CaptionDecoder, out_dir: str | Path, memory_len: int = 64, files: Sequence[str] = ALL_FILES) -> dict[str, Path]:
    """Write the graphs named in ``files`` (default: both forms; ``KV_CACHE_FILES`` is what ships)
    into ``out_dir``; returns file name -> path."""
    import torch
    from torch import nn

    was_training = decoder.training
    decoder.eval()
    batch, past = 2, 3  # traced with a non-empty cache so its length stays a dynamic axis
    head_dim = decoder.dim // decoder.heads
    memory = torch.randn(batch, memory_len, decoder.dim)
    cross_k, cross_v = decoder.cross_keys_values(memory)
    cache = torch.randn(len(decoder.layers), batch, decoder.heads, past, head_dim)

    class Wrap(nn.Module):  # the decoder as a registered child, so its weights export as initializers
        def __init__(self, method: str):
            super().__init__()
            self.decoder, self.method = decoder, method
            self.eval()  # the exporter restores the wrapper's mode afterwards, and with it the decoder's

        def forward(self, *args: torch.Tensor) -> Any:
            return getattr(self.decoder, self.method)(*args)

    kv_axes = {1: "batch", 3: "memory"}
    graphs = {
        CAPTION_CROSS_FILE: lambda: graph_bytes(
            Wrap("cross_keys_values"),
            (memory,),
            ["memory"],
            ["cross_k", "cross_v"],
            {"memory": {0: "batch", 1: "memory"}, "cross_k": kv_axes, "cross_v": kv_axes},
        ),
        CAPTION_STEP_FILE: lambda: graph_bytes(
            Wrap("step"),
            (torch.full((batch, 1), BOS_ID), cache, cache.clone(), cross_k, cross_v),
            ["token", "past_k", "past_v", "cross_k", "cross_v"],
            ["logits", "present_k", "present_v"],
            {
                "token": {0: "batch"},
                "past_k": {1: "batch", 3: "past"},
                "past_v": {1: "batch", 3: "past"},
                "cross_k": kv_axes,
                "cross_v": kv_axes,
                "logits": {0: "batch"},
                "present_k": {1: "batch", 3: "present"},
                "present_v": {1: "batch", 3: "present"},
            },
        ),
        CAPTION_FULL_FILE: lambda: graph_bytes(
            Wrap("forward"),
            (torch.full((batch, decoder.max_len), PAD_ID), memory),
            ["tokens", "memory"],
            ["logits"],
            {"tokens": {0: "batch"}, "memory": {0: "batch", 1: "memory"}, "logits": {0: "batch"}},
        ),
    }
    unknown = sorted(set(files) - set(graphs))
    if unknown:
        raise ValueError(f"caption graphs {unknown} unknown; allowed: {', '.join(graphs)}")
    data = {name: graphs[name]() for name in files}
    decoder.train(was_training)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, graph in data.items():
        (out_dir / name).write_bytes(graph)
        paths[name] = out_dir / name
    return paths


class FixedLengthGreedy:
    """Greedy decoding through caption_full.onnx, the whole token buffer every step (form b)."""

    def __init__(self, model_dir: str | Path, threads: int | None = None):
        self.full = session(Path(model_dir) / CAPTION_FULL_FILE, threads)
        self.max_len = int(self.full.get_inputs()[0].shape[1])

    def __call__(self, memory: np.ndarray, max_tokens: int, stop_at_eos: bool = True) -> GreedyResult:
        batch = memory.shape[0]
        if max_tokens >= self.max_len:
            raise ValueError(f"fixed-length decode holds {self.max_len - 1} tokens after <bos>, asked for {max_tokens}")
        memory = memory.astype(np.float32)
        tokens = np.full((batch, self.max_len), PAD_ID, np.int64)
        tokens[:, 0] = BOS_ID
        steps, done = [], np.zeros(batch, bool)
        for t in range(max_tokens):
            (logits,) = self.full.run(None, {"tokens": tokens, "memory": memory})
            steps.append(logits[:, t])
            tokens[:, t + 1] = next_token(logits[:, t])
            done |= tokens[:, t + 1] == EOS_ID
            if stop_at_eos and done.all():
                break
        generated = tokens[:, 1 : len(steps) + 1]
        return GreedyResult([strip(row) for row in generated.tolist()], generated, np.stack(steps, axis=1))


def time_greedy(
    model_dir: str | Path, batch: int, memory_len: int, dim: int, tokens: int = 20, repeats: int = 20, threads: int | None = None, seed: int = 0
) -> dict[str, float]:
    """Median milliseconds to greedily decode exactly ``tokens`` tokens (no early stop), per form."""
    memory = np.random.default_rng(seed).standard_normal((batch, memory_len, dim)).astype(np.float32)
    result = {}
    for name, runner in (("kv_cache", CachedGreedy(model_dir, threads)), ("fixed_length", FixedLengthGreedy(model_dir, threads))):
        runner(memory, tokens, stop_at_eos=False)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            runner(memory, tokens, stop_at_eos=False)
            times.append(time.perf_counter() - start)
        result[name] = 1000 * float(np.median(times))
    return result
