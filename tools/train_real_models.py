"""Build the real-audio corpus, train engines/small and engines/default on it, and evaluate both (CPU is enough).

1. ``rtaudio data debian --out data/debian``: sounds shipped in Debian packages, labelled by the
   reviewed rules, split by package (a few minutes; about 1.2 GB of .deb files in data/debian/debs).
2. ``rtaudio train --config config/train-small.yaml``: the e2e and generative streams of the 0.5.0
   small model, fine-tuned on the corpus + synthetic alarm scenes and distilled from the aisfx
   teacher (cached per window in data/debian/teacher.npz) -> runs/small.
3. ``rtaudio train --config config/train-default-probe.yaml``: the 0.5.0 default (seven streams) with a
   probe head on the aisfx embedding; its fusion, caption decoder and audio-text heads retrained over
   frozen streams -> runs/default-probe. (How 0.5.0 itself was made: config/train-default-real.yaml and
   train-default-real-captions.yaml, from the six-stream small recipe of commit 781ec85.)
4. ``rtaudio eval`` of both on the corpus's test packages, with the baselines (linear probe on
   the aisfx embedding, hand features) and the previous model compared on the shared labels.

Usage: python tools/train_real_models.py [--skip-corpus] [--skip-train] [--previous DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "debian"
RUNS = {"small": ROOT / "runs" / "small", "default": ROOT / "runs" / "default-probe"}
RECIPES = ("train-small.yaml", "train-default-probe.yaml")  # each starts from the shipped model of its name


def rtaudio(*args: str) -> None:
    print("+ rtaudio", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "rtaudio", *args], check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-corpus", action="store_true", help="reuse data/debian")
    parser.add_argument("--skip-train", action="store_true", help="reuse the last training outputs")
    parser.add_argument("--previous", type=Path, default=None, help="a previous model dir to compare on the shared labels")
    parser.add_argument("--engines", type=Path, default=ROOT / "engines", help="where engines/small and engines/default are written")
    args = parser.parse_args()
    if not args.skip_corpus:
        rtaudio("data", "debian", "--out", str(CORPUS))
    if not args.skip_train:
        for recipe in RECIPES:
            rtaudio("train", "--config", str(ROOT / "config" / recipe))
    for name, run in RUNS.items():
        out = args.engines / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for path in run.iterdir():  # model.onnx/json/ckpt/pt and the text heads' graphs and vocabularies
            if path.is_file():
                shutil.copy2(path, out / path.name)
    previous = ["--compare", str(args.previous)] if args.previous else []
    for name in RUNS:
        model = args.engines / name
        rtaudio(
            "eval", "--model", str(model), "--data", str(CORPUS / "manifest.csv"), "--split", "test", "--baselines", "--out", str(model / "eval"), *previous
        )


if __name__ == "__main__":
    main()
