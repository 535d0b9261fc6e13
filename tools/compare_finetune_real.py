"""Fine-tuned vs from scratch on a site-sized set of REAL clips with the site's own label names.

The site's clips are the Debian corpus's test packages (audio no shipped model trained on),
relabelled into five site labels; pieces of one source file stay in one split. The same recipe
(config/train-example.yaml's: joint, mixup, balanced) trains three models: from
``engines/default``, from ``engines/small`` and from scratch (six streams), and
``rtaudio eval --baselines`` scores them with the linear probe and hand features on the same
held-out clips.

Usage: python tools/compare_finetune_real.py [--corpus data/debian] [--out runs/finetune-real]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SITE_LABELS = {  # the site's names -> the corpus labels they cover
    "weapon": {"gunshot", "explosion"},
    "voice": {"speech", "shout_scream", "laughter"},
    "weather": {"wind", "rain", "thunder", "water_running"},
    "music": {"music"},
    "machine": {"engine", "vehicle", "hvac_hum"},
}


def rtaudio(*args: str) -> None:
    print("+ rtaudio", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "rtaudio", *args], check=True, cwd=ROOT)


def write_site_manifest(corpus: Path, out: Path) -> Path:
    """The corpus's test-package rows with site labels; 40 % test, 10 % val by a hash of the source file."""
    rows = []
    for row in csv.DictReader(open(corpus / "manifest.csv", newline="")):
        labels = sorted(site for site, covered in SITE_LABELS.items() if set(row["labels"].split(";")) & covered)
        if row["split"] != "test" or not labels:
            continue
        bucket = int(hashlib.sha256(row["source"].split("#")[0].encode()).hexdigest()[:8], 16) % 10
        rows.append(
            {"path": str((corpus / row["path"]).resolve()), "labels": ";".join(labels), "split": "test" if bucket < 4 else "val" if bucket < 5 else "train"}
        )
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "labels", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return out / "manifest.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "debian")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "finetune-real")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    manifest = write_site_manifest(args.corpus, args.out)
    for name, init in (("default", "engines/default"), ("small", "engines/small"), ("scratch", None)):
        config = {
            "data": {"type": "manifest", "path": str(manifest)},
            "output": str(args.out / name),
            "seed": 0,
            "schedule": {"type": "joint", "stream_loss_weight": 0.3},
            "epochs": args.epochs,
            "batch_size": 32,
            "lr": 0.0005 if init else 0.002,
            "augment": {"mixup_alpha": 0.2, "balanced": True},
            "aux_weights": {"generative.kl": 0.1},
            "model_id": f"site-{name}",
            **({"init_from": init} if init else {}),
        }
        (args.out / f"{name}.yaml").write_text(yaml.safe_dump(config))
        rtaudio("train", "--config", str(args.out / f"{name}.yaml"))
    rtaudio(
        "eval",
        "--model",
        str(args.out / "default"),
        "--data",
        str(manifest),
        "--split",
        "test",
        "--baselines",
        "--teacher-cache",
        str(args.out / "teacher.npz"),
        "--compare",
        str(args.out / "small"),
        "--compare",
        str(args.out / "scratch"),
        "--out",
        str(args.out / "eval"),
        "--no-java-metrics",
    )


if __name__ == "__main__":
    main()
