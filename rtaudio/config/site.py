"""The site schema (``site.yaml``).

The ``sources`` and ``engine`` unions are gathered from the plugin registries
(``runtime.sources``, ``runtime.engines``): each plugin's config class lives beside its code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from rtaudio.config.base import EngineBase, LabelRule, ScheduleRule, SourceBase, SourceId, StrictModel
from rtaudio.config.loader import secret_value, validate
from rtaudio.runtime.engines import engine_configs
from rtaudio.runtime.engines.base import AutoConfig
from rtaudio.runtime.sources import source_configs

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # query names

if TYPE_CHECKING:  # the checker sees the bases; pydantic sees every registered plugin, told apart by ``type``
    SourceConfig = SourceBase
    EngineConfig = EngineBase
else:
    SourceConfig = Annotated[Union[source_configs()], Field(discriminator="type")]  # noqa: UP007 (a tuple of classes: only Union[] takes one)
    EngineConfig = Annotated[Union[engine_configs()], Field(discriminator="type")]  # noqa: UP007


class WindowConfig(StrictModel):
    window_s: float | None = Field(None, title="Window (s)", gt=0, le=30, description="null uses the model's window.")
    hop_s: float | None = Field(None, title="Hop (s)", gt=0, le=30, description="null uses the model's hop.")
    max_batch: int = Field(32, title="Largest batch per tick", ge=1, le=1024)
    max_backlog: int = Field(8, title="Windows kept waiting per source", ge=1, le=1024, description="Older due windows are dropped and counted.")


_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$|^24:00$"
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAYS: list[Day] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class ScheduleConfig(StrictModel):
    """A named weekly time window, e.g. ``{days: [mon, tue], from: "22:00", to: "06:00", timezone: Europe/Berlin}``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    days: list[Day] = Field(default_factory=lambda: list(ALL_DAYS), title="Days", description="The days a window starts on; default every day.", min_length=1)
    from_: str = Field(alias="from", title="From (HH:MM or HH:MM:SS)", description="Local time the window opens, 24 h clock.")
    to: str = Field(title="To (HH:MM or HH:MM:SS)", description="Local time it closes; at or before from, it ends the next day (overnight); 24:00 is midnight.")
    timezone: str | None = Field(
        None,
        title="Time zone",
        description="Required: an IANA name, e.g. Europe/Berlin or UTC (daylight saving follows it); checked by config check.",
    )

    @field_validator("from_", "to")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not re.fullmatch(_HHMM, value):
            raise ValueError(f"{value!r} is not a time of day; expected HH:MM or HH:MM:SS on the 24 h clock, e.g. '22:00' or '06:30:00' ('24:00' for midnight)")
        return value

    @field_validator("to")
    @classmethod
    def _not_empty(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("from_") == value:
            raise ValueError(f"{value!r} equals from, an empty window; expected another time (for all day, from: '00:00', to: '24:00')")
        return value


class PrivacyConfig(StrictModel):
    private_labels: list[str] = Field(
        default_factory=list,
        title="Private labels",
        description="Model labels never published on any topic (name and scores); while one is active on a source, that source's "
        "captions are withheld and its free-text queries that name the label's words are not published. See docs/privacy.md.",
    )


class EventsConfig(StrictModel):
    off_ratio: float = Field(
        0.7,
        title="Offset/onset threshold ratio",
        gt=0,
        le=1,
        description="Hysteresis: an event ends when the smoothed score drops below threshold * off_ratio.",
    )
    min_duration_s: float = Field(0.0, title="Minimum event duration (s)", ge=0, le=600, description="Shorter events are suppressed (never published).")
    median_windows: int = Field(3, title="Median smoothing (windows)", ge=1, le=31, description="Odd number of windows the score is median-filtered over.")
    labels: dict[str, LabelRule] = Field(default_factory=dict, title="Per-label overrides", description="Keys are model labels.")

    @field_validator("median_windows")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"{value} is not allowed; expected an odd number")
        return value


class TagsConfig(StrictModel):
    floor: float = Field(0.1, title="Reporting floor", ge=0, le=1, description="Labels scoring below this are left out of tag messages.")
    top_k: int = Field(5, title="Most labels per message", ge=1, le=1000)
    min_interval_s: float = Field(0.0, title="Minimum interval between tag messages (s)", ge=0, le=3600, description="Per source; 0 publishes every window.")


class TlsConfig(StrictModel):
    ca: Path | None = Field(None, title="CA certificate file", description="PEM; null trusts the system's CAs. Relative to the config file.")
    cert: Path | None = Field(None, title="Client certificate file", description="PEM, for mutual TLS. Relative to the config file.")
    key: Path | None = Field(None, title="Client key file", description="PEM; null when cert holds the key too. Relative to the config file.")
    key_password: SecretStr | None = Field(None, title="Key passphrase", description="Use ${ENV} substitution or key_password_file.")
    key_password_file: Path | None = Field(
        None, title="File holding the key passphrase", description="Relative to the config file; keep it private (mode 0600 or 0640)."
    )
    insecure: bool = Field(False, title="Skip certificate verification", description="Only for self-signed test brokers.")


class MqttConfig(StrictModel):
    broker: str = Field("embedded", title="Broker host", description="Host name or IP, or 'embedded' to start an in-process broker on 127.0.0.1 (demos only).")
    port: int = Field(1883, title="Broker port", ge=1, le=65535)
    protocol: Literal["3.1.1", "5"] = Field("5", title="MQTT protocol version")
    prefix: str = Field("rtaudio", title="Topic prefix", pattern=r"^[^#+]+$")
    client_id: str | None = Field(None, title="Client id", description="null derives rtaudio-{site}.")
    username: str | None = Field(None, title="Username")
    password: SecretStr | None = Field(None, title="Password", description="Use ${ENV} substitution or password_file; never commit it.")
    password_file: Path | None = Field(None, title="File holding the password", description="Relative to the config file; keep it private (mode 0600 or 0640).")
    tls: TlsConfig | None = Field(None, title="TLS", description="null connects without TLS.")
    keepalive_s: int = Field(30, title="Keepalive (s)", ge=5, le=3600)
    clean_start: bool = Field(True, title="Clean start / clean session")
    health_interval_s: float = Field(10.0, title="Health period (s)", ge=0.5, le=3600)
    outbox_dir: Path | None = Field(None, title="Outbox directory", description="Queued messages persist here across restarts; null keeps them in memory.")
    outbox_max_messages: int = Field(10000, title="Outbox capacity (messages)", ge=10, le=10_000_000)
    shutdown_flush_s: float = Field(5.0, title="Flush time at shutdown (s)", ge=0, le=600)
    reconnect_max_s: float = Field(30.0, title="Longest reconnect backoff (s)", ge=1, le=3600)

    @field_validator("broker")
    @classmethod
    def _host_only(cls, value: str) -> str:
        """A host name or IP: a URL or ``host:port`` here is the commonest MQTT config mistake."""
        if not value.strip():
            raise ValueError("empty; expected a host name or IP address, or 'embedded'")
        if "://" in value or "/" in value:
            parts = urlsplit(value if "://" in value else f"//{value}")
            tls = parts.scheme.lower() in ("mqtts", "ssl", "tls", "wss", "https", "mqtt+ssl", "tcps")
            try:
                port = parts.port or (8883 if tls else 1883)
            except ValueError:
                port = 8883 if tls else 1883
            fix = f"broker: {parts.hostname or 'HOST'}`, `port: {port}`" + (", `tls: {}`" if tls else "")
            raise ValueError(f"{value!r} is a URL; expected a host name or IP address only: write `{fix}")
        host, sep, port_text = value.rpartition(":")
        if sep and host and ":" not in host and port_text.isdigit():
            raise ValueError(f"{value!r} holds a port; expected a host name or IP address only: write `broker: {host}`, `port: {port_text}`")
        return value

    def resolved_password(self) -> str | None:
        """The password from the config or its file, if any."""
        return secret_value(self.password, self.password_file)


class HomeAssistantConfig(StrictModel):
    discovery: bool = Field(
        False,
        title="Publish Home Assistant discovery",
        description="One HA device per enabled source: a binary_sensor per reported label and enabled query (on its state topic), "
        "a sound level sensor, a caption sensor for captioned sources; retained, sent again when HA restarts, and cleared when a "
        "source or label goes away. Needs mqtt.",
    )
    prefix: str = Field("homeassistant", title="Discovery prefix", pattern=r"^[^#+]+$", description="HA's discovery_prefix (its MQTT integration setting).")


class ControlConfig(StrictModel):
    enabled: bool = Field(
        False,
        title="Accept commands over MQTT",
        description="Subscribe {prefix}/{site}/set for JSON commands (enable or disable a source or label, change a threshold), each acknowledged "
        "on {prefix}/{site}/control/ack. Changes last until a reload or restart (site.yaml is not written). Restrict who may publish to set "
        "with the broker's ACL (docs/mqtt.md). Needs mqtt.",
    )
    max_pending: int = Field(64, title="Commands waiting (most)", ge=1, le=10000, description="Commands beyond this wait are refused with an error ack.")


class ConsoleConfig(StrictModel):
    tags: bool = Field(True, title="Print tags")
    events: bool = Field(True, title="Print events")
    captions: bool = Field(True, title="Print captions")


class CaptionsConfig(StrictModel):
    every_s: float = Field(
        10.0,
        title="Caption period (s)",
        ge=1,
        le=3600,
        description="Per source, in that source's audio time (a file read faster than real time keeps the spacing). "
        "Each caption covers the model's caption window: the last extra.text.caption_window_s seconds "
        "(e.g. 4 s) of that source's audio.",
    )
    sources: list[SourceId] = Field(default_factory=list, title="Captioned sources", description="Source ids; empty captions every enabled source.")
    max_pending: int = Field(
        4, title="Caption jobs kept waiting", ge=1, le=1024, description="When full, the oldest job is dropped and counted (health captions_dropped)."
    )
    threads: int = Field(
        1, title="Caption threads", ge=1, le=64, description="ONNX Runtime intra-op threads of the caption decoder; it runs beside tagging, on the CPU."
    )


class LevelConfig(StrictModel):
    enabled: bool = Field(True, title="Publish sound levels", description="Per source on {prefix}/{site}/{source}/level: A-weighted Leq, Lmax (fast) and L90.")
    interval_s: float = Field(10.0, title="Level interval (s)", ge=1, le=3600, description="Each level message covers this much of the source's audio.")


class HttpConfig(StrictModel):
    listen: str = Field(
        "127.0.0.1:9108",
        title="Listen address (host:port)",
        description="The status page (/), /metrics, /healthz, /readyz and /clips/. Loopback by default; any other address "
        "(e.g. 0.0.0.0:9108) needs token or token_file, else config check refuses it. IPv6 as [::1]:9108.",
    )
    token: SecretStr | None = Field(
        None,
        title="Access token",
        description="Required on every request except /healthz and /readyz when set: as 'Authorization: Bearer TOKEN', or as the "
        "password of HTTP basic auth (browsers ask for it; any user name). Use ${ENV} substitution or token_file.",
    )
    token_file: Path | None = Field(None, title="File holding the token", description="Relative to the config file; keep it private (mode 0600 or 0640).")
    health_open: bool = Field(
        True, title="/healthz and /readyz without the token", description="For Docker, systemd and load balancers; they reveal check names and counts only."
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_listen(value)
        return value

    def resolved_token(self) -> str | None:
        """The token from the config or its file, if any."""
        return secret_value(self.token, self.token_file)


def split_listen(value: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> (host, port); ValueError naming the allowed forms."""
    host, sep, port_text = value.rpartition(":")
    v6 = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if v6 else host
    ok_host = re.fullmatch(r"[0-9A-Fa-f:.]+" if v6 else r"[A-Za-z0-9.-]+", host) is not None
    if not sep or not ok_host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{value!r} is not host:port; expected e.g. '127.0.0.1:9108', '0.0.0.0:9108' or '[::1]:9108' (port 1-65535)")
    return host, int(port_text)


class HealthConfig(StrictModel):
    source_silent_s: float = Field(
        30.0, title="Source silent after (s)", gt=0, le=86400, description="No audio from a source for this long fails health (a source's silent_after_s wins)."
    )
    engine_failing_s: float = Field(
        30.0, title="Engine failing after (s)", gt=0, le=86400, description="Inference batches failing with none succeeding for this long fails health."
    )
    mqtt_down_s: float = Field(
        120.0, title="MQTT disconnected after (s)", gt=0, le=86400, description="The broker unreachable for this long fails health (with mqtt configured)."
    )
    outbox_max: int = Field(
        5000, title="Outbox depth limit (messages)", ge=1, le=10_000_000, description="More MQTT messages than this waiting to be sent fails health."
    )
    watchdog: bool = Field(
        True,
        title="Feed the systemd watchdog",
        description="Under systemd with WatchdogSec (NOTIFY_SOCKET and WATCHDOG_USEC set), send WATCHDOG=1 only while every check passes, "
        "so systemd restarts a service whose health stays failing for WatchdogSec.",
    )


ClipFormat = Literal["flac", "wav"]


class ClipsConfig(StrictModel):
    dir: Path = Field(
        title="Clips directory", description="Relative to the config file; created when missing. Unwritable: clips are dropped and counted, nothing else stops."
    )
    labels: list[str] = Field(
        title="Clipped labels", min_length=1, description="Model labels or query names whose events are saved; never a private label (config check refuses it)."
    )
    pre_s: float = Field(2.0, title="Pre-roll (s)", ge=0, le=60, description="Audio kept before the onset.")
    post_s: float = Field(3.0, title="Post-roll (s)", ge=0, le=60, description="Audio kept after the offset; the file is written this long after the offset.")
    max_s: float = Field(120.0, title="Longest clip (s)", gt=0, le=3600, description="A longer event's clip ends here (duration_s in the offset says so).")
    format: ClipFormat = Field("flac", title="File format", description="flac (lossless, about half the size) or wav (16-bit PCM).")
    max_age_days: float | None = Field(30.0, title="Keep clips for (days)", gt=0, le=36500, description="Older clips are deleted; null keeps them.")
    max_total_mb: float | None = Field(
        1024.0, title="Most disk for clips (MB)", gt=0, le=10_000_000, description="Oldest clips are deleted first past this; null: no limit."
    )


class QueryRule(StrictModel):
    text: str = Field(
        title="Query text",
        min_length=1,
        max_length=500,
        description="Free text, e.g. 'water dripping or leaking'; words the model never saw in training are ignored (logged at start).",
    )
    threshold: float | None = Field(
        None,
        title="Onset threshold (cosine)",
        ge=-1,
        le=1,
        description="Cosine similarity of window and text; null uses the model's extra.text.query_threshold (0.5 if absent).",
    )
    off_threshold: float | None = Field(
        None, title="Offset threshold (cosine)", ge=-1, le=1, description="null uses threshold * events.off_ratio (never above threshold)."
    )
    min_duration_s: float | None = Field(None, title="Minimum event duration (s)", ge=0, le=600, description="null uses events.min_duration_s.")
    enabled: bool = Field(True, title="Report this query")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty query text is not allowed; expected a few words describing the sound")
        return value.strip()


class SiteConfig(StrictModel):
    site: str = Field(title="Site id", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Names the MQTT topic tree.")
    model: Path = Field(title="Model directory", description="engines/NAME/ with model.onnx and model.json; relative to the config file.")
    engine: EngineConfig = Field(default_factory=lambda: AutoConfig(type="auto"), title="Inference engine")
    window: WindowConfig = Field(default_factory=WindowConfig, title="Windowing and batching")
    sources: list[SourceConfig] = Field(title="Audio sources", min_length=1, max_length=256)
    events: EventsConfig = Field(default_factory=EventsConfig, title="Event detection")
    tags: TagsConfig = Field(default_factory=TagsConfig, title="Tag messages")
    mqtt: MqttConfig | None = Field(default_factory=MqttConfig, title="MQTT", description="null disables MQTT.")
    console: ConsoleConfig = Field(default_factory=ConsoleConfig, title="Console output")
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig, title="Home Assistant", description="MQTT discovery of every source as a device (off by default)."
    )
    control: ControlConfig = Field(default_factory=ControlConfig, title="Remote control", description="Commands over MQTT (off by default).")
    level: LevelConfig = Field(
        default_factory=LevelConfig,
        title="Sound level",
        description="Per-source A-weighted level messages; a source's calibration_db makes them dB SPL, its min_level_db skips quiet windows.",
    )
    captions: CaptionsConfig | None = Field(
        None,
        title="Captions",
        description="null turns captions off. Needs a model with caption heads (caption_*.onnx, tokenizer.json); "
        "published on {prefix}/{site}/{source}/caption.",
    )
    queries: dict[str, QueryRule] = Field(
        default_factory=dict,
        title="Free-text queries",
        description="name -> text, or name -> {text, threshold, ...}. Each query is an event label of its own "
        "(same events topic, with a 'query' field); names are letters, digits, '-' and '_' and may not "
        "be a model label. Needs a model with an audio-text space (text_encoder.onnx, audio_text.onnx, vocab.json).",
    )
    schedules: dict[str, ScheduleConfig] = Field(
        default_factory=dict,
        title="Schedules",
        description="name -> {days, from, to, timezone}: named weekly windows that when: rules (site or source) refer to.",
    )
    when: list[ScheduleRule] = Field(
        default_factory=list,
        title="Schedule rules (every source)",
        description="[{schedule: NAME, labels: {disable: [...]}}] switches labels off inside the window; labels: {enable: [...]} reports them "
        "only inside it; source: disable pauses sources inside it, source: enable runs them only inside it. A source's own when: adds to these. "
        "Open events of a label switched off end at the transition (offset reason 'schedule'). Rules never report a label that "
        "events.labels, the source's labels or privacy leave out.",
    )
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig, title="Privacy")
    http: HttpConfig | None = Field(
        None, title="HTTP server", description="Status page, Prometheus /metrics, /healthz and /readyz, event clips; null (the default) serves nothing."
    )
    health: HealthConfig = Field(
        default_factory=HealthConfig,
        title="Health checks",
        description="What fails /healthz, the systemd watchdog and the health message's failing list (docs/metrics.md).",
    )
    clips: ClipsConfig | None = Field(None, title="Event clips", description="Save pre-roll + event + post-roll audio of chosen labels; null saves none.")

    @field_validator("engine", mode="before")
    @classmethod
    def _engine_shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @field_validator("queries", mode="before")
    @classmethod
    def _query_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {name: {"text": rule} if isinstance(rule, str) else rule for name, rule in value.items()}
        return value

    @field_validator("queries")
    @classmethod
    def _query_names(cls, value: dict[str, QueryRule]) -> dict[str, QueryRule]:
        bad = [name for name in value if not _NAME.fullmatch(str(name))]
        if bad:
            raise ValueError(f"query name(s) {', '.join(map(repr, bad))} not allowed; expected 1-64 letters, digits, '-' and '_'")
        return value

    # Field validators, not a model validator: each error then carries the path of its key (and
    # its line), and every other part of the file still validates (see ``config.load``).
    @field_validator("sources")
    @classmethod
    def _unique_ids(cls, value: list[SourceConfig]) -> list[SourceConfig]:
        seen: set[str] = set()
        for source in value:
            if source.id in seen:
                raise ValueError(f"source id {source.id!r} is used twice; ids must be unique")
            seen.add(source.id)
        return value

    @field_validator("captions")
    @classmethod
    def _captioned_ids(cls, value: CaptionsConfig | None, info: ValidationInfo) -> CaptionsConfig | None:
        if value is None or "sources" not in info.data:  # no valid sources: reported on their own
            return value
        ids = [source.id for source in info.data["sources"]]
        unknown = [sid for sid in value.sources if sid not in ids]
        if unknown:
            raise ValueError(f"sources: {', '.join(map(repr, unknown))} not a source id; expected one of {', '.join(sorted(ids))}")
        return value

    def captioned_sources(self) -> list[str]:
        """Ids of the enabled sources that get captions (none when captions are off)."""
        if self.captions is None:
            return []
        wanted = set(self.captions.sources)
        return [s.id for s in self.sources if s.enabled and (not wanted or s.id in wanted)]

    def active_queries(self) -> dict[str, QueryRule]:
        """The enabled queries, by name."""
        return {name: rule for name, rule in self.queries.items() if rule.enabled}


def validate_site(data: Any, yaml_root: Any = None, origin: str = "config") -> SiteConfig:
    """Validate parsed YAML; raise ConfigError with every problem, one line each."""
    return validate(SiteConfig, data, yaml_root, origin)
