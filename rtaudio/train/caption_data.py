"""Caption targets for the text heads: a clip's audio with one of its captions, as decoder
tokens (BPE) and as encoder words, plus the group of clips that sound the same.

Captions are tokenised once, up front. A training item draws one of the clip's captions at
random (torch's RNG, so the seed fixes it); evaluation always takes the first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch.utils.data import Dataset

from rtaudio.contract.tokenizer import CaptionTokenizer
from rtaudio.contract.vocab import Vocabulary
from rtaudio.model.caption_decoder import pad_captions
from rtaudio.train.data import Clip, ClipDataset

TextItem = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def train_captions(clips: Iterable[Clip]) -> list[str]:
    """Every caption of the training split (what the tokenizer and the word vocabulary learn from)."""
    return [caption for clip in clips if clip.split == "train" for caption in clip.captions]


def sound_groups(clips: Sequence[Clip]) -> list[int]:
    """One id per clip: tagged clips with the same label set share it (their captions describe the
    same sounds, so they are positives for each other); a caption-only clip without labels is its own group."""
    sets: dict[tuple[str, ...], int] = {}
    groups = []
    for i, clip in enumerate(clips):
        if clip.labels or clip.tagged:
            groups.append(sets.setdefault(tuple(sorted(clip.labels)), len(sets)))
        else:
            groups.append(-1 - i)
    return groups


class CaptionedDataset(Dataset):
    """``ClipDataset`` items with caption targets: ``(waveform, target, tokens [T], word_ids [W], word_mask [W], group)``.

    A clip without captions gets all-padding tokens and a zero mask (the heads skip its row).
    """

    def __init__(self, base: ClipDataset, tokenizer: CaptionTokenizer, vocab: Vocabulary, max_tokens: int):
        self.base, self.train = base, base.train
        self.tokens = [[tokenizer.encode(c)[:max_tokens] for c in clip.captions] for clip in base.clips]
        self.words = [[vocab.ids(c) for c in clip.captions] for clip in base.clips]
        self.groups = sound_groups(base.clips)
        self.max_tokens, self.max_words = max_tokens, vocab.max_len

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> TextItem:
        x, y = self.base[i]
        tokens = torch.zeros(self.max_tokens, dtype=torch.long)
        ids = torch.zeros(self.max_words, dtype=torch.long)
        mask = torch.zeros(self.max_words, dtype=torch.long)
        if self.tokens[i]:
            pick = int(torch.randint(len(self.tokens[i]), (1,))) if self.train else 0
            tokens = pad_captions([self.tokens[i][pick]], self.max_tokens)[0]
            words = self.words[i][pick]
            ids[: len(words)], mask[: len(words)] = torch.tensor(words), 1
        return x, y, tokens, ids, mask, torch.tensor(self.groups[i])
