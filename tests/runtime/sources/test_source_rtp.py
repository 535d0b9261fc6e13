"""RTP source: header parsing, payload decoders, jitter buffer, and the source on real sockets
with a real ffmpeg RTP sender (directly and through a lossy, reordering relay)."""

from __future__ import annotations

import logging
import socket
import struct
import subprocess
import threading
import time
from typing import Any

import numpy as np
import pytest

from rtaudio.config.load import load_site_config
from rtaudio.config.loader import ConfigError
from rtaudio.runtime.sources.rtp import RtpConfig, RtpSource
from rtaudio.runtime.sources.rtp import source as rtp_module
from rtaudio.runtime.sources.rtp.codecs import ALAW_TABLE, ULAW_TABLE, PayloadFormat
from rtaudio.runtime.sources.rtp.jitter import Block, RtpStream
from rtaudio.runtime.sources.rtp.packet import parse_rtp
from tests.helpers import AudioSink, free_port, needs_ffmpeg, wait_until

MODEL_RATE = 16000


def rtp_bytes(
    seq: int,
    ts: int,
    payload: bytes = b"",
    ssrc: int = 0x1234,
    pt: int = 96,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: bytes | None = None,
    padding: int = 0,
) -> bytes:
    """An RTP packet as a sender would write it."""
    b0 = 0x80 | len(csrcs) | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
    out = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if extension is not None:
        out += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    return out + payload + (bytes(padding - 1) + bytes([padding]) if padding else b"")


# ---------------------------------------------------------------- header parsing


def test_parse_plain_header() -> None:
    p = parse_rtp(rtp_bytes(513, 0xDEADBEEF, b"\x01\x02", ssrc=0xCAFEBABE, pt=11, marker=True))
    assert (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc) == (11, True, 513, 0xDEADBEEF, 0xCAFEBABE)
    assert p.csrcs == () and p.payload == b"\x01\x02"


def test_parse_skips_csrcs_extension_and_padding() -> None:
    data = rtp_bytes(7, 99, b"audio", csrcs=(1, 2, 3), extension=b"\xaa" * 8, padding=3)
    p = parse_rtp(data)
    assert p.csrcs == (1, 2, 3)
    assert p.payload == b"audio"


@pytest.mark.parametrize(
    "data, words",
    [
        (b"\x80\x60" + bytes(8), "shorter than the 12-byte header"),
        (b"\x40\x60" + bytes(10), "version 1"),
        (b"\x82\x60" + bytes(14), "CSRC"),
        (rtp_bytes(1, 1, extension=b"")[:-2], "extension"),
        (rtp_bytes(1, 1, extension=bytes(20))[:-16], "5 words runs past"),
        (rtp_bytes(1, 1, b"ab", padding=1)[:-1] + b"\x20", "padding of 32 bytes"),
        (rtp_bytes(1, 1, b"ab", padding=1)[:-1] + b"\x00", "padding of 0 bytes"),
    ],
)
def test_parse_rejects_malformed(data: bytes, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_rtp(data)


# ---------------------------------------------------------------- payload decoding


def test_l16_decodes_big_endian_and_mixes_channels() -> None:
    mono = PayloadFormat("L16", 48000, 1).decode(struct.pack(">3h", 32767, -32768, 256) + b"\x01")
    np.testing.assert_array_equal(mono, np.array([32767, -32768, 256], np.float32) / 32768)
    stereo = PayloadFormat("L16", 48000, 2).decode(struct.pack(">4h", 1000, 3000, -200, 200))
    np.testing.assert_array_equal(stereo, np.array([2000, 0], np.float32) / 32768)


def test_l24_decodes_sign_and_magnitude() -> None:
    payload = bytes.fromhex("7fffff 800000 000001 ffffff 123456".replace(" ", ""))
    out = PayloadFormat("L24", 48000, 1).decode(payload)
    expected = np.array([8388607, -8388608, 1, -1, 0x123456], np.float64) / 8388608
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "name, rate, channels, pt, accepted",
    [
        ("L16", 44100, 2, 10, True),  # RFC 3551: PT 10 is L16 44.1 kHz stereo
        ("L16", 44100, 1, 11, True),  # ... PT 11 is L16 44.1 kHz mono
        ("L16", 48000, 2, 10, False),  # the rate differs: 44.1 kHz audio would be played at 48 kHz
        ("L16", 48000, 1, 11, False),
        ("L16", 44100, 1, 10, False),  # the channels differ
        ("L16", 44100, 2, 11, False),
        ("L24", 48000, 1, 10, False),
        ("PCMU", 8000, 1, 0, True),
        ("PCMU", 8000, 2, 0, False),  # PT 0 is mono
        ("PCMU", 8000, 1, 8, False),  # PCMA's type
        ("PCMA", 8000, 1, 8, True),
        ("L16", 48000, 1, 3, False),  # GSM, a static type of another encoding
        ("L16", 48000, 1, 95, False),  # unassigned
        ("L16", 48000, 1, 96, True),  # dynamic: the configuration says what it is
        ("PCMA", 8000, 1, 127, True),
    ],
)
def test_static_payload_types_only_where_rfc3551_rate_and_channels_match(name: str, rate: int, channels: int, pt: int, accepted: bool) -> None:
    assert PayloadFormat(name, rate, channels).accepts(pt) is accepted


def test_payload_type_refusal_names_the_type_and_what_is_taken() -> None:
    assert PayloadFormat("L16", 48000, 2).refusal(10) == (
        "static type 10 is L16 at 44100 Hz, 2 channel(s) (RFC 3551); configured L16 at 48000 Hz, 2 channel(s) takes dynamic types 96-127 only"
    )
    assert PayloadFormat("PCMU", 8000, 1).refusal(33) == (
        "payload type 33 is not a type this source decodes; configured PCMU at 8000 Hz, 1 channel(s) takes static type 0 or dynamic 96-127"
    )


def test_g711_known_values() -> None:
    # ITU-T G.711: mu-law 0xFF/0x7F are +/-0, 0x80/0x00 the extremes; A-law 0xD5/0x55 the smallest, 0xAA/0x2A the extremes.
    assert ULAW_TABLE[[0xFF, 0x7F, 0x80, 0x00, 0xEF, 0x6F]].tolist() == [0, 0, 32124, -32124, 132, -132]
    assert ALAW_TABLE[[0xD5, 0x55, 0xAA, 0x2A, 0xD4, 0xC5]].tolist() == [8, -8, 32256, -32256, 24, 264]
    out = PayloadFormat("PCMU", 8000, 1).decode(bytes([0x80, 0x00]))
    np.testing.assert_array_equal(out, np.array([32124, -32124], np.float32) / 32768)


@needs_ffmpeg
@pytest.mark.integration
@pytest.mark.parametrize("name, table, fmt", [("PCMU", ULAW_TABLE, "mulaw"), ("PCMA", ALAW_TABLE, "alaw")])
def test_g711_tables_match_ffmpeg(tmp_path: Any, name: str, table: np.ndarray, fmt: str) -> None:
    raw = tmp_path / f"all.{fmt}"
    raw.write_bytes(bytes(range(256)))
    pcm = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", fmt, "-ar", "8000", "-ac", "1", "-i", str(raw), "-f", "s16le", "-"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    np.testing.assert_array_equal(table, np.frombuffer(pcm, "<i2"))
    np.testing.assert_array_equal(PayloadFormat(name, 8000).decode(bytes(range(256))) * 32768, np.frombuffer(pcm, "<i2"))


# ---------------------------------------------------------------- jitter buffer

FRAMES = 4  # samples per synthetic packet; each packet holds the value of its index
FMT = PayloadFormat("L16", 8000, 1)


def packet(i: int, ssrc: int = 0x1234, seq0: int = 1000, ts0: int = 50_000, frames: int = FRAMES) -> Any:
    """Packet number ``i`` of a synthetic stream: ``frames`` samples of value i + 1."""
    return parse_rtp(rtp_bytes(seq0 + i, ts0 + i * FRAMES, struct.pack(f">{frames}h", *[i + 1] * frames), ssrc=ssrc))


def audio(blocks: list[Block]) -> list[int]:
    return [round(v * 32768) for b in blocks for v in b.samples]


def values(*indices: int | None) -> list[int]:
    """Expected audio: the packets' values, 0 (silence) for None."""
    return [0 if i is None else i + 1 for i in indices for _ in range(FRAMES)]


def test_in_order_packets_play_after_the_delay() -> None:
    stream = RtpStream(FMT, 0.05, 64)
    assert stream.push(packet(0), 10.0) == []
    assert stream.next_deadline() == pytest.approx(10.05)
    assert stream.poll(10.04) == []
    out = stream.poll(10.05)
    assert audio(out) == values(0) and out[0].discontinuity and out[0].rtp_time == 50_000


def test_reordered_packets_are_put_back_in_order() -> None:
    stream = RtpStream(FMT, 0.05, 64)
    out: list[Block] = []
    for k, i in enumerate([0, 2, 1, 4, 3, 5]):
        out += stream.push(packet(i), 10 + k * 0.001)
    out += stream.poll(11.0)
    assert audio(out) == values(0, 1, 2, 3, 4, 5)
    assert sum(b.lost for b in out) == 0 and stream.late == 0


def test_loss_is_counted_and_concealed_with_the_timestamp_gap() -> None:
    stream = RtpStream(FMT, 0.02, 64)
    out: list[Block] = []
    for k, i in enumerate([0, 1, 4, 5]):
        out += stream.push(packet(i), 10 + k * 0.01)
    out += stream.poll(11.0)
    assert audio(out) == values(0, 1, None, None, 4, 5)
    assert [b.lost for b in out] == [0, 0, 2, 0]
    assert [b.rtp_time for b in out] == [50_000, 50_004, 50_008, 50_020]


def test_concealment_follows_timestamps_not_packet_size() -> None:
    stream = RtpStream(FMT, 0.0, 64)
    first = parse_rtp(rtp_bytes(1, 0, struct.pack(">4h", 1, 1, 1, 1)))
    after_gap = parse_rtp(rtp_bytes(3, 4 + 10, struct.pack(">2h", 2, 2)))  # the lost packet held 10 samples
    out = stream.push(first, 1.0) + stream.push(after_gap, 1.1)
    assert audio(out) == [1] * 4 + [0] * 10 + [2, 2]
    assert out[1].lost == 1


def test_late_and_duplicate_packets_are_discarded_and_counted() -> None:
    stream = RtpStream(FMT, 0.05, 64)
    out = stream.push(packet(0), 10.0) + stream.push(packet(2), 10.01) + stream.push(packet(2), 10.02)
    assert stream.duplicates == 1
    out += stream.poll(10.2)
    out += stream.push(packet(1), 10.3)  # too late: 2 was played already
    assert stream.late == 1
    out += stream.push(packet(3), 10.31) + stream.poll(11.0)
    assert audio(out) == values(0, None, 2, 3)
    assert sum(b.lost for b in out) == 1


def test_sequence_and_timestamp_wraparound() -> None:
    stream = RtpStream(FMT, 0.05, 64)
    out: list[Block] = []
    for k, i in enumerate([0, 2, 1, 3, 5, 4]):  # sequences 65533..65535, 0..2
        out += stream.push(packet(i, seq0=65533, ts0=2**32 - 9), 10 + k * 0.001)
    out += stream.poll(11.0)
    assert audio(out) == values(0, 1, 2, 3, 4, 5)
    assert sum(b.lost for b in out) == 0 and stream.late == 0 and stream.jumps == 0
    assert [b.rtp_time for b in out] == [2**32 - 9 + 4 * i for i in range(6)]


def test_ssrc_change_starts_a_new_stream_without_loss() -> None:
    stream = RtpStream(FMT, 0.05, 64)
    out = stream.push(packet(0), 10.0) + stream.push(packet(1), 10.01)
    out += stream.push(packet(5, ssrc=0x9999, seq0=40_000, ts0=7), 10.02)  # flushes the old stream first
    assert audio(out) == values(0, 1)
    out += stream.push(packet(6, ssrc=0x9999, seq0=40_000, ts0=7), 10.03) + stream.poll(11.0)
    assert audio(out) == values(0, 1, 5, 6)
    assert [b.discontinuity for b in out] == [True, False, True, False]
    assert sum(b.lost for b in out) == 0


def test_capacity_bounds_the_buffer() -> None:
    stream = RtpStream(FMT, 60.0, 4)
    out: list[Block] = []
    for i in range(10):
        out += stream.push(packet(i), 10 + i * 0.001)
        assert len(stream) <= 4
    assert audio(out) == values(0, 1, 2, 3, 4, 5)


def test_one_stray_sequence_jump_is_dropped_two_in_sequence_restart() -> None:
    stream = RtpStream(FMT, 0.0, 64)
    out = stream.push(packet(0), 1.0) + stream.push(packet(30_000), 1.1) + stream.push(packet(1), 1.2)
    assert audio(out) == values(0, 1) and stream.jumps == 1
    out += stream.push(packet(20_000), 1.3) + stream.push(packet(20_001), 1.4) + stream.push(packet(20_002), 1.5)
    assert audio(out) == values(0, 1, 20_001, 20_002)
    assert out[-2].discontinuity and sum(b.lost for b in out) == 0


def test_long_timestamp_gap_is_a_discontinuity_not_silence() -> None:
    stream = RtpStream(FMT, 0.0, 64)
    out = stream.push(packet(0), 1.0) + stream.push(packet(1, ts0=50_000 + 8000 * 60), 1.1)
    assert audio(out) == values(0, 1) and out[1].discontinuity and out[1].lost == 0
    assert out[1].reason == "timestamp of SSRC 00001234 jumped +60.000 s"


def test_concealment_is_capped_at_two_jitter_delays() -> None:
    stream = RtpStream(FMT, 0.06, 64)  # 60 ms at 8 kHz: gaps of up to 120 ms (960 samples) are filled
    assert stream.max_gap == 960
    first = parse_rtp(rtp_bytes(1, 0, struct.pack(">4h", 1, 1, 1, 1)))
    within = parse_rtp(rtp_bytes(3, 4 + 960, struct.pack(">4h", 2, 2, 2, 2)))  # a lost packet of 120 ms: silence
    beyond = parse_rtp(rtp_bytes(5, 4 + 960 + 4 + 961, struct.pack(">4h", 3, 3, 3, 3)))  # 1 sample more: a new stream
    out = stream.push(first, 1.0) + stream.push(within, 1.1) + stream.push(beyond, 1.2) + stream.flush()
    assert audio(out) == [1] * 4 + [0] * 960 + [2] * 4 + [3] * 4
    assert [b.discontinuity for b in out] == [True, False, True]
    assert [b.lost for b in out] == [0, 1, 1]  # the sequence gap is still counted as loss
    assert out[2].reason.startswith("timestamp of SSRC 00001234 jumped +0.120")


def test_zero_delay_still_bridges_a_lost_packet() -> None:
    assert RtpStream(FMT, 0.0, 64).max_gap == 800  # MIN_CONCEAL_S, 100 ms


def test_timestamp_jumps_just_under_ten_seconds_add_no_silence() -> None:
    """The issue's case: 300 packets each jumping 9.9 s made 2,900 s of silence; now each is a new stream."""
    stream = RtpStream(FMT, 0.06, 64)
    out: list[Block] = []
    for i in range(300):
        ts = 50_000 + i * (FRAMES + int(9.9 * 8000))
        out += stream.push(parse_rtp(rtp_bytes(1000 + i, ts, struct.pack(f">{FRAMES}h", *[i + 1] * FRAMES))), 10 + i * 0.001)
    out += stream.flush()
    assert sum(b.samples.size for b in out) == 300 * FRAMES
    assert sum(b.discontinuity for b in out) == 300


def test_backward_timestamp_jump_is_a_new_stream_not_a_trim() -> None:
    stream = RtpStream(FMT, 0.0, 64)
    out = stream.push(packet(0), 1.0) + stream.push(packet(1), 1.01)
    out += stream.push(packet(2, ts0=50_000 - 8000 * 30), 1.02) + stream.push(packet(3, ts0=50_000 - 8000 * 30), 1.03)
    assert audio(out) == values(0, 1, 2, 3)  # trimming "overlap" would have dropped everything after the jump
    assert [b.discontinuity for b in out] == [True, False, True, False]


def test_small_overlap_is_trimmed_not_restarted() -> None:
    stream = RtpStream(FMT, 0.0, 64)
    first = parse_rtp(rtp_bytes(1, 0, struct.pack(">4h", 1, 1, 1, 1)))
    overlapping = parse_rtp(rtp_bytes(2, 2, struct.pack(">4h", 2, 2, 2, 2)))  # starts 2 samples early
    out = stream.push(first, 1.0) + stream.push(overlapping, 1.01)
    assert audio(out) == [1, 1, 1, 1, 2, 2] and not out[1].discontinuity


def test_discontinuities_say_why() -> None:
    stream = RtpStream(FMT, 0.0, 64)
    out = stream.push(packet(0), 1.0) + stream.push(packet(1, ssrc=0xBEEF), 1.1)
    out += stream.push(packet(30_000, ssrc=0xBEEF), 1.2) + stream.push(packet(30_001, ssrc=0xBEEF), 1.3)
    assert [b.reason for b in out] == ["first packet", "SSRC changed 00001234 -> 0000beef", "sequence of SSRC 0000beef jumped to 31001"]


# ---------------------------------------------------------------- the source on real sockets


def make_source(**fields: Any) -> tuple[RtpSource, AudioSink]:
    fields.setdefault("port", free_port(udp=True))
    sink = AudioSink()
    fields.setdefault("bind", "127.0.0.1")
    source = RtpSource(RtpConfig(id="rtp1", type="rtp", **fields), MODEL_RATE, sink)
    return source, sink


def start(source: RtpSource) -> None:
    """Start the source and wait until its socket is bound, so no packet is sent into the void."""
    source.start()
    assert wait_until(lambda: source._sock is not None)


def send_tone(sock: socket.socket, port: int, packets: int, ssrc: int = 1, seq0: int = 0, pt: int = 96, host: str = "127.0.0.1") -> None:
    """Packets of 10 ms of a 1 kHz L16 tone at 16 kHz, paced at real time."""
    t = np.arange(160) / 16000
    payload = (np.sin(2 * np.pi * 1000 * t) * 8000).astype(">i2").tobytes()
    for i in range(packets):
        sock.sendto(rtp_bytes(seq0 + i, i * 160, payload, ssrc=ssrc, pt=pt), (host, port))
        time.sleep(0.01)


@pytest.fixture
def sender() -> Any:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


SITE = """\
site: lab
model: model
sources:
  - id: cam
    type: rtp
    port: 5004
{fields}
"""


@pytest.mark.parametrize(
    "fields, problem",
    [
        ("    bind: ::1", "site.yaml:7: sources[0].bind: bind '::1' is an IPv6 address; RTP is received over IPv4 only: use an IPv4 address such as 127.0.0.1"),
        ("    bind: localhost", "site.yaml:7: sources[0].bind: bind 'localhost' is not an IP address; expected an IPv4 address such as 127.0.0.1 (this host)"),
        ("    bind: 239.1.1.1", "site.yaml:7: sources[0].bind: bind '239.1.1.1' is a multicast address; put the group in multicast_group"),
        (
            "    allow_from: [10.0.0.1, nope]",
            "site.yaml:7: sources[0].allow_from[1]: allow_from entry 'nope' is not an IP address; expected an IPv4 address such as 192.0.2.10",
        ),
        ("    allow_from:\n      - 10.0.0.1\n      - fe80::1", "site.yaml:9: sources[0].allow_from[1]: allow_from entry 'fe80::1' is an IPv6 address"),
        (
            "    bind: 0.0.0.0\n    multicast_group: 10.0.0.1",
            "site.yaml:8: sources[0].multicast_group: multicast_group '10.0.0.1' is not a multicast address; expected one in 224.0.0.0/4, such as 239.1.1.1",
        ),
        ("    multicast_group: 239.1.1.1", "sources[0]: multicast_group 239.1.1.1 is joined on the interface of bind, which defaults to loopback; set bind"),
    ],
)
def test_bad_addresses_are_reported_by_config_check(tmp_path: Any, fields: str, problem: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(SITE.format(fields=fields))
    with pytest.raises(ConfigError) as info:
        load_site_config(path, check_model=False)
    (line,) = info.value.problems
    assert line.startswith(str(tmp_path) + "/") and problem in line, line


def test_bind_defaults_to_loopback() -> None:
    config = RtpConfig(id="cam", type="rtp", port=5004)
    assert config.bind == "127.0.0.1" and not config.open_to_any
    assert RtpConfig(id="cam", type="rtp", port=5004, bind="0.0.0.0").open_to_any
    assert not RtpConfig(id="cam", type="rtp", port=5004, bind="0.0.0.0", allow_from=["192.0.2.1"]).open_to_any
    assert RtpConfig(id="cam", type="rtp", port=5004, bind="127.0.0.1", multicast_group="239.1.1.1").open_to_any


def test_the_constructor_still_refuses_unvalidated_addresses() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"bind": "::1"}, "source rtp1: bind '::1' is an IPv6 address"),
        ({"allow_from": ["nope"]}, "source rtp1: allow_from entry 'nope' is not an IP"),
    ]
    for fields, words in cases:
        config = RtpConfig.model_construct(**{**RtpConfig(id="rtp1", type="rtp", port=5004).model_dump(), **fields})
        with pytest.raises(ValueError, match=words):
            RtpSource(config, MODEL_RATE, AudioSink())


@pytest.mark.parametrize("bind, allow, warned", [("0.0.0.0", [], True), ("0.0.0.0", ["127.0.0.1"], False), ("127.0.0.1", [], False)])
def test_open_to_any_sender_warns_once_at_start(caplog: pytest.LogCaptureFixture, bind: str, allow: list[str], warned: bool) -> None:
    caplog.set_level(logging.INFO, logger="rtaudio")
    source, _ = make_source(bind=bind, allow_from=allow)
    start(source)
    source.stop()
    warnings = [r.getMessage() for r in caplog.records if "accepts any sender" in r.getMessage()]
    port = source.config.port
    assert warnings == (
        [f"source rtp1: RTP on 0.0.0.0:{port} accepts any sender that reaches it (allow_from is empty); list the senders in allow_from"] if warned else []
    )


def test_allow_from_drops_other_senders(sender: socket.socket) -> None:
    source, sink = make_source(allow_from=["127.0.0.2"], sample_rate=16000, jitter_ms=20)
    start(source)
    try:
        send_tone(sender, source.config.port, 10)  # from 127.0.0.1
        assert wait_until(lambda: source.rejected == 10)
        assert sink.blocks == [] and not source.health.connected
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as allowed:
            allowed.bind(("127.0.0.2", 0))
            send_tone(allowed, source.config.port, 10)
        assert wait_until(lambda: sink.audio().size == 1600)
        assert source.health.connected and source.rejected == 10
    finally:
        source.stop()


def test_ssrc_change_counts_a_restart_not_a_loss(sender: socket.socket) -> None:
    source, sink = make_source(sample_rate=16000, jitter_ms=20)
    start(source)
    try:
        send_tone(sender, source.config.port, 10, ssrc=1, seq0=100)
        send_tone(sender, source.config.port, 10, ssrc=2, seq0=50_000)
        assert wait_until(lambda: sink.audio().size == 3200)
        assert source.health.restarts == 1 and source.health.packets_lost == 0
        assert source.health.discontinuities == 1
    finally:
        source.stop()


def test_capture_times_follow_rtp_timestamps(sender: socket.socket) -> None:
    source, sink = make_source(sample_rate=16000, jitter_ms=20)
    start(source)
    try:
        sent = time.time()
        send_tone(sender, source.config.port, 20)
        assert wait_until(lambda: sink.audio().size == 3200)
    finally:
        source.stop()
    first = sink.capture_times[0]
    assert sent - 0.05 < first < sent + 0.05  # first packet's samples were captured just before it arrived
    for chunk, t, t_next in zip(sink.blocks, sink.capture_times, sink.capture_times[1:]):
        assert t_next == pytest.approx(t + chunk.size / MODEL_RATE, abs=1e-6)


def test_wrong_payload_type_and_rtcp_are_not_played(sender: socket.socket) -> None:
    source, sink = make_source(sample_rate=16000, jitter_ms=0)
    start(source)
    try:
        send_tone(sender, source.config.port, 3, pt=0)  # PCMU's static type on an L16 source
        sender.sendto(bytes([0x80, 200]) + bytes(26), ("127.0.0.1", source.config.port))  # an RTCP sender report
        sender.sendto(b"junk", ("127.0.0.1", source.config.port))
        send_tone(sender, source.config.port, 2, seq0=10)
        assert wait_until(lambda: sink.audio().size == 320)
        assert source.malformed == 4  # 3 wrong type + 1 junk; RTCP is ignored silently
        assert source.health.snapshot()["packets_malformed"] == 4
    finally:
        source.stop()


def test_socket_error_reopens_with_a_restart(sender: socket.socket) -> None:
    source, sink = make_source(sample_rate=16000, jitter_ms=0)
    start(source)
    try:
        sock = source._sock
        assert sock is not None
        sock.close()  # the socket fails under the running source
        assert wait_until(lambda: source.health.restarts == 1)
        assert wait_until(lambda: source._sock is not None and source._sock.fileno() != -1)
        send_tone(sender, source.config.port, 5)
        assert wait_until(lambda: sink.audio().size == 800)
        assert source.alive
    finally:
        source.stop()
    assert not source.alive


def test_connected_goes_false_when_packets_stop(sender: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rtp_module, "IDLE_S", 0.3)
    source, _ = make_source(sample_rate=16000, jitter_ms=0)
    start(source)
    try:
        send_tone(sender, source.config.port, 3)
        assert wait_until(lambda: source.health.connected)
        assert wait_until(lambda: not source.health.connected, timeout=3)
    finally:
        source.stop()


def multicast_works(group: str) -> bool:
    """Whether this host loops multicast back to a member (needs a multicast route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        try:
            rx.bind((group, 0))
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton("0.0.0.0"))
            rx.settimeout(1.0)
            tx.sendto(b"probe", (group, rx.getsockname()[1]))
            return rx.recv(16) == b"probe"
        except OSError:
            return False


def test_multicast_group_is_joined() -> None:
    group = "239.255.42.99"
    if not multicast_works(group):
        pytest.skip("this host does not loop multicast back (no multicast route)")
    source, sink = make_source(sample_rate=16000, jitter_ms=0, multicast_group=group, bind="0.0.0.0")
    start(source)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            send_tone(sender, source.config.port, 5, host=group)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:  # same port, another group: not for us
                other.sendto(rtp_bytes(99, 0, bytes(320)), ("239.255.42.98", source.config.port))
        assert wait_until(lambda: sink.audio().size == 800)
        time.sleep(0.2)
        assert sink.audio().size == 800 and source.stream.jumps == 0
    finally:
        source.stop()


# ---------------------------------------------------------------- with a real ffmpeg sender


def ffmpeg_send(port: int, codec: list[str], duration: float = 2.0) -> None:
    """A 440 Hz tone sent as RTP by ffmpeg in real time."""
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate=48000:duration={duration}",
        *codec,
        "-f",
        "rtp",
        f"rtp://127.0.0.1:{port}",
    ]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, timeout=30)


def check_tone(x: np.ndarray, duration: float = 2.0) -> None:
    """Length, dominant frequency 440 Hz, and one phase throughout (so every gap had the right length)."""
    assert abs(x.size / MODEL_RATE - duration) < 0.05
    spectrum = np.abs(np.fft.rfft(x))
    assert np.fft.rfftfreq(x.size, 1 / MODEL_RATE)[np.argmax(spectrum)] == pytest.approx(440, abs=2)
    n = MODEL_RATE // 10
    blocks = x[: x.size // n * n].reshape(-1, n)
    t = np.arange(blocks.size).reshape(-1, n) / MODEL_RATE
    phasors = (blocks * np.exp(-2j * np.pi * 440 * t)).mean(axis=1)
    strong = phasors[np.abs(phasors) > 0.5 * np.median(np.abs(phasors))]
    assert strong.size >= blocks.shape[0] - 1
    assert np.max(np.abs(np.angle(strong / strong[0]))) < 0.3


def receive_all(source: RtpSource, sink: AudioSink) -> np.ndarray:
    """Wait for the jitter buffer and resampler to drain, stop, return the audio."""
    wait_until(lambda: sink.capture_times and time.time() - sink.capture_times[-1] > 0.5, timeout=5)
    source.stop()
    return sink.audio()


@needs_ffmpeg
@pytest.mark.integration
@pytest.mark.parametrize(
    "payload, rate, channels, codec",
    [
        ("L16", 48000, 1, ["-ac", "1", "-c:a", "pcm_s16be"]),
        ("L24", 48000, 2, ["-ac", "2", "-c:a", "pcm_s24be"]),
        ("PCMU", 8000, 1, ["-ac", "1", "-ar", "8000", "-c:a", "pcm_mulaw"]),
        ("PCMA", 8000, 1, ["-ac", "1", "-ar", "8000", "-c:a", "pcm_alaw"]),
    ],
)
def test_ffmpeg_stream_is_received_whole(payload: str, rate: int, channels: int, codec: list[str]) -> None:
    fields: dict[str, Any] = {"payload": payload, "channels": channels}
    if payload.startswith("L"):
        fields["sample_rate"] = rate
    source, sink = make_source(**fields)
    start(source)
    ffmpeg_send(source.config.port, codec)
    x = receive_all(source, sink)
    check_tone(x)
    assert source.health.packets_lost == 0 and source.health.restarts == 0
    assert source.stream.late == 0 and source.malformed == 0


class Relay(threading.Thread):
    """Forwards UDP packets to ``target``, dropping every 20th and swapping some neighbours."""

    def __init__(self, target: int):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", target)
        self.dropped: list[int] = []
        self.swapped = 0
        self.count = 0
        self.done = threading.Event()

    def run(self) -> None:
        held: bytes | None = None
        while not self.done.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            i, self.count = self.count, self.count + 1
            if i % 20 == 10:
                self.dropped.append(i)
            elif i % 20 == 4:
                held = data
            else:
                self.sock.sendto(data, self.target)
                if held is not None:
                    self.sock.sendto(held, self.target)
                    held, self.swapped = None, self.swapped + 1
        self.sock.close()


@needs_ffmpeg
@pytest.mark.integration
def test_lossy_reordering_network_is_repaired() -> None:
    source, sink = make_source(payload="L16", sample_rate=48000, jitter_ms=80)
    relay = Relay(source.config.port)
    relay.start()
    start(source)
    try:
        ffmpeg_send(relay.port, ["-ac", "1", "-c:a", "pcm_s16be"])
        x = receive_all(source, sink)
    finally:
        relay.done.set()
        relay.join(5)
    assert relay.swapped >= 3 and len(relay.dropped) >= 3
    assert source.health.packets_lost == len([i for i in relay.dropped if i < relay.count - 1])
    assert source.stream.late == 0 and source.health.restarts == 0
    check_tone(x)
