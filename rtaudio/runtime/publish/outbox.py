"""The outbox: a bounded FIFO of messages waiting for the broker, in memory or on disk.

``put`` (pipeline thread) never blocks on I/O. The sender thread ``take``s the next messages
it has not been given yet, oldest first, and calls ``done`` once the broker has them. When
the outbox is full, the oldest tags message that has not been taken is dropped; then the oldest level message; then the
oldest caption; only when neither is left is the oldest event dropped. Every drop is reported through ``on_drop``.

The disk outbox is one SQLite database in WAL mode: each insert/delete batch is an atomic
transaction, rows keep their sequence number (so order survives a restart), and there is no
file per message to create and fsync. ``put`` only stages rows in memory; the sender thread
writes them (``flush``) within a fraction of a second, and always before ``take``.
``synchronous=NORMAL``: a killed process loses nothing committed; a power cut may lose the
last commits. An SD card that loses power mid-write can still leave the file unreadable: then
it is moved aside (``outbox.sqlite3.corrupt-<UTC time>``, with its -wal/-shm), logged once as
an error, and a fresh outbox starts, so rtaudio keeps running instead of crash-looping.
The directory is created 0700 and the files are 0600: queued messages say what was heard.

The disk outbox also keeps the events that are open (onset sent, offset not yet): each onset
``put`` with ``opens`` records one, the offset's ``put`` with ``closes`` removes it, in the
same transaction as the message, and ``progress`` keeps its source's latest stream time (written
at most once per ``PROGRESS_INTERVAL_S``). After a crash ``open_events`` returns what the dead
process left open, so the next start can close each at the last stream time it reached. The
memory outbox keeps none of this: with it there is nothing to restore.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

QueuedKind = Literal["tags", "level", "captions", "events"]
DROP_ORDER: tuple[QueuedKind, ...] = ("tags", "level", "captions", "events")  # first dropped first when full
DropCallback = Callable[[str], None]

DIR_MODE = 0o700  # the outbox directory, when rtaudio creates it
FILE_MODE = 0o600  # the database and its -wal/-shm
PROGRESS_INTERVAL_S = 1.0  # open events' stream times are written at most this often
_SIDE_FILES = ("-wal", "-shm", "-journal")
_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)


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


@dataclass(frozen=True)
class OpenEvent:
    """An event whose onset is queued and whose offset is not: ``record`` is the publisher's own
    serialisation of it (opaque here); ``last_time`` the latest stream time of its source."""

    event_id: str
    source: str
    record: str
    last_time: float


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
        """Messages waiting, by kind (tags and events always; captions and level when there are any)."""
        return {kind: len(seqs) for kind, seqs in self._index.items() if seqs or kind not in ("captions", "level")}

    def put(
        self,
        kind: QueuedKind,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        source: str = "",
        captured: float | None = None,
        opens: OpenEvent | None = None,
        closes: str | None = None,
    ) -> None:
        """Queue a message; if that overflows the outbox, drop one per the policy and report it.

        ``opens``/``closes`` record or forget an open event together with the message (an onset,
        an offset), so a crash never keeps one without the other."""
        if kind not in self._index:
            raise ValueError(f"message kind {kind!r} is not allowed in the outbox; expected captions, level, tags or events")
        dropped = ""
        with self._lock:
            message = Message(self._next_seq, kind, topic, payload, qos, retain, source, captured)
            self._next_seq += 1
            self._index[kind][message.seq] = None
            self._add(message)
            if opens is not None or closes is not None:
                self._track(opens, closes)
            if len(self) > self.capacity:
                dropped = self._drop_one()
        if dropped and self._on_drop:
            self._on_drop(dropped)

    def forget_event(self, event_id: str) -> None:
        """Forget an open event without a message (its offset could not be encoded)."""
        with self._lock:
            self._track(None, event_id)

    def progress(self, source: str, stream_time: float) -> None:
        """The latest stream time of ``source`` (pipeline thread, every window; O(1), no I/O)."""

    def open_events(self) -> list[OpenEvent]:
        """The events a previous process left open (disk outbox; the memory outbox has none)."""
        return []

    def _track(self, opens: OpenEvent | None, closes: str | None) -> None:
        """Record an open event / forget one (called under the lock); the memory outbox keeps none."""

    def _drop_one(self) -> str:
        """Drop the oldest untaken tags message, else level, else caption, else event; return its kind.

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

    def flush(self, force: bool = False) -> None:
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
    """Lost when the process ends (open events too: there is nothing to restore)."""

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


class _Unreadable(Exception):
    """The database opened but its content is damaged (``PRAGMA quick_check`` said so)."""


class SqliteOutbox(Outbox):
    """Survives restarts: ``<directory>/outbox.sqlite3``; an unreadable one is moved aside.

    Corruption is detected at open by ``sqlite3.DatabaseError`` (SQLITE_CORRUPT, SQLITE_NOTADB)
    on the first statements AND by ``PRAGMA quick_check``: the start-up ``SELECT`` reads only
    the table's b-tree, so damage in overflow pages (large payloads) or the free list would
    otherwise surface later in the sender thread, failing every send. quick_check reads every
    page once, which for an outbox (a few MB at most) is milliseconds to a fraction of a second.
    """

    FILENAME = "outbox.sqlite3"

    def __init__(self, directory: Path, capacity: int, on_drop: DropCallback | None = None):
        super().__init__(capacity, on_drop)
        self.path = Path(directory) / self.FILENAME
        self.moved_aside: Path | None = None  # where an unreadable database went, if it was
        self._db_lock = threading.Lock()  # the connection is shared by the sender and close()
        self._staged: dict[int, Message] = {}
        self._deleted: list[int] = []
        self._opened: dict[str, OpenEvent] = {}  # open events staged for insert
        self._closed: set[str] = set()  # open events staged for delete
        self._live: dict[str, str] = {}  # this run's open events: event id -> source
        self._stream_time: dict[str, float] = {}  # source -> latest stream time
        self._written_time: dict[str, float] = {}  # source -> the stream time last written
        self._next_progress = 0.0  # monotonic time the next progress write may happen
        self._left_open: list[OpenEvent] = []  # what the previous process left open, until closed
        try:
            rows, open_rows = self._open()
        except _Unreadable as exc:
            rows, open_rows = self._start_fresh(str(exc))
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise OSError(f"cannot open the MQTT outbox {self.path}: {exc}") from exc
            rows, open_rows = self._start_fresh(str(exc))
        except OSError as exc:
            raise OSError(f"cannot open the MQTT outbox {self.path}: {exc}") from exc
        self._restore(rows)
        self._left_open = [OpenEvent(*row) for row in open_rows]
        if self._left_open:
            log.info("outbox %s: %d event(s) were still open when the previous run ended", self.path, len(self._left_open))
        if rows:
            log.info("outbox %s: %d message(s) from a previous run will be delivered first", self.path, len(rows))
        while len(self) > self.capacity:  # the capacity may have shrunk since
            dropped = self._drop_one()
            if self._on_drop:
                self._on_drop(dropped)

    # ------------------------------------------------------------ opening, modes, recovery

    def _open(self) -> tuple[list[tuple[int, str]], list[tuple[str, str, str, float]]]:
        """Connect, check and read the database: (message seq/kind rows, open event rows).

        Raises ``_Unreadable`` or ``sqlite3.DatabaseError`` for a damaged file, OSError otherwise."""
        directory = self.path.parent
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            os.chmod(directory, DIR_MODE)  # mkdir's mode is masked by the umask
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE))  # never created wider than 0600
        self._chmod_files()  # files from an older rtaudio may be 0644
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")  # SQLite gives -wal/-shm the database's mode
            self._db.execute("PRAGMA synchronous=NORMAL")
            check = [str(row[0]) for row in self._db.execute("PRAGMA quick_check(3)").fetchall()]
            if check != ["ok"]:
                lines = [line for text in check for line in text.splitlines() if line and not line.startswith("***")]
                raise _Unreadable("quick_check: " + "; ".join(lines)[:300])
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
                " topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
                " source TEXT NOT NULL, captured REAL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS open_events (event_id TEXT PRIMARY KEY, source TEXT NOT NULL, record TEXT NOT NULL, last_time REAL NOT NULL)"
            )
            rows = self._db.execute("SELECT seq, kind FROM messages ORDER BY seq").fetchall()
            open_rows = self._db.execute("SELECT event_id, source, record, last_time FROM open_events ORDER BY rowid").fetchall()
        except (_Unreadable, sqlite3.DatabaseError) as exc:
            if isinstance(exc, _Unreadable) or _is_corrupt(exc):
                raise  # still open: closing it now would checkpoint the WAL and delete it; _start_fresh moves the files first
            self._db.close()
            raise
        except BaseException:
            self._db.close()
            raise
        self._chmod_files()
        return rows, open_rows

    def _chmod_files(self) -> None:
        for path in [self.path, *(self.path.with_name(self.path.name + side) for side in _SIDE_FILES)]:
            try:
                if path.stat().st_mode & 0o777 != FILE_MODE:
                    os.chmod(path, FILE_MODE)
            except FileNotFoundError:
                pass

    def _start_fresh(self, why: str) -> tuple[list[tuple[int, str]], list[tuple[str, str, str, float]]]:
        """Move the unreadable database (and its -wal/-shm) aside, log it once, open an empty one."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while any(target.with_name(target.name + side).exists() for side in ("", *_SIDE_FILES)):
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            for side in ("", *_SIDE_FILES):  # the set keeps SQLite's names, so sqlite3 can still open the copy
                source = self.path.with_name(self.path.name + side)
                if source.exists():
                    source.rename(target.with_name(target.name + side))
        except OSError as exc:
            raise OSError(f"the MQTT outbox {self.path} is unreadable ({why}) and cannot be moved aside to {target}: {exc}") from exc
        finally:
            try:
                self._db.close()  # after the move, so SQLite cannot delete the -wal (it unlinks by the old name)
            except sqlite3.Error:
                pass
        self.moved_aside = target
        log.error(
            "MQTT outbox %s is unreadable (%s): moved it aside to %s and started an empty outbox; the messages and open events it held are not delivered",
            self.path,
            why,
            target,
        )
        try:
            return self._open()
        except (_Unreadable, sqlite3.Error, OSError) as exc:
            if isinstance(exc, (_Unreadable, sqlite3.DatabaseError)) and hasattr(self, "_db"):
                self._db.close()
            raise OSError(f"cannot open the MQTT outbox {self.path} even after moving the unreadable one aside to {target}: {exc}") from exc

    # ------------------------------------------------------------ open events

    def progress(self, source: str, stream_time: float) -> None:
        with self._lock:
            self._stream_time[source] = stream_time

    def open_events(self) -> list[OpenEvent]:
        return list(self._left_open)

    def _track(self, opens: OpenEvent | None, closes: str | None) -> None:
        if opens is not None:
            known = self._stream_time.get(opens.source)
            if known is not None and known > opens.last_time:
                opens = replace(opens, last_time=known)
            self._opened[opens.event_id] = opens
            self._live[opens.event_id] = opens.source
            self._closed.discard(opens.event_id)
        if closes is not None:
            self._opened.pop(closes, None)
            self._live.pop(closes, None)
            self._closed.add(closes)
            self._left_open = [e for e in self._left_open if e.event_id != closes]

    def _due_progress(self, force: bool) -> list[tuple[float, str, float]]:
        """(time, event id, time) for this run's open events whose source's time moved (under the lock)."""
        now = time.monotonic()
        if not self._live or (now < self._next_progress and not force):
            return []
        moved = {}
        for source in set(self._live.values()):
            latest = self._stream_time.get(source)
            if latest is not None and latest != self._written_time.get(source):
                moved[source] = self._written_time[source] = latest
        if moved:
            self._next_progress = now + PROGRESS_INTERVAL_S
        return [(moved[source], event_id, moved[source]) for event_id, source in self._live.items() if source in moved]

    # ------------------------------------------------------------ storage

    def _add(self, message: Message) -> None:
        self._staged[message.seq] = message

    def _discard(self, seq: int) -> None:
        if self._staged.pop(seq, None) is None:
            self._deleted.append(seq)

    def flush(self, force: bool = False) -> None:
        """Write staged messages and open-event changes in one transaction (sender thread).

        Open events' stream times are written at most every ``PROGRESS_INTERVAL_S`` (``force``: now)."""
        with self._lock:
            staged, self._staged = self._staged, {}
            deleted, self._deleted = self._deleted, []
            opened, self._opened = self._opened, {}
            closed, self._closed = self._closed, set()
            progress = self._due_progress(force)
        if not staged and not deleted and not opened and not closed and not progress:
            return
        rows = [(m.seq, m.kind, m.topic, m.payload, m.qos, int(m.retain), m.source, m.captured) for m in staged.values()]
        with self._db_lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.executemany("DELETE FROM messages WHERE seq = ?", [(seq,) for seq in deleted])
            self._db.executemany(
                "INSERT OR REPLACE INTO open_events VALUES (?, ?, ?, ?)", [(e.event_id, e.source, e.record, e.last_time) for e in opened.values()]
            )
            self._db.executemany("DELETE FROM open_events WHERE event_id = ?", [(event_id,) for event_id in closed])
            self._db.executemany("UPDATE open_events SET last_time = ? WHERE event_id = ? AND last_time < ?", progress)

    def _read(self, after: int, limit: int) -> list[Message]:
        with self._db_lock:
            rows = self._db.execute(
                "SELECT seq, kind, topic, payload, qos, retain, source, captured FROM messages WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        return [
            Message(seq, kind, topic, bytes(payload), qos, bool(retain), source, captured) for seq, kind, topic, payload, qos, retain, source, captured in rows
        ]

    def close(self) -> None:
        self.flush(force=True)
        with self._db_lock:
            self._db.close()


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """The error says the file is damaged or not a database (not: locked, read-only, missing)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _CORRUPT_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def open_outbox(directory: Path | None, capacity: int, on_drop: DropCallback | None = None) -> Outbox:
    """A disk outbox when ``directory`` is set, else one in memory."""
    if directory is None:
        return MemoryOutbox(capacity, on_drop)
    return SqliteOutbox(directory, capacity, on_drop)
