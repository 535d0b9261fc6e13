"""The bases of every config class, plugins' included: strict models, source and engine bases.

A plugin's config class (beside its code) extends ``SourceBase`` or ``EngineBase`` and sets
``type: Literal["name"]``; the site schema (``config.site``) collects them from the registries.
``resolve_paths`` lets a plugin make its own file paths absolute and report missing ones; ``check``
lets it report what the machine will refuse (``rtaudio config check`` and ``run`` list both).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

SampleRate = Literal[8000, 16000, 22050, 32000, 44100, 48000]
SourceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", title="Source id", description="Letters, digits, '-' and '_'; used in MQTT topics.")]


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PluginConfig(StrictModel):
    """A source's or an engine's settings; each subclass adds ``type: Literal["its name"]``."""

    if TYPE_CHECKING:  # declared by each subclass, after the base fields (error messages list keys in order)
        type: str

    def resolve_paths(self, base: Path, where: str) -> list[str]:
        """Make this plugin's relative paths absolute from ``base`` (the config's folder); problems
        found on the way, each starting with ``where`` (e.g. ``site.yaml: sources[0]``)."""
        return []

    def check(self, where: str) -> list[str]:
        """Problems of these settings on this machine, knowable before audio flows (an address that is
        not local, a file that will not load), each ``f"{where}.key: problem"`` so it is reported with the
        key's line; called by ``config.load`` after ``resolve_paths``, for enabled sources and the engine.
        Must be quick, must not raise, and must leave nothing open or bound behind."""
        return []


class SourceBase(PluginConfig):
    id: SourceId
    enabled: bool = Field(True, title="Enabled", description="A disabled source is validated but not started.")
    gain_db: float = Field(0.0, title="Input gain (dB)", ge=-40, le=40, description="Applied before tagging.")


class EngineBase(PluginConfig):
    pass
