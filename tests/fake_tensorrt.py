"""Stand-ins for ``tensorrt`` and ``cuda.bindings.runtime``, for unit tests on machines without them.

They fake what lies beyond rtaudio's boundary and record how rtaudio calls it: the builder
records flags, pool limits, profiles, layer precisions and timing caches; a "plan" is JSON
naming the ONNX file and the profile; the fake engine runs that ONNX file with ONNX Runtime
on CPU; "device memory" is host memory, so copies are real ``memmove``s and a wrong size or
address shows up as a wrong result. Tests assert rtaudio's calls and data flow through them,
never the fakes' own modelling of TensorRT (which layers a node becomes, numerics): the
real-API tests in test_tensorrt.py (``needs_gpu``) cover the boundary where TensorRT and a GPU exist.
"""

from __future__ import annotations

import ctypes
import enum
import json
import sys
import types
from typing import Any

import numpy as np
import onnx
import pytest

float32, float16, int64 = "float32", "float16", "int64"


class Severity(enum.Enum):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass


class IInt8EntropyCalibrator2:
    def __init__(self) -> None:
        pass


class Tensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: str = float32):
        self.name, self.shape, self.dtype = name, shape, dtype


class Layer:
    def __init__(self, name: str, metadata: str, dtype: str):
        self.name, self.metadata, self.num_outputs = name, metadata, 1
        self.precision: str | None = None
        self.output_types: dict[int, str] = {}
        self._out = Tensor(name + ":0", (), dtype)

    def get_output(self, index: int) -> Tensor:
        return self._out

    def set_output_type(self, index: int, dtype: str) -> None:
        self.output_types[index] = dtype


class Network:
    def __init__(self, flags: int):
        self.flags = flags
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self.layers: list[Layer] = []
        self.onnx_path = ""

    num_inputs = property(lambda self: len(self.inputs))
    num_outputs = property(lambda self: len(self.outputs))
    num_layers = property(lambda self: len(self.layers))

    def get_input(self, i: int) -> Tensor:
        return self.inputs[i]

    def get_output(self, i: int) -> Tensor:
        return self.outputs[i]

    def get_layer(self, i: int) -> Layer:
        return self.layers[i]


class OnnxParser:
    """One layer per node (and an int64 shape layer), tied to its node as TensorRT's parser ties them:
    by ``[ONNX Layer: NODE]`` metadata in 10.x, by the layer's name in 8.6. How many layers a node
    really becomes is TensorRT's business: ``test_fp32_pinning_finds_layers_by_onnx_metadata_or_name``
    covers several layers per node."""

    def __init__(self, network: Network, logger: Any):
        self.network, self.num_errors = network, 0

    def parse_from_file(self, path: str) -> bool:
        model = onnx.load(path)
        net, graph = self.network, model.graph
        net.onnx_path = path

        def dims(v):
            return tuple(d.dim_value or -1 for d in v.type.tensor_type.shape.dim)

        net.inputs = [Tensor(v.name, dims(v)) for v in graph.input]
        net.outputs = [Tensor(v.name, dims(v)) for v in graph.output]
        ten = MODULE.__version__.startswith("10.")
        for node in graph.node:
            net.layers.append(Layer(f"layer{len(net.layers)}" if ten else node.name, f"[ONNX Layer: {node.name}]" if ten else "", float32))
        net.layers.append(Layer("shape_of_input", "", int64))
        return True


class Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class TimingCache:
    def __init__(self, data: bytes):
        self.data = bytes(data)

    def serialize(self) -> bytes:
        return self.data + b"+"


class BuilderConfig:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.pools: dict[str, int] = {}
        self.profiles: list[Profile] = []
        self.calibration_profile: Profile | None = None
        self.int8_calibrator: Any = None
        self.timing_cache: TimingCache | None = None

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pools[pool] = size

    def add_optimization_profile(self, profile: Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def set_calibration_profile(self, profile: Profile) -> None:
        self.calibration_profile = profile

    def create_timing_cache(self, data: bytes) -> TimingCache:
        return TimingCache(data)

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        self.timing_cache = cache
        return True


class Builder:
    last: Builder | None = None

    def __init__(self, logger: Any):
        self.platform_has_fast_fp16 = True
        self.network: Network | None = None
        self.config: BuilderConfig | None = None
        Builder.last = self

    def create_network(self, flags: int) -> Network:
        self.network = Network(flags)
        return self.network

    def create_builder_config(self) -> BuilderConfig:
        self.config = BuilderConfig()
        return self.config

    def create_optimization_profile(self) -> Profile:
        return Profile()

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
        _, _, hi = config.profiles[0].shapes[network.inputs[0].name]
        return json.dumps({"onnx": network.onnx_path, "input": network.inputs[0].name, "max": hi}).encode()


class CudaEngine:
    """Runs the plan's ONNX file with ONNX Runtime; tensors live at the addresses the context was given."""

    def __init__(self, plan: dict[str, Any]):
        import onnxruntime as ort

        self.session = ort.InferenceSession(plan["onnx"], providers=["CPUExecutionProvider"])
        self.input = plan["input"]
        self.max = tuple(plan["max"])
        self.names = [self.input] + [o.name for o in self.session.get_outputs()]
        self.widths = {o.name: o.shape[1] for o in self.session.get_outputs()}
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return TensorIOMode.INPUT if name == self.input else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> str:
        return float32

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple:
        return (1, self.max[1]), self.max, self.max

    def create_execution_context(self) -> Context:
        return Context(self)


class Context:
    def __init__(self, engine: CudaEngine):
        self.engine, self.addresses, self.shape_calls, self.runs = engine, {}, [], 0
        self.batch = 0

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        assert name == self.engine.input and 1 <= shape[0] <= self.engine.max[0], shape
        self.batch = shape[0]
        self.shape_calls.append(tuple(shape))
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        return (self.batch, self.engine.max[1] if name == self.engine.input else self.engine.widths[name])

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: Any) -> bool:
        shape = self.get_tensor_shape(self.engine.input)
        batch = _view(self.addresses[self.engine.input], shape).copy()
        outputs = self.engine.session.run(None, {self.engine.input: batch})
        for name, value in zip(self.engine.names[1:], outputs):
            _view(self.addresses[name], value.shape)[...] = value
        self.runs += 1
        return True


class Runtime:
    def __init__(self, logger: Any):
        pass

    def deserialize_cuda_engine(self, data: bytes) -> CudaEngine:
        return CudaEngine(json.loads(bytes(data)))


class TensorIOMode:
    INPUT, OUTPUT = "INPUT", "OUTPUT"


def _view(ptr: int, shape: tuple) -> np.ndarray:
    count = int(np.prod(shape))
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), (count,)).reshape(shape)


def fake_tensorrt(version: str) -> types.ModuleType:
    module = types.ModuleType("tensorrt")
    module.__dict__.update(
        __version__=version,
        ILogger=ILogger,
        IInt8EntropyCalibrator2=IInt8EntropyCalibrator2,
        Builder=Builder,
        OnnxParser=OnnxParser,
        Runtime=Runtime,
        TensorIOMode=TensorIOMode,
        float32=float32,
        float16=float16,
        nptype=lambda dtype: {float32: np.float32, float16: np.float16}[dtype],
        NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
        BuilderFlag=types.SimpleNamespace(FP16="FP16", INT8="INT8", OBEY_PRECISION_CONSTRAINTS="OBEY_PRECISION_CONSTRAINTS"),
    )
    return module


MODULE = fake_tensorrt("10.3.0")


class CudaRuntime(types.ModuleType):
    """``cuda.bindings.runtime`` over host memory; counts allocations."""

    class cudaError_t(enum.Enum):  # CUDA's name
        cudaSuccess = 0
        cudaErrorNoDevice = 100

    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, gpus: int = 1):
        super().__init__("cuda.bindings.runtime")
        self.gpus, self.blocks, self.allocations = gpus, {}, 0

    def _alloc(self, nbytes: int) -> tuple:
        block = ctypes.create_string_buffer(nbytes)
        self.blocks[ctypes.addressof(block)] = block
        self.allocations += 1
        return self.cudaError_t.cudaSuccess, ctypes.addressof(block)

    def _free(self, ptr: int) -> tuple:
        del self.blocks[ptr]
        return (self.cudaError_t.cudaSuccess,)

    cudaMalloc = cudaMallocHost = _alloc
    cudaFree = cudaFreeHost = _free

    def cudaGetDeviceCount(self) -> tuple:
        return (self.cudaError_t.cudaSuccess, self.gpus) if self.gpus else (self.cudaError_t.cudaErrorNoDevice, 0)

    def cudaGetDeviceProperties(self, device: int) -> tuple:
        return self.cudaError_t.cudaSuccess, types.SimpleNamespace(name=b"Fake GPU 8GB\0\0", major=8, minor=7)

    def cudaMemcpy(self, dst: int, src: int, nbytes: int, kind: int) -> tuple:
        ctypes.memmove(dst, src, nbytes)
        return (self.cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream: Any) -> tuple:
        return self.cudaMemcpy(dst, src, nbytes, kind)

    def cudaStreamCreate(self) -> tuple:
        return self.cudaError_t.cudaSuccess, "stream"

    def cudaStreamSynchronize(self, stream: Any) -> tuple:
        return (self.cudaError_t.cudaSuccess,)

    cudaStreamDestroy = cudaStreamSynchronize


def install(monkeypatch: pytest.MonkeyPatch, version: str = "10.3.0", gpus: int = 1) -> tuple[types.ModuleType, CudaRuntime]:
    """Put the fakes in ``sys.modules`` (undone after the test); return (tensorrt, cudart)."""
    from rtaudio.tensorrt import cuda as nvidia

    global MODULE
    MODULE = fake_tensorrt(version)
    cudart = CudaRuntime(gpus)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart  # type: ignore[attr-defined]
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings  # type: ignore[attr-defined]
    for name, module in {"tensorrt": MODULE, "cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": cudart}.items():
        monkeypatch.setitem(sys.modules, name, module)
    nvidia.trt_logger.cache_clear()  # the cached logger belongs to whichever tensorrt was imported first
    return MODULE, cudart
