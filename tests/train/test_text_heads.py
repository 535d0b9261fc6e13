"""The fused model's text heads: joint multi-task training, export parity, and `rtaudio eval`'s text metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rtaudio.contract import load_model_dir
from rtaudio.contract.tokenizer import CaptionTokenizer
from rtaudio.contract.vocab import Vocabulary, label_queries
from rtaudio.model.config import ModelConfig, TextConfig
from rtaudio.model.fused import FusedTagger, load_checkpoint
from rtaudio.runtime.text_heads import Captioner, TextSpace
from rtaudio.train.caption_data import CaptionedDataset, sound_groups
from rtaudio.train.config import SyntheticData, TrainConfig
from rtaudio.train.data import Clip, ClipDataset
from rtaudio.train.evaluate import evaluate
from rtaudio.train.evaluate_text import caption_clips
from rtaudio.train.loop import Objective, _datasets

CAPTIONS = ["a dog barks", "a door slams then a dog barks", "water runs while a fan hums", "a quiet room"]
SR = 16000


def _tiny_model(diffusion_steps: int = 0) -> FusedTagger:
    tokenizer = CaptionTokenizer.train(CAPTIONS * 5, vocab_size=60, min_frequency=1)
    text = TextConfig(
        tokenizer=tokenizer.config,
        words=Vocabulary.build(CAPTIONS).tokens,
        caption_window_s=1.0,
        decoder_dim=32,
        decoder_layers=1,
        max_tokens=12,
        diffusion_steps=diffusion_steps,
    )
    return FusedTagger(ModelConfig(labels=["dog", "door"], streams=["e2e", "generative"], layers=1, text=text))


def _config(**captions: float) -> TrainConfig:
    return TrainConfig.model_validate({"data": {"type": "synthetic", "scenes": 1}, "output": "/tmp/unused", "captions": {"batch_size": 2, **captions}})


def _text_batch(model: FusedTagger, captions: list[str | None]) -> list[torch.Tensor]:
    clips = [Clip(None, ["dog"], "train", [c] if c else [], np.zeros(SR, np.float32), SR) for c in captions]
    data = CaptionedDataset(ClipDataset(clips, ["dog", "door"], SR, 1.0, train=False), model.text.tokenizer, model.text.vocab, 12)
    items = [data[i] for i in range(len(data))]
    return [torch.stack(column) for column in zip(*items)]


def test_caption_losses_train_the_streams_jointly() -> None:
    torch.manual_seed(0)
    model = _tiny_model(diffusion_steps=10).train()
    x = 0.1 * torch.randn(3, SR)
    _, y, *text = _text_batch(model, CAPTIONS[:3])
    objective = Objective(model, "joint", _config(diffusion_weight=0.5))
    loss, parts = objective(x, y, text)
    assert {"windows.caption", "windows.retrieval", "windows.diffusion", "fused", "streams"} <= set(parts)
    assert torch.isfinite(loss)
    model.zero_grad()
    out = model.run(x)
    sum(model.text.losses(out.streams, out.embedding, *text).values()).backward()  # the text losses alone
    assert model.streams["e2e"].encoder.project[0].weight.grad.abs().sum() > 0  # reach into the shared streams
    assert model.text.decoder.head.weight.grad.abs().sum() > 0
    assert model.fusion.classifier.weight.grad is None or model.fusion.classifier.weight.grad.abs().sum() == 0


def test_rows_without_a_caption_are_left_out_and_pretraining_has_no_text_loss() -> None:
    model = _tiny_model().train()
    x = 0.1 * torch.randn(3, SR)
    _, y, tokens, ids, mask, group = _text_batch(model, [None, None, None])
    assert not mask.any() and (tokens == 0).all()
    _, parts = Objective(model, "joint", _config())(x, y, [tokens, ids, mask, group])
    assert not any(k.startswith("windows.") for k in parts)
    _, y, *text = _text_batch(model, CAPTIONS[:3])
    _, parts = Objective(model, "pretrain", _config())(x, y, text)
    assert not any("caption" in k or "retrieval" in k for k in parts)


def test_same_sounds_share_a_group_and_caption_only_clips_are_no_tag_negatives(tmp_path: Path) -> None:
    clips = [
        Clip(None, ["a"], "train"),
        Clip(None, ["a"], "train"),
        Clip(None, [], "train"),
        Clip(None, [], "train", ["x"], tagged=False),
        Clip(None, [], "train", ["y"], tagged=False),
    ]
    groups = sound_groups(clips)
    assert groups[0] == groups[1] and groups[2] != groups[0] and len(set(groups[2:])) == 3
    spec = {"type": "synthetic", "scenes": 3, "duration_s": 6.0, "labels": ["knock", "hvac_hum"], "val_fraction": 0.0, "test_fraction": 0.0}
    config = TrainConfig.model_validate({"data": spec, "output": str(tmp_path), "captions": {}})
    _, by_split, caption_only = _datasets(config)
    assert by_split["train"] and all(c.tagged for c in by_split["train"])
    assert caption_only and not any(c.tagged for c in caption_only) and all(len(c.audio) == 4 * SR for c in caption_only)
    untrained = config.model_copy(update={"captions": None})
    assert _datasets(untrained)[2] == []  # a tagger alone never sees them


def test_mixup_with_captions_is_refused() -> None:
    with pytest.raises(ValueError, match="mixup"):
        TrainConfig.model_validate({"data": {"type": "synthetic"}, "output": "x", "captions": {}, "augment": {"mixup_alpha": 0.2}})


def test_exported_heads_match_pytorch(text_model_dir: Path) -> None:
    info = load_model_dir(text_model_dir).info
    parity = info.extra["text"]["parity"]
    assert parity["caption_tokens_equal"] == 1.0
    assert all(parity[k] <= parity["tolerance"][k] for k in parity["tolerance"])
    model, _ = load_checkpoint(text_model_dir / "model.ckpt")
    model.eval()
    # fresh inputs, not the ones checked at export: queries, window embeddings, whole captions
    queries = ["a dog barks twice", "knocking", "water dripping or leaking", "unheard-of words entirely"]
    space = TextSpace(text_model_dir)
    with torch.no_grad():
        expected = model.text.space.text(*(torch.from_numpy(a) for a in model.text.vocab.encode(queries))).numpy()
        embedding = torch.randn(5, info.embedding_dim)
        expected_audio = model.text.space.audio(embedding).numpy()
    np.testing.assert_allclose(space.texts(queries), expected, atol=1e-4)
    np.testing.assert_allclose(space.audio(embedding.numpy()), expected_audio, atol=1e-4)
    assert np.allclose(np.linalg.norm(space.texts(queries), axis=1), 1.0, atol=1e-5)
    captioner = Captioner(text_model_dir, info.extra["text"]["max_tokens"])
    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal((3, captioner.samples))).astype(np.float32)
    with torch.no_grad():
        out = model.run(torch.from_numpy(audio))
        ids = model.text.decoder.greedy(model.text.memory(out.streams), info.extra["text"]["max_tokens"] - 1)
    assert captioner(audio) == [model.text.tokenizer.decode(i) for i in ids]
    assert json.loads((text_model_dir / "vocab.json").read_text())["tokens"][:2] == ["<pad>", "<unk>"]


def test_eval_reports_caption_retrieval_and_zero_shot(text_model_dir: Path, tmp_path: Path) -> None:
    labels = load_model_dir(text_model_dir).info.labels
    spec = SyntheticData(type="synthetic", scenes=6, seed=11, duration_s=8.0, labels=list(labels), val_fraction=0.3, test_fraction=0.4)
    summary = evaluate(text_model_dir, spec, split="test", out=tmp_path, external_metrics=False)
    (text,) = summary["text"]
    captions, retrieval, zero = text["captions"], text["retrieval"], text["zero_shot"]
    assert captions["clips"] > 0 and captions["references"] == 3 * captions["clips"]
    assert all(0 <= captions[k] <= 1 for k in ("bleu_1", "bleu_4", "rouge_l")) and captions["cider_d"] >= 0
    assert captions["meteor"] is None and captions["skipped"]["meteor"]
    assert all(e["generated"] for e in captions["examples"])
    assert all(0 <= v <= 1 for v in retrieval.values() if isinstance(v, float))
    assert retrieval["t2a_r@1"] <= retrieval["t2a_r@5"] <= retrieval["t2a_r@10"]
    assert zero["queries"] == label_queries(labels) and 0 <= zero["top1"] <= 1 and 0 <= zero["map"] <= 1
    report = (tmp_path / "eval.md").read_text()
    assert "## Captions and free-text queries" in report and "Zero-shot tagging" in report


def test_caption_clips_prefers_caption_only_clips() -> None:
    tagged = Clip(None, ["a"], "test", ["a thing"])
    only = Clip(None, [], "test", ["b thing"], tagged=False)
    assert caption_clips([tagged, only]) == [only]
    assert caption_clips([tagged, Clip(None, ["a"], "test")]) == [tagged]
    assert label_queries(["smoke_alarm", "knock"]) == ["smoke alarm", "knock"]
