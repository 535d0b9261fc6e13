"""The engine base class: ``open``, ``infer(batch) -> outputs``, ``close``.

Threading contract: an engine is used from ONE thread (the pipeline's); nothing else calls
it. ``infer`` takes float32 ``[batch, samples]`` and returns a dict with ``scores``
``[batch, classes]`` (and ``embedding`` when the model has one). Shapes are checked on the
first call; every call's duration is recorded. Subclasses register by ``name``, carry their
settings class (``config_class``, extending ``config.base.EngineBase``, defined beside them),
build themselves from it (``from_config``) and say whether they can run here through
``available()``, which must not raise. A new backend is one new file in this package.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from rtaudio.config.base import EngineBase
from rtaudio.contract import ModelDir


class EngineError(RuntimeError):
    """An engine that cannot open or returned something outside the contract."""


class AutoConfig(EngineBase):
    """``engine: auto``: the highest-priority backend that can run here."""

    type: Literal["auto"] = Field(title="Engine type", description="Pick the best available backend and log why.")


class Engine(ABC):
    """One inference backend bound to one model directory."""

    name: ClassVar[str]
    priority: ClassVar[int] = 0  # higher wins under ``engine: auto``
    registry: ClassVar[dict[str, type[Engine]]] = {}
    config_class: ClassVar[type[EngineBase]]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None):
            Engine.registry[cls.name] = cls

    def __init__(self, model: ModelDir):
        self.model = model
        self.last_ms = 0.0
        self.calls = 0
        self._checked = False

    @classmethod
    def from_config(cls, config: Any, model: ModelDir) -> Engine:
        """The engine with the settings of ``config`` (an instance of ``config_class``), not yet opened."""
        return cls(model)

    @classmethod
    @abstractmethod
    def available(cls, model: ModelDir) -> tuple[bool, str]:
        """(usable here, why or why not) — never raises."""

    @property
    def description(self) -> str:
        """What actually runs (e.g. the execution provider), for logs and health."""
        return self.name

    @abstractmethod
    def open(self) -> None:
        """Load the model; called once before ``infer``."""

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Backend-specific inference on a checked float32 ``[batch, samples]`` array."""

    def close(self) -> None:
        """Release the model and its memory."""

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on ``batch`` (float32 ``[batch, samples]``)."""
        if batch.ndim != 2:
            raise EngineError(f"{self.name}: batch must be [batch, samples], got shape {batch.shape}")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        start = time.perf_counter()
        outputs = self._infer(batch)
        self.last_ms = (time.perf_counter() - start) * 1000
        self.calls += 1
        if not self._checked:
            self._check(batch, outputs)
            self._checked = True
        return outputs

    def _check(self, batch: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        classes = len(self.model.info.labels)
        scores = outputs.get("scores")
        if scores is None or scores.shape != (batch.shape[0], classes):
            got = None if scores is None else scores.shape
            raise EngineError(f"{self.name}: model returned scores {got}; expected ({batch.shape[0]}, {classes}) for {classes} labels")
        emb = outputs.get("embedding")
        dim = self.model.info.embedding_dim
        if emb is not None and dim is not None and emb.shape != (batch.shape[0], dim):
            raise EngineError(f"{self.name}: model returned embedding {emb.shape}; expected ({batch.shape[0]}, {dim})")

    def __enter__(self) -> Engine:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
