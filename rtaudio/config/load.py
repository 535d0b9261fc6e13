"""``site.yaml`` -> a checked ``SiteConfig``: the one way ``run``, ``config check``, ``doctor`` and reload read a site.

Reads the file (size, encoding and aliases checked first: ``loader.read_yaml``), substitutes
``${ENV}``, validates against the schema (``config.site``), resolves relative paths from the file's
folder (each plugin its own) and runs the checks of ``config.check`` against the model and the
machine, plus each plugin's own ``check``. Every problem is reported at once, one line each, as
``file:line: path: problem``, ordered by line: an unset variable is listed with the rest, and where
part of the file fails the schema, the parts that pass are still checked.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import TypeAdapter, ValidationError

from rtaudio.config.base import PluginConfig
from rtaudio.config.check import Problem, machine_problems, model_problems, text_problems
from rtaudio.config.loader import ConfigError, Loc, duplicate_keys, line_of, parse_loc, place, read_yaml, resolve_path, schema_problems, substitute_env
from rtaudio.config.site import SiteConfig
from rtaudio.contract import ContractError, load_model_dir

log = logging.getLogger(__name__)


def load_site_config(path: str | Path, check_model: bool = True, warnings: list[str] | None = None) -> SiteConfig:
    """Read ``site.yaml``: substitute ``${ENV}``, validate, resolve relative paths, check the machine and (unless
    ``check_model`` is off) the model.

    Raises ConfigError listing every problem found. Warnings (a secret file others may read, a
    password sent in clear text, query words the model does not know) are appended to ``warnings``
    as ``file:line: path: warning``, or logged when it is None; they never fail the load.
    """
    path = Path(path)
    origin = str(path)
    data, root = read_yaml(path)
    unset: list[str] = []
    unset_at: list[Loc] = []
    data = substitute_env(data, unset, unset_at)
    env = [
        Problem(loc, f"environment variable {name} is not set (used as ${{{name}}}); set it, or give a default: ${{{name}:-value}}")
        for name, loc in zip(unset, unset_at)
    ]
    found = [Problem(loc, message) for loc, message in duplicate_keys(root)]
    try:
        config, valid, indices = SiteConfig.model_validate(data), set(SiteConfig.model_fields), list(range(len(data["sources"])))
    except ValidationError as exc:
        schema = [Problem(loc, message) for loc, message in schema_problems(SiteConfig, exc, data)]
        found += schema
        config, valid, indices = _salvage(data, [p.loc for p in schema])
    found += _resolve_and_check(config, valid, indices, path.resolve().parent, origin)
    if "mqtt" in valid:
        found += machine_problems(config)
    if check_model and "model" in valid:
        try:
            model = load_model_dir(config.model)
        except ContractError as exc:
            found.append(Problem(("model",), str(exc)))
        else:
            found += model_problems(config, model) + text_problems(config)
    # A key whose ${VAR} is unset is reported once, as that; not again as the empty value's problems.
    found = env + [p for p in found if not any(p.loc[: len(loc)] == loc for loc in unset_at)]
    lines = sorted(((_line(root, p.loc), p) for p in found), key=lambda item: item[0])
    problems = [place(origin, root, p.loc, p.message) for _, p in lines if not p.warning]
    for text in (place(origin, root, p.loc, p.message) for _, p in lines if p.warning):
        if warnings is not None:
            warnings.append(text)
        else:
            log.warning("%s", text)
    if problems:
        raise ConfigError(problems)
    return config


def _line(root: yaml.Node | None, loc: Loc) -> int:
    return line_of(root, loc) or 0


def _salvage(data: dict[str, Any], bad: list[Loc]) -> tuple[SiteConfig, set[str], list[int]]:
    """What of a site that failed the schema can still be checked: each top-level part (and each
    source) validated on its own with its failing keys (``bad``) left out, so they take their
    defaults; a part that still fails is skipped. Returns (config, names of the top-level keys that
    validated or were left to their defaults, the file's index of each source kept)."""
    config = SiteConfig.model_construct()  # type: ignore[call-arg]  # site, model and sources are set below where they validate
    adapter: TypeAdapter[PluginConfig] = TypeAdapter(get_args(SiteConfig.model_fields["sources"].annotation)[0])
    kept: list[PluginConfig] = []
    indices: list[int] = []
    entries = data.get("sources")
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        try:
            kept.append(adapter.validate_python(_prune(entry, _under(bad, ("sources", index)))))
            indices.append(index)
        except ValidationError:
            pass
    config.__dict__["sources"] = kept  # each one valid on its own (ids may repeat: already reported)
    valid: set[str] = set()
    for name, field in SiteConfig.model_fields.items():
        if name == "sources":
            continue
        if name not in data:
            if not field.is_required():
                valid.add(name)
            continue
        value = _prune(data[name], _under(bad, (name,)))
        if value is _DROP:
            continue
        try:
            setattr(config, name, value)  # validate_assignment: this field's own validators
            valid.add(name)
        except ValidationError:
            pass
    return config, valid, indices


_DROP = object()


def _under(locs: list[Loc], prefix: Loc) -> list[Loc]:
    return [loc[len(prefix) :] for loc in locs if loc[: len(prefix)] == prefix]


def _prune(value: Any, locs: list[Loc]) -> Any:
    """``value`` without the parts at ``locs`` (``_DROP`` when ``()`` is among them: all of it)."""
    if not locs:
        return value
    if () in locs:
        return _DROP
    if isinstance(value, dict):
        pruned = {key: _prune(item, _under(locs, (key,))) for key, item in value.items()}
        return {key: item for key, item in pruned.items() if item is not _DROP}
    if isinstance(value, list):
        return [item for item in (_prune(v, _under(locs, (i,))) for i, v in enumerate(value)) if item is not _DROP]
    return value


def _resolve_and_check(config: SiteConfig, valid: set[str], indices: list[int], base: Path, origin: str) -> list[Problem]:
    """Relative paths made absolute from ``base`` (the site file's folder); the plugins' own path and machine problems."""
    lines: list[str] = []
    if "model" in valid:
        config.model = resolve_path(base, config.model)
    for index, source in zip(indices, config.sources):
        where = f"{origin}: sources[{index}]"
        lines += _plugin(source.resolve_paths, base, where)
        if source.enabled:
            lines += _plugin(source.check, where)
    if "engine" in valid:
        lines += _plugin(config.engine.resolve_paths, base, f"{origin}: engine")
        lines += _plugin(config.engine.check, f"{origin}: engine")
    mqtt = config.mqtt if "mqtt" in valid else None
    if mqtt is not None:
        for owner, name in ((mqtt, "password_file"), (mqtt, "outbox_dir"), *((mqtt.tls, n) for n in ("ca", "cert", "key", "key_password_file"))):
            value = getattr(owner, name) if owner is not None else None
            if value is not None:
                setattr(owner, name, resolve_path(base, value))
    http = config.http if "http" in valid else None
    if http is not None and http.token_file is not None:
        http.token_file = resolve_path(base, http.token_file)
    clips = config.clips if "clips" in valid else None
    if clips is not None:
        clips.dir = resolve_path(base, clips.dir)
    return [_as_problem(line, origin) for line in lines]


def _plugin(hook: Any, *args: Any) -> list[str]:
    """A plugin hook's problems; a hook that raises is a problem naming it, not a crash."""
    try:
        return list(hook(*args))
    except Exception as exc:  # a plugin's bug must not hide the rest of the report
        return [f"{args[-1]}: {type(hook.__self__).__name__}.{hook.__name__} failed: {exc!r}"]


def _as_problem(line: str, origin: str) -> Problem:
    """A plugin's ``"site.yaml: sources[0].path: problem"`` -> Problem(("sources", 0, "path"), "problem")."""
    rest = line.removeprefix(f"{origin}: ")
    head, sep, message = rest.partition(": ")
    loc = parse_loc(head) if sep else None
    return Problem(loc, message) if loc is not None else Problem((), rest)
