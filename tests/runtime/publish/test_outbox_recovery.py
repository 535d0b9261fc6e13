"""The disk outbox survives its own corruption, keeps its files private, and keeps open events across a crash.

Corruption is made the way an SD card makes it: random bytes over the file, the file cut mid-page
after a crash left its -wal/-shm, garbage over the pages a plain query never reads. A "crash" is a
child process that kills itself with SIGKILL after the sender's flush.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest

from rtaudio.config.site import MqttConfig
from rtaudio.runtime.events import Event
from rtaudio.runtime.publish import messages as msgs
from rtaudio.runtime.publish import outbox as outbox_module
from rtaudio.runtime.publish.mqtt import MqttPublisher
from rtaudio.runtime.publish.outbox import MemoryOutbox, OpenEvent, SqliteOutbox
from tests.helpers import REPO, free_port

DB = SqliteOutbox.FILENAME


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def fill(directory: Path, n: int = 200, size: int = 300) -> None:
    outbox = SqliteOutbox(directory, 10_000)
    for i in range(n):
        outbox.put("events", "t/events", f"m{i}:".encode() + os.urandom(size), 1)
    outbox.close()


def crash_after_flush(directory: Path, code: str) -> None:
    """Run ``code`` (with ``outbox`` open on ``directory``) in a child, flush, then SIGKILL it."""
    head = "import os, signal\nfrom pathlib import Path\nfrom rtaudio.runtime.publish.outbox import OpenEvent, SqliteOutbox\n"
    opened = f"outbox = SqliteOutbox(Path({str(directory)!r}), 10_000)\n"
    script = head + opened + textwrap.dedent(code) + "\noutbox.flush()\nos.kill(os.getpid(), signal.SIGKILL)\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr


def aside(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if ".corrupt-" in p.name)


def recovery_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.ERROR and r.name == outbox_module.__name__]


def assert_fresh_and_working(directory: Path) -> None:
    outbox = SqliteOutbox(directory, 10)
    assert len(outbox) == 0 and outbox.open_events() == []
    outbox.put("events", "t/events", b"after", 1)
    outbox.close()
    again = SqliteOutbox(directory, 10)
    assert [m.payload for m in again.take(10)] == [b"after"]
    again.close()


# ---------------------------------------------------------------- corruption


def test_random_bytes_are_moved_aside_logged_once_and_a_fresh_outbox_starts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    garbage = os.urandom(64 * 1024)
    (tmp_path / DB).write_bytes(garbage)
    with caplog.at_level(logging.INFO):
        outbox = SqliteOutbox(tmp_path, 10)
    assert len(outbox) == 0
    [moved] = aside(tmp_path)
    assert outbox.moved_aside == moved and moved.name.startswith(f"{DB}.corrupt-") and moved.name.endswith("Z")
    assert moved.read_bytes() == garbage  # kept, untouched, for whoever wants to look
    [error] = recovery_errors(caplog)
    text = error.getMessage()
    assert str(tmp_path / DB) in text and str(moved) in text and "not a database" in text
    outbox.put("events", "t/events", b"e0", 1)
    [message] = outbox.take(10)
    assert message.payload == b"e0"
    outbox.done(message)
    outbox.close()
    caplog.clear()
    assert_fresh_and_working(tmp_path)  # the next start is a normal one: nothing moved, nothing logged
    assert not recovery_errors(caplog) and len(aside(tmp_path)) == 1


def test_cut_mid_page_after_a_crash_moves_the_database_with_its_wal_and_shm(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fill(tmp_path, 300)  # checkpointed into the main file by the clean close
    crash_after_flush(tmp_path, "for i in range(50): outbox.put('tags', 't/tags', b'x' * 300, 0)")
    wal, shm = tmp_path / f"{DB}-wal", tmp_path / f"{DB}-shm"
    assert wal.exists() and shm.exists()  # what a killed process leaves
    data = (tmp_path / DB).read_bytes()
    page = int.from_bytes(data[16:18], "big")
    (tmp_path / DB).write_bytes(data[: (len(data) // page // 2) * page + page // 2])  # half the file, ending mid-page
    wal_bytes = wal.read_bytes()
    with caplog.at_level(logging.ERROR):
        outbox = SqliteOutbox(tmp_path, 10)
    assert len(outbox) == 0
    moved = outbox.moved_aside
    assert moved is not None
    assert sorted(p.name for p in aside(tmp_path)) == sorted([moved.name, f"{moved.name}-shm", f"{moved.name}-wal"])
    assert (tmp_path / f"{moved.name}-wal").read_bytes() == wal_bytes  # the pair keeps sqlite's naming
    [error] = recovery_errors(caplog)
    assert str(tmp_path / DB) in error.getMessage() and str(moved) in error.getMessage()
    outbox.close()
    assert_fresh_and_working(tmp_path)


def test_quick_check_catches_damage_the_first_query_never_reads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Large payloads live in overflow pages; ``SELECT seq, kind`` reads only the table's b-tree pages."""
    fill(tmp_path, 20, size=20_000)
    path = tmp_path / DB
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    btree_flags = {0x02, 0x05, 0x0A, 0x0D}
    overflow = [i for i in range(1, len(data) // page) if data[i * page] not in btree_flags]
    assert len(overflow) > 50
    for i in overflow:
        data[i * page : (i + 1) * page] = os.urandom(page)
    path.write_bytes(bytes(data))
    with sqlite3.connect(path) as db:  # the damage is invisible to the start-up query...
        assert len(db.execute("SELECT seq, kind FROM messages").fetchall()) == 20
    db.close()
    with caplog.at_level(logging.ERROR):
        outbox = SqliteOutbox(tmp_path, 10)  # ...but not to quick_check
    assert len(outbox) == 0 and outbox.moved_aside is not None
    assert "quick_check" in recovery_errors(caplog)[0].getMessage()
    outbox.close()


def test_an_error_that_is_not_corruption_moves_nothing(tmp_path: Path) -> None:
    (tmp_path / DB).mkdir()  # not a damaged database: a mistake (or a transient fault) to report, never to "repair"
    with pytest.raises(OSError, match="cannot open the MQTT outbox"):
        SqliteOutbox(tmp_path, 10)
    assert (tmp_path / DB).is_dir() and aside(tmp_path) == []


def test_a_healthy_outbox_is_not_touched(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fill(tmp_path, 30)
    with caplog.at_level(logging.INFO):
        outbox = SqliteOutbox(tmp_path, 100)
    assert len(outbox) == 30 and outbox.moved_aside is None and aside(tmp_path) == [] and not recovery_errors(caplog)
    outbox.close()


# ---------------------------------------------------------------- file modes


def test_directory_is_created_0700_and_files_0600_whatever_the_umask(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "outbox"
    old = os.umask(0)  # the most permissive umask: the modes must not come from it
    try:
        outbox = SqliteOutbox(directory, 10)
        outbox.put("events", "t/events", b"e0", 1)
        outbox.flush()
        assert mode(directory) == 0o700
        for name in (DB, f"{DB}-wal", f"{DB}-shm"):
            assert mode(directory / name) == 0o600, name
        outbox.close()
    finally:
        os.umask(old)


def test_files_left_world_readable_by_an_older_version_are_made_0600(tmp_path: Path) -> None:
    fill(tmp_path, 3)
    os.chmod(tmp_path / DB, 0o644)
    outbox = SqliteOutbox(tmp_path, 10)
    outbox.put("events", "t/events", b"e0", 1)
    outbox.flush()
    assert mode(tmp_path / DB) == 0o600 and mode(tmp_path / f"{DB}-wal") == 0o600
    outbox.close()


# ---------------------------------------------------------------- open events across a crash

ONSET = Event("onset", "ev-1", "hall", "tiny", "tone_440", 1000.0, None, 0.9, 0.8, 3)
ONSET_Q = Event("onset", "ev-2", "hall", "tiny", "hum", 1001.0, None, 0.4, 0.35, 2, query="a low hum")


def opened(event: Event) -> str:
    return f"OpenEvent({event.event_id!r}, {event.source_id!r}, {event.to_json()!r}, {event.onset_time!r})"


def test_open_events_survive_a_kill_at_the_last_written_stream_time(tmp_path: Path) -> None:
    crash_after_flush(
        tmp_path,
        f"""
        outbox.put('events', 't/events', b'onset-1', 1, source='hall', opens={opened(ONSET)})
        outbox.put('events', 't/events', b'onset-2', 1, source='hall', opens={opened(ONSET_Q)})
        outbox.put('events', 't/events', b'onset-3', 1, source='yard', opens=OpenEvent('ev-3', 'yard', '{{}}', 500.0))
        outbox.put('events', 't/events', b'offset-3', 1, source='yard', closes='ev-3')
        for t in range(1001, 1013):
            outbox.progress('hall', float(t))
        outbox.flush(force=True)
        outbox.progress('hall', 2000.0)  # within PROGRESS_INTERVAL_S of the last write: not written yet
        """,
    )
    outbox = SqliteOutbox(tmp_path, 100)
    left = {e.event_id: e for e in outbox.open_events()}
    assert set(left) == {"ev-1", "ev-2"}  # ev-3 was closed by its offset
    assert left["ev-1"].last_time == left["ev-2"].last_time == 1012.0
    assert Event.from_json(left["ev-2"].record) == ONSET_Q
    assert len(outbox) == 4  # the messages were kept too, in the same transactions
    outbox.put("events", "t/events", b"offset-1", 1, closes="ev-1")
    outbox.forget_event("ev-2")
    assert outbox.open_events() == []
    outbox.close()
    assert SqliteOutbox(tmp_path, 100).open_events() == []


def test_an_onset_takes_the_latest_stream_time_already_known(tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path, 100)
    outbox.progress("hall", 1003.5)  # the window that decided the onset came after its onset time
    outbox.put("events", "t/events", b"onset", 1, opens=OpenEvent("ev-1", "hall", ONSET.to_json(), ONSET.onset_time))
    outbox.flush()
    with sqlite3.connect(outbox.path) as db:
        assert db.execute("SELECT last_time FROM open_events").fetchall() == [(1003.5,)]
    db.close()
    outbox.close()


def test_stream_time_writes_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(outbox_module.time, "monotonic", lambda: clock[0])
    outbox = SqliteOutbox(tmp_path, 100)
    outbox.put("events", "t/events", b"onset", 1, opens=OpenEvent("ev-1", "hall", "{}", 1000.0))
    outbox.flush()
    written = []
    outbox._db.set_trace_callback(lambda sql: written.append(sql) if sql.startswith("UPDATE open_events") else None)
    for step in range(200):  # 20 s of windows every 0.1 s, a flush after each as the sender would
        outbox.progress("hall", 1000.0 + step * 0.1)
        clock[0] += 0.1
        outbox.flush()
    assert 15 <= len(written) <= 21  # at most one write per PROGRESS_INTERVAL_S, not one per window
    outbox.close()


def test_the_memory_outbox_keeps_no_open_events() -> None:
    outbox = MemoryOutbox(10)
    outbox.progress("hall", 1.0)
    outbox.put("events", "t/events", b"onset", 1, opens=OpenEvent("ev-1", "hall", "{}", 0.0))
    assert outbox.open_events() == []


# ---------------------------------------------------------------- the event side: record, offset, payload


def test_event_round_trips_and_closes_at_restart_never_before_its_onset() -> None:
    assert Event.from_json(ONSET_Q.to_json()) == ONSET_Q
    closed = ONSET.interrupted(1012.25)
    assert (closed.kind, closed.offset_time, closed.reason, closed.event_id, closed.peak_score) == ("offset", 1012.25, "restart", "ev-1", 0.9)
    assert ONSET.interrupted(10.0).offset_time == ONSET.onset_time
    for bad in ("[]", "{}", "not json", '{"kind": "onset"}', ONSET.to_json().replace("1000.0", '"x"')):
        with pytest.raises(ValueError, match="not a persisted event"):
            Event.from_json(bad)


def test_reason_is_in_a_restart_offset_only_and_matches_the_schema() -> None:
    schema = msgs.load_schema("events")
    restart = msgs.event_payload("hq", ONSET.interrupted(1012.0))
    assert restart["reason"] == "restart" and restart["duration_s"] == 12.0
    ended = msgs.event_payload("hq", Event("offset", "ev-1", "hall", "tiny", "tone_440", 1000.0, 1005.0, 0.9, 0.8, 9))
    assert "reason" not in ended and "reason" not in msgs.event_payload("hq", ONSET)
    for payload in (restart, ended):
        jsonschema.validate(json.loads(msgs.stamp(msgs.encode(payload), 1012.5)), schema)
    with pytest.raises(jsonschema.ValidationError):  # an onset never has a reason
        jsonschema.validate({**msgs.event_payload("hq", ONSET), "reason": "restart", "published": restart["onset"]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**restart, "reason": "bored", "published": restart["onset"]}, schema)


def test_publisher_offers_restart_offsets_for_what_a_dead_run_left_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No broker needed: the publisher is never started, as in a run killed before it connected."""
    cfg = MqttConfig(broker="127.0.0.1", port=free_port(), outbox_dir=tmp_path)
    first = MqttPublisher(cfg, "hq")
    first.event(ONSET)
    first.event(ONSET_Q)
    first.stream_time("hall", 1009.0)
    first.event(Event("offset", "ev-2", "hall", "tiny", "hum", 1001.0, 1004.0, 0.4, 0.35, 6, query="a low hum"))
    assert isinstance(first._outbox, SqliteOutbox)
    first._outbox.flush(force=True)
    first._outbox._db.close()  # die without the publisher's close: ev-1 stays open
    with sqlite3.connect(tmp_path / DB) as db:
        db.execute("INSERT INTO open_events VALUES ('ev-9', 'hall', 'garbage', 1.0)")
    db.close()

    second = MqttPublisher(cfg, "hq")
    with caplog.at_level(logging.WARNING):
        [event] = second.interrupted_events()
    assert (event.event_id, event.kind, event.reason, event.offset_time, event.label) == ("ev-1", "offset", "restart", 1009.0, "tone_440")
    assert any("unreadable" in r.getMessage() and "hall" in r.getMessage() for r in caplog.records)
    second.event(event)  # published like any offset: that forgets the record
    second.close(0.1)
    third = MqttPublisher(cfg, "hq")
    assert third.interrupted_events() == []
    third.close(0.1)
