"""``site.yaml``: typed, bounded, documented; every error reported at once with its YAML path.

Each source and engine type has its own model with ``type: Literal[...]``; together they
form discriminated unions, so a source is checked against its own fields only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

SampleRate = Literal[8000, 16000, 22050, 32000, 44100, 48000]
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # source ids, query names
SourceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", title="Source id", description="Letters, digits, '-' and '_'; used in MQTT topics.")]


class ConfigError(ValueError):
    """Invalid configuration; ``problems`` holds one line per error."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- sources


class SourceBase(StrictModel):
    id: SourceId
    enabled: bool = Field(True, title="Enabled", description="A disabled source is validated but not started.")
    gain_db: float = Field(0.0, title="Input gain (dB)", ge=-40, le=40, description="Applied before tagging.")


class MicrophoneSource(SourceBase):
    type: Literal["microphone"] = Field(title="Source type")
    device: str | int | None = Field(None, title="Input device", description="PortAudio device index, or a substring of its name; null for the system default.")
    channel: int = Field(0, title="Channel", ge=0, le=63, description="0-based channel of a multi-channel interface; several sources may share one device, one channel each.")
    sample_rate: SampleRate | None = Field(None, title="Native sample rate (Hz)", description="Rate to open the device at; null uses the device default. Resampled to the model rate.")
    blocksize: int = Field(1024, title="Frames per callback", ge=64, le=16384)
    reopen_backoff_max_s: float = Field(30.0, title="Longest reopen backoff (s)", gt=0, le=600)


class RtpSource(SourceBase):
    type: Literal["rtp"] = Field(title="Source type")
    bind: str = Field("0.0.0.0", title="Bind address", description="Local address to receive on.")
    port: int = Field(title="UDP port", ge=1, le=65535)
    payload: Literal["L16", "L24", "PCMU", "PCMA"] = Field("L16", title="RTP payload format", description="L16/L24 big-endian PCM (RFC 3551) at the configured rate; PCMU/PCMA G.711 at 8 kHz.")
    sample_rate: SampleRate = Field(48000, title="Stream sample rate (Hz)", description="For L16/L24; PCMU/PCMA are always 8000.")
    channels: int = Field(1, title="Stream channels", ge=1, le=8, description="Interleaved channels in the payload; mixed down to mono.")
    jitter_ms: int = Field(60, title="Jitter buffer delay (ms)", ge=0, le=2000, description="Packets are reordered within this delay; later ones count as lost.")
    multicast_group: str | None = Field(None, title="Multicast group", description="Join this IPv4 multicast group on bind address.")
    allow_from: list[str] = Field(default_factory=list, title="Allowed senders", description="Peer IP addresses accepted; empty accepts any.")

    @model_validator(mode="after")
    def _g711_rate(self) -> RtpSource:
        if self.payload in ("PCMU", "PCMA") and self.sample_rate != 8000 and "sample_rate" in self.model_fields_set:
            raise ValueError(f"payload {self.payload} is 8000 Hz; sample_rate {self.sample_rate} is not allowed with it")
        return self


class FfmpegSource(SourceBase):
    type: Literal["ffmpeg"] = Field(title="Source type")
    url: str = Field(title="Input URL", min_length=1, description="Anything ffmpeg opens: rtsp://, http://, a file path.")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", title="RTSP transport")
    stall_timeout_s: float = Field(10.0, title="Stall timeout (s)", gt=0, le=600, description="No audio for this long restarts ffmpeg (also catches half-open TCP).")
    restart_backoff_max_s: float = Field(30.0, title="Longest restart backoff (s)", gt=0, le=600)
    extra_args: list[str] = Field(default_factory=list, title="Extra ffmpeg input options", description="Inserted before -i.")
    ffmpeg: str = Field("ffmpeg", title="ffmpeg executable")


class FileSource(SourceBase):
    type: Literal["file"] = Field(title="Source type")
    path: Path = Field(title="Audio file", description="WAV, FLAC or OGG; relative paths are relative to the config file.")
    realtime: bool = Field(True, title="Pace in real time", description="false reads as fast as the pipeline takes it.")
    loop: bool = Field(False, title="Loop", description="Restart at the end of the file.")
    block_s: float = Field(0.05, title="Block length (s)", gt=0, le=2)


SourceConfig = Annotated[Union[MicrophoneSource, RtpSource, FfmpegSource, FileSource], Field(discriminator="type")]


# ---------------------------------------------------------------- engines


class EngineBase(StrictModel):
    pass


class AutoEngine(EngineBase):
    type: Literal["auto"] = Field(title="Engine type", description="Pick the best available backend and log why.")


class OnnxRuntimeEngine(EngineBase):
    type: Literal["onnxruntime"] = Field(title="Engine type")
    providers: list[Literal["CUDAExecutionProvider", "CPUExecutionProvider"]] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        title="Execution providers", description="Tried in order; absent ones are skipped and logged.")
    intra_op_threads: int = Field(0, title="Intra-op threads", ge=0, le=256, description="0 lets ONNX Runtime decide.")


class TorchEngine(EngineBase):
    type: Literal["torch"] = Field(title="Engine type", description="Runs the TorchScript model.pt beside model.onnx (training machines; needs torch).")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", title="Torch device")


class TensorRtEngine(EngineBase):
    type: Literal["tensorrt"] = Field(title="Engine type", description="A TensorRT plan for this GPU (Jetson, NVIDIA GPUs); built from model.onnx on first start when missing, reused after.")
    precision: Literal["fp32", "fp16", "int8"] = Field("fp16", title="Plan precision", description="fp16 suits Jetson; int8 needs calibration audio. The exporter's FP16-unsafe nodes stay fp32.")
    max_batch: int = Field(32, title="Largest batch in the plan", ge=1, le=1024, description="The plan serves batches 1..max_batch; larger ones are split. Match window.max_batch.")
    workspace_mb: int = Field(1024, title="Builder workspace (MB)", ge=16, le=65536, description="Scratch memory TensorRT may use while building and running; lower it on small Jetsons.")
    plan_dir: Path | None = Field(None, title="Plan directory", description="Where plans, their sidecars and caches live; null uses the model directory. Relative to the config file.")
    calibration: Path | None = Field(None, title="INT8 calibration audio", description="Folder of WAV/FLAC/OGG files cut into model windows; required for int8. Relative to the config file.")
    timing_cache: Path | None = Field(None, title="Timing cache file", description="Layer timings reused across builds; null keeps a per-GPU cache in the plan directory.")

    @model_validator(mode="after")
    def _int8_needs_audio(self) -> TensorRtEngine:
        if self.precision == "int8" and self.calibration is None:
            raise ValueError("precision int8 needs calibration: a folder of audio files to calibrate on; or use fp16 or fp32")
        return self


EngineConfig = Annotated[Union[AutoEngine, TensorRtEngine, OnnxRuntimeEngine, TorchEngine], Field(discriminator="type")]


# ---------------------------------------------------------------- processing


class WindowConfig(StrictModel):
    window_s: float | None = Field(None, title="Window (s)", gt=0, le=30, description="null uses the model's window.")
    hop_s: float | None = Field(None, title="Hop (s)", gt=0, le=30, description="null uses the model's hop.")
    max_batch: int = Field(32, title="Largest batch per tick", ge=1, le=1024)
    max_backlog: int = Field(8, title="Windows kept waiting per source", ge=1, le=1024, description="Older due windows are dropped and counted.")


class LabelRule(StrictModel):
    threshold: float | None = Field(None, title="Onset threshold", ge=0, le=1, description="null uses the model's threshold.")
    off_threshold: float | None = Field(None, title="Offset threshold", ge=0, le=1, description="null uses threshold * events.off_ratio.")
    min_duration_s: float | None = Field(None, title="Minimum event duration (s)", ge=0, le=600)
    enabled: bool = Field(True, title="Report this label")


class EventsConfig(StrictModel):
    off_ratio: float = Field(0.7, title="Offset/onset threshold ratio", gt=0, le=1, description="Hysteresis: an event ends when the smoothed score drops below threshold * off_ratio.")
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
    ca: Path | None = Field(None, title="CA certificate file")
    cert: Path | None = Field(None, title="Client certificate file")
    key: Path | None = Field(None, title="Client key file")
    key_password: SecretStr | None = Field(None, title="Key passphrase", description="Use ${ENV} substitution or key_password_file.")
    key_password_file: Path | None = Field(None, title="File holding the key passphrase")
    insecure: bool = Field(False, title="Skip certificate verification", description="Only for self-signed test brokers.")


class MqttConfig(StrictModel):
    broker: str = Field("embedded", title="Broker host", description="Host name or IP, or 'embedded' to start an in-process broker on 127.0.0.1 (demos only).")
    port: int = Field(1883, title="Broker port", ge=1, le=65535)
    protocol: Literal["3.1.1", "5"] = Field("5", title="MQTT protocol version")
    prefix: str = Field("rtaudio", title="Topic prefix", pattern=r"^[^#+]+$")
    client_id: str | None = Field(None, title="Client id", description="null derives rtaudio-{site}.")
    username: str | None = Field(None, title="Username")
    password: SecretStr | None = Field(None, title="Password", description="Use ${ENV} substitution or password_file; never commit it.")
    password_file: Path | None = Field(None, title="File holding the password")
    tls: TlsConfig | None = Field(None, title="TLS", description="null connects without TLS.")
    keepalive_s: int = Field(30, title="Keepalive (s)", ge=5, le=3600)
    clean_start: bool = Field(True, title="Clean start / clean session")
    health_interval_s: float = Field(10.0, title="Health period (s)", ge=0.5, le=3600)
    outbox_dir: Path | None = Field(None, title="Outbox directory", description="Queued messages persist here across restarts; null keeps them in memory.")
    outbox_max_messages: int = Field(10000, title="Outbox capacity (messages)", ge=10, le=10_000_000)
    shutdown_flush_s: float = Field(5.0, title="Flush time at shutdown (s)", ge=0, le=600)
    reconnect_max_s: float = Field(30.0, title="Longest reconnect backoff (s)", ge=1, le=3600)

    def resolved_password(self) -> str | None:
        """The password from the config or its file, if any."""
        return _secret(self.password, self.password_file)


class ConsoleConfig(StrictModel):
    tags: bool = Field(True, title="Print tags")
    events: bool = Field(True, title="Print events")
    captions: bool = Field(True, title="Print captions")


class CaptionsConfig(StrictModel):
    every_s: float = Field(10.0, title="Caption period (s)", ge=1, le=3600,
                           description="Per source, in that source's audio time (a file read faster than real time keeps the spacing). "
                                       "Each caption covers the model's caption window: the last extra.text.caption_window_s seconds "
                                       "(e.g. 4 s) of that source's audio.")
    sources: list[SourceId] = Field(default_factory=list, title="Captioned sources", description="Source ids; empty captions every enabled source.")
    max_pending: int = Field(4, title="Caption jobs kept waiting", ge=1, le=1024, description="When full, the oldest job is dropped and counted (health captions_dropped).")
    threads: int = Field(1, title="Caption threads", ge=1, le=64, description="ONNX Runtime intra-op threads of the caption decoder; it runs beside tagging, on the CPU.")


class QueryRule(StrictModel):
    text: str = Field(title="Query text", min_length=1, max_length=500, description="Free text, e.g. 'water dripping or leaking'; words the model never saw in training are ignored (logged at start).")
    threshold: float | None = Field(None, title="Onset threshold (cosine)", ge=-1, le=1, description="Cosine similarity of window and text; null uses the model's extra.text.query_threshold (0.5 if absent).")
    off_threshold: float | None = Field(None, title="Offset threshold (cosine)", ge=-1, le=1, description="null uses threshold * events.off_ratio (never above threshold).")
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
    engine: EngineConfig = Field(default_factory=lambda: AutoEngine(type="auto"), title="Inference engine")
    window: WindowConfig = Field(default_factory=WindowConfig, title="Windowing and batching")
    sources: list[SourceConfig] = Field(title="Audio sources", min_length=1, max_length=256)
    events: EventsConfig = Field(default_factory=EventsConfig, title="Event detection")
    tags: TagsConfig = Field(default_factory=TagsConfig, title="Tag messages")
    mqtt: MqttConfig | None = Field(default_factory=MqttConfig, title="MQTT", description="null disables MQTT.")
    console: ConsoleConfig = Field(default_factory=ConsoleConfig, title="Console output")
    captions: CaptionsConfig | None = Field(None, title="Captions", description="null turns captions off. Needs a model with caption heads (caption_*.onnx, tokenizer.json); "
                                                   "published on {prefix}/{site}/{source}/caption.")
    queries: dict[str, QueryRule] = Field(default_factory=dict, title="Free-text queries",
                                          description="name -> text, or name -> {text, threshold, ...}. Each query is an event label of its own "
                                                      "(same events topic, with a 'query' field); names are letters, digits, '-' and '_' and may not "
                                                      "be a model label. Needs a model with an audio-text space (text_encoder.onnx, audio_text.onnx, vocab.json).")

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

    @model_validator(mode="after")
    def _unique_ids(self) -> SiteConfig:
        seen: set[str] = set()
        for source in self.sources:
            if source.id in seen:
                raise ValueError(f"source id {source.id!r} is used twice; ids must be unique")
            seen.add(source.id)
        if self.captions is not None:
            unknown = [sid for sid in self.captions.sources if sid not in seen]
            if unknown:
                raise ValueError(f"captions.sources: {', '.join(map(repr, unknown))} not a source id; expected one of {', '.join(sorted(seen))}")
        return self

    def captioned_sources(self) -> list[str]:
        """Ids of the enabled sources that get captions (none when captions are off)."""
        if self.captions is None:
            return []
        wanted = set(self.captions.sources)
        return [s.id for s in self.sources if s.enabled and (not wanted or s.id in wanted)]

    def active_queries(self) -> dict[str, QueryRule]:
        """The enabled queries, by name."""
        return {name: rule for name, rule in self.queries.items() if rule.enabled}


# ---------------------------------------------------------------- loading


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute_env(data: Any, missing: list[str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string value; collect unset names.

    Done on parsed values, not raw text, so comments are never touched.
    """
    if isinstance(data, dict):
        return {k: _substitute_env(v, missing) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute_env(v, missing) for v in data]
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


def _secret(value: SecretStr | None, file: Path | None) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return file.read_text().strip()
    return None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _strip_tags(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Drop the discriminator tags pydantic inserts into union locations."""
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and isinstance(part, str) and node.get("type") == part:
            continue
        out.append(part)
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    return tuple(out)


def _has(node: dict | list, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


def _allowed_keys(loc: tuple[Any, ...], data: Any) -> list[str]:
    """Field names of the model that sits at ``loc`` (the parent of an unknown key)."""
    annotation: Any = SiteConfig
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
    from typing import get_args

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


def _describe(error: dict[str, Any], data: Any) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(_strip_tags(error["loc"][:-1], data), data)
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
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(value, (str, int, float, bool)) and not message.startswith(repr(value)) and str(value) not in message:
        return f"{value!r}: {message}"
    return message


def validate_site(data: Any, yaml_root: yaml.Node | None = None, origin: str = "config") -> SiteConfig:
    """Validate parsed YAML; raise ConfigError with every problem, one line each."""
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = _strip_tags(error["loc"], data)
            if error["type"] == "union_tag_invalid":  # reported on the entry; the user wrote the key
                loc = (*loc, "type")
            line = _line_of(yaml_root, loc)
            where = f"{origin}:{line}: " if line else f"{origin}: "
            problems.append(f"{where}{_format_loc(loc)}: {_describe(error, data)}")
        raise ConfigError(problems) from None


def load_site_config(path: str | Path, check_model: bool = True) -> SiteConfig:
    """Read ``site.yaml``: substitute ``${ENV}``, validate, resolve relative paths, check the model.

    Raises ConfigError listing every problem found.
    """
    from rtaudio.contract import ContractError, load_model_dir

    path = Path(path)
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
    missing: list[str] = []
    data = _substitute_env(data, missing)
    if missing:
        raise ConfigError([f"{path}: environment variable {name} is not set (used as ${{{name}}})" for name in missing])
    config = validate_site(data, root, str(path))
    base = path.resolve().parent
    problems: list[str] = []
    config.model = _resolve(base, config.model)
    for index, source in enumerate(config.sources):
        if isinstance(source, FileSource):
            source.path = _resolve(base, source.path)
            if not source.path.is_file():
                problems.append(f"{path}: sources[{index}].path: {source.path} does not exist")
    if config.mqtt and config.mqtt.outbox_dir is not None:
        config.mqtt.outbox_dir = _resolve(base, config.mqtt.outbox_dir)
    if isinstance(config.engine, TensorRtEngine):
        problems += _resolve_tensorrt_paths(config.engine, base, path)
    if check_model:
        try:
            labels = load_model_dir(config.model).info.labels
        except ContractError as exc:
            problems.append(f"{path}: model: {exc}")
        else:
            problems += [f"{path}: events.labels.{name}: not a label of the model; expected one of {', '.join(labels)}"
                         for name in config.events.labels if name not in labels]
            problems += [f"{path}: queries.{name}: the name is a label of the model; events would clash, pick another name"
                         for name in config.queries if name in labels]
            problems += [f"{path}: {problem}" for problem in text_head_problems(config)]
    if problems:
        raise ConfigError(problems)
    return config


def text_head_problems(config: SiteConfig) -> list[str]:
    """Why the model cannot serve the configured captions/queries (missing text-head files); empty when it can."""
    from rtaudio.runtime.captions import missing_caption_files, missing_query_files

    problems = []
    if config.captions is not None and (missing := missing_caption_files(config.model)):
        problems.append(f"captions: model {config.model} has no caption decoder ({', '.join(missing)} missing); retrain with captions: in train.yaml")
    if config.active_queries() and (missing := missing_query_files(config.model)):
        problems.append(f"queries: model {config.model} has no audio-text space ({', '.join(missing)} missing); retrain with captions: in train.yaml")
    return problems


def _resolve_tensorrt_paths(engine: TensorRtEngine, base: Path, origin: Path) -> list[str]:
    """Make the TensorRT paths absolute; report a calibration folder that does not exist."""
    for field in ("plan_dir", "calibration", "timing_cache"):
        value = getattr(engine, field)
        if value is not None:
            setattr(engine, field, _resolve(base, value))
    if engine.calibration is not None and not engine.calibration.is_dir():
        return [f"{origin}: engine.calibration: {engine.calibration} is not a directory; expected a folder of audio files"]
    return []


def _resolve(base: Path, value: Path) -> Path:
    value = value.expanduser()
    return value if value.is_absolute() else base / value
