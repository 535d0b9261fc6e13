"""Linear-probe mAP of the aisfx embedding under one front-end setting, on the corpus's val and test splits.

How the pretrained stream's preprocessing was chosen (docs/model.md): each setting embeds every
window of the corpus (cached per setting), a logistic regression is fitted on the train
packages' windows, clips are scored by the max over their windows.

Usage: python tools/compare_frontends.py NAME RATE PEAK_NORMALISE(0|1) PEAK_FLOOR WINDOW_S [--manifest data/debian/manifest.csv]
  e.g. python tools/compare_frontends.py nopeak 16000 0 0.001 1.0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rtaudio.model.config import ModelConfig
from rtaudio.model.streams.pretrained import PretrainedStream
from rtaudio.train import metrics
from rtaudio.train.baselines import LinearProbe, clip_max, window_set
from rtaudio.train.config import ManifestData
from rtaudio.train.data import ClipDataset, label_set, load_clips
from rtaudio.train.pretrained import fetch_aisfx, load_aisfx_state
from rtaudio.train.teacher import build_teacher_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("rate", type=int)
    parser.add_argument("peak", type=int, choices=[0, 1])
    parser.add_argument("floor", type=float)
    parser.add_argument("window_s", type=float)
    parser.add_argument("--manifest", type=Path, default=Path("data/debian/manifest.csv"))
    args = parser.parse_args()
    clips = load_clips(ManifestData(type="manifest", path=args.manifest))
    labels = label_set(clips)
    stream = PretrainedStream(ModelConfig(labels=["_"], sample_rate=args.rate, streams=["pretrained"]), peak_normalise=bool(args.peak), peak_floor=args.floor)
    stream.load_aisfx(load_aisfx_state(fetch_aisfx()))
    cache = build_teacher_cache(clips, stream.eval(), args.rate, args.window_s, args.window_s / 2, args.manifest.parent / f"teacher-{args.name}.npz")
    splits = {s: [c for c in clips if c.split == s] for s in ("train", "val", "test")}
    sets = {s: window_set(cs, cache, labels) for s, cs in splits.items()}
    x, y, _ = sets["train"]
    trained = y.sum(0) > 0
    probe = LinearProbe().fit(x, y)
    for split in ("val", "test"):
        xs, _, owners = sets[split]
        scores = clip_max(probe.predict(xs), owners, len(splits[split]))
        truth = ClipDataset(splits[split], labels, args.rate, args.window_s, train=False).targets()
        ap = metrics.per_class_ap(truth, scores)
        print(f"{args.name} {split}: mAP {np.nanmean(ap):.3f}, over labels with train positives {np.nanmean(ap[trained]):.3f}")


if __name__ == "__main__":
    main()
