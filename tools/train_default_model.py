"""Train, export and evaluate the 0.4.0 default model (synthetic scenes only; CPU is enough).

Superseded as the shipped default by 0.5.0 (``tools/train_real_models.py``: real audio, the
pretrained stream, distillation); kept to reproduce 0.4.0 and its DiffATR comparison. It
writes to ``--out`` (engines/default unless told otherwise).

1. ``rtaudio train --config config/train-default.yaml``: the six-stream fused tagger on synthetic
   building scenes, Verma's staged recipe (about 1 h on 2 cores) -> runs/default.
2. ``rtaudio train --config config/train-default-captions.yaml``: that tagger fine-tuned jointly
   with the caption decoder and the audio-text heads on the same scenes, captioned (about 45 min)
   -> runs/default-captions. This is what ships.
3. The same recipe with DiffATR's generation term on (``--set captions.diffusion_weight=0.5``)
   -> runs/default-captions-diffatr, for the comparison only.
4. Copies runs/default-captions into engines/default/ and writes its eval report beside it,
   with the DiffATR run as the compared model.

Usage: python tools/train_default_model.py [--skip-train] [--no-diffatr]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAGGER, CAPTIONS = ROOT / "config" / "train-default.yaml", ROOT / "config" / "train-default-captions.yaml"
TRAINED, DIFFATR = ROOT / "runs" / "default-captions", ROOT / "runs" / "default-captions-diffatr"


def rtaudio(*args: str) -> None:
    print("+ rtaudio", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "rtaudio", *args], check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "engines" / "default")
    parser.add_argument("--skip-train", action="store_true", help="reuse the last training outputs")
    parser.add_argument("--no-diffatr", action="store_true", help="leave out the DiffATR comparison run")
    args = parser.parse_args()
    if not args.skip_train:
        rtaudio("train", "--config", str(TAGGER))
        rtaudio("train", "--config", str(CAPTIONS))
        if not args.no_diffatr:
            rtaudio("train", "--config", str(CAPTIONS), "--set", "captions.diffusion_weight=0.5", "--set", f"output={DIFFATR}")
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    for path in TRAINED.iterdir():  # model.onnx/json/ckpt/pt and the text heads' graphs and vocabularies
        if path.is_file():
            shutil.copy2(path, args.out / path.name)
    compare = [] if args.no_diffatr or not DIFFATR.is_dir() else ["--compare", str(DIFFATR)]
    rtaudio("eval", "--model", str(args.out), "--data", str(CAPTIONS), "--split", "test", "--out", str(args.out / "eval"), *compare)


if __name__ == "__main__":
    main()
