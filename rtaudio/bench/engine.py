"""Engine alone: windows/s and ms per batch of every usable backend at batch 1, 2, 4, ..., max.

Backends come from the runtime's engine registry and their own ``available()``; a backend
with several devices is timed once per device present (ONNX Runtime CUDA and CPU providers,
torch cuda and cpu), so one run compares them all.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtaudio.contract import ModelDir
from rtaudio.runtime.engines import Engine, EngineError, OnnxRuntimeEngine, TorchEngine

log = logging.getLogger(__name__)

WARMUP_CALLS = 3  # TorchScript's profiling executor specialises over the first calls of each shape
MIN_CALLS = 3
MIN_PAIRS = 5  # enough for a median and quartiles of the per-pair ratios


@dataclass(frozen=True)
class Candidate:
    """One backend on one device, as timed: ``id`` like ``onnxruntime-cpu``."""

    id: str
    cls: type[Engine]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def create(self, model: ModelDir) -> Engine:
        return self.cls(model, **self.kwargs)


@dataclass
class EnginePoint:
    """Timing of one backend at one batch size (median over the calls)."""

    backend: str
    engine: str  # what actually ran (the engine's description, e.g. the execution provider)
    batch: int
    ms_per_batch: float
    windows_per_s: float
    calls: int


@dataclass
class PairedPoint:
    """Two engines timed in alternation at one batch size: medians over the pairs."""

    batch: int
    a_ms: float  # median ms per batch of the first engine
    b_ms: float  # median ms per batch of the second
    ratio: float  # median over the pairs of a ms / b ms
    ratio_p25: float
    ratio_p75: float
    pairs: int


@dataclass
class EngineBench:
    points: list[EnginePoint]
    skipped: dict[str, str]  # backend -> why it was not timed


def batch_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to ``max_batch`` (included even when not a power of two)."""
    if max_batch < 1:
        raise ValueError(f"max batch {max_batch} must be at least 1")
    sizes = [1]
    while sizes[-1] * 2 <= max_batch:
        sizes.append(sizes[-1] * 2)
    return sizes if sizes[-1] == max_batch else sizes + [max_batch]


def _devices(cls: type[Engine]) -> tuple[list[Candidate], dict[str, str]]:
    """The devices a usable backend can run on here; one candidate each."""
    if issubclass(cls, OnnxRuntimeEngine):
        import onnxruntime as ort

        present = ort.get_available_providers()
        found, missing = [], {}
        for provider, device in (("CUDAExecutionProvider", "cuda"), ("CPUExecutionProvider", "cpu")):
            if provider in present:
                found.append(Candidate(f"{cls.name}-{device}", cls, {"providers": [provider]}))
            else:
                missing[f"{cls.name}-{device}"] = f"this onnxruntime build has no {provider}"
        return found, missing
    if issubclass(cls, TorchEngine):
        import torch

        cuda = torch.cuda.is_available()
        found = [Candidate(f"{cls.name}-cpu", cls, {"device": "cpu"})] + ([Candidate(f"{cls.name}-cuda", cls, {"device": "cuda"})] if cuda else [])
        return found, {} if cuda else {f"{cls.name}-cuda": "torch.cuda.is_available() is False"}
    return [Candidate(cls.name, cls)], {}


def candidates(model: ModelDir, wanted: Sequence[str] | None = None) -> tuple[list[Candidate], dict[str, str]]:
    """Usable backend/device pairs, highest engine priority first, and why the others are left out.

    ``wanted`` filters by engine name (``onnxruntime``) or candidate id (``onnxruntime-cpu``).
    """
    names = sorted(Engine.registry)
    for item in wanted or ():
        if item.split("-")[0] not in Engine.registry:
            raise ValueError(f"unknown backend {item!r}; expected one of {', '.join(names)} (optionally with -cpu or -cuda)")
    found: list[Candidate] = []
    skipped: dict[str, str] = {}
    for cls in sorted(Engine.registry.values(), key=lambda c: -c.priority):
        ok, why = cls.available(model)
        if not ok:
            skipped[cls.name] = why
            continue
        devices, missing = _devices(cls)
        found += devices
        skipped.update(missing)
    if wanted:
        found = [c for c in found if _selected(c.id, wanted)]
        skipped = {k: v for k, v in skipped.items() if _selected(k, wanted)}
    return found, skipped


def _selected(key: str, wanted: Sequence[str]) -> bool:
    return any(key == w or key.split("-")[0] == w for w in wanted)


def _rounds(engines: Sequence[Engine], window: int, batches: Sequence[int], seconds: float, minimum: int, seed: int) -> Iterator[tuple[int, list[list[float]]]]:
    """For each batch size: the engines called in turn on the same random batch (after warm-up) for about
    ``seconds`` and at least ``minimum`` rounds; yields (batch, each engine's ms per call)."""
    rng = np.random.default_rng(seed)
    for batch in batches:
        x = (0.1 * rng.standard_normal((batch, window))).astype(np.float32)
        for _ in range(WARMUP_CALLS):
            for engine in engines:
                engine.infer(x)
        times: list[list[float]] = [[] for _ in engines]
        deadline = time.perf_counter() + seconds
        while len(times[0]) < minimum or time.perf_counter() < deadline:
            for engine, own in zip(engines, times):
                engine.infer(x)
                own.append(engine.last_ms)
        yield batch, times


def time_batches(engine: Engine, window: int, batches: Sequence[int], seconds: float, seed: int = 0) -> list[tuple[int, float, int]]:
    """(batch, median ms per call, calls) for each batch size, each timed for about ``seconds``."""
    return [(batch, statistics.median(own), len(own)) for batch, (own,) in _rounds([engine], window, batches, seconds, MIN_CALLS, seed)]


def time_pairs(a: Engine, b: Engine, window: int, batches: Sequence[int], seconds: float, seed: int = 0) -> list[PairedPoint]:
    """``a`` and ``b`` called in turn (a b a b ...) on the same batch for about ``seconds`` per batch size.

    Both halves of a pair run within milliseconds of each other, so a slow drift in the
    machine's load (a neighbour's job) scales both and cancels in the pair's ratio, where it
    would not between two medians timed one after the other.
    """
    return [paired_point(batch, a_ms, b_ms) for batch, (a_ms, b_ms) in _rounds([a, b], window, batches, seconds, MIN_PAIRS, seed)]


def paired_point(batch: int, a_ms: Sequence[float], b_ms: Sequence[float]) -> PairedPoint:
    """Medians of both engines' times and the median and quartiles of the per-pair ratios ``a / b``."""
    if not a_ms or len(a_ms) != len(b_ms):
        raise ValueError(f"need as many times of a as of b, at least one each; got {len(a_ms)} and {len(b_ms)}")
    per_pair = np.asarray(a_ms) / np.asarray(b_ms)
    p25, p50, p75 = np.percentile(per_pair, [25, 50, 75])
    return PairedPoint(batch, statistics.median(a_ms), statistics.median(b_ms), float(p50), float(p25), float(p75), len(per_pair))


def bench_engines(model: ModelDir, backends: Sequence[str] | None, max_batch: int, seconds: float) -> EngineBench:
    """Time every usable backend (or those in ``backends``) on ``model`` at batch 1..``max_batch``."""
    found, skipped = candidates(model, backends)
    points: list[EnginePoint] = []
    for candidate in found:
        engine = candidate.create(model)
        try:
            engine.open()
        except EngineError as exc:
            skipped[candidate.id] = f"could not open: {exc}"
            continue
        try:
            log.info("bench: timing %s (%s) at batch %s", candidate.id, engine.description, batch_sizes(max_batch))
            for batch, ms, calls in time_batches(engine, model.info.window_samples, batch_sizes(max_batch), seconds):
                points.append(EnginePoint(candidate.id, engine.description, batch, float(f"{ms:.4g}"), round(1000 * batch / ms, 1), calls))
        finally:
            engine.close()
    return EngineBench(points, skipped)
