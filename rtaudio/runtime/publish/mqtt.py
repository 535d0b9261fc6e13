"""MQTT publisher (paho-mqtt 2.x): status, health, tags, events and caption topics; see docs/mqtt.md.

Threads: the pipeline thread only encodes a payload and queues it in the outbox. paho's
network thread (``loop_start``) owns the socket and reconnects with exponential backoff
(1 s doubling to ``reconnect_max_s``). One sender thread hands the oldest outbox messages
to paho, at most ``window`` unfinished at a time (so paho's own queue stays bounded), and
removes a message from the outbox only when paho reports it published: for QoS 1 events
that is the broker's PUBACK.

Ordering: messages are handed to paho in outbox order. paho keeps unacknowledged QoS 1
messages across a reconnect and resends them first; the sender sends nothing new after a
reconnect until those are acknowledged, so events reach the broker in their original order.
Delivery is at least once: a lost PUBACK or a crash before the outbox is updated resends.

Retained state and discovery (docs/mqtt.md): ``{prefix}/{site}/{source}/state/{label}`` follows the
events (``ON`` at an onset, ``OFF`` at an offset), all ``OFF`` at start and at a clean stop. These
and the Home Assistant discovery configs are latest-value topics (``RetainedTopics``), sent by the
same sender thread inside the same window, before the outbox. With discovery on, the network
thread also listens to ``{ha prefix}/status`` (``online``: send the configs again) and, once per
run, to this site's own retained configs for ``DISCOVERY_SWEEP_S`` after the SUBACK: every config
found that the site no longer wants is cleared with an empty retained payload.

Remote control (``control=True``): the network thread subscribes ``{prefix}/{site}/set`` and hands
each payload to ``on_command`` (``rtaudio.runtime.control.Controller.submit``: a bounded queue the
pipeline thread drains); ``ack`` queues an acknowledgement (bounded, latest ``MAX_ACKS``) that the
sender thread publishes on ``{prefix}/{site}/control/ack`` at QoS 1, not retained.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from rtaudio.config.site import HomeAssistantConfig, MqttConfig, TlsConfig
from rtaudio.runtime.events import CaptionResult, Event, TagResult
from rtaudio.runtime.health import Health
from rtaudio.runtime.level import LevelReading
from rtaudio.runtime.publish import homeassistant as ha
from rtaudio.runtime.publish import messages as msgs
from rtaudio.runtime.publish.base import Publisher
from rtaudio.runtime.publish.outbox import Message, OpenEvent, open_outbox
from rtaudio.runtime.publish.retained import RetainedTopics

log = logging.getLogger(__name__)

EMBEDDED_HOST = "127.0.0.1"
MAX_WINDOW = 16  # unfinished messages handed to paho; below mosquitto's default receive maximum (20)
SESSION_EXPIRY_S = 3600  # MQTT 5 session kept this long when clean_start is false
MAX_DOWN_REASONS = 8  # distinct connection-failure reasons warned about per outage; more go to debug
DISCOVERY_SWEEP_S = 3.0  # after the SUBACK, how long retained discovery configs of this site are collected before stale ones are cleared
MAX_ACKS = 256  # command acknowledgements waiting for the sender; older ones are dropped (counted)
MAX_SWEEP_TOPICS = 100_000  # retained configs remembered during the sweep (bounded even on a hostile broker)


class MqttPublisher(Publisher):
    """Publishes to ``{prefix}/{site}/...``; counts drops, outbox depth, broker state and tags
    latency into ``health`` (kept as ``self.stats``). ``model_id`` goes into health messages.

    With ``broker: embedded`` it connects to 127.0.0.1 over MQTT 3.1.1; starting the embedded
    broker (``embedded.start_embedded_broker``) is the caller's job.
    """

    def __init__(
        self,
        config: MqttConfig,
        site: str,
        health: Health | None = None,
        model_id: str = "",
        entities: Sequence[ha.SourceEntities] = (),
        homeassistant: HomeAssistantConfig | None = None,
        model_version: str = "",
        control: bool = False,
    ):
        """``entities``: per source, the labels and queries with a state topic (published ``OFF`` at
        start and stop). ``homeassistant`` with ``discovery`` on publishes their discovery configs."""
        self.config = config
        self.site = site
        self.model_id = model_id
        self.stats = health if health is not None else Health()
        self.embedded = config.broker == "embedded"
        self.host = EMBEDDED_HOST if self.embedded else config.broker
        self.protocol = mqtt.MQTTv311 if self.embedded or config.protocol == "3.1.1" else mqtt.MQTTv5
        if self.embedded and config.protocol == "5":
            log.info("the embedded broker speaks MQTT 3.1.1 only; using 3.1.1")
        self.status_topic = msgs.status_topic(config.prefix, site)
        self.control = control
        self.set_topic = f"{config.prefix}/{site}/set"
        self.ack_topic = f"{config.prefix}/{site}/control/ack"
        self.on_command: Callable[[bytes], None] | None = None  # network thread: must only queue
        self._acks: deque[bytes] = deque()
        self._acks_lock = threading.Lock()
        self.homeassistant = homeassistant if homeassistant is not None and homeassistant.discovery else None
        self._counts_lock = threading.Lock()
        self._outbox = open_outbox(config.outbox_dir, config.outbox_max_messages, self._dropped)
        self.stats.outbox_depth = len(self._outbox)
        self._window = max(1, min(MAX_WINDOW, config.outbox_max_messages // 4))
        self._client = self._make_client()
        self._work = threading.Event()  # set whenever the sender may have something to do
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._connects = 0  # bumped by every successful CONNACK
        self._inflight: list[tuple[Message, mqtt.MQTTMessageInfo]] = []  # sender thread only
        self._held: list[Message] = []  # taken from the outbox, refused by paho's full queue: sent first next round (sender thread only)
        self._health_lock = threading.Lock()
        self._health_payload: bytes | None = None  # latest health message not yet sent
        self._sender: threading.Thread | None = None
        self._closed = False
        self._down_logged: set[str] = set()  # reasons warned about in this outage; repeats go to debug
        self.entities = tuple(entities)
        self._retained = RetainedTopics()  # label states and discovery configs: latest value per topic
        self._retained_inflight: list[tuple[str, bytes, mqtt.MQTTMessageInfo]] = []  # sender thread only
        self._state_topics: dict[str, None] = {}  # every state topic of this run, in order
        self.model_version = model_version
        self.discovery: list[ha.Discovery] = self._discovery_messages(self.entities)
        self._sweep_lock = threading.Lock()
        self._sweep_mid: int | None = None  # the discovery subscription's message id, until its SUBACK
        self._sweep_since: float | None = None  # monotonic time of that SUBACK
        self._sweep_done = False
        self._sweep_found: set[str] = set()

    # ------------------------------------------------------------ Publisher interface

    def start(self) -> None:
        """Queue the discovery configs and every state ``OFF``, connect in the background (retrying with backoff) and start sending."""
        for message in self.discovery:
            self._retained.set(message.topic, msgs.encode(message.payload))
        for entities in self.entities:
            for name in entities.state_names():
                self._set_state(entities.source, name, ha.STATE_OFF)
        properties = None
        kwargs: dict[str, Any] = {}
        if not self.stats.broker_connected and self.stats.broker_down_since is None:
            self.stats.broker_down_since = time.time()  # not connected yet: health's mqtt_disconnected limit runs from here
        if self.protocol == mqtt.MQTTv5:
            kwargs["clean_start"] = self.config.clean_start
            if not self.config.clean_start:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = SESSION_EXPIRY_S
        self._client.connect_async(self.host, self.config.port, self.config.keepalive_s, properties=properties, **kwargs)
        self._client.loop_start()
        self._sender = threading.Thread(target=self._run, name="mqtt-sender", daemon=True)
        self._sender.start()
        log.info("MQTT: connecting to %s:%d as %s", self.host, self.config.port, self._client_id)
        warning = None if self.embedded else plaintext_password_warning(self.config, self.host)
        if warning is not None:
            log.log(logging.INFO if is_loopback(self.host) else logging.WARNING, "MQTT: %s", warning)

    def tags(self, result: TagResult) -> None:
        topic = msgs.source_topic(self.config.prefix, self.site, result.source_id, "tags")
        self._queue("tags", topic, 0, lambda: msgs.tags_payload(self.site, result), result.source_id, result.end_time)

    def event(self, event: Event) -> None:
        """QoS 1 through the outbox. The disk outbox keeps an onset as open until its offset, in the
        same transaction as the message, so a run killed meanwhile is closed at the next start."""
        topic = msgs.source_topic(self.config.prefix, self.site, event.source_id, "events")
        opens = (lambda: OpenEvent(event.event_id, event.source_id, event.to_json(), event.onset_time)) if event.kind == "onset" else None
        closes = event.event_id if event.kind == "offset" else None
        self._queue("events", topic, 1, lambda: msgs.event_payload(self.site, event), event.source_id, None, opens, closes)
        if not self._closed:
            self._set_state(event.source_id, event.label, ha.STATE_ON if event.kind == "onset" else ha.STATE_OFF)

    def _discovery_messages(self, entities: Sequence[ha.SourceEntities]) -> list[ha.Discovery]:
        if self.homeassistant is None:
            return []
        return ha.discovery_messages(
            self.homeassistant.prefix,
            self.config.prefix,
            self.site,
            self.model_id,
            self.model_version,
            entities,
            self.status_topic,
            msgs.STATUS_ONLINE,
            msgs.STATUS_OFFLINE,
        )

    def update_entities(self, entities: Sequence[ha.SourceEntities]) -> None:
        """A reloaded site's entities (main thread, after the pipeline closed the events of what went away): new
        discovery configs and states ``OFF`` published, configs no longer wanted cleared (empty retained), and
        the states of labels or sources no longer reported set ``OFF``."""
        entities = tuple(entities)
        discovery = self._discovery_messages(entities)  # ValueError on a clash: nothing changed
        wanted = {m.topic for m in discovery}
        gone = [m.topic for m in self.discovery if m.topic not in wanted]
        self.entities, self.discovery = entities, discovery
        for message in discovery:
            self._retained.set(message.topic, msgs.encode(message.payload))
        for topic in gone:
            self._retained.set(topic, b"")
        states = {ha.state_topic(self.config.prefix, self.site, e.source, name) for e in entities for name in e.state_names()}
        for topic in [t for t in list(self._state_topics) if t not in states]:
            self._retained.set(topic, ha.STATE_OFF.encode())
        for e in entities:
            for name in e.state_names():
                if ha.state_topic(self.config.prefix, self.site, e.source, name) not in self._state_topics:
                    self._set_state(e.source, name, ha.STATE_OFF)
        if gone:
            log.info("Home Assistant discovery: clearing %d config(s) the reloaded site no longer publishes (e.g. %s)", len(gone), gone[0])
        self._work.set()

    def ack(self, payload: dict[str, Any]) -> None:
        """Queue a command's acknowledgement (any thread; never blocks; bounded: the oldest is dropped and counted)."""
        data = msgs.encode(payload)
        with self._acks_lock:
            if len(self._acks) >= MAX_ACKS:
                self._acks.popleft()
                self._dropped("acks")
            self._acks.append(data)
        self._work.set()

    def _send_acks(self) -> None:
        """Hand the waiting acks to paho (QoS 1, not retained); one paho refuses (its queue full) waits for the next round."""
        while True:
            with self._acks_lock:
                if not self._acks:
                    return
                payload = self._acks[0]
            info = self._client.publish(self.ack_topic, payload, 1, retain=False)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                return
            with self._acks_lock:
                if self._acks and self._acks[0] is payload:
                    self._acks.popleft()

    def _set_state(self, source: str, name: str, value: str) -> None:
        """Retained ``ON``/``OFF`` on ``{prefix}/{site}/{source}/state/{name}`` (latest value wins)."""
        topic = ha.state_topic(self.config.prefix, self.site, source, name)
        self._state_topics[topic] = None
        self._retained.set(topic, value.encode())
        self._work.set()

    def state(self, source: str, name: str) -> str | None:
        """The latest state of a label or query of ``source`` (``ON``/``OFF``), None when it has none."""
        value = self._retained.get(ha.state_topic(self.config.prefix, self.site, source, name))
        return None if value is None else value.decode()

    def stream_time(self, source_id: str, stream_time: float) -> None:
        """How far ``source_id``'s stream got (pipeline thread, every window; O(1)): where its open
        events are closed if the process dies (``EventTracker.on_progress``)."""
        self._outbox.progress(source_id, stream_time)

    def interrupted_events(self) -> list[Event]:
        """Offsets (``reason: restart``) of the events a killed previous run left open, each at the
        last stream time its source reached; none with the memory outbox. Publish them before the
        sources start; ``event`` then forgets each record."""
        events = []
        for record in self._outbox.open_events():
            try:
                events.append(Event.from_json(record.record).interrupted(record.last_time))
            except ValueError as exc:
                log.warning("MQTT outbox: an open event of source %s from the previous run is unreadable and is dropped: %s", record.source, exc)
                self._outbox.forget_event(record.event_id)
        return events

    def caption(self, result: CaptionResult) -> None:
        """QoS 1 through the outbox, like events (called from the caption worker's thread)."""
        topic = msgs.source_topic(self.config.prefix, self.site, result.source_id, "caption")
        self._queue("captions", topic, 1, lambda: msgs.caption_payload(self.site, result), result.source_id, None)

    def level(self, reading: LevelReading) -> None:
        """QoS 0 through the outbox, like tags (dropped before captions and events when it is full)."""
        topic = msgs.source_topic(self.config.prefix, self.site, reading.source_id, "level")
        self._queue("level", topic, 0, lambda: msgs.level_payload(self.site, reading), reading.source_id, None)

    def health(self, snapshot: dict[str, Any]) -> None:
        """Sent at QoS 0 when connected; while offline it is dropped and counted (not queued)."""
        if self._closed or not self._connected.is_set():
            self._dropped("health")
            return
        try:
            payload = msgs.encode(msgs.health_payload(self.site, self.model_id, snapshot))
        except (TypeError, ValueError) as exc:
            log.error("MQTT: health message not sent: %s", exc)
            self._dropped("health")
            return
        with self._health_lock:
            replaced, self._health_payload = self._health_payload is not None, payload
        if replaced:
            self._dropped("health")
        self._work.set()

    def close(self, timeout: float = 5.0) -> None:
        """Flush the outbox for up to ``timeout`` s, publish ``offline``, disconnect."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        for topic in list(self._state_topics):  # after the offsets: nothing is heard while rtaudio is stopped
            self._retained.set(topic, ha.STATE_OFF.encode())
        self._sweep_discovery(now=True)  # a short run still clears what it found
        self._work.set()
        if self._sender is not None:
            while time.monotonic() < deadline and (len(self._outbox) or self._health_pending() or self._retained_pending()):
                self._work.set()
                time.sleep(0.02)
            self._stop.set()
            self._work.set()
            self._sender.join(5)
            self._say_offline(max(0.5, deadline - time.monotonic()))
            self._client.disconnect()
            self._client.loop_stop()
            self._reap()
        self._report_undelivered()
        self._outbox.close()

    # ------------------------------------------------------------ state

    def _health_pending(self) -> bool:
        return self._health_payload is not None and self._connected.is_set()

    def _retained_pending(self) -> bool:
        return bool(self._retained.pending() or self._retained_inflight)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until connected with the start-up states and discovery configs handed to the
        broker (so the first events' state flips go out as they happen, not collapsed behind an unsent OFF)."""
        deadline = time.monotonic() + timeout
        while not (self._connected.is_set() and not self._retained_pending()):
            if time.monotonic() >= deadline or self._closed:
                return False
            time.sleep(0.02)
        return True

    @property
    def outbox_depth(self) -> int:
        return len(self._outbox)

    # ------------------------------------------------------------ queueing (pipeline thread)

    def _queue(
        self, kind: msgs.Kind, topic: str, qos: int, build: Any, source: str, captured: float | None, opens: Any = None, closes: str | None = None
    ) -> None:
        if self._closed:
            log.warning("MQTT publisher is closed; a %s message for %s was not sent", kind, source)
            self._dropped(kind)
            return
        try:
            payload = msgs.encode(build())
            opened = opens() if opens is not None else None
        except (TypeError, ValueError) as exc:
            log.error("MQTT: %s message for %s not sent: %s", kind, source, exc)
            self._dropped(kind)
            if closes is not None:
                self._outbox.forget_event(closes)
            return
        self._outbox.put(kind, topic, payload, qos, source=source, captured=captured, opens=opened, closes=closes)  # type: ignore[arg-type]
        self.stats.outbox_depth = len(self._outbox)
        self._work.set()

    def _dropped(self, kind: str) -> None:
        with self._counts_lock:
            count = self.stats.messages_dropped.get(kind, 0) + 1
            self.stats.messages_dropped[kind] = count
        if count == 1 or count % 1000 == 0:
            log.warning("MQTT: %d %s message(s) dropped so far (broker unreachable or outbox full)", count, kind)

    # ------------------------------------------------------------ sender thread

    def _run(self) -> None:
        seen_connects, barrier = 0, False
        while not self._stop.is_set():
            self._work.wait(0.25)
            self._work.clear()
            try:
                self._outbox.flush()
                self._reap()
                if not self._connected.is_set():
                    continue
                if self._connects != seen_connects:  # paho resends what was in flight first
                    seen_connects, barrier = self._connects, bool(self._inflight or self._retained_inflight)
                if barrier and (self._inflight or self._retained_inflight):
                    continue
                barrier = False
                self._send_health()
                self._send_acks()
                self._sweep_discovery()
                self._send_retained(self._retained.take(self._window - len(self._inflight) - len(self._retained_inflight)))
                room = self._window - len(self._inflight) - len(self._retained_inflight)
                held, self._held = self._held, []
                self._send(held + self._outbox.take(room - len(held)))
            except Exception:  # never let the sender die: log, back off, go on
                log.exception("MQTT sender failed; retrying")
                self._stop.wait(1.0)
        self._outbox.flush()

    def _send(self, batch: list[Message]) -> None:
        for index, message in enumerate(batch):
            now = time.time()
            info = self._client.publish(message.topic, msgs.stamp(message.payload, now), message.qos, message.retain)
            if message.qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                # paho's queue also holds what is sent outside the window (acks, health, status): keep these, in order, for the next round
                self._held = batch[index:]
                break
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (message.qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN):
                self._inflight.append((message, info))  # NO_CONN at QoS 1: paho keeps it for the reconnect
                if message.captured is not None:
                    self.stats.source(message.source).latency_ms.add((now - message.captured) * 1000)
            else:  # a QoS 0 tags message while the connection dropped: gone
                self._outbox.done(message)
                self._dropped(message.kind)
        if batch:
            self.stats.outbox_depth = len(self._outbox)

    def _send_retained(self, batch: list[tuple[str, bytes]]) -> None:
        """States and discovery configs: QoS 1, retained; a failed hand-over is queued again."""
        for topic, payload in batch:
            info = self._client.publish(topic, payload, 1, retain=True)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                self._retained_inflight.append((topic, payload, info))
            else:
                self._retained.retry(topic)

    def _sweep_discovery(self, now: bool = False) -> None:
        """Once the sweep has listened long enough (or ``now``, at close, if its SUBACK came): clear
        every config of this site found retained that is no longer wanted."""
        with self._sweep_lock:
            if self._sweep_done or self._sweep_since is None or self.homeassistant is None:
                return
            if not now and time.monotonic() - self._sweep_since < DISCOVERY_SWEEP_S:
                return
            self._sweep_done = True
            found, self._sweep_found = self._sweep_found, set()
        stale = ha.stale_topics(found, (m.topic for m in self.discovery))
        if stale:
            log.info("Home Assistant discovery: clearing %d config(s) this site no longer publishes (e.g. %s)", len(stale), stale[0])
        for topic in stale:
            self._retained.set(topic, b"")
        self._client.unsubscribe(ha.discovery_filter(self.homeassistant.prefix, self.site))

    def _send_health(self) -> None:
        with self._health_lock:
            payload, self._health_payload = self._health_payload, None
        if payload is not None:
            topic = msgs.health_topic(self.config.prefix, self.site)
            info = self._client.publish(topic, msgs.stamp(payload, time.time()), 0)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._dropped("health")

    def _reap(self) -> None:
        """Forget every in-flight message paho has finished with."""
        self._retained_inflight = [item for item in self._retained_inflight if not item[2].is_published()]
        still = []
        for message, info in self._inflight:
            if info.is_published():
                self._outbox.done(message)
            else:
                still.append((message, info))
        if len(still) != len(self._inflight):
            self._inflight = still
            self.stats.outbox_depth = len(self._outbox)

    def _say_offline(self, timeout: float) -> None:
        if not self._connected.is_set():
            return
        info = self._client.publish(self.status_topic, msgs.STATUS_OFFLINE, 1, retain=True)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            log.warning("MQTT: could not publish offline status: %s", exc)

    def _report_undelivered(self) -> None:
        counts = self._outbox.counts()
        if not len(self._outbox):
            return
        if self.config.outbox_dir is not None:
            log.info(
                "MQTT: %d events, %d tags and %d caption messages kept in %s for the next start",
                counts["events"],
                counts["tags"],
                counts.get("captions", 0),
                self.config.outbox_dir,
            )
            return
        log.warning(
            "MQTT: %d events, %d tags and %d caption messages were not delivered before shutdown and are lost (set mqtt.outbox_dir to keep them)",
            counts["events"],
            counts["tags"],
            counts.get("captions", 0),
        )
        for kind, count in counts.items():
            with self._counts_lock:
                self.stats.messages_dropped[kind] = self.stats.messages_dropped.get(kind, 0) + count

    # ------------------------------------------------------------ paho client and callbacks (network thread)

    @property
    def _client_id(self) -> str:
        return self.config.client_id or f"rtaudio-{self.site}"

    def _make_client(self) -> mqtt.Client:
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=self.protocol,
            clean_session=None if self.protocol == mqtt.MQTTv5 else self.config.clean_start,
        )
        client.reconnect_delay_set(1, max(1, math.ceil(self.config.reconnect_max_s)))
        # Room for our window plus the status messages; the window keeps paho's queue below this.
        client.max_inflight_messages_set(self._window + 4)
        client.max_queued_messages_set(self._window + 4)
        client.will_set(self.status_topic, msgs.STATUS_OFFLINE, qos=1, retain=True)
        if not self.embedded:
            apply_credentials(client, self.config)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.on_log = self._on_log
        if self.homeassistant is not None or self.control:
            client.on_message = self._on_message
            client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._log_down(describe_refusal(reason, self.host, self.config.port, self.config.username))
            return
        receive_max = getattr(properties, "ReceiveMaximum", None)
        if receive_max:  # MQTT 5: never have more QoS 1 messages unacknowledged than the broker allows
            self._window = max(1, min(self._window, receive_max - 2))
        client.publish(self.status_topic, msgs.STATUS_ONLINE, qos=1, retain=True)
        if self._connects:  # a broker that restarted without persistence lost the retained states
            self._retained.mark(list(self._state_topics))
        if self.control:
            client.subscribe(self.set_topic, 1)
        if self.homeassistant is not None:
            client.subscribe(ha.birth_topic(self.homeassistant.prefix), 1)
            with self._sweep_lock:
                if not self._sweep_done and self._sweep_since is None:
                    _, self._sweep_mid = client.subscribe(ha.discovery_filter(self.homeassistant.prefix, self.site), 1)
        self._connects += 1
        self._connected.set()
        self.stats.broker_connected = True
        self.stats.broker_down_since = None
        if self._connects > 1:
            self.stats.broker_reconnects += 1
        self._down_logged.clear()
        log.info("MQTT: connected to %s:%d", self.host, self.config.port)
        self._work.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self.stats.broker_connected = False
        if self.stats.broker_down_since is None:
            self.stats.broker_down_since = time.time()
        error = client.socket_error if isinstance(client, _Client) else None
        if self._closed:
            return
        where = f"{self.host}:{self.config.port}"
        if was_connected:
            self._log_down(f"lost the connection to {where} ({error or reason}); reconnecting with backoff")
        elif error is not None:  # the broker closed a connection it never accepted (e.g. TLS 1.3 client certificate refused)
            self._log_down(f"{where} closed the connection: {error}{_hint(error, self.config.port)}; retrying with backoff")
        else:  # after a refused CONNACK, already reported by _on_connect
            log.debug("MQTT: connection to %s closed (%s)", where, reason)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        error = client.connect_error if isinstance(client, _Client) else None
        self._log_down(f"{describe_connect_error(error, self.host, self.config.port, self.config.tls is not None)}; retrying with backoff")

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        """Keep paho's socket errors: it logs them, then reports only a bare disconnect."""
        if level == mqtt.MQTT_LOG_ERR and "on socket:" in text and isinstance(client, _Client):
            client.socket_error = text[:500]

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT: the broker rejected message %d: %s", mid, reason)
        self._work.set()  # room in the window: let the sender go on

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        with self._sweep_lock:
            if mid == self._sweep_mid and self._sweep_since is None:
                self._sweep_since = time.monotonic()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Commands (to ``on_command``), Home Assistant's birth message (send the configs again) and this site's retained configs (the sweep)."""
        if message.topic == self.set_topic:
            if self.control and self.on_command is not None and not message.retain:  # a retained command would replay at every start
                self.on_command(bytes(message.payload))
            elif message.retain:
                log.warning("control: a retained message on %s is ignored; publish commands without retain", self.set_topic)
            return
        if self.homeassistant is None:
            return
        if message.topic == ha.birth_topic(self.homeassistant.prefix):
            if message.payload == b"online":
                log.info("Home Assistant is online: publishing %d discovery config(s) again", len(self.discovery))
                self._retained.mark([m.topic for m in self.discovery])
                self._retained.mark(list(self._state_topics))
                self._work.set()
            return
        if message.payload and mqtt.topic_matches_sub(ha.discovery_filter(self.homeassistant.prefix, self.site), message.topic):
            with self._sweep_lock:
                if not self._sweep_done and len(self._sweep_found) < MAX_SWEEP_TOPICS:
                    self._sweep_found.add(message.topic)

    def _log_down(self, text: str) -> None:
        """WARNING the first time a reason is seen in an outage, DEBUG while it repeats (retries back off)."""
        seen = text in self._down_logged or len(self._down_logged) >= MAX_DOWN_REASONS
        log.log(logging.DEBUG if seen else logging.WARNING, "MQTT: %s", text)
        self._down_logged.add(text)


class _Client(mqtt.Client):
    """paho's client, keeping why the latest connection attempt failed: paho's network thread catches
    the exception and calls ``on_connect_fail`` without it (so the TLS verify message was lost), and
    reports a socket error after the connect only in its log (``socket_error``, set by ``on_log``)."""

    connect_error: OSError | None = None  # raised by the latest attempt to connect
    socket_error: str | None = None  # paho's latest socket error message since that attempt

    def reconnect(self) -> MQTTErrorCode:
        self.connect_error = self.socket_error = None
        try:
            return super().reconnect()
        except OSError as exc:
            self.connect_error = exc
            raise


def describe_connect_error(error: BaseException | None, host: str, port: int, tls: bool = False) -> str:
    """Why a connection attempt to ``host:port`` (over TLS when ``tls``) failed, naming the real cause
    (the certificate verify message, a refused or unresolvable address) and what to check."""
    where = f"{host}:{port}"
    if isinstance(error, ssl.SSLCertVerificationError):
        message = error.verify_message or error.reason or str(error)
        if "mismatch" in str(message).lower():
            hint = f"mqtt.broker must be a name or address the broker's certificate lists; {host!r} is not"
        else:
            hint = "set mqtt.tls.ca to the CA certificate that signed the broker's certificate"
        return f"TLS to {where} failed: certificate verify failed: {message} ({hint})"
    if isinstance(error, ssl.SSLError):
        text = str(error.reason or error)
        return f"TLS to {where} failed: {text}{_hint(text, port)}"
    if isinstance(error, ConnectionRefusedError):
        return f"{where} refused the connection (is the broker running and listening on port {port}?)"
    if tls and isinstance(error, (ConnectionResetError, ConnectionAbortedError)):  # a plain MQTT listener hangs up on a TLS hello
        return f"TLS to {where} failed: the broker hung up during the handshake ({error.strerror}){_hint('UNEXPECTED_EOF', port)}"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the broker host {host!r} ({error.strerror}); check mqtt.broker"
    if isinstance(error, TimeoutError):
        return f"no answer from {where} (timed out; a firewall, or the wrong host?)"
    if isinstance(error, OSError):
        return f"cannot reach {where} ({error.strerror or error})"
    return f"cannot reach {where}"


def _hint(text: str, port: int | None = None) -> str:
    """What to check for a TLS failure the broker reported (an alert) or a protocol mismatch."""
    upper = text.upper()
    if "CERTIFICATE_REQUIRED" in upper or "BAD_CERTIFICATE" in upper or "UNKNOWN_CA" in upper:
        return " (the broker did not accept rtaudio's client certificate; check mqtt.tls.cert and mqtt.tls.key)"
    if "WRONG_VERSION_NUMBER" in upper or "UNEXPECTED_EOF" in upper or "EOF OCCURRED" in upper:
        return f" (is port {port} a TLS listener? plain MQTT is usually 1883, MQTT over TLS 8883)" if port else " (is this port a TLS listener?)"
    return ""


def describe_refusal(reason: Any, host: str, port: int, username: str | None) -> str:
    """A refused CONNACK in words, with what to check (login, account, client id)."""
    where = f"{host}:{port}"
    value = getattr(reason, "value", None)
    if value == 134:  # Bad user name or password (3.1.1: 4)
        who = f"user {username!r}" if username else "no username (mqtt.username is not set)"
        return f"the broker at {where} refused the login: {reason} for {who}; check mqtt.username and mqtt.password / mqtt.password_file"
    if value == 135 and username:  # Not authorized (3.1.1: 5); mosquitto's answer to a wrong password too
        return (
            f"the broker at {where} refused the connection: {reason} for user {username!r} (a wrong password, or an account the broker "
            "does not let connect; check mqtt.username and mqtt.password / mqtt.password_file, and the broker's access rules)"
        )
    if value == 135:
        return f"the broker at {where} refused the connection: {reason} for anonymous clients (it requires a login: set mqtt.username and mqtt.password)"
    if value == 133:
        return f"the broker at {where} refused the connection: {reason}; check mqtt.client_id"
    return f"the broker at {where} refused the connection: {reason}"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses: traffic that never leaves the machine."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def plaintext_password_warning(config: MqttConfig, host: str) -> str | None:
    """The start-up warning when a password would travel without TLS, or None (no password, or TLS on)."""
    if config.tls is not None or config.username is None or (config.password is None and config.password_file is None):
        return None
    where = f"{host}:{config.port}"
    if is_loopback(host):
        return f"the password of user {config.username!r} goes to {where} without TLS; acceptable only because {host} is a loopback address"
    return (
        f"the password of user {config.username!r} goes to {where} without TLS: anyone on the network path can read it; "
        "set mqtt.tls (and the broker's TLS port, usually 8883)"
    )


def apply_credentials(client: mqtt.Client, config: MqttConfig) -> None:
    """Username/password and TLS from ``config`` onto a paho client (ValueError naming an unreadable secret)."""
    if config.username is not None:
        client.username_pw_set(config.username, _read_secret(config.resolved_password, "mqtt.password_file"))
    if config.tls is not None:
        client.tls_set_context(tls_context(config.tls))


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """Client TLS: the given CA (else the system's), optional client cert/key, optional insecure."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca) if tls.ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"mqtt.tls.ca {tls.ca}: cannot load the CA certificate ({exc})") from None
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.key is not None and tls.cert is None:
        raise ValueError("mqtt.tls.key is set without mqtt.tls.cert; a client key needs its certificate")
    if tls.cert is not None:
        password = _read_secret(
            lambda: tls.key_password.get_secret_value() if tls.key_password else (tls.key_password_file.read_text().strip() if tls.key_password_file else None),
            "mqtt.tls.key_password_file",
        )
        try:
            context.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None, password=password)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"mqtt.tls.cert {tls.cert} / key {tls.key}: cannot load the client certificate ({exc}); check the files and the key passphrase"
            ) from None
    return context


def _read_secret(read: Any, what: str) -> str | None:
    try:
        return read()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read ({exc.strerror or exc})") from None
