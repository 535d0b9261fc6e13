"""The bases of every config class, plugins' included: strict models, source and engine bases.

A plugin's config class (beside its code) extends ``SourceBase`` or ``EngineBase`` and sets
``type: Literal["name"]``; the site schema (``config.site``) collects them from the registries.
``resolve_paths`` lets a plugin make its own file paths absolute and report missing ones; ``check``
lets it report what the machine will refuse (``rtaudio config check`` and ``run`` list both).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class LabelRule(StrictModel):
    """One label's decision settings (site ``events.labels.X`` or a source's ``events.labels.X``)."""

    threshold: float | None = Field(None, title="Onset threshold", ge=0, le=1, description="null uses the model's threshold.")
    off_threshold: float | None = Field(None, title="Offset threshold", ge=0, le=1, description="null uses threshold * events.off_ratio.")
    min_duration_s: float | None = Field(None, title="Minimum event duration (s)", ge=0, le=600)
    median_windows: int | None = Field(
        None,
        title="Median smoothing (windows)",
        ge=1,
        le=31,
        description="Odd; null uses the model's for this label (model.json median_windows), else events.median_windows. "
        "1 lets a sound shorter than a window raise an event (a glass break, a gunshot).",
    )
    enabled: bool = Field(True, title="Report this label")

    @field_validator("median_windows")
    @classmethod
    def _odd(cls, value: int | None) -> int | None:
        if value is not None and value % 2 == 0:
            raise ValueError(f"{value} is not allowed; expected an odd number")
        return value


class LabelFilter(StrictModel):
    """Narrows the site's labels for one source."""

    include: list[str] = Field(default_factory=list, title="Only these labels", description="Model labels; empty keeps every site-enabled label.")
    exclude: list[str] = Field(default_factory=list, title="Never these labels", description="Model labels this source never reports.")


class SourceEvents(StrictModel):
    """A source's own per-label overrides; each key set here wins over the site's for this source."""

    labels: dict[str, LabelRule] = Field(default_factory=dict, title="Per-label overrides", description="Keys are model labels; same keys as events.labels.")


class ScheduleLabels(StrictModel):
    """Labels a schedule rule switches."""

    enable: list[str] = Field(default_factory=list, title="Only inside the window", description="These labels are reported only while the schedule is on.")
    disable: list[str] = Field(default_factory=list, title="Not inside the window", description="These labels are not reported while the schedule is on.")


class ScheduleRule(StrictModel):
    """``{schedule: NAME, labels: {enable|disable: [...]}}`` or ``{schedule: NAME, source: enable|disable}``."""

    schedule: str = Field(title="Schedule name", description="A key of the site's schedules.")
    labels: ScheduleLabels | None = Field(None, title="Labels switched by the schedule")
    source: Literal["enable", "disable"] | None = Field(
        None, title="Source switched by the schedule", description="enable: the source publishes only inside the window; disable: it is paused inside it."
    )

    @model_validator(mode="after")
    def _says_something(self) -> ScheduleRule:
        if self.labels is None and self.source is None:
            raise ValueError("says nothing; expected labels: {enable: [...]} or {disable: [...]}, or source: enable|disable")
        return self


class SourceBase(PluginConfig):
    id: SourceId
    enabled: bool = Field(True, title="Enabled", description="A disabled source is validated but not started.")
    gain_db: float = Field(0.0, title="Input gain (dB)", ge=-40, le=40, description="Applied before tagging.")
    calibration_db: float | None = Field(
        None,
        title="Level calibration (dB)",
        ge=-100,
        le=250,
        description="Added to the A-weighted dBFS of the audio before gain_db (RMS 1.0 = 0 dBFS) to give dB SPL in the level topic; "
        "e.g. 120 for a microphone that reads -26 dBFS at 94 dB SPL. null: 0, and levels are published with calibrated: false.",
    )
    min_level_db: float | None = Field(
        None,
        title="Quietest window tagged (dB)",
        ge=-200,
        le=250,
        description="Windows whose A-weighted level (in the level topic's unit: dB SPL when calibrated, else dBFS) is below this "
        "are not tagged (no inference; counted in health windows_gated); null tags every window.",
    )
    silent_after_s: float | None = Field(
        None, title="Silent after (s)", gt=0, le=86400, description="No audio for this long fails health; null uses health.source_silent_s."
    )
    labels: LabelFilter | None = Field(
        None, title="Labels of this source", description="{include: [...], exclude: [...]}; null reports every site-enabled label."
    )
    events: SourceEvents | None = Field(
        None, title="Event overrides of this source", description="{labels: {LABEL: {threshold, off_threshold, min_duration_s, enabled}}}."
    )
    when: list[ScheduleRule] = Field(
        default_factory=list, title="Schedule rules of this source", description="Applied after the site's when: rules; see the top-level when."
    )


class EngineBase(PluginConfig):
    pass
