"""Fine-tuned vs from-scratch on a site-sized labelled set: the comparison docs/model.md reports.

A site has a few hundred labelled clips and its own label names, not FSD50K. This script makes
such a set the way a site would hand it over (a folder of WAV files and a manifest CSV, from
synthetic scenes with a seed the default model never trained on, labels regrouped into the
site's own names), then trains twice with the same recipe, split and seed: once from
``engines/default`` (``init_from``: streams reused, new heads) and once from scratch, and
scores both on the same held-out test clips with ``rtaudio eval --compare``.

Usage: python tools/compare_finetune.py [--clips 300] [--epochs 12] [--out runs/finetune]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from rtaudio.contract.files import CHECKPOINT_FILE
from rtaudio.model.fused import load_checkpoint
from rtaudio.train.synth import ambience, make_scene

ROOT = Path(__file__).resolve().parents[1]
SITE_LABELS = {  # the site's names -> the generator's sounds they cover
    "alarm": ("smoke_alarm", "co_alarm", "siren"),
    "at_the_door": ("knock", "doorbell", "door_slam"),
    "voice": ("speech", "baby_cry"),
    "glass_break": ("glass_break",),
    "dog": ("dog_bark",),
}
SAMPLE_RATE = 16000


def write_site_set(folder: Path, clips: int, seed: int) -> Path:
    """``clips`` 2-4 s WAV clips, one sound each (a sixth are background only), and their manifest."""
    rng = np.random.default_rng(seed)
    sounds = [(name, sound) for name, group in SITE_LABELS.items() for sound in group]
    rows = ["path,labels"]
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    for i in range(clips):
        duration = float(rng.uniform(2.0, 4.0))
        if i % 6 == 5:
            audio = (ambience(rng, int(duration * SAMPLE_RATE), SAMPLE_RATE) * 10 ** (rng.uniform(-55, -40) / 20)).astype(np.float32)
            label = ""
        else:
            label, sound = sounds[int(rng.integers(len(sounds)))]
            audio, _ = make_scene(rng, duration, sample_rate=SAMPLE_RATE, order=(sound,), snr_db=(3, 20))
        sf.write(folder / "wav" / f"{i:04d}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
        rows.append(f"wav/{i:04d}.wav,{label}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def rtaudio(*args: str) -> None:
    print("+ rtaudio", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "rtaudio", *args], check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT / "engines" / "default", help="model dir to fine-tune from")
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "finetune")
    args = parser.parse_args()
    manifest = write_site_set(args.out / "data", args.clips, args.seed)
    source, _ = load_checkpoint(args.source / CHECKPOINT_FILE)
    architecture = source.config.model_dump(exclude={"labels"})
    common = {
        "data": {"type": "manifest", "path": str(manifest), "val_fraction": 0.15, "test_fraction": 0.2},
        "schedule": {"type": "joint", "stream_loss_weight": 0.3},
        "epochs": args.epochs,
        "batch_size": 32,
        "augment": {"mixup_alpha": 0.0, "noise_p": 0.3, "balanced": True},
        "seed": 0,
        "version": "0.1.0",
    }
    runs = {
        "finetuned": {**common, "output": str(args.out / "finetuned"), "init_from": str(args.source), "lr": 0.0005, "model_id": "site-finetuned"},
        "scratch": {**common, "output": str(args.out / "scratch"), "model": architecture, "lr": 0.003, "model_id": "site-scratch"},
    }
    for name, config in runs.items():
        path = args.out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        rtaudio("train", "--config", str(path))
    rtaudio(
        "eval",
        "--model",
        str(args.out / "finetuned"),
        "--compare",
        str(args.out / "scratch"),
        "--data",
        str(manifest),
        "--split",
        "test",
        "--out",
        str(args.out / "eval"),
    )


if __name__ == "__main__":
    main()
