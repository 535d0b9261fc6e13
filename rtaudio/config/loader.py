"""YAML in, a validated pydantic model out, or every problem at once as ``file:line: path: problem``.

Shared by ``site.yaml`` and ``train.yaml``. ``${VAR}`` / ``${VAR:-default}`` are substituted in
parsed string values (never in comments); an unset variable is a problem like any other. Pydantic's
errors are rewritten for people: discriminator tags and union-branch names are dropped from paths,
an unknown key lists the allowed ones (and the likely one meant), a literal lists what is allowed,
and each line carries the YAML line of the key it is about.

Hostile files stay cheap: a file over ``MAX_CONFIG_BYTES`` is refused before parsing, a byte that
is not UTF-8 is named by offset and line, and YAML aliases (the "billion laughs" expansion),
nesting deeper than ``MAX_DEPTH`` and more than ``MAX_NODES`` values are refused by a first pass
over the parser's events, before anything is built; each is one line.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

Model = TypeVar("Model", bound=BaseModel)
Loc = tuple[Any, ...]

MAX_CONFIG_BYTES = 1 << 20  # a site or training config is a few KiB; anything near this is not one
MAX_DEPTH = 64  # YAML nesting; the deepest real config nests 5 levels
MAX_NODES = 100_000  # YAML values; 256 sources of 20 keys are ~10,000, and building 100,000 takes well under a second

_FastLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when PyYAML was built with it

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Names people reach for, mapped to the key or type meant (suggested only where the target is allowed).
KEY_SYNONYMS = {
    "host": "broker",
    "hostname": "broker",
    "server": "broker",
    "url": "broker",
    "user": "username",
    "login": "username",
    "pass": "password",
    "passwd": "password",
}
_STREAMS = "cameras and network streams are `type: ffmpeg`"
TYPE_SYNONYMS: dict[str, tuple[str, str]] = {
    **{name: ("ffmpeg", _STREAMS) for name in ("rtsp", "rtsps", "rtmp", "http", "https", "hls", "srt", "camera", "ipcam", "stream", "url")},
    **{name: ("microphone", "sound cards are `type: microphone`") for name in ("mic", "alsa", "pulse", "pulseaudio", "portaudio", "soundcard")},
    **{name: ("file", "audio files are `type: file`") for name in ("wav", "flac", "ogg", "audiofile")},
    "webcam": ("microphone", "a USB camera's microphone is a sound card: `type: microphone`"),
    "udp": ("rtp", "RTP over UDP is `type: rtp`"),
    "onnx": ("onnxruntime", "ONNX models run on `type: onnxruntime`"),
    "ort": ("onnxruntime", "ONNX models run on `type: onnxruntime`"),
    "trt": ("tensorrt", "TensorRT is `type: tensorrt`"),
    "pytorch": ("torch", "TorchScript runs on `type: torch`"),
}


class ConfigError(ValueError):
    """Invalid configuration; ``problems`` holds one line per error."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class _Refused(Exception):
    """A construct a config file may not use (an alias, deep nesting, too many values), found before anything is built."""

    def __init__(self, mark: yaml.Mark, message: str):
        super().__init__(message)
        self.line = mark.line + 1
        self.message = message


def _screen(text: str) -> None:
    """One pass over the parser's events, before any node is built: refuses aliases (the "billion
    laughs" expansion), nesting deeper than ``MAX_DEPTH`` and more than ``MAX_NODES`` values."""
    depth = nodes = 0
    for event in yaml.parse(text, Loader=_FastLoader):
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                event.start_mark, f"YAML alias *{event.anchor} is not allowed in a config file (aliases can expand without bound); write the value out in full"
            )
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            nodes += 1
            if nodes > MAX_NODES:
                raise _Refused(event.start_mark, f"more than {MAX_NODES} values; a config file holds a few hundred")
            if not isinstance(event, yaml.ScalarEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _Refused(event.start_mark, f"nested more than {MAX_DEPTH} levels deep; a config file nests a few levels")


def read_yaml(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    """(parsed mapping, its node tree for line numbers); ConfigError (one line) when the file is
    unreadable, too large, not UTF-8, not YAML, uses aliases or is not a mapping."""
    text = _read_text(path)
    try:
        _screen(text)
        loader = _FastLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except _Refused as exc:
        raise ConfigError([f"{path}:{exc.line}: {exc.message}"]) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_problem(path, exc)]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(
            [f"{path}:{line}: not valid YAML: character U+{exc.character:04X} (line {line}) is not allowed; control characters cannot appear in YAML"]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {' '.join(str(exc).split())}"]) from None
    if data is None:
        raise ConfigError([f"{path}: the file is empty; expected a mapping of keys such as site:, model:, sources:"])
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level, got {type(data).__name__}"])
    return data, root


def _read_text(path: Path) -> str:
    """The file as text: at most ``MAX_CONFIG_BYTES`` read, strict UTF-8 (a leading BOM allowed)."""
    limit = f"the {MAX_CONFIG_BYTES // (1 << 20)} MiB limit for a config file ({MAX_CONFIG_BYTES} bytes)"
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError([f"{path}: {size} bytes ({size / (1 << 20):.1f} MiB) is over {limit}; refused before parsing"])
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)  # a pipe or device may report size 0
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: more than {MAX_CONFIG_BYTES} bytes; over {limit}; refused before parsing"])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            [f"{path}:{line}: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line}, column {column}) is not UTF-8; save the file as UTF-8"]
        ) from None


def _yaml_problem(path: Path, exc: yaml.MarkedYAMLError) -> str:
    """One line for a YAML syntax error: where, what, and what it was inside."""
    mark = exc.problem_mark or exc.context_mark
    where = f"{path}:{mark.line + 1}" if mark else str(path)
    what = " ".join(str(exc.problem or "syntax error").split())
    at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    context = " ".join(str(exc.context).split()) if exc.context else ""
    if context and exc.context_mark:
        context += f" at line {exc.context_mark.line + 1}"
    return f"{where}: not valid YAML: {context + ': ' if context else ''}{what}{at}"


def substitute_env(data: Any, missing: list[str], at: list[Loc] | None = None, _loc: Loc = ()) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string value; collect unset names in ``missing``
    (and, when ``at`` is given, the path of each value that named one, so it can be reported with its line).

    Done on parsed values, not raw text, so comments are never touched.
    """
    if isinstance(data, dict):
        return {k: substitute_env(v, missing, at, (*_loc, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [substitute_env(v, missing, at, (*_loc, i)) for i, v in enumerate(data)]
    if not isinstance(data, str):
        return data

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        missing.append(name)
        if at is not None:
            at.append(_loc)
        return ""

    return _ENV.sub(repl, data)


def secret_value(value: SecretStr | None, file: Path | None) -> str | None:
    """A secret given inline (``password``) or in a file (``password_file``), if any."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return file.read_text().strip()
    return None


def resolve_path(base: Path, value: Path) -> Path:
    """``value`` with ``~`` expanded, relative to ``base`` (the config file's folder) unless absolute."""
    value = value.expanduser()
    return value if value.is_absolute() else base / value


def validate(schema: type[Model], data: Any, yaml_root: yaml.Node | None = None, origin: str = "config") -> Model:
    """``schema`` validated from parsed YAML; ConfigError with every problem, one line each."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([place(origin, yaml_root, loc, message) for loc, message in schema_problems(schema, exc, data)]) from None


def schema_problems(schema: type[BaseModel], exc: ValidationError, data: Any) -> list[tuple[Loc, str]]:
    """Pydantic's errors as (path as the user wrote it, message for people); union branches the data did not take are left out."""
    problems = []
    for error in exc.errors():
        loc = _strip_tags(error["loc"], data)
        if loc is None:
            continue  # the error of a union branch (one spec / a list of them) the file did not use
        if error["type"] == "union_tag_invalid":  # reported on the entry; the user wrote the key
            loc = (*loc, "type")
        problems.append((loc, _describe(schema, error, data)))
    return problems


def place(origin: str, root: yaml.Node | None, loc: Loc, message: str) -> str:
    """``origin:line: path: message``: the line of the key at ``loc`` (or its nearest parent)."""
    line = line_of(root, loc)
    where = f"{origin}:{line}: " if line else f"{origin}: "
    return f"{where}{format_loc(loc)}: {message}" if loc else f"{where}{message}"


def format_loc(loc: Sequence[Any]) -> str:
    """``("sources", 1, "port")`` -> ``sources[1].port``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def parse_loc(text: str) -> Loc | None:
    """``sources[1].port`` -> ``("sources", 1, "port")``; None when ``text`` is not such a path."""
    parts: list[Any] = []
    for match in re.finditer(r"([^.\[\]\s]+)|\[(\d+)\]|(\.)|(.)", text):
        name, index, dot, other = match.groups()
        if other is not None:
            return None
        if name is not None:
            parts.append(name)
        elif index is not None:
            parts.append(int(index))
    return tuple(parts) or None


def suggest(word: str, choices: Iterable[str], synonyms: dict[str, str] | None = None) -> str | None:
    """The choice ``word`` most likely meant: a synonym, the same word in another case, or a close spelling."""
    choices = [str(c) for c in choices]
    wanted = (synonyms or {}).get(word.lower())
    if wanted in choices:
        return wanted
    same_case = [c for c in choices if c.lower() == word.lower()]
    if same_case:
        return same_case[0]
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6) or difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1, cutoff=0.6)
    if not close:
        return None
    return next(c for c in choices if c.lower() == close[0].lower())


def _strip_tags(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...] | None:
    """The location as the user wrote it: pydantic's discriminator tags and union-branch names
    (``list[...]``, ``function-after[...]``, a model's name) dropped; None when the error belongs to
    a branch of ``X | list[X]`` that the data did not take."""
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(part, str) and not (isinstance(node, dict) and part in node):
            if isinstance(node, dict) and node.get("type") == part:
                continue  # discriminator tag
            if "[" in part or part[:1].isupper():  # union branch
                if part.startswith("list[") != isinstance(node, list):
                    return None
                continue
        out.append(part)
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    return tuple(out)


def _has(node: dict[Any, Any] | list[Any], part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


def _allowed_keys(schema: type[BaseModel], loc: tuple[Any, ...], data: Any) -> list[str]:
    """Field names of the model that sits at ``loc`` (the parent of an unknown key)."""
    annotation: Any = schema
    node = data
    for part in loc:
        if not isinstance(part, int):
            model = _model_of(annotation, node)
            field = model.model_fields.get(part) if model else None
            if field is None:
                return []
            annotation = field.annotation
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    model = _model_of(annotation, node)
    return list(model.model_fields) if model else []


def _model_of(annotation: Any, node: Any) -> type[BaseModel] | None:
    """The BaseModel an annotation resolves to for this data (unions resolved by ``type``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    candidates = [a for arg in get_args(annotation) if (a := _model_of(arg, node))]
    if isinstance(node, dict) and "type" in node:
        for cand in candidates:
            field = cand.model_fields.get("type")
            if field is not None and node["type"] in get_args(field.annotation):
                return cand
    return candidates[0] if len(candidates) == 1 else None


def line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based YAML line of the node at ``loc`` (or its nearest parent): a key's own line, a list item's first line."""
    if root is None:
        return None
    index = getattr(root, "_rtaudio_lines", None)
    if index is None:  # built once per file, so thousands of problems cost one walk, not one each
        index = _line_index(root)
        root._rtaudio_lines = index
    for end in range(len(loc), 0, -1):
        if (line := index.get(tuple(loc[:end]))) is not None:
            return line
    return None


def duplicate_keys(root: yaml.Node | None) -> list[tuple[Loc, str]]:
    """Keys given twice in one mapping: YAML keeps the last silently, so an edit to the first does nothing."""
    found: list[tuple[Loc, str]] = []
    stack: list[tuple[Loc, yaml.Node | None]] = [((), root)]
    while stack:
        loc, node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                line = key.start_mark.line + 1
                if key.value in first:
                    found.append(((*loc, key.value), f"given twice (lines {first[key.value]} and {line}); only the last is used: remove one"))
                else:
                    first[key.value] = line
                stack.append(((*loc, key.value), value))
        elif isinstance(node, yaml.SequenceNode):
            stack += [((*loc, i), item) for i, item in enumerate(node.value)]
    return found


def _line_index(root: yaml.Node) -> dict[tuple[Any, ...], int]:
    """Every path in the node tree -> its line (the first of a repeated key, as YAML readers see it)."""
    index: dict[tuple[Any, ...], int] = {}
    stack: list[tuple[tuple[Any, ...], yaml.Node]] = [((), root)]
    while stack:
        loc, node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = (*loc, key.value)
                if isinstance(key, yaml.ScalarNode) and path not in index:
                    index[path] = key.start_mark.line + 1
                    stack.append((path, value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                index[(*loc, i)] = item.start_mark.line + 1
                stack.append(((*loc, i), item))
    return index


_line_of = line_of  # the earlier name


def _did_you_mean(word: Any, choices: Iterable[str], synonyms: dict[str, str] | None = None) -> str:
    guess = suggest(str(word), choices, synonyms) if isinstance(word, str) else None
    return f"did you mean {guess!r}?" if guess is not None else ""


def _describe(schema: type[BaseModel], error: Any, data: Any) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        parent = _strip_tags(error["loc"][:-1], data) or ()
        allowed = _allowed_keys(schema, parent, data)
        guess = _did_you_mean(error["loc"][-1], allowed, KEY_SYNONYMS)
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"unknown key{hint}" + (f"; {guess}" if guess else "")
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", ", ")
        choices = re.findall(r"'([^']*)'", expected)
        guess = _did_you_mean(value, choices)
        return f"{value!r} is not allowed; expected one of {expected}" + (f"; {guess}" if guess else "")
    if kind == "union_tag_invalid":
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        tag = ctx.get("tag")
        choices = [t.strip() for t in expected.split(",")]
        synonym = TYPE_SYNONYMS.get(str(tag).lower())
        if synonym is not None and synonym[0] in choices:
            return f"{tag!r} is not allowed; expected one of {expected}; did you mean {synonym[0]!r}? {synonym[1]}"
        guess = _did_you_mean(tag, choices)
        return f"{tag!r} is not allowed; expected one of {expected}" + (f"; {guess}" if guess else "")
    if kind == "union_tag_not_found":
        return "missing 'type'; every entry needs one"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if isinstance(value, (str, int, float, bool)) and not message.startswith(repr(value)) and str(value) not in message:
        return f"{value!r}: {message}"
    return message
