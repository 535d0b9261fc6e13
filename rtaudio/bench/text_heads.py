"""Text heads alone, on ONNX Runtime CPU: caption latency, query scoring overhead, query embedding.

Threads as the runtime sets them: the caption decoder with ``captions.threads`` (default 1),
the audio-text space with ONNX Runtime's default. Captions decode real audio (``config/demo.flac``
cut into caption windows) to ``<eos>``, so their lengths are real ones. Query scoring is
reported next to the tagging engine's own ms per batch at the same batch size, from this run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rtaudio.audiofile import read_mono
from rtaudio.bench.engine import WARMUP_CALLS, time_batches
from rtaudio.contract import ModelDir
from rtaudio.contract.files import CAPTION_FILES, QUERY_FILES
from rtaudio.runtime.engines import OnnxRuntimeEngine

DEMO_AUDIO = Path(__file__).resolve().parents[2] / "config" / "demo.flac"
CAPTION_BATCHES = (1, 4)
SCORING_BATCHES = (1, 8, 32)
QUERIES = 8
CAPTION_THREADS = 1  # the runtime's default captions.threads


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall milliseconds of ``fn()`` over ``repeats`` calls after ``WARMUP_CALLS`` unmeasured ones."""
    if repeats < 1:
        raise ValueError(f"repeats {repeats} must be at least 1")
    for _ in range(WARMUP_CALLS):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def caption_clips(path: Path, sample_rate: int, samples: int, count: int) -> np.ndarray:
    """``[count, samples]``: consecutive caption windows of the file (wrapping round when it is short)."""
    audio = read_mono(path, sample_rate)
    if audio.size < samples:
        audio = np.pad(audio, (0, samples - audio.size))
    whole = audio[: audio.size // samples * samples].reshape(-1, samples)
    return whole[np.arange(count) % len(whole)]


def bench_captions(model: ModelDir, audio: Path, repeats: int, batches: Sequence[int] = CAPTION_BATCHES) -> list[dict[str, Any]]:
    """Per batch size B: the same ``max(batches)`` clips captioned B at a time (so the batch sizes
    compare on equal captions); encode and decode ms per call (mean over the calls, each a median),
    decode steps per call, tokens per caption, ms per caption."""
    from rtaudio.runtime.text_heads import Captioner

    captioner = Captioner(model.path, threads=CAPTION_THREADS)
    count = max(batches)
    if any(count % b for b in batches):
        raise ValueError(f"caption batch sizes {list(batches)} must all divide the largest, {count}")
    clips = caption_clips(audio, model.info.sample_rate, captioner.samples, count)
    rows = []
    for batch in batches:
        encode, decode, steps, tokens, captions = [], [], [], [], []
        for x in clips.reshape(count // batch, batch, -1):
            memory, _ = captioner.encode(x)
            result = captioner.greedy(memory)
            encode.append(median_ms(partial(captioner.encode, x), repeats))
            decode.append(median_ms(partial(captioner.greedy, memory), repeats))
            steps.append(int(result.generated.shape[1]))
            tokens += [len(t) for t in result.tokens]
            captions += [captioner.tokenizer.decode(t) for t in result.tokens]
        rows.append(
            {
                "batch": batch,
                "memory_frames": int(memory.shape[1]),
                "encode_ms": round(statistics.mean(encode), 2),
                "decode_ms": round(statistics.mean(decode), 2),
                "steps": steps,
                "tokens": tokens,
                "ms_per_caption": round((sum(encode) + sum(decode)) / count, 2),
                "captions": captions,
            }
        )
    return rows


def tagging_ms(model: ModelDir, points: list[dict[str, Any]], batches: Sequence[int], backend: str, seconds: float) -> dict[int, float]:
    """The tagging engine's ms per batch on ONNX Runtime CPU: from ``points`` (this run's engine
    table) where it has the batch, else timed now the same way."""
    have = {p["batch"]: p["ms_per_batch"] for p in points if p["backend"] == backend}
    missing = [b for b in batches if b not in have]
    if missing:
        engine = OnnxRuntimeEngine(model, providers=["CPUExecutionProvider"])
        engine.open()
        try:
            have.update({b: round(ms, 3) for b, ms, _ in time_batches(engine, model.info.window_samples, missing, seconds)})
        finally:
            engine.close()
    return {b: have[b] for b in batches}


def bench_queries(model: ModelDir, repeats: int, tagging: dict[int, float]) -> dict[str, Any]:
    """Embedding one query, and scoring ``QUERIES`` queries per tagging batch (projection + matmul)."""
    from rtaudio.contract.vocab import label_queries
    from rtaudio.runtime.text_heads import TextSpace

    space = TextSpace(model.path)
    texts = label_queries((model.info.labels * QUERIES)[:QUERIES])
    matrix = space.texts(texts)

    def score(embedding: np.ndarray) -> np.ndarray:  # as QuerySet.scores
        return space.audio(embedding) @ matrix.T

    embed = median_ms(lambda: space.texts([texts[0]]), repeats)
    dim = int(model.info.embedding_dim or space.projection.get_inputs()[0].shape[1])
    rng = np.random.default_rng(0)
    rows = []
    for batch, engine_ms in tagging.items():
        embedding = rng.standard_normal((batch, dim)).astype(np.float32)
        ms = median_ms(partial(score, embedding), repeats)
        rows.append({"batch": batch, "scoring_ms": round(ms, 4), "tagging_ms": engine_ms, "ratio": round(ms / engine_ms, 6)})
    return {"queries": QUERIES, "embed_query_ms": round(embed, 3), "scoring": rows}


def bench_text(
    model: ModelDir, points: list[dict[str, Any]], backend: str, repeats: int = 20, seconds: float = 2.0, audio: Path | None = None
) -> dict[str, Any] | None:
    """The "text" section of ``rtaudio bench``; None when the model has no text heads at all."""
    no_captions, no_queries = model.missing(CAPTION_FILES), model.missing(QUERY_FILES)
    if no_captions and no_queries:
        return None
    audio = audio or DEMO_AUDIO
    if not no_captions and not audio.is_file():
        raise FileNotFoundError(f"caption bench audio {audio} is missing; pass --audio with a WAV, FLAC or OGG file")
    result: dict[str, Any] = {"repeats": repeats, "caption_threads": CAPTION_THREADS, "query_threads": "onnxruntime default"}
    if no_captions:
        result["captions_skipped"] = f"missing {', '.join(no_captions)}"
    else:
        result["audio"] = str(audio)
        result["captions"] = bench_captions(model, audio, repeats)
    if no_queries:
        result["queries_skipped"] = f"missing {', '.join(no_queries)}"
    else:
        result.update(bench_queries(model, repeats, tagging_ms(model, points, SCORING_BATCHES, backend, seconds)))
    return result
