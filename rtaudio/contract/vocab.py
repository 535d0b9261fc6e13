"""Word vocabulary of the audio-text space: captions and queries -> word ids (torch-free).

Text is lower-cased and split into words; the vocabulary is built from the training captions
and saved as vocab.json next to the model, so the runtime tokenises a free-text query with
nothing but this module and the JSON file.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtaudio.contract.files import VOCAB_FILE

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
VOCAB_FORMAT = 1
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` ("A dog's bark!" -> ["a", "dog's", "bark"]); punctuation is dropped."""
    return _WORD.findall(text.lower())


def file_in(path: str | Path, name: str) -> Path:
    """``path`` itself, or the file ``name`` inside it when ``path`` is a directory (a model dir)."""
    path = Path(path)
    return path / name if path.is_dir() else path


def label_queries(labels: Sequence[str]) -> list[str]:
    """Each label as the free-text query a site would type ("smoke_alarm" -> "smoke alarm"): how
    training tunes the query threshold, eval scores zero-shot tagging and the bench times queries."""
    return [label.replace("_", " ") for label in labels]


class Vocabulary:
    """Word <-> id map built from training captions; ids 0 and 1 are ``<pad>`` and ``<unk>``."""

    def __init__(self, tokens: Sequence[str], max_len: int = 32):
        if list(tokens[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {list(tokens[:2])}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")
        self.tokens = list(tokens)
        self.max_len = max_len
        self.index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None, max_len: int = 32) -> Vocabulary:
        """Most frequent words first (ties alphabetical, so the same captions give the same ids)."""
        counts = Counter(word for caption in captions for word in words(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: max(0, max_size - 2)]
        return cls([PAD, UNK, *kept], max_len)

    def __len__(self) -> int:
        return len(self.tokens)

    def ids(self, text: str) -> list[int]:
        """Word ids of one text, cut to ``max_len``. Words the vocabulary lacks are dropped: the
        ``<unk>`` embedding never occurs in training, so it would only add noise to a query. A text
        with no known word is one ``<unk>``."""
        out = [self.index[word] for word in words(text) if word in self.index][: self.max_len]
        return out or [UNK_ID]

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` this vocabulary lacks (``ids`` drops them)."""
        return [word for word in words(text) if word not in self.index]

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """A batch -> ``ids`` and ``mask`` (int64 ``[B, L]``, L the longest text; mask 1 on real words)."""
        rows = [self.ids(text) for text in texts]
        length = max((len(row) for row in rows), default=1)
        ids = np.full((len(rows), length), PAD_ID, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
        return ids, mask

    def to_json(self) -> dict[str, Any]:
        return {
            "format": VOCAB_FORMAT,
            "kind": "rtaudio.words",
            "lowercase": True,
            "word_pattern": _WORD.pattern,
            "max_len": self.max_len,
            "tokens": self.tokens,
        }

    def save(self, path: str | Path) -> Path:
        """Write vocab.json (a file, or ``vocab.json`` inside a directory)."""
        path = file_in(path, VOCAB_FILE)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a saved vocabulary; refuses a file of another kind or format."""
        path = file_in(path, VOCAB_FILE)
        data = json.loads(path.read_text(encoding="utf-8"))
        missing = [k for k in ("format", "kind", "max_len", "tokens") if k not in data]
        if missing or data["kind"] != "rtaudio.words" or data["format"] != VOCAB_FORMAT:
            raise ValueError(
                f"{path}: not an rtaudio word vocabulary (missing {missing or 'nothing'}, kind {data.get('kind')!r}, format {data.get('format')!r})"
            )
        return cls(data["tokens"], int(data["max_len"]))
