"""systemd notification (``sd_notify``) without libsystemd: READY, STATUS, STOPPING and the watchdog.

Under ``Type=notify`` with ``WatchdogSec=``, systemd sets ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``.
``Watchdog`` sends ``WATCHDOG=1`` every half period only while every health check passes
(``runtime.checks``, the same judgement as ``/healthz``), so a site that stays unhealthy for
``WatchdogSec`` is restarted by systemd; ``STATUS=`` always says what fails.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Notifier:
    """Datagrams to systemd's notification socket (a path, or ``@name`` in the abstract namespace)."""

    def __init__(self, address: str):
        self.address = "\0" + address[1:] if address.startswith("@") else address

    @staticmethod
    def from_env() -> Notifier | None:
        """The notifier of this service, or None when not started by systemd with ``Type=notify``."""
        address = os.environ.get("NOTIFY_SOCKET")
        return Notifier(address) if address else None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False (logged at debug) when the socket refuses it."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode())
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True


def watchdog_period_s() -> float | None:
    """``WATCHDOG_USEC`` in seconds, when it is meant for this process (``WATCHDOG_PID`` unset or ours)."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) <= 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6


class Watchdog:
    """Feeds systemd's watchdog from ``failing()`` (a list of failing checks) on its own thread."""

    def __init__(self, notifier: Notifier, period_s: float | None, failing: Callable[[], list[dict[str, Any]]], feed: bool = True):
        self.notifier, self.period_s, self.failing, self.feed = notifier, period_s, failing, feed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fed = 0  # WATCHDOG=1 sent
        self.withheld = 0  # periods a failing check kept it back

    def ready(self) -> None:
        """Tell systemd the site runs (sources started) and start feeding the watchdog."""
        self.notifier.notify("READY=1", f"STATUS={self._status()}", f"MAINPID={os.getpid()}")
        if self.period_s is not None and self.feed:
            self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
            self._thread.start()

    def stopping(self) -> None:
        """Tell systemd the site is stopping (the watchdog stops being fed)."""
        self._stop.set()
        self.notifier.notify("STOPPING=1", "STATUS=stopping")
        if self._thread is not None:
            self._thread.join(2)

    def beat(self) -> bool:
        """One period's work: WATCHDOG=1 when every check passes; STATUS= either way. True when fed."""
        failing = self.failing()
        status = self._status(failing)
        if failing:
            self.withheld += 1
            self.notifier.notify(f"STATUS={status}")
            return False
        self.fed += 1
        self.notifier.notify("WATCHDOG=1", f"STATUS={status}")
        return True

    def _status(self, failing: list[dict[str, Any]] | None = None) -> str:
        failing = self.failing() if failing is None else failing
        if not failing:
            return "healthy"
        return "failing: " + "; ".join(f"{f['check']}{' ' + f['source'] if 'source' in f else ''}: {f['detail']}" for f in failing)[:400]

    def _run(self) -> None:
        assert self.period_s is not None
        interval = max(0.5, self.period_s / 2)
        while not self._stop.wait(interval):
            try:
                self.beat()
            except Exception:  # never let a faulty check kill the thread: systemd would restart a healthy site
                log.exception("watchdog: a health check failed to run")


def build_watchdog(failing: Callable[[], list[dict[str, Any]]], feed: bool = True) -> Watchdog | None:
    """The watchdog when run by systemd with ``Type=notify`` (None otherwise); ``feed=False`` only notifies."""
    notifier = Notifier.from_env()
    if notifier is None:
        return None
    period = watchdog_period_s()
    if period is not None and feed:
        log.info("systemd watchdog: fed every %.1f s while every health check passes", max(0.5, period / 2))
    return Watchdog(notifier, period, failing, feed)
