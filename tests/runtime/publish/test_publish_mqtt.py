"""MqttPublisher against a real mosquitto and a real paho subscriber; payloads checked by schema."""

from __future__ import annotations

import dataclasses
import json
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest

from rtaudio.config.site import MqttConfig, TlsConfig
from rtaudio.runtime.events import Event, TagResult
from rtaudio.runtime.health import Health
from rtaudio.runtime.publish import messages as msgs
from rtaudio.runtime.publish.mqtt import MqttPublisher
from tests.helpers import free_port, iso_seconds, wait_until

SITE, MODEL = "hq", "tiny-1"
STATUS = f"rtaudio/{SITE}/status"
EVENTS = f"rtaudio/{SITE}/lobby/events"
TAGS = f"rtaudio/{SITE}/lobby/tags"


def config(broker: Any, **overrides: Any) -> MqttConfig:
    values: dict[str, Any] = {"broker": broker.host, "port": broker.port, "reconnect_max_s": 1.0, **overrides}
    return MqttConfig(**values)


def tag(t: float, labels: list[tuple[str, float]] | None = None) -> TagResult:
    return TagResult("lobby", MODEL, t - 1.0, t, labels if labels is not None else [("speech", 0.91234), ("music", 0.4)])


def onset(i: int, t: float) -> Event:
    return Event("onset", f"ev-{i:03d}", "lobby", MODEL, "smoke_alarm", t, None, 0.9, 0.8, 3)


def offset(i: int, t0: float, t1: float) -> Event:
    return Event("offset", f"ev-{i:03d}", "lobby", MODEL, "smoke_alarm", t0, t1, 0.95, 0.85, 12)


def parse(message: mqtt.MQTTMessage) -> dict[str, Any]:
    return json.loads(message.payload)


@pytest.fixture
def publishers():
    """Publishers made by a test; closed at teardown so no thread outlives it."""
    made: list[MqttPublisher] = []

    def make(cfg: MqttConfig, site: str = SITE, health: Health | None = None, start: bool = True) -> MqttPublisher:
        publisher = MqttPublisher(cfg, site, health, MODEL)
        made.append(publisher)
        if start:
            publisher.start()
        return publisher

    yield make
    for publisher in made:
        publisher.close(0)


# ------------------------------------------------------------ payloads without a broker


def test_iso_times_are_utc_milliseconds() -> None:
    assert msgs.iso(1795341600.1239) == "2026-11-22T10:00:00.123Z"
    assert msgs.iso(0) == "1970-01-01T00:00:00.000Z"


def test_stamp_appends_published_to_the_json_object() -> None:
    stamped = msgs.stamp(msgs.encode({"a": 1}), 1795341600.5)
    assert json.loads(stamped) == {"a": 1, "published": "2026-11-22T10:00:00.500Z"}
    with pytest.raises(ValueError):
        msgs.stamp(b"[]", 0)


def test_payloads_match_their_schemas() -> None:
    now = time.time()
    cases = [
        ("tags", msgs.tags_payload(SITE, tag(now))),
        ("events", msgs.event_payload(SITE, onset(1, now))),
        ("events", msgs.event_payload(SITE, offset(1, now, now + 2.5))),
        ("health", msgs.health_payload(SITE, MODEL, Health().snapshot())),
        ("health", msgs.health_payload(SITE, MODEL, failing_health().snapshot())),
    ]
    clip = {"file": "hall_glass_break_20261122T100000.000_1a2b3c4d.flac", "start": msgs.iso(now - 2), "duration_s": 7.5, "pre_s": 2.0, "post_s": 3.0}
    cases.append(("events", msgs.event_payload(SITE, dataclasses.replace(offset(1, now, now + 2.5), clip=clip))))
    for kind, payload in cases:
        jsonschema.validate(json.loads(msgs.stamp(msgs.encode(payload), now)), msgs.load_schema(kind))
    broken = msgs.event_payload(SITE, onset(1, now)) | {"duration_s": 1.0, "published": msgs.iso(now)}
    with pytest.raises(jsonschema.ValidationError):  # an onset has no duration yet
        jsonschema.validate(broken, msgs.load_schema("events"))
    with pytest.raises(jsonschema.ValidationError):  # only an offset names a clip
        jsonschema.validate(msgs.event_payload(SITE, dataclasses.replace(onset(1, now), clip=clip)) | {"published": msgs.iso(now)}, msgs.load_schema("events"))
    with pytest.raises(jsonschema.ValidationError):  # a clip name is a plain file name
        bad = dataclasses.replace(offset(1, now, now + 2.5), clip=clip | {"file": "../etc/passwd"})
        jsonschema.validate(msgs.event_payload(SITE, bad) | {"published": msgs.iso(now)}, msgs.load_schema("events"))


def failing_health() -> Health:
    """Health with every new field set: failing checks, events by label, clips, reconnects."""
    health = Health()
    source = health.source("hall")
    source.events_opened["glass_break"] = 2
    source.clips_saved, source.clips_dropped = 1, 1
    health.broker_reconnects = 3
    health.checks = [{"check": "source_silent", "source": "hall", "detail": "no audio for 31.0 s (limit 30 s)"}]
    return health


def test_non_finite_score_is_refused_and_counted() -> None:
    health = Health()
    publisher = MqttPublisher(MqttConfig(broker="127.0.0.1", port=1), SITE, health, MODEL)
    publisher.tags(tag(time.time(), [("speech", float("nan"))]))
    assert publisher.outbox_depth == 0
    assert health.messages_dropped == {"tags": 1}
    publisher.close(0)


def test_events_paho_cannot_queue_yet_are_held_in_order_not_dropped() -> None:
    """paho's queue also carries what goes outside the send window (control acks, health): when it is
    full, the events taken from the outbox wait for the next round, in order; nothing is dropped."""
    health = Health()
    publisher = MqttPublisher(MqttConfig(broker="127.0.0.1", port=1), SITE, health, MODEL)
    full = [True, True]  # paho refuses the first two hand-overs

    class Client:
        def __init__(self) -> None:
            self.sent: list[str] = []

        def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Any:
            info = mqtt.MQTTMessageInfo(len(self.sent))
            info.rc = mqtt.MQTTErrorCode.MQTT_ERR_QUEUE_SIZE if full and full.pop() else mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            if info.rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.sent.append(json.loads(payload)["event_id"])
            return info

    client, real = Client(), publisher._client
    publisher._client = client
    try:
        for i in range(3):
            publisher.event(onset(i, time.time()))
        publisher._send(publisher._outbox.take(10))  # refused at once: all three held
        assert client.sent == [] and len(publisher._held) == 3
        held, publisher._held = publisher._held, []
        publisher._send(held)  # refused again, then room
        assert client.sent == [] and len(publisher._held) == 3
        held, publisher._held = publisher._held, []
        publisher._send(held)
        assert client.sent == [f"ev-{i:03d}" for i in range(3)] and publisher._held == []
        assert health.messages_dropped == {}
    finally:
        publisher._client = real
        publisher.close(0)


def test_unreadable_password_file_is_a_clear_error(tmp_path: Path) -> None:
    cfg = MqttConfig(broker="127.0.0.1", username="u", password_file=tmp_path / "missing")
    with pytest.raises(ValueError, match="mqtt.password_file"):
        MqttPublisher(cfg, SITE)


# ------------------------------------------------------------ against mosquitto


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_topics_qos_retain_and_payloads(mosquitto, make_subscriber, publishers, protocol: str) -> None:
    sub = make_subscriber(mosquitto, "rtaudio/#")
    health = Health()
    publisher = publishers(config(mosquitto, protocol=protocol), health=health)
    assert sub.wait_for(lambda: [m.payload for m in sub.on(STATUS)] == [b"online"])
    now = time.time()
    publisher.tags(tag(now))
    publisher.event(onset(1, now - 0.5))
    publisher.event(offset(1, now - 0.5, now))
    publisher.health(health.snapshot())
    assert sub.wait_for(lambda: len(sub.on(TAGS)) == 1 and len(sub.on(EVENTS)) == 2 and sub.on(f"rtaudio/{SITE}/health"))

    [tags_message] = sub.on(TAGS)
    tags_body = parse(tags_message)
    jsonschema.validate(tags_body, msgs.load_schema("tags"))
    assert tags_message.qos == 0 and not tags_message.retain
    assert tags_body["labels"] == [{"label": "speech", "score": 0.9123}, {"label": "music", "score": 0.4}]
    assert (tags_body["site"], tags_body["source"], tags_body["model"]) == (SITE, "lobby", MODEL)
    assert tags_body["end"] == msgs.iso(now) and tags_body["start"] == msgs.iso(now - 1.0)
    latency_ms = (iso_seconds(tags_body["published"]) - iso_seconds(tags_body["end"])) * 1000
    assert 0 <= latency_ms < 60_000
    assert health.sources["lobby"].latency_ms.summary()["n"] == 1

    first, second = (parse(m) for m in sub.on(EVENTS))
    assert all(m.qos == 1 for m in sub.on(EVENTS))
    for body in (first, second):
        jsonschema.validate(body, msgs.load_schema("events"))
    assert (first["kind"], first["event_id"], first["offset"], first["duration_s"]) == ("onset", "ev-001", None, None)
    assert (second["kind"], second["event_id"], second["duration_s"]) == ("offset", "ev-001", 0.5)
    assert second["onset"] == msgs.iso(now - 0.5) and second["offset"] == msgs.iso(now)

    [health_message] = sub.on(f"rtaudio/{SITE}/health")
    health_body = parse(health_message)
    jsonschema.validate(health_body, msgs.load_schema("health"))
    assert health_body["broker_connected"] is True and health_body["model"] == MODEL

    late = make_subscriber(mosquitto, STATUS)
    assert late.wait_for(lambda: late.messages)
    assert (late.messages[0].payload, late.messages[0].retain) == (b"online", True)

    publisher.close(5)
    assert sub.wait_for(lambda: [m.payload for m in sub.on(STATUS)] == [b"online", b"offline"])
    after = make_subscriber(mosquitto, STATUS)
    assert after.wait_for(lambda: after.messages)
    assert (after.messages[0].payload, after.messages[0].retain) == (b"offline", True)


PUBLISHER_PROCESS = textwrap.dedent("""
    import sys, time
    from rtaudio.config.site import MqttConfig
    from rtaudio.runtime.publish.mqtt import MqttPublisher
    publisher = MqttPublisher(MqttConfig(broker="127.0.0.1", port=int(sys.argv[1]), protocol=sys.argv[2]), "willsite")
    publisher.start()
    while not publisher.connected:
        time.sleep(0.02)
    print("connected", flush=True)
    time.sleep(120)
""")


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_last_will_offline_when_the_process_is_killed(mosquitto, make_subscriber, protocol: str) -> None:
    sub = make_subscriber(mosquitto, "rtaudio/willsite/status")
    process = subprocess.Popen([sys.executable, "-c", PUBLISHER_PROCESS, str(mosquitto.port), protocol], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "connected"
        assert sub.wait_for(lambda: [m.payload for m in sub.messages] == [b"online"])
        process.kill()  # SIGKILL: no DISCONNECT is sent, so the broker publishes the will
        process.wait(10)
        assert sub.wait_for(lambda: [m.payload for m in sub.messages] == [b"online", b"offline"])
    finally:
        process.kill()
        process.wait(10)
    late = make_subscriber(mosquitto, "rtaudio/willsite/status")
    assert late.wait_for(lambda: late.messages)
    assert (late.messages[0].payload, late.messages[0].retain) == (b"offline", True)


@pytest.mark.integration
def test_events_survive_a_broker_outage_in_order_with_original_times(make_mosquitto, make_subscriber, publishers) -> None:
    broker = make_mosquitto(persistence=True)  # keeps the subscriber's session across the restart
    sub = make_subscriber(broker, EVENTS, client_id="outage-sub", clean=False, qos=1)
    publisher = publishers(config(broker))
    assert wait_until(lambda: publisher.connected)
    sent: list[Event] = []
    stop_emitting = threading.Event()

    def emit() -> None:  # the pipeline: an event (and a tags window) every 10 ms, whatever the broker does
        while not stop_emitting.is_set():
            event = onset(len(sent), time.time())
            sent.append(event)
            publisher.event(event)
            publisher.tags(tag(event.onset_time))
            time.sleep(0.01)

    emitter = threading.Thread(target=emit)
    emitter.start()
    try:
        assert sub.wait_for(lambda: len(sub.messages) >= 20)
        broker.stop()  # some events are in flight right now
        assert wait_until(lambda: not publisher.connected)
        time.sleep(1.5)
        assert publisher.outbox_depth >= 20
        restarted = time.time()
        queued_before = len(sent)
        broker.start()
        time.sleep(0.5)
    finally:
        stop_emitting.set()
        emitter.join()

    def received_ids() -> list[str]:
        return list(dict.fromkeys(parse(m)["event_id"] for m in sub.messages))  # QoS 1 may duplicate

    assert sub.wait_for(lambda: len(received_ids()) == len(sent), timeout=30), (len(received_ids()), len(sent))
    assert received_ids() == [e.event_id for e in sent]
    bodies = {parse(m)["event_id"]: parse(m) for m in sub.messages}
    for event in sent:
        assert bodies[event.event_id]["onset"] == msgs.iso(event.onset_time)
    waited = [e for e in sent[:queued_before] if e.onset_time > restarted - 1.4]  # emitted while the broker was down
    assert len(waited) >= 20
    for event in waited:  # original times, published after the restart
        assert iso_seconds(bodies[event.event_id]["published"]) >= restarted - 0.001
    assert wait_until(lambda: publisher.outbox_depth == 0)


@pytest.mark.integration
def test_disk_outbox_survives_a_publisher_restart(make_mosquitto, make_subscriber, publishers, tmp_path: Path) -> None:
    broker = make_mosquitto(persistence=True)
    sub = make_subscriber(broker, f"rtaudio/{SITE}/lobby/#", client_id="disk-sub", clean=False)
    broker.stop()
    cfg = config(broker, outbox_dir=tmp_path / "outbox")
    first = publishers(cfg)
    t0 = time.time() - 60
    for i in range(5):
        first.event(onset(i, t0 + i))
        first.tags(tag(t0 + i))
    first.close(0.5)  # broker down: nothing delivered, all kept on disk
    rows = sqlite3.connect(tmp_path / "outbox" / "outbox.sqlite3").execute("SELECT kind FROM messages").fetchall()
    assert sorted(kind for (kind,) in rows) == ["events"] * 5 + ["tags"] * 5

    broker.start()
    second = publishers(cfg)
    assert sub.wait_for(lambda: len(sub.on(EVENTS)) >= 5)
    events = [parse(m) for m in sub.on(EVENTS)]
    assert [e["event_id"] for e in events] == [f"ev-{i:03d}" for i in range(5)]
    assert [e["onset"] for e in events] == [msgs.iso(t0 + i) for i in range(5)]
    assert wait_until(lambda: second.outbox_depth == 0)
    second.close(2)
    assert sqlite3.connect(tmp_path / "outbox" / "outbox.sqlite3").execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)


@pytest.mark.integration
def test_full_outbox_drops_tags_first_and_counts(make_mosquitto, make_subscriber, publishers) -> None:
    broker = make_mosquitto(persistence=True, settings=["queue_qos0_messages true"])
    sub = make_subscriber(broker, f"rtaudio/{SITE}/lobby/#", client_id="full-sub", clean=False)
    broker.stop()
    health = Health()
    publisher = publishers(config(broker, outbox_max_messages=10), health=health)
    t0 = time.time()
    for i in range(4):
        publisher.event(onset(i, t0 + i))
    for i in range(10):
        publisher.tags(tag(t0 + 10 + i))
    publisher.health(health.snapshot())  # offline: dropped, not queued
    assert health.messages_dropped == {"tags": 4, "health": 1}
    assert health.outbox_depth == 10

    broker.start()
    assert sub.wait_for(lambda: len(sub.on(EVENTS)) == 4 and len(sub.on(TAGS)) == 6)
    assert [parse(m)["event_id"] for m in sub.on(EVENTS)] == [f"ev-{i:03d}" for i in range(4)]
    assert [parse(m)["end"] for m in sub.on(TAGS)] == [msgs.iso(t0 + 10 + i) for i in range(4, 10)]  # oldest 4 dropped
    assert wait_until(lambda: health.outbox_depth == 0)
    assert health.messages_dropped == {"tags": 4, "health": 1}


@pytest.mark.integration
def test_username_and_password(make_mosquitto, make_subscriber, publishers, tmp_path: Path) -> None:
    broker = make_mosquitto(users={"rtaudio": "s3cret"})
    sub = make_subscriber(broker, STATUS, username="rtaudio", password="s3cret")
    secret_file = tmp_path / "mqtt-password"
    secret_file.write_text("s3cret\n")
    good = publishers(config(broker, username="rtaudio", password_file=secret_file))
    bad = publishers(config(broker, username="rtaudio", password="wrong", client_id="rtaudio-bad"), site="other")
    assert sub.wait_for(lambda: [m.payload for m in sub.messages] == [b"online"])
    assert good.connected
    time.sleep(1.5)  # the bad one has been refused (and keeps retrying with backoff)
    assert not bad.connected


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server cert for 127.0.0.1 and a client cert whose key has a passphrase."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    openssl(
        "req",
        "-x509",
        *ec,
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=rtaudio test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    openssl("req", *ec, "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    )
    (directory / "client.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")
    openssl("req", *ec, "-passout", "pass:keypass", "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=rtaudio")
    openssl(
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.crt",
        "-days",
        "2",
        "-extfile",
        "client.ext",
    )
    (directory / "keypass").write_text("keypass\n")
    return {name: directory / name for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key", "keypass")}


@pytest.mark.integration
def test_tls_ca_client_certificate_and_insecure(make_mosquitto, make_subscriber, publishers, tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    tls_port = free_port()
    broker = make_mosquitto(
        settings=[
            f"listener {tls_port} 127.0.0.1",
            f"cafile {certs['ca.crt']}",
            f"certfile {certs['server.crt']}",
            f"keyfile {certs['server.key']}",
            "require_certificate true",
        ]
    )
    sub = make_subscriber(broker, "rtaudio/+/status")  # on the plain listener
    client = {"cert": certs["client.crt"], "key": certs["client.key"], "key_password_file": certs["keypass"]}

    def tls(site: str, **tls_fields: Any) -> MqttPublisher:
        return publishers(MqttConfig(broker="127.0.0.1", port=tls_port, reconnect_max_s=1.0, tls=TlsConfig(**tls_fields)), site=site)

    verified = tls("verified", ca=certs["ca.crt"], **client)
    insecure = tls("insecure", insecure=True, **(client | {"key_password": "keypass", "key_password_file": None}))
    unknown_ca = tls("unknownca", **client)  # the system CAs do not know our CA
    no_client_cert = tls("nocert", ca=certs["ca.crt"])  # the broker requires one
    assert sub.wait_for(lambda: {m.topic for m in sub.messages} == {"rtaudio/verified/status", "rtaudio/insecure/status"})
    time.sleep(1.5)
    assert verified.connected and insecure.connected
    assert not unknown_ca.connected and not no_client_cert.connected
    assert {m.topic for m in sub.messages} == {"rtaudio/verified/status", "rtaudio/insecure/status"}


def test_wrong_key_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    cfg = MqttConfig(broker="127.0.0.1", tls=TlsConfig(cert=certs["client.crt"], key=certs["client.key"], key_password="nope"))
    with pytest.raises(ValueError, match="client.crt.*passphrase"):
        MqttPublisher(cfg, SITE)


# ------------------------------------------------------------ the embedded broker (amqtt)


def test_embedded_broker_without_amqtt_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from rtaudio.runtime.publish.embedded import start_embedded_broker

    monkeypatch.setitem(sys.modules, "amqtt", None)  # import amqtt raises ImportError, as where the extra is not installed
    with pytest.raises(RuntimeError, match=r"needs the amqtt package.*rtaudio\[demo\].*mqtt.broker"):
        start_embedded_broker(1)


@pytest.mark.integration
def test_embedded_broker_carries_publisher_messages_and_retained_status(make_subscriber, publishers) -> None:
    from rtaudio.runtime.publish.embedded import start_embedded_broker

    port = free_port()
    broker = start_embedded_broker(port)
    try:
        publisher = publishers(MqttConfig(broker="embedded", port=port))
        assert publisher.protocol == mqtt.MQTTv311  # amqtt speaks 3.1.1 only
        assert wait_until(lambda: publisher.connected)
        early = make_subscriber(broker, STATUS)  # "online" has reached the broker once this one has it
        assert early.wait_for(lambda: [m.payload for m in early.messages] == [b"online"])
        late = make_subscriber(broker, STATUS)  # joins after "online" was published: gets it retained
        assert late.wait_for(lambda: late.messages)
        assert (late.messages[0].payload, late.messages[0].retain) == (b"online", True)
        early.close()
        sub = make_subscriber(broker, "rtaudio/#")
        publisher.event(onset(1, time.time()))
        publisher.tags(tag(time.time()))
        assert sub.wait_for(lambda: sub.on(EVENTS) and sub.on(TAGS))
        jsonschema.validate(parse(sub.on(EVENTS)[0]), msgs.load_schema("events"))
        publisher.close(2)
        assert sub.wait_for(lambda: [m.payload for m in sub.on(STATUS)][-1:] == [b"offline"])
        sub.close()
        late.close()
    finally:
        broker.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.integration
def test_embedded_broker_refuses_a_busy_port(mosquitto) -> None:
    from rtaudio.runtime.publish.embedded import start_embedded_broker

    with pytest.raises(RuntimeError, match=f"127.0.0.1:{mosquitto.port} is in use.*mqtt.port"):
        start_embedded_broker(mosquitto.port)


def test_embedded_broker_that_fails_to_start_says_where_and_ends_its_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """amqtt failing inside the broker's own thread comes back as one error naming the address; the thread ends."""
    import amqtt.broker

    from rtaudio.runtime.publish.embedded import EmbeddedBroker

    async def refuse(self: Any) -> None:
        raise OSError("listener failed")

    monkeypatch.setattr(amqtt.broker.Broker, "start", refuse)
    port = free_port()
    broker = EmbeddedBroker(port)
    with pytest.raises(RuntimeError, match=f"cannot start the embedded MQTT broker on 127.0.0.1:{port}: listener failed"):
        broker.start()
    assert not broker._thread.is_alive()
    broker.stop()  # a no-op on a broker that never ran
