"""A worked example (docs/architecture.md): a new engine backend is this one file in rtaudio/runtime/engines/.

``engine: {type: constant, score: 0.3}`` answers every window with the same score: a stand-in for
wiring tests. A real backend loads ``model.onnx`` (or its own format) in ``open``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from rtaudio.config.base import EngineBase
from rtaudio.contract import ModelDir
from rtaudio.runtime.engines.base import Engine


class ConstantConfig(EngineBase):
    """``engine: constant``."""

    type: Literal["constant"] = Field(title="Engine type")
    score: float = Field(0.5, title="Score of every label", ge=0, le=1)


class ConstantEngine(Engine):
    """Every label scores ``score``; never chosen by ``auto`` (priority below every real backend)."""

    name: ClassVar[str] = "constant"
    priority: ClassVar[int] = -1
    config_class = ConstantConfig

    def __init__(self, model: ModelDir, score: float = 0.5):
        super().__init__(model)
        self.score = score

    @classmethod
    def from_config(cls, config: Any, model: ModelDir) -> ConstantEngine:
        return cls(model, config.score)

    @classmethod
    def available(cls, model: ModelDir) -> tuple[bool, str]:
        return True, "needs nothing"

    def open(self) -> None:
        pass

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {"scores": np.full((len(batch), len(self.model.info.labels)), self.score, dtype=np.float32)}
