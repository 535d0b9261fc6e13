"""Inference backends behind one interface, and ``engine: auto`` selection.

Every module in this package registers its ``Engine`` subclass (and its config class) on import,
so a new backend is one new file here.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from typing import Any

from rtaudio.config.base import EngineBase
from rtaudio.contract import ModelDir
from rtaudio.runtime.engines.base import AutoConfig, Engine, EngineError

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

from rtaudio.runtime.engines.onnxruntime import OnnxRuntimeEngine  # noqa: E402  (registered above; re-exported)
from rtaudio.runtime.engines.tensorrt import TensorRtEngine  # noqa: E402
from rtaudio.runtime.engines.torch import TorchEngine  # noqa: E402

log = logging.getLogger(__name__)


def engine_configs() -> tuple[type[EngineBase], ...]:
    """``auto`` and every registered backend's config class (the site schema's ``engine`` union)."""
    return (AutoConfig, *(Engine.registry[name].config_class for name in sorted(Engine.registry)))


def create_engine(config: Any, model: ModelDir) -> Engine:
    """The configured backend (not yet opened); ``auto`` takes the highest-priority usable one.

    ``auto`` order: TensorRT (a GPU, and a plan present or buildable) > ONNX Runtime (its CUDA
    provider, then CPU) > torch; the choice and why each higher one was skipped are logged.
    """
    if config.type != "auto":
        try:
            cls = Engine.registry[config.type]
        except KeyError:
            raise EngineError(f"unknown engine {config.type!r}; expected auto or one of {', '.join(sorted(Engine.registry))}") from None
        ok, why = cls.available(model)
        if not ok:
            raise EngineError(f"engine {cls.name} is not usable: {why}")
        return cls.from_config(config, model)
    reasons: list[str] = []
    for cls in sorted(Engine.registry.values(), key=lambda c: -c.priority):
        ok, why = cls.available(model)
        if ok:
            log.info("engine auto: chose %s (%s)%s", cls.name, why, f"; skipped {'; '.join(reasons)}" if reasons else "")
            return cls(model)
        reasons.append(f"{cls.name}: {why}")
    raise EngineError(f"engine auto: no backend can run {model.path}: {'; '.join(reasons)}")


__all__ = ["AutoConfig", "Engine", "EngineError", "OnnxRuntimeEngine", "TensorRtEngine", "TorchEngine", "create_engine", "engine_configs"]
