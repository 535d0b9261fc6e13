"""Torch backend: runs the TorchScript ``model.pt`` the exporter writes beside ``model.onnx``.

For training machines and GPU checks; a Jetson never needs it. torch is imported lazily.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from rtaudio.config.base import EngineBase
from rtaudio.contract import ModelDir
from rtaudio.contract.files import TORCHSCRIPT_FILE
from rtaudio.runtime.engines.base import Engine, EngineError


class TorchConfig(EngineBase):
    """``engine: torch``."""

    type: Literal["torch"] = Field(title="Engine type", description="Runs the TorchScript model.pt beside model.onnx (training machines; needs torch).")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", title="Torch device")


class TorchEngine(Engine):
    """Runs ``model.pt`` (TorchScript returning ``(scores, embedding)`` or ``scores``)."""

    name: ClassVar[str] = "torch"
    config_class = TorchConfig
    priority: ClassVar[int] = 10

    def __init__(self, model: ModelDir, device: str = "auto"):
        super().__init__(model)
        self.device_request = device
        self._module: Any = None
        self._device: Any = None

    @classmethod
    def from_config(cls, config: Any, model: ModelDir) -> TorchEngine:
        return cls(model, config.device)

    @classmethod
    def available(cls, model: ModelDir) -> tuple[bool, str]:
        if not model.has_torchscript:
            return False, f"no {TORCHSCRIPT_FILE} (TorchScript) in {model.path}"
        try:
            import torch
        except ImportError as exc:
            return False, f"torch is not installed ({exc}); install the 'train' extra"
        return True, f"torch {torch.__version__}, CUDA {'available' if torch.cuda.is_available() else 'not available'}"

    @property
    def description(self) -> str:
        return f"{self.name}:{self._device}"

    def open(self) -> None:
        import torch

        want_cuda = self.device_request == "cuda" or (self.device_request == "auto" and torch.cuda.is_available())
        if want_cuda and not torch.cuda.is_available():
            raise EngineError("torch: device 'cuda' requested but torch.cuda.is_available() is False")
        self._device = torch.device("cuda" if want_cuda else "cpu")
        try:
            self._module = torch.jit.load(str(self.model.path / TORCHSCRIPT_FILE), map_location=self._device).eval()
        except Exception as exc:
            raise EngineError(f"torch could not load {self.model.path / TORCHSCRIPT_FILE}: {exc}") from exc

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self._module(torch.from_numpy(batch).to(self._device))
        if isinstance(out, torch.Tensor):
            out = (out,)
        names = ("scores", "embedding")
        return {name: t.detach().float().cpu().numpy() for name, t in zip(names, out)}

    def close(self) -> None:
        self._module = None
