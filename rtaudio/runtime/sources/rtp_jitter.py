"""RTP without sockets: header parsing (RFC 3550), payload decoding (RFC 3551), jitter buffer.

``RtpStream`` turns packets of one session, in any order, into contiguous mono audio at the
stream rate: reordered within a bounded delay, lost packets concealed with silence of the
length the RTP timestamps say is missing, SSRC changes and sequence jumps turned into
explicit discontinuities. Kept free of sockets and clocks so it can be tested with
synthetic packets.
"""

from __future__ import annotations

import heapq
import logging
import struct
from collections import deque
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

RTP_VERSION = 2
MAX_DROPOUT = 3000  # sequence jump forward beyond which the stream is presumed restarted (RFC 3550 A.1)
MAX_MISORDER = 100  # ... and backward
MAX_CONCEAL_S = 10.0  # a longer timestamp gap is a discontinuity, not silence to fill
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
STATIC_TYPES = {"L16": (10, 11), "L24": (), "PCMU": (0,), "PCMA": (8,)}  # RFC 3551 table 4


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
        """True for this format's static payload types and any dynamic one (96-127)."""
        return payload_type >= 96 or payload_type in STATIC_TYPES[self.name]

    def frames(self, payload: bytes) -> int:
        return len(payload) // self.frame_bytes

    def decode(self, payload: bytes) -> np.ndarray:
        """Payload -> float32 mono (channels averaged); a trailing partial frame is ignored."""
        usable = self.frames(payload) * self.frame_bytes
        samples = _decode_samples(payload[:usable], self.name)
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1)
        return samples


@dataclass
class Block:
    """Contiguous audio out of the stream: ``samples`` start at extended RTP time ``rtp_time``.

    ``discontinuity`` marks the first block of a new stream (first packet, new SSRC, sequence
    resync, long gap): timing must be re-anchored. ``lost`` counts packets missing just
    before it (their samples are concealed with silence at the head of ``samples``).
    ``arrival`` is the monotonic arrival time of the packet that ends the block.
    """

    samples: np.ndarray
    rtp_time: int
    arrival: float
    lost: int = 0
    discontinuity: bool = False


def _signed(delta: int, bits: int) -> int:
    """Wrap a modular difference into [-2**(bits-1), 2**(bits-1))."""
    half = 1 << (bits - 1)
    return ((delta + half) & ((1 << bits) - 1)) - half


class RtpStream:
    """Jitter buffer and depacketiser for one receiving socket.

    A packet is played out when it, or any later-sequenced packet, has waited ``delay_s``, or
    when more than ``capacity`` packets are buffered. Packets older than the last one played
    are late (discarded, counted); a sequence gap at playout is loss (counted, concealed).
    """

    def __init__(self, fmt: PayloadFormat, delay_s: float, capacity: int):
        if capacity < 1:
            raise ValueError(f"jitter buffer capacity {capacity} must be at least 1 packet")
        self.fmt, self.delay_s, self.capacity = fmt, delay_s, capacity
        self.late = self.duplicates = self.jumps = 0
        self._misorder = max(MAX_MISORDER, capacity)  # reordering the buffer can hold is never a "jump"
        self._ssrc: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._packets: dict[int, tuple[RtpPacket, float]] = {}  # extended sequence -> (packet, arrival)
        self._heap: list[int] = []  # extended sequences, lowest first
        self._order: deque[tuple[float, int]] = deque()  # (arrival, extended sequence) in arrival order
        self._highest: int | None = None  # highest extended sequence received
        self._played: int | None = None  # extended sequence played last
        self._next_time: int | None = None  # extended RTP time expected next
        self._bad_seq: int | None = None  # RFC 3550 probation after a big jump
        self._fresh = True

    def __len__(self) -> int:
        return len(self._packets)

    def push(self, packet: RtpPacket, now: float) -> list[Block]:
        """Buffer one packet arriving at monotonic ``now``; returns the blocks that became due."""
        out: list[Block] = []
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                log.info("RTP SSRC changed %08x -> %08x; new stream", self._ssrc, packet.ssrc)
            out += self._restart(packet.ssrc)
        jump = self._jump(packet.sequence)
        if jump == "restart":
            log.info("RTP sequence of SSRC %08x jumped to %d; new stream", packet.ssrc, packet.sequence)
            out += self._restart(packet.ssrc)
        ext = self._extend(packet.sequence)
        if jump == "drop":
            self.jumps += 1
        elif self._played is not None and ext <= self._played:
            self.late += 1
        elif ext in self._packets:
            self.duplicates += 1
        else:
            self._packets[ext] = (packet, now)
            heapq.heappush(self._heap, ext)
            self._order.append((now, ext))
            self._highest = max(self._highest, ext) if self._highest is not None else ext
        while len(self._packets) > self.capacity:
            out += self._play_through(self._heap[0])
        return out + self.poll(now)

    def poll(self, now: float) -> list[Block]:
        """Play out everything up to each packet that has waited ``delay_s``."""
        out: list[Block] = []
        while self._order:
            arrival, ext = self._order[0]
            if ext not in self._packets:
                self._order.popleft()
            elif now - arrival >= self.delay_s:
                out += self._play_through(ext)
            else:
                break
        return out

    def next_deadline(self) -> float | None:
        """Monotonic time at which ``poll`` will next have something to play, if any."""
        while self._order and self._order[0][1] not in self._packets:
            self._order.popleft()
        return self._order[0][0] + self.delay_s if self._order else None

    def flush(self) -> list[Block]:
        """Play out everything buffered (stream ending or changing)."""
        return self._play_through(self._heap[-1]) if self._heap else []

    def _restart(self, ssrc: int) -> list[Block]:
        out = self.flush()
        self._ssrc = ssrc
        self._reset()
        return out

    def _extend(self, sequence: int) -> int:
        """16-bit sequence -> extended, relative to the highest received (wraparound-safe)."""
        if self._highest is None:
            return sequence
        return self._highest + _signed(sequence - self._highest, 16)

    def _jump(self, sequence: int) -> str:
        """'ok', or for a jump beyond MAX_DROPOUT/MAX_MISORDER 'drop' until a second packet
        in sequence confirms that the sender restarted ('restart'), as RFC 3550 A.1 does."""
        if self._highest is None or -self._misorder <= _signed(sequence - self._highest, 16) <= MAX_DROPOUT:
            self._bad_seq = None
            return "ok"
        if sequence == self._bad_seq:
            return "restart"
        self._bad_seq = (sequence + 1) & 0xFFFF
        return "drop"

    def _play_through(self, last: int) -> list[Block]:
        out: list[Block] = []
        while self._heap and self._heap[0] <= last:
            ext = heapq.heappop(self._heap)
            packet, arrival = self._packets.pop(ext)
            out.append(self._play(ext, packet, arrival))
        return out

    def _play(self, ext: int, packet: RtpPacket, arrival: float) -> Block:
        lost = 0 if self._played is None else ext - self._played - 1
        self._played = ext
        samples = self.fmt.decode(packet.payload)
        if self._next_time is None or self._fresh:
            start, gap = packet.timestamp, 0
        else:
            gap = _signed(packet.timestamp - self._next_time, 32)
            start = self._next_time + gap
            if gap > MAX_CONCEAL_S * self.fmt.rate:
                log.info("RTP timestamp jumped %.1f s in SSRC %08x; new stream", gap / self.fmt.rate, self._ssrc)
                self._fresh, gap, lost = True, 0, 0
            elif gap < 0:  # overlaps what was played: keep only the new part
                samples, start, gap = samples[-gap:], self._next_time, 0
        discontinuity, self._fresh = self._fresh, False
        self._next_time = start + samples.size
        if gap > 0:
            samples = np.concatenate([np.zeros(gap, dtype=np.float32), samples])
            start -= gap
        return Block(samples, start, arrival, lost, discontinuity)
