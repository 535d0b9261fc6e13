"""Torch backend: runs the TorchScript ``model.pt`` the exporter writes beside ``model.onnx``.

For training machines and GPU checks; a Jetson never needs it. torch is imported lazily.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from rtaudio.contract import ModelDir
from rtaudio.runtime.engines.base import Engine, EngineError

TORCHSCRIPT_FILE = "model.pt"


class TorchEngine(Engine):
    """Runs ``model.pt`` (TorchScript returning ``(scores, embedding)`` or ``scores``)."""

    name: ClassVar[str] = "torch"
    priority: ClassVar[int] = 10

    def __init__(self, model: ModelDir, device: str = "auto"):
        super().__init__(model)
        self.device_request = device
        self._module: Any = None
        self._device: Any = None

    @classmethod
    def available(cls, model: ModelDir) -> tuple[bool, str]:
        if not (model.path / TORCHSCRIPT_FILE).is_file():
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
