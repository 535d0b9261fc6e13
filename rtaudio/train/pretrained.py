"""The pretrained stream's weights: aisfx's checkpoint, fetched from PyPI at training time only.

The wheel ``aisfx==0.1.2`` (CC BY 4.0, Ma & Lerch, ISMIR 2022) ships the X-Sequential-CE model as
``aisfx/models/checkpoint.pth``. It is downloaded with pip (no dependencies: aisfx pins old librosa
and numpy, and is never imported), the checkpoint is taken out of the wheel with zipfile and its
SHA-256 checked before ``torch.load`` unpickles it. Trained models carry the weights in their own
checkpoint, so neither the runtime nor the model package imports this module. ``AISFX`` is the
attribution a model built from these weights owes (CC BY 4.0).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

AISFX = {
    "package": "aisfx",
    "version": "0.1.2",
    "file": "aisfx/models/checkpoint.pth",
    "sha256": "499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5",
    "licence": "CC-BY-4.0",
    "citation": 'A. B. Ma and A. Lerch, "Representation Learning for the Automatic Indexing of Sound Effects Libraries", '
    "Proc. ISMIR 2022 (model X-Sequential-CE)",
    "url": "https://github.com/alisonbma/aisfx",
}
PREFIX = "embedding_net."


def default_cache() -> Path:
    """Where downloaded weights live: ``$RTAUDIO_CACHE`` or ``~/.cache/rtaudio/pretrained``."""
    return Path(os.environ.get("RTAUDIO_CACHE") or Path.home() / ".cache" / "rtaudio" / "pretrained")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, source: Path) -> None:
    """Raise ``ValueError`` naming both hashes and ``source`` (the file to delete) unless ``path`` is aisfx's checkpoint."""
    found = _sha256(path)
    if found != AISFX["sha256"]:
        raise ValueError(
            f"{source}: {AISFX['file']} of {AISFX['package']}=={AISFX['version']} has SHA-256 {found}, expected "
            f"{AISFX['sha256']}; delete {source} to fetch it again"
        )


def aisfx_wheel(cache_dir: Path | None = None) -> Path:
    """The aisfx wheel in ``cache_dir`` (default ``default_cache()``), downloaded with ``pip download --no-deps`` when it
    is not there yet."""
    cache = cache_dir or default_cache()
    pattern = f"{AISFX['package']}-{AISFX['version']}-*.whl"
    wheels = sorted(cache.glob(pattern))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        spec = f"{AISFX['package']}=={AISFX['version']}"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", spec, "-d", str(cache)], capture_output=True, text=True
        )
        wheels = sorted(cache.glob(pattern))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(f"could not download {spec} into {cache} (pip exit {done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
    return wheels[0]


def fetch_aisfx(cache_dir: Path | None = None) -> Path:
    """Path of aisfx's checkpoint in ``cache_dir`` (default ``default_cache()``), taken out of the wheel (downloaded
    if needed) on first use; its SHA-256 is checked every time, and a mismatch raises ``ValueError``."""
    cache = cache_dir or default_cache()
    target = cache / f"{AISFX['package']}-{AISFX['version']}" / Path(AISFX["file"]).name
    if target.is_file():
        _verify(target, target)
        return target
    wheel = aisfx_wheel(cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")  # renamed once verified: an interrupted or bad extraction leaves no checkpoint
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(AISFX["file"]) as src, partial.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        _verify(partial, wheel)
    except (KeyError, zipfile.BadZipFile) as exc:
        partial.unlink(missing_ok=True)
        raise ValueError(f"{wheel}: not a wheel holding {AISFX['file']} ({exc}); delete it to download it again") from exc
    except ValueError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target


def load_aisfx_state(path: Path) -> dict[str, torch.Tensor]:
    """The embedding network's weights from an aisfx checkpoint (``(state_dict, datasets)``), prefix stripped.

    Unpickling needs ``weights_only=False`` (the dataset table holds numpy ints): call it on a file
    ``fetch_aisfx`` has verified."""
    state, _ = torch.load(str(path), map_location="cpu", weights_only=False)
    weights = {key[len(PREFIX) :]: value for key, value in state.items() if key.startswith(PREFIX)}
    if not weights:
        raise ValueError(f"{path}: no '{PREFIX}' weights; not an aisfx checkpoint")
    return weights
