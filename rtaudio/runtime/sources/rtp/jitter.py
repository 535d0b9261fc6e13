"""The jitter buffer: packets of one RTP session, in any order, -> contiguous mono audio.

Reordered within a bounded delay, lost packets concealed with silence of the length the RTP
timestamps say is missing (at most ``CONCEAL_DELAYS`` jitter delays), SSRC changes, sequence
jumps and longer timestamp jumps turned into explicit discontinuities, each with its reason.
Free of sockets, clocks and logging so it can be tested with synthetic packets; the source
logs the reasons (rate-limited) and copies the counters into health.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np

from rtaudio.runtime.sources.rtp.codecs import PayloadFormat
from rtaudio.runtime.sources.rtp.packet import RtpPacket

MAX_DROPOUT = 3000  # sequence jump forward beyond which the stream is presumed restarted (RFC 3550 A.1)
MAX_MISORDER = 100  # ... and backward
# Silence fills a timestamp gap of at most CONCEAL_DELAYS jitter delays (and at least MIN_CONCEAL_S, so a
# zero-delay buffer still bridges a lost packet). The buffer reorders within one delay; a longer hole is an
# outage, a pause or a jump, re-anchored on the wall clock as a new stream instead of filled: 10 s of
# silence per packet would let any sender make the pipeline tag hours of invented audio a second.
CONCEAL_DELAYS = 2.0
MIN_CONCEAL_S = 0.1


@dataclass
class Block:
    """Contiguous audio out of the stream: ``samples`` start at extended RTP time ``rtp_time``.

    ``discontinuity`` marks the first block of a new stream (first packet, new SSRC, sequence
    resync, timestamp jump): timing must be re-anchored; ``reason`` says which. ``lost``
    counts packets missing just before it (their samples are concealed with silence at the
    head of ``samples``, unless it starts a new stream). ``arrival`` is the monotonic arrival
    time of the packet that ends the block.
    """

    samples: np.ndarray
    rtp_time: int
    arrival: float
    lost: int = 0
    discontinuity: bool = False
    reason: str = ""


def _signed(delta: int, bits: int) -> int:
    """Wrap a modular difference into [-2**(bits-1), 2**(bits-1))."""
    half = 1 << (bits - 1)
    return ((delta + half) & ((1 << bits) - 1)) - half


class RtpStream:
    """Jitter buffer and depacketiser for one receiving socket.

    A packet is played out when it, or any later-sequenced packet, has waited ``delay_s``, or
    when more than ``capacity`` packets are buffered. Packets older than the last one played
    are late (discarded, counted); a sequence gap at playout is loss (counted, concealed).
    ``jumps`` counts lone packets dropped for a wild sequence number (RFC 3550 A.1 probation).
    A timestamp gap longer than ``max_gap`` samples starts a new stream instead of silence.
    """

    def __init__(self, fmt: PayloadFormat, delay_s: float, capacity: int):
        if capacity < 1:
            raise ValueError(f"jitter buffer capacity {capacity} must be at least 1 packet")
        self.fmt, self.delay_s, self.capacity = fmt, delay_s, capacity
        self.max_gap = round(max(CONCEAL_DELAYS * delay_s, MIN_CONCEAL_S) * fmt.rate)
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
        self._fresh: str | None = "first packet"  # why the next block starts a new stream; None: it continues

    def __len__(self) -> int:
        return len(self._packets)

    def push(self, packet: RtpPacket, now: float) -> list[Block]:
        """Buffer one packet arriving at monotonic ``now``; returns the blocks that became due."""
        out: list[Block] = []
        if packet.ssrc != self._ssrc:
            reason = f"SSRC changed {self._ssrc:08x} -> {packet.ssrc:08x}" if self._ssrc is not None else "first packet"
            out += self._restart(packet.ssrc, reason)
        jump = self._jump(packet.sequence)
        if jump == "restart":
            out += self._restart(packet.ssrc, f"sequence of SSRC {packet.ssrc:08x} jumped to {packet.sequence}")
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

    def _restart(self, ssrc: int, reason: str) -> list[Block]:
        out = self.flush()
        self._ssrc = ssrc
        self._reset()
        self._fresh = reason
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
        if self._next_time is None or self._fresh is not None:
            start, gap = packet.timestamp, 0
        else:
            gap = _signed(packet.timestamp - self._next_time, 32)
            start = self._next_time + gap
            if abs(gap) > self.max_gap:  # more than the buffer could have been waiting for: a new stream, not silence
                self._fresh = f"timestamp of SSRC {self._ssrc:08x} jumped {gap / self.fmt.rate:+.3f} s"
                gap = 0
            elif gap < 0:  # overlaps what was played: keep only the new part
                samples, start, gap = samples[-gap:], self._next_time, 0
        reason, self._fresh = self._fresh, None
        self._next_time = start + samples.size
        if gap > 0:
            samples = np.concatenate([np.zeros(gap, dtype=np.float32), samples])
            start -= gap
        return Block(samples, start, arrival, lost, reason is not None, reason or "")
