"""``rtaudio eval`` for the text heads: captions, audio-text retrieval and zero-shot tagging.

Everything runs through the exported graphs with the runtime's own classes (``Captioner``,
``TextSpace``), so the numbers describe what the device publishes:

- captions: greedy captions of the split's caption clips (caption-only clips, or tagged clips
  with captions when there are none) against all their reference captions: BLEU-1..4,
  ROUGE-L, CIDEr-D, and METEOR/SPICE when their tools are installed (else skipped, with why);
- retrieval: each caption clip's fused embedding vs every reference caption, R@1/5/10 and
  mAP@10 both ways;
- zero-shot tagging: every label's name ("smoke_alarm" -> "smoke alarm") as a free-text query
  against the tagged clips' windows (a clip's similarity: the maximum over its windows, as it
  is scored for tags), top-1 and mAP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rtaudio.contract import ModelDir
from rtaudio.contract.files import CAPTION_AUDIO_FILE
from rtaudio.contract.vocab import label_queries
from rtaudio.runtime.engines.onnxruntime import OnnxRuntimeEngine
from rtaudio.runtime.text_heads import Captioner, TextSpace
from rtaudio.train.caption_metrics import caption_scores, retrieval_scores, zero_shot_tagging
from rtaudio.train.data import Clip, fit_window
from rtaudio.train.windowing import clip_audio, score_clips

BATCH = 16
EXAMPLES = 8


def has_text_heads(model: ModelDir) -> bool:
    return (model.path / CAPTION_AUDIO_FILE).is_file()


def caption_clips(clips: Sequence[Clip]) -> list[Clip]:
    """The clips captions are scored on: caption-only ones, else any with captions."""
    only = [c for c in clips if c.captions and not c.tagged]
    return only or [c for c in clips if c.captions]


def evaluate_text(model: ModelDir, clips: Sequence[Clip], tagged: Sequence[Clip], y: np.ndarray, external: bool = True) -> dict[str, Any]:
    """Caption, retrieval and zero-shot metrics of ``model`` on ``clips`` (one split); ``tagged``/``y``
    are that split's tagged clips and their multi-hot targets."""
    info = model.info
    text = info.extra.get("text", {})
    captioner = Captioner(model.path)
    space = TextSpace(model.path)
    out: dict[str, Any] = {"query_threshold": text.get("query_threshold")}
    chosen = caption_clips(clips)
    if chosen:
        generated, embeddings = [], []
        for start in range(0, len(chosen), BATCH):
            batch = np.stack([fit_window(clip_audio(c, info.sample_rate), captioner.samples, random=False) for c in chosen[start : start + BATCH]]).astype(
                np.float32
            )
            memory, embedding = captioner.encode(batch)
            generated += captioner.describe(memory)
            embeddings.append(embedding)
        references = [c.captions for c in chosen]
        scores = caption_scores(generated, references, external=external)
        texts = [caption for refs in references for caption in refs]
        owner = [i for i, refs in enumerate(references) for _ in refs]
        sim = space.audio(np.concatenate(embeddings)) @ space.texts(texts).T
        out["captions"] = {
            "clips": len(chosen),
            "references": len(texts),
            **scores.row(),
            "skipped": scores.skipped(),
            "examples": [{"generated": g, "references": r} for g, r in zip(generated[:EXAMPLES], references)],
        }
        out["retrieval"] = {"clips": len(chosen), "captions": len(texts), **retrieval_scores(sim, owner)}
    if len(tagged) and y.any():
        names = space.texts(label_queries(info.labels))
        engine = OnnxRuntimeEngine(model, providers=["CPUExecutionProvider"])
        engine.open()
        try:
            sims = score_clips(tagged, model, lambda batch: {"sim": space.audio(engine.infer(batch)["embedding"]) @ names.T})["sim"]
        finally:
            engine.close()
        labelled = y.sum(axis=1) > 0  # top-1 asks for a best class: only clips that have one
        out["zero_shot"] = {"clips": int(labelled.sum()), "queries": label_queries(info.labels), **zero_shot_tagging(sims[labelled], y[labelled])}
    return out
