"""Health checks: what fails /healthz, the watchdog and the health message's failing list, judged on a fake clock."""

from __future__ import annotations

from rtaudio.config.site import HealthConfig
from rtaudio.runtime.checks import HealthChecks
from rtaudio.runtime.health import Health


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def checks_for(health: Health, clock: Clock, mqtt: bool = True, **limits: float) -> HealthChecks:
    return HealthChecks(HealthConfig(**limits), health, mqtt, clock=clock)


def names(failures: list[dict]) -> list[tuple[str, str | None]]:
    return [(f["check"], f.get("source")) for f in failures]


def test_a_source_fails_past_its_limit_and_recovers_with_audio() -> None:
    clock, health = Clock(), Health(started=1000.0)
    health.broker_connected = True
    mic, rtp = health.source("mic"), health.source("rtp")
    rtp.silent_after_s = 2.0  # its own limit wins over the site's
    checks = checks_for(health, clock, source_silent_s=10)
    mic.last_data = rtp.last_data = 1000.0
    clock.now = 1001.5
    assert checks.failing() == []
    clock.now = 1003.0
    failing = checks.failing()
    assert names(failing) == [("source_silent", "rtp")]
    assert "3.0 s (limit 2 s)" in failing[0]["detail"]
    rtp.last_data = 1002.9
    assert checks.failing() == []
    clock.now = 1011.0
    assert names(checks.failing()) == [("source_silent", "mic"), ("source_silent", "rtp")]


def test_a_source_that_never_delivered_counts_from_the_start() -> None:
    clock, health = Clock(), Health(started=1000.0)
    health.source("mic")
    checks = checks_for(health, clock, mqtt=False, source_silent_s=5)
    clock.now = 1004.0
    assert checks.failing() == []
    clock.now = 1006.0
    assert "no audio yet" in checks.failing()[0]["detail"]


def test_engine_failing_only_after_its_limit_without_a_good_batch() -> None:
    clock, health = Clock(), Health(started=1000.0)
    checks = checks_for(health, clock, mqtt=False, engine_failing_s=30)
    health.last_batch_ok, health.last_batch_error, health.errors = 1010.0, 1020.0, 3
    clock.now = 1039.0
    assert checks.failing() == []
    clock.now = 1041.0
    assert names(checks.failing()) == [("engine_failing", None)]
    health.last_batch_ok = 1041.0  # one good batch clears it
    assert checks.failing() == []


def test_mqtt_down_and_outbox_depth() -> None:
    clock, health = Clock(), Health(started=1000.0)
    checks = checks_for(health, clock, mqtt_down_s=60, outbox_max=100)
    health.broker_down_since = 1000.0
    clock.now = 1059.0
    assert checks.failing() == []
    clock.now = 1061.0
    assert names(checks.failing()) == [("mqtt_disconnected", None)]
    health.broker_connected, health.broker_down_since = True, None
    health.outbox_depth = 101
    assert names(checks.failing()) == [("outbox_full", None)]
    assert names(checks_for(health, clock, mqtt=False, outbox_max=100).failing()) == []  # no MQTT: nothing to judge


def test_readiness_follows_the_lifecycle() -> None:
    clock, health = Clock(), Health(started=1000.0)
    health.source("mic")
    checks = checks_for(health, clock)
    assert names(checks.unready()) == [("starting", None)]
    checks.started = True
    assert names(checks.unready()) == [("source_waiting", "mic")]
    health.source("mic").last_data = 1000.5
    assert checks.unready() == []
    checks.stopping = True
    assert names(checks.unready()) == [("stopping", None)]


def test_the_health_snapshot_carries_the_failing_checks() -> None:
    health = Health()
    assert health.snapshot()["healthy"] is True
    health.checks = [{"check": "outbox_full", "detail": "x"}]
    snapshot = health.snapshot()
    assert snapshot["healthy"] is False and snapshot["failing"] == health.checks
