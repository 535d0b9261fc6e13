"""Inference backends behind one interface, and ``engine: auto`` selection."""

from __future__ import annotations

import logging

from rtaudio.config import AutoEngine, EngineConfig, OnnxRuntimeEngine as OrtConfig, TensorRtEngine as TrtConfig, TorchEngine as TorchConfig
from rtaudio.contract import ModelDir
from rtaudio.runtime.engines.base import Engine, EngineError
from rtaudio.runtime.engines.onnxruntime import OnnxRuntimeEngine
from rtaudio.runtime.engines.tensorrt import TensorRtEngine
from rtaudio.runtime.engines.torch import TorchEngine

log = logging.getLogger(__name__)


def create_engine(config: EngineConfig, model: ModelDir) -> Engine:
    """The configured backend (not yet opened); ``auto`` takes the highest-priority usable one.

    ``auto`` order: TensorRT (a GPU, and a plan present or buildable) > ONNX Runtime (its CUDA
    provider, then CPU) > torch; the choice and why each higher one was skipped are logged.
    """
    if isinstance(config, OrtConfig):
        return OnnxRuntimeEngine(model, config.providers, config.intra_op_threads)
    if isinstance(config, TrtConfig):
        ok, why = TensorRtEngine.available(model)
        if not ok:
            raise EngineError(f"engine tensorrt is not usable: {why}")
        return TensorRtEngine(model, config.precision, config.max_batch, config.workspace_mb,
                              config.plan_dir, config.calibration, config.timing_cache)
    if isinstance(config, TorchConfig):
        ok, why = TorchEngine.available(model)
        if not ok:
            raise EngineError(f"engine torch is not usable: {why}")
        return TorchEngine(model, config.device)
    assert isinstance(config, AutoEngine)
    reasons = []
    for cls in sorted(Engine.registry.values(), key=lambda c: -c.priority):
        ok, why = cls.available(model)
        if ok:
            log.info("engine auto: chose %s (%s)%s", cls.name, why, f"; skipped {'; '.join(reasons)}" if reasons else "")
            return cls(model)
        reasons.append(f"{cls.name}: {why}")
    raise EngineError(f"engine auto: no backend can run {model.path}: {'; '.join(reasons)}")


__all__ = ["Engine", "EngineError", "OnnxRuntimeEngine", "TensorRtEngine", "TorchEngine", "create_engine"]
