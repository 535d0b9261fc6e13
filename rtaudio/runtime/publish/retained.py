"""Retained topics whose latest value is what matters (label states, discovery configs).

Unlike the outbox (a FIFO of every message), this keeps per topic its latest payload and at most
two values still to send: the oldest unsent one and the latest. So its size is bounded by the
number of topics (sources x labels, plus the discovery configs), never by time offline, and a
short ON that was not sent yet when its OFF came is still sent (ON, then OFF) rather than lost.
While the broker is unreachable, flips beyond that collapse; every transition is still on the
events topic, in the outbox.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class RetainedTopics:
    """Latest payload per topic and the values still to send, topics oldest first (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, bytes] = {}
        self._pending: dict[str, list[bytes]] = {}  # insertion order: the order topics are sent in; each list 1 or 2 long

    def set(self, topic: str, payload: bytes) -> None:
        """Make ``payload`` the value of ``topic``; queued unless it already is the value (sent or queued)."""
        with self._lock:
            if self._values.get(topic) == payload:
                return
            self._values[topic] = payload
            pending = self._pending.get(topic)
            if pending is None:
                self._pending[topic] = [payload]
            elif len(pending) == 1:
                pending.append(payload)
            elif pending[0] == payload:  # [A, B] then A: B would be undone at once
                del pending[1]
            else:
                pending[1] = payload

    def mark(self, topics: Iterable[str]) -> None:
        """Send these topics' latest values again (after a reconnect, or when Home Assistant restarts)."""
        with self._lock:
            for topic in topics:
                if topic in self._values and topic not in self._pending:
                    self._pending[topic] = [self._values[topic]]

    def take(self, limit: int) -> list[tuple[str, bytes]]:
        """Up to ``limit`` (topic, payload) to send now, oldest topic first; a topic's values in order."""
        with self._lock:
            taken: list[tuple[str, bytes]] = []
            for topic in list(self._pending):
                values = self._pending[topic]
                room = limit - len(taken)
                if room <= 0:
                    break
                taken.extend((topic, value) for value in values[:room])
                if room >= len(values):
                    del self._pending[topic]
                else:  # the rest keeps its place at the front
                    del values[:room]
            return taken

    def retry(self, topic: str) -> None:
        """A send failed: queue ``topic``'s latest value again."""
        self.mark([topic])

    def get(self, topic: str) -> bytes | None:
        """The latest value of ``topic`` (None if it never had one)."""
        with self._lock:
            return self._values.get(topic)

    def pending(self) -> int:
        """Topics with a value waiting to be sent."""
        with self._lock:
            return len(self._pending)
