"""``rtaudio tag FILE...``: the runtime's own windowing, engine and event logic over files, times in file seconds."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rtaudio.audiofile import read_mono
from rtaudio.config.site import EventsConfig, TagsConfig
from rtaudio.contract import load_model_dir
from rtaudio.runtime.buffer import RingBuffer
from rtaudio.runtime.engines import Engine, create_engine
from rtaudio.runtime.engines.base import AutoConfig as AutoEngine
from rtaudio.runtime.engines.onnxruntime import OnnxRuntimeConfig as OrtConfig
from rtaudio.runtime.engines.torch import TorchConfig
from rtaudio.runtime.events import Event, EventTracker, TagResult
from rtaudio.runtime.health import Health
from rtaudio.runtime.pipeline import Pipeline, Stream, label_rules
from rtaudio.runtime.publish.base import Publisher

ENGINES = {"auto": AutoEngine(type="auto"), "onnxruntime": OrtConfig(type="onnxruntime"), "torch": TorchConfig(type="torch")}


class Collector(Publisher):
    """Keeps every tag result and event in memory (files are finite)."""

    def __init__(self) -> None:
        self.results: list[TagResult] = []
        self.events: list[Event] = []

    def tags(self, result: TagResult) -> None:
        self.results.append(result)

    def event(self, event: Event) -> None:
        self.events.append(event)


def tag_file(path: Path, engine: Engine, events_cfg: EventsConfig, tags_cfg: TagsConfig) -> Collector:
    """Tag one file; results carry times in seconds from the file's start."""
    info = engine.model.info
    audio = read_mono(path, info.sample_rate)
    window, hop = info.window_samples, info.hop_samples
    if audio.size < window:  # a short clip is one window, zero-padded
        audio = np.pad(audio, (0, window - audio.size))
    collector = Collector()
    buffer = RingBuffer(info.sample_rate, window, hop, max_backlog=16)
    tracker = EventTracker(path.name, info.model_id, info.labels, label_rules(info, events_cfg), events_cfg.median_windows)
    stream = Stream(path.name, buffer, tracker, Health().source(path.name))
    pipeline = Pipeline(engine, info, [stream], [collector], Health(), tags_cfg, max_batch=16)
    chunk = hop * 16
    for start in range(0, audio.size, chunk):
        buffer.write(audio[start : start + chunk], start / info.sample_rate)
        while items := pipeline.gather():
            pipeline.step(items)
    pipeline.finish()
    return collector


def tag_files(files: list[Path], model_dir: Path, engine: str = "auto", as_json: bool = False, top_k: int = 3, floor: float = 0.2) -> int:
    """Tag files and print a table (or JSON lines); return the exit code."""
    model = load_model_dir(model_dir)
    events_cfg, tags_cfg = EventsConfig(), TagsConfig(floor=floor, top_k=top_k)
    status = 0
    with create_engine(ENGINES[engine], model) as eng:
        for path in files:
            try:
                result = tag_file(path, eng, events_cfg, tags_cfg)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                status = 1
                continue
            (_print_json if as_json else _print_table)(path, result)
    return status


def _print_json(path: Path, result: Collector) -> None:
    for tag in result.results:
        print(
            json.dumps(
                {
                    "file": str(path),
                    "type": "tags",
                    "start": round(tag.start_time, 3),
                    "end": round(tag.end_time, 3),
                    "labels": [{"label": label, "score": score} for label, score in tag.labels],
                }
            )
        )
    for event in result.events:
        print(json.dumps({"file": str(path), "type": "event", **asdict(event)}))


def _print_table(path: Path, result: Collector) -> None:
    print(f"{path}")
    print(f"  {'start':>7} {'end':>7}  labels")
    for tag in result.results:
        labels = ", ".join(f"{label} {score:.2f}" for label, score in tag.labels) or "-"
        print(f"  {tag.start_time:7.2f} {tag.end_time:7.2f}  {labels}")
    ended = [e for e in result.events if e.kind == "offset"]
    if ended:
        print("  events:")
        for event in ended:
            print(f"    {event.label:<20} {event.onset_time:7.2f} - {event.offset_time:7.2f} s  peak {event.peak_score:.2f}")
