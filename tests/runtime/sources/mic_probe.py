"""Run real MicrophoneSources in a fresh process (so PortAudio reads the test's ALSA config).

Usage: python mic_probe.py SPEC_JSON. Prints one JSON line of results; each source's samples,
chunk sizes and capture times go to OUT/<id>.npz. Spec keys: sources (list of config dicts),
model_rate, need (samples per source), timeout, duration (run this long instead),
sink_delay (seconds per chunk: a slow consumer), stagger (start each
source once the previous one has audio), abort_after (samples; then abort the
shared stream once), create_file ([src, dst, delay_s]), out, mode ("run" or "devices").
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter

from rtaudio.runtime.sources import microphone
from rtaudio.runtime.sources.microphone import MicrophoneConfig


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Collector:
    """A sink that keeps the first ``need`` samples (the last ``need`` with ``keep_last``) and counts the rest."""

    def __init__(self, need: int, delay: float, abort_after: int | None, keep_last: bool = False):
        self.need, self.delay, self.abort_after, self.keep_last = need, delay, abort_after, keep_last
        self.samples_at_abort: int | None = None
        self.chunks: list[np.ndarray] = []
        self.times: list[float] = []
        self.total = 0
        self.counters: list[int] = []
        self.streams = 0  # most shared streams open at once, seen while emitting

    def __call__(self, samples: np.ndarray, capture_time: float) -> None:
        if self.total < self.need or self.keep_last:
            self.chunks.append(samples.copy())
            self.times.append(capture_time)
        while self.keep_last and sum(c.size for c in self.chunks[1:]) >= self.need:
            del self.chunks[0], self.times[0]
        self.total += samples.size
        self.counters.append(self.total)
        self.streams = max(self.streams, len(microphone._streams))
        if self.delay:
            time.sleep(self.delay)
        if self.abort_after is not None and self.samples_at_abort is None and self.total >= self.abort_after:
            self.samples_at_abort = self.total
            with microphone._registry_lock:  # the device dies under the source
                for shared in microphone._streams.values():
                    shared._stream.abort()


def devices(spec: dict) -> dict:
    out: dict = {"devices": microphone.list_input_devices(), "resolve": {}}
    for wanted in spec.get("resolve", []):
        try:
            out["resolve"][str(wanted)] = microphone.resolve_device(wanted)["index"]
        except microphone.DeviceError as exc:
            out["resolve"][str(wanted)] = f"error: {exc}"
    return out


def run(spec: dict) -> dict:
    logs: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logs.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    adapter = TypeAdapter(MicrophoneConfig)
    need = spec.get("need", 16000)
    sources, sinks = [], []
    for config in spec["sources"]:
        sink = Collector(need, spec.get("sink_delay", 0.0), spec.get("abort_after"), spec.get("keep_last", False))
        sources.append(microphone.MicrophoneSource(adapter.validate_python({"type": "microphone", **config}), spec.get("model_rate", 16000), sink))
        sinks.append(sink)
    if "create_file" in spec:
        src, dst, delay = spec["create_file"]
        threading.Timer(delay, shutil.copy, (src, dst)).start()
    rss_start = None  # taken once audio flows, so PortAudio's own loading is not counted
    max_depth = capacity = 0
    for source, sink in zip(sources, sinks):
        source.start()
        started = time.monotonic()
        while spec.get("stagger") and not sink.total and time.monotonic() < started + 10:
            time.sleep(0.001)
    deadline = time.monotonic() + spec.get("duration", spec.get("timeout", 15))
    while time.monotonic() < deadline:
        if rss_start is None and all(s.total for s in sinks):
            rss_start = rss_bytes()
        if "duration" not in spec and all(s.total >= need for s in sinks):
            break
        for source in sources:
            sub = source._sub
            if sub is not None:
                max_depth, capacity = max(max_depth, sub.depth), sub.capacity
        time.sleep(0.01)
    rss_end = rss_bytes()
    for source in sources:
        source.stop()
    results = {}
    for source, sink in zip(sources, sinks):
        samples = np.concatenate(sink.chunks) if sink.chunks else np.zeros(0, np.float32)
        np.savez(Path(spec["out"]) / f"{source.id}.npz", samples=samples, sizes=[c.size for c in sink.chunks], times=sink.times, counters=sink.counters)
        results[source.id] = {"total": sink.total, "health": source.health.snapshot(), "alive_after_stop": source.alive}
    return {
        "sources": results,
        "logs": logs,
        "max_streams": max(s.streams for s in sinks),
        "streams_after_stop": len(microphone._streams),
        "max_queue_depth": max_depth,
        "queue_capacity": capacity,
        "rss_growth": rss_end - (rss_start or rss_end),
        "samples_at_abort": [s.samples_at_abort for s in sinks],
    }


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    result = devices(spec) if spec.get("mode") == "devices" else run(spec)
    print(json.dumps(result))
