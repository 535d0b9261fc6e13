"""Remote control: command validation and rule updates (pure), applied through the pipeline, and the whole
daemon answering every command over a real mosquitto."""

from __future__ import annotations

import datetime
import json
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml

from rtaudio.config.site import SiteConfig, validate_site
from rtaudio.contract import ModelInfo
from rtaudio.runtime.buffer import RingBuffer, Window
from rtaudio.runtime.control import Command, CommandError, Controller, ack_payload, apply_command, parse_command
from rtaudio.runtime.events import EventTracker
from rtaudio.runtime.health import Health
from rtaudio.runtime.offline import Collector
from rtaudio.runtime.pipeline import Pipeline, Stream
from rtaudio.runtime.rules import PrivacyGate, build_rules
from tests.helpers import REPO, Broker, Subscriber, demo_site

LABELS = ["speech", "dog", "glass_break", "music"]
INFO = ModelInfo(model_id="fake", version="1", labels=LABELS, sample_rate=8000, window_s=0.1, hop_s=0.1, thresholds=[0.5, 0.5, 0.5, 0.5], onnx_sha256="0" * 64)
NOON = datetime.datetime(2024, 1, 15, 12, tzinfo=datetime.timezone.utc)


def site(**over: Any) -> SiteConfig:
    data: dict[str, Any] = {"site": "lab", "model": "m", "mqtt": None, "sources": [{"id": "a", "type": "file", "path": "x.wav"}]}
    data.update(over)
    return validate_site(data)


class ScriptedEngine:
    """Scores set by the test: every window of a batch gets ``self.scores``."""

    description = "scripted"

    def __init__(self) -> None:
        self.scores = np.zeros(len(LABELS), dtype=np.float32)
        self.last_ms = 0.1

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {"scores": np.tile(self.scores, (len(batch), 1))}


def rig(config: SiteConfig) -> tuple[Pipeline, Stream, ScriptedEngine, Collector]:
    """A pipeline of one source ``a`` over the scripted engine, its schedules read at NOON."""
    rules = build_rules(config, INFO)["a"]
    health, collector, engine = Health(), Collector(), ScriptedEngine()
    tracker = EventTracker("a", INFO.model_id, LABELS, rules.thresholds(), median_windows=1)
    stream = Stream("a", RingBuffer(8000, 800, 800, 8), tracker, health.source("a"), rules=rules)
    gate = PrivacyGate(config.privacy.private_labels, wait_s=0.0)
    pipeline = Pipeline(engine, INFO, [stream], [collector], health, config.tags, health_interval_s=3600, privacy=gate, now=lambda: NOON)  # type: ignore[arg-type]
    return pipeline, stream, engine, collector


def feed(pipeline: Pipeline, stream: Stream, t: float) -> None:
    """One window ending at stream time ``t``, then a tick (rules read, the window judged)."""
    pipeline.apply_rules()
    pipeline.step([(stream, Window(np.zeros(800, np.float32), 0, t - 0.1, t))])


def schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("rtaudio.runtime.publish").joinpath("schema", name).read_text())


ACK, COMMAND = schema("control_ack.json"), schema("control_command.json")


def two_sources(**over: Any) -> Any:
    sources = [{"id": "a", "type": "file", "path": "x.wav"}, {"id": "b", "type": "file", "path": "x.wav", "labels": {"exclude": ["music"]}}]
    return build_rules(site(sources=sources, **over), INFO)


# ---------------------------------------------------------------- parsing (shape and types)

GOOD = [
    {"id": "1", "command": "disable", "source": "a", "label": "dog"},
    {"command": "enable", "label": "dog"},
    {"id": 7, "command": "disable", "source": "b"},
    {"command": "threshold", "label": "dog", "threshold": 0.75},
    {"command": "threshold", "source": "a", "label": "dog", "threshold": 1},
]

BAD = [
    (b"not json", "not JSON"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'{"command": "mute", "label": "dog"}', "command 'mute' unknown; expected one of enable, disable, threshold"),
    (b'{"label": "dog"}', "command None unknown"),
    (b'{"command": "disable"}', "disable needs a source, a label or both"),
    (b'{"command": "disable", "label": 3}', "label must be a non-empty string"),
    (b'{"command": "disable", "label": "dog", "colour": "red"}', "unknown field(s) colour; allowed: id, command, source, label, threshold"),
    (b'{"command": "threshold", "label": "dog", "threshold": 1.5}', "threshold must be a number in [0, 1], got 1.5"),
    (b'{"command": "threshold", "label": "dog", "threshold": "0.5"}', 'threshold must be a number in [0, 1], got "0.5"'),
    (b'{"command": "threshold", "label": "dog", "threshold": true}', "threshold must be a number in [0, 1], got true"),
    (b'{"command": "threshold", "threshold": 0.5}', "threshold needs a label"),
    (b'{"command": "disable", "label": "dog", "threshold": 0.5}', "disable takes no threshold"),
    (b'{"command": "disable", "label": "dog", "id": [1]}', "id must be a string or integer"),
    (b"\xff\xfe", "not JSON"),
    (b'{"command": "disable", "label": "' + b"x" * 5000 + b'"}', "at most 4096 allowed"),
]


@pytest.mark.parametrize("data", GOOD)
def test_good_commands_parse_and_match_the_schema(data: dict[str, Any]) -> None:
    jsonschema.validate(data, COMMAND)
    command = parse_command(json.dumps(data).encode())
    assert (command.command, command.id, command.source, command.label) == (data["command"], data.get("id"), data.get("source"), data.get("label"))
    if "threshold" in data:
        assert command.threshold == float(data["threshold"])


@pytest.mark.parametrize(("payload", "message"), BAD)
def test_bad_commands_are_refused_naming_what_is_wrong_and_the_schema_agrees(payload: bytes, message: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(payload)
    assert message in str(caught.value)
    try:
        data = json.loads(payload)
    except ValueError:
        return
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, COMMAND)


# ---------------------------------------------------------------- rule updates (pure)


def test_a_label_disabled_on_one_source_then_everywhere_then_enabled() -> None:
    rules = two_sources()
    changed = apply_command(rules, Command("disable", source="a", label="dog"))
    assert set(changed) == {"a"} and "dog" not in changed["a"].active_labels(NOON)
    assert changed["a"].reported_labels() == rules["a"].reported_labels()  # the entity stays (reads OFF), as with a schedule
    assert rules["a"].active_labels(NOON) == set(INFO.labels)  # the old snapshot is untouched
    everywhere = apply_command({**rules, **changed}, Command("disable", label="music"))
    assert set(everywhere) == {"a"}  # b does not report music: unchanged
    again = apply_command({**rules, **changed}, Command("enable", source="a", label="dog"))
    assert again["a"].active_labels(NOON) == set(INFO.labels)


def test_a_source_paused_by_command_publishes_nothing_until_enabled() -> None:
    rules = two_sources()
    paused = apply_command(rules, Command("disable", source="b"))["b"]
    assert not paused.source_active(NOON) and paused.active_labels(NOON) == set()
    assert apply_command({"b": paused}, Command("enable", source="b"))["b"].source_active(NOON)


def test_a_threshold_changes_on_and_keeps_the_off_ratio() -> None:
    rules = two_sources(events={"off_ratio": 0.5})
    old = rules["a"].thresholds()[INFO.labels.index("dog")]
    assert old is not None and (old.on, old.off) == (0.5, 0.25)
    changed = apply_command(rules, Command("threshold", label="dog", threshold=0.8))
    for sid in ("a", "b"):
        new = changed[sid].thresholds()[INFO.labels.index("dog")]
        assert new is not None and (new.on, round(new.off, 6), new.min_duration_s) == (0.8, 0.4, old.min_duration_s)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (Command("disable", source="hall"), "unknown source 'hall'; expected one of a, b"),
        (Command("disable", label="cat"), "unknown label 'cat'; expected one of speech, dog, glass_break, music"),
        (Command("enable", source="b", label="music"), "label music is not reported by source b in site.yaml"),
        (Command("enable", label="speech"), "label speech is private (privacy.private_labels); it cannot be changed remotely"),
        (Command("disable", source="a", label="speech"), "label speech is private"),
        (Command("threshold", label="speech", threshold=0.9), "label speech is private"),
    ],
)
def test_commands_that_cannot_apply_are_refused_and_privacy_is_not_undone(command: Command, message: str) -> None:
    rules = two_sources(privacy={"private_labels": ["speech"]})
    with pytest.raises(CommandError) as caught:
        apply_command(rules, command)
    assert message in str(caught.value)


# ---------------------------------------------------------------- through the pipeline


def test_a_label_disabled_by_command_closes_its_event_and_a_threshold_reaches_the_tracker() -> None:
    config = site()
    pipeline, stream, engine, collector = rig(config)
    acks: list[dict[str, Any]] = []
    controller = Controller("lab", pipeline.rules, pipeline.swap_rules, acks.append, max_pending=2)
    pipeline.hooks.append(controller.drain)
    engine.scores[:] = [0.0, 0.9, 0.0, 0.0]
    feed(pipeline, stream, 1.0)
    assert [(e.kind, e.label) for e in collector.events] == [("onset", "dog")]
    controller.submit(b'{"id": "x", "command": "disable", "source": "a", "label": "dog"}')
    assert len(collector.events) == 1  # nothing happens on the network thread
    pipeline.tick()
    onset, offset = collector.events
    assert (offset.kind, offset.event_id, offset.reason, offset.offset_time) == ("offset", onset.event_id, "control", 1.0)
    assert acks[-1]["ok"] and acks[-1]["id"] == "x"
    feed(pipeline, stream, 2.0)
    assert len(collector.events) == 2 and all("dog" not in dict(r.labels) for r in collector.results if r.end_time >= 2.0)
    controller.submit(b'{"command": "enable", "label": "dog"}')
    controller.submit(b'{"command": "threshold", "source": "a", "label": "dog", "threshold": 0.95}')
    pipeline.tick()
    assert [a["ok"] for a in acks] == [True, True, True]
    assert stream.tracker.rules[INFO.labels.index("dog")].on == 0.95  # type: ignore[union-attr]
    feed(pipeline, stream, 3.0)
    assert len(collector.events) == 2  # 0.9 is below the new threshold: no new event
    for ack in acks:
        jsonschema.validate(ack, ACK)


def test_the_command_queue_is_bounded_and_every_command_is_answered() -> None:
    pipeline, _, _, _ = rig(site())
    acks: list[dict[str, Any]] = []
    controller = Controller("lab", pipeline.rules, pipeline.swap_rules, acks.append, max_pending=2)
    for k in range(4):
        controller.submit(json.dumps({"id": k, "command": "disable", "label": "dog"}).encode())
    assert [(a["id"], a["ok"]) for a in acks] == [(2, False), (3, False)] and "busy" in acks[0]["error"]
    controller.drain()
    assert [(a["id"], a["ok"]) for a in acks[2:]] == [(0, True), (1, True)]
    for ack in acks:
        jsonschema.validate(ack, ACK)
    jsonschema.validate(ack_payload("lab", None, False, "not JSON"), ACK)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**ack_payload("lab", None, True), "error": "x"}, ACK)


# ---------------------------------------------------------------- the daemon over a real mosquitto


def _control_site(tmp_path: Path, broker: Broker, **over: Any) -> Path:
    return demo_site(tmp_path / "site.yaml", broker, source={"loop": True}, **{"control": {"enabled": True}, "privacy": {"private_labels": ["speech"]}, **over})


@pytest.mark.integration
def test_every_command_and_every_bad_command_is_answered_and_a_disabled_label_goes_off(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "mosquitto").start()
    sub = Subscriber(broker, "#")
    log_path = tmp_path / "rtaudio.log"
    proc = start_rtaudio(log_path, "run", "--config", str(_control_site(tmp_path, broker)))
    try:
        assert sub.wait_for(lambda: sub.on("rtaudio/demo/demo/events"), timeout=90), log_path.read_text()[-3000:]
        onset = json.loads(sub.on("rtaudio/demo/demo/events")[0].payload)
        label = onset["label"]
        assert sub.wait_for(lambda: [m.payload for m in sub.on(f"rtaudio/demo/demo/state/{label}")][-1:] == [b"ON"])
        commands: list[bytes] = [json.dumps({"id": "off", "command": "disable", "source": "demo", "label": label}).encode()]
        commands += [payload for payload, _ in BAD]
        commands += [
            json.dumps({"id": "private", "command": "enable", "label": "speech"}).encode(),
            json.dumps({"id": "nosuch", "command": "disable", "source": "hall"}).encode(),
            json.dumps({"id": "thr", "command": "threshold", "label": "dog", "threshold": 0.9}).encode(),
        ]
        for payload in commands:
            sub.client.publish("rtaudio/demo/set", payload, 1)
        assert sub.wait_for(lambda: len(sub.on("rtaudio/demo/control/ack")) >= len(commands), timeout=30), len(sub.on("rtaudio/demo/control/ack"))
        acks = [json.loads(m.payload) for m in sub.on("rtaudio/demo/control/ack")]
        for ack in acks:
            jsonschema.validate(ack, ACK)
        assert all(m.qos == 1 and not m.retain for m in sub.on("rtaudio/demo/control/ack"))
        by_id = {a["id"]: a for a in acks if a["id"] is not None}
        assert by_id["off"]["ok"] and by_id["thr"]["ok"]
        assert not by_id["private"]["ok"] and "private" in by_id["private"]["error"]
        assert not by_id["nosuch"]["ok"] and "unknown source" in by_id["nosuch"]["error"]
        assert sum(not a["ok"] for a in acks) == len(commands) - 2
        # the disabled label (the demo's first, a steady hum, still open): its event closed by the command, its state OFF
        assert sub.wait_for(lambda: onset["event_id"] not in _open(sub)), (
            [(e["kind"], e["label"], e["event_id"][:8], e.get("reason")) for e in map(json.loads, (m.payload for m in sub.on("rtaudio/demo/demo/events")))],
            [line for line in log_path.read_text().splitlines() if "ERROR" in line or "WARNING" in line],
        )
        offset = next(
            e for e in map(json.loads, (m.payload for m in sub.on("rtaudio/demo/demo/events"))) if e["kind"] == "offset" and e["event_id"] == onset["event_id"]
        )
        assert (offset["event_id"], offset["reason"]) == (onset["event_id"], "control")
        assert sub.wait_for(lambda: [m.payload for m in sub.on(f"rtaudio/demo/demo/state/{label}")][-1:] == [b"OFF"])
        assert proc.poll() is None, "the daemon must keep running"
        mark = len(sub.on("rtaudio/demo/demo/events"))
        assert sub.wait_for(lambda: len(sub.on("rtaudio/demo/health")) >= 2)
        later = [json.loads(m.payload) for m in sub.on("rtaudio/demo/demo/events")[mark:]]
        assert not [e for e in later if e["label"] == label and e["kind"] == "onset"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        sub.close()
        broker.stop()
    err = log_path.read_text()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err


def start_rtaudio(log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """``python -m rtaudio ARGS`` started with its output in ``log_path`` (a pipe nobody reads could fill and stall it)."""
    with log_path.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "rtaudio", *args], stdout=out, stderr=subprocess.STDOUT)


def _open(sub: Subscriber) -> set[str]:
    """Event ids with an onset and no offset so far."""
    events = [json.loads(m.payload) for m in sub.on("rtaudio/demo/demo/events")]
    return {e["event_id"] for e in events if e["kind"] == "onset"} - {e["event_id"] for e in events if e["kind"] == "offset"}


def _documented_acl() -> str:
    """The ACL file shown in docs/mqtt.md (the block that starts with ``# /etc/mosquitto/acl``)."""
    text = (REPO / "docs" / "mqtt.md").read_text()
    block = text[text.index("# /etc/mosquitto/acl") :]
    return block[: block.index("```")]


@pytest.mark.integration
def test_the_documented_acl_lets_only_the_control_user_command(tmp_path: Path) -> None:
    users = {"rtaudio": "r-secret", "control": "c-secret", "intruder": "i-secret"}
    acl = tmp_path / "acl"
    acl.write_text(_documented_acl() + "\nuser intruder\ntopic read rtaudio/#\n")
    broker = Broker(tmp_path / "mosquitto", users=users, settings=[f"acl_file {acl}"]).start()
    secret = tmp_path / "password"
    secret.write_text("r-secret\n")
    secret.chmod(0o600)
    site_file = _control_site(tmp_path, broker)
    data = yaml.safe_load(site_file.read_text())
    data["mqtt"].update({"username": "rtaudio", "password_file": str(secret)})
    site_file.write_text(yaml.safe_dump(data))
    control = Subscriber(broker, "rtaudio/demo/control/ack", username="control", password="c-secret")
    intruder = Subscriber(broker, "rtaudio/#", username="intruder", password="i-secret")
    log_path = tmp_path / "rtaudio.log"
    proc = start_rtaudio(log_path, "run", "--config", str(site_file))
    try:
        assert intruder.wait_for(lambda: intruder.on("rtaudio/demo/demo/events"), timeout=90), log_path.read_text()[-3000:]
        intruder.client.publish("rtaudio/demo/set", json.dumps({"id": "evil", "command": "disable", "source": "demo"}), 1)
        control.client.publish("rtaudio/demo/set", json.dumps({"id": "ok", "command": "disable", "label": "dog"}), 1)
        assert control.wait_for(lambda: [json.loads(m.payload)["id"] for m in control.on("rtaudio/demo/control/ack")] == ["ok"])
        assert intruder.wait_for(lambda: len(intruder.on("rtaudio/demo/health")) >= 2)  # time for the intruder's command to have arrived
        assert [json.loads(m.payload)["id"] for m in intruder.on("rtaudio/demo/control/ack")] == ["ok"]  # the intruder's got no answer
        assert [json.loads(m.payload)["id"] for m in intruder.on("rtaudio/demo/set")] == ["ok"]  # the broker dropped the intruder's command
        tags = len(intruder.on("rtaudio/demo/demo/tags"))
        assert intruder.wait_for(lambda: len(intruder.on("rtaudio/demo/demo/tags")) > tags + 3)  # the source was not paused
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        control.close()
        intruder.close()
        broker.stop()
    assert proc.returncode == 0, log_path.read_text()[-3000:]
