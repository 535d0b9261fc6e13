"""``site.yaml`` -> a checked ``SiteConfig``: the one way ``run``, ``config check``, ``doctor`` and reload read a site.

Reads the file, substitutes ``${ENV}``, validates against the schema (``config.site``), resolves
relative paths from the file's folder (each plugin its own) and, by default, checks the site
against its model (``config.check``). Every problem is reported at once.
"""

from __future__ import annotations

from pathlib import Path

from rtaudio.config.check import model_problems
from rtaudio.config.loader import ConfigError, read_yaml, resolve_path, substitute_env
from rtaudio.config.site import SiteConfig, validate_site


def load_site_config(path: str | Path, check_model: bool = True) -> SiteConfig:
    """Read ``site.yaml``: substitute ``${ENV}``, validate, resolve relative paths, check the model.

    Raises ConfigError listing every problem found.
    """
    path = Path(path)
    data, root = read_yaml(path)
    missing: list[str] = []
    data = substitute_env(data, missing)
    if missing:
        raise ConfigError([f"{path}: environment variable {name} is not set (used as ${{{name}}})" for name in missing])
    config = validate_site(data, root, str(path))
    base = path.resolve().parent
    problems: list[str] = []
    config.model = resolve_path(base, config.model)
    for index, source in enumerate(config.sources):
        problems += source.resolve_paths(base, f"{path}: sources[{index}]")
    if config.mqtt and config.mqtt.outbox_dir is not None:
        config.mqtt.outbox_dir = resolve_path(base, config.mqtt.outbox_dir)
    problems += config.engine.resolve_paths(base, f"{path}: engine")
    if check_model:
        problems += [f"{path}: {problem}" for problem in model_problems(config)]
    if problems:
        raise ConfigError(problems)
    return config
