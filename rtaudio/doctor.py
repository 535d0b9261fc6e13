"""``rtaudio doctor``: what is present and usable on this machine, and why not when it is not.

Every check returns a ``Check`` (ok / missing / error, with what was found and what to do)
and never raises. Optional runtimes (TensorRT, torch, CUDA) are probed lazily, so the
doctor runs on a bare runtime install. ``required`` marks what the runtime (or the given
site config) cannot do without; the exit code is 0 only when every required check is ok.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import platform
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rtaudio import __version__
from rtaudio.tensorrt.cuda import gpu_names

Status = Literal["ok", "missing", "error"]
BROKER_TIMEOUT_S = 3.0


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    required: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    """stdout of ``cmd``, or None when it cannot run or fails."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


# ---------------------------------------------------------------- machine


def check_python() -> Check:
    return Check("python", "ok", f"Python {platform.python_version()} ({sys.executable}), rtaudio {__version__}", required=True)


def check_gpu() -> Check:
    names = gpu_names()
    if names:
        return Check("gpu", "ok", "; ".join(names))
    if Path("/proc/driver/nvidia/version").is_file():
        return Check(
            "gpu",
            "error",
            "the NVIDIA kernel driver is loaded but nvidia-smi lists no GPU",
            "run nvidia-smi to see the driver's error; check the device permissions (/dev/nvidia*)",
        )
    return Check(
        "gpu",
        "missing",
        "no NVIDIA GPU: nvidia-smi absent or empty, no /proc/driver/nvidia, not a Jetson",
        "not needed on a CPU machine; for TensorRT install the NVIDIA driver (or JetPack on a Jetson)",
    )


def cuda_driver_version() -> str | None:
    """The CUDA driver API version from libcuda (e.g. '12.4'), or None when there is no driver."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def check_cuda() -> Check:
    version = cuda_driver_version()
    if version is None:
        return Check(
            "cuda",
            "missing",
            "libcuda.so.1 not loadable: no NVIDIA driver with CUDA on this machine",
            "not needed on a CPU machine; install the NVIDIA driver (JetPack on a Jetson) for CUDA",
        )
    return Check("cuda", "ok", f"CUDA driver API {version} (libcuda.so.1)")


def check_tensorrt() -> Check:
    from rtaudio.tensorrt.cuda import NvidiaUnavailable, load_tensorrt

    try:
        tensorrt = load_tensorrt()
    except NvidiaUnavailable as exc:
        return Check("tensorrt", "missing", str(exc), "needed only for engine: tensorrt (NVIDIA GPU or Jetson)")
    except Exception as exc:  # an installed TensorRT whose libraries do not load
        return Check(
            "tensorrt", "error", f"tensorrt is installed but does not load: {exc}", "check that the CUDA and TensorRT libraries match the tensorrt wheel"
        )
    return Check("tensorrt", "ok", f"TensorRT {tensorrt.__version__}")


def check_cuda_python() -> Check:
    from rtaudio.tensorrt.cuda import NvidiaUnavailable, load_cudart

    try:
        load_cudart()
    except NvidiaUnavailable as exc:
        return Check("cuda-python", "missing", str(exc), "needed only for engine: tensorrt")
    return Check("cuda-python", "ok", f"cuda-python {importlib.metadata.version('cuda-python')}")


def check_onnxruntime(required: bool) -> Check:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return Check("onnxruntime", "missing", f"onnxruntime is not installed ({exc})", "pip install onnxruntime (or onnxruntime-gpu)", required)
    providers = ort.get_available_providers()
    hint = "" if "CUDAExecutionProvider" in providers else " (no CUDA provider: that is in onnxruntime-gpu)"
    return Check("onnxruntime", "ok", f"onnxruntime {ort.__version__}, providers: {', '.join(providers)}{hint}", required=required)


def check_torch() -> Check:
    if importlib.util.find_spec("torch") is None:
        return Check(
            "torch",
            "missing",
            "torch is not installed; not needed by the runtime (torch engine and training only)",
            "pip install 'rtaudio[train]' for training or the torch engine",
        )
    try:
        import torch
    except Exception as exc:  # a broken install raises anything from OSError (libraries) to AttributeError
        return Check("torch", "error", f"torch is installed but does not import: {exc}", "reinstall torch")
    cuda = f"CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no CUDA device"
    return Check("torch", "ok", f"torch {torch.__version__} ({cuda}); not needed by the runtime")


def check_paho() -> Check:
    try:
        version = importlib.metadata.version("paho-mqtt")
    except importlib.metadata.PackageNotFoundError:
        return Check("paho-mqtt", "missing", "paho-mqtt is not installed", "pip install rtaudio (paho-mqtt is a dependency)", True)
    return Check("paho-mqtt", "ok", f"paho-mqtt {version}", required=True)


def check_portaudio(required: bool = False) -> Check:
    try:
        import sounddevice as sd
    except (OSError, ImportError) as exc:  # OSError: the PortAudio library itself is missing
        return Check(
            "portaudio", "missing", f"cannot load sounddevice/PortAudio: {exc}", "apt install libportaudio2 (needed for microphone sources only)", required
        )
    return Check("portaudio", "ok", f"{sd.get_portaudio_version()[1]} (sounddevice {sd.__version__})", required=required)


def check_input_devices(required: bool = False) -> Check:
    from rtaudio.runtime.sources.microphone import DeviceError, list_input_devices

    try:
        devices = list_input_devices()
    except (DeviceError, OSError, RuntimeError) as exc:
        return Check("input devices", "error", str(exc), "install PortAudio and connect a sound card or USB microphone", required)
    if not devices:
        return Check(
            "input devices",
            "missing",
            "PortAudio sees no input device",
            "connect a microphone or sound card (needed for microphone sources only); see `rtaudio devices`",
            required,
        )
    names = ", ".join(f"[{d['index']}] {d['name']} ({d['max_input_channels']} ch)" for d in devices)
    return Check("input devices", "ok", names, required=required)


def check_ffmpeg(required: bool = False) -> Check:
    path = shutil.which("ffmpeg")
    if path is None:
        return Check("ffmpeg", "missing", "ffmpeg is not on PATH", "apt install ffmpeg (needed for ffmpeg sources: RTSP, HTTP, files ffmpeg opens)", required)
    version = _run([path, "-hide_banner", "-version"])
    if version is None:
        return Check("ffmpeg", "error", f"{path} -version failed", "reinstall ffmpeg", required)
    return Check("ffmpeg", "ok", f"{path}: {version.splitlines()[0].split(' Copyright')[0]}", required=required)


def machine_checks() -> list[Check]:
    """Everything about this machine, independent of any site config."""
    trt = check_tensorrt()
    return [
        check_python(),
        check_gpu(),
        check_cuda(),
        trt,
        check_cuda_python(),
        check_onnxruntime(required=not trt.ok),
        check_torch(),
        check_paho(),
        check_portaudio(),
        check_input_devices(),
        check_ffmpeg(),
    ]


# ---------------------------------------------------------------- site config


def config_checks(path: Path) -> list[Check]:
    """Checks of what ``path`` (a site.yaml) needs: config, model, engine, broker, devices.

    The config, model and text-head checks are ``rtaudio config check``'s (``config.load`` and
    ``config.check``), split by part; the machine's secret, TLS and outbox checks are in "config"."""
    from rtaudio.config.load import load_site_config
    from rtaudio.config.loader import ConfigError

    warnings: list[str] = []
    try:
        config = load_site_config(path, check_model=False, warnings=warnings)
    except ConfigError as exc:
        detail = "; ".join(exc.problems + [f"warning: {w}" for w in warnings])
        return [Check("config", "error", detail, f"fix {path} (see `rtaudio config check {path}`)", True)]
    detail = f"{path}: site {config.site}, {len(config.sources)} source(s)" + "".join(f"; warning: {w}" for w in warnings)
    checks = [Check("config", "ok", detail, required=True)]
    model_check, model = _check_model(config)
    checks.append(model_check)
    if model is not None:
        checks.append(check_engine(config.engine, model))
        if config.captions is not None or config.active_queries():
            checks.append(check_text_heads(config))
    if config.mqtt is not None:
        checks.append(check_broker(config.mqtt, config.site))
    if config.http is not None:
        checks.append(check_http_listen(config.http.listen))
    if config.clips is not None:
        checks.append(check_clips_dir(config.clips.dir))
    kinds = {s.type for s in config.sources if s.enabled}
    if "microphone" in kinds:
        checks += [check_portaudio(required=True), *_check_microphones(config)]
    if "ffmpeg" in kinds:
        checks.append(check_ffmpeg(required=True))
    return checks


def check_http_listen(listen: str) -> Check:
    """The HTTP server's address can be bound here now (bound and closed at once)."""
    from rtaudio.runtime.http.server import probe_listen

    try:
        probe_listen(listen)
    except OSError as exc:
        return Check("http", "error", str(exc), "free the port, or set http.listen to a free port on an address of this machine", True)
    return Check("http", "ok", f"{listen} can be bound", required=True)


def check_clips_dir(path: Path) -> Check:
    """The event-clip directory can be created and written here (tried for real, then undone). Not required:
    rtaudio runs without it, and each clip it cannot write is dropped and counted (``runtime.clips``)."""
    from rtaudio.config.check import writable_dir_problems

    problems = writable_dir_problems(path, ("clips", "dir"))
    if problems:
        fix = f"create {path} writable by the user rtaudio runs as, or point clips.dir at such a directory"
        return Check("clips", "error", "; ".join(p.message for p in problems) + "; every clip would be dropped", fix)
    return Check("clips", "ok", f"{path} can be written")


def check_text_heads(config: Any) -> Check:
    """The model's caption/query files, and which words of each query the model knows (it drops the rest)."""
    from rtaudio.config.check import text_problems
    from rtaudio.contract.vocab import Vocabulary, words

    errors = [p for p in text_problems(config) if not p.warning]
    if errors:
        words_only = all(p.loc[:1] == ("queries",) and len(p.loc) > 1 for p in errors)
        fix = (
            "describe the sound in words of the training captions (vocab.json)"
            if words_only
            else "point model: at a model trained with captions:, or remove captions:/queries:"
        )
        return Check("text heads", "error", "; ".join(map(str, errors)), fix, True)
    parts = [f"captions every {config.captions.every_s:g} s for {', '.join(config.captioned_sources()) or 'no source'}"] if config.captions else []
    queries = config.active_queries()
    if queries:
        vocab = Vocabulary.load(config.model)
        for name, rule in queries.items():
            unknown = vocab.unknown_words(rule.text)
            known = [w for w in words(rule.text) if w not in unknown]
            parts.append(f"query {name} reads as {' '.join(known)!r}" + (f" (unknown, dropped: {', '.join(unknown)})" if unknown else ""))
    return Check("text heads", "ok", "; ".join(parts), required=True)


def _check_model(config: Any) -> tuple[Check, Any]:
    """The model directory loads, and the site fits it: labels, thresholds, window (``config.check.model_problems``)."""
    from rtaudio.config.check import model_problems
    from rtaudio.contract import ContractError, load_model_dir

    path = config.model
    try:
        model = load_model_dir(path)
    except ContractError as exc:
        return Check("model", "error", str(exc), "point `model:` at an engines/NAME/ directory written by `rtaudio export`", True), None
    info = model.info
    problems = [str(p) for p in model_problems(config, model) if not p.warning]
    if problems:
        return Check("model", "error", "; ".join(problems), f"make the site fit {path} (its labels: {', '.join(info.labels)})", True), model
    detail = f"{path}: {info.model_id} {info.version}, {len(info.labels)} labels, {info.sample_rate} Hz, window {info.window_s} s hop {info.hop_s} s"
    return Check("model", "ok", detail, required=True), model


def check_engine(config: Any, model: Any) -> Check:
    """Whether the configured engine can run ``model`` here (without opening it: a TensorRT plan may need minutes to build)."""
    from rtaudio.runtime.engines import Engine, EngineError, OnnxRuntimeEngine, create_engine

    lines = []
    for cls in sorted(Engine.registry.values(), key=lambda c: -c.priority):
        usable, why = cls.available(model)
        lines.append(f"{cls.name}: {'usable' if usable else 'not usable'} ({why})")
    try:
        engine = create_engine(config, model)
    except EngineError as exc:
        return Check("engine", "error", f"engine {config.type}: {exc}", "install the backend or choose another `engine:`", True)
    if isinstance(engine, OnnxRuntimeEngine):
        import onnxruntime as ort

        present = [p for p in engine.providers if p in ort.get_available_providers()]
        if not present:
            return Check(
                "engine",
                "error",
                f"onnxruntime providers {engine.providers} are all absent from this build",
                "install onnxruntime-gpu or add CPUExecutionProvider to engine.providers",
                True,
            )
        lines.insert(0, f"providers that will be tried: {', '.join(present)}")
    return Check("engine", "ok", f"engine {config.type} -> {engine.name}; " + "; ".join(lines), required=True)


def check_broker(mqtt: Any, site: str, timeout: float = BROKER_TIMEOUT_S) -> Check:
    """TCP connect, then a real MQTT CONNECT with the config's credentials and TLS."""
    if mqtt.broker == "embedded":
        return _check_embedded_port(mqtt.port)
    where = f"{mqtt.broker}:{mqtt.port}"
    try:
        socket.create_connection((mqtt.broker, mqtt.port), timeout=timeout).close()
    except OSError as exc:
        return Check(
            "broker",
            "error",
            f"{where} is not reachable over TCP: {exc.strerror or exc}",
            "check mqtt.broker and mqtt.port, that the broker runs, and the firewall",
            True,
        )
    try:
        reason = _mqtt_connect(mqtt, site, timeout)
    except (OSError, ValueError) as exc:
        return Check("broker", "error", f"{where}: MQTT connect failed: {exc}", "check mqtt.tls and the credentials", True)
    if reason is None:
        return Check(
            "broker",
            "error",
            f"{where}: TCP open but no CONNACK within {timeout:.0f} s",
            "check mqtt.tls (a TLS port needs tls:, a plain port must not have it) and mqtt.protocol",
            True,
        )
    if reason.is_failure:
        return Check(
            "broker", "error", f"{where}: the broker refused the MQTT connection: {reason}", "check mqtt.username and the password (or password_file)", True
        )
    tls = ", TLS" if mqtt.tls is not None else ""
    return Check("broker", "ok", f"{where}: MQTT {mqtt.protocol} CONNECT accepted{tls}", required=True)


def _mqtt_connect(mqtt: Any, site: str, timeout: float) -> Any:
    """CONNECT with paho; the CONNACK reason code, or None when the broker does not answer."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from rtaudio.runtime.publish.mqtt import apply_credentials

    protocol = paho.MQTTv5 if mqtt.protocol == "5" else paho.MQTTv311
    # Not the daemon's client id: connecting with it would kick a running rtaudio off the broker.
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"rtaudio-doctor-{site}", protocol=protocol)
    apply_credentials(client, mqtt)
    answered, result = threading.Event(), []

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        result.append(reason)
        answered.set()

    client.on_connect = on_connect
    client.connect(mqtt.broker, mqtt.port, keepalive=max(5, int(timeout) + 5))
    client.loop_start()
    try:
        answered.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0] if result else None


def _check_embedded_port(port: int) -> Check:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            return Check("broker", "error", f"embedded broker: 127.0.0.1:{port} is taken ({exc.strerror})", "stop what listens there or set mqtt.port", True)
    return Check("broker", "ok", f"embedded broker: `rtaudio run` starts it on 127.0.0.1:{port} (port free; demos only)", required=True)


def _check_microphones(config: Any) -> list[Check]:
    from rtaudio.runtime.sources.microphone import DeviceError, resolve_device

    checks = []
    for source in (s for s in config.sources if s.enabled and s.type == "microphone"):
        name = f"microphone {source.id}"
        try:
            device = resolve_device(source.device)
        except (DeviceError, OSError, RuntimeError) as exc:
            checks.append(Check(name, "error", str(exc), "set device: to an index or name from `rtaudio devices`", True))
            continue
        if source.channel >= device["max_input_channels"]:
            checks.append(
                Check(
                    name,
                    "error",
                    f"channel {source.channel} but {device['name']} has {device['max_input_channels']} input channel(s)",
                    f"set channel: to 0..{device['max_input_channels'] - 1}",
                    True,
                )
            )
            continue
        checks.append(Check(name, "ok", f"[{device['index']}] {device['name']}, channel {source.channel}", required=True))
    return checks


# ---------------------------------------------------------------- report


def run_doctor(config: Path | None = None) -> list[Check]:
    """Machine checks, plus the site's when ``config`` is given."""
    return machine_checks() + (config_checks(config) if config is not None else [])


def report_json(checks: list[Check]) -> dict[str, Any]:
    return {"ok": all(c.ok for c in checks if c.required), "checks": [asdict(c) for c in checks]}


def print_report(checks: list[Check]) -> None:
    """One line per check (status, name, what was found), then what to do where something is not ok."""
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = f"{c.status}{'!' if c.required and not c.ok else ''}"
        print(f"{mark:<8} {c.name:<{width}}  {c.detail}")
        if c.fix and not c.ok:
            print(f"{'':<8} {'':<{width}}  -> {c.fix}")
    failed = [c.name for c in checks if c.required and not c.ok]
    print(f"\nnot usable (required, marked !): {', '.join(failed)}" if failed else "\neverything required is usable")
