"""The outbox: order, bounds, drop policy (tags first, events last, every drop counted), persistence."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from rtaudio.runtime.publish.outbox import MemoryOutbox, Outbox, SqliteOutbox, open_outbox


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path):
    drops: Counter[str] = Counter()

    def factory(capacity: int) -> tuple[Outbox, Counter[str]]:
        directory = None if request.param == "memory" else tmp_path / "outbox"
        return open_outbox(directory, capacity, lambda kind: drops.update([kind])), drops

    return factory


def put(outbox: Outbox, kind: str, name: str) -> None:
    outbox.put(kind, f"t/{kind}", name.encode(), 1 if kind == "events" else 0)  # type: ignore[arg-type]


def names(messages) -> list[str]:
    return [m.payload.decode() for m in messages]


def test_fifo_order_and_done(make) -> None:
    outbox, drops = make(10)
    for i in range(3):
        put(outbox, "events", f"e{i}")
        put(outbox, "tags", f"t{i}")
    first = outbox.take(4)
    assert names(first) == ["e0", "t0", "e1", "t1"]
    assert names(outbox.take(10)) == ["e2", "t2"]  # never hands out a message twice
    assert outbox.take(10) == []
    for message in first:
        outbox.done(message)
    assert len(outbox) == 2 and outbox.counts() == {"tags": 1, "events": 1}
    assert not drops


def test_full_drops_oldest_tags_first_then_oldest_events(make) -> None:
    outbox, drops = make(10)
    for i in range(4):
        put(outbox, "events", f"e{i}")
    for i in range(6):
        put(outbox, "tags", f"t{i}")
    put(outbox, "events", "e4")  # full: the oldest tag goes
    assert drops == {"tags": 1}
    for i in range(5, 10):
        put(outbox, "events", f"e{i}")  # the remaining 5 tags go, oldest first
    assert drops == {"tags": 6}
    assert outbox.counts() == {"tags": 0, "events": 10}
    put(outbox, "tags", "late")  # only events left: the new tag is the oldest tag, so it goes
    assert drops == {"tags": 7}
    put(outbox, "events", "e10")  # now the oldest event goes
    assert drops == {"tags": 7, "events": 1}
    assert names(outbox.take(100)) == [f"e{i}" for i in range(1, 11)]
    assert len(outbox) == 10


def test_messages_handed_out_are_not_dropped(make) -> None:
    outbox, drops = make(10)
    for i in range(10):
        put(outbox, "tags", f"t{i}")
    in_flight = outbox.take(3)
    put(outbox, "tags", "t10")
    assert drops == {"tags": 1}
    assert names(outbox.take(100)) == [f"t{i}" for i in range(4, 11)]  # t3 dropped, t0..t2 in flight
    for message in in_flight:
        outbox.done(message)
    assert len(outbox) == 7


def test_done_twice_and_after_drop_is_harmless(make) -> None:
    outbox, _ = make(10)
    put(outbox, "events", "e0")
    [message] = outbox.take(1)
    outbox.done(message)
    outbox.done(message)
    assert len(outbox) == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity 0"):
        MemoryOutbox(0)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="'health'.*tags or events"):
        MemoryOutbox(10).put("health", "t", b"{}", 0)  # type: ignore[arg-type]


def test_sqlite_survives_reopen_in_order_without_delivered_messages(tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path, 100)
    for i in range(5):
        outbox.put("events", "t/events", f"e{i}".encode(), 1, source="lobby", captured=None)
        outbox.put("tags", "t/tags", f"t{i}".encode(), 0, source="lobby", captured=1000.0 + i)
    delivered = outbox.take(3)
    for message in delivered:
        outbox.done(message)
    outbox.take(2)  # handed out but not acknowledged: must come back after a restart
    outbox.close()

    again = SqliteOutbox(tmp_path, 100)
    messages = again.take(100)
    assert names(messages) == ["t1", "e2", "t2", "e3", "t3", "e4", "t4"]
    assert [m.seq for m in messages] == sorted(m.seq for m in messages)
    assert messages[0].captured == 1001.0 and messages[0].source == "lobby" and messages[0].qos == 0
    again.put("events", "t/events", b"new", 1)
    assert names(again.take(10)) == ["new"]  # new messages come after the old ones
    again.close()


def test_sqlite_is_written_before_the_sender_takes(tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path, 100)
    outbox.put("events", "t/events", b"e0", 1)
    outbox.flush()
    rows = sqlite3.connect(outbox.path).execute("SELECT payload FROM messages").fetchall()
    assert rows == [(b"e0",)]
    outbox.close()


def test_sqlite_reopen_with_smaller_capacity_drops_and_counts(tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path, 20)
    for i in range(12):
        outbox.put("tags" if i % 2 else "events", "t", f"m{i}".encode(), 0)
    outbox.close()
    drops: Counter[str] = Counter()
    again = SqliteOutbox(tmp_path, 10, lambda kind: drops.update([kind]))
    assert drops == {"tags": 2}
    assert names(again.take(100)) == ["m0", "m2", "m4", "m5", "m6", "m7", "m8", "m9", "m10", "m11"]
    again.close()


def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot open the MQTT outbox"):
        SqliteOutbox(blocker / "sub", 10)
