"""Build the model to train: from scratch, or from a shipped model with the user's label set.

Fine-tuning (``init_from``) keeps the source's architecture and reuses every weight whose
shape fits (front-end, streams, fusion gate); the class-indexed heads are rebuilt for the new
labels, with the rows of labels the source already knew copied over. Text heads the source lacks start fresh; a source
with text heads passes on its tokenizer and word vocabulary so those weights fit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from rtaudio.contract.files import CHECKPOINT_FILE
from rtaudio.model.config import ModelConfig, TextConfig
from rtaudio.model.fused import FusedTagger, load_checkpoint
from rtaudio.train.config import StagedSchedule, TrainConfig
from rtaudio.train.pretrained import AISFX, fetch_aisfx, load_aisfx_state

if TYPE_CHECKING:
    from rtaudio.model.streams.pretrained import PretrainedStream

log = logging.getLogger(__name__)

CLASS_INDEXED = ("stream_heads.", "fusion.classifier.", "probe.linear.")
HEAD_SETTINGS = ("dropout", "probe_head")  # model settings a fine-tune may change: they leave the streams' weights as they are


def checkpoint_path(init_from: Path) -> Path:
    """``init_from`` may be a model dir (with model.ckpt) or the checkpoint itself."""
    path = init_from / CHECKPOINT_FILE if init_from.is_dir() else init_from
    if not path.is_file():
        raise FileNotFoundError(f"init_from {init_from}: no {CHECKPOINT_FILE} there; a model dir written by `rtaudio train` has one")
    return path


def text_config(config: TrainConfig, captions: Sequence[str], source: FusedTagger | None = None, labels: Sequence[str] = ()) -> TextConfig | None:
    """The text heads' config: the source model's (same vocabularies, so its heads' weights fit) or
    a BPE tokenizer and word vocabulary learnt from ``captions``; None when captions are not trained,
    except that a source's heads are kept as they are when its streams stay frozen (``keeps_streams``):
    they read only the streams, so retraining the tagger's fusion leaves them valid."""
    if config.captions is None:
        if source is not None and source.config.text is not None:
            if keeps_streams(config):
                log.info("init_from: keeping the source's caption and audio-text heads as they are (streams frozen, no captions: to train)")
                return source.config.text
            log.info(
                "init_from: the source's caption and audio-text heads are dropped: the streams train, so they would no "
                "longer fit; give captions: to retrain them"
            )
        return None
    if source is not None and source.config.text is not None:
        log.info("init_from: keeping the source's caption tokenizer and word vocabulary")
        return source.config.text
    if not captions:
        raise ValueError(
            "captions: the training split has no captions; give the data captions (manifest 'caption' column, "
            "audiocaps, clotho, synthetic captions_per_clip > 0) or set captions: null"
        )
    from rtaudio.contract.tokenizer import CaptionTokenizer
    from rtaudio.contract.vocab import Vocabulary, label_queries

    c = config.captions
    tokenizer = CaptionTokenizer.train(captions, vocab_size=c.tokenizer_size)
    words = Vocabulary.build(list(captions) + label_queries(labels))  # label names are words a query may use
    log.info("captions: BPE tokenizer of %d tokens and %d words from %d training captions", tokenizer.vocab_size, len(words), len(captions))
    return TextConfig(
        tokenizer=tokenizer.config,
        words=words.tokens,
        caption_window_s=c.window_s,
        decoder_dim=c.decoder_dim,
        decoder_layers=c.decoder_layers,
        max_tokens=c.max_tokens,
        diffusion_steps=c.diffusion_steps if c.diffusion_weight > 0 else 0,
    )


def keeps_streams(config: TrainConfig) -> bool:
    """Whether training leaves every stream as loaded: a staged schedule of fusion epochs only over frozen streams."""
    schedule = config.schedule
    return isinstance(schedule, StagedSchedule) and schedule.pretrain_epochs == 0 and schedule.stream_epochs == 0 and schedule.freeze_streams


def build_model(config: TrainConfig, labels: Sequence[str], captions: Sequence[str] = ()) -> FusedTagger:
    """A new ``FusedTagger`` for ``labels`` (with text heads when ``config.captions``), initialised
    from ``config.init_from`` when set; from scratch, a pretrained stream gets aisfx's weights (downloaded once)."""
    if config.init_from is None:
        return _with_aisfx(
            FusedTagger(ModelConfig(labels=list(labels), **config.model.model_dump(), text=text_config(config, captions, labels=labels))),
            set(config.model.streams),
        )
    source, _ = load_checkpoint(checkpoint_path(config.init_from))
    arch = source.config.model_dump(exclude={"labels", "text"})
    asked = config.model.model_dump(include=config.model.model_fields_set)
    wanted = asked.get("streams") or arch["streams"]
    added = [s for s in wanted if s not in arch["streams"]]
    dropped = [s for s in arch["streams"] if s not in wanted]
    if added or dropped:  # growing or shrinking the source: kept streams keep their weights, new ones start fresh
        options = asked.get("stream_options", {})
        arch["stream_options"] = {k: v for k, v in {**arch["stream_options"], **options}.items() if k in wanted}
        asked["stream_options"] = arch["stream_options"]
        arch["streams"] = wanted
        log.info("init_from: streams %s -> %s (added %s, dropped %s); the fusion is rebuilt", source.config.streams, wanted, added or "none", dropped or "none")
    conflicts = {k: (v, arch[k]) for k, v in asked.items() if k not in HEAD_SETTINGS and v != arch.get(k)}
    if conflicts:
        details = "; ".join(f"{k}: {v!r} (source has {s!r})" for k, (v, s) in conflicts.items())
        raise ValueError(f"init_from {config.init_from} fixes the architecture; model settings differ: {details}")
    arch.update({k: asked[k] for k in HEAD_SETTINGS if k in asked})
    text = text_config(config, captions, source, labels)
    if text is not None and source.config.text is not None and config.captions is not None:
        wanted = 0 if config.captions.diffusion_weight == 0 else config.captions.diffusion_steps
        text = text.model_copy(update={"diffusion_steps": wanted})
    model = FusedTagger(ModelConfig(labels=list(labels), **arch, text=text))
    reused, new = transfer(source, model, refit=bool(added or dropped))
    log.info("init_from %s: %d tensors reused, %d/%d labels new in the heads", config.init_from, reused, new, len(labels))
    return _with_aisfx(model, set(added))


def _with_aisfx(model: FusedTagger, fresh: set[str]) -> FusedTagger:
    """A fresh pretrained stream starts from aisfx's published weights (fetched once, SHA-256 checked)."""
    if "pretrained" in fresh and "pretrained" in model.streams:
        path = fetch_aisfx()
        cast("PretrainedStream", model.streams["pretrained"]).load_aisfx(load_aisfx_state(path))
        log.info("pretrained stream: aisfx %s weights from %s (%s, %s)", AISFX["version"], path, AISFX["licence"], AISFX["url"])
    return model


def transfer(source: FusedTagger, target: FusedTagger, refit: bool = False) -> tuple[int, int]:
    """Copy ``source``'s weights into ``target``; returns (tensors copied whole, labels new to the heads).

    ``refit`` (the target has other streams): tensors over all streams (fusion, text heads) whose
    shapes changed start fresh instead of failing."""
    old = {label: i for i, label in enumerate(source.config.labels)}
    pairs = [(i, old[label]) for i, label in enumerate(target.config.labels) if label in old]
    src, state, reused = source.state_dict(), target.state_dict(), 0
    for key, value in state.items():
        if key not in src:
            continue
        if refit and src[key].shape != value.shape and key.startswith(("fusion.", "text.")):
            continue
        if key.startswith(CLASS_INDEXED):
            if pairs:
                rows, old_rows = zip(*pairs)
                value[list(rows)] = src[key][list(old_rows)]
            continue
        if src[key].shape != value.shape:
            raise ValueError(f"cannot reuse {key}: source shape {tuple(src[key].shape)} vs {tuple(value.shape)}")
        value.copy_(src[key])
        reused += 1
    with torch.no_grad():
        target.load_state_dict(state)
    return reused, len(target.config.labels) - len(pairs)
