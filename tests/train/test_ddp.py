"""`rtaudio train` under torchrun: 2 CPU processes with gloo end with identical weights; rank 0 writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from rtaudio.contract import load_model_dir
from rtaudio.model.fused import load_checkpoint
from rtaudio.train.loop import weights_sha256
from tests.helpers import REPO, tone_manifest

ROOT = REPO


def test_two_process_gloo_training_keeps_ranks_identical(tmp_path: Path) -> None:
    manifest = tone_manifest(tmp_path, clips=12)
    config = {
        "data": {"type": "manifest", "path": str(manifest)},
        "output": str(tmp_path / "out"),
        "device": "cpu",
        "model": {"streams": ["e2e"], "layers": 1, "n_mels": 32, "window_s": 0.5, "hop_s": 0.25},
        "schedule": {"type": "joint"},
        "epochs": 1,
        "batch_size": 3,
        "augment": {"mixup_alpha": 0.4},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "rtaudio",
            "train",
            "--config",
            str(tmp_path / "tiny.yaml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "rank 0/2" in log and "rank 1/2" in log and "9 train / 3 val clips" in log
    hashes = dict(re.findall(r"rank (\d) weights sha256 ([0-9a-f]{64})", log))
    assert set(hashes) == {"0", "1"} and hashes["0"] == hashes["1"], log[-3000:]
    model, _ = load_checkpoint(tmp_path / "out" / "model.ckpt")
    assert weights_sha256(model) == hashes["0"]  # rank 0 wrote what both ranks hold
    assert load_model_dir(tmp_path / "out").info.labels == ["high", "low"]
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["last.ckpt"]
