"""RTP packets (RFC 3550 section 5.1): header parsing with every malformation named."""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
RTCP_TYPES = range(72, 77)  # RTCP SR/RR/SDES/BYE/APP seen as an RTP payload type (RFC 5761)


@dataclass(frozen=True)
class RtpPacket:
    """One parsed RTP packet; ``payload`` excludes CSRCs, extension and padding."""

    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse an RTP packet (RFC 3550 section 5.1); ValueError says what is malformed."""
    if len(data) < 12:
        raise ValueError(f"RTP packet of {len(data)} bytes is shorter than the 12-byte header")
    b0, b1, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", data)
    if b0 >> 6 != RTP_VERSION:
        raise ValueError(f"RTP version {b0 >> 6}; only version 2 is allowed")
    offset = 12 + 4 * (b0 & 0x0F)
    if len(data) < offset:
        raise ValueError(f"packet of {len(data)} bytes too short for {b0 & 0x0F} CSRCs")
    csrcs = struct.unpack_from(f"!{b0 & 0x0F}I", data, 12)
    if b0 & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if len(data) < offset + 4:
            raise ValueError("packet too short for its header extension")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
        if len(data) < offset:
            raise ValueError(f"header extension of {words} words runs past the packet end")
    end = len(data)
    if b0 & 0x20:  # padding: the last byte counts the padding bytes, itself included
        pad = data[-1]
        if pad == 0 or end - pad < offset:
            raise ValueError(f"padding of {pad} bytes is invalid for a {len(data)}-byte packet")
        end -= pad
    return RtpPacket(b1 & 0x7F, bool(b1 & 0x80), sequence, timestamp, ssrc, csrcs, bytes(data[offset:end]))
