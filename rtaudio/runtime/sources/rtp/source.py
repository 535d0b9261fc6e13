"""RTP audio over UDP (L16, L24, PCMU, PCMA): a socket, a jitter buffer, a resampler.

Capture times come from the RTP timestamps, anchored to the wall clock at the first packet of
each stream (SSRC) and re-anchored when the sender's clock drifts more than ``REANCHOR_S``
from arrival times.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from typing import Literal

from pydantic import Field, model_validator

from rtaudio.config.base import SampleRate, SourceBase
from rtaudio.runtime.health import SourceHealth
from rtaudio.runtime.sources.base import Resampler, Sink, Source
from rtaudio.runtime.sources.rtp.codecs import PayloadFormat
from rtaudio.runtime.sources.rtp.jitter import Block, RtpStream
from rtaudio.runtime.sources.rtp.packet import RTCP_TYPES, parse_rtp

log = logging.getLogger(__name__)

IDLE_S = 3.0  # no packet for this long: not connected
MAX_WAIT_S = 0.25  # longest socket wait, so ``stopping`` is noticed
REANCHOR_S = 0.5  # RTP-derived time this far from arrival time: re-anchor to the wall clock
RECV_BUFFER_BYTES = 1 << 20
MAX_DATAGRAM = 65536


class RtpConfig(SourceBase):
    """``type: rtp``: an RTP/UDP audio stream (L16, L24, G.711)."""

    type: Literal["rtp"] = Field(title="Source type")
    bind: str = Field("0.0.0.0", title="Bind address", description="Local address to receive on.")
    port: int = Field(title="UDP port", ge=1, le=65535)
    payload: Literal["L16", "L24", "PCMU", "PCMA"] = Field(
        "L16", title="RTP payload format", description="L16/L24 big-endian PCM (RFC 3551) at the configured rate; PCMU/PCMA G.711 at 8 kHz."
    )
    sample_rate: SampleRate = Field(48000, title="Stream sample rate (Hz)", description="For L16/L24; PCMU/PCMA are always 8000.")
    channels: int = Field(1, title="Stream channels", ge=1, le=8, description="Interleaved channels in the payload; mixed down to mono.")
    jitter_ms: int = Field(
        60, title="Jitter buffer delay (ms)", ge=0, le=2000, description="Packets are reordered within this delay; later ones count as lost."
    )
    multicast_group: str | None = Field(None, title="Multicast group", description="Join this IPv4 multicast group on bind address.")
    allow_from: list[str] = Field(default_factory=list, title="Allowed senders", description="Peer IP addresses accepted; empty accepts any.")

    @model_validator(mode="after")
    def _g711_rate(self) -> RtpConfig:
        if self.payload in ("PCMU", "PCMA") and self.sample_rate != 8000 and "sample_rate" in self.model_fields_set:
            raise ValueError(f"payload {self.payload} is 8000 Hz; sample_rate {self.sample_rate} is not allowed with it")
        return self


class RtpSource(Source):
    """Receives one RTP audio stream on a UDP port (optionally a multicast group).

    Counters beyond ``health``: ``rejected`` (sender not in ``allow_from``), ``malformed``
    (unparseable or wrong payload type), and the stream's ``late``/``duplicates``/``jumps``.
    """

    type_key = "rtp"
    config_class = RtpConfig

    def __init__(self, config: RtpConfig, sample_rate: int, sink: Sink, health: SourceHealth | None = None):
        super().__init__(config, sample_rate, sink, health)
        rate = 8000 if config.payload in ("PCMU", "PCMA") else config.sample_rate
        self.format = PayloadFormat(config.payload, rate, config.channels)
        if _ip(config.id, "bind", config.bind).version != 4:
            raise ValueError(f"source {config.id}: bind {config.bind!r} must be an IPv4 address such as 0.0.0.0")
        self.allow = {_ip(config.id, "allow_from", a) for a in config.allow_from}
        if config.multicast_group is not None and not _ip(config.id, "multicast_group", config.multicast_group).is_multicast:
            raise ValueError(f"source {config.id}: multicast_group {config.multicast_group!r} is not a multicast address (224.0.0.0/4)")
        # Enough packets for the whole delay at 0.5 ms per packet (AES67 uses 1 ms).
        self.stream = RtpStream(self.format, config.jitter_ms / 1000, capacity=max(32, 2 * config.jitter_ms))
        self.rejected = self.malformed = 0
        self._sock: socket.socket | None = None
        self._resampler = Resampler(rate, sample_rate)
        self._anchor_wall = 0.0  # wall time of the first resampled sample of the current stream
        self._anchor_rtp = 0  # extended RTP time of the first sample of the current stream
        self._out_samples = 0  # resampled samples emitted since the anchor
        self._last_packet = 0.0  # monotonic
        self._streams = 0  # streams (SSRCs, resyncs) started
        self._warned: set[str] = set()

    def run(self) -> None:
        delays = self.backoff()
        while not self.stopping.is_set():
            try:
                self._sock = self._open()
                log.info("source %s: listening for RTP %s on %s:%d", self.id, self.format.name, *self._sock.getsockname()[:2])
                received = self._receive(self._sock)
            except OSError as exc:
                if self.stopping.is_set():
                    break
                self.health.restarts += 1
                self.health.connected = False
                delay = next(delays)
                log.warning("source %s: socket error (%s); reopening in %.1f s", self.id, exc, delay)
                self._close()
                self.sleep(delay)
                continue
            if received:
                delays = self.backoff()
        self._close()

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _open(self) -> socket.socket:
        cfg = self.config
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER_BYTES)
            if cfg.multicast_group is None:
                sock.bind((cfg.bind, cfg.port))
            else:  # bound to the group so other groups on the port stay out; joined on the bind interface
                sock.bind((cfg.multicast_group, cfg.port))
                mreq = socket.inet_aton(cfg.multicast_group) + socket.inet_aton(cfg.bind)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        except OSError:
            sock.close()
            raise
        return sock

    def _receive(self, sock: socket.socket) -> bool:
        """Read until stopping; raises OSError on socket trouble. True if any packet came."""
        received = False
        while not self.stopping.is_set():
            deadline = self.stream.next_deadline()
            wait = MAX_WAIT_S if deadline is None else deadline - time.monotonic()
            sock.settimeout(min(MAX_WAIT_S, max(0.001, wait)))
            try:
                data, (host, _port) = sock.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                data = b""
            now = time.monotonic()
            if data:
                received = True
                self._on_datagram(data, host, now)
            self._play(self.stream.poll(now))
            if now - self._last_packet > IDLE_S:
                self.health.connected = False
        return received

    def _on_datagram(self, data: bytes, host: str, now: float) -> None:
        if self.allow and ipaddress.ip_address(host) not in self.allow:
            self.rejected += 1
            self._warn_once("reject", "dropping packets from %s: not in allow_from", host)
            return
        try:
            packet = parse_rtp(data)
        except ValueError as exc:
            self.malformed += 1
            self._warn_once("malformed", "dropping malformed RTP packet from %s: %s", host, exc)
            return
        if packet.payload_type in RTCP_TYPES:
            return  # RTCP multiplexed on the RTP port: nothing to play
        if not self.format.accepts(packet.payload_type):
            self.malformed += 1
            self._warn_once("pt", "dropping packets of payload type %d: configured %s takes its static type or 96-127", packet.payload_type, self.format.name)
            return
        self._last_packet = now
        self._play(self.stream.push(packet, now))

    def _play(self, blocks: list[Block]) -> None:
        for block in blocks:
            self.health.packets_lost += block.lost
            if block.discontinuity:
                self._start_stream(block)
            self._check_clock(block)
            out = self._resampler(block.samples)
            self.emit(out, self._anchor_wall + self._out_samples / self.sample_rate)
            self._out_samples += out.size

    def _start_stream(self, block: Block) -> None:
        if self._streams:
            self.health.restarts += 1
            log.info("source %s: RTP stream restarted (new SSRC, sequence or timestamp jump)", self.id)
        self._streams += 1
        self._resampler = Resampler(self.format.rate, self.sample_rate)
        self._anchor_rtp, self._out_samples = block.rtp_time, 0
        self._anchor_wall = self._wall(block.arrival) - block.samples.size / self.format.rate

    def _check_clock(self, block: Block) -> None:
        """Re-anchor when the block's RTP-derived end time strays from its arrival time."""
        end = self._anchor_wall + (block.rtp_time + block.samples.size - self._anchor_rtp) / self.format.rate
        drift = self._wall(block.arrival) - end
        if abs(drift) > REANCHOR_S:
            log.info("source %s: RTP clock off the wall clock by %.2f s; re-anchoring", self.id, drift)
            self._anchor_wall += drift

    @staticmethod
    def _wall(monotonic: float) -> float:
        return time.time() - (time.monotonic() - monotonic)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        log.log(level, "source %s: " + message, self.id, *args)


def _ip(source_id: str, field: str, value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"source {source_id}: {field} {value!r} is not an IP address") from None
