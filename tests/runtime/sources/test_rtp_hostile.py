"""Hostile RTP stays cheap: a hand-written sender on real loopback sockets throws malformed packets,
refused payload types, timestamp jumps, SSRC changes, wild sequence numbers, duplicates, reordering,
late packets and a refused peer at a real ``RtpSource``. The log stays a few lines, health counts
every kind, and no invented silence comes out.

The issue's figure (a 100 s run writes under 200 log lines) is the same test run for 100 s:
``RTAUDIO_HOSTILE_RTP_S=100 .venv/bin/python -m pytest -q -p no:cacheprovider tests/runtime/sources/test_rtp_hostile.py -k long``.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest

from rtaudio.runtime.sources.rtp import RtpConfig, RtpSource
from tests.helpers import AudioSink, free_port, wait_until

MODEL_RATE = 16000
RATE = 48000
FRAMES = 960  # 20 ms at 48 kHz per packet
CYCLE_S = 0.02
LONG_S = float(os.environ.get("RTAUDIO_HOSTILE_RTP_S", "0"))


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 96) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


@dataclass
class Sent:
    """What the hostile sender sent, by kind."""

    counts: Counter[str] = field(default_factory=Counter)
    audio_s: float = 0.0  # audio in the packets meant to be played (each sent once in order or reordered)


def hostile_sender(port: int, seconds: float) -> Sent:
    """Every 20 ms: one good packet, plus one of each abuse on a schedule. Returns what was sent."""
    sent = Sent()
    rng = np.random.default_rng(7)
    payload = (np.sin(2 * np.pi * 440 * np.arange(FRAMES) / RATE) * 8000).astype(">i2").tobytes()
    target = ("127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        tx.bind(("127.0.0.1", 0))
        stranger.bind(("127.0.0.2", 0))  # loopback, but not in allow_from
        ssrc, seq, ts = 0x1000, 100, 0
        history: list[bytes] = []  # good packets of the current SSRC, for late resends
        held: bytes | None = None  # a good packet held back one cycle (reordering)
        start = time.monotonic()
        cycle = 0
        while time.monotonic() - start < seconds:
            cycle += 1
            if cycle % 50 == 0:  # a new SSRC with random sequence and timestamp
                if held is not None:
                    tx.sendto(held, target)
                ssrc, seq, ts = int(rng.integers(1, 2**32)), int(rng.integers(0, 2**16)), int(rng.integers(0, 2**32))
                history, held = [], None
                sent.counts["ssrc"] += 1
            elif cycle % 5 == 0:  # a timestamp jump just under the old 10 s cap, sequence continuing
                ts += int(9.9 * RATE)
                sent.counts["ts_jump"] += 1
            good = rtp(seq, ts, ssrc, payload)
            seq, ts = seq + 1, ts + FRAMES
            sent.audio_s += FRAMES / RATE
            if cycle % 4 == 1 and held is None:
                held = good  # sent after the next one
            else:
                tx.sendto(good, target)
                if held is not None:
                    tx.sendto(held, target)
                    held = None
                    sent.counts["reordered"] += 1
            history.append(good)
            tx.sendto(good, target)  # a duplicate (of a packet possibly still held: then it arrives first)
            sent.counts["duplicate"] += 1
            tx.sendto(b"\x80" + bytes(int(rng.integers(0, 11))), target)  # shorter than a header
            tx.sendto(bytes([0x40]) + bytes(20), target)  # RTP version 1
            tx.sendto(rtp(seq, ts, ssrc, payload[:400], pt=10), target)  # L16 44.1 kHz stereo on a 48 kHz mono source
            sent.counts["malformed"] += 3
            stranger.sendto(good, target)
            sent.counts["rejected"] += 1
            if cycle % 11 == 0:  # a lone wild sequence number
                tx.sendto(rtp(seq + 20_000, ts, ssrc, payload), target)
                sent.counts["wild"] += 1
            if len(history) > 12 and cycle % 3 == 0:  # a packet long played: late
                tx.sendto(history[-12], target)
                sent.counts["late"] += 1
            time.sleep(max(0.0, start + cycle * CYCLE_S - time.monotonic()))
        if held is not None:
            tx.sendto(held, target)
    return sent


class Lines(logging.Handler):
    """Every log record of rtaudio, any level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def hostile_run(seconds: float) -> tuple[Sent, RtpSource, AudioSink, Lines]:
    logger = logging.getLogger("rtaudio")
    lines, level = Lines(), logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.DEBUG)  # nothing may flood even at debug
    config = RtpConfig(id="rtp1", type="rtp", port=free_port(udp=True), sample_rate=RATE, jitter_ms=60, allow_from=["127.0.0.1"])
    sink = AudioSink()
    source = RtpSource(config, MODEL_RATE, sink)
    try:
        source.start()
        assert wait_until(lambda: source._sock is not None)
        sent = hostile_sender(config.port, seconds)
        expected_malformed = sent.counts["malformed"] + sent.counts["wild"]
        wait_until(lambda: source.health.packets_malformed >= expected_malformed and source.health.packets_rejected >= sent.counts["rejected"], timeout=10)
        assert wait_until(lambda: len(source.stream) == 0)  # the jitter buffer played its last packets
    finally:
        source.stop()
        logger.removeHandler(lines)
        logger.setLevel(level)
    return sent, source, sink, lines


def check(sent: Sent, source: RtpSource, sink: AudioSink, lines: Lines, seconds: float, max_lines: int) -> None:
    health = source.health.snapshot()
    # every dropped packet is counted, by kind
    assert health["packets_rejected"] == sent.counts["rejected"]
    assert health["packets_malformed"] == sent.counts["malformed"] + sent.counts["wild"]
    assert 0.8 * sent.counts["duplicate"] <= health["packets_duplicate"] <= sent.counts["duplicate"]
    assert 0.8 * sent.counts["late"] <= health["packets_late"] <= sent.counts["late"] + sent.counts["duplicate"]
    new_streams = sent.counts["ssrc"] + sent.counts["ts_jump"]
    assert 0.8 * new_streams <= health["discontinuities"] <= new_streams
    # no invented silence: what came out is about what was sent to be played (a 9.9 s fill per jump would be minutes)
    emitted_s = sink.samples / MODEL_RATE
    assert 0.8 * sent.audio_s <= emitted_s <= sent.audio_s + 0.12 * new_streams
    # the log stays short, and names what happened
    assert len(lines.records) < max_lines, Counter(r.getMessage()[:60] for r in lines.records).most_common(10)
    text = "\n".join(r.getMessage() for r in lines.records)
    for words in ("not in allow_from", "shorter than the 12-byte header", "static type 10 is L16 at 44100 Hz", "RTP stream restarted"):
        assert words in text
    assert source.alive is False and health["errors"] == 0


@pytest.mark.integration
def test_hostile_sender_is_counted_and_the_log_stays_short() -> None:
    seconds = 3.0
    sent, source, sink, lines = hostile_run(seconds)
    assert sum(sent.counts.values()) > 800 and all(sent.counts[k] >= 2 for k in ("ssrc", "ts_jump", "wild", "late"))  # the abuse happened
    check(sent, source, sink, lines, seconds, max_lines=50)


@pytest.mark.integration
@pytest.mark.skipif(LONG_S <= 0, reason="the long run is by hand: set RTAUDIO_HOSTILE_RTP_S=100")
def test_hostile_sender_long_run() -> None:
    sent, source, sink, lines = hostile_run(LONG_S)
    size = sum(len(r.getMessage()) + 1 for r in lines.records)
    print(f"\n{LONG_S:.0f} s hostile RTP: {sum(sent.counts.values())} abusive packets {dict(sent.counts)}; {len(lines.records)} log lines, {size} bytes")
    print(source.health.snapshot())
    check(sent, source, sink, lines, LONG_S, max_lines=200)
