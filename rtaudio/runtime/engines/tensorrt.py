"""TensorRT backend: a plan built for this GPU, run with named tensors on one CUDA stream.

On first start the plan is built from ``model.onnx`` (minutes on a Jetson) and reused after.
Device and pinned host buffers are allocated once, for the plan's largest batch; a call
copies the batch into the pinned input, sets the input shape (only when the batch size
changes), runs ``execute_async_v3`` and copies the outputs back. Larger batches are split.
tensorrt and cuda-python are imported lazily (see ``nvidia.py`` for why not torch).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rtaudio.contract import ModelDir
from rtaudio.export.plan import Precision
from rtaudio.runtime.engines.base import Engine, EngineError
from rtaudio.runtime.engines.nvidia import CudaError, CudaStream, DeviceBuffer, NvidiaUnavailable, PinnedBuffer, trt_logger

log = logging.getLogger(__name__)


class TensorRtEngine(Engine):
    """Runs this GPU's TensorRT plan of ``model.onnx``, building it when missing."""

    name: ClassVar[str] = "tensorrt"
    priority: ClassVar[int] = 30

    def __init__(self, model: ModelDir, precision: Precision = "fp16", max_batch: int = 32, workspace_mb: int = 1024,
                 plan_dir: Path | None = None, calibration: Path | None = None, timing_cache: Path | None = None):
        super().__init__(model)
        self.precision = precision
        self.max_batch = max_batch
        self.workspace_mb = workspace_mb
        self.plan_dir = Path(plan_dir) if plan_dir is not None else model.path
        self.calibration = calibration
        self.timing_cache = timing_cache
        self.plan_path: Path | None = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: CudaStream | None = None
        self._input = ""
        self._outputs: list[str] = []
        self._device: dict[str, DeviceBuffer] = {}
        self._host: dict[str, PinnedBuffer] = {}
        self._plan_batch = 0
        self._shape_batch = 0

    @classmethod
    def available(cls, model: ModelDir) -> tuple[bool, str]:
        from rtaudio.export.build import plan_key

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
        from rtaudio.export.build import build_engine, plan_key
        from rtaudio.export.plan import PlanError, other_plans, read_checked_plan

        try:
            trt, key = plan_key(self.model, self.precision, self.max_batch)
        except (NvidiaUnavailable, CudaError) as exc:
            raise EngineError(f"tensorrt: {exc}") from None
        path = self.plan_dir / key.filename
        if not path.is_file():
            others = other_plans(self.plan_dir, key)
            if others:
                log.info("tensorrt: plans for other devices or settings left unused: %s", ", ".join(p.name for p in others))
            log.warning("building TensorRT %s plan for %s on %s (first start, takes minutes)", self.precision, self.model.path, key.gpu)
            path = build_engine(self.model.path, self.precision, self.max_batch, self.workspace_mb,
                                self.calibration, self.timing_cache, self.plan_dir)
        try:
            data = read_checked_plan(path, key)
        except PlanError as exc:
            raise EngineError(f"tensorrt: {exc}") from None
        self._runtime = trt.Runtime(trt_logger())
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise EngineError(f"tensorrt: could not deserialise {path}; TensorRT's reasons are logged above")
        self.plan_path = path
        self._context = self._engine.create_execution_context()
        self._bind(trt)

    def _bind(self, trt: Any) -> None:
        """Find the named tensors, allocate device and pinned buffers for the largest batch, set addresses once."""
        engine, context = self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or "scores" not in self._outputs:
            raise EngineError(f"tensorrt: {self.plan_path} has inputs {inputs} and outputs {self._outputs}; expected one waveform input and 'scores'")
        self._input = inputs[0]
        window = self.model.info.window_samples
        _, _, largest = engine.get_tensor_profile_shape(self._input, 0)
        if tuple(largest)[1:] != (window,):
            raise EngineError(f"tensorrt: {self.plan_path} takes windows of {tuple(largest)[1:]} samples; the model's window is {window}")
        self._plan_batch = int(largest[0])
        context.set_input_shape(self._input, (self._plan_batch, window))
        self._shape_batch = self._plan_batch
        self._stream = CudaStream()
        for name in names:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if name == self._input and dtype != np.float32:
                raise EngineError(f"tensorrt: input {name} is {dtype}; the waveform contract is float32")
            size = int(np.prod(tuple(context.get_tensor_shape(name))))
            self._host[name] = PinnedBuffer(size, dtype)
            self._device[name] = DeviceBuffer(self._host[name].nbytes)
            context.set_tensor_address(name, self._device[name].ptr)
        log.info("tensorrt: %s ready, batch 1..%d, outputs %s", self.plan_path.name if self.plan_path else "plan", self._plan_batch, self._outputs)

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        step = self._plan_batch
        if len(batch) <= step:
            return self._run(batch)
        parts = [self._run(batch[i:i + step]) for i in range(0, len(batch), step)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _run(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        assert self._context is not None and self._stream is not None, "open() first"
        n, window = chunk.shape
        if n != self._shape_batch:
            self._context.set_input_shape(self._input, (n, window))
            self._shape_batch = n
        host_in = self._host[self._input]
        host_in.array[: chunk.size] = chunk.reshape(-1)
        self._stream.to_device(self._device[self._input].ptr, host_in.ptr, chunk.nbytes)
        if not self._context.execute_async_v3(self._stream.handle):
            raise EngineError(f"tensorrt: execute_async_v3 failed for a batch of {n}; TensorRT's reasons are logged above")
        shapes = {name: tuple(self._context.get_tensor_shape(name)) for name in self._outputs}
        for name, shape in shapes.items():
            host = self._host[name]
            self._stream.to_host(host.ptr, self._device[name].ptr, int(np.prod(shape)) * host.dtype.itemsize)
        self._stream.synchronize()
        # copies: the pinned buffers are overwritten by the next call
        return {name: self._host[name].array[: int(np.prod(shape))].reshape(shape).copy() for name, shape in shapes.items()}

    def close(self) -> None:
        for buffer in [*self._device.values(), *self._host.values()]:
            buffer.free()
        self._device, self._host = {}, {}
        if self._stream is not None:
            self._stream.destroy()
            self._stream = None
        self._context = self._engine = self._runtime = None
