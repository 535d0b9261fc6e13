"""YAML in, a validated pydantic model out, or every problem at once as ``file:line: path: problem``.

Shared by ``site.yaml`` and ``train.yaml``. ``${VAR}`` / ``${VAR:-default}`` are substituted in
parsed string values (never in comments); an unset variable is a problem like any other. Pydantic's
errors are rewritten for people: discriminator tags and union-branch names are dropped from paths,
an unknown key lists the allowed ones, a literal lists what is allowed, and each line carries the
YAML line of the key it is about.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

Model = TypeVar("Model", bound=BaseModel)

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """Invalid configuration; ``problems`` holds one line per error."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def read_yaml(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    """(parsed mapping, its node tree for line numbers); ConfigError naming the file when unreadable."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level, got {type(data).__name__}"])
    return data, root


def substitute_env(data: Any, missing: list[str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string value; collect unset names in ``missing``.

    Done on parsed values, not raw text, so comments are never touched.
    """
    if isinstance(data, dict):
        return {k: substitute_env(v, missing) for k, v in data.items()}
    if isinstance(data, list):
        return [substitute_env(v, missing) for v in data]
    if not isinstance(data, str):
        return data

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        missing.append(name)
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
        problems = []
        for error in exc.errors():
            loc = _strip_tags(error["loc"], data)
            if loc is None:
                continue  # the error of a union branch (one spec / a list of them) the file did not use
            if error["type"] == "union_tag_invalid":  # reported on the entry; the user wrote the key
                loc = (*loc, "type")
            line = _line_of(yaml_root, loc)
            where = f"{origin}:{line}: " if line else f"{origin}: "
            problems.append(f"{where}{_format_loc(loc)}: {_describe(schema, error, data)}")
        raise ConfigError(problems) from None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


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


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based YAML line of the node at ``loc`` (or its nearest parent)."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
            key = next((k for k, v in node.value if k.value == part), None)
            if key is not None:
                line = key.start_mark.line + 1
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _describe(schema: type[BaseModel], error: Any, data: Any) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        parent = _strip_tags(error["loc"][:-1], data) or ()
        allowed = _allowed_keys(schema, parent, data)
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"unknown key{hint}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", ", ")
        return f"{value!r} is not allowed; expected one of {expected}"
    if kind == "union_tag_invalid":
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"{ctx.get('tag')!r} is not allowed; expected one of {expected}"
    if kind == "union_tag_not_found":
        return "missing 'type'; every entry needs one"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if isinstance(value, (str, int, float, bool)) and not message.startswith(repr(value)) and str(value) not in message:
        return f"{value!r}: {message}"
    return message
