"""Exportable torch front-ends (raw waveform in), built from fixed buffers so ONNX/TensorRT compute what training computed."""

from rtaudio.dsp.mel import LogMel
from rtaudio.dsp.stft import ConvSTFT

__all__ = ["ConvSTFT", "LogMel"]
