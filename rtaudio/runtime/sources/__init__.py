"""Audio sources; every module in this package registers its ``Source`` subclass (and, through it,
its config class) on import, so a new source type is one new file here."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from rtaudio.config.base import SourceBase
from rtaudio.runtime.health import SourceHealth
from rtaudio.runtime.sources.base import Resampler, Sink, Source

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")


def source_configs() -> tuple[type[SourceBase], ...]:
    """Every registered source's config class, by type name (the site schema's ``sources`` union)."""
    return tuple(Source.registry[key].config_class for key in sorted(Source.registry))


def create_source(config: Any, sample_rate: int, sink: Sink, health: SourceHealth | None = None) -> Source:
    """Build the registered source for ``config.type``."""
    try:
        cls = Source.registry[config.type]
    except KeyError:
        raise ValueError(f"unknown source type {config.type!r}; expected one of {', '.join(sorted(Source.registry))}") from None
    return cls(config, sample_rate, sink, health)


__all__ = ["Resampler", "Sink", "Source", "create_source", "source_configs"]
