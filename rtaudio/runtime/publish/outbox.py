"""The outbox: a bounded FIFO of messages waiting for the broker, in memory or on disk.

``put`` (pipeline thread) never blocks on I/O. The sender thread ``take``s the next messages
it has not been given yet, oldest first, and calls ``done`` once the broker has them. When
the outbox is full, the oldest tags message that has not been taken is dropped; then the
oldest caption; only when neither is left is the oldest event dropped. Every drop is reported through ``on_drop``.

The disk outbox is one SQLite database in WAL mode: each insert/delete batch is an atomic
transaction, rows keep their sequence number (so order survives a restart), and there is no
file per message to create and fsync. ``put`` only stages rows in memory; the sender thread
writes them (``flush``) within a fraction of a second, and always before ``take``.
``synchronous=NORMAL``: a killed process loses nothing committed; a power cut may lose the
last commits but never corrupts the file.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

QueuedKind = Literal["tags", "captions", "events"]
DROP_ORDER: tuple[QueuedKind, ...] = ("tags", "captions", "events")  # first dropped first when full
DropCallback = Callable[[str], None]


@dataclass(frozen=True)
class Message:
    """One queued MQTT message; ``captured`` is the stream time of its last sample, if any."""

    seq: int
    kind: QueuedKind
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    source: str = ""
    captured: float | None = None


class Outbox(ABC):
    """Bounded, ordered; drops the oldest untaken tags first, events last."""

    def __init__(self, capacity: int, on_drop: DropCallback | None = None):
        if capacity < 1:
            raise ValueError(f"outbox capacity {capacity} is not allowed; expected at least 1")
        self.capacity = capacity
        self._on_drop = on_drop
        self._lock = threading.Lock()
        # Sequence numbers by kind, oldest first (dicts keep insertion order).
        self._index: dict[str, dict[int, None]] = {kind: {} for kind in DROP_ORDER}
        self._next_seq = 1
        self._taken_upto = 0  # every seq <= this was handed to the sender

    def __len__(self) -> int:
        return sum(len(seqs) for seqs in self._index.values())

    def counts(self) -> dict[str, int]:
        """Messages waiting, by kind (tags and events always; captions when there are any)."""
        return {kind: len(seqs) for kind, seqs in self._index.items() if seqs or kind != "captions"}

    def put(self, kind: QueuedKind, topic: str, payload: bytes, qos: int, retain: bool = False, source: str = "", captured: float | None = None) -> None:
        """Queue a message; if that overflows the outbox, drop one per the policy and report it."""
        if kind not in self._index:
            raise ValueError(f"message kind {kind!r} is not allowed in the outbox; expected captions, tags or events")
        dropped = ""
        with self._lock:
            message = Message(self._next_seq, kind, topic, payload, qos, retain, source, captured)
            self._next_seq += 1
            self._index[kind][message.seq] = None
            self._add(message)
            if len(self) > self.capacity:
                dropped = self._drop_one()
        if dropped and self._on_drop:
            self._on_drop(dropped)

    def _drop_one(self) -> str:
        """Drop the oldest untaken tags message, else caption, else event; return its kind.

        The newest message is never taken yet, so there is always a candidate.
        """
        for kind in DROP_ORDER:
            victim = next((seq for seq in self._index[kind] if seq > self._taken_upto), None)
            if victim is not None:
                del self._index[kind][victim]
                self._discard(victim)
                return kind
        raise AssertionError("outbox over capacity with every message in flight")

    def take(self, limit: int) -> list[Message]:
        """Up to ``limit`` messages not handed out before, oldest first (sender thread)."""
        if limit <= 0:
            return []
        self.flush()
        with self._lock:
            after = self._taken_upto
        messages = [m for m in self._read(after, limit) if m.seq in self._index[m.kind]]
        if messages:
            with self._lock:
                self._taken_upto = max(self._taken_upto, messages[-1].seq)
        return messages

    def done(self, message: Message) -> None:
        """The broker has the message (or it was given up): forget it."""
        with self._lock:
            if message.seq in self._index[message.kind]:
                del self._index[message.kind][message.seq]
                self._discard(message.seq)

    def flush(self) -> None:
        """Persist staged changes (disk outbox); call from the sender thread."""

    def close(self) -> None:
        """Persist and release resources."""

    def _restore(self, rows: Iterable[tuple[int, str]]) -> None:
        """Rebuild the index from persisted (seq, kind) rows, oldest first."""
        for seq, kind in rows:
            self._index[kind][seq] = None
            self._next_seq = seq + 1

    @abstractmethod
    def _add(self, message: Message) -> None:
        """Store a message (called under the lock)."""

    @abstractmethod
    def _discard(self, seq: int) -> None:
        """Delete a stored message (called under the lock)."""

    @abstractmethod
    def _read(self, after: int, limit: int) -> list[Message]:
        """Stored messages with seq > after, oldest first (sender thread)."""


class MemoryOutbox(Outbox):
    """Lost when the process ends."""

    def __init__(self, capacity: int, on_drop: DropCallback | None = None):
        super().__init__(capacity, on_drop)
        self._messages: dict[int, Message] = {}

    def _add(self, message: Message) -> None:
        self._messages[message.seq] = message

    def _discard(self, seq: int) -> None:
        self._messages.pop(seq, None)

    def _read(self, after: int, limit: int) -> list[Message]:
        with self._lock:
            out = []
            for seq, message in self._messages.items():
                if seq > after:
                    out.append(message)
                    if len(out) == limit:
                        break
            return out


class SqliteOutbox(Outbox):
    """Survives restarts: ``<directory>/outbox.sqlite3``."""

    FILENAME = "outbox.sqlite3"

    def __init__(self, directory: Path, capacity: int, on_drop: DropCallback | None = None):
        super().__init__(capacity, on_drop)
        self.path = Path(directory) / self.FILENAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
                " topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
                " source TEXT NOT NULL, captured REAL)"
            )
            rows = self._db.execute("SELECT seq, kind FROM messages ORDER BY seq").fetchall()
        except (OSError, sqlite3.Error) as exc:
            raise OSError(f"cannot open the MQTT outbox {self.path}: {exc}") from exc
        self._db_lock = threading.Lock()  # the connection is shared by the sender and close()
        self._staged: dict[int, Message] = {}
        self._deleted: list[int] = []
        self._restore(rows)
        if rows:
            log.info("outbox %s: %d message(s) from a previous run will be delivered first", self.path, len(rows))
        while len(self) > self.capacity:  # the capacity may have shrunk since
            dropped = self._drop_one()
            if self._on_drop:
                self._on_drop(dropped)

    def _add(self, message: Message) -> None:
        self._staged[message.seq] = message

    def _discard(self, seq: int) -> None:
        if self._staged.pop(seq, None) is None:
            self._deleted.append(seq)

    def flush(self) -> None:
        with self._lock:
            staged, self._staged = self._staged, {}
            deleted, self._deleted = self._deleted, []
        if not staged and not deleted:
            return
        rows = [(m.seq, m.kind, m.topic, m.payload, m.qos, int(m.retain), m.source, m.captured) for m in staged.values()]
        with self._db_lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.executemany("DELETE FROM messages WHERE seq = ?", [(seq,) for seq in deleted])

    def _read(self, after: int, limit: int) -> list[Message]:
        with self._db_lock:
            rows = self._db.execute(
                "SELECT seq, kind, topic, payload, qos, retain, source, captured FROM messages WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        return [
            Message(seq, kind, topic, bytes(payload), qos, bool(retain), source, captured) for seq, kind, topic, payload, qos, retain, source, captured in rows
        ]

    def close(self) -> None:
        self.flush()
        with self._db_lock:
            self._db.close()


def open_outbox(directory: Path | None, capacity: int, on_drop: DropCallback | None = None) -> Outbox:
    """A disk outbox when ``directory`` is set, else one in memory."""
    if directory is None:
        return MemoryOutbox(capacity, on_drop)
    return SqliteOutbox(directory, capacity, on_drop)
