"""Distillation: teacher cache, teacher logits, the distillation dataset and losses, and a tiny run with the real aisfx teacher."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rtaudio.train.config import ManifestData, TrainConfig
from rtaudio.train.data import Clip, ClipDataset, load_clips
from rtaudio.train.distill import DistillDataset, fit_probe, kd_loss, masked_bce, memory_window_set, similarity_loss, teacher_logits, unlabelled_clips
from rtaudio.train.teacher import TeacherCache, build_teacher_cache, weights_digest
from tests.helpers import tiny_config, tone_manifest, write_labelled_tone


class CountingTeacher(torch.nn.Module):
    """A stand-in teacher for cache bookkeeping: its embedding is the window's RMS and peak; counts windows."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = torch.nn.Linear(1, 1)  # what the cache's weights hash covers
        self.features = SimpleNamespace(win_length=4, hop=2, n_fft=4, bands=1, peak_normalise=False, peak_floor=1e-3)
        self.windows = 0

    def forward(self, features):  # the stream interface: reads only the waveform
        x = features.waveform
        self.windows += len(x)
        emb = torch.stack([x.pow(2).mean(1).sqrt(), x.abs().amax(1)], dim=1)
        return type("Out", (), {"teacher": emb})()


def test_cache_computes_only_new_clips_and_refuses_other_settings(tmp_path: Path) -> None:
    clips = load_clips(ManifestData(type="manifest", path=tone_manifest(tmp_path, clips=6)))
    teacher = CountingTeacher()
    path = tmp_path / "teacher.npz"
    cache = build_teacher_cache(clips[:4], teacher, 16000, 0.5, 0.25, path)
    first = teacher.windows
    assert first == len(cache.embeddings) and len(cache.keys) == 4
    again = build_teacher_cache(clips, teacher, 16000, 0.5, 0.25, path)
    assert len(again.keys) == 6 and teacher.windows - first == len(again.embeddings) - len(cache.embeddings)
    np.testing.assert_array_equal(again.clip_embeddings(str(clips[0].path)), cache.clip_embeddings(str(clips[0].path)))
    with pytest.raises(ValueError, match="teacher cache made with"):
        TeacherCache.load(path, {**again.settings, "hop_s": "0.5"})
    teacher.cnn.weight.data += 1  # other weights: another digest, so the cache is not reused
    assert weights_digest(teacher) != again.settings["weights"]


def test_losses() -> None:
    logits, y = torch.tensor([[5.0, -5.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    only_first = masked_bce(logits, y, torch.tensor([1.0, 0.0]))
    assert only_first < 0.01 < float(masked_bce(logits, y, torch.tensor([1.0, 1.0])))
    assert float(kd_loss(logits, logits, torch.ones(2), 2.0)) < float(kd_loss(logits, -logits, torch.ones(2), 2.0))
    emb = torch.randn(5, 8)
    assert float(similarity_loss(emb, emb @ torch.linalg.qr(torch.randn(8, 8))[0], torch.ones(5))) < 1e-6  # rotations keep similarities
    assert float(similarity_loss(emb, torch.randn(5, 8), torch.ones(5))) > 1e-3


def test_dataset_gives_cached_windows_and_masks_unlabelled(tmp_path: Path) -> None:
    manifest = tone_manifest(tmp_path, clips=6)
    for i in range(2):
        write_labelled_tone(tmp_path / "wav" / f"u{i}.wav", ["mid"], seconds=1.2, seed=10 + i)
    (tmp_path / "unlabelled.csv").write_text("path,labels,split\nwav/u0.wav,,train\nwav/u1.wav,,test\n")
    unlabelled = unlabelled_clips([tmp_path / "unlabelled.csv"])
    assert [c.path.name for c in unlabelled] == ["u0.wav"]  # test-package audio never trains
    clips = [c for c in load_clips(ManifestData(type="manifest", path=manifest)) if c.split == "train"]
    base = ClipDataset(clips, ["high", "low"], 16000, 0.5, train=True)
    cache = build_teacher_cache(clips + unlabelled, CountingTeacher(), 16000, 0.5, 0.25, tmp_path / "t.npz")
    logits = teacher_logits(fit_probe(cache, clips, ["high", "low"]), cache)
    assert logits.shape == (len(cache.embeddings), 2)
    data = DistillDataset(base, unlabelled, cache, logits, 0.5, 0.25)
    x, y, labelled, emb, t_logits, has = data[len(data) - 1]
    assert x.shape == (8000,) and float(labelled) == 0 and float(has) == 1 and float(y.sum()) == 0
    rows = cache.rows(str(unlabelled[0].path))
    assert any(torch.allclose(emb, torch.from_numpy(cache.embeddings[r].astype(np.float32))) for r in range(rows.start, rows.stop))
    x, y, labelled, *_ = data[0]
    assert float(labelled) == 1 and float(y.sum()) >= 1


def test_the_probe_also_learns_in_memory_clips(tmp_path: Path) -> None:
    """Synthetic scenes live in memory, not in the cache: their windows are embedded for the probe, so labels only
    synthesis has (alarms) get a probe too instead of none."""
    clips = [c for c in load_clips(ManifestData(type="manifest", path=tone_manifest(tmp_path, clips=6))) if c.split == "train"]
    cache = build_teacher_cache(clips, CountingTeacher(), 16000, 0.5, 0.25, tmp_path / "t.npz")
    rng = np.random.default_rng(0)
    loud = [Clip(None, ["alarm"], "train", audio=(0.9 * rng.standard_normal(12000)).astype(np.float32), sample_rate=16000) for _ in range(3)]
    x, y = memory_window_set(CountingTeacher(), loud, ["high", "low", "alarm"], 16000, 0.5, 0.25)
    assert x.shape == (6, 2) and y.shape == (6, 3) and (y[:, 2] == 1).all() and y[:, :2].sum() == 0  # 0.75 s: two windows each
    without = fit_probe(cache, clips, ["high", "low", "alarm"])
    with_memory = fit_probe(cache, clips, ["high", "low", "alarm"], (x, y))
    assert without.models[2] is None and with_memory.models[2] is not None


def test_distill_refuses_captions_and_mixup(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, tone_manifest(tmp_path, clips=3), distill={})
    with pytest.raises(ValueError, match="distill cannot be combined"):
        TrainConfig.model_validate(config)  # tiny_config has mixup on


def test_tiny_run_with_the_real_teacher(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from rtaudio.train.loop import train
    from rtaudio.train.pretrained import fetch_aisfx

    try:
        fetch_aisfx()
    except Exception as exc:  # no registry here: the teacher's weights cannot be fetched
        pytest.skip(f"aisfx weights unavailable: {exc}")
    manifest = tone_manifest(tmp_path, clips=8)
    write_labelled_tone(tmp_path / "wav" / "u0.wav", ["mid"], seconds=1.0, seed=99)
    (tmp_path / "unlabelled.csv").write_text("path,labels,split\nwav/u0.wav,,train\n")
    config = TrainConfig.model_validate(
        tiny_config(tmp_path, manifest, augment={"mixup_alpha": 0.0}, distill={"unlabelled": [str(tmp_path / "unlabelled.csv")]})
    )
    out = train(config)
    assert (out / "model.onnx").is_file() and (config.output / "teacher.npz").is_file()
    cache = TeacherCache.load(config.output / "teacher.npz")
    assert str(tmp_path / "wav" / "u0.wav") in cache.keys and cache.embeddings.shape[1] == 512


def test_probe_head_is_fitted_on_the_teacher_cache_and_kept_through_training(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from rtaudio.model.fused import load_checkpoint
    from rtaudio.train.loop import train
    from rtaudio.train.pretrained import fetch_aisfx

    try:
        fetch_aisfx()
    except Exception as exc:
        pytest.skip(f"aisfx weights unavailable: {exc}")
    manifest = tone_manifest(tmp_path, clips=8)
    config = TrainConfig.model_validate(
        tiny_config(
            tmp_path,
            manifest,
            augment={"mixup_alpha": 0.0},
            model={"streams": ["e2e", "pretrained"], "layers": 1, "n_mels": 32, "window_s": 0.5, "hop_s": 0.25, "probe_head": True},
        )
    )
    out = train(config)
    model, _ = load_checkpoint(out / "model.ckpt")
    clips = [c for c in load_clips(ManifestData(type="manifest", path=manifest)) if c.split == "train"]
    cache = TeacherCache.load(config.output / "teacher.npz")
    mean, std, weight, bias = fit_probe(cache, clips, model.config.labels).tensors()
    assert np.abs(weight).sum() > 0  # both labels had positives and negatives
    np.testing.assert_allclose(model.probe.linear.weight.detach().numpy(), weight, atol=1e-6)
    np.testing.assert_allclose(model.probe.linear.bias.detach().numpy(), bias, atol=1e-6)
    np.testing.assert_allclose(model.probe.mean.numpy(), mean, atol=1e-6)
