"""The jitter buffer: packets of one RTP session, in any order, -> contiguous mono audio.

Reordered within a bounded delay, lost packets concealed with silence of the length the RTP
timestamps say is missing, SSRC changes and sequence jumps turned into explicit
discontinuities. Free of sockets and clocks so it can be tested with synthetic packets.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from rtaudio.runtime.sources.rtp.codecs import PayloadFormat
from rtaudio.runtime.sources.rtp.packet import RtpPacket

log = logging.getLogger(__name__)

MAX_DROPOUT = 3000  # sequence jump forward beyond which the stream is presumed restarted (RFC 3550 A.1)
MAX_MISORDER = 100  # ... and backward
MAX_CONCEAL_S = 10.0  # a longer timestamp gap is a discontinuity, not silence to fill


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
