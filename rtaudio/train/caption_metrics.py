"""Caption and audio-text retrieval metrics, computed offline in Python (no Java needed).

Captioning follows coco-caption (pycocoevalcap) so the numbers compare with published ones:
tokenise every caption (:func:`tokenize`), then corpus BLEU-1..4 (clipped n-gram precision,
brevity penalty against the closest reference length), ROUGE-L (LCS F-measure, beta 1.2, best
reference precision and recall), CIDEr-D (tf-idf n-grams 1..4 over the reference corpus,
clipped, Gaussian length penalty sigma 6, x10). METEOR and SPICE are Java programs: they run
when ``java`` and their jars are on this machine (nothing is downloaded) and are otherwise
reported as skipped with the reason.

Retrieval follows DCASE language-based audio retrieval: R@1/5/10 and mAP@10 in both directions
from a similarity matrix ``[n_audio, n_text]``; ties are ranked against the query (a constant
matrix scores as badly as possible, not perfectly).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Ngram = tuple[str, ...]
MAX_N = 4
ROUGE_BETA = 1.2
CIDER_SIGMA = 6.0
RECALL_AT = (1, 5, 10)
MAP_AT = 10

_CONTRACTION = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_KEPT_SYMBOLS = re.compile(r"([&$%#@+=])")  # PTB keeps these as tokens of their own
_NUMBER_SEPARATOR = re.compile(r"(?<=\d)[.,](?=\d)")
_WORD_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")
_WORD_SLASH = re.compile(r"(?<=\w)/(?=\w)")
# PTB writes brackets as -LRB- etc.; lowercased they miss coco-caption's punctuation list and stay
_BRACKETS = {b: f" \x02{name}\x02 " for b, name in zip("()[]{}", ("lrb", "rrb", "lsb", "rsb", "lcb", "rcb"))}
_OTHER_PUNCT = re.compile(r"[^\w\s&$%#@+=\x00\x01\x02\x03']")


def tokenize(caption: str) -> list[str]:
    """Lowercased PTB-like tokens with punctuation removed, as coco-caption's PTBTokenizer yields.

    Simplified Penn Treebank rules: contractions split off (``don't`` -> ``do n't``, ``dog's`` ->
    ``dog 's``), hyphenated and slashed words and numbers like 3.5 or 10,000 stay whole,
    ``& $ % # @ + =`` become their own tokens, brackets become ``-lrb-``/``-rrb-``... (coco-caption
    keeps those), and every other punctuation mark (the ones coco-caption drops: . , ? ! : ; - --
    ... and quotes) is removed. Stanford's tokenizer differs on rarer cases (URLs, emoticons).
    """
    text = caption.lower().replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = _CONTRACTION.sub(r" \1", text)
    text = _NUMBER_SEPARATOR.sub(lambda m: "\x00" if m.group() == "." else "\x01", text)
    text = _WORD_HYPHEN.sub("\x02", text)
    text = _WORD_SLASH.sub("\x03", text)
    text = "".join(_BRACKETS.get(ch, ch) for ch in text)
    text = _KEPT_SYMBOLS.sub(r" \1 ", text)
    text = _OTHER_PUNCT.sub(" ", text)
    tokens = []
    for raw in text.split():
        token = raw.replace("\x00", ".").replace("\x01", ",").replace("\x02", "-").replace("\x03", "/")
        if token.startswith("'") and token not in {"n't", "'s", "'re", "'ve", "'ll", "'d", "'m"}:
            token = token.strip("'")  # a quote mark, not a contraction
        else:
            token = token.rstrip("'") if not token.endswith("n't") else token
        if token:
            tokens.append(token)
    return tokens


def _ngrams(words: Sequence[str], n_max: int = MAX_N) -> Counter[Ngram]:
    return Counter(tuple(words[i : i + n]) for n in range(1, n_max + 1) for i in range(len(words) - n + 1))


def _check_pairs(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> None:
    if len(candidates) != len(references) or not candidates:
        raise ValueError(f"{len(candidates)} candidates for {len(references)} reference sets; need the same, at least one")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every candidate needs at least one reference caption")


def bleu(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> list[float]:
    """Corpus BLEU-1..4 over tokenised captions, as coco-caption's Bleu (option 'closest').

    Clipped n-gram matches and candidate n-grams are summed over the corpus; the brevity penalty
    compares the total candidate length with the sum of each candidate's closest reference length.
    """
    _check_pairs(candidates, references)
    tiny, small = 1e-15, 1e-9  # coco-caption's guards: 0 matches give ~0, not a division error
    correct, guess = [0] * MAX_N, [0] * MAX_N
    test_len = ref_len = 0
    for cand, refs in zip(candidates, references):
        max_ref: Counter[Ngram] = Counter()
        for ref in refs:
            max_ref |= _ngrams(ref)
        for gram, count in _ngrams(cand).items():
            correct[len(gram) - 1] += min(count, max_ref[gram])
        for k in range(MAX_N):
            guess[k] += max(0, len(cand) - k)
        test_len += len(cand)
        ref_len += min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
    scores, product = [], 1.0
    for k in range(MAX_N):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> float:
    """Mean ROUGE-L over candidates: LCS F-measure (beta 1.2) from the best precision and best recall."""
    _check_pairs(candidates, references)
    scores = []
    for cand, refs in zip(candidates, references):
        lcs = [_lcs(ref, cand) for ref in refs]
        p = max((m / len(cand) if cand else 0.0) for m in lcs)
        r = max((m / len(ref) if ref else 0.0) for m, ref in zip(lcs, refs))
        b2 = ROUGE_BETA**2
        scores.append((1 + b2) * p * r / (r + b2 * p) if p > 0 and r > 0 else 0.0)
    return float(np.mean(scores))


def cider_d(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> float:
    """Corpus CIDEr-D, as coco-caption's Cider: mean over candidates, x10.

    Document frequencies come from the references (one count per item). As in coco-caption,
    the length in the Gaussian penalty is the number of bigrams, and idf uses log(items), so a
    one-item corpus scores 0.
    """
    _check_pairs(candidates, references)
    ref_counts = [[_ngrams(r) for r in refs] for refs in references]
    df: Counter[Ngram] = Counter()
    for refs in ref_counts:
        df.update({g for counts in refs for g in counts})
    log_items = math.log(len(references))

    def vector(counts: Counter[Ngram]) -> tuple[list[dict[Ngram, float]], np.ndarray, int]:
        vec: list[dict[Ngram, float]] = [{} for _ in range(MAX_N)]
        for gram, tf in counts.items():
            vec[len(gram) - 1][gram] = tf * (log_items - math.log(max(1.0, df[gram])))
        norm = np.array([math.sqrt(sum(v * v for v in d.values())) for d in vec])
        return vec, norm, sum(tf for g, tf in counts.items() if len(g) == 2)

    scores = []
    for cand, refs in zip(candidates, ref_counts):
        v_c, n_c, len_c = vector(_ngrams(cand))
        total = np.zeros(MAX_N)
        for ref in refs:
            v_r, n_r, len_r = vector(ref)
            for k in range(MAX_N):
                dot = sum(min(w, v_r[k].get(g, 0.0)) * v_r[k].get(g, 0.0) for g, w in v_c[k].items())
                if n_c[k] != 0 and n_r[k] != 0:
                    dot /= n_c[k] * n_r[k]
                total[k] += dot * math.exp(-((len_c - len_r) ** 2) / (2 * CIDER_SIGMA**2))
        scores.append(float(total.mean()) / len(refs) * 10.0)
    return float(np.mean(scores))


@dataclass
class ExternalScore:
    """A metric computed by an external Java tool: a value, or the reason it was skipped."""

    value: float | None
    skipped: str | None = None


@dataclass
class CaptionScores:
    """Corpus caption metrics for one system."""

    bleu: list[float]  # BLEU-1..4
    rouge_l: float
    cider_d: float
    meteor: ExternalScore = field(default_factory=lambda: ExternalScore(None, "not requested"))
    spice: ExternalScore = field(default_factory=lambda: ExternalScore(None, "not requested"))

    def row(self) -> dict[str, float | None]:
        """Flat metric name -> value (None where skipped), for reports."""
        out: dict[str, float | None] = {f"bleu_{k + 1}": v for k, v in enumerate(self.bleu)}
        out.update(rouge_l=self.rouge_l, cider_d=self.cider_d, meteor=self.meteor.value, spice=self.spice.value)
        return out

    def skipped(self) -> dict[str, str]:
        """Metric name -> why it has no value."""
        return {n: s.skipped for n, s in (("meteor", self.meteor), ("spice", self.spice)) if s.skipped}


def caption_scores(candidates: Sequence[str], references: Sequence[Sequence[str]], external: bool = True, timeout_s: float = 600.0) -> CaptionScores:
    """All caption metrics for raw candidate captions against their raw reference captions."""
    cand = [tokenize(c) for c in candidates]
    refs = [[tokenize(r) for r in rs] for rs in references]
    scores = CaptionScores(bleu(cand, refs), rouge_l(cand, refs), cider_d(cand, refs))
    if external:
        scores.meteor = meteor(cand, refs, timeout_s)
        scores.spice = spice(cand, refs, timeout_s)
    return scores


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def find_tool(env: str, package_parts: tuple[str, ...]) -> tuple[Path | None, str | None]:
    """(jar, None) when java and the jar named by $env (else inside pycocoevalcap) exist, else (None, why)."""
    if shutil.which("java") is None:
        return None, "java is not on PATH"
    jar = Path(os.environ[env]) if os.environ.get(env) else _package_file("pycocoevalcap", *package_parts)
    if jar is None:
        return None, f"no jar: set {env} or pip install pycocoevalcap"
    if not jar.is_file():
        return None, f"{jar} does not exist"
    return jar, None


def meteor(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], timeout_s: float = 600.0) -> ExternalScore:
    """METEOR 1.5 (en, -norm) through its jar, as coco-caption drives it; skipped without java or jar."""
    jar, why = find_tool("RTAUDIO_METEOR_JAR", ("meteor", "meteor-1.5.jar"))
    if jar is None:
        return ExternalScore(None, why)
    _check_pairs(candidates, references)
    cmd = ["java", "-jar", "-Xmx2G", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"]
    try:
        with subprocess.Popen(cmd, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            stats = []
            for cand, refs in zip(candidates, references):
                line = " ||| ".join(["SCORE", *(" ".join(r) for r in refs), " ".join(cand)])
                proc.stdin.write(line.replace("\n", " ") + "\n")
                proc.stdin.flush()
                stats.append(proc.stdout.readline().strip())
            proc.stdin.write(" ||| ".join(["EVAL", *stats]) + "\n")
            proc.stdin.flush()
            for _ in candidates:
                proc.stdout.readline()  # per-caption scores; the corpus score follows
            value = float(proc.stdout.readline().strip())
            proc.stdin.close()
            proc.wait(timeout=timeout_s)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return ExternalScore(None, f"METEOR failed: {exc}")
    return ExternalScore(value)


def spice(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], timeout_s: float = 600.0) -> ExternalScore:
    """SPICE 1.0 through its jar; skipped without java, the jar or the Stanford CoreNLP 3.6.0 jars it needs."""
    jar, why = find_tool("RTAUDIO_SPICE_JAR", ("spice", "spice-1.0.jar"))
    if jar is None:
        return ExternalScore(None, why)
    corenlp = jar.parent / "lib" / "stanford-corenlp-3.6.0.jar"
    if not corenlp.is_file():
        return ExternalScore(None, f"{corenlp} missing (pycocoevalcap downloads it on first use; rtaudio downloads nothing)")
    _check_pairs(candidates, references)
    items = [{"image_id": i, "test": " ".join(c), "refs": [" ".join(r) for r in rs]} for i, (c, rs) in enumerate(zip(candidates, references))]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.json"), Path(tmp, "out.json")
        src.write_text(json.dumps(items))
        cmd = ["java", "-jar", "-Xmx8G", str(jar), str(src), "-out", str(dst), "-subset", "-silent"]
        try:
            subprocess.run(cmd, cwd=jar.parent, check=True, capture_output=True, timeout=timeout_s)
            results = json.loads(dst.read_text())
            return ExternalScore(float(np.nanmean([float(r["scores"]["All"]["f"]) for r in results])))
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            return ExternalScore(None, f"SPICE failed: {exc}")


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n_a, n_b] cosine similarities between the rows of two embedding matrices."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def _relevant_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1-based ranks of the relevant items, best score first; ties put irrelevant items ahead."""
    order = np.lexsort((relevant, -scores))
    return np.flatnonzero(relevant[order]) + 1


def _ap_at(ranks: np.ndarray, k: int) -> float:
    """AP@k: precision at each relevant hit within the top k, over min(relevant, k)."""
    hits = ranks[ranks <= k]
    return float(np.sum(np.arange(1, hits.size + 1) / hits) / min(ranks.size, k)) if ranks.size else 0.0


def _direction(sim: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    ranks = [_relevant_ranks(row, rel) for row, rel in zip(sim, relevant)]
    out = {f"r@{k}": float(np.mean([r.size > 0 and r[0] <= k for r in ranks])) for k in RECALL_AT}
    out[f"map@{MAP_AT}"] = float(np.mean([_ap_at(r, MAP_AT) for r in ranks]))
    return out


def retrieval_scores(sim: np.ndarray, text_audio: np.ndarray | Sequence[int]) -> dict[str, float]:
    """R@1/5/10 and mAP@10 for audio->text (``a2t_*``) and text->audio (``t2a_*``).

    ``sim`` is ``[n_audio, n_text]``; ``text_audio[j]`` is the audio index caption ``j`` describes
    (an audio may have several captions). An audio query hits at k when any of its captions is in
    the top k; its AP@10 divides by min(its caption count, 10). A text query has one relevant audio,
    so its AP@10 is the reciprocal rank (0 beyond 10), as in DCASE language-based retrieval.
    """
    s = np.asarray(sim, dtype=np.float64)
    owner = np.asarray(text_audio, dtype=np.int64)
    if s.ndim != 2 or owner.shape != (s.shape[1],):
        raise ValueError(f"sim {s.shape} must be [n_audio, n_text] with one audio index per text ({owner.shape})")
    if owner.size and (owner.min() < 0 or owner.max() >= s.shape[0]):
        raise ValueError(f"text_audio holds audio indices outside 0..{s.shape[0] - 1}")
    if not np.isfinite(s).all():
        raise ValueError("sim contains NaN or infinity")
    relevant = owner[None, :] == np.arange(s.shape[0])[:, None]  # [n_audio, n_text]
    out = {f"a2t_{k}": v for k, v in _direction(s, relevant).items()}
    out.update({f"t2a_{k}": v for k, v in _direction(s.T, relevant.T).items()})
    return out


def zero_shot_tagging(sim: np.ndarray, labels: np.ndarray | Sequence[int]) -> dict[str, float]:
    """Zero-shot tagging from clip-vs-class-name similarities ``[clips, classes]``.

    ``labels`` is one class index per clip (single-label: ``top1`` accuracy) or a multi-hot
    ``[clips, classes]`` array (``top1``: the best-scoring class is one of the clip's labels, and
    ``map``: macro AP over classes with positives, as :mod:`rtaudio.train.metrics` computes it).
    """
    s = np.asarray(sim, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 2 or not np.isfinite(s).all():
        raise ValueError(f"sim {s.shape} must be a finite [clips, classes] matrix")
    top = s.argmax(axis=1)
    if y.ndim == 1:
        if y.shape != (s.shape[0],) or y.min(initial=0) < 0 or y.max(initial=0) >= s.shape[1]:
            raise ValueError(f"labels {y.shape} must hold one class index in 0..{s.shape[1] - 1} per clip")
        return {"top1": float(np.mean(top == y))}
    if y.shape != s.shape:
        raise ValueError(f"multi-hot labels {y.shape} must match sim {s.shape}")
    # scikit-learn, needed only for the multi-label case
    from rtaudio.train.metrics import mean_ap

    return {"top1": float(np.mean(y[np.arange(len(top)), top] == 1)), "map": mean_ap(y, s)[0]}
