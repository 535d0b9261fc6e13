"""Health checks: the one judgement that ``/healthz``, the systemd watchdog and the MQTT health message share.

Each check reads the ``Health`` record (the same counters ``/metrics`` exports) against the site's
``health:`` limits and names what fails: a source silent past its limit, the engine failing, MQTT
disconnected past its limit, the outbox deeper than its limit. Readiness (``/readyz``) is separate:
the engine is open and every source has delivered audio once, and the site is not stopping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rtaudio.config.site import HealthConfig
from rtaudio.runtime.health import Health, SourceHealth


class HealthChecks:
    """Judges ``health`` against ``config``; ``failing()`` and ``unready()`` return the reasons, empty when fine."""

    def __init__(self, config: HealthConfig, health: Health, mqtt: bool, clock: Callable[[], float] = time.time):
        self.config, self.health, self.mqtt, self._clock = config, health, mqtt, clock
        self.started = False  # set once the engine is open and the pipeline runs
        self.stopping = False  # set when the site begins to stop

    def failing(self) -> list[dict[str, Any]]:
        """Every failing check: ``{"check", "detail"}`` plus ``"source"`` for a source's."""
        now, health, config = self._clock(), self.health, self.config
        failures: list[dict[str, Any]] = []
        for source_id, source in list(health.sources.items()):
            limit, silent = self.silence_limit(source), source.silent_s(now, health.started)
            if silent > limit:
                what = "no audio" if source.last_data else "no audio yet"
                failures.append({"check": "source_silent", "source": source_id, "detail": f"{what} for {silent:.1f} s (limit {limit:g} s)"})
        if health.last_batch_error > health.last_batch_ok:
            since = health.last_batch_ok or health.started
            if now - since > config.engine_failing_s:
                detail = f"every batch failed for {now - since:.1f} s (limit {config.engine_failing_s:g} s; {health.errors} failed in all)"
                failures.append({"check": "engine_failing", "detail": detail})
        if self.mqtt:
            down = health.broker_down_since
            if not health.broker_connected and down is not None and now - down > config.mqtt_down_s:
                failures.append({"check": "mqtt_disconnected", "detail": f"no broker connection for {now - down:.1f} s (limit {config.mqtt_down_s:g} s)"})
            if health.outbox_depth > config.outbox_max:
                failures.append({"check": "outbox_full", "detail": f"{health.outbox_depth} messages waiting (limit {config.outbox_max})"})
        return failures

    def silence_limit(self, source: SourceHealth) -> float:
        """Seconds without audio after which ``source`` fails: its own ``silent_after_s``, else the site's."""
        return source.silent_after_s if source.silent_after_s is not None else self.config.source_silent_s

    def unready(self) -> list[dict[str, Any]]:
        """Why the site is not ready to serve (empty when it is): starting, a source without audio yet, stopping."""
        if self.stopping:
            return [{"check": "stopping", "detail": "the site is shutting down"}]
        if not self.started:
            return [{"check": "starting", "detail": "the engine and pipeline are not running yet"}]
        return [
            {"check": "source_waiting", "source": source_id, "detail": "no audio delivered yet"}
            for source_id, source in list(self.health.sources.items())
            if not source.last_data
        ]
