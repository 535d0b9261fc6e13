"""RTP audio payloads (RFC 3551): L16, L24, G.711 mu-law and A-law bytes -> float32 mono."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _ulaw_table() -> np.ndarray:
    """G.711 mu-law byte -> 16-bit linear, as in ITU-T G.711 / ffmpeg."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    """G.711 A-law byte -> 16-bit linear, as in ITU-T G.711 / ffmpeg."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


ULAW_TABLE = _ulaw_table()
ALAW_TABLE = _alaw_table()


def _decode_samples(payload: bytes, fmt: str) -> np.ndarray:
    """Bytes -> float32 in [-1, 1), still interleaved."""
    raw = np.frombuffer(payload, dtype=np.uint8)
    if fmt == "L16":
        return np.frombuffer(payload, dtype=">i2").astype(np.float32) / 32768.0
    if fmt == "L24":
        b = raw.reshape(-1, 3).astype(np.int32)
        value = (b[:, 0] << 24 | b[:, 1] << 16 | b[:, 2] << 8) >> 8  # sign-extends through bit 31
        return value.astype(np.float32) / 8388608.0
    if fmt == "PCMU":
        return ULAW_TABLE[raw].astype(np.float32) / 32768.0
    if fmt == "PCMA":
        return ALAW_TABLE[raw].astype(np.float32) / 32768.0
    raise ValueError(f"payload format {fmt!r} is not one of L16, L24, PCMU, PCMA")


SAMPLE_BYTES = {"L16": 2, "L24": 3, "PCMU": 1, "PCMA": 1}
# RFC 3551 table 4: static payload type -> (encoding, clock rate, channels). A static type fixes all three,
# so PT 10/11 (L16 at 44.1 kHz) must not be decoded as a 48 kHz stream: wrong pitch and timing.
STATIC_TYPES: dict[int, tuple[str, int, int]] = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1), 10: ("L16", 44100, 2), 11: ("L16", 44100, 1)}
DYNAMIC_TYPES = range(96, 128)


@dataclass(frozen=True)
class PayloadFormat:
    """How to turn payload bytes into mono audio: encoding, clock rate, interleaved channels."""

    name: str
    rate: int
    channels: int = 1

    def __post_init__(self) -> None:
        if self.name not in SAMPLE_BYTES:
            raise ValueError(f"payload format {self.name!r} is not one of {', '.join(SAMPLE_BYTES)}")

    @property
    def frame_bytes(self) -> int:
        return SAMPLE_BYTES[self.name] * self.channels

    def accepts(self, payload_type: int) -> bool:
        """True for any dynamic payload type (96-127, whose meaning the configuration gives) and for
        a static one only when its RFC 3551 encoding, rate and channels are this format's."""
        return payload_type in DYNAMIC_TYPES or STATIC_TYPES.get(payload_type) == (self.name, self.rate, self.channels)

    def refusal(self, payload_type: int) -> str:
        """Why ``payload_type`` is not accepted, naming what it is and what this format takes."""
        static = [str(pt) for pt, spec in STATIC_TYPES.items() if spec == (self.name, self.rate, self.channels)]
        takes = f"static type {' or '.join(static)} or dynamic 96-127" if static else "dynamic types 96-127 only"
        if payload_type in STATIC_TYPES:
            name, rate, channels = STATIC_TYPES[payload_type]
            what = f"static type {payload_type} is {name} at {rate} Hz, {channels} channel(s) (RFC 3551)"
        else:
            what = f"payload type {payload_type} is not a type this source decodes"
        return f"{what}; configured {self.name} at {self.rate} Hz, {self.channels} channel(s) takes {takes}"

    def frames(self, payload: bytes) -> int:
        return len(payload) // self.frame_bytes

    def decode(self, payload: bytes) -> np.ndarray:
        """Payload -> float32 mono (channels averaged); a trailing partial frame is ignored."""
        usable = self.frames(payload) * self.frame_bytes
        samples = _decode_samples(payload[:usable], self.name)
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1)
        return samples
