"""Runtime benchmarks for docs/BENCHMARKS.md.

1. engine: windows/s of the ONNX Runtime engine on a model, at batch 1 and 16 (and more with --batches);
2. latency: capture-to-subscriber latency p50/p99 for N real-time file sources through a real
   mosquitto, measured by a paho subscriber from each tag message's ``end`` (capture time of
   the window's last sample) to its arrival.

Usage: python tools/bench_runtime.py [--model engines/default] [--sources 8] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def bench_engine(model_dir: Path, batches: list[int], seconds: float = 3.0) -> dict[int, dict[str, float]]:
    """Windows/s and ms per batch of the ORT CPU engine at each batch size."""
    from rtaudio.contract import load_model_dir
    from rtaudio.runtime.engines import OnnxRuntimeEngine

    model = load_model_dir(model_dir)
    rng = np.random.default_rng(0)
    results = {}
    with OnnxRuntimeEngine(model, ["CPUExecutionProvider"]) as engine:
        for batch in batches:
            x = (0.1 * rng.standard_normal((batch, model.info.window_samples))).astype(np.float32)
            engine.infer(x)  # warm-up
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                engine.infer(x)
                n += 1
            elapsed = time.perf_counter() - start
            results[batch] = {"windows_per_s": round(n * batch / elapsed, 1), "ms_per_batch": round(1000 * elapsed / n, 2)}
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_latency(model_dir: Path, audio: Path, sources: int, seconds: float) -> dict[str, float]:
    """Run ``rtaudio run`` with N real-time file sources into mosquitto; measure at a subscriber."""
    import paho.mqtt.client as mqtt

    port = _free_port()
    broker = subprocess.Popen(["mosquitto", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latencies: list[float] = []

    def on_message(client, userdata, msg) -> None:
        end = json.loads(msg.payload)["end"]
        captured = datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp()
        latencies.append((time.time() - captured) * 1000)

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        lines = [f"site: bench", f"model: {model_dir.resolve()}", "engine: onnxruntime", "console: {tags: false, events: false}",
                 f"mqtt: {{broker: 127.0.0.1, port: {port}, health_interval_s: 5}}", "tags: {floor: 0.0}", "sources:"]
        lines += [f"  - {{id: s{i}, type: file, path: {audio.resolve()}, realtime: true, loop: true}}" for i in range(sources)]
        config.write_text("\n".join(lines) + "\n")
        time.sleep(0.5)
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.on_message = on_message
        sub.connect("127.0.0.1", port)
        sub.subscribe("rtaudio/bench/+/tags")
        sub.loop_start()
        run = subprocess.run([sys.executable, "-m", "rtaudio", "--log-level", "warning", "run", "--config", str(config), "--duration", str(seconds)],
                             capture_output=True, text=True, timeout=seconds + 60)
        sub.loop_stop()
        broker.terminate()
        broker.wait(5)
    if run.returncode != 0:
        raise RuntimeError(f"rtaudio run failed: {run.stderr[-2000:]}")
    values = np.array(latencies[sources * 2:])  # skip the first windows (start-up)
    return {"sources": sources, "messages": int(values.size), "p50_ms": round(float(np.percentile(values, 50)), 1),
            "p99_ms": round(float(np.percentile(values, 99)), 1), "max_ms": round(float(values.max()), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "engines" / "default")
    parser.add_argument("--audio", type=Path, default=ROOT / "config" / "demo.flac")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    if not shutil.which("mosquitto"):
        print("mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 1
    print(f"machine: {platform.machine()}, {platform.processor() or '?'}; {platform.python_version()}; date {datetime.now():%Y-%m-%d}")
    for batch, r in bench_engine(args.model, args.batches).items():
        print(f"engine onnxruntime CPU batch {batch:>3}: {r['windows_per_s']:>9.1f} windows/s  {r['ms_per_batch']:>8.2f} ms/batch")
    lat = bench_latency(args.model, args.audio, args.sources, args.seconds)
    print(f"latency capture->subscriber, {lat['sources']} real-time file sources via mosquitto: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms ({lat['messages']} messages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
