"""NVIDIA pieces shared by the TensorRT engine and the plan builder, all imported lazily.

Device memory comes from cuda-python (``cuda.bindings.runtime``), not torch: a Jetson's
runtime install has no torch, while cuda-python is NVIDIA's own small binding of the CUDA
runtime, installable with pip on x86-64 and aarch64, and the one TensorRT's Python samples
use. Nothing here is imported before it is needed, so a machine without TensorRT or a GPU
still imports rtaudio; every absence raises ``NvidiaUnavailable`` saying what is missing.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

trt_log = logging.getLogger("rtaudio.tensorrt")


def gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs seen by the driver (nvidia-smi, or the Jetson model); empty when none."""
    listing = None
    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader"], capture_output=True, text=True, timeout=5.0, check=False
            )
            listing = done.stdout.strip() if done.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            listing = None
    if listing:
        return [line.strip() for line in listing.splitlines() if line.strip()]
    jetson = Path("/proc/device-tree/model")
    if Path("/etc/nv_tegra_release").is_file() and jetson.is_file():
        return [jetson.read_text(errors="replace").strip("\x00 \n")]
    return []


class NvidiaUnavailable(RuntimeError):
    """TensorRT, cuda-python or a CUDA GPU is missing here; the message says which and how to get it."""


class CudaError(RuntimeError):
    """A CUDA runtime call returned an error."""


def load_tensorrt() -> Any:
    """The ``tensorrt`` module, or NvidiaUnavailable saying how to install it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise NvidiaUnavailable(
            f"tensorrt is not importable ({exc}); on a Jetson it comes with JetPack (python3-libnvinfer), "
            "elsewhere install the 'tensorrt' extra (pip install 'rtaudio[tensorrt]')"
        ) from None
    return tensorrt


def load_cudart() -> Any:
    """``cuda.bindings.runtime`` (cuda-python >= 11.8.4 / 12.6.1), or NvidiaUnavailable."""
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        raise NvidiaUnavailable(
            f"cuda-python is not importable ({exc}); install the 'tensorrt' extra, which brings cuda-python "
            "(cuda.bindings.runtime, version 11.8.4+ for CUDA 11 or 12.6.1+ for CUDA 12)"
        ) from None
    return runtime


def cuda_call(name: str, *args: Any) -> Any:
    """Call ``cudart.<name>(*args)``; raise CudaError on failure, return the result(s) after the status."""
    cudart = load_cudart()
    result = getattr(cudart, name)(*args)
    err, rest = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaError(f"{name} failed: {getattr(err, 'name', err)}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


@dataclass(frozen=True)
class GpuInfo:
    """What a TensorRT plan is tied to on the hardware side."""

    name: str
    compute_capability: str  # "8.7"


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device``; NvidiaUnavailable when there is none."""
    load_cudart()
    try:
        count = cuda_call("cudaGetDeviceCount")
    except CudaError as exc:
        raise NvidiaUnavailable(f"no usable CUDA GPU ({exc})") from None
    if count <= device:
        raise NvidiaUnavailable(f"no CUDA GPU {device}: cudaGetDeviceCount reports {count}")
    prop = cuda_call("cudaGetDeviceProperties", device)
    name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name=name.strip(), compute_capability=f"{prop.major}.{prop.minor}")


def tensorrt_and_gpu(device: int = 0) -> tuple[Any, GpuInfo]:
    """(tensorrt module, GPU) after checking TensorRT, cuda-python and a GPU, in that order."""
    trt = load_tensorrt()
    return trt, gpu_info(device)


@functools.cache
def trt_logger() -> Any:
    """One TensorRT logger for the process (TensorRT wants the same one everywhere), into ``logging``."""
    trt = load_tensorrt()
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.ERROR,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.DEBUG,
        severity.VERBOSE: logging.DEBUG,
    }

    base: Any = trt.ILogger  # a class of the lazily imported module

    class _Logger(base):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, level: Any, msg: str) -> None:
            trt_log.log(levels.get(level, logging.INFO), "%s", msg)

    return _Logger()


class DeviceBuffer:
    """``nbytes`` of GPU memory, allocated once."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.ptr: int = int(cuda_call("cudaMalloc", nbytes))

    def upload(self, array: np.ndarray) -> None:
        """Synchronous copy of a C-contiguous host array into the start of the buffer."""
        if array.nbytes > self.nbytes:
            raise ValueError(f"{array.nbytes} bytes do not fit a device buffer of {self.nbytes}")
        kind = load_cudart().cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_call("cudaMemcpy", self.ptr, array.ctypes.data, array.nbytes, kind)

    def free(self) -> None:
        if self.ptr:
            cuda_call("cudaFree", self.ptr)
            self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory seen as a flat numpy array, so copies to and from the GPU can be async."""

    def __init__(self, size: int, dtype: np.dtype):
        self.dtype = np.dtype(dtype)
        self.nbytes = size * self.dtype.itemsize
        self.ptr: int = int(cuda_call("cudaMallocHost", self.nbytes))
        pointer = ctypes.cast(self.ptr, ctypes.POINTER(np.ctypeslib.as_ctypes_type(self.dtype)))
        self.array: np.ndarray = np.ctypeslib.as_array(pointer, (size,))

    def free(self) -> None:
        if self.ptr:
            cuda_call("cudaFreeHost", self.ptr)
            self.ptr = 0


class CudaStream:
    """One CUDA stream with the async copies the engine needs."""

    def __init__(self) -> None:
        self.handle: Any = cuda_call("cudaStreamCreate")

    def to_device(self, dst: int, src: int, nbytes: int) -> None:
        kind = load_cudart().cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_call("cudaMemcpyAsync", dst, src, nbytes, kind, self.handle)

    def to_host(self, dst: int, src: int, nbytes: int) -> None:
        kind = load_cudart().cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call("cudaMemcpyAsync", dst, src, nbytes, kind, self.handle)

    def synchronize(self) -> None:
        cuda_call("cudaStreamSynchronize", self.handle)

    def destroy(self) -> None:
        if self.handle is not None:
            cuda_call("cudaStreamDestroy", self.handle)
            self.handle = None
