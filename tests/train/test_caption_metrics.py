"""Caption and retrieval metrics: hand-computed cases, and coco-caption (pycocoevalcap) cross-checks."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from rtaudio.train import caption_metrics as cm


def toks(*captions: str) -> list[list[str]]:
    return [c.split() for c in captions]


def test_tokenize_lowercases_splits_contractions_and_drops_punctuation() -> None:
    assert cm.tokenize("A dog barks, then a man's voice: \"Don't!\" (loudly).") == [
        "a",
        "dog",
        "barks",
        "then",
        "a",
        "man",
        "'s",
        "voice",
        "do",
        "n't",
        "-lrb-",
        "loudly",
        "-rrb-",
    ]
    assert cm.tokenize("Well-known 3.5 kHz tone & rain... -- really?") == ["well-known", "3.5", "khz", "tone", "&", "rain", "really"]
    assert cm.tokenize("The dogs' owner is 'happy'; runs/drips") == ["the", "dogs", "owner", "is", "happy", "runs/drips"]


def test_bleu_hand_computed() -> None:
    b = cm.bleu([["the", "cat", "sat", "on", "the", "mat"]], [toks("the cat is on the mat")])
    # matches 5/6, 3/5, 1/4, 0/3; equal lengths, so no brevity penalty
    assert b[:3] == pytest.approx([5 / 6, math.sqrt(0.5), 0.5], abs=1e-8)
    assert b[3] < 1e-4
    short = cm.bleu([["the", "cat"]], [toks("the cat sat on the mat")])
    assert short[0] == pytest.approx(math.exp(1 - 6 / 2), abs=1e-8)
    # the closest reference length (3, not 7) sets the penalty: none for a 4-word candidate
    assert cm.bleu([toks("a b c d")[0]], [toks("a b c", "a b c d e f g")])[0] == pytest.approx(1.0, abs=1e-8)


def test_identical_and_disjoint_captions() -> None:
    same = cm.caption_scores(["A dog barks twice."], [["a dog barks twice"]], external=False)
    assert same.bleu == pytest.approx([1.0] * 4, abs=1e-8)
    assert same.rouge_l == pytest.approx(1.0)
    other = cm.caption_scores(["rain on a roof"], [["two men talk loudly"]], external=False)
    assert other.bleu == pytest.approx([0.0] * 4, abs=1e-8)
    assert other.rouge_l == 0.0 and other.cider_d == 0.0


def test_rouge_l_hand_computed() -> None:
    assert cm.rouge_l([["the", "cat", "sat", "on", "the", "mat"]], [toks("the cat is on the mat")]) == pytest.approx(5 / 6)
    p, r, b2 = 2 / 3, 1 / 2, 1.2**2  # LCS("a b c", "a x b y") = 2
    assert cm.rouge_l([["a", "b", "c"]], [toks("a x b y", "q")]) == pytest.approx((1 + b2) * p * r / (r + b2 * p))


def test_cider_d_hand_computed() -> None:
    # two items, every n-gram in one item only: each weighs log 2; 1- and 2-grams match, no 3/4-grams
    assert cm.cider_d(toks("a b", "c d"), [toks("a b"), toks("c d")]) == pytest.approx(5.0)
    assert cm.cider_d(toks("a b c d", "e f g h"), [toks("a b c d"), toks("e f g h")]) == pytest.approx(10.0)
    # cosine sqrt(2/3) on unigrams, 1/sqrt(2) on bigrams, length (bigram count) 1 vs 2 under sigma 6
    first = 10 * (math.sqrt(2 / 3) + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    assert cm.cider_d(toks("a b", "y z"), [toks("a b x"), toks("y z")]) == pytest.approx((first + 5) / 2)
    # clipping: "a a" against "a b" counts min(2w, w) * w on the unigram, cosine 1/(2 sqrt 2), not 1/sqrt 2
    clipped = 10 * (1 / (2 * math.sqrt(2))) / 4
    assert cm.cider_d(toks("a a", "y z"), [toks("a b"), toks("y z")]) == pytest.approx((clipped + 5) / 2)
    assert cm.cider_d(toks("a b"), [toks("a b")]) == 0.0  # idf over a one-item corpus is zero, as in coco-caption


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="candidates"):
        cm.bleu(toks("a b"), [])
    with pytest.raises(ValueError, match="at least one reference"):
        cm.cider_d(toks("a b"), [[]])


def random_sets(seed: int) -> tuple[list[str], list[list[str]]]:
    rng = np.random.default_rng(seed)
    vocab = ["a", "dog", "cat", "barks", "meows", "man", "woman", "talks", "car", "engine", "rain", "falls", "loudly", "in", "the", "distance"]

    def sentence():
        return " ".join(rng.choice(vocab, rng.integers(1, 13)))

    n = int(rng.integers(2, 25))
    return [sentence() for _ in range(n)], [[sentence() for _ in range(rng.integers(1, 6))] for _ in range(n)]


@pytest.mark.parametrize("seed", range(20))
def test_matches_pycocoevalcap(seed: int) -> None:
    bleu_mod = pytest.importorskip("pycocoevalcap.bleu.bleu")
    cider_mod = pytest.importorskip("pycocoevalcap.cider.cider")
    rouge_mod = pytest.importorskip("pycocoevalcap.rouge.rouge")
    cands, refs = random_sets(seed)
    res = {i: [" ".join(cm.tokenize(c))] for i, c in enumerate(cands)}
    gts = {i: [" ".join(cm.tokenize(r)) for r in rs] for i, rs in enumerate(refs)}
    ours = cm.caption_scores(cands, refs, external=False)
    assert ours.bleu == pytest.approx(bleu_mod.Bleu(4).compute_score(gts, res, verbose=0)[0], rel=1e-9, abs=1e-12)
    assert ours.cider_d == pytest.approx(cider_mod.Cider().compute_score(gts, res)[0], rel=1e-9, abs=1e-12)
    assert ours.rouge_l == pytest.approx(rouge_mod.Rouge().compute_score(gts, res)[0], rel=1e-9, abs=1e-12)


def test_tokenize_matches_stanford_ptb_tokenizer() -> None:
    ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    if cm.shutil.which("java") is None:
        pytest.skip("java is not on PATH")
    caps = [
        "A car [x] passes {by}; birds chirp.",
        "Someone can't stop: $5 50% #1 a+b=c",
        "I'm sure they'll've gone, we'd",
        "rock-n-roll; it's 10,000 people - ok.",
        "A bird sings - twice -- then  stops",
    ]
    out = ptb.PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(caps)})
    assert [cm.tokenize(c) for c in caps] == [out[i][0].split(" ") for i in range(len(caps))]


def test_java_metrics_are_skipped_with_a_reason(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    scores = cm.caption_scores(["a dog"], [["a dog"]])
    assert scores.row()["meteor"] is None and scores.row()["spice"] is None
    assert scores.skipped() == {"meteor": "java is not on PATH", "spice": "java is not on PATH"}
    monkeypatch.undo()
    if cm.shutil.which("java"):
        monkeypatch.setenv("RTAUDIO_METEOR_JAR", str(tmp_path / "nope.jar"))
        assert "does not exist" in (cm.meteor(toks("a"), [toks("a")]).skipped or "")
        monkeypatch.setenv("RTAUDIO_SPICE_JAR", str(tmp_path / "spice-1.0.jar"))
        (tmp_path / "spice-1.0.jar").write_bytes(b"")
        assert "stanford-corenlp-3.6.0.jar missing" in (cm.spice(toks("a"), [toks("a")]).skipped or "")


@pytest.mark.skipif(not os.environ.get("RTAUDIO_TEST_METEOR"), reason="METEOR's JVM takes ~20 s; set RTAUDIO_TEST_METEOR=1")
def test_meteor_runs_when_installed() -> None:
    score = cm.meteor(toks("a dog barks loudly", "rain falls"), [toks("a dog barks loudly"), toks("two men talk")])
    assert score.skipped is None and score.value is not None and 0.0 < score.value < 1.0


def test_retrieval_hand_computed() -> None:
    sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7]])
    out = cm.retrieval_scores(sim, [0, 0, 1])
    # audio 0: its captions rank 1 and 3 (AP (1 + 2/3)/2); audio 1: its caption ranks 2 (AP 1/2)
    assert out["a2t_r@1"] == 0.5 and out["a2t_r@5"] == 1.0
    assert out["a2t_map@10"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    # texts find their audio at ranks 1, 2, 1
    assert out["t2a_r@1"] == pytest.approx(2 / 3) and out["t2a_r@10"] == 1.0
    assert out["t2a_map@10"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    perfect = cm.retrieval_scores(np.eye(15), np.arange(15))
    assert all(v == 1.0 for v in perfect.values())


def test_retrieval_ties_and_ranks_beyond_ten_score_zero() -> None:
    flat = cm.retrieval_scores(np.zeros((12, 12)), np.arange(12))
    assert flat["t2a_r@1"] == 0.0 and flat["t2a_r@10"] == 0.0 and flat["t2a_map@10"] == 0.0
    sim = -np.eye(12)  # every true pair ranks last (12th)
    out = cm.retrieval_scores(sim, np.arange(12))
    assert out["a2t_r@10"] == 0.0 and out["a2t_map@10"] == 0.0
    with pytest.raises(ValueError, match="outside"):
        cm.retrieval_scores(sim, np.full(12, 12))


def test_zero_shot_tagging() -> None:
    sim = np.array([[0.9, 0.1], [0.2, 0.3], [0.6, 0.4]])
    assert cm.zero_shot_tagging(sim, [0, 0, 0]) == {"top1": pytest.approx(2 / 3)}
    rng = np.random.default_rng(1)
    y = (rng.random((40, 5)) < 0.4).astype(int)
    y[0] = 1  # every class has a positive
    s = cm.cosine_similarity(rng.normal(size=(40, 8)) + y @ rng.normal(size=(5, 8)), rng.normal(size=(5, 8)))
    out = cm.zero_shot_tagging(s, y)
    assert out["map"] == pytest.approx(average_precision_score(y, s, average="macro"))
    assert out["top1"] == pytest.approx(np.mean(y[np.arange(40), s.argmax(1)]))
