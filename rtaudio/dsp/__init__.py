"""Exportable torch front-ends (raw waveform in), built from fixed buffers so ONNX/TensorRT compute what training computed."""

from rtaudio.dsp.mel import LogMel
from rtaudio.dsp.mfcc import MFCC
from rtaudio.dsp.pitch import PitchSalience, Voicing
from rtaudio.dsp.sfx_mel import SfxLogMel
from rtaudio.dsp.stft import ConvSTFT
from rtaudio.dsp.timbre import SpectralDescriptors

__all__ = ["ConvSTFT", "LogMel", "MFCC", "PitchSalience", "SfxLogMel", "SpectralDescriptors", "Voicing"]
