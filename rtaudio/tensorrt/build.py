"""``rtaudio build-engine``: a model directory's ONNX graph -> a TensorRT plan for this GPU.

TensorRT Python API 8.6 through 10.x: explicit-batch network (the flag is required in 8.x and
implied in 10.x), ONNX parser, one optimisation profile over batch 1..max at the model's fixed
window, workspace limit, a persistent timing cache, FP16 or INT8 (entropy calibration with a
cache file) with the exporter's FP16-unsafe nodes pinned to FP32, and a plan named for the
model hash, GPU, compute capability, TensorRT version, precision and max batch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from rtaudio import __version__
from rtaudio.contract import ModelDir, load_model_dir
from rtaudio.tensorrt.calibration import DEFAULT_BATCH, DEFAULT_WINDOWS, calibration_batches, calibration_windows, entropy_calibrator
from rtaudio.tensorrt.cuda import tensorrt_and_gpu, trt_logger
from rtaudio.tensorrt.plan import PRECISIONS, PlanKey, Precision, other_plans, write_plan

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_MB = 1024


class BuildError(RuntimeError):
    """TensorRT could not parse or build the model; the message carries TensorRT's reasons."""


def plan_key(model: ModelDir, precision: Precision, max_batch: int, device: int = 0) -> tuple[Any, PlanKey]:
    """(tensorrt module, the key of the plan this device needs); NvidiaUnavailable without TensorRT or a GPU."""
    trt, gpu = tensorrt_and_gpu(device)
    return trt, PlanKey.for_model(model.info, gpu.name, gpu.compute_capability, trt.__version__, precision, max_batch)


def ensure_plan(
    model: ModelDir,
    precision: Precision,
    max_batch: int,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    plan_dir: Path | None = None,
    calibration: Path | None = None,
    timing_cache: Path | None = None,
) -> tuple[Any, PlanKey, Path]:
    """(tensorrt module, this device's plan key, its path): the one in ``plan_dir`` (default: the model
    directory), else built now from ``model.onnx`` (minutes on a Jetson; logged as a warning)."""
    trt, key = plan_key(model, precision, max_batch)
    folder = Path(plan_dir) if plan_dir is not None else model.path
    path = folder / key.filename
    if path.is_file():
        return trt, key, path
    others = other_plans(folder, key)
    if others:
        log.info("tensorrt: plans for other devices or settings left unused: %s", ", ".join(p.name for p in others))
    log.warning("building TensorRT %s plan for %s on %s (first start, takes minutes)", precision, model.path, key.gpu)
    return trt, key, build_engine(model.path, precision, max_batch, workspace_mb, calibration, timing_cache, folder)


def build_engine(
    model_dir: str | Path,
    precision: Precision = "fp16",
    max_batch: int = 32,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    calibration_dir: Path | None = None,
    timing_cache: Path | None = None,
    out_dir: Path | None = None,
    calibration_windows_max: int = DEFAULT_WINDOWS,
    device: int = 0,
) -> Path:
    """Build (or rebuild) the plan for this GPU and return its path; the sidecar records its SHA-256.

    ``out_dir`` defaults to the model directory; ``timing_cache`` to a per-GPU file beside the
    plan. INT8 needs ``calibration_dir`` (audio files) unless its calibration cache exists.
    """
    model = load_model_dir(model_dir)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not allowed; expected one of {', '.join(PRECISIONS)}")
    trt, key = plan_key(model, precision, max_batch, device)
    plan_dir = Path(out_dir) if out_dir is not None else model.path
    plan_dir.mkdir(parents=True, exist_ok=True)
    plan_path = plan_dir / key.filename
    cache_path = Path(timing_cache) if timing_cache is not None else plan_dir / key.timing_cache_name
    calib_cache = plan_dir / key.calibration_cache_name
    if precision == "int8" and calibration_dir is None and not calib_cache.is_file():
        raise ValueError(f"int8 needs calibration audio (--calibration DIR) or an existing calibration cache {calib_cache}")

    logger = trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model.onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"TensorRT {trt.__version__} could not parse {model.onnx_path}: " + "; ".join(errors))
    input_name = _check_io(network, model)
    window = model.info.window_samples

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    profile = builder.create_optimization_profile()
    # tuned for a full batch: the busiest tick (every stream due at once) is the one that must keep up
    profile.set_shape(input_name, (1, window), (max_batch, window), (max_batch, window))
    config.add_optimization_profile(profile)
    pinned = 0
    if precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in newer 10.x
            log.warning("this GPU has no fast FP16; the %s plan will run, but not faster than fp32", precision)
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 plans keep FP16 for layers INT8 cannot run
        pinned = pin_fp32_nodes(trt, network, model.info.extra.get("fp16", {}).get("fp32_nodes", []))
        if pinned:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    # kept referenced until the build is done: the config only points at them
    calibrator = (
        _attach_int8_calibrator(trt, builder, config, model, input_name, calibration_dir, calib_cache, calibration_windows_max) if precision == "int8" else None
    )
    timing = _attach_timing_cache(config, cache_path)

    log.info(
        "building TensorRT %s %s plan for %s (batch 1..%d, workspace %d MB) -> %s", trt.__version__, precision, model.path, max_batch, workspace_mb, plan_path
    )
    start = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(f"TensorRT {trt.__version__} could not build a {precision} plan for {model.onnx_path}; its errors are logged above")
    seconds = time.monotonic() - start
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_bytes(bytes(timing.serialize()))
    build = {
        "workspace_mb": workspace_mb,
        "opt_batch": max_batch,
        "window_samples": window,
        "fp32_pinned_layers": pinned,
        "timing_cache": str(cache_path),
        "calibration": str(calibration_dir) if precision == "int8" else None,
        "calibration_cache": str(calib_cache) if precision == "int8" else None,
        "build_s": round(seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rtaudio": __version__,
    }
    digest = write_plan(plan_path, bytes(serialized), key, build)
    del calibrator
    log.info("built %s in %.0f s (SHA-256 %s)", plan_path.name, seconds, digest[:12])
    return plan_path


def pin_fp32_nodes(trt: Any, network: Any, nodes: list[str]) -> int:
    """Force the layers made from the listed ONNX nodes to FP32; return how many layers were pinned.

    TensorRT 10 tags each layer with ``[ONNX Layer: NODE]`` metadata; 8.6 names the layers
    after their node (``NODE``, ``NODE_1``, ...). Only layers with floating outputs are pinned.
    """
    if not nodes:
        log.info("model.json lists no FP16-unsafe nodes (extra.fp16.fp32_nodes); nothing pinned to FP32")
        return 0
    wanted, found, pinned = set(nodes), set(), 0
    floating = {trt.float32, trt.float16}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        node = _source_node(layer, wanted)
        if node is None:
            continue
        found.add(node)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(t.dtype not in floating for t in outputs):
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    missing = sorted(wanted - found)
    log.info("pinned %d layers from %d FP16-unsafe ONNX nodes to FP32", pinned, len(found))
    if missing:
        log.warning("FP16-unsafe nodes with no TensorRT layer (folded away or renamed): %s", ", ".join(missing))
    return pinned


def _source_node(layer: Any, wanted: set[str]) -> str | None:
    metadata = getattr(layer, "metadata", "") or ""
    for node in wanted:
        if f"[ONNX Layer: {node}]" in metadata:
            return node
    name = layer.name
    if name in wanted:
        return name
    base, _, suffix = name.rpartition("_")
    return base if suffix.isdigit() and base in wanted else None


def _network_flags(trt: Any) -> int:
    if int(trt.__version__.split(".")[0]) >= 10:
        return 0  # explicit batch is the only mode in TensorRT 10
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _check_io(network: Any, model: ModelDir) -> str:
    """The waveform input's name, after checking the graph is [batch, window] -> scores."""
    if network.num_inputs != 1:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        raise BuildError(f"{model.onnx_path}: expected one waveform input, found {names}")
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)
    window = model.info.window_samples
    if len(shape) != 2 or shape[1] not in (window, -1):
        raise BuildError(f"{model.onnx_path}: input {tensor.name} has shape {shape}; expected [batch, {window}]")
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    if "scores" not in outputs:
        raise BuildError(f"{model.onnx_path}: no output named 'scores' (outputs: {outputs})")
    return tensor.name


def _attach_int8_calibrator(
    trt: Any, builder: Any, config: Any, model: ModelDir, input_name: str, calibration_dir: Path | None, cache: Path, max_windows: int
) -> Any:
    """Turn on INT8 with an entropy calibrator fed from ``calibration_dir`` (unless ``cache`` already holds the scales)."""
    batches = []
    if calibration_dir is not None and not cache.is_file():
        windows = calibration_windows(Path(calibration_dir), model.info, max_windows)
        batches = calibration_batches(windows, min(DEFAULT_BATCH, len(windows)))
        log.info("int8 calibration: %d batches of %d windows from %s", len(batches), len(batches[0]), calibration_dir)
    config.set_flag(trt.BuilderFlag.INT8)
    calibrator = entropy_calibrator(trt, batches, cache)
    config.int8_calibrator = calibrator
    profile = builder.create_optimization_profile()
    shape = (calibrator.get_batch_size(), model.info.window_samples)
    profile.set_shape(input_name, shape, shape, shape)  # calibration runs at one fixed shape
    config.set_calibration_profile(profile)
    return calibrator


def _attach_timing_cache(config: Any, path: Path) -> Any:
    """Attach the timing cache at ``path`` (an empty one when absent or made by another device/version)."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if config.set_timing_cache(cache, False):
        if data:
            log.info("timing cache: reusing %s", path)
        return cache
    log.warning("timing cache %s does not fit this device or TensorRT version; starting a new one", path)
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    return cache
