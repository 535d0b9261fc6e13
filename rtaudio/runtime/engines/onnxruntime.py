"""ONNX Runtime backend: CPU everywhere, the CUDA provider when the installed build has it."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from rtaudio.config.base import EngineBase
from rtaudio.contract import ModelDir
from rtaudio.runtime.engines.base import Engine, EngineError

log = logging.getLogger(__name__)

Provider = Literal["CUDAExecutionProvider", "CPUExecutionProvider"]
DEFAULT_PROVIDERS: tuple[Provider, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeConfig(EngineBase):
    """``engine: onnxruntime``."""

    type: Literal["onnxruntime"] = Field(title="Engine type")
    providers: list[Provider] = Field(
        default_factory=lambda: list(DEFAULT_PROVIDERS),
        title="Execution providers", description="Tried in order; absent ones are skipped and logged.")
    intra_op_threads: int = Field(0, title="Intra-op threads", ge=0, le=256, description="0 lets ONNX Runtime decide.")


class OnnxRuntimeEngine(Engine):
    """Runs ``model.onnx`` in an ``onnxruntime.InferenceSession``."""

    name: ClassVar[str] = "onnxruntime"
    config_class = OnnxRuntimeConfig
    priority: ClassVar[int] = 20

    def __init__(self, model: ModelDir, providers: list[str] | None = None, intra_op_threads: int = 0):
        super().__init__(model)
        self.providers = list(providers or DEFAULT_PROVIDERS)
        self.intra_op_threads = intra_op_threads
        self._session: Any = None
        self._input = ""
        self._outputs: list[str] = []

    @classmethod
    def from_config(cls, config: Any, model: ModelDir) -> OnnxRuntimeEngine:
        return cls(model, config.providers, config.intra_op_threads)

    @classmethod
    def available(cls, model: ModelDir) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return False, f"onnxruntime is not installed ({exc})"
        return True, f"onnxruntime {ort.__version__} with {', '.join(ort.get_available_providers())}"

    @property
    def description(self) -> str:
        provider = self._session.get_providers()[0] if self._session else "not open"
        return f"{self.name}:{provider}"

    def open(self) -> None:
        import onnxruntime as ort

        present = set(ort.get_available_providers())
        chosen = [p for p in self.providers if p in present]
        for skipped in (p for p in self.providers if p not in present):
            log.info("onnxruntime: %s not available in this build; skipped", skipped)
        if not chosen:
            raise EngineError(f"onnxruntime: none of the providers {self.providers} is available; this build has {sorted(present)}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(self.model.onnx_path), options, providers=chosen)
        except Exception as exc:  # ORT raises its own exception types
            raise EngineError(f"onnxruntime could not load {self.model.onnx_path}: {exc}") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise EngineError(f"{self.model.onnx_path}: expected one waveform input, found {[i.name for i in inputs]}")
        self._input = inputs[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        if "scores" not in self._outputs:
            raise EngineError(f"{self.model.onnx_path}: no output named 'scores' (outputs: {self._outputs})")

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        assert self._session is not None, "open() first"
        values = self._session.run(self._outputs, {self._input: batch})
        return dict(zip(self._outputs, values))

    def close(self) -> None:
        self._session = None
