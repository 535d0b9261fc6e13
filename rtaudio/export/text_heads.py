"""The text heads of a ``FusedTagger`` -> ONNX graphs and vocabularies next to model.onnx.

Written only after each graph matched PyTorch on ONNX Runtime (tolerances below):

- caption_audio.onnx  ``waveform [B, caption window]`` -> ``memory [B, S, D]`` (the decoder's
  view of every stream's frames) and ``embedding [B, E]`` (the clip's fused embedding);
- caption_cross.onnx, caption_step.onnx: the KV-cache decoder (``export.caption_onnx``); greedy
  decoding through them must give PyTorch's tokens;
- text_encoder.onnx ``ids, mask [B, L]`` -> ``embedding [B, D]`` and audio_text.onnx
  ``embedding [B, E]`` -> ``audio [B, D]``: the audio-text space, unit vectors;
- tokenizer.json (caption BPE) and vocab.json (query words).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rtaudio.contract.files import AUDIO_TEXT_FILE, CAPTION_AUDIO_FILE, TEXT_ENCODER_FILE
from rtaudio.contract.tokenizer import BOS_ID
from rtaudio.runtime.text_heads import CachedGreedy, session

if TYPE_CHECKING:
    from rtaudio.model.text_encoder import TextEncoder

# |ONNX Runtime - PyTorch|, absolute. The memory holds the timbre stream's frames, whose float32
# power moments (up to ~4e7) round differently in the two runtimes: ~1e-2 on single frames (the
# pooled embedding, an average, stays near 1e-4). What must hold is the caption: greedy decoding
# on ONNX Runtime's memory must choose PyTorch's tokens, and the logits stay within LOGIT_ATOL.
MEMORY_ATOL, EMBEDDING_ATOL, LOGIT_ATOL, SPACE_ATOL = 5e-2, 1e-3, 1e-3, 1e-4
PARITY_QUERIES = ("a smoke alarm beeps", "water dripping or leaking", "someone knocks on a door, then a dog barks", "glass", "a quiet room")


def export_text_heads(model: Any, out: str | Path, clips: np.ndarray, opset: int = 17) -> dict[str, Any]:
    """Write the graphs and vocabularies of ``model.text`` into ``out``; returns their model.json entry.

    ``model`` is an eval-mode CPU copy; ``clips [n, caption window samples]`` are the real audio
    the parity checks run on. Raises ``ExportError`` (nothing of the heads written) when a graph
    disagrees with PyTorch.
    """
    import torch
    from torch import nn

    from rtaudio.export.caption_onnx import KV_CACHE_FILES, export_caption_onnx
    from rtaudio.export.graph import ExportError, graph_bytes

    heads = model.text
    config = model.config.text
    samples = clips.shape[1]

    class CaptionAudio(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.model.run(waveform)
            return heads.memory(out.streams), out.embedding

    wrapper = CaptionAudio().eval()
    graphs = {
        CAPTION_AUDIO_FILE: graph_bytes(
            wrapper,
            (torch.zeros(2, samples),),
            ["waveform"],
            ["memory", "embedding"],
            {"waveform": {0: "batch"}, "memory": {0: "batch"}, "embedding": {0: "batch"}},
            opset,
        ),
        AUDIO_TEXT_FILE: graph_bytes(
            heads.space.audio,
            (torch.zeros(2, heads.space.audio.net[0].normalized_shape[0]),),
            ["embedding"],
            ["audio"],
            {"embedding": {0: "batch"}, "audio": {0: "batch"}},
            opset,
        ),
        TEXT_ENCODER_FILE: export_text_encoder(heads.space.text, opset=opset),
    }
    x = torch.from_numpy(np.ascontiguousarray(clips, dtype=np.float32))
    with torch.no_grad():
        memory, embedding = wrapper(x)
        queries = heads.vocab.encode(list(PARITY_QUERIES))
        text = heads.space.text(*(torch.from_numpy(a) for a in queries))
        audio = heads.space.audio(embedding)
        tokens = heads.decoder.greedy(memory, config.max_tokens - 1)
    parity: dict[str, float] = {}
    import onnxruntime as ort

    run = {name: ort.InferenceSession(data, providers=["CPUExecutionProvider"]) for name, data in graphs.items()}
    got_memory, got_embedding = run[CAPTION_AUDIO_FILE].run(None, {"waveform": x.numpy()})
    parity["memory"] = float(np.abs(got_memory - memory.numpy()).max())
    parity["embedding"] = float(np.abs(got_embedding - embedding.numpy()).max())
    parity["text_encoder"] = float(np.abs(run[TEXT_ENCODER_FILE].run(None, {"ids": queries[0], "mask": queries[1]})[0] - text.numpy()).max())
    parity["audio_text"] = float(np.abs(run[AUDIO_TEXT_FILE].run(None, {"embedding": embedding.numpy()})[0] - audio.numpy()).max())

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    decoder = heads.decoder  # ``model`` is already the caller's eval-mode copy
    export_caption_onnx(decoder, root, memory_len=memory.shape[1], files=KV_CACHE_FILES)
    greedy = CachedGreedy(root)(got_memory, config.max_tokens - 1)  # end to end: ONNX Runtime's memory too
    with torch.no_grad():  # the logits PyTorch gives for the tokens ONNX Runtime chose
        prefix = torch.cat([torch.full((len(x), 1), BOS_ID), torch.from_numpy(greedy.generated[:, :-1])], dim=1)
        parity["decoder_logits"] = float(np.abs(decoder(prefix, memory).numpy() - greedy.logits).max())
    parity["caption_tokens_equal"] = float(np.mean([a == b for a, b in zip(greedy.tokens, tokens)]))
    limits = {"memory": MEMORY_ATOL, "embedding": EMBEDDING_ATOL, "text_encoder": SPACE_ATOL, "audio_text": SPACE_ATOL, "decoder_logits": LOGIT_ATOL}
    bad = [f"{k} {parity[k]:.2e} > {v:g}" for k, v in limits.items() if parity[k] > v]
    if parity["caption_tokens_equal"] < 1.0:
        bad.append(f"greedy captions differ on {1 - parity['caption_tokens_equal']:.0%} of clips")
    if bad:
        for name in KV_CACHE_FILES:
            (root / name).unlink(missing_ok=True)
        raise ExportError(f"text heads: ONNX Runtime disagrees with PyTorch: {'; '.join(bad)}")
    for name, data in graphs.items():
        (root / name).write_bytes(data)
    heads.tokenizer.save(root)
    heads.vocab.save(root)
    session(root / CAPTION_AUDIO_FILE)  # the written file loads
    return {
        "caption_window_s": config.caption_window_s,
        "max_tokens": config.max_tokens,
        "shared_dim": config.shared_dim,
        "parity": {**parity, "clips": len(clips), "tolerance": limits},
    }


def export_text_encoder(encoder: TextEncoder, path: str | Path | None = None, opset: int = 17) -> bytes:
    """ONNX graph ``ids, mask -> embedding`` with dynamic batch and length; written to ``path`` when given.

    Exported from an eval-mode CPU copy, so dropout is off and the caller's module is untouched.
    """
    import copy

    import torch

    from rtaudio.contract.vocab import UNK_ID
    from rtaudio.export.graph import graph_bytes

    model = copy.deepcopy(encoder).cpu().eval()
    ids = torch.full((2, 5), UNK_ID, dtype=torch.int64)
    mask = torch.ones(2, 5, dtype=torch.int64)
    axes = {"ids": {0: "batch", 1: "length"}, "mask": {0: "batch", 1: "length"}, "embedding": {0: "batch"}}
    data = graph_bytes(model, (ids, mask), ["ids", "mask"], ["embedding"], axes, opset)
    if path is not None:
        Path(path).write_bytes(data)
    return data
