"""``rtaudio doctor``: real ONNX Runtime and a real mosquitto; what depends on the host (GPU,
CUDA driver, TensorRT, sound cards) is set by the test, so every outcome is checked on any machine."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import soundfile as sf

from rtaudio import doctor
from rtaudio.cli import main
from rtaudio.doctor import Check, config_checks, report_json, run_doctor
from rtaudio.runtime.sources import microphone
from tests.helpers import free_port, tiny_site
from tests.tinymodel import tone


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def site(tmp_path: Path, mqtt: str, sources: str = "") -> Path:
    """A site.yaml with the tiny model, one file source and the given mqtt block."""
    tiny_site(tmp_path)
    path = tmp_path / "site.yaml"
    path.write_text(f"site: doc\nmodel: model\nengine: onnxruntime\n{mqtt}\nsources:\n  - {{id: clip, type: file, path: clip.wav}}\n{sources}")
    return path


def nvidia_stack(monkeypatch: pytest.MonkeyPatch, present: bool) -> None:
    """This host's GPU, CUDA driver and TensorRT, as the doctor probes them, made present or absent."""
    monkeypatch.setattr(doctor, "gpu_names", lambda: ["NVIDIA H200, 9.0, 143771 MiB"] if present else [])
    monkeypatch.setattr(doctor, "cuda_driver_version", lambda: "12.8" if present else None)
    is_file = Path.is_file  # absent means no kernel driver either (else the gpu check is an error, not missing)
    monkeypatch.setattr(Path, "is_file", lambda self: present if str(self) == "/proc/driver/nvidia/version" else is_file(self))
    tensorrt = types.ModuleType("tensorrt")
    tensorrt.__version__ = "10.3.0"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt if present else None)  # None: import raises ImportError


def test_machine_report_names_what_is_missing_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    nvidia_stack(monkeypatch, present=False)
    checks = by_name(run_doctor())
    ort = checks["onnxruntime"]
    assert ort.status == "ok" and "CPUExecutionProvider" in ort.detail
    assert ort.required  # without TensorRT, ONNX Runtime is the engine
    assert checks["python"].ok and checks["paho-mqtt"].required
    assert not checks["torch"].required and "not needed by the runtime" in checks["torch"].detail
    trt = checks["tensorrt"]
    assert trt.status == "missing" and "not importable" in trt.detail and "JetPack" in trt.detail
    assert checks["gpu"].status == "missing" and "nvidia-smi" in checks["gpu"].detail and checks["gpu"].fix
    assert checks["cuda"].status == "missing" and "libcuda" in checks["cuda"].detail
    assert report_json(list(checks.values()))["ok"]  # nothing the bare runtime needs is missing


def test_machine_report_with_a_gpu_cuda_and_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    nvidia_stack(monkeypatch, present=True)
    checks = by_name(run_doctor())
    assert checks["gpu"].ok and "NVIDIA H200" in checks["gpu"].detail
    assert checks["cuda"].ok and "CUDA driver API 12.8" in checks["cuda"].detail
    assert checks["tensorrt"].ok and checks["tensorrt"].detail == "TensorRT 10.3.0"
    assert checks["onnxruntime"].ok and not checks["onnxruntime"].required  # TensorRT can serve instead
    assert report_json(list(checks.values()))["ok"]


def test_broker_check_connects_to_a_real_mosquitto(tmp_path: Path, mosquitto, capsys) -> None:
    path = site(tmp_path, f"mqtt: {{broker: 127.0.0.1, port: {mosquitto.port}, protocol: '5'}}")
    checks = by_name(config_checks(path))
    assert checks["config"].ok and checks["model"].ok
    assert checks["engine"].ok and "onnxruntime" in checks["engine"].detail
    assert checks["broker"].ok, checks["broker"].detail
    assert f"127.0.0.1:{mosquitto.port}" in checks["broker"].detail and "CONNECT accepted" in checks["broker"].detail
    assert main(["doctor", "--config", str(path)]) == 0
    assert "everything required is usable" in capsys.readouterr().out


def test_broker_check_fails_on_a_closed_port_naming_host_and_port(tmp_path: Path, capsys) -> None:
    port = free_port()  # nothing listens there
    path = site(tmp_path, f"mqtt: {{broker: 127.0.0.1, port: {port}}}")
    broker = by_name(config_checks(path))["broker"]
    assert broker.status == "error" and broker.required
    assert f"127.0.0.1:{port}" in broker.detail and "not reachable" in broker.detail
    assert main(["doctor", "--config", str(path)]) == 1
    assert "not usable (required, marked !): broker" in capsys.readouterr().out


def test_broker_check_reports_refused_credentials(tmp_path: Path, make_mosquitto) -> None:
    broker = make_mosquitto(users={"rtaudio": "s3cret"})
    good = site(tmp_path / "good", f"mqtt: {{broker: 127.0.0.1, port: {broker.port}, username: rtaudio, password: s3cret}}")
    bad = site(tmp_path / "bad", f"mqtt: {{broker: 127.0.0.1, port: {broker.port}, username: rtaudio, password: wrong}}")
    assert by_name(config_checks(good))["broker"].ok
    refused = by_name(config_checks(bad))["broker"]
    assert refused.status == "error" and "refused" in refused.detail and "password" in refused.fix


def test_config_problems_and_a_missing_microphone_are_required_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usb = {"index": 3, "name": "USB Audio Device", "hostapi": "ALSA", "max_input_channels": 1, "default_samplerate": 48000.0, "is_default": True}
    monkeypatch.setattr(microphone, "list_input_devices", lambda: [usb])  # this host's sound cards, whatever they are
    broken = tmp_path / "broken.yaml"
    broken.write_text("site: doc\nsources: []\n")
    config = by_name(config_checks(broken))["config"]
    assert config.status == "error" and config.required and "model" in config.detail

    path = site(tmp_path, "mqtt: null", "  - {id: lobby, type: microphone, device: 'No Such Microphone'}\n")
    mic = by_name(config_checks(path))["microphone lobby"]
    assert mic.status == "error" and mic.required and "No Such Microphone" in mic.detail
    assert "[3] USB Audio Device" in mic.detail  # and the devices there are

    path = site(tmp_path / "usb", "mqtt: null", "  - {id: lobby, type: microphone, device: 'USB Audio'}\n")
    mic = by_name(config_checks(path))["microphone lobby"]
    assert mic.ok and mic.required and mic.detail == "[3] USB Audio Device, channel 0"


def test_json_report_parses(capsys) -> None:
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    names = [c["name"] for c in report["checks"]]
    assert {"python", "gpu", "cuda", "tensorrt", "onnxruntime", "torch", "portaudio", "ffmpeg"} <= set(names)
    assert all(c["status"] in ("ok", "missing", "error") for c in report["checks"])
    assert all(isinstance(c["detail"], str) and c["detail"] for c in report["checks"])


def test_text_heads_check_reads_queries_and_refuses_missing_heads(tmp_path: Path) -> None:
    default = Path(__file__).resolve().parents[1] / "engines" / "default"
    sf.write(tmp_path / "clip.wav", tone(440, 1.0), 16000)
    path = tmp_path / "site.yaml"
    path.write_text(
        f"site: doc\nmodel: {default}\nmqtt: null\nsources:\n  - {{id: clip, type: file, path: clip.wav}}\n"
        "captions: {every_s: 4}\nqueries:\n  leak: water dripping or leaking\n"
    )
    heads = by_name(config_checks(path))["text heads"]
    assert heads.status == "ok" and "leak reads as 'water'" in heads.detail and "dripping" in heads.detail
    path.write_text(path.read_text().replace("water dripping or leaking", "zzyzx qwerty"))
    heads = by_name(config_checks(path))["text heads"]
    assert heads.status == "error" and heads.required and "zzyzx" in heads.detail
    tiny = site(tmp_path / "tiny", "mqtt: null", "captions: {every_s: 4}\n")  # a model without heads
    heads = by_name(config_checks(tiny))["text heads"]
    assert heads.status == "error" and "caption_audio.onnx" in heads.detail


def test_http_check_binds_the_listen_address_and_names_a_port_in_use(tmp_path: Path) -> None:
    import socket

    port = free_port()
    path = site(tmp_path, "mqtt: null", f'http: {{listen: "127.0.0.1:{port}"}}\n')
    http = by_name(config_checks(path))["http"]
    assert http.ok and http.required and f"127.0.0.1:{port}" in http.detail
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        http = by_name(config_checks(path))["http"]
    assert http.status == "error" and http.required
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in http.detail
    path.write_text(path.read_text().replace(f'"127.0.0.1:{port}"', '"192.0.2.1:9108", token: t0ken'))  # TEST-NET-1: not this machine
    http = by_name(config_checks(path))["http"]
    assert http.status == "error" and "192.0.2.1:9108: the host is not an address of this machine" in http.detail
    assert "http" not in by_name(config_checks(site(tmp_path / "off", "mqtt: null")))
