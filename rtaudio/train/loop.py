"""``rtaudio train``: data -> FusedTagger -> staged or joint training -> thresholds -> engines dir.

One loop serves one process or a ``torchrun`` DDP group. Randomness is reseeded at every
epoch from (seed, epoch, rank), so a run resumed from its last checkpoint continues exactly
as the uninterrupted run would have (and same seed -> same weights on CPU).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from rtaudio.model.fused import FusedTagger, save_checkpoint
from rtaudio.train import ddp
from rtaudio.train.augment import augment_batch
from rtaudio.train.caption_data import CaptionedDataset, train_captions
from rtaudio.train.config import JointSchedule, StagedSchedule, TrainConfig
from rtaudio.train.data import SPLITS, Clip, ClipDataset, DataError, EpochSampler, balanced_weights, label_set, load_clips
from rtaudio.train.finetune import build_model
from rtaudio.train.labels import event_median_windows

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
QUERY_THRESHOLD = 0.5  # cosine similarity, when there is no validation data to tune it on


def stage_plan(config: TrainConfig) -> list[str]:
    """The stage of every epoch: ['pretrain'], 'streams' then 'fusion' (staged), or 'joint'."""
    if isinstance(config.schedule, StagedSchedule):
        pre, first = config.schedule.pretrain_epochs, config.schedule.stream_epochs
        return ["pretrain"] * pre + ["streams"] * first + ["fusion"] * (config.epochs - pre - first)
    return ["joint"] * config.epochs


def lr_factor(step: int, steps_per_epoch: int, plan: list[str], warmup: float) -> float:
    """Linear warm-up then cosine decay, restarted at each stage (the fusion head starts fresh)."""
    epoch = min(step // steps_per_epoch, len(plan) - 1)
    first = plan.index(plan[epoch])
    length = plan.count(plan[epoch]) * steps_per_epoch
    p = (step - first * steps_per_epoch + 1) / length
    if p < warmup:
        return p / warmup
    return max(0.01, 0.5 * (1 + math.cos(math.pi * min(1.0, (p - warmup) / (1 - warmup)))))


class Objective(nn.Module):
    """The training loss of one stage, as a module so DDP can wrap it (DDP syncs through ``forward``)."""

    def __init__(self, model: FusedTagger, stage: str, config: TrainConfig):
        super().__init__()
        self.model, self.stage = model, stage
        self.aux_weights = config.aux_weights
        self.stream_weight = config.schedule.stream_loss_weight if isinstance(config.schedule, JointSchedule) else 1.0
        self.frozen = stage == "fusion" and isinstance(config.schedule, StagedSchedule) and config.schedule.freeze_streams
        self.only = [name for name, s in model.streams.items() if s.self_supervised] if stage == "pretrain" else None
        if stage == "streams" and isinstance(config.schedule, StagedSchedule) and config.schedule.streams:
            self.only = list(config.schedule.streams)
        self.distill = config.distill
        c = config.captions
        self.text_weights = {"caption": c.caption_weight, "retrieval": c.retrieval_weight, "diffusion": c.diffusion_weight} if c else {}
        if self.only == []:
            raise ValueError(f"schedule.pretrain_epochs: none of the streams {list(model.streams)} has a self-supervised loss (generative, codes do)")

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, text: Sequence[torch.Tensor] = (), captions: Sequence[torch.Tensor] = (), teacher: Sequence[torch.Tensor] = ()
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Tagging loss of the batch ``x, y``; with text heads (not in pretraining) also the text losses
        of its captions ``text`` (tokens, word ids, word mask, group) and of a caption-only batch
        ``captions`` (waveform, then the same four); with distillation ``teacher`` holds (labelled,
        teacher embedding, teacher logits, has teacher) per row."""
        from rtaudio.train.distill import kd_loss, masked_bce, similarity_loss

        out = self.model.run(x, self.only)
        labelled = teacher[0] if teacher else torch.ones(len(x), device=x.device)
        parts: dict[str, torch.Tensor] = {}
        if self.stage in ("streams", "joint"):
            parts["streams"] = self.stream_weight * _sum(masked_bce(logits, y, labelled) for logits in out.stream_logits.values())
        if self.stage in ("fusion", "joint"):
            parts["fused"] = masked_bce(out.logits, y, labelled)
        if teacher and self.distill is not None and self.stage != "pretrain":
            _, t_emb, t_logits, has = teacher
            d = self.distill
            students = list(out.stream_logits.values()) if self.stage == "streams" else [out.logits]
            parts["kd"] = d.kd_weight * _sum(kd_loss(s, t_logits, has, d.temperature) for s in students) / len(students)
            if not self.frozen:
                parts["kd_embedding"] = d.embedding_weight * similarity_loss(out.embedding, t_emb, has)
        if not self.frozen:
            parts.update({f"aux.{k}": self.aux_weights.get(k, 1.0) * v for k, v in out.aux.items()})
        heads = self.model.text
        if heads is not None and self.stage != "pretrain" and self.text_weights:
            batches = [(out, text)] if text else []
            if captions:
                batches.append((self.model.run(captions[0]), captions[1:]))
            for source, (run, targets) in zip(("windows", "clips"), batches):
                for key, value in heads.losses(run.streams, run.embedding, *targets).items():
                    parts[f"{source}.{key}"] = self.text_weights[key] * value
        loss = _sum(parts.values())
        return loss, {k: v.detach() for k, v in parts.items()}


def _sum(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """``sum`` of loss terms, typed as what it is: a tensor (there is always a term)."""
    return cast(torch.Tensor, sum(terms))


def set_stage(model: FusedTagger, objective: Objective) -> None:
    """Train mode; frozen streams (and front-end) get no gradients and keep their BatchNorm statistics.

    Gradients are set before ``train()`` so that a stream's own ``train`` can re-freeze what it keeps
    fixed (the pretrained stream's CNN blocks)."""
    for module in (model.frontend, model.streams):
        module.requires_grad_(not objective.frozen)
    if model.probe is not None:  # a fitted linear probe: the rest learns what it misses
        model.probe.requires_grad_(False)
    if model.text is not None and not objective.text_weights:  # heads kept from init_from without captions: to train
        model.text.requires_grad_(False)
    model.train()
    if objective.frozen:
        model.frontend.eval()
        model.streams.eval()


def seed_all(seed: int, epoch: int, rank: int) -> torch.Generator:
    """Reseed every RNG for this epoch and rank; returns the augmentation generator."""
    mixed = (seed * 1_000_003 + epoch * 1009 + rank) % 2**31
    torch.manual_seed(mixed)
    np.random.seed(mixed)
    random.seed(mixed)
    return torch.Generator().manual_seed(mixed + 1)


def weights_sha256(model: nn.Module) -> str:
    """Hash of the parameters (in name order), to compare ranks and runs."""
    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def predict(model: FusedTagger, dataset: ClipDataset, batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode scores ``[clips, classes]`` and fused embeddings ``[clips, E]`` of every clip of ``dataset``."""
    model.eval()
    scores, embeddings = [], []
    with torch.no_grad():
        for x, _ in DataLoader(dataset, batch_size=batch_size):
            out = model.run(x.to(device))
            scores.append(torch.sigmoid(out.logits).cpu().numpy())
            embeddings.append(out.embedding.cpu().numpy())
    if not scores:
        return np.zeros((0, len(dataset.labels)), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(scores), np.concatenate(embeddings)


def query_threshold(model: FusedTagger, y: np.ndarray, embeddings: torch.Tensor) -> tuple[float, np.ndarray]:
    """One cosine-similarity threshold for free-text queries, and the class-name similarities it came from.

    Each label's name ("smoke_alarm" -> "smoke alarm") is a query against every validation window;
    the threshold is the F1-optimal one over all (window, label) pairs, so a site's own queries,
    which have no validation data, start from a threshold measured on queries that do.
    """
    from rtaudio.contract.vocab import label_queries
    from rtaudio.train.metrics import tune_thresholds

    heads = model.text
    assert heads is not None  # asked of models with text heads only
    names = label_queries(model.config.labels)
    with torch.no_grad():
        text = heads.space.text(*(torch.from_numpy(a).to(embeddings.device) for a in heads.vocab.encode(names)))
        sims = (heads.space.audio(embeddings) @ text.T).cpu().numpy()
    threshold = tune_thresholds(y.reshape(-1, 1), sims.reshape(-1, 1), default=QUERY_THRESHOLD, bounds=(0.0, 0.95))[0]
    return float(threshold), sims


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def train(config: TrainConfig) -> Path | None:
    """Train as configured; returns the exported model dir on rank 0 (None on the others)."""
    dist = ddp.setup(config.device)
    try:
        return _train(config, dist)
    finally:
        ddp.teardown(dist)


def _datasets(config: TrainConfig) -> tuple[list[str], dict[str, list[Clip]], list[Clip]]:
    """The data's labels, its tagged clips by split and its caption-only training clips."""
    clips = load_clips(config.data_specs)
    tagged = [c for c in clips if c.tagged]
    by_split = {s: [c for c in tagged if c.split == s] for s in SPLITS}
    if not by_split["train"]:
        raise DataError(f"no tagged clips in the 'train' split (of {len(clips)}); check the split column or fractions")
    if not by_split["val"]:
        log.warning(
            "no validation clips (no 'val' rows in the data's split column, or val_fraction 0): the per-label thresholds "
            "will stay at 0.5; give the manifest some 'val' rows to tune them"
        )
    labels = label_set(tagged)
    if not labels:
        raise DataError("the data has no labels at all; a manifest's labels column holds ';'-separated names")
    caption_only = [c for c in clips if not c.tagged and c.split == "train" and c.captions]
    return labels, by_split, caption_only if config.captions is not None else []


def endless(loader: DataLoader, sampler: EpochSampler) -> Iterator[Any]:
    """Batches of ``loader`` without end, a new epoch order each pass."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _train(config: TrainConfig, dist: ddp.Dist) -> Path | None:
    seed_all(config.seed, -1, 0)  # model initialisation: identical on every rank
    labels, by_split, caption_only = _datasets(config)
    captions = train_captions(by_split["train"] + caption_only) if config.captions is not None else []
    model = build_model(config, labels, captions).to(dist.device)
    unknown_aux = sorted(k for k in config.aux_weights if k.split(".")[0] not in model.config.streams)
    if unknown_aux:
        raise ValueError(f"aux_weights {unknown_aux} name no stream of this model ({', '.join(model.config.streams)}); keys are '<stream>.<loss>'")
    mc = model.config
    train_set = ClipDataset(by_split["train"], labels, mc.sample_rate, mc.window_s, train=True)
    val_set = ClipDataset(by_split["val"], labels, mc.sample_rate, mc.window_s, train=False)
    heads, caption_batches = (model.text if config.captions is not None else None), None  # kept heads do not train
    data: Any = train_set
    if heads is not None:
        assert mc.text is not None  # the text heads are built from it
        data = CaptionedDataset(train_set, heads.tokenizer, heads.vocab, mc.text.max_tokens)
    weights = balanced_weights(train_set.targets()) if config.augment.balanced else None
    if config.distill is not None or model.probe is not None:
        distilled = _teacher_data(config, model, train_set, labels, mc.hop_s)
    if config.distill is not None:
        data = distilled
        if weights is not None:  # unlabelled clips are drawn as often as an average labelled one
            extra = len(data) - len(train_set)
            weights = np.concatenate([weights * len(train_set), np.ones(extra)]) / (len(train_set) + extra)
    sampler = EpochSampler(len(data), config.seed, dist.rank, dist.world, weights)
    loader = DataLoader(data, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers)
    if heads is not None and caption_only and config.captions is not None and config.captions.batch_size:
        assert mc.text is not None
        clip_set = CaptionedDataset(
            ClipDataset(caption_only, labels, mc.sample_rate, mc.text.caption_window_s, train=True), heads.tokenizer, heads.vocab, mc.text.max_tokens
        )
        clip_sampler = EpochSampler(len(clip_set), config.seed + 1, dist.rank, dist.world)
        caption_batches = endless(DataLoader(clip_set, batch_size=config.captions.batch_size, sampler=clip_sampler, num_workers=config.workers), clip_sampler)
        log.info("captions: %d caption-only training clips of %.1f s, %d per step", len(clip_set), mc.text.caption_window_s, config.captions.batch_size)
    plan, steps = stage_plan(config), len(loader)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: lr_factor(step, steps, plan, config.warmup_fraction))
    start = _resume(config, model, optimiser, scheduler) if config.resume else 0
    log.info(
        "rank %d/%d on %s: %d train / %d val clips, %d labels, streams %s, %s schedule, epochs %d-%d",
        dist.rank,
        dist.world,
        dist.device,
        len(train_set),
        len(val_set),
        len(labels),
        ",".join(mc.streams),
        config.schedule.type,
        start + 1,
        config.epochs,
    )
    wrapped: dict[str, nn.Module] = {}
    with _progress(dist.main) as progress:
        task = progress.add_task("training", total=(config.epochs - start) * steps, loss=float("nan"), lr=config.lr)
        for epoch in range(start, config.epochs):
            objective = Objective(model, plan[epoch], config)
            set_stage(model, objective)
            if plan[epoch] not in wrapped:  # DDP registers the trainable parameters when built; staged leaves some unused
                wrapped[plan[epoch]] = (
                    DistributedDataParallel(objective, find_unused_parameters=plan[epoch] != "joint" or model.text is not None) if dist.enabled else objective
                )
            step_fn, gen = wrapped[plan[epoch]], seed_all(config.seed, epoch, dist.rank)
            sampler.set_epoch(epoch)
            total, count = 0.0, 0
            sums: dict[str, float] = {}
            progress.update(task, description=f"epoch {epoch + 1}/{config.epochs} {plan[epoch]}")
            for x, y, *text in loader:
                teacher, text = (text, []) if config.distill is not None else ([], text)
                x, y = augment_batch(x, y, config.augment, gen, mc.sample_rate)
                clips: list[torch.Tensor] = []
                if caption_batches is not None and plan[epoch] != "pretrain":
                    xc, yc, *targets = next(caption_batches)
                    clips = [augment_batch(xc, yc, config.augment, gen, mc.sample_rate)[0], *targets]
                device = dist.device
                loss, parts = step_fn(x.to(device), y.to(device), [t.to(device) for t in text], [t.to(device) for t in clips], [t.to(device) for t in teacher])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                scheduler.step()
                total, count = total + float(loss.detach()) * len(x), count + len(x)
                for key, value in parts.items():
                    sums[key] = sums.get(key, 0.0) + float(value) * len(x)
                progress.update(task, advance=1, loss=total / count, lr=scheduler.get_last_lr()[0])
            detail = ", ".join(f"{key} {value / max(count, 1):.4f}" for key, value in sorted(sums.items()))
            log.info("epoch %d/%d (%s): loss %.4f (%s)", epoch + 1, config.epochs, plan[epoch], total / max(count, 1), detail)
            if dist.main:
                _save(config, model, optimiser, scheduler, epoch)
            dist.barrier()
    log.info("rank %d weights sha256 %s", dist.rank, weights_sha256(model))
    if not dist.main:
        return None
    return _finish(config, model, val_set, len(train_set), dist.device)


def _teacher_data(config: TrainConfig, model: FusedTagger, train_set: ClipDataset, labels: list[str], hop_s: float) -> Dataset:
    """The teacher's outputs over the training windows (cached on disk, computed on first use): a linear probe on
    them fills the model's probe head; distillation trains on the returned windows (``rtaudio.train.distill``)."""
    from rtaudio.train.distill import DistillDataset, fit_probe, load_probe_head, memory_window_set, teacher_logits, unlabelled_clips
    from rtaudio.train.teacher import aisfx_teacher, build_teacher_cache

    d = config.distill
    unlabelled = unlabelled_clips(d.unlabelled) if d is not None else []
    files = [c for c in train_set.clips if c.path is not None]
    model_rate, window_s = train_set.sample_rate, train_set.samples / train_set.sample_rate
    teacher = aisfx_teacher(model_rate)
    cache = build_teacher_cache(files + unlabelled, teacher, model_rate, window_s, hop_s, (d.cache if d is not None else None) or config.output / "teacher.npz")
    memory = [c for c in train_set.clips if c.path is None]  # synthetic scenes: the probe learns their labels too
    probe = fit_probe(cache, files, labels, memory_window_set(teacher, memory, labels, model_rate, window_s, hop_s))
    if model.probe is not None:
        load_probe_head(model, probe)
    log.info(
        "teacher: %d labelled and %d unlabelled clips cached, %d in memory embedded for the probe only",
        len(files),
        len(unlabelled),
        len(train_set.clips) - len(files),
    )
    return DistillDataset(train_set, unlabelled, cache, teacher_logits(probe, cache), window_s, hop_s)


def _save(config: TrainConfig, model: FusedTagger, optimiser: torch.optim.Optimizer, scheduler: Any, epoch: int) -> None:
    path = config.output / LAST_CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_checkpoint(
        model,
        tmp,
        optimiser=optimiser.state_dict(),
        scheduler=scheduler.state_dict(),
        epoch=epoch,
        seed=config.seed,
        train_config=config.model_dump(mode="json"),
    )
    tmp.replace(path)  # a crash mid-write leaves the previous checkpoint intact


def _resume(config: TrainConfig, model: FusedTagger, optimiser: torch.optim.Optimizer, scheduler: Any) -> int:
    """Load the last checkpoint if there is one; returns the first epoch still to run."""
    path = config.output / LAST_CHECKPOINT
    if not path.is_file():
        log.info("resume: no %s yet, starting from epoch 1", path)
        return 0
    data = torch.load(str(path), map_location="cpu", weights_only=False)
    if data["config"]["labels"] != list(model.config.labels):
        raise ValueError(f"resume: {path} was trained on other labels ({data['config']['labels']}); use a new output folder")
    model.load_state_dict(data["state_dict"])
    optimiser.load_state_dict(data["optimiser"])
    scheduler.load_state_dict(data["scheduler"])
    log.info("resume: %s, continuing after epoch %d", path, data["epoch"] + 1)
    return data["epoch"] + 1


def _finish(config: TrainConfig, model: FusedTagger, val_set: ClipDataset, n_train: int, device: torch.device) -> Path:
    """F1-optimal thresholds on validation, then export the engines dir."""
    from rtaudio.export.onnx import export_model
    from rtaudio.train.metrics import DEFAULT_THRESHOLD, mean_ap, tune_thresholds
    from rtaudio.train.parity_windows import synthetic_windows

    extra: dict[str, Any] = {
        "training": {
            "clips": {"train": n_train, "val": len(val_set)},
            "epochs": config.epochs,
            "schedule": config.schedule.type,
            "seed": config.seed,
            "torch": torch.__version__,
            "init_from": str(config.init_from) if config.init_from else None,
        }
    }
    if "pretrained" in model.streams:  # CC BY 4.0: the weights' source travels with the model
        from rtaudio.train.pretrained import AISFX

        extra["pretrained_weights"] = {"stream": "pretrained", **AISFX}
    if len(val_set):
        y, (scores, embeddings) = val_set.targets(), predict(model, val_set, config.batch_size, device)
        thresholds = tune_thresholds(y, scores).tolist()
        val_map, _ = mean_ap(y, scores)
        extra["training"]["val_mAP"] = None if math.isnan(val_map) else round(val_map, 4)
        log.info("validation mAP %.3f; thresholds tuned per class (F1-optimal)", val_map)
        if model.text is not None:
            threshold, sims = query_threshold(model, y, torch.from_numpy(embeddings).to(device))
            zero_shot, _ = mean_ap(y, sims)
            extra["text"] = {"query_threshold": round(threshold, 4), "val_zero_shot_mAP": None if math.isnan(zero_shot) else round(zero_shot, 4)}
            log.info("free-text queries: cosine threshold %.3f (class names on validation, zero-shot mAP %.3f)", threshold, zero_shot)
    else:
        thresholds = [DEFAULT_THRESHOLD] * len(model.config.labels)
        log.warning("no validation clips: thresholds left at %.2f", DEFAULT_THRESHOLD)
    median = event_median_windows(model.config.labels)
    out = export_model(model, config.output, thresholds, config.model_id, config.version, extra, scenes=synthetic_windows, median_windows=median).path
    log.info("wrote %s (model.onnx, model.json, model.ckpt, model.pt)", out)
    return out
