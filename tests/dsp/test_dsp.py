"""The in-graph front-end against librosa on real signals, and through ONNX Runtime."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
librosa = pytest.importorskip("librosa")

from rtaudio.dsp import ConvSTFT, LogMel  # noqa: E402
from rtaudio.train.synth import synth_event  # noqa: E402

SR = 16000


def signals() -> dict[str, np.ndarray]:
    t = np.arange(SR) / SR
    rng = np.random.default_rng(0)
    return {
        "tone": (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        "chirp": (0.3 * np.sin(2 * np.pi * (100 * t + 3000 * t**2))).astype(np.float32),
        "noise": (0.1 * rng.standard_normal(SR)).astype(np.float32),
        "speech": np.resize(synth_event("speech", rng, SR), SR),
        "glass": np.resize(synth_event("glass_break", rng, SR), SR),
    }


@pytest.mark.parametrize("name", list(signals()))
def test_conv_stft_matches_librosa(name: str) -> None:
    x = signals()[name]
    ours = ConvSTFT(512, 160)(torch.from_numpy(x)[None])[0].numpy()
    ref = np.abs(librosa.stft(x, n_fft=512, hop_length=160, center=True, pad_mode="constant")) ** 2
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-4 * ref.max()  # relative to the peak bin


@pytest.mark.parametrize("name", list(signals()))
def test_log_mel_matches_librosa(name: str) -> None:
    x = signals()[name]
    ours = LogMel(SR, 512, 160, 64, fmin=50.0)(torch.from_numpy(x)[None])[0].numpy()
    mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=512, hop_length=160, n_mels=64, fmin=50.0, center=True, pad_mode="constant", power=2.0)
    ref = np.log(mel + 1e-6)
    assert np.abs(ours - ref).max() < 1e-3  # log domain, absolute


def test_log_mel_exports_and_runs_in_onnxruntime() -> None:
    ort = pytest.importorskip("onnxruntime")
    module = LogMel().eval()
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (torch.zeros(1, SR),),
        buffer,
        input_names=["waveform"],
        output_names=["logmel"],
        dynamic_axes={"waveform": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    x = np.stack(list(signals().values()))
    got = session.run(None, {"waveform": x})[0]
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    assert np.abs(got - expected).max() < 1e-3
    ops = {node.op_type for node in __import__("onnx").load_from_string(buffer.getvalue()).graph.node}
    assert not ops & {"STFT", "DFT"}  # convolution only: TensorRT-friendly
