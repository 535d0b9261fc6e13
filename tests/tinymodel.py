"""A tiny, deterministic, torch-free model that follows the contract, for testing every backend.

The graph is built by hand with ``onnx.helper``; nothing is trained, so its scores are known
in advance:

- ``tone_<hz>``: energy at ``hz`` (cos/sin projection, one MatMul) over total energy, scaled
  so a pure tone gives 1 and noise or another tone gives ~0, through a sigmoid.
- ``noise``: energy of the first difference over energy (2 for white noise, ~0.03 for a
  440 Hz tone), through a sigmoid centred at 1.
- every score is gated by loudness (mean power above -50 dBFS), so silence scores ~0.

``embedding`` [batch, 8] holds the raw features. ``with_torch=True`` also writes an equivalent
TorchScript ``model.pt`` (when torch is importable) so the torch engine runs the same model.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rtaudio.contract import ModelDir, write_model_dir
from rtaudio.contract.files import TORCHSCRIPT_FILE as TORCH_FILE

EMBEDDING_DIM = 8
OPSET = 17
TONE_GAIN = 20.0  # logit = gain * (ratio - 0.5): pure tone -> +10, none -> -10
NOISE_GAIN = 10.0  # logit = gain * (diff_ratio - 1): white noise -> +10, 440 Hz tone -> -9.7
GATE_POWER = 1e-5  # mean power of -50 dBFS
GATE_GAIN = 2.0  # gate = sigmoid(gain * ln(power / GATE_POWER))
EPS = 1e-12


def _parse_labels(labels: Sequence[str], sample_rate: int) -> list[float]:
    """Frequencies of the ``tone_<hz>`` labels, in order; refuse anything else but ``noise``."""
    freqs: list[float] = []
    for label in labels:
        match = re.fullmatch(r"tone_(\d+(?:\.\d+)?)", label)
        if match:
            hz = float(match.group(1))
            if not 0 < hz < sample_rate / 2:
                raise ValueError(f"label {label!r}: {hz} Hz must lie in (0, {sample_rate / 2}) Hz")
            freqs.append(hz)
        elif label != "noise":
            raise ValueError(f"label {label!r} not understood; allowed: 'tone_<hz>' or 'noise'")
    if list(labels).count("noise") > 1 or not freqs and "noise" not in labels:
        raise ValueError(f"labels {list(labels)}: need at least one label and at most one 'noise'")
    return freqs


def _basis(freqs: Sequence[float], sample_rate: int, samples: int) -> np.ndarray:
    """[samples, 2K] cos/sin bases, scaled so a pure tone's |X|^2 / energy is 1."""
    t = np.arange(samples, dtype=np.float64) / sample_rate
    cols = [np.cos(2 * math.pi * f * t) for f in freqs] + [np.sin(2 * math.pi * f * t) for f in freqs]
    return (np.stack(cols, axis=1) * math.sqrt(2.0 / samples)).astype(np.float32)


def _onnx_graph(labels: Sequence[str], freqs: Sequence[float], basis: np.ndarray, samples: int) -> onnx.ModelProto:
    k = len(freqs)
    const = {
        "basis": basis,
        "eps": np.array(EPS, np.float32),
        "half": np.array(0.5, np.float32),
        "one": np.array(1.0, np.float32),
        "tone_gain": np.array(TONE_GAIN, np.float32),
        "noise_gain": np.array(NOISE_GAIN, np.float32),
        "gate_gain": np.array(GATE_GAIN, np.float32),
        "log_gate": np.array(math.log(GATE_POWER), np.float32),
        "inv_n": np.array(1.0 / samples, np.float32),
        "s0": np.array([0], np.int64),
        "s1": np.array([1], np.int64),
        "sk": np.array([k], np.int64),
        "s2k": np.array([2 * k], np.int64),
        "sm1": np.array([-1], np.int64),
        "big": np.array([samples], np.int64),
    }
    nodes = [
        helper.make_node("ReduceSumSquare", ["waveform"], ["energy"], axes=[1], keepdims=1),
        helper.make_node("Add", ["energy", "eps"], ["energy_e"]),
        helper.make_node("Mul", ["energy", "inv_n"], ["power"]),
        helper.make_node("Add", ["power", "eps"], ["power_e"]),
        helper.make_node("Log", ["power_e"], ["log_power"]),
        helper.make_node("Sub", ["log_power", "log_gate"], ["gate_in"]),
        helper.make_node("Mul", ["gate_in", "gate_gain"], ["gate_logit"]),
        helper.make_node("Sigmoid", ["gate_logit"], ["gate"]),
        # noise: energy of the first difference over energy
        helper.make_node("Slice", ["waveform", "s1", "big", "s1"], ["x_tail"]),
        helper.make_node("Slice", ["waveform", "s0", "sm1", "s1"], ["x_head"]),
        helper.make_node("Sub", ["x_tail", "x_head"], ["dx"]),
        helper.make_node("ReduceSumSquare", ["dx"], ["d_energy"], axes=[1], keepdims=1),
        helper.make_node("Div", ["d_energy", "energy_e"], ["d_ratio"]),
        helper.make_node("Sub", ["d_ratio", "one"], ["noise_c"]),
        helper.make_node("Mul", ["noise_c", "noise_gain"], ["noise_logit"]),
        helper.make_node("Sigmoid", ["noise_logit"], ["noise_raw"]),
        helper.make_node("Mul", ["noise_raw", "gate"], ["noise_score"]),
    ]
    parts = {"noise": "noise_score"}
    ratio_name = "power"  # stands in for the tone ratio when there are no tones
    if k:
        nodes += [
            helper.make_node("MatMul", ["waveform", "basis"], ["proj"]),
            helper.make_node("Mul", ["proj", "proj"], ["proj2"]),
            helper.make_node("Slice", ["proj2", "s0", "sk", "s1"], ["cos2"]),
            helper.make_node("Slice", ["proj2", "sk", "s2k", "s1"], ["sin2"]),
            helper.make_node("Add", ["cos2", "sin2"], ["mag2"]),
            helper.make_node("Div", ["mag2", "energy_e"], ["tone_ratio"]),
            helper.make_node("Sub", ["tone_ratio", "half"], ["tone_c"]),
            helper.make_node("Mul", ["tone_c", "tone_gain"], ["tone_logit"]),
            helper.make_node("Sigmoid", ["tone_logit"], ["tone_raw"]),
            helper.make_node("Mul", ["tone_raw", "gate"], ["tone_score"]),
        ]
        ratio_name = "tone_ratio"
        for i, label in enumerate(lb for lb in labels if lb != "noise"):
            const[f"i{i}"], const[f"j{i}"] = np.array([i], np.int64), np.array([i + 1], np.int64)
            nodes.append(helper.make_node("Slice", ["tone_score", f"i{i}", f"j{i}", "s1"], [f"score_{i}"]))
            parts[label] = f"score_{i}"
    nodes.append(helper.make_node("Concat", [parts[lb] for lb in labels], ["scores"], axis=1))
    # embedding: 8 raw features, padded by repeating the tone ratio columns when few tones
    feats = ["d_ratio", "log_power", "gate", "noise_raw"]
    nodes.append(helper.make_node("Concat", feats + [ratio_name] * 4, ["emb_wide"], axis=1))
    const["e8"] = np.array([EMBEDDING_DIM], np.int64)
    nodes.append(helper.make_node("Slice", ["emb_wide", "s0", "e8", "s1"], ["embedding"]))
    graph = helper.make_graph(
        nodes,
        "rtaudio_tiny",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", samples])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", len(labels)]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBEDDING_DIM]),
        ],
        [numpy_helper.from_array(v, name) for name, v in const.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rtaudio-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _write_torch(path: Path, labels: Sequence[str], basis: np.ndarray, samples: int) -> None:
    """The same computation in torch, traced (batch stays dynamic) to ``model.pt``."""
    import torch

    noise_idx = labels.index("noise") if "noise" in labels else -1

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("basis", torch.from_numpy(basis))
            self.k = basis.shape[1] // 2
            self.classes = len(labels)
            self.noise_idx = noise_idx

        def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            energy = (waveform * waveform).sum(dim=1, keepdim=True)
            log_power = torch.log(energy * (1.0 / samples) + EPS)
            gate = torch.sigmoid((log_power - math.log(GATE_POWER)) * GATE_GAIN)
            dx = waveform[:, 1:] - waveform[:, :-1]
            d_ratio = (dx * dx).sum(dim=1, keepdim=True) / (energy + EPS)
            noise_raw = torch.sigmoid((d_ratio - 1.0) * NOISE_GAIN)
            cols: list[torch.Tensor] = []
            ratio = energy * (1.0 / samples)
            if self.k > 0:
                proj = waveform @ self.basis
                ratio = (proj[:, : self.k] ** 2 + proj[:, self.k :] ** 2) / (energy + EPS)
                tones = torch.sigmoid((ratio - 0.5) * TONE_GAIN) * gate
            else:
                tones = ratio
            t = 0
            for i in range(self.classes):
                if i == self.noise_idx:
                    cols.append(noise_raw * gate)
                else:
                    cols.append(tones[:, t : t + 1])
                    t += 1
            feats = torch.cat([d_ratio, log_power, gate, noise_raw] + [ratio] * 4, dim=1)
            return torch.cat(cols, dim=1), feats[:, :EMBEDDING_DIM]

    example = torch.zeros(2, samples)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what the torch engine loads
        torch.jit.trace(Tiny().eval(), example).save(str(path / TORCH_FILE))


def make_tiny_model(
    path: str | Path,
    labels: Sequence[str] = ("tone_440", "tone_1000", "noise"),
    sample_rate: int = 16000,
    window_s: float = 1.0,
    hop_s: float = 0.5,
    with_torch: bool = False,
    thresholds: Sequence[float] | None = None,
) -> ModelDir:
    """Write a contract-following tiny model directory at ``path`` and return it, checked."""
    labels = list(labels)
    freqs = _parse_labels(labels, sample_rate)
    samples = round(window_s * sample_rate)
    basis = _basis(freqs, sample_rate, samples)
    model = _onnx_graph(labels, freqs, basis, samples)
    root = Path(path)
    model_dir = write_model_dir(
        root,
        model.SerializeToString(),
        model_id="tiny",
        version="1",
        labels=labels,
        thresholds=list(thresholds) if thresholds is not None else [0.5] * len(labels),
        sample_rate=sample_rate,
        window_s=window_s,
        hop_s=hop_s,
        embedding_dim=EMBEDDING_DIM,
        streams=["test-dft"],
        extra={"purpose": "tests: fixed DFT projection, not trained"},
    )
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            return model_dir
        _write_torch(root, labels, basis, samples)
    return model_dir


def tone(hz: float, seconds: float = 1.0, amplitude: float = 0.3, sample_rate: int = 16000, phase: float = 0.0) -> np.ndarray:
    """A float32 sine, the signal the tiny model's tone classes respond to."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * math.pi * hz * t + phase)).astype(np.float32)


def white_noise(seconds: float = 1.0, amplitude: float = 0.3, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Float32 white noise of RMS ``amplitude``, deterministic by seed."""
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(round(seconds * sample_rate))).astype(np.float32)
