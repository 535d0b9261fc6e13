"""A site checked against its model and this machine: what ``config check``, ``run`` and ``doctor`` agree on.

Everything that can be known before audio flows, in one place (``config.load`` runs it):

- the model (``model_problems``): the directory follows the contract, per-label rules name real
  labels and keep off_threshold at or below the onset threshold, query names do not clash with
  labels, and the window fits the graph (``model.onnx`` takes a fixed number of samples);
- the text heads (``text_problems``): the model has the files captions and queries need, and
  every query has a word the model's vocabulary knows;
- the machine (``machine_problems``): MQTT secret files exist and are readable (wider than 0640 is
  a warning), TLS files load into a real ``ssl.SSLContext``, the outbox directory can be created
  and written, and a password does not travel in clear text to another host (a warning); the HTTP
  server listens beyond loopback only with a token; the clips directory is writable (a warning:
  it costs the clips only), and no private label is clipped (``clip_label_problems``).

Each finding is a ``Problem``: a path in the site file (for its line), a message, and whether it
is only a warning. Nothing here touches the network or leaves anything behind on disk.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import mmap
import os
import re
import ssl
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rtaudio.config.base import ScheduleRule
from rtaudio.config.loader import format_loc, suggest
from rtaudio.config.site import MqttConfig, SiteConfig, TlsConfig, split_listen
from rtaudio.contract import ContractError, ModelDir, load_model_dir, missing_files
from rtaudio.contract.files import CAPTION_FILES, QUERY_FILES, VOCAB_FILE
from rtaudio.contract.vocab import Vocabulary, words

SECRET_MODE = 0o640  # the widest permissions a secret file may have without a warning
MAX_SECRET_BYTES = 64 * 1024  # a password file holds one line
DEFAULT_QUERY_THRESHOLD = 0.5  # as the runtime's, when model.json has no extra.text.query_threshold


@dataclass(frozen=True)
class Problem:
    """One finding: ``loc`` is the path of the key it is about (``("mqtt", "tls", "ca")``)."""

    loc: tuple[Any, ...]
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{format_loc(self.loc)}: {self.message}" if self.loc else self.message


# ---------------------------------------------------------------- the model


def model_problems(config: SiteConfig, model: ModelDir | None = None) -> list[Problem]:
    """Every way the site does not fit its model (``model.json`` read, hash checked): labels, thresholds, window, query names."""
    if model is None:
        try:
            model = load_model_dir(config.model)
        except ContractError as exc:
            return [Problem(("model",), str(exc))]
    info = model.info
    problems = []
    for name, rule in config.events.labels.items():
        if name not in info.labels:
            guess = suggest(name, info.labels)
            hint = f"; did you mean {guess!r}?" if guess else ""
            problems.append(Problem(("events", "labels", name), f"not a label of the model; expected one of {', '.join(info.labels)}{hint}"))
            continue
        on = rule.threshold if rule.threshold is not None else info.thresholds[info.labels.index(name)]
        if rule.enabled and rule.off_threshold is not None and rule.off_threshold > on:
            whose = "" if rule.threshold is not None else " (the model's)"
            problems.append(
                Problem(
                    ("events", "labels", name, "off_threshold"),
                    f"{rule.off_threshold:g} is above the onset threshold {on:g}{whose}; hysteresis needs it at or below: expected at most {on:g}",
                )
            )
    problems += [
        Problem(("queries", name), "the name is a label of the model; events would clash, pick another name") for name in config.queries if name in info.labels
    ]
    problems += rules_problems(config, info.labels, info.thresholds)
    query_default = float(info.extra.get("text", {}).get("query_threshold", DEFAULT_QUERY_THRESHOLD))
    for name, query in config.active_queries().items():
        on = query.threshold if query.threshold is not None else query_default
        if query.off_threshold is not None and query.off_threshold > on:
            whose = "" if query.threshold is not None else " (the model's)"
            problems.append(
                Problem(
                    ("queries", name, "off_threshold"),
                    f"{query.off_threshold:g} is above the onset threshold {on:g}{whose}; hysteresis needs it at or below: expected at most {on:g}",
                )
            )
    return problems + window_problems(config, model)


def _unknown_label(loc: tuple[Any, ...], name: str, labels: list[str]) -> Problem:
    guess = suggest(name, labels)
    hint = f"; did you mean {guess!r}?" if guess else ""
    return Problem(loc, f"{name!r} is not a label of the model; expected one of {', '.join(labels)}{hint}")


def zone_problem(zone: str | None) -> str | None:
    """Why ``zone`` cannot place a schedule in time (missing or unknown); None when it can."""
    if zone is None:
        return "timezone is missing; expected an IANA name such as 'Europe/Berlin', 'America/New_York' or 'UTC'"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{zone!r} is not a known time zone; expected an IANA name such as 'Europe/Berlin', 'America/New_York' or 'UTC'"
    return None


def rules_problems(config: SiteConfig, labels: list[str], thresholds: list[float]) -> list[Problem]:
    """Per-source labels and overrides, private labels and schedule rules: every label named is a model
    label, every schedule named exists, and a source's off_threshold stays at or below its onset threshold."""
    problems: list[Problem] = []
    known = set(labels)

    def names(loc: tuple[Any, ...], values: list[str]) -> None:
        problems.extend(_unknown_label((*loc, i), name, labels) for i, name in enumerate(values) if name not in known)

    def rules(loc: tuple[Any, ...], when: list[ScheduleRule]) -> None:
        for k, rule in enumerate(when):
            if rule.schedule not in config.schedules:
                guess = suggest(rule.schedule, list(config.schedules))
                have = f"expected one of {', '.join(config.schedules)}" if config.schedules else "expected a key of schedules: (none is defined)"
                problems.append(
                    Problem((*loc, k, "schedule"), f"{rule.schedule!r} is not a schedule; {have}" + (f"; did you mean {guess!r}?" if guess else ""))
                )
            if rule.labels is not None:
                names((*loc, k, "labels", "enable"), rule.labels.enable)
                names((*loc, k, "labels", "disable"), rule.labels.disable)

    for name, schedule in config.schedules.items():
        if (why := zone_problem(schedule.timezone)) is not None:
            problems.append(Problem(("schedules", name, "timezone") if schedule.timezone is not None else ("schedules", name), why))
    names(("privacy", "private_labels"), config.privacy.private_labels)
    rules(("when",), config.when)
    if config.clips is not None:
        problems += clip_label_problems(config, labels)
    for index, source in enumerate(config.sources):
        where = ("sources", index)
        if source.labels is not None:
            names((*where, "labels", "include"), source.labels.include)
            names((*where, "labels", "exclude"), source.labels.exclude)
        rules((*where, "when"), source.when)
        for name, rule in (source.events.labels if source.events is not None else {}).items():
            if name not in known:
                problems.append(_unknown_label((*where, "events", "labels", name), name, labels))
                continue
            site = config.events.labels.get(name)
            on = next((r.threshold for r in (rule, site) if r is not None and r.threshold is not None), thresholds[labels.index(name)])
            off = next((r.off_threshold for r in (rule, site) if r is not None and r.off_threshold is not None), None)
            if rule.enabled and off is not None and off > on:
                problems.append(
                    Problem(
                        (*where, "events", "labels", name, "off_threshold" if rule.off_threshold is not None else "threshold"),
                        f"off_threshold {off:g} is above this source's onset threshold {on:g}; hysteresis needs it at or below: expected at most {on:g}",
                    )
                )
    return problems


def clip_label_problems(config: SiteConfig, labels: list[str]) -> list[Problem]:
    """Each clipped label is a model label or a query name, and never a private label (its audio must not be kept)."""
    assert config.clips is not None
    known = [*labels, *config.queries]
    private = set(config.privacy.private_labels)
    problems: list[Problem] = []
    for i, name in enumerate(config.clips.labels):
        loc = ("clips", "labels", i)
        if name in private:
            problems.append(Problem(loc, f"{name!r} is a private label (privacy.private_labels); its audio is never kept: remove it from clips.labels"))
        elif name not in known:
            guess = suggest(name, known)
            hint = f"; did you mean {guess!r}?" if guess else ""
            problems.append(Problem(loc, f"{name!r} is neither a label of the model nor a query name; expected one of {', '.join(known)}{hint}"))
    return problems


def window_problems(config: SiteConfig, model: ModelDir) -> list[Problem]:
    """The window the site asks for against the graph's fixed input, and the hop against the window."""
    info, window = model.info, config.window
    rate = info.sample_rate
    graph = graph_window(model.onnx_path)
    problems = []
    if graph is not None and graph != info.window_samples:
        problems.append(
            Problem(
                ("model",),
                f"model.json says window_s {info.window_s:g} ({info.window_samples} samples) but {model.onnx_path.name} takes "
                f"waveform [batch, {graph}]; re-export the model",
            )
        )
    fixed = graph if graph is not None else info.window_samples
    if window.window_s is not None and round(window.window_s * rate) != fixed:
        problems.append(
            Problem(
                ("window", "window_s"),
                f"{window.window_s:g} s is {round(window.window_s * rate)} samples, but the model's graph takes windows of {fixed} samples "
                f"({fixed / rate:g} s); set window_s: null, or re-export with `rtaudio export --window-s {window.window_s:g}`",
            )
        )
    window_s = window.window_s if window.window_s is not None else info.window_s
    hop_s = window.hop_s if window.hop_s is not None else info.hop_s
    where = ("window", "hop_s") if window.hop_s is not None else ("window", "window_s")
    if hop_s > window_s:
        whose = "" if window.hop_s is not None else " (the model's)"
        problems.append(
            Problem(
                where,
                f"hop {hop_s:g} s{whose} is longer than the window {window_s:g} s; audio between windows would never be tagged: expected at most {window_s:g}",
            )
        )
    elif round(hop_s * rate) < 1:
        problems.append(Problem(where, f"hop {hop_s:g} s is less than one sample at {rate} Hz; expected at least {1 / rate:.6f}"))
    return problems


def graph_window(onnx_path: Path) -> int | None:
    """Samples per window that ``model.onnx`` takes (the ``waveform`` input's second dimension); None
    when the dimension is symbolic or the file cannot be read this way.

    Reads the protobuf directly (onnx is not a runtime dependency): ModelProto.graph (7) ->
    GraphProto.input (11) -> ValueInfoProto name (1) and type (2) -> tensor_type (1) -> shape (2) ->
    dim (1) -> dim_value (1). Weights are skipped by length, so a large model costs next to nothing.
    """
    try:
        with onnx_path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            for graph in _sub(buf, 0, len(buf), 7):
                for value_info in _sub(buf, *graph, 11):
                    names = [bytes(buf[a:b]) for a, b in _sub(buf, *value_info, 1)]
                    if names != [b"waveform"]:
                        continue
                    dims = [
                        dim
                        for type_proto in _sub(buf, *value_info, 2)
                        for tensor in _sub(buf, *type_proto, 1)
                        for shape in _sub(buf, *tensor, 2)
                        for dim in _sub(buf, *shape, 1)
                    ]
                    if len(dims) != 2:
                        return None
                    values = [value for field, value in _fields(buf, *dims[1]) if field == 1 and isinstance(value, int)]
                    return values[0] if values and values[0] > 0 else None
    except (OSError, ValueError, IndexError):
        return None
    return None


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: Any, start: int, end: int) -> Iterator[tuple[int, int | tuple[int, int]]]:
    """(field number, value): an int for varints, (start, end) for length-delimited fields."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated field")
            yield field, (pos, pos + length)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire} not expected")


def _sub(buf: Any, start: int, end: int, wanted: int) -> Iterator[tuple[int, int]]:
    for field, value in _fields(buf, start, end):
        if field == wanted and isinstance(value, tuple):
            yield value


# ---------------------------------------------------------------- text heads


def text_head_problems(config: SiteConfig) -> list[str]:
    """Why the model cannot serve the configured captions/queries (missing text-head files); empty when it can."""
    problems = []
    if config.captions is not None and (missing := missing_files(config.model, CAPTION_FILES)):
        problems.append(f"captions: model {config.model} has no caption decoder ({', '.join(missing)} missing); retrain with captions: in train.yaml")
    if config.active_queries() and (missing := missing_files(config.model, QUERY_FILES)):
        problems.append(f"queries: model {config.model} has no audio-text space ({', '.join(missing)} missing); retrain with captions: in train.yaml")
    return problems


def text_problems(config: SiteConfig) -> list[Problem]:
    """Missing text heads, and queries the model cannot read: no word of the text in its vocab.json
    is a problem (the query would match nothing); some unknown words are a warning (they are dropped)."""
    problems = [Problem((line.partition(":")[0],), line.partition(": ")[2]) for line in text_head_problems(config)]
    queries = config.active_queries()
    if problems or not queries:
        return problems
    try:
        vocab = Vocabulary.load(config.model)
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        return [Problem(("queries",), f"{config.model / VOCAB_FILE} cannot be read: {exc}")]
    for name, rule in queries.items():
        said, unknown = words(rule.text), vocab.unknown_words(rule.text)
        where = ("queries", name, "text")
        if not said:
            problems.append(Problem(where, f"{rule.text!r} has no words; expected a few words describing the sound"))
        elif len(unknown) == len(said):
            problems.append(
                Problem(
                    where,
                    f"no word of {rule.text!r} is known to the model (unknown: {', '.join(unknown)}); the query would match nothing: "
                    f"describe the sound in words of the training captions ({VOCAB_FILE}, {len(vocab)} words)",
                )
            )
        elif unknown:
            known = " ".join(w for w in said if w not in unknown)
            problems.append(Problem(where, f"word(s) {', '.join(unknown)} unknown to the model are dropped; the query reads as {known!r}", warning=True))
    return problems


# ---------------------------------------------------------------- the machine


def machine_problems(config: SiteConfig) -> list[Problem]:
    """MQTT secret files, TLS files, the outbox directory, and clear-text passwords (see the module's docstring)."""
    problems = []
    for index, source in enumerate(config.sources):  # a source's own password_file (ffmpeg): its plugin checks it exists; mode here
        path = getattr(source, "password_file", None)
        if source.enabled and path is not None:
            problems += [p for p in secret_file_problems(path, ("sources", index, "password_file")) if p.warning]
    problems += http_problems(config)
    if config.clips is not None:  # a warning: an unwritable clips directory costs the clips only
        problems += [dataclasses.replace(p, warning=True) for p in writable_dir_problems(config.clips.dir, ("clips", "dir"))]
    mqtt = config.mqtt
    if mqtt is None:
        if config.homeassistant.discovery:
            message = "true needs MQTT, but mqtt is null; expected an mqtt: section (a broker), or discovery: false"
            problems.append(Problem(("homeassistant", "discovery"), message))
        if config.control.enabled:
            message = "true needs MQTT, but mqtt is null; expected an mqtt: section (a broker), or control.enabled: false"
            problems.append(Problem(("control", "enabled"), message))
        return problems
    if mqtt.password_file is not None:
        problems += secret_file_problems(mqtt.password_file, ("mqtt", "password_file"))
    if mqtt.tls is not None:
        problems += tls_problems(mqtt.tls)
    if mqtt.outbox_dir is not None:
        problems += writable_dir_problems(mqtt.outbox_dir, ("mqtt", "outbox_dir"))
    problems += clear_text_problems(mqtt)
    return problems


def secret_file_problems(path: Path, loc: tuple[Any, ...]) -> list[Problem]:
    """A secret file exists, is a regular readable UTF-8 file of at most one line's size; wider than 0640 warns."""
    try:
        info = path.stat()
    except OSError as exc:
        return [Problem(loc, f"{path} {'does not exist' if isinstance(exc, FileNotFoundError) else f'cannot be read ({exc.strerror})'}")]
    if not stat.S_ISREG(info.st_mode):
        return [Problem(loc, f"{path} is not a regular file; expected a file holding the secret")]
    if info.st_size > MAX_SECRET_BYTES:
        return [Problem(loc, f"{path} is {info.st_size} bytes; a secret file holds one line (at most {MAX_SECRET_BYTES} bytes)")]
    try:
        with path.open("rb") as handle:
            handle.read(MAX_SECRET_BYTES + 1).decode("utf-8")
    except OSError as exc:
        return [Problem(loc, f"{path} cannot be read ({exc.strerror or exc})")]
    except UnicodeDecodeError as exc:
        return [Problem(loc, f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})")]
    mode = stat.S_IMODE(info.st_mode)
    if mode & ~SECRET_MODE:
        return [Problem(loc, f"{path} has mode {mode:04o}, wider than {SECRET_MODE:04o}; others may read the secret: chmod 600 {path}", warning=True)]
    return []


def tls_problems(tls: TlsConfig) -> list[Problem]:
    """Each TLS file loads into a real ``ssl.SSLContext`` (a bad PEM is named with ssl's reason); a key needs its certificate."""
    problems = []
    for name in ("ca", "cert", "key"):
        path = getattr(tls, name)
        if path is not None and not path.is_file():
            problems.append(Problem(("mqtt", "tls", name), f"{path} {'is not a regular file' if path.exists() else 'does not exist'}"))
    if tls.key_password_file is not None:
        problems += secret_file_problems(tls.key_password_file, ("mqtt", "tls", "key_password_file"))
    if tls.key is not None and tls.cert is None:
        problems.append(Problem(("mqtt", "tls", "key"), "set without mqtt.tls.cert; a client key needs its certificate"))
    if any(not p.warning for p in problems):  # nothing to load yet
        return problems
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca is not None:
        try:
            context.load_verify_locations(cafile=str(tls.ca))
        except (OSError, ssl.SSLError) as exc:
            problems.append(Problem(("mqtt", "tls", "ca"), f"{tls.ca}: cannot load the CA certificate: {_ssl_reason(exc)}; expected PEM certificate(s)"))
    if tls.cert is not None:
        try:  # the certificate alone first, so a bad one is not blamed on the key
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(tls.cert))
        except (OSError, ssl.SSLError) as exc:
            problems.append(Problem(("mqtt", "tls", "cert"), f"{tls.cert}: cannot load the client certificate: {_ssl_reason(exc)}; expected a PEM certificate"))
            return problems
        problems += _key_problems(context, tls)
    return problems


class _NoPassphrase(Exception):
    """The key is encrypted and no passphrase is configured (raised instead of OpenSSL prompting on the terminal)."""


def _key_problems(context: ssl.SSLContext, tls: TlsConfig) -> list[Problem]:
    assert tls.cert is not None
    if tls.key_password is not None:
        secret: str | None = tls.key_password.get_secret_value()
    elif tls.key_password_file is not None:
        secret = tls.key_password_file.read_text(encoding="utf-8").strip()
    else:
        secret = None

    def passphrase() -> str:
        if secret is None:
            raise _NoPassphrase
        return secret

    loc, key = ("mqtt", "tls", "key" if tls.key is not None else "cert"), tls.key or tls.cert
    try:
        context.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None, password=passphrase)
    except _NoPassphrase:
        return [Problem(loc, f"{key}: the key is encrypted; set mqtt.tls.key_password or key_password_file")]
    except (OSError, ssl.SSLError) as exc:
        reason = _ssl_reason(exc)
        if "KEY_VALUES_MISMATCH" in reason:
            return [Problem(loc, f"{key}: the key does not match the certificate {tls.cert} ({reason})")]
        if secret is not None and ("BAD_DECRYPT" in reason.upper() or _encrypted(key)):
            return [Problem(loc, f"{key}: cannot decrypt the key with the configured passphrase; check key_password / key_password_file ({reason})")]
        what = "the key" if tls.key is not None else "the key (mqtt.tls.key is null, so it must be in the certificate file)"
        return [Problem(loc, f"{key}: cannot load {what}: {reason}; expected a PEM private key")]
    return []


def _encrypted(key: Path) -> bool:
    """Whether a PEM key file holds an encrypted key (PKCS#8 or the older Proc-Type header)."""
    try:
        with key.open("rb") as handle:
            return b"ENCRYPTED" in handle.read(MAX_SECRET_BYTES)
    except OSError:
        return False


def _ssl_reason(exc: OSError) -> str:
    """ssl's reason without the C source location (``[PEM: NO_START_LINE] no start line``)."""
    text = str(exc) if isinstance(exc, ssl.SSLError) else (exc.strerror or str(exc))
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)


def http_problems(config: SiteConfig) -> list[Problem]:
    """The HTTP server: an address other than loopback needs a token (anyone on the network could read the page,
    the metrics and the clips), and a token file must be a readable private file."""
    http = config.http
    if http is None:
        return []
    problems = []
    if http.token_file is not None:
        problems += secret_file_problems(http.token_file, ("http", "token_file"))
    host, port = split_listen(http.listen)
    given = (http.token is not None and http.token.get_secret_value().strip() != "") or http.token_file is not None
    if not given and not _loopback(host):
        problems.append(
            Problem(
                ("http", "listen"),
                f"{http.listen!r} is reachable from the network, but no token is set; add http.token (e.g. ${{RTAUDIO_HTTP_TOKEN}}) or "
                f"http.token_file, or listen on loopback only, e.g. '127.0.0.1:{port}'",
            )
        )
    return problems


def writable_dir_problems(path: Path, loc: tuple[Any, ...]) -> list[Problem]:
    """``path`` can be created (or exists as a directory) and written: tried for real, then undone."""
    created: list[Path] = []
    verb = "create"
    try:
        if path.exists() and not path.is_dir():
            return [Problem(loc, f"{path} is a file; expected a directory (or a path where one can be made)")]
        missing = [p for p in (path, *path.parents) if not p.exists()]
        parent = missing[-1].parent if missing else path
        if not parent.is_dir():
            return [Problem(loc, f"cannot create {path}: {parent} is a file; expected a directory")]
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        verb = "write in"
        fd, probe = tempfile.mkstemp(dir=path, prefix=".rtaudio-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return [Problem(loc, f"cannot {verb} {path}: {exc.strerror or exc}; expected a writable directory")]
    finally:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass
    return []


def clear_text_problems(mqtt: MqttConfig) -> list[Problem]:
    """A warning when a password goes to a non-loopback broker without TLS (anyone on the path can read it)."""
    given = (mqtt.password is not None and mqtt.password.get_secret_value() != "") or mqtt.password_file is not None
    if not given or mqtt.tls is not None or _loopback(mqtt.broker):
        return []
    where = ("mqtt", "password" if mqtt.password is not None else "password_file")
    return [
        Problem(
            where,
            f"sent in clear text over plain TCP to {mqtt.broker}:{mqtt.port}; add `tls: {{}}` (usually with port: 8883) or use a broker on this host",
            warning=True,
        )
    ]


def _loopback(host: str) -> bool:
    if host in ("embedded", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
