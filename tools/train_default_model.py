"""Train, export and evaluate the shipped default model engines/default/ (CPU is enough).

Runs ``rtaudio train --config config/train-default.yaml`` (synthetic building scenes, the
six-stream fused model, Verma's staged recipe), copies the exported model into
engines/default/ and writes its eval report (JSON, Markdown, plots, ablation table) beside it.

Usage: python tools/train_default_model.py [--config config/train-default.yaml] [--skip-train]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("model.onnx", "model.json", "model.ckpt", "model.pt")


def rtaudio(*args: str) -> None:
    print("+ rtaudio", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "rtaudio", *args], check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "train-default.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "engines" / "default")
    parser.add_argument("--skip-train", action="store_true", help="reuse the last training output")
    args = parser.parse_args()
    if not args.skip_train:
        rtaudio("train", "--config", str(args.config))
    trained = ROOT / yaml.safe_load(args.config.read_text())["output"]
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    for name in SHIPPED:
        shutil.copy2(trained / name, args.out / name)
    rtaudio("eval", "--model", str(args.out), "--data", str(args.config), "--split", "test", "--out", str(args.out / "eval"))


if __name__ == "__main__":
    main()
