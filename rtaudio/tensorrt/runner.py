"""One deserialised TensorRT plan, run with named tensors on one CUDA stream.

Device and pinned host buffers are allocated once, for the plan's largest batch; a call copies
the batch into the pinned input, sets the input shape (only when the batch size changes), runs
``execute_async_v3`` and copies the outputs back. Larger batches are split. Used from one thread.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from rtaudio.tensorrt.cuda import CudaStream, DeviceBuffer, PinnedBuffer, trt_logger
from rtaudio.tensorrt.plan import PlanKey, read_checked_plan

log = logging.getLogger(__name__)


class RunnerError(RuntimeError):
    """A plan that cannot be loaded or run; the message names the plan and what went wrong."""


class PlanRunner:
    """Runs ``plan`` (checked against ``key`` on open) on float32 ``[batch, window]`` waveforms."""

    def __init__(self, trt: Any, plan: Path, key: PlanKey, window: int):
        self.trt = trt
        self.plan = plan
        self.key = key
        self.window = window
        self.max_batch = 0
        self.outputs: list[str] = []
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: CudaStream | None = None
        self._input = ""
        self._device: dict[str, DeviceBuffer] = {}
        self._host: dict[str, PinnedBuffer] = {}
        self._shape_batch = 0

    def open(self) -> None:
        """Deserialise the plan (its sidecar checked first: PlanError) and bind its buffers."""
        data = read_checked_plan(self.plan, self.key)
        self._runtime = self.trt.Runtime(trt_logger())
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise RunnerError(f"could not deserialise {self.plan}; TensorRT's reasons are logged above")
        self._context = self._engine.create_execution_context()
        self._bind()

    def _bind(self) -> None:
        """Find the named tensors, allocate device and pinned buffers for the largest batch, set addresses once."""
        trt, engine, context, window = self.trt, self._engine, self._context, self.window
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or "scores" not in self.outputs:
            raise RunnerError(f"{self.plan} has inputs {inputs} and outputs {self.outputs}; expected one waveform input and 'scores'")
        self._input = inputs[0]
        _, _, largest = engine.get_tensor_profile_shape(self._input, 0)
        if tuple(largest)[1:] != (window,):
            raise RunnerError(f"{self.plan} takes windows of {tuple(largest)[1:]} samples; the model's window is {window}")
        self.max_batch = int(largest[0])
        context.set_input_shape(self._input, (self.max_batch, window))
        self._shape_batch = self.max_batch
        self._stream = CudaStream()
        for name in names:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if name == self._input and dtype != np.float32:
                raise RunnerError(f"input {name} of {self.plan} is {dtype}; the waveform contract is float32")
            size = int(np.prod(tuple(context.get_tensor_shape(name))))
            self._host[name] = PinnedBuffer(size, dtype)
            self._device[name] = DeviceBuffer(self._host[name].nbytes)
            context.set_tensor_address(name, self._device[name].ptr)
        log.info("tensorrt: %s ready, batch 1..%d, outputs %s", self.plan.name, self.max_batch, self.outputs)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name for a float32 ``[n, window]`` batch, split into plan-sized calls when larger."""
        step = self.max_batch
        if len(batch) <= step:
            return self._run(batch)
        parts = [self._run(batch[i : i + step]) for i in range(0, len(batch), step)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _run(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        if self._context is None or self._stream is None:
            raise RunnerError(f"{self.plan}: open() first")
        n, window = chunk.shape
        if n != self._shape_batch:
            self._context.set_input_shape(self._input, (n, window))
            self._shape_batch = n
        host_in = self._host[self._input]
        host_in.array[: chunk.size] = chunk.reshape(-1)
        self._stream.to_device(self._device[self._input].ptr, host_in.ptr, chunk.nbytes)
        if not self._context.execute_async_v3(self._stream.handle):
            raise RunnerError(f"execute_async_v3 failed for a batch of {n}; TensorRT's reasons are logged above")
        shapes = {name: tuple(self._context.get_tensor_shape(name)) for name in self.outputs}
        for name, shape in shapes.items():
            host = self._host[name]
            self._stream.to_host(host.ptr, self._device[name].ptr, int(np.prod(shape)) * host.dtype.itemsize)
        self._stream.synchronize()
        # copies: the pinned buffers are overwritten by the next call
        return {name: self._host[name].array[: int(np.prod(shape))].reshape(shape).copy() for name, shape in shapes.items()}

    def close(self) -> None:
        """Free the buffers and the stream, drop the engine; safe to call twice."""
        for device in self._device.values():
            device.free()
        for host in self._host.values():
            host.free()
        self._device, self._host = {}, {}
        if self._stream is not None:
            self._stream.destroy()
            self._stream = None
        self._context = self._engine = self._runtime = None
