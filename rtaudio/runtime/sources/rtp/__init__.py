"""RTP audio over UDP: ``packet`` (RFC 3550 headers), ``codecs`` (RFC 3551 payloads), ``jitter``
(reordering, loss concealment, discontinuities) and ``source`` (the socket and the ``Source``)."""

from rtaudio.runtime.sources.rtp.source import RtpConfig, RtpSource

__all__ = ["RtpConfig", "RtpSource"]
