"""Remote control over MQTT: JSON commands on ``{prefix}/{site}/set``, acknowledged on ``{prefix}/{site}/control/ack``.

A command (schema ``publish/schema/control_command.json``; docs/mqtt.md, "Remote control")::

    {"id": "42", "command": "disable", "source": "lobby", "label": "speech"}   # one label of one source
    {"command": "disable", "label": "speech"}                                  # that label on every source
    {"command": "disable", "source": "lobby"}                                  # the whole source (like a schedule's source: disable)
    {"command": "threshold", "label": "glass_break", "threshold": 0.7}         # on threshold, per source or site-wide

``parse_command`` (shape and types) and ``apply_command`` (against the current rules: sources,
labels, privacy) are pure functions. ``Controller`` connects them: the MQTT network thread only
``submit``s the raw payload into a bounded queue; the pipeline thread ``drain``s it at every tick
(``Pipeline.hooks``), swaps in the new rules snapshot (``Pipeline.swap_rules``) and acknowledges
each command. Changes live in memory only: a reload or restart restores site.yaml's settings.

What a command cannot do: enable a label or source that site.yaml does not report (``enable`` undoes
a ``disable``; schedules still apply on top), or touch a private label (privacy is not undone
remotely, docs/privacy.md). A disabled label keeps its Home Assistant entity (its state reads OFF),
as a schedule does, so discovery does not change.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import queue
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from rtaudio.runtime.rules import SourceRules

log = logging.getLogger(__name__)

COMMANDS = ("enable", "disable", "threshold")
FIELDS = ("id", "command", "source", "label", "threshold")
MAX_COMMAND_BYTES = 4096
MAX_ID_CHARS = 128


class CommandError(ValueError):
    """A command that cannot be applied; the message is the ack's ``error``."""


@dataclass(frozen=True)
class Command:
    """One parsed command (``source`` None: every source; ``label`` None: the whole source)."""

    command: str
    id: str | int | None = None
    source: str | None = None
    label: str | None = None
    threshold: float | None = None


def command_id(payload: bytes) -> str | int | None:
    """The ``id`` of a payload if it is a JSON object with a string or integer id (for the ack of a refused command)."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) and len(str(value)) <= MAX_ID_CHARS else None


def parse_command(payload: bytes) -> Command:
    """Decode and check one command's shape; CommandError naming what is wrong and what is allowed."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(f"command of {len(payload)} bytes; at most {MAX_COMMAND_BYTES} allowed")
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f'not JSON ({exc}); expected an object such as {{"command": "disable", "label": "speech"}}') from None
    if not isinstance(data, dict):
        raise CommandError(f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise CommandError(f"unknown field(s) {', '.join(map(str, unknown))}; allowed: {', '.join(FIELDS)}")
    ident = data.get("id")
    if ident is not None and (isinstance(ident, bool) or not isinstance(ident, (str, int)) or len(str(ident)) > MAX_ID_CHARS):
        raise CommandError(f"id must be a string or integer of at most {MAX_ID_CHARS} characters")
    name = data.get("command")
    if name not in COMMANDS:
        raise CommandError(f"command {name!r} unknown; expected one of {', '.join(COMMANDS)}")
    for key in ("source", "label"):
        if key in data and not (isinstance(data[key], str) and data[key]):
            raise CommandError(f"{key} must be a non-empty string")
    source, label = data.get("source"), data.get("label")
    threshold = data.get("threshold")
    if name == "threshold":
        if label is None:
            raise CommandError("threshold needs a label")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or not 0 <= threshold <= 1:
            raise CommandError(f"threshold must be a number in [0, 1], got {json.dumps(threshold)}")
        threshold = float(threshold)
    else:
        if "threshold" in data:
            raise CommandError(f"{name} takes no threshold (only the threshold command does)")
        if source is None and label is None:
            raise CommandError(f"{name} needs a source, a label or both")
    return Command(name, ident, source, label, threshold)


def apply_command(rules: Mapping[str, SourceRules], command: Command) -> dict[str, SourceRules]:
    """The rules snapshots ``command`` changes (only those, by source id); CommandError for an unknown
    source or label, a private label, or a label site.yaml does not report."""
    if command.source is not None and command.source not in rules:
        raise CommandError(f"unknown source {command.source!r}; expected one of {', '.join(rules) or '(none)'}")
    targets = [rules[command.source]] if command.source is not None else list(rules.values())
    if command.label is None:  # a whole source on or off
        target = targets[0]
        return {target.source_id: replace(target, paused=command.command == "disable")}
    label = command.label
    first = next(iter(rules.values()), None)
    if first is None or label not in first.labels:
        known = ", ".join(first.labels) if first is not None else "(none)"
        raise CommandError(f"unknown label {label!r}; expected one of {known}")
    if label in first.private:
        raise CommandError(f"label {label} is private (privacy.private_labels); it cannot be changed remotely, only in site.yaml")
    reporting = [r for r in targets if label in r.reported]
    if not reporting:
        where = f"source {command.source}" if command.source is not None else "any source"
        raise CommandError(f"label {label} is not reported by {where} in site.yaml (events.labels, labels include/exclude); edit the file and reload")
    out: dict[str, SourceRules] = {}
    for r in reporting:
        if command.command == "threshold":
            assert command.threshold is not None
            out[r.source_id] = r.with_threshold(label, command.threshold)
        elif command.command == "disable":
            out[r.source_id] = replace(r, disabled=r.disabled | {label})
        else:
            out[r.source_id] = replace(r, disabled=r.disabled - {label})
    return out


def ack_payload(site: str, command: Command | None, ok: bool, error: str | None = None, ident: str | int | None = None) -> dict[str, Any]:
    """The acknowledgement of one command (schema ``control_ack.json``); ``ident`` for a command that did not parse."""
    now = datetime.datetime.now(datetime.timezone.utc)
    out: dict[str, Any] = {
        "schema": "rtaudio.control_ack/1",
        "site": site,
        "id": command.id if command is not None else ident,
        "ok": ok,
        "command": command.command if command is not None else None,
        "time": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
    }
    if command is not None:
        for key in ("source", "label", "threshold"):
            value = getattr(command, key)
            if value is not None:
                out[key] = value
    if error is not None:
        out["error"] = error
    return out


class Controller:
    """The bounded queue between the MQTT network thread (``submit``) and the pipeline thread (``drain``)."""

    def __init__(
        self,
        site: str,
        get_rules: Callable[[], dict[str, SourceRules]],
        swap_rules: Callable[[dict[str, SourceRules]], None],
        ack: Callable[[dict[str, Any]], None],
        max_pending: int = 64,
    ):
        self.site, self._get_rules, self._swap_rules, self.ack = site, get_rules, swap_rules, ack
        self._queue: queue.Queue[bytes] = queue.Queue(max_pending)
        self.applied = 0
        self.refused = 0

    def submit(self, payload: bytes) -> None:
        """Queue one raw command (network thread; never blocks): a full queue answers at once with an error."""
        try:
            self._queue.put_nowait(bytes(payload))
        except queue.Full:
            self.refused += 1
            self.ack(ack_payload(self.site, None, False, f"busy: {self._queue.maxsize} commands are waiting; send it again later", command_id(payload)))

    def drain(self) -> None:
        """Apply every queued command in order (pipeline thread), acknowledging each."""
        while True:
            try:
                payload = self._queue.get_nowait()
            except queue.Empty:
                return
            command: Command | None = None
            try:
                command = parse_command(payload)
                self._swap_rules(apply_command(self._get_rules(), command))
            except CommandError as exc:
                self.refused += 1
                log.info("control: command refused: %s", exc)
                self.ack(ack_payload(self.site, command, False, str(exc), command_id(payload)))
                continue
            self.applied += 1
            log.info("control: %s %s applied (until a reload or restart)", command.command, _what(command))
            self.ack(ack_payload(self.site, command, True))


def _what(command: Command) -> str:
    parts = [f"source {command.source}" if command.source else "every source"]
    if command.label:
        parts.insert(0, f"label {command.label}")
    if command.threshold is not None:
        parts.append(f"at {command.threshold:g}")
    return " on ".join(parts[:2]) + (f" {parts[2]}" if len(parts) > 2 else "")
