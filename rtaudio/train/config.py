"""``train.yaml``: the data specs, the model, the schedule, augmentation and fine-tuning.

Every model forbids unknown keys and bounds its fields; ``load_train_config`` reports all
errors at once with their YAML paths. Labels are not configured: they come from the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from rtaudio.config.loader import ConfigError, read_yaml, substitute_env, validate
from rtaudio.model.config import ModelConfig


class TrainConfigError(ConfigError):
    """Invalid ``train.yaml``; ``problems`` holds one line per error."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- data


class SplitFractions(Strict):
    val_fraction: float = Field(
        default=0.1, title="Validation share", ge=0, lt=1, description="For items without a split: share put in 'val' by a hash of their name."
    )
    test_fraction: float = Field(
        default=0.1, title="Test share", ge=0, lt=1, description="For items without a split: share put in 'test' by a hash of their name."
    )

    @model_validator(mode="after")
    def _fit(self) -> SplitFractions:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction} leaves nothing to train on; keep it below 1")
        return self


class ManifestData(SplitFractions):
    """A CSV with columns ``path``, ``labels`` (';'-separated), optional ``split`` and ``caption``."""

    type: Literal["manifest"] = Field(title="Data type")
    path: Path = Field(title="Manifest CSV", description="Audio paths inside it are relative to the CSV's folder.")


class Fsd50kData(Strict):
    """FSD50K as distributed: FSD50K.ground_truth/{dev,eval}.csv, FSD50K.{dev,eval}_audio/."""

    type: Literal["fsd50k"] = Field(title="Data type")
    root: Path = Field(title="FSD50K folder")


class Esc50Data(Strict):
    """ESC-50 as distributed: meta/esc50.csv and audio/; folds choose the splits."""

    type: Literal["esc50"] = Field(title="Data type")
    root: Path = Field(title="ESC-50 folder")
    val_fold: int = Field(default=4, title="Validation fold", ge=1, le=5)
    test_fold: int = Field(default=5, title="Test fold", ge=1, le=5)

    @model_validator(mode="after")
    def _distinct(self) -> Esc50Data:
        if self.val_fold == self.test_fold:
            raise ValueError(f"val_fold and test_fold are both {self.val_fold}; choose two different folds")
        return self


class SyntheticData(SplitFractions):
    """Building scenes from ``rtaudio.train.synth``, cut into labelled windows (in memory, deterministic)."""

    type: Literal["synthetic"] = Field(title="Data type")
    scenes: int = Field(default=40, title="Scenes", ge=1, le=100000)
    seed: int = Field(default=0, title="Seed", ge=0)
    duration_s: float = Field(default=10.0, title="Scene length (s)", ge=1, le=60)
    window_s: float = Field(default=1.0, title="Window cut from scenes (s)", gt=0, le=30)
    hop_s: float = Field(default=0.5, title="Hop between windows (s)", gt=0, le=30)
    sample_rate: int = Field(default=16000, title="Sample rate (Hz)", ge=8000, le=48000)
    labels: list[str] | None = Field(default=None, title="Labels", description="A subset of the generator's labels; null for all.")
    names: dict[str, str] = Field(
        default_factory=dict,
        title="Label renames",
        description="Generator label -> the label the model learns, e.g. {dog_bark: dog} to join a real corpus's names.",
    )
    min_heard_s: float = Field(default=0.25, title="Shortest audible stretch that labels a window (s)", gt=0, le=10)
    captions_per_clip: int = Field(
        default=3, title="Captions per window", ge=0, le=20, description="Phrasings of each window's part of the scene; 0: no captions."
    )
    caption_window_s: float | None = Field(
        default=4.0, title="Caption clips cut from scenes (s)", gt=0, le=60, description="Longer caption-only clips for the caption decoder; null: none."
    )
    caption_hop_s: float = Field(default=2.0, title="Hop between caption clips (s)", gt=0, le=60)


class AudioCapsData(Strict):
    """AudioCaps as on GitHub: {train,val,test}.csv (audiocap_id, youtube_id, start_time, caption); audio you fetched."""

    type: Literal["audiocaps"] = Field(title="Data type")
    root: Path = Field(title="AudioCaps folder", description="Holds train.csv, val.csv and test.csv; missing ones are skipped.")
    audio: str = Field(
        default="{split}/{youtube_id}_{start_time}.wav",
        title="Audio path pattern",
        min_length=1,
        max_length=300,
        description="Relative to root; fields {split}, {youtube_id}, {start_time}, {audiocap_id} (the clip's first caption's id).",
    )

    @model_validator(mode="after")
    def _pattern(self) -> AudioCapsData:
        fields = ("split", "youtube_id", "start_time", "audiocap_id")
        try:
            self.audio.format(**{f: "x" for f in fields})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"audio pattern {self.audio!r} is not usable ({type(exc).__name__}: {exc}); allowed fields: {', '.join('{' + f + '}' for f in fields)}"
            ) from exc
        if "{youtube_id}" not in self.audio and "{audiocap_id}" not in self.audio:
            raise ValueError(f"audio pattern {self.audio!r} names no clip; it needs {{youtube_id}} or {{audiocap_id}}")
        return self


class ClothoData(Strict):
    """Clotho v2.1 as on Zenodo: clotho_captions_{development,validation,evaluation}.csv and the same-named audio folders."""

    type: Literal["clotho"] = Field(title="Data type")
    root: Path = Field(title="Clotho folder", description="development -> train, validation -> val, evaluation -> test; missing parts are skipped.")


DataConfig = Annotated[ManifestData | Fsd50kData | Esc50Data | SyntheticData | AudioCapsData | ClothoData, Field(discriminator="type")]


# ---------------------------------------------------------------- model, schedule, augmentation

if TYPE_CHECKING:  # mypy cannot follow create_model; to it a ModelSpec is a ModelConfig that needs no labels

    class ModelSpec(ModelConfig):
        labels: list[str] = []

else:
    ModelSpec = create_model(
        "ModelSpec",
        __config__=ConfigDict(extra="forbid"),
        __doc__="``ModelConfig`` without labels (they come from the data) and text heads (``captions``).",
        **{name: (field.annotation, field) for name, field in ModelConfig.model_fields.items() if name not in ("labels", "text")},
    )


class StagedSchedule(Strict):
    """Verma: stage 1 trains every stream with its own head; stage 2 trains the fusion.

    Optional stage 0 (AudioFormer-style pretraining): the self-supervised streams (VAE,
    masked codes) train on their own label-free losses first.
    """

    type: Literal["staged"] = Field(title="Schedule")
    pretrain_epochs: int = Field(
        default=0, title="Stage-0 epochs", ge=0, description="Self-supervised pretraining of the generative and codes streams before stage 1 (labels unused)."
    )
    stream_epochs: int = Field(title="Stage-1 epochs", ge=0, description="The remaining epochs (at least one) train the fusion.")
    freeze_streams: bool = Field(default=True, title="Freeze streams in stage 2", description="false fine-tunes them with the fusion.")
    streams: list[str] | None = Field(
        default=None,
        title="Streams stage 1 trains",
        description="null: all. A subset (e.g. [pretrained] after init_from added it) leaves the others as loaded, and stage 1 runs only them.",
    )


class JointSchedule(Strict):
    """Everything at once: fused BCE + weighted per-stream BCE + aux losses."""

    type: Literal["joint"] = Field(title="Schedule")
    stream_loss_weight: float = Field(default=0.3, title="Per-stream BCE weight", ge=0, le=10)


Schedule = Annotated[StagedSchedule | JointSchedule, Field(discriminator="type")]


class AugmentConfig(Strict):
    """Waveform-domain augmentation applied per training batch."""

    mixup_alpha: float = Field(default=0.0, title="Mixup alpha", ge=0, le=10, description="0 turns mixup off; targets mix with the same weight.")
    time_masks: int = Field(default=1, title="Time masks per clip", ge=0, le=10)
    time_mask_s: float = Field(default=0.1, title="Longest time mask (s)", ge=0, le=5)
    gain_db: float = Field(default=6.0, title="Random gain range (+-dB)", ge=0, le=40)
    noise_p: float = Field(default=0.3, title="Probability of added background noise", ge=0, le=1)
    noise_snr_db: tuple[float, float] = Field(default=(10.0, 30.0), title="Noise SNR range (dB)")
    balanced: bool = Field(default=False, title="Class-balanced sampling", description="Draw clips with weights inverse to their labels' frequency.")


class CaptionTraining(Strict):
    """The caption decoder and audio-text heads, trained with the tagger as one multi-task objective."""

    window_s: float = Field(
        default=4.0,
        title="Caption clip length (s)",
        gt=0,
        le=30,
        description="Caption-only clips are cropped or padded to this; the runtime captions this much audio.",
    )
    batch_size: int = Field(
        default=16,
        title="Caption-only clips per step",
        ge=0,
        le=1024,
        description="Drawn next to every tagging batch; 0: train the heads on the tagged windows' captions only.",
    )
    caption_weight: float = Field(default=1.0, title="Caption cross-entropy weight", ge=0, le=100)
    retrieval_weight: float = Field(default=1.0, title="Audio-text InfoNCE weight", ge=0, le=100)
    diffusion_weight: float = Field(default=0.0, title="DiffATR generation loss weight", ge=0, le=100, description="0 leaves the generative term out.")
    diffusion_steps: int = Field(default=50, title="DiffATR diffusion steps", ge=1, le=1000)
    tokenizer_size: int = Field(default=1000, title="Caption BPE vocabulary size", ge=16, le=65536)
    max_tokens: int = Field(default=40, title="Longest caption in tokens", ge=4, le=256)
    decoder_layers: int = Field(default=2, title="Caption decoder layers", ge=1, le=8)
    decoder_dim: int = Field(default=128, title="Caption decoder width", ge=16, le=1024)


class DistillConfig(Strict):
    """Knowledge distillation from the pretrained (aisfx) teacher into the model's streams (``rtaudio.train.distill``)."""

    unlabelled: list[Path] = Field(
        default_factory=list,
        title="Unlabelled audio CSVs",
        description="e.g. data/debian/unlabelled.csv; only their train-split rows are used, for the KD loss alone.",
    )
    cache: Path | None = Field(
        default=None, title="Teacher cache file", description="Per-window teacher embeddings; default: output/teacher.npz. Reused across runs."
    )
    kd_weight: float = Field(default=1.0, title="KD loss weight (teacher tag logits)", ge=0, le=100)
    embedding_weight: float = Field(default=1.0, title="Embedding loss weight (similarity-preserving)", ge=0, le=100)
    temperature: float = Field(default=2.0, title="KD temperature", ge=0.5, le=10)


class TrainConfig(Strict):
    """The whole of ``train.yaml``."""

    data: DataConfig | list[DataConfig] = Field(title="Data", description="One spec or a list; their clips are pooled.")
    output: Path = Field(title="Output folder", description="Receives the engines dir (model.onnx, model.json, model.ckpt, model.pt) and checkpoints/.")
    model: ModelSpec = Field(default_factory=ModelSpec, title="Model")
    schedule: Schedule = Field(default_factory=lambda: JointSchedule(type="joint"), title="Schedule")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, title="Augmentation")
    epochs: int = Field(default=10, title="Epochs", ge=1, le=10000)
    batch_size: int = Field(default=32, title="Batch size per process", ge=1, le=4096)
    lr: float = Field(default=1e-3, title="Peak learning rate", gt=0, le=1)
    weight_decay: float = Field(default=1e-4, title="AdamW weight decay", ge=0, le=1)
    warmup_fraction: float = Field(default=0.05, title="Warm-up share of each stage", ge=0, lt=1)
    seed: int = Field(default=0, title="Seed", ge=0)
    workers: int = Field(default=0, title="Data loader workers", ge=0, le=64)
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", title="Device")
    aux_weights: dict[str, float] = Field(
        default_factory=dict, title="Aux loss weights", description="By '<stream>.<loss>', e.g. generative.kl: 0.1; unlisted aux losses weigh 1."
    )
    distill: DistillConfig | None = Field(
        default=None, title="Distillation", description="Teacher: the aisfx CNN over every training window, cached; null: none."
    )
    captions: CaptionTraining | None = Field(
        default=None,
        title="Captions and free-text queries",
        description="Trains the caption decoder and the audio-text heads on the data's captions; null: a tagger only.",
    )
    init_from: Path | None = Field(
        default=None,
        title="Fine-tune from",
        description="A model dir with model.ckpt (e.g. engines/default): streams reused, heads rebuilt for this data's labels.",
    )
    resume: bool = Field(default=False, title="Resume", description="Continue from output/checkpoints/last.ckpt if it exists.")
    model_id: str = Field(default="custom", title="Model id written to model.json", min_length=1)
    version: str = Field(default="0.1.0", title="Model version written to model.json", min_length=1)

    @model_validator(mode="after")
    def _stages(self) -> TrainConfig:
        if isinstance(self.schedule, StagedSchedule):
            before = self.schedule.pretrain_epochs + self.schedule.stream_epochs
            unknown = sorted(set(self.schedule.streams or []) - set(self.model.streams))
            if unknown:
                raise ValueError(f"schedule.streams {unknown} are not among model.streams {list(self.model.streams)}")
            if before >= self.epochs:
                raise ValueError(
                    f"schedule.pretrain_epochs + stream_epochs = {before} leaves none of the {self.epochs} epochs "
                    "to train the fusion; keep the sum below epochs"
                )
        if self.captions is not None and self.augment.mixup_alpha > 0:
            raise ValueError("captions cannot be trained with augment.mixup_alpha > 0 (a mixed clip matches neither caption); set one of them off")
        if self.distill is not None and (self.captions is not None or self.augment.mixup_alpha > 0):
            raise ValueError("distill cannot be combined with captions or augment.mixup_alpha > 0 yet; train them in separate runs")
        if self.augment.noise_snr_db[0] > self.augment.noise_snr_db[1]:
            raise ValueError(f"augment.noise_snr_db {list(self.augment.noise_snr_db)} must be [low, high]")
        return self

    @property
    def data_specs(self) -> list[Any]:
        return self.data if isinstance(self.data, list) else [self.data]


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> None:
    """``KEY=VALUE`` settings (dotted keys, YAML values) written into the loaded mapping, in order."""
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise TrainConfigError([f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. captions.diffusion_weight=0.5"])
        node = raw
        for part in parts[:-1]:
            if not isinstance(node.setdefault(part, {}), dict):
                raise TrainConfigError([f"--set {item!r}: {part} is not a mapping in this train.yaml"])
            node = node[part]
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise TrainConfigError([f"--set {item!r}: the value is not YAML ({exc})"]) from exc


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read ``train.yaml`` (with ``--set`` style ``overrides``; ``${ENV}`` substituted); relative paths
    in it are taken from the current directory, like the CLI's. TrainConfigError lists every problem
    as ``file:line: path: problem``."""
    path = Path(path)
    try:
        raw, root = read_yaml(path)
        missing: list[str] = []
        raw = substitute_env(raw, missing)
        if missing:
            raise ConfigError([f"{path}: environment variable {name} is not set (used as ${{{name}}})" for name in missing])
        apply_overrides(raw, overrides)
        return validate(TrainConfig, raw, root, str(path))
    except TrainConfigError:
        raise
    except ConfigError as exc:
        raise TrainConfigError(exc.problems) from None
