"""The fused model's text heads: the caption decoder and the audio-text space, and their losses.

Both read what the tagger already computed for a batch: the decoder cross-attends to every
stream's frames (generative and discriminative alike), the audio projection maps the fused
embedding into the space the text encoder maps captions and queries to. ``losses`` is the
multi-task part of the training objective; the tagger's BCE is added by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from rtaudio.contract.tokenizer import CaptionTokenizer
from rtaudio.contract.vocab import Vocabulary
from rtaudio.model.caption_decoder import CaptionDecoder
from rtaudio.model.common import StreamOutput
from rtaudio.model.config import TextConfig
from rtaudio.model.retrieval import RetrievalHeads, info_nce


class TextHeads(nn.Module):
    """Caption decoder + audio projection + text encoder (+ the DiffATR generator when configured)."""

    def __init__(self, config: TextConfig, streams: Sequence[str], embedding_dim: int, dropout: float = 0.1):
        super().__init__()
        self.tokenizer = CaptionTokenizer(config.tokenizer)
        self.vocab = Vocabulary(config.words, config.word_max_len)
        self.decoder = CaptionDecoder(
            self.tokenizer.vocab_size,
            streams,
            dim=config.decoder_dim,
            layers=config.decoder_layers,
            ff=2 * config.decoder_dim,
            dropout=dropout,
            max_len=config.max_tokens,
        )
        self.space = RetrievalHeads(len(self.vocab), embedding_dim, config.shared_dim, config.diffusion_steps or None)

    def memory(self, streams: Mapping[str, StreamOutput]) -> torch.Tensor:
        """The decoder's memory: every stream's frames, projected and tagged by stream ``[B, S, dim]``."""
        return self.decoder.memory(streams)

    def losses(
        self, streams: Mapping[str, StreamOutput], embedding: torch.Tensor, tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, group: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Caption cross-entropy, audio-text InfoNCE (+ DiffATR generation loss) over the rows that have a caption.

        ``tokens [B, L]`` are BPE ids (``<bos> ... <eos>``), ``ids``/``mask [B, W]`` the same caption's
        words; rows of the same ``group`` (same sound content) are positives for each other, so a
        batch holding two windows of "a fan hums" does not push them apart.
        """
        rows = mask.any(dim=1)
        if not bool(rows.any()):
            return {}
        frames = {name: StreamOutput(out.frames[rows], out.pooled[rows]) for name, out in streams.items()}
        parts = {"caption": self.decoder.loss(self.memory(frames), tokens[rows])}
        audio = self.space.audio(embedding[rows])
        text = self.space.text(ids[rows], mask[rows])
        parts["retrieval"] = info_nce(audio, text, self.space.logit_scale(), group[rows], group[rows])
        if self.space.diffusion is not None:
            parts["diffusion"] = self.space.diffusion.loss(audio, text)
        return parts
