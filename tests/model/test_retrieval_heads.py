"""Audio-text heads: vocabulary, text encoder (and its ONNX graph), InfoNCE masking, the DiffATR
diffusion term, and a short training run on synthetic clips that must learn to retrieve."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rtaudio.contract.vocab import PAD_ID, UNK_ID, Vocabulary, words
from rtaudio.export.text_heads import export_text_encoder
from rtaudio.model.retrieval import (
    JointDiffusion,
    RetrievalTraining,
    cosine_alpha_bar,
    info_nce,
    recall_at_k,
    train_retrieval,
)
from rtaudio.model.text_encoder import TextEncoder

SOUNDS = ["dog", "siren", "doorbell", "drill", "kettle", "baby", "piano", "engine"]
MANNERS = ["loud", "quiet", "distant", "short"]
TEMPLATES = [
    "a {m} {s} is heard",
    "the sound of a {m} {s}",
    "you can hear a {m} {s}",
    "{m} noise from a {s}",
    "there is a {s} and it is {m}",
    "somebody recorded a {m} {s} nearby",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic_clips(
    clips_per_combo: int, captions_per_clip: int, seed: int, noise: float = 0.6, dim: int = 384
) -> tuple[torch.Tensor, list[str], list[int], list[tuple[int, int]]]:
    """Clips of (sound, manner) latent pairs: audio = sound prototype + manner prototype + noise
    (prototypes fixed, drawn from seed 1234), captions name both in varied phrasings."""
    protos = torch.Generator().manual_seed(1234)
    sound_protos, manner_protos = torch.randn(len(SOUNDS), dim, generator=protos), torch.randn(len(MANNERS), dim, generator=protos)
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    audio, captions, caption_clip, latents = [], [], [], []
    for s in range(len(SOUNDS)):
        for m in range(len(MANNERS)):
            for _ in range(clips_per_combo):
                audio.append(sound_protos[s] + 0.7 * manner_protos[m] + noise * torch.randn(dim, generator=g))
                latents.append((s, m))
                for template in rng.choice(TEMPLATES, captions_per_clip, replace=False):
                    captions.append(template.format(s=SOUNDS[s], m=MANNERS[m]))
                    caption_clip.append(len(audio) - 1)
    return torch.stack(audio), captions, caption_clip, latents


def test_words_and_unknown_words_are_dropped():
    assert words("A dog's BARK, then: silence!") == ["a", "dog's", "bark", "then", "silence"]
    vocab = Vocabulary.build(["a dog barks", "a dog growls", "the siren wails"])
    assert vocab.tokens[:3] == ["<pad>", "<unk>", "a"]  # most frequent first after the specials
    assert vocab.ids("A DOG meows") == [vocab.index["a"], vocab.index["dog"]]
    assert vocab.ids("meows purrs") == [UNK_ID]
    assert vocab.ids("") == [UNK_ID]
    ids, mask = vocab.encode(["the siren", "zebra zebra zebra"])
    assert ids.tolist() == [[vocab.index["the"], vocab.index["siren"]], [UNK_ID, PAD_ID]]
    assert mask.tolist() == [[1, 1], [1, 0]]


def test_vocabulary_round_trip_and_refuses_other_files(tmp_path):
    vocab = Vocabulary.build(["a dog barks twice", "a kettle whistles"], max_len=7)
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded.tokens == vocab.tokens and loaded.max_len == 7
    assert loaded.encode(["a kettle barks loudly"])[0].tolist() == vocab.encode(["a kettle barks loudly"])[0].tolist()
    (tmp_path / "bad.json").write_text('{"tokens": ["<pad>", "<unk>"]}')
    with pytest.raises(ValueError, match="not an rtaudio word vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(ValueError):
        Vocabulary(["dog", "<pad>", "<unk>"])


def test_text_encoder_ignores_padding_and_onnx_matches_torch():
    ort = pytest.importorskip("onnxruntime")
    vocab = Vocabulary.build(["a loud dog is heard", "the sound of a quiet siren nearby"])
    torch.manual_seed(0)
    encoder = TextEncoder(len(vocab)).eval()
    texts = ["a loud dog", "the sound of a quiet siren nearby and an unknown zebra", "", "dog"]
    with torch.no_grad():
        batch = encoder.embed_texts(vocab, texts)
        alone = encoder.embed_texts(vocab, texts[:1])
    assert batch.shape == (4, 128)
    assert torch.allclose(batch.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(alone[0], batch[0], atol=1e-5)  # padding does not change an embedding
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = export_text_encoder(encoder)
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    for chunk in (texts, texts[1:2], texts * 3):  # batch 4, 1, 12 and different lengths
        ids, mask = vocab.encode(chunk)
        (onnx_out,) = session.run(None, {"ids": ids, "mask": mask})
        with torch.no_grad():
            torch_out = encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        assert np.abs(onnx_out - torch_out).max() < 1e-4


def test_info_nce_is_lower_for_aligned_than_shuffled_pairs():
    torch.manual_seed(0)
    audio = F.normalize(torch.randn(16, 128), dim=-1)
    text = F.normalize(audio + 0.3 * torch.randn(16, 128), dim=-1)
    aligned = info_nce(audio, text, 10.0)
    shuffled = info_nce(audio, text[torch.roll(torch.arange(16), 3)], 10.0)
    assert aligned < shuffled - 1.0


def test_info_nce_multi_positive_masking_matches_hand_computation():
    audio = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    text = F.normalize(torch.tensor([[1.0, 0.1], [0.9, 0.3], [0.2, 1.0]]), dim=-1)
    clips, text_clip, scale = torch.tensor([7, 3]), torch.tensor([7, 7, 3]), 5.0
    loss = info_nce(audio, text, scale, clips, text_clip)
    logits = (scale * text @ audio.T).numpy()
    pos = np.array([[1, 0], [1, 0], [0, 1]], dtype=bool)

    def lse(x: np.ndarray) -> float:
        return math.log(np.exp(x).sum())

    t2a = np.mean([lse(logits[i]) - lse(logits[i][pos[i]]) for i in range(3)])
    # audio 0 has two captions: both are positives in the numerator, neither is a negative
    a2t = np.mean([lse(logits[:, j]) - lse(logits[:, j][pos[:, j]]) for j in range(2)])
    assert float(loss) == pytest.approx(0.5 * (t2a + a2t), rel=1e-5)
    # the naive diagonal view would call caption 1 (of clip 7) a negative of audio 0
    assert float(loss) < float(info_nce(audio, text, scale, torch.tensor([0, 1]), torch.tensor([0, 2, 1])))
    # a clip repeated in the batch is a positive of its captions, not a negative
    twice = info_nce(torch.cat([audio, audio[:1]]), text, scale, torch.tensor([7, 3, 7]), text_clip)
    assert torch.isfinite(twice)
    with pytest.raises(ValueError):
        info_nce(audio, text, scale)


def test_recall_at_k_by_hand_and_ties_count_against_the_query():
    audio = torch.eye(3)
    text = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0], [0.6, 0, 0.8]])
    recall = recall_at_k(audio, text, [0, 0, 1, 2], ks=(1, 2, 3))
    # text ranks: 0, 2 (caption 1 of clip 0 ties clip 2 and loses to clip 1), 0, 0
    assert [recall[f"t2a_R@{k}"] for k in (1, 2, 3)] == [0.75, 0.75, 1.0]
    # audio ranks: 0 (best of its two captions), 1 (caption 1 of clip 0 ties its own), 0
    assert recall["a2t_R@1"] == pytest.approx(2 / 3) and recall["a2t_R@2"] == 1.0
    collapsed = recall_at_k(torch.ones(4, 2), torch.ones(4, 2), [0, 1, 2, 3], ks=(1,))
    assert collapsed == {"t2a_R@1": 0.0, "a2t_R@1": 0.0}


def test_cosine_schedule_runs_from_signal_to_noise():
    alpha_bar = cosine_alpha_bar(50)
    assert alpha_bar.shape == (50,) and alpha_bar[0] > 0.99 and alpha_bar[-1] < 1e-3
    assert torch.all(alpha_bar[1:] < alpha_bar[:-1])


def test_diffusion_loss_decreases_and_samples_follow_the_condition():
    torch.manual_seed(0)
    audio = F.normalize(torch.randn(8, 128), dim=-1)
    text = F.normalize(torch.randn(8, 128), dim=-1)  # a fixed toy set of 8 pairs
    diffusion = JointDiffusion(128, steps=50, direction="text")
    optimiser = torch.optim.Adam(diffusion.parameters(), lr=2e-3)
    losses = []
    for _ in range(300):
        loss = diffusion.loss(audio, text)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-50:]) < 0.75 * np.mean(losses[:50])
    generated = diffusion.sample(audio, "text", torch.Generator().manual_seed(1))
    cosine = generated @ text.T
    assert float(cosine.diagonal().mean()) > float(cosine.mean()) + 0.3  # closer to its own pair's text


def _retrieval_run(
    diffusion_weight: float, steps: int = 100, noise: float = 4.5, seed: int = 0, test_clips_per_combo: int = 1
) -> tuple[dict[str, float], list[float], list[float]]:
    """Train on 6 clips per (sound, manner), evaluate on fresh clips; noise 4.5 keeps R@1 off the ceiling."""
    audio, captions, caption_clip, _ = synthetic_clips(clips_per_combo=6, captions_per_clip=3, seed=seed, noise=noise)
    options = RetrievalTraining(steps=steps, batch_size=64, diffusion_weight=diffusion_weight, seed=seed)
    heads, vocab, history = train_retrieval(audio, captions, caption_clip, options=options)
    test_audio, test_captions, test_clip, _ = synthetic_clips(test_clips_per_combo, captions_per_clip=2, seed=1000 + seed, noise=noise)
    with torch.no_grad():
        recall = recall_at_k(heads.audio(test_audio), heads.text.embed_texts(vocab, test_captions), test_clip)
    return recall, history.contrastive, history.generation


def test_training_learns_text_to_audio_retrieval_with_and_without_diffatr():
    chance = 1 / (len(SOUNDS) * len(MANNERS))  # one held-out clip per (sound, manner): 32 candidates
    plain, contrastive, generation = _retrieval_run(0.0)
    assert not generation
    assert np.mean(contrastive[-20:]) < 0.5 * np.mean(contrastive[:20])
    assert plain["t2a_R@1"] > 8 * chance and plain["a2t_R@1"] > 8 * chance
    joint, contrastive, generation = _retrieval_run(0.5)
    assert len(generation) == len(contrastive)
    assert np.mean(generation[-20:]) < np.mean(generation[:20])
    assert np.mean(contrastive[-20:]) < 0.5 * np.mean(contrastive[:20])
    assert joint["t2a_R@1"] > 8 * chance
