"""sd_notify and the systemd watchdog, against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rtaudio.runtime.watchdog import Notifier, Watchdog, build_watchdog, watchdog_period_s


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A notification socket (what systemd listens on): its path and the bound socket."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_notify_reaches_a_path_socket_and_an_abstract_one(systemd: tuple[str, socket.socket]) -> None:
    path, sock = systemd
    assert Notifier(path).notify("READY=1", "STATUS=x")
    assert receive(sock) == ["READY=1", "STATUS=x"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract:
        name = f"rtaudio-test-{os.getpid()}"
        abstract.bind("\0" + name)
        abstract.settimeout(5)
        assert Notifier("@" + name).notify("WATCHDOG=1")
        assert receive(abstract) == ["WATCHDOG=1"]


def test_notify_to_nobody_is_reported_not_raised(tmp_path: Path) -> None:
    assert Notifier(str(tmp_path / "absent")).notify("READY=1") is False


def test_the_watchdog_is_fed_only_while_every_check_passes(systemd: tuple[str, socket.socket]) -> None:
    path, sock = systemd
    failing: list[dict[str, Any]] = []
    dog = Watchdog(Notifier(path), 10.0, lambda: list(failing))
    assert dog.beat() is True
    assert receive(sock) == ["WATCHDOG=1", "STATUS=healthy"]
    failing.append({"check": "source_silent", "source": "mic", "detail": "no audio for 31.0 s (limit 30 s)"})
    assert dog.beat() is False
    assert receive(sock) == ["STATUS=failing: source_silent mic: no audio for 31.0 s (limit 30 s)"]
    failing.clear()
    assert dog.beat() is True and dog.fed == 2 and dog.withheld == 1


def test_ready_starts_the_feeding_thread_and_stopping_ends_it(systemd: tuple[str, socket.socket]) -> None:
    path, sock = systemd
    dog = Watchdog(Notifier(path), 1.0, lambda: [])
    dog.ready()
    first = receive(sock)
    assert first[0] == "READY=1" and f"MAINPID={os.getpid()}" in first
    assert receive(sock)[0] == "WATCHDOG=1"  # within half the period
    dog.stopping()
    assert receive(sock) == ["STOPPING=1", "STATUS=stopping"]


def test_the_environment_decides(monkeypatch: pytest.MonkeyPatch, systemd: tuple[str, socket.socket]) -> None:
    path, _ = systemd
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert build_watchdog(lambda: []) is None  # not under systemd
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_period_s() == 4.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert watchdog_period_s() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    dog = build_watchdog(lambda: [])
    assert dog is not None and dog.period_s == 4.0
    monkeypatch.setenv("WATCHDOG_USEC", "garbage")
    assert watchdog_period_s() is None
