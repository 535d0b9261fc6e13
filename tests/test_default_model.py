"""The shipped models (default and small): follow the contract, run in every backend, hear what they were trained for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rtaudio.config.site import EventsConfig, TagsConfig
from rtaudio.contract import load_model_dir, model_variants
from rtaudio.runtime.engines import OnnxRuntimeEngine, TorchEngine
from rtaudio.runtime.offline import Collector, tag_file
from rtaudio.train.labels import SYNTHETIC_NAMES
from rtaudio.train.synth import make_scene
from tests.helpers import iso_seconds

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "engines" / "default"
SHIPPED = list(model_variants(ROOT / "engines").values())  # default and small
shipped = pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])


@shipped
def test_loads_and_runs_at_batch_1_and_8(path: Path) -> None:
    model = load_model_dir(path)
    assert model.info.model_id == path.name and len(model.info.labels) >= 8
    rng = np.random.default_rng(5)
    with OnnxRuntimeEngine(model) as engine:
        for batch in (1, 8):
            out = engine.infer((0.05 * rng.standard_normal((batch, model.info.window_samples))).astype(np.float32))
            assert out["scores"].shape == (batch, len(model.info.labels))
            assert out["embedding"].shape == (batch, model.info.embedding_dim)


@shipped
def test_torchscript_twin_agrees_with_onnx(path: Path) -> None:
    pytest.importorskip("torch")
    model = load_model_dir(path)
    batch = (0.05 * np.random.default_rng(6).standard_normal((3, model.info.window_samples))).astype(np.float32)
    with OnnxRuntimeEngine(model) as ort_engine, TorchEngine(model, "cpu") as torch_engine:
        ours, theirs = torch_engine.infer(batch), ort_engine.infer(batch)
    np.testing.assert_allclose(ours["scores"], theirs["scores"], atol=1e-4)


@shipped
def test_shipped_onnx_matches_its_checkpoint_on_real_windows(path: Path) -> None:
    """The shipped graph is what model.ckpt computes (within 1e-3; the eval report shows 1.6e-4 over the test split), at batch 1 and 8."""
    torch = pytest.importorskip("torch")
    from rtaudio.contract.files import CHECKPOINT_FILE
    from rtaudio.model.fused import load_checkpoint

    model = load_model_dir(path)
    net, extra = load_checkpoint(path / CHECKPOINT_FILE)
    assert list(net.config.labels) == list(model.info.labels)
    np.testing.assert_allclose(extra["thresholds"], model.info.thresholds, atol=1e-6)
    win, sr = model.info.window_samples, model.info.sample_rate
    audio, _ = make_scene(np.random.default_rng(91_000), 10.0, sample_rate=sr)
    windows = np.stack([audio[i : i + win] for i in range(0, len(audio) - win + 1, win // 2)][:8]).astype(np.float32)
    with OnnxRuntimeEngine(model) as engine, torch.no_grad():
        for batch in (windows[:1], windows):
            scores, embedding = net.eval()(torch.from_numpy(batch))
            got = engine.infer(batch)
            np.testing.assert_allclose(got["scores"], scores.numpy(), atol=1e-3)
            np.testing.assert_allclose(got["embedding"], embedding.numpy(), atol=1e-3)


@shipped
@pytest.mark.parametrize("label", ["smoke_alarm", "doorbell", "speech", "glass_break", "dog_bark", "knock"])
def test_top_label_on_fresh_synthetic_clips(path: Path, label: str) -> None:
    """Scenes from seeds the model never saw: the first second of the event must top the scores."""
    model = load_model_dir(path)
    win, sr = model.info.window_samples, model.info.sample_rate
    hits = 0
    with OnnxRuntimeEngine(model) as engine:
        for seed in range(5):
            audio, events = make_scene(np.random.default_rng(90_000 + seed), 8.0, sample_rate=sr, order=(label,), snr_db=(10, 20))
            start = int(max(0.0, events[0][1] - 0.1) * sr)
            scores = engine.infer(audio[None, start : start + win])["scores"][0]
            hits += model.info.labels[int(np.argmax(scores))] == SYNTHETIC_NAMES.get(label, label)  # the generator's name -> the model's
    assert hits >= 4, f"{label}: right in {hits}/5"


def test_demo_recording_events_match_its_timeline() -> None:
    """The demo's model (default) hears every scripted sound where the timeline has it: tagged at its threshold in a
    window there, and as an event; at most one event elsewhere (0.6.0 takes the glass's ringing tail for music:
    docs/model.md). The glass break lasts about two windows: its event needs the model's per-label median of 1
    (model.json median_windows), which a 3-window median would erase. Small is not held to this (its thresholds miss the tap and take the
    doorbell for music); its synthetic hearing is the top-label test above."""
    timeline = json.loads((ROOT / "config" / "demo.timeline.json").read_text())["events"]
    for item in timeline:  # the generator's label names -> the model's
        item["label"] = SYNTHETIC_NAMES.get(item["label"], item["label"])
    model = load_model_dir(MODEL)
    with OnnxRuntimeEngine(model) as engine:
        result: Collector = tag_file(ROOT / "config" / "demo.flac", engine, EventsConfig(), TagsConfig())
    threshold = dict(zip(model.info.labels, model.info.thresholds))
    expected = {item["label"] for item in timeline}
    tagged = {
        label
        for r in result.results
        for label, score in r.labels
        if score >= threshold[label] and any(item["label"] == label and r.start_time < item["offset"] and r.end_time > item["onset"] for item in timeline)
    }
    found = {(e.label, round(e.onset_time)) for e in result.events if e.kind == "onset"}
    near = {
        (label, onset) for label, onset in found if any(item["label"] == label and item["onset"] - 1.5 <= onset <= item["offset"] + 0.5 for item in timeline)
    }
    as_events = {label for label, _ in near}
    assert expected <= tagged | as_events, f"scripted sounds not heard where they play: {sorted(expected - tagged - as_events)}"
    assert expected <= as_events, f"scripted sounds without an event: {sorted(expected - as_events)}; events: {sorted(found)}"
    assert len(found - near) <= 1, f"events away from the timeline: {sorted(found - near)}"


WATER_WORDS = ("water", "tap", "faucet")


@pytest.mark.integration
def test_demo_captions_water_query_and_clips_over_mqtt(tmp_path: Path, mosquitto, make_subscriber) -> None:
    """config/demo.yaml as shipped (captions every 4 s, the query water_leak, clips of smoke_alarm and glass_break),
    the recording played once as fast as it decodes, a real mosquitto and subscriber: captions arrive on the caption
    topic, the one covering the running water says so, the query fires on the water only, and each clipped label's
    offset names a clip that holds pre-roll + event + post-roll of the recording's own samples."""
    import yaml

    from rtaudio.config.load import load_site_config
    from rtaudio.runtime.site import run_site

    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    demo.update(model=str(MODEL), console={"tags": False, "events": False}, mqtt={"broker": "127.0.0.1", "port": mosquitto.port, "shutdown_flush_s": 10})
    demo["sources"][0].update(path=str(ROOT / "config" / "demo.flac"), realtime=False, loop=False)
    demo["http"] = None  # the page is tested in tests/runtime/http; its port may be taken here
    demo["clips"]["dir"] = str(tmp_path / "clips")
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(demo))
    sub = make_subscriber(mosquitto, "rtaudio/#")
    assert run_site(load_site_config(tmp_path / "demo.yaml"), install_signals=False) == 0
    assert sub.wait_for(lambda: sub.on("rtaudio/demo/status") and sub.on("rtaudio/demo/status")[-1].payload == b"offline")

    t0 = min(iso_seconds(json.loads(m.payload)["start"]) for m in sub.on("rtaudio/demo/demo/tags"))  # the file's first sample
    captions = [json.loads(m.payload) for m in sub.on("rtaudio/demo/demo/caption")]
    assert len(captions) >= 4 and all(c["caption"].strip() for c in captions), captions
    water = json.loads((ROOT / "config" / "demo.timeline.json").read_text())["events"]
    water = next(e for e in water if e["label"] == "water_running")
    covering = [
        c
        for c in captions  # the caption windows that heard most of the water (1.5 of its 2.5 s)
        if min(iso_seconds(c["end"]) - t0, water["offset"]) - max(iso_seconds(c["start"]) - t0, water["onset"]) >= 1.5
    ]
    assert covering and any(w in c["caption"] for c in covering for w in WATER_WORDS), [c["caption"] for c in captions]
    leak = [json.loads(m.payload) for m in sub.on("rtaudio/demo/demo/events")]
    onsets = [iso_seconds(e["onset"]) - t0 for e in leak if e["label"] == "water_leak" and e["kind"] == "onset"]
    assert onsets, "the free-text query should fire on the running water"
    assert all(water["onset"] - 1.5 <= t <= water["offset"] + 0.5 for t in onsets), onsets
    print("captions:", [(round(iso_seconds(c["end"]) - t0, 1), c["caption"]) for c in captions], "water_leak onsets:", onsets)

    recording, rate = sf.read(ROOT / "config" / "demo.flac", dtype="float32")
    clipped = [e for e in leak if e["kind"] == "offset" and e["label"] in demo["clips"]["labels"]]
    assert sorted(e["label"] for e in clipped) == ["glass_break", "smoke_alarm"], [(e["label"], e["kind"]) for e in leak]
    for offset in clipped:
        clip = offset["clip"]
        audio, clip_rate = sf.read(tmp_path / "clips" / clip["file"], dtype="float32")
        expected_s = iso_seconds(offset["offset"]) - iso_seconds(offset["onset"]) + clip["pre_s"] + clip["post_s"]
        assert clip_rate == rate and abs(len(audio) / rate - expected_s) <= 0.1 and abs(clip["duration_s"] - expected_s) <= 0.1, (clip, len(audio) / rate)
        first = round((iso_seconds(clip["start"]) - t0) * rate)  # the clip's stream time -> the recording's sample
        np.testing.assert_allclose(audio, recording[first : first + len(audio)], atol=1 / 32767)  # 16-bit FLAC
