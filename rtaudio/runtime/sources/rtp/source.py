"""RTP audio over UDP (L16, L24, PCMU, PCMA): a socket, a jitter buffer, a resampler.

Capture times come from the RTP timestamps, anchored to the wall clock at the first packet of
each stream (SSRC) and re-anchored when the sender's clock drifts more than ``REANCHOR_S``
from arrival times.

Hostile input stays cheap: every packet that is dropped is counted in health (malformed,
rejected, late, duplicate) and every new stream too (discontinuities), while each kind of log
line is written once and then at most once per ``LogLimiter`` period with its count.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from rtaudio.config.base import SampleRate, SourceBase
from rtaudio.runtime.health import SourceHealth
from rtaudio.runtime.logs import LogLimiter
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


def _ipv4(field: str, value: str, example: str) -> ipaddress.IPv4Address:
    """``value`` as an IPv4 address; ValueError naming the field, the value and what is allowed."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{field} {value!r} is not an IP address; expected an IPv4 address such as {example}") from None
    if address.version != 4:
        raise ValueError(f"{field} {value!r} is an IPv6 address; RTP is received over IPv4 only: use an IPv4 address such as {example}")
    return address


def _check_sender(value: str) -> str:
    _ipv4("allow_from entry", value, "192.0.2.10")
    return value


class RtpConfig(SourceBase):
    """``type: rtp``: an RTP/UDP audio stream (L16, L24, G.711)."""

    type: Literal["rtp"] = Field(title="Source type")
    bind: str = Field(
        "127.0.0.1",
        title="Bind address",
        description="Local IPv4 address to receive on: 127.0.0.1 takes only this host's senders, 0.0.0.0 every interface "
        "(then list the senders in allow_from). With multicast_group: the interface to join on.",
    )
    port: int = Field(title="UDP port", ge=1, le=65535)
    payload: Literal["L16", "L24", "PCMU", "PCMA"] = Field(
        "L16",
        title="RTP payload format",
        description="L16/L24 big-endian PCM (RFC 3551) at the configured rate; PCMU/PCMA G.711 at 8 kHz. Dynamic payload types "
        "(96-127) are decoded as configured; a static type only where its RFC 3551 rate and channels match (0 PCMU, 8 PCMA, "
        "10 L16 44.1 kHz stereo, 11 L16 44.1 kHz mono); other packets count as packets_malformed.",
    )
    sample_rate: SampleRate = Field(48000, title="Stream sample rate (Hz)", description="For L16/L24; PCMU/PCMA are always 8000.")
    channels: int = Field(1, title="Stream channels", ge=1, le=8, description="Interleaved channels in the payload; mixed down to mono.")
    jitter_ms: int = Field(
        60,
        title="Jitter buffer delay (ms)",
        ge=0,
        le=2000,
        description="Packets are reordered within this delay; later ones count as late. A lost stretch of up to 2 x this "
        "(at least 100 ms) is filled with silence; a longer timestamp gap starts a new stream (a discontinuity).",
    )
    multicast_group: str | None = Field(
        None, title="Multicast group", description="Join this IPv4 multicast group (224.0.0.0/4) on the interface of bind (set bind with it)."
    )
    allow_from: list[Annotated[str, AfterValidator(_check_sender)]] = Field(
        default_factory=list,
        title="Allowed senders",
        description="Sender IPv4 addresses accepted; empty accepts any (a warning at start when bind is not loopback).",
    )

    @field_validator("bind")
    @classmethod
    def _check_bind(cls, value: str) -> str:
        if _ipv4("bind", value, "127.0.0.1 (this host) or 0.0.0.0 (every interface)").is_multicast:
            raise ValueError(f"bind {value!r} is a multicast address; put the group in multicast_group and an interface address (or 0.0.0.0) in bind")
        return value

    @field_validator("multicast_group")
    @classmethod
    def _check_group(cls, value: str | None) -> str | None:
        if value is not None and not _ipv4("multicast_group", value, "239.1.1.1").is_multicast:
            raise ValueError(f"multicast_group {value!r} is not a multicast address; expected one in 224.0.0.0/4, such as 239.1.1.1")
        return value

    @model_validator(mode="after")
    def _g711_rate(self) -> RtpConfig:
        if self.payload in ("PCMU", "PCMA") and self.sample_rate != 8000 and "sample_rate" in self.model_fields_set:
            raise ValueError(f"payload {self.payload} is 8000 Hz; sample_rate {self.sample_rate} is not allowed with it")
        return self

    @model_validator(mode="after")
    def _group_interface(self) -> RtpConfig:
        if self.multicast_group is not None and "bind" not in self.model_fields_set:
            raise ValueError(
                f"multicast_group {self.multicast_group} is joined on the interface of bind, which defaults to loopback; "
                "set bind to that interface's address, or 0.0.0.0 for the default interface"
            )
        return self

    @property
    def open_to_any(self) -> bool:
        """True when senders beyond this host can reach the socket and no allow_from limits them."""
        return not self.allow_from and (self.multicast_group is not None or not ipaddress.ip_address(self.bind).is_loopback)


class RtpSource(Source):
    """Receives one RTP audio stream on a UDP port (optionally a multicast group).

    Dropped packets are counted in ``health``: ``packets_rejected`` (sender not in ``allow_from``),
    ``packets_malformed`` (unparseable; a payload type the configuration does not decode; a lone
    wild sequence number), ``packets_late``, ``packets_duplicate``; new streams after the first
    in ``discontinuities`` (and ``restarts``).
    """

    type_key = "rtp"
    config_class = RtpConfig

    def __init__(self, config: RtpConfig, sample_rate: int, sink: Sink, health: SourceHealth | None = None):
        super().__init__(config, sample_rate, sink, health)
        rate = 8000 if config.payload in ("PCMU", "PCMA") else config.sample_rate
        self.format = PayloadFormat(config.payload, rate, config.channels)
        # RtpConfig's validators report these at `config check`; checked again in case a config was built unvalidated.
        _source_ipv4(config.id, "bind", config.bind)
        self.allow: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = {_source_ipv4(config.id, "allow_from entry", a) for a in config.allow_from}
        if config.multicast_group is not None and not _source_ipv4(config.id, "multicast_group", config.multicast_group).is_multicast:
            raise ValueError(f"source {config.id}: multicast_group {config.multicast_group!r} is not a multicast address (224.0.0.0/4)")
        # Enough packets for the whole delay at 0.5 ms per packet (AES67 uses 1 ms).
        self.stream = RtpStream(self.format, config.jitter_ms / 1000, capacity=max(32, 2 * config.jitter_ms))
        self._logs = LogLimiter(log)
        self._sock: socket.socket | None = None
        self._resampler = Resampler(rate, sample_rate)
        self._anchor_wall = 0.0  # wall time of the first resampled sample of the current stream
        self._anchor_rtp = 0  # extended RTP time of the first sample of the current stream
        self._out_samples = 0  # resampled samples emitted since the anchor
        self._last_packet = 0.0  # monotonic
        self._streams = 0  # streams (SSRCs, resyncs) started

    @property
    def rejected(self) -> int:
        """Packets dropped because their sender is not in ``allow_from``."""
        return self.health.packets_rejected

    @property
    def malformed(self) -> int:
        """Packets dropped as unusable: unparseable, a payload type not decoded here, a lone wild sequence number."""
        return self.health.packets_malformed

    def run(self) -> None:
        if self.config.open_to_any:
            where = self.config.multicast_group or self.config.bind
            log.warning(
                "source %s: RTP on %s:%d accepts any sender that reaches it (allow_from is empty); list the senders in allow_from",
                self.id,
                where,
                self.config.port,
            )
        delays = self.backoff()
        try:
            while not self.stopping.is_set():
                try:
                    self._sock = self._open()
                    self._logs.info("listen", "source %s: listening for RTP %s on %s:%d", self.id, self.format.name, *self._sock.getsockname()[:2])
                    received = self._receive(self._sock)
                except OSError as exc:
                    if self.stopping.is_set():
                        break
                    self.health.restarts += 1
                    self.health.connected = False
                    delay = next(delays)
                    self._logs.warning("socket", "source %s: socket error (%s); reopening in %.1f s", self.id, exc, delay)
                    self._close()
                    self.sleep(delay)
                    continue
                if received:
                    delays = self.backoff()
        finally:
            self._close()
            self._logs.flush()

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
            self.health.packets_rejected += 1
            self._logs.warning("reject", "source %s: dropping packets from %s: not in allow_from", self.id, host)
            return
        try:
            packet = parse_rtp(data)
        except ValueError as exc:
            self.health.packets_malformed += 1
            self._logs.warning("malformed", "source %s: dropping malformed RTP packet from %s: %s", self.id, host, exc)
            return
        if packet.payload_type in RTCP_TYPES:
            return  # RTCP multiplexed on the RTP port: nothing to play
        if not self.format.accepts(packet.payload_type):
            self.health.packets_malformed += 1
            self._logs.warning("pt", "source %s: dropping RTP packets from %s: %s", self.id, host, self.format.refusal(packet.payload_type))
            return
        self._last_packet = now
        jumps = self.stream.jumps
        self._play(self.stream.push(packet, now))
        # the jitter buffer counts what it drops; health shows it (a lone wild sequence number as malformed)
        self.health.packets_malformed += self.stream.jumps - jumps
        self.health.packets_late, self.health.packets_duplicate = self.stream.late, self.stream.duplicates

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
            self.health.discontinuities += 1
            self._logs.info("restart", "source %s: RTP stream restarted: %s", self.id, block.reason)
        self._streams += 1
        self._resampler = Resampler(self.format.rate, self.sample_rate)
        self._anchor_rtp, self._out_samples = block.rtp_time, 0
        self._anchor_wall = self._wall(block.arrival) - block.samples.size / self.format.rate

    def _check_clock(self, block: Block) -> None:
        """Re-anchor when the block's RTP-derived end time strays from its arrival time."""
        end = self._anchor_wall + (block.rtp_time + block.samples.size - self._anchor_rtp) / self.format.rate
        drift = self._wall(block.arrival) - end
        if abs(drift) > REANCHOR_S:
            self._logs.info("clock", "source %s: RTP clock off the wall clock by %.2f s; re-anchoring", self.id, drift)
            self._anchor_wall += drift

    @staticmethod
    def _wall(monotonic: float) -> float:
        return time.time() - (time.monotonic() - monotonic)


def _source_ipv4(source_id: str, field: str, value: str) -> ipaddress.IPv4Address:
    """``_ipv4`` with the source named, for the constructor's defensive checks."""
    try:
        return _ipv4(field, value, "127.0.0.1")
    except ValueError as exc:
        raise ValueError(f"source {source_id}: {exc}") from None
