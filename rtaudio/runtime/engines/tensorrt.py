"""TensorRT backend: this GPU's plan of ``model.onnx`` (built on first start, reused after), run by ``PlanRunner``.

A thin adaptor: plan naming, building and running live in ``rtaudio.tensorrt``; this file maps
their errors to ``EngineError`` and says whether TensorRT can run here. tensorrt and cuda-python
are imported lazily (``rtaudio/tensorrt/cuda.py`` says why not torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from rtaudio.config.base import EngineBase
from rtaudio.config.loader import resolve_path
from rtaudio.contract import ModelDir
from rtaudio.runtime.engines.base import Engine, EngineError
from rtaudio.tensorrt.cuda import CudaError, NvidiaUnavailable
from rtaudio.tensorrt.plan import PlanError, Precision
from rtaudio.tensorrt.runner import PlanRunner, RunnerError


class TensorRtConfig(EngineBase):
    """``engine: tensorrt``."""

    type: Literal["tensorrt"] = Field(title="Engine type", description="A TensorRT plan for this GPU (Jetson, NVIDIA GPUs); built from model.onnx on first start when missing, reused after.")
    precision: Literal["fp32", "fp16", "int8"] = Field("fp16", title="Plan precision", description="fp16 suits Jetson; int8 needs calibration audio. The exporter's FP16-unsafe nodes stay fp32.")
    max_batch: int = Field(32, title="Largest batch in the plan", ge=1, le=1024, description="The plan serves batches 1..max_batch; larger ones are split. Match window.max_batch.")
    workspace_mb: int = Field(1024, title="Builder workspace (MB)", ge=16, le=65536, description="Scratch memory TensorRT may use while building and running; lower it on small Jetsons.")
    plan_dir: Path | None = Field(None, title="Plan directory", description="Where plans, their sidecars and caches live; null uses the model directory. Relative to the config file.")
    calibration: Path | None = Field(None, title="INT8 calibration audio", description="Folder of WAV/FLAC/OGG files cut into model windows; required for int8. Relative to the config file.")
    timing_cache: Path | None = Field(None, title="Timing cache file", description="Layer timings reused across builds; null keeps a per-GPU cache in the plan directory.")

    @model_validator(mode="after")
    def _int8_needs_audio(self) -> TensorRtConfig:
        if self.precision == "int8" and self.calibration is None:
            raise ValueError("precision int8 needs calibration: a folder of audio files to calibrate on; or use fp16 or fp32")
        return self

    def resolve_paths(self, base: Path, where: str) -> list[str]:
        for name in ("plan_dir", "calibration", "timing_cache"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, resolve_path(base, value))
        if self.calibration is not None and not self.calibration.is_dir():
            return [f"{where}.calibration: {self.calibration} is not a directory; expected a folder of audio files"]
        return []


class TensorRtEngine(Engine):
    """Runs this GPU's TensorRT plan of ``model.onnx``, building it when missing."""

    name: ClassVar[str] = "tensorrt"
    config_class = TensorRtConfig
    priority: ClassVar[int] = 30

    def __init__(self, model: ModelDir, precision: Precision = "fp16", max_batch: int = 32, workspace_mb: int = 1024,
                 plan_dir: Path | None = None, calibration: Path | None = None, timing_cache: Path | None = None):
        super().__init__(model)
        self.precision: Precision = precision
        self.max_batch = max_batch
        self.workspace_mb = workspace_mb
        self.plan_dir = Path(plan_dir) if plan_dir is not None else model.path
        self.calibration = calibration
        self.timing_cache = timing_cache
        self.runner: PlanRunner | None = None
        self.plan_path: Path | None = None  # the plan in use, kept after close for logs

    @classmethod
    def from_config(cls, config: Any, model: ModelDir) -> TensorRtEngine:
        return cls(model, config.precision, config.max_batch, config.workspace_mb, config.plan_dir, config.calibration, config.timing_cache)

    @classmethod
    def available(cls, model: ModelDir) -> tuple[bool, str]:
        from rtaudio.tensorrt.build import plan_key

        try:
            _, key = plan_key(model, "fp16", 32)
        except (NvidiaUnavailable, CudaError) as exc:
            return False, str(exc)
        except Exception as exc:  # noqa: BLE001 (available() must never raise)
            return False, f"TensorRT could not be checked: {exc!r}"
        plan = model.path / key.filename
        state = f"plan {plan.name} present" if plan.is_file() else "no plan yet: built from model.onnx on first start"
        return True, f"TensorRT {key.tensorrt} on {key.gpu} (sm {key.compute_capability}); {state}"

    @property
    def description(self) -> str:
        return f"{self.name}:{self.precision}" + (f":{self.plan_path.name}" if self.plan_path else "")

    def open(self) -> None:
        from rtaudio.tensorrt.build import ensure_plan

        try:
            trt, key, path = ensure_plan(self.model, self.precision, self.max_batch, self.workspace_mb,
                                         self.plan_dir, self.calibration, self.timing_cache)
            runner = PlanRunner(trt, path, key, self.model.info.window_samples)
            runner.open()
        except (NvidiaUnavailable, CudaError, PlanError, RunnerError) as exc:
            raise EngineError(f"tensorrt: {exc}") from None
        self.runner, self.plan_path = runner, path

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.runner is None:
            raise EngineError("tensorrt: open() first")
        try:
            return self.runner.infer(batch)
        except RunnerError as exc:
            raise EngineError(f"tensorrt: {exc}") from None

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None
