"""Training side: data specs and their errors, the dataset, and tiny end-to-end `rtaudio train` runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from rtaudio.cli import main
from rtaudio.contract import load_model_dir
from rtaudio.model.fused import load_checkpoint
from rtaudio.train import loop
from rtaudio.train.config import Esc50Data, Fsd50kData, ManifestData, SyntheticData, TrainConfig, TrainConfigError, load_train_config
from rtaudio.train.data import ClipDataset, DataError, EpochSampler, label_set, load_clips
from rtaudio.train.finetune import build_model
from rtaudio.train.loop import train, weights_sha256
from tests.helpers import tiny_config, tone_manifest, write_labelled_tone

SR = 16000


# ---------------------------------------------------------------- data


def test_manifest_relative_paths_labels_splits(tmp_path: Path) -> None:
    write_labelled_tone(tmp_path / "a" / "x.wav", ["low"])
    (tmp_path / "m.csv").write_text("path,labels,split,caption\na/x.wav,low;high,val,two tones\na/x.wav, low ;,,\na/y.wav,high,,\na/z.wav,,,a dog barks\n")
    clips = load_clips(ManifestData(type="manifest", path=tmp_path / "m.csv"))
    assert clips[0].path == tmp_path / "a" / "x.wav" and clips[0].labels == ["low", "high"]
    assert clips[0].split == "val" and clips[0].captions == ["two tones"] and clips[0].tagged
    assert clips[1].labels == ["low"] and clips[1].captions == [] and clips[1].tagged
    assert clips[3].labels == [] and clips[3].captions == ["a dog barks"] and not clips[3].tagged  # caption only: no tag negative
    assert all(c.split in ("train", "val", "test") for c in clips)
    again = load_clips(ManifestData(type="manifest", path=tmp_path / "m.csv"))
    assert [c.split for c in again] == [c.split for c in clips]  # hashed splits are stable
    assert label_set(clips) == ["high", "low"]
    many = "path,labels\n" + "".join(f"f{i}.wav,low\n" for i in range(400))
    (tmp_path / "many.csv").write_text(many)
    splits = [c.split for c in load_clips(ManifestData(type="manifest", path=tmp_path / "many.csv", val_fraction=0.2, test_fraction=0.1))]
    assert 0.12 < splits.count("val") / 400 < 0.28 and 0.04 < splits.count("test") / 400 < 0.16


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,labels\nx.wav,low\n", "missing column(s) path"),
        ("path,labels,split\nx.wav,low,holdout\n", "split 'holdout' is not one of"),
        ("path,labels\n,low\n", "m.csv:2: empty path"),
        ("path,labels\n", "no rows"),
    ],
)
def test_manifest_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_clips(ManifestData(type="manifest", path=tmp_path / "m.csv"))


def test_dataset_errors_name_the_problem(tmp_path: Path) -> None:
    write_labelled_tone(tmp_path / "ok.wav", ["low"])
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    (tmp_path / "m.csv").write_text("path,labels,split\nok.wav,low,train\nmissing.wav,low,train\nbad.wav,low,train\n")
    clips = load_clips(ManifestData(type="manifest", path=tmp_path / "m.csv"))
    with pytest.raises(DataError, match="not found, e.g. .*missing.wav"):
        ClipDataset(clips, ["low"], SR, 0.5, train=False)
    with pytest.raises(DataError, match=r"label\(s\) low not in the model's labels \(high\)"):
        ClipDataset(clips[:1], ["high"], SR, 0.5, train=False)
    with pytest.raises(DataError, match="bad.wav: cannot read audio"):
        ClipDataset(clips[2:], ["low"], SR, 0.5, train=False)[0]
    with pytest.raises(DataError, match="no such file"):
        load_clips(ManifestData(type="manifest", path=tmp_path / "nope.csv"))


def test_dataset_resamples_crops_and_pads(tmp_path: Path) -> None:
    write_labelled_tone(tmp_path / "long.wav", ["high"], seconds=2.0, rate=44100)
    write_labelled_tone(tmp_path / "short.wav", ["low"], seconds=0.2, rate=8000)
    (tmp_path / "m.csv").write_text("path,labels,split\nlong.wav,high,train\nshort.wav,low,train\n")
    clips = load_clips(ManifestData(type="manifest", path=tmp_path / "m.csv"))
    ds = ClipDataset(clips, ["high", "low"], SR, 0.5, train=False)
    x, y = ds[0]
    assert x.shape == (8000,) and x.dtype == torch.float32 and y.tolist() == [1.0, 0.0]
    peak = np.abs(np.fft.rfft(x.numpy())).argmax() * SR / 8000
    assert abs(peak - 2500) < 5  # resampled 44.1 kHz -> 16 kHz keeps the tone's frequency
    xs, _ = ds[1]
    assert xs.shape == (8000,) and xs[:2000].abs().max() == 0 and xs[-2000:].abs().max() == 0  # centred padding
    assert torch.equal(ds[0][0], ds[0][0])  # centre crop is fixed
    train_ds = ClipDataset(clips, ["high", "low"], SR, 0.5, train=True)
    torch.manual_seed(0)
    crops = {train_ds[0][0][:100].sum().item() for _ in range(5)}
    assert len(crops) > 1  # random crops when training


def test_esc50_and_fsd50k_layouts(tmp_path: Path) -> None:
    esc = tmp_path / "ESC-50"
    (esc / "meta").mkdir(parents=True)
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        name = f"{fold}-1-A-0.wav"
        write_labelled_tone(esc / "audio" / name, ["low"], seconds=0.2)
        rows.append(f"{name},{fold},0,{'dog' if fold % 2 else 'rain'},True,1,A")
    (esc / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    clips = load_clips(Esc50Data(type="esc50", root=esc, val_fold=2, test_fold=3))
    assert [c.split for c in clips] == ["train", "val", "test", "train", "train"]
    assert clips[0].labels == ["dog"] and clips[0].path == esc / "audio" / "1-1-A-0.wav"
    assert ClipDataset(clips, ["dog", "rain"], SR, 0.5, train=False)[1][1].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="val_fold and test_fold are both 2"):
        Esc50Data(type="esc50", root=esc, val_fold=2, test_fold=2)

    fsd = tmp_path / "FSD50K"
    (fsd / "FSD50K.ground_truth").mkdir(parents=True)
    (fsd / "FSD50K.ground_truth" / "dev.csv").write_text('fname,labels,mids,split\n1,"Bark,Dog",/m/a,train\n2,Speech,/m/b,val\n')
    (fsd / "FSD50K.ground_truth" / "eval.csv").write_text('fname,labels,mids\n3,"Music,Speech","/m/c,/m/b"\n')
    for part, name in (("dev", 1), ("dev", 2), ("eval", 3)):
        write_labelled_tone(fsd / f"FSD50K.{part}_audio" / f"{name}.wav", ["mid"], seconds=0.3)
    clips = load_clips(Fsd50kData(type="fsd50k", root=fsd))
    assert [(c.labels, c.split) for c in clips] == [(["Bark", "Dog"], "train"), (["Speech"], "val"), (["Music", "Speech"], "test")]
    assert clips[2].path == fsd / "FSD50K.eval_audio" / "3.wav"
    ClipDataset(clips, label_set(clips), SR, 0.5, train=False)[2]


def test_synthetic_is_deterministic_and_labelled() -> None:
    spec = SyntheticData(type="synthetic", scenes=2, seed=3, duration_s=3.0, labels=["knock", "doorbell", "hvac_hum"])
    a, b = load_clips(spec), load_clips(spec)
    assert len(a) == 2 * 5 and all(c.audio is not None and c.audio.shape == (SR,) for c in a)
    assert all(np.array_equal(x.audio, y.audio) and x.labels == y.labels and x.split == y.split for x, y in zip(a, b))
    assert set(label_set(a)) <= {"knock", "doorbell", "hvac_hum"} and label_set(a)
    assert all(len(c.captions) == 3 and c.tagged for c in a)  # 3 s scenes: too short for 4 s caption clips
    longer = load_clips(spec.model_copy(update={"duration_s": 8.0}))
    captioned = [c for c in longer if not c.tagged]
    assert len(captioned) == 2 * 3 and all(c.audio.shape == (4 * SR,) and len(set(c.captions)) >= 1 for c in captioned)
    other = load_clips(spec.model_copy(update={"seed": 4}))
    assert not np.array_equal(a[0].audio, other[0].audio)
    assert len({c.split for c in a[:5]}) == 1  # a scene's windows stay in one split
    with pytest.raises(DataError, match="not generated"):
        load_clips(SyntheticData(type="synthetic", scenes=1, labels=["unicorn"]))


def test_sampler_shards_ranks_disjointly() -> None:
    r0, r1 = list(EpochSampler(10, seed=1, rank=0, world=2)), list(EpochSampler(10, seed=1, rank=1, world=2))
    assert len(r0) == len(r1) == 5 and sorted(r0 + r1) == list(range(10))
    weights = np.array([0.0] * 9 + [1.0])
    assert set(EpochSampler(10, seed=1, weights=weights)) == {9}


def test_train_config_errors(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"data": {"type": "csv"}, "output": "x", "model": {"labels": ["a"]}, "epochs": 0}))
    with pytest.raises(TrainConfigError) as err:
        load_train_config(tmp_path / "t.yaml")
    text = "\n".join(err.value.problems)
    assert "data.type: 'csv' is not allowed" in text and "model.labels" in text and "epochs" in text
    with pytest.raises(ValueError, match="stream_epochs = 2 leaves none of the 2 epochs to train the fusion"):
        TrainConfig.model_validate({"data": {"type": "synthetic"}, "output": "x", "epochs": 2, "schedule": {"type": "staged", "stream_epochs": 2}})
    with pytest.raises(ValueError, match="stream_epochs = 3 leaves none of the 3 epochs"):
        TrainConfig.model_validate(
            {"data": {"type": "synthetic"}, "output": "x", "epochs": 3, "schedule": {"type": "staged", "pretrain_epochs": 1, "stream_epochs": 2}}
        )
    assert main(["train", "--config", str(tmp_path / "t.yaml")]) == 2


# ---------------------------------------------------------------- training


def test_pretrain_stage_trains_only_the_self_supervised_streams(tmp_path: Path) -> None:
    config = TrainConfig.model_validate(
        {
            **tiny_config(tmp_path, tmp_path / "m.csv", epochs=4),
            "model": {"streams": ["e2e", "generative"], "layers": 1, "n_mels": 32},
            "schedule": {"type": "staged", "pretrain_epochs": 1, "stream_epochs": 2},
        }
    )
    assert loop.stage_plan(config) == ["pretrain", "streams", "streams", "fusion"]
    model = build_model(config, ["a", "b"])
    objective = loop.Objective(model, "pretrain", config)
    loop.set_stage(model, objective)
    loss, parts = objective(0.1 * torch.randn(3, 8000), torch.ones(3, 2))
    loss.backward()
    assert set(parts) == {"aux.generative.recon", "aux.generative.kl"}  # no label is used
    assert all(p.grad is None for p in model.streams["e2e"].parameters())
    assert any(p.grad is not None for p in model.streams["generative"].parameters())
    only_e2e = TrainConfig.model_validate({**config.model_dump(), "model": {"streams": ["e2e"], "n_mels": 32}})
    with pytest.raises(ValueError, match="none of the streams \\['e2e'\\] has a self-supervised loss"):
        loop.Objective(build_model(only_e2e, ["a"]), "pretrain", only_e2e)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One tiny `rtaudio train` run through the CLI (staged, mixup, balanced sampling)."""
    root = tmp_path_factory.mktemp("train")
    config = tiny_config(root, tone_manifest(root))
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(root / "train.yaml")]) == 0
    return root / "out", config


def test_train_writes_a_loadable_engines_dir_matching_pytorch(trained: tuple[Path, dict]) -> None:
    out, _ = trained
    model_dir = load_model_dir(out)
    info = model_dir.info
    assert info.labels == ["high", "low"] and info.window_s == 0.5 and info.streams == ["e2e"] and info.embedding_dim == 64
    assert len(info.thresholds) == 2 and info.extra["training"]["clips"] == {"train": 12, "val": 4}
    model, extra = load_checkpoint(out / "model.ckpt")
    assert extra["thresholds"] == info.thresholds
    model.eval()
    session = ort.InferenceSession(str(model_dir.onnx_path), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(out / "model.pt"))
    for batch in (1, 3):
        x = (0.1 * np.random.default_rng(batch).standard_normal((batch, 8000))).astype(np.float32)
        with torch.no_grad():
            scores, embedding = model(torch.from_numpy(x))
            ts_scores, _ = scripted(torch.from_numpy(x))
        got_scores, got_embedding = session.run(["scores", "embedding"], {"waveform": x})
        assert got_scores.shape == (batch, 2) and got_embedding.shape == (batch, 64)
        np.testing.assert_allclose(got_scores, scores.numpy(), atol=1e-4)
        np.testing.assert_allclose(got_embedding, embedding.numpy(), atol=1e-4)
        np.testing.assert_allclose(ts_scores.numpy(), scores.numpy(), atol=1e-5)
    last = torch.load(str(out / "checkpoints" / "last.ckpt"), weights_only=False)
    assert last["epoch"] == 1 and {"optimiser", "scheduler", "seed"} <= set(last)


def test_resume_continues_where_the_run_stopped_and_seed_fixes_weights(trained: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, base = trained
    reference = weights_sha256(load_checkpoint(out / "model.ckpt")[0])
    config = TrainConfig.model_validate({**base, "output": str(tmp_path / "out")})
    real_save, saved = loop._save, []

    def save_then_stop(*args: object) -> None:
        real_save(*args)
        saved.append(args[-1])
        raise KeyboardInterrupt  # the run dies right after its first checkpoint

    monkeypatch.setattr(loop, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    assert saved == [0]
    monkeypatch.setattr(loop, "_save", real_save)
    epochs_run, real_stage = [], loop.set_stage
    monkeypatch.setattr(loop, "set_stage", lambda model, objective: (epochs_run.append(objective.stage), real_stage(model, objective)))
    train(config.model_copy(update={"resume": True}))
    assert epochs_run == ["fusion"]  # only epoch 2 ran
    # interrupted + resumed == the uninterrupted run with the same seed
    resumed = load_checkpoint(tmp_path / "out" / "model.ckpt")[0]
    assert weights_sha256(resumed) == reference


def test_init_from_reuses_streams_with_a_new_label_set(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, base = trained
    source = load_checkpoint(out / "model.ckpt")[0].state_dict()
    manifest = tone_manifest(tmp_path, names=("low", "mid"), clips=6)
    config = TrainConfig.model_validate(
        {**tiny_config(tmp_path, manifest, epochs=1), "init_from": str(out), "model": {"dropout": 0.0}, "schedule": {"type": "joint"}}
    )
    model = build_model(config, ["low", "mid"])
    state = model.state_dict()
    assert model.config.labels == ["low", "mid"] and model.config.n_mels == 32 and model.config.dropout == 0.0
    streams = [k for k in source if k.startswith("streams.")]
    assert streams and all(torch.equal(state[k], source[k]) for k in streams)
    head = "fusion.classifier.weight"
    assert torch.equal(state[head][0], source[head][1])  # "low" was row 1 of (high, low)
    assert not torch.equal(state[head][1], source[head][0])  # "mid" is new
    train(config)
    tuned = load_model_dir(tmp_path / "out")
    assert tuned.info.labels == ["low", "mid"] and tuned.info.extra["training"]["init_from"] == str(out)
    with pytest.raises(ValueError, match="n_mels: 64 \\(source has 32\\)"):
        build_model(TrainConfig.model_validate({**tiny_config(tmp_path, manifest), "init_from": str(out), "model": {"n_mels": 64}}), ["low"])


def test_init_from_grows_a_stream_and_stage_one_trains_only_it(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = trained
    source = load_checkpoint(out / "model.ckpt")[0].state_dict()
    manifest = tone_manifest(tmp_path, clips=6)
    config = TrainConfig.model_validate(
        {
            **tiny_config(tmp_path, manifest, epochs=2),
            "init_from": str(out),
            "augment": {"mixup_alpha": 0.0},
            "model": {"streams": ["e2e", "timbre"], "stream_options": {"timbre": {}}},
            "schedule": {"type": "staged", "stream_epochs": 1, "streams": ["timbre"]},
        }
    )
    model = build_model(config, ["high", "low"])
    state = model.state_dict()
    assert model.config.streams == ["e2e", "timbre"] and model.config.n_mels == 32
    assert all(torch.equal(state[k], source[k]) for k in source if k.startswith("streams.e2e."))
    assert state["fusion.classifier.weight"].shape == (2, 128)  # rebuilt over both streams
    objective = loop.Objective(model, "streams", config)
    loop.set_stage(model, objective)
    loss, parts = objective(0.1 * torch.randn(3, 8000), torch.ones(3, 2))
    loss.backward()
    assert all(p.grad is None for p in model.streams["e2e"].parameters())
    assert any(p.grad is not None for p in model.streams["timbre"].parameters())
    with pytest.raises(ValueError, match="schedule.streams \\['pitch'\\] are not among"):
        TrainConfig.model_validate({**config.model_dump(mode="json"), "schedule": {"type": "staged", "stream_epochs": 1, "streams": ["pitch"]}})


def test_set_overrides_dotted_keys_with_yaml_values(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("data: {type: synthetic}\noutput: runs/a\ncaptions: {diffusion_weight: 0.0}\n")
    config = load_train_config(path, ["captions.diffusion_weight=0.5", "output=runs/b", "augment.gain_db=3"])
    assert config.captions.diffusion_weight == 0.5 and config.output == Path("runs/b") and config.augment.gain_db == 3.0
    for bad, says in ((["epochs"], "KEY=VALUE"), (["output.x=1"], "not a mapping"), (["captions.nope=1"], "captions.nope")):
        with pytest.raises(TrainConfigError, match=says):
            load_train_config(path, bad)


def test_manifest_with_a_byte_order_mark(tmp_path: Path) -> None:
    write_labelled_tone(tmp_path / "x.wav", ["low"])
    (tmp_path / "m.csv").write_bytes("path,labels\nx.wav,low\n".encode("utf-8-sig"))  # as Excel saves CSV
    assert load_clips(ManifestData(type="manifest", path=tmp_path / "m.csv"))[0].labels == ["low"]


def test_warns_at_start_when_there_is_no_validation_split(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = tone_manifest(tmp_path, clips=3)
    manifest.write_text(manifest.read_text().replace(",val\n", ",train\n"))
    config = TrainConfig.model_validate(tiny_config(tmp_path, manifest))
    with caplog.at_level("WARNING"):
        loop._datasets(config)
    assert "no validation clips" in caplog.text and "stay at 0.5" in caplog.text


def test_init_from_keeps_text_heads_only_while_the_streams_stay_frozen(text_model_dir: Path, tmp_path: Path) -> None:
    """Retraining the fusion over frozen streams without captions: keeps the source's caption and audio-text heads
    unchanged (they read only the streams); a schedule that trains the streams drops them."""
    from types import SimpleNamespace

    import torch

    from rtaudio.model.fused import load_checkpoint
    from rtaudio.train.loop import set_stage

    source, _ = load_checkpoint(text_model_dir / "model.ckpt")
    base = {"data": {"type": "synthetic", "scenes": 2}, "output": str(tmp_path / "out"), "init_from": str(text_model_dir)}
    frozen = TrainConfig.model_validate({**base, "schedule": {"type": "staged", "stream_epochs": 0, "freeze_streams": True}})
    model = build_model(frozen, source.config.labels)
    assert model.text is not None and model.config.text == source.config.text
    for (name, mine), theirs in zip(model.text.state_dict().items(), source.text.state_dict().values()):
        assert torch.equal(mine, theirs), name
    set_stage(model, SimpleNamespace(frozen=True, text_weights={}))
    assert not any(p.requires_grad for p in model.text.parameters()) and model.fusion.classifier.weight.requires_grad
    assert build_model(TrainConfig.model_validate({**base, "schedule": {"type": "joint"}}), source.config.labels).text is None
