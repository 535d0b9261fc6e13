"""Caption tokenizer: byte-pair encoding learnt from the training captions, saved as tokenizer.json.

Training and encoding use the ``tokenizers`` package (a ``train`` dependency, imported lazily).
Decoding token ids back to text is pure Python over the vocabulary stored in the same
tokenizer.json, so the runtime, which only ever turns generated ids into a caption, needs
neither ``tokenizers`` nor torch. Words end in ``</w>`` (BPE end-of-word suffix), which is what
makes that decode a plain join.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rtaudio.contract.files import TOKENIZER_FILE
from rtaudio.contract.vocab import file_in

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3, in this order
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
END_OF_WORD = "</w>"

_SPACE_BEFORE = re.compile(r"\s+([,.;:!?])")
_APOSTROPHE = re.compile(r"\s*'\s*")
_HYPHEN = re.compile(r"(?<=\w)\s*-\s*(?=\w)")


def normalize_caption(text: str) -> str:
    """The text a caption decodes back to: lower case, single spaces, punctuation attached."""
    text = " ".join(text.lower().split())
    return _HYPHEN.sub("-", _APOSTROPHE.sub("'", _SPACE_BEFORE.sub(r"\1", text)))


def strip(ids: Sequence[int]) -> list[int]:
    """Ids up to (not including) the first ``<eos>``."""
    ids = list(ids)
    return ids[: ids.index(EOS_ID)] if EOS_ID in ids else ids


class CaptionTokenizer:
    """Caption text <-> token ids; ``<pad>``=0, ``<bos>``=1, ``<eos>``=2, ``<unk>``=3."""

    def __init__(self, config: dict[str, Any]):
        self.config = config  # the tokenizers-format JSON, kept whole so it can be saved and re-encoded
        vocab: dict[str, int] = config["model"]["vocab"]
        for added in config.get("added_tokens", []):
            vocab.setdefault(added["content"], added["id"])
        self.id_to_token = {i: token for token, i in vocab.items()}
        for i, token in enumerate(SPECIAL_TOKENS):
            if vocab.get(token) != i:
                raise ValueError(f"tokenizer: special token {token} must have id {i}, has {vocab.get(token)}")
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = range(4)
        self._encoder: Any = None

    @property
    def vocab_size(self) -> int:
        return max(self.id_to_token) + 1

    @classmethod
    def train(cls, captions: Iterable[str], vocab_size: int = 1000, min_frequency: int = 2) -> CaptionTokenizer:
        """Learn a BPE vocabulary (at most ``vocab_size``) from caption strings."""
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE(unk_token=UNK, end_of_word_suffix=END_OF_WORD))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS), end_of_word_suffix=END_OF_WORD, show_progress=False
        )
        tok.train_from_iterator(list(captions), trainer)
        return cls(json.loads(tok.to_str()))

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Caption -> ids, wrapped in ``<bos>``/``<eos>`` unless ``add_special`` is false."""
        if self._encoder is None:
            from tokenizers import Tokenizer

            self._encoder = Tokenizer.from_str(json.dumps(self.config))
        ids = self._encoder.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids, self.eos_id] if add_special else ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> caption (pure Python): stops at ``<eos>``, skips ``<pad>``/``<bos>``."""
        pieces = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            pieces.append(self.id_to_token.get(i, UNK))
        return normalize_caption("".join(pieces).replace(END_OF_WORD, " "))

    def save(self, path: str | Path) -> Path:
        """Write tokenizer.json (a file, or ``tokenizer.json`` inside a directory)."""
        path = file_in(path, TOKENIZER_FILE)
        path.write_text(json.dumps(self.config, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> CaptionTokenizer:
        """Read tokenizer.json (a file, or the one inside a directory); no ``tokenizers`` needed."""
        path = file_in(path, TOKENIZER_FILE)
        return cls(json.loads(path.read_text()))
