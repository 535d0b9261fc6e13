"""The contract between training and runtime: the directory ``engines/NAME/``.

``model.onnx`` maps raw mono float32 waveform ``[batch, samples]`` at the model's sample
rate to ``scores [batch, classes]`` (and optionally ``embedding [batch, D]``);
``model.json`` carries what the runtime needs to use it. The loader refuses a directory
whose pieces are missing or disagree, naming the piece.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rtaudio.contract.files import (
    CAPTION_FILES,
    CHECKPOINT_FILE,
    META_FILE,
    ONNX_FILE,
    QUERY_FILES,
    REQUIRED_FILES,
    TORCHSCRIPT_FILE,
)

CONTRACT_VERSION = 1


class ContractError(ValueError):
    """A model directory that does not follow the contract."""


class ModelInfo(BaseModel):
    """``model.json``: everything the runtime needs to feed the graph and read its output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contract: int = Field(CONTRACT_VERSION, title="Contract version", ge=1, le=CONTRACT_VERSION)
    model_id: str = Field(title="Model id", min_length=1, description="Stable name, e.g. 'default'.")
    version: str = Field(title="Model version", min_length=1)
    labels: list[str] = Field(title="Class labels", min_length=1)
    sample_rate: int = Field(title="Sample rate (Hz)", ge=8000, le=48000)
    window_s: float = Field(title="Window length (s)", gt=0, le=30)
    hop_s: float = Field(title="Hop between windows (s)", gt=0, le=30)
    thresholds: list[float] = Field(title="Per-class decision thresholds", description="One per label, in [0, 1].")
    median_windows: dict[str, int] = Field(
        default_factory=dict,
        title="Per-label median smoothing",
        description="Label -> odd window count for the labels whose events need other smoothing than the site's "
        "(1 for sounds shorter than a window: a 3-window median would erase them).",
    )
    onnx_sha256: str = Field(title="SHA-256 of model.onnx", pattern=r"^[0-9a-f]{64}$")
    embedding_dim: int | None = Field(None, title="Embedding size", ge=1, description="D of the optional `embedding` output.")
    streams: list[str] = Field(default_factory=list, title="Model streams", description="Informational.")
    extra: dict[str, Any] = Field(default_factory=dict, title="Free-form provenance (training data, versions)")

    @model_validator(mode="after")
    def _consistent(self) -> ModelInfo:
        if len(self.thresholds) != len(self.labels):
            raise ValueError(f"thresholds has {len(self.thresholds)} entries but labels has {len(self.labels)}; expected one threshold per label")
        if any(not 0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError("thresholds must lie in [0, 1]")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        bad = {label: k for label, k in self.median_windows.items() if label not in self.labels or k < 1 or k > 31 or k % 2 == 0}
        if bad:
            raise ValueError(f"median_windows {bad} not allowed; expected labels of the model, each with an odd number of windows from 1 to 31")
        if self.hop_s > self.window_s:
            raise ValueError(f"hop_s {self.hop_s} is longer than window_s {self.window_s}")
        return self

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_s * self.sample_rate)


class ModelDir(BaseModel):
    """A checked model directory."""

    model_config = ConfigDict(frozen=True)

    path: Path
    info: ModelInfo

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    def missing(self, names: tuple[str, ...]) -> list[str]:
        """Which of the files ``names`` (from ``contract.files``) this directory lacks."""
        return missing_files(self.path, names)

    @property
    def has_captions(self) -> bool:
        """The caption decoder's graphs and tokenizer are all here (``captions:`` can run)."""
        return not self.missing(CAPTION_FILES)

    @property
    def has_queries(self) -> bool:
        """The audio-text space's graphs and vocabulary are all here (``queries:`` can run)."""
        return not self.missing(QUERY_FILES)

    @property
    def has_torchscript(self) -> bool:
        return (self.path / TORCHSCRIPT_FILE).is_file()

    @property
    def has_checkpoint(self) -> bool:
        """Torch weights to fine-tune or evaluate from (``init_from:``, ``rtaudio eval``)."""
        return (self.path / CHECKPOINT_FILE).is_file()


def missing_files(model_dir: str | Path, names: tuple[str, ...]) -> list[str]:
    """Which of the files ``names`` (e.g. ``files.CAPTION_FILES``) the directory lacks; for a directory not yet loaded."""
    return [name for name in names if not (Path(model_dir) / name).is_file()]


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model_dir(path: str | Path, check_hash: bool = True) -> ModelDir:
    """Read and check ``engines/NAME/``; raise ContractError naming the missing or bad piece."""
    root = Path(path)
    if not root.is_dir():
        raise ContractError(f"model directory {root} does not exist or is not a directory")
    meta_path, onnx_path = root / META_FILE, root / ONNX_FILE
    for name in REQUIRED_FILES:
        if not (root / name).is_file():
            raise ContractError(f"model directory {root} has no {name}; expected {' and '.join(REQUIRED_FILES)}")
    try:
        raw = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ContractError(f"{meta_path}: not readable JSON ({exc})") from exc
    try:
        info = ModelInfo.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
        raise ContractError(f"{meta_path}: {problems}") from exc
    if check_hash:
        actual = sha256_file(onnx_path)
        if actual != info.onnx_sha256:
            raise ContractError(
                f"{onnx_path}: SHA-256 {actual[:12]}... does not match model.json onnx_sha256 "
                f"{info.onnx_sha256[:12]}...; the ONNX file and its metadata come from different exports"
            )
    return ModelDir(path=root, info=info)


def write_model_dir(path: str | Path, onnx_bytes: bytes, **info: Any) -> ModelDir:
    """Write ``model.onnx`` and ``model.json`` (hash filled in) and return the checked directory."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    (root / ONNX_FILE).write_bytes(onnx_bytes)
    info["onnx_sha256"] = hashlib.sha256(onnx_bytes).hexdigest()
    meta = ModelInfo.model_validate(info)
    (root / META_FILE).write_text(json.dumps(meta.model_dump(mode="json"), indent=2) + "\n")
    return load_model_dir(root)


def model_variants(engines: str | Path) -> dict[str, Path]:
    """The model directories under ``engines/`` (e.g. ``default``, ``small``) by name: those holding a model.json."""
    root = Path(engines)
    return {p.name: p for p in sorted(root.iterdir()) if (p / META_FILE).is_file()} if root.is_dir() else {}
