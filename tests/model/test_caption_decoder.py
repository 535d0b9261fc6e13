"""Caption tokenizer and decoder: round trip, overfitting, beam vs greedy, ONNX parity of both decode forms."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from rtaudio.contract.tokenizer import SPECIAL_TOKENS, CaptionTokenizer, normalize_caption
from rtaudio.model.caption_decoder import BOS_ID, CaptionDecoder, pad_captions
from rtaudio.train.synth import make_captioned_scene

pytest.importorskip("tokenizers")
STREAMS = ["e2e", "generative"]  # one discriminative, one generative stream: both reach the memory
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def captions() -> list[str]:
    rng = np.random.default_rng(0)
    return [make_captioned_scene(rng, 4.0)[2] for _ in range(60)] + ["Someone's dog barks, then a door slams!"]


@pytest.fixture(scope="module")
def tokenizer(captions: list[str]) -> CaptionTokenizer:
    return CaptionTokenizer.train(captions, vocab_size=400)


def _memory(decoder: CaptionDecoder, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    frames = {"e2e": torch.randn(batch, 9, 64, generator=g), "generative": torch.randn(batch, 5, 64, generator=g)}
    return decoder.memory(frames)


def test_tokenizer_round_trip_and_save_load(tmp_path, tokenizer: CaptionTokenizer, captions: list[str]) -> None:
    assert [tokenizer.id_to_token[i] for i in range(4)] == list(SPECIAL_TOKENS)
    for caption in captions:
        ids = tokenizer.encode(caption)
        assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id and tokenizer.unk_id not in ids
        assert tokenizer.decode(ids) == normalize_caption(caption)
    assert tokenizer.decode(tokenizer.encode("Someone's dog barks, then a door slams!")) == "someone's dog barks, then a door slams!"
    loaded = CaptionTokenizer.load(tokenizer.save(tmp_path))
    ids = tokenizer.encode(captions[0])
    assert loaded.decode(ids + [tokenizer.pad_id] * 3) == normalize_caption(captions[0])
    assert loaded._encoder is None  # decoding is pure Python: the runtime needs no `tokenizers`
    assert loaded.encode(captions[0]) == ids
    assert tokenizer.vocab_size <= 400


def test_decoder_overfits_four_captions(tokenizer: CaptionTokenizer, captions: list[str]) -> None:
    torch.manual_seed(0)
    texts = list(dict.fromkeys(captions))[:4]
    targets = [tokenizer.encode(t) for t in texts]
    decoder = CaptionDecoder(tokenizer.vocab_size, STREAMS, dim=64, layers=2, heads=4, ff=128, dropout=0.0, max_len=24)
    g = torch.Generator().manual_seed(1)
    frames = {"e2e": torch.randn(4, 9, 64, generator=g), "generative": torch.randn(4, 5, 64, generator=g)}
    tokens = pad_captions(targets)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = decoder.loss(decoder.memory(frames), tokens)
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    decoder.eval()
    memory = decoder.memory(frames)
    assert loss.item() < first / 3
    greedy = decoder.greedy(memory)
    assert greedy == [t[1:-1] for t in targets]
    assert [tokenizer.decode(ids) for ids in greedy] == [normalize_caption(t) for t in texts]


def test_beam_width_one_is_greedy() -> None:
    torch.manual_seed(2)
    decoder = CaptionDecoder(50, STREAMS, dim=64, ff=128).eval()
    memory = _memory(decoder, 5, seed=3)
    assert decoder.beam(memory, width=1, max_tokens=12) == decoder.greedy(memory, max_tokens=12)
    wide = decoder.beam(memory, width=4, length_penalty=1.0, max_tokens=12)
    assert len(wide) == 5 and all(len(ids) <= 12 and BOS_ID not in ids for ids in wide)


def test_onnx_both_forms_match_pytorch(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from rtaudio.export.caption_onnx import CachedGreedy, FixedLengthGreedy, export_caption_onnx, time_greedy

    torch.manual_seed(4)
    decoder = CaptionDecoder(80, STREAMS, dim=64, ff=128, max_len=16).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_caption_onnx(decoder, tmp_path)
    assert not decoder.training
    for batch in (1, 3):
        memory = _memory(decoder, batch, seed=batch).detach()
        expected = decoder.greedy(memory, max_tokens=12)
        for runner in (CachedGreedy(tmp_path), FixedLengthGreedy(tmp_path)):
            result = runner(memory.numpy(), 12, stop_at_eos=False)
            assert result.tokens == expected, type(runner).__name__
            with torch.no_grad():  # teacher-forced PyTorch logits on the very ids the graph generated
                inputs = torch.cat([torch.full((batch, 1), BOS_ID), torch.from_numpy(result.generated[:, :-1])], dim=1)
                reference = decoder(inputs, memory).numpy()
            np.testing.assert_allclose(result.logits, reference, atol=1e-4, rtol=0)
    times = time_greedy(tmp_path, batch=2, memory_len=14, dim=64, tokens=5, repeats=2)
    assert set(times) == {"kv_cache", "fixed_length"} and all(t > 0 for t in times.values())
