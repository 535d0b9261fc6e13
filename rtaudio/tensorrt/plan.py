"""TensorRT plan files: their names, their sidecars, and the checks before one is deserialised.

A plan only runs on the GPU model and TensorRT version it was built with, so its file name
says what it was built from and for: ``MODEL.HASH.GPU-smCC.trtVERSION.PRECISION.bBATCH.plan``.
Beside it, ``<plan>.json`` records the plan's SHA-256 and the build parameters. A plan is
loaded only when its name and sidecar match this device and model and its bytes hash to the
recorded SHA-256; otherwise the refusal names both sides.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rtaudio.contract import ModelInfo

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")
PLAN_SUFFIX = ".plan"
SIDECAR_SUFFIX = ".json"  # appended: X.plan -> X.plan.json
HASH_CHARS = 12


class PlanError(RuntimeError):
    """A plan that must not be loaded here: missing sidecar, altered bytes, or built for something else."""


def sanitise(text: str) -> str:
    """A file-name-safe token: runs of anything but letters, digits, '.', '_' and '-' become '-'."""
    token = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return token or "unnamed"


@dataclass(frozen=True)
class PlanKey:
    """Everything a plan is tied to; equal keys mean a plan can be reused."""

    model_id: str
    onnx_sha256: str
    gpu: str
    compute_capability: str
    tensorrt: str
    precision: Precision
    max_batch: int

    @classmethod
    def for_model(cls, info: ModelInfo, gpu: str, compute_capability: str, tensorrt: str, precision: Precision, max_batch: int) -> PlanKey:
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not allowed; expected one of {', '.join(PRECISIONS)}")
        if max_batch < 1:
            raise ValueError(f"max_batch {max_batch} is not allowed; expected 1 or more")
        return cls(info.model_id, info.onnx_sha256, gpu, compute_capability, tensorrt, precision, max_batch)

    @property
    def device_tag(self) -> str:
        """``GPU-smCC.trtVERSION``: the part of a name that ties a file to a device and TensorRT."""
        return f"{sanitise(self.gpu)}-sm{sanitise(self.compute_capability.replace('.', ''))}.trt{sanitise(self.tensorrt)}"

    @property
    def filename(self) -> str:
        return f"{sanitise(self.model_id)}.{self.onnx_sha256[:HASH_CHARS]}.{self.device_tag}.{self.precision}.b{self.max_batch}{PLAN_SUFFIX}"

    @property
    def calibration_cache_name(self) -> str:
        """INT8 scales depend on the model and the TensorRT version, not on the GPU or the batch."""
        return f"{sanitise(self.model_id)}.{self.onnx_sha256[:HASH_CHARS]}.trt{sanitise(self.tensorrt)}.int8-cache"

    @property
    def timing_cache_name(self) -> str:
        """Layer timings depend on the GPU and TensorRT version; models on one device can share them."""
        return f"{self.device_tag}.timing-cache"


def sidecar_path(plan: Path) -> Path:
    return plan.with_name(plan.name + SIDECAR_SUFFIX)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_plan(plan: Path, data: bytes, key: PlanKey, build: dict[str, Any]) -> str:
    """Write the plan and its sidecar (each atomically); return the plan's SHA-256."""
    digest = sha256_bytes(data)
    _atomic_write(plan, data)
    sidecar = {"plan_sha256": digest, "key": asdict(key), "build": build}
    _atomic_write(sidecar_path(plan), (json.dumps(sidecar, indent=2) + "\n").encode())
    return digest


def read_checked_plan(plan: Path, key: PlanKey) -> bytes:
    """The plan's bytes, after checking its name, its sidecar's key and its SHA-256; PlanError otherwise."""
    if plan.name != key.filename:
        raise PlanError(f"{plan} is named for another model, device or build; this device and model need {key.filename}")
    meta_path = sidecar_path(plan)
    try:
        meta = json.loads(meta_path.read_text())
        recorded, built_for = meta["plan_sha256"], meta["key"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PlanError(f"{plan}: its sidecar {meta_path.name} is missing or unreadable ({exc}); rebuild it with `rtaudio build-engine`") from None
    expected = asdict(key)
    differ = [f"{field}: plan {built_for.get(field)!r}, here {want!r}" for field, want in expected.items() if built_for.get(field) != want]
    if differ:
        raise PlanError(f"{plan} was built for something else ({'; '.join(differ)}); rebuild it on this device with `rtaudio build-engine`")
    data = plan.read_bytes()
    actual = sha256_bytes(data)
    if actual != recorded:
        raise PlanError(
            f"{plan}: SHA-256 {actual} does not match {recorded} recorded in {meta_path.name}; "
            "the plan was altered or truncated; delete it and rebuild with `rtaudio build-engine`"
        )
    return data


def other_plans(plan_dir: Path, key: PlanKey) -> list[Path]:
    """Plans of the same model in ``plan_dir`` that were built for another device or setting."""
    prefix = f"{sanitise(key.model_id)}."
    return sorted(p for p in plan_dir.glob(f"*{PLAN_SUFFIX}") if p.name.startswith(prefix) and p.name != key.filename)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
