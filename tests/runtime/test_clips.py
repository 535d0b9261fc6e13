"""Event clips (``runtime.clips``): synthetic noise fed in blocks with capture times, so every sample of
a clip can be traced back to the stream; real files on disk, real failures (a directory that cannot be
made, a file size limit), retention by age and size; then ``rtaudio run`` with MQTT and clips on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import soundfile as sf

from rtaudio.config.site import ClipsConfig
from rtaudio.doctor import config_checks
from rtaudio.runtime.clips import NAME_RE, ClipRecorder, _Ring, clip_name
from rtaudio.runtime.events import Event
from rtaudio.runtime.health import Health
from rtaudio.runtime.publish.messages import event_payload, iso, load_schema
from tests.helpers import REPO, iso_seconds, run_rtaudio, tiny_site, wait_until
from tests.tinymodel import tone

SR = 8000
T0 = 1_780_000_000.25  # capture time of the stream's first sample
BLOCK = 160


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    """Random 16-bit values as float32 (k / 32768): every sample survives a 16-bit file exactly and is unique in context."""
    ints = np.random.default_rng(seed).integers(-20000, 20000, round(seconds * SR))
    return (ints / 32768).astype(np.float32)


class Stream:
    """A source: feeds ``audio`` to the recorder's writer block by block, with capture times ``T0 + i / SR``."""

    def __init__(self, recorder: ClipRecorder, source_id: str = "hall", seconds: float = 20.0, seed: int = 0):
        self.write, self.audio, self.pos = recorder.feed(source_id), noise(seconds, seed), 0

    def to(self, seconds: float) -> None:
        end = round(seconds * SR)
        while self.pos < end:
            block = self.audio[self.pos : min(self.pos + BLOCK, end)]
            self.write(block, T0 + self.pos / SR)
            self.pos += block.size

    def play(self, seconds: float, step_s: float = 0.1) -> None:
        """Feed up to ``seconds`` like a live source (about 10 x real time), giving the writer time to keep up."""
        while self.pos < round(seconds * SR):
            self.to(min(self.pos / SR + step_s, seconds))
            time.sleep(0.01)

    def samples(self, start_s: float, end_s: float) -> np.ndarray:
        return self.audio[round(start_s * SR) : round(end_s * SR)]


def onset(label: str, at: float, source: str = "hall") -> Event:
    return Event("onset", str(uuid.uuid4()), source, "m", label, T0 + at, None, 0.9, 0.8, 3)


def offset(event: Event, at: float) -> Event:
    return replace(event, kind="offset", offset_time=T0 + at)


def recorder(tmp_path: Path, health: Health | None = None, **over: Any) -> ClipRecorder:
    args = {k: over.pop(k) for k in ("private", "lag_s", "stall_s", "max_jobs") if k in over}
    config = ClipsConfig(**{"dir": tmp_path / "clips", "labels": ["glass", "alarm"], "pre_s": 1.0, "post_s": 1.5, **over})
    return ClipRecorder(config, SR, health or Health(), **args)


def read(rec: ClipRecorder, name: str) -> np.ndarray:
    data, rate = sf.read(str(rec.dir / name), dtype="float32")
    assert rate == SR
    return data


def saved(rec: ClipRecorder, n: int = 1) -> bool:
    return wait_until(lambda: sum(s.clips_saved for s in rec.health.sources.values()) >= n, timeout=10)


def only_clips(rec: ClipRecorder) -> list[str]:
    return sorted(p.name for p in rec.dir.iterdir())


# ---------------------------------------------------------------- what a clip holds


def test_clip_is_exactly_the_streams_samples_from_onset_minus_pre_to_offset_plus_post(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    rec.start()
    src = Stream(rec)
    src.to(3.0)
    ev = onset("glass", 2.0)
    assert rec.on_event(ev) is ev
    src.to(5.0)
    out = rec.on_event(offset(ev, 4.0))
    assert out.clip == {"file": out.clip["file"], "start": iso(T0 + 1.0), "duration_s": 4.5, "pre_s": 1.0, "post_s": 1.5}
    assert out.clip["file"] == clip_name("hall", "glass", T0 + 2.0, ev.event_id, "flac") and NAME_RE.match(out.clip["file"])
    jsonschema.validate({**event_payload("lab", out), "published": iso(time.time())}, load_schema("events"))
    assert not (rec.dir / out.clip["file"]).exists()  # the post-roll has not been captured yet
    src.to(8.0)
    assert saved(rec)
    rec.close(5)
    np.testing.assert_array_equal(read(rec, out.clip["file"]), src.samples(1.0, 5.5))
    assert sf.info(str(rec.dir / out.clip["file"])).format == "FLAC"
    assert only_clips(rec) == [out.clip["file"]]  # no temporary file left
    assert rec.health.source("hall").clips_saved == 1 and rec.health.source("hall").clips_dropped == 0


def test_two_labels_overlapping_events_two_sources(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    rec.start()
    hall, yard = Stream(rec, "hall", seed=1), Stream(rec, "yard", seed=2)
    for s in (hall, yard):
        s.to(2.5)
    glass, alarm, yard_alarm = onset("glass", 2.0), onset("alarm", 2.2), onset("alarm", 2.4, "yard")
    for ev in (glass, alarm, yard_alarm):
        rec.on_event(ev)
    for s in (hall, yard):
        s.to(7.0)
    outs = [rec.on_event(offset(glass, 4.0)), rec.on_event(offset(alarm, 6.5)), rec.on_event(offset(yard_alarm, 3.0))]
    for s in (hall, yard):
        s.to(9.0)
    assert saved(rec, 3)
    rec.close(5)
    assert [o.clip["duration_s"] for o in outs] == [4.5, 6.8, 3.1]
    np.testing.assert_array_equal(read(rec, outs[0].clip["file"]), hall.samples(1.0, 5.5))
    np.testing.assert_array_equal(read(rec, outs[1].clip["file"]), hall.samples(1.2, 8.0))
    np.testing.assert_array_equal(read(rec, outs[2].clip["file"]), yard.samples(1.4, 4.5))
    assert rec.health.source("hall").clips_saved == 2 and rec.health.source("yard").clips_saved == 1


def test_offset_decided_late_still_ends_the_clip_at_offset_plus_post(tmp_path: Path) -> None:
    """The writer drains an open clip as audio arrives but stays lag_s / 2 behind until the end is known."""
    rec = recorder(tmp_path, lag_s=8.0)
    rec.start()
    src = Stream(rec)
    src.to(3.0)
    ev = onset("glass", 2.0)
    rec.on_event(ev)
    src.play(9.0)  # the offset at 4 s is decided 5 s later (a long median, a backlog)
    assert rec.health.source("hall").clips_saved == 0
    out = rec.on_event(offset(ev, 4.0))
    assert saved(rec)
    rec.close(5)
    np.testing.assert_array_equal(read(rec, out.clip["file"]), src.samples(1.0, 5.5))


def test_other_labels_private_labels_and_orphan_offsets_pass_unchanged(tmp_path: Path) -> None:
    rec = recorder(tmp_path, labels=["glass", "speech"], private=["speech"])
    rec.start()
    src = Stream(rec)
    src.to(3.0)
    events = [onset("dog", 1.5), onset("speech", 1.6)]
    for ev in events:
        assert rec.on_event(ev) is ev
    src.to(6.0)
    for ev in events:
        end = offset(ev, 4.0)
        assert rec.on_event(end) is end and end.clip is None
    restart = replace(offset(onset("glass", 1.0), 2.0), reason="restart")  # its onset was in a previous run
    assert rec.on_event(restart).clip is None
    rec.close(5)
    assert only_clips(rec) == [] and rec.health.source("hall").clips_saved == 0 and rec.health.source("hall").clips_dropped == 0


def test_event_near_stream_start_has_shorter_pre_roll(tmp_path: Path) -> None:
    rec = recorder(tmp_path, pre_s=2.0)
    rec.start()
    src = Stream(rec)
    src.to(1.0)
    ev = onset("glass", 0.5)
    rec.on_event(ev)
    src.to(3.0)
    out = rec.on_event(offset(ev, 2.0))
    assert out.clip["pre_s"] == 0.5 and out.clip["duration_s"] == 3.5 and out.clip["start"] == iso(T0)
    src.to(6.0)
    assert saved(rec)
    rec.close(5)
    np.testing.assert_array_equal(read(rec, out.clip["file"]), src.samples(0.0, 3.5))


def test_max_s_caps_a_long_event_written_before_its_offset(tmp_path: Path) -> None:
    rec = recorder(tmp_path, max_s=3.0, lag_s=1.0)  # ring: 2 s; the 3 s clip is drained into its file as it arrives
    rec.start()
    src = Stream(rec)
    src.to(2.5)
    ev = onset("glass", 2.0)
    rec.on_event(ev)
    src.play(12.0)  # 10 s of event
    assert saved(rec)  # complete at max_s, long before the offset
    out = rec.on_event(offset(ev, 12.0))
    assert out.clip["duration_s"] == 3.0 and out.clip["post_s"] == 0.0 and out.clip["pre_s"] == 1.0
    rec.close(5)
    np.testing.assert_array_equal(read(rec, out.clip["file"]), src.samples(1.0, 4.0))
    assert rec.health.source("hall").clips_dropped == 0


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_format_round_trip(tmp_path: Path, fmt: str) -> None:
    rec = recorder(tmp_path, format=fmt, pre_s=0.5, post_s=0.5)
    rec.start()
    src = Stream(rec)
    src.to(2.0)
    ev = onset("alarm", 1.0)
    rec.on_event(ev)
    src.to(3.0)
    out = rec.on_event(offset(ev, 2.0))
    src.to(4.0)
    assert saved(rec)
    rec.close(5)
    name = out.clip["file"]
    assert name.endswith("." + fmt)
    info = sf.info(str(rec.dir / name))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ({"flac": "FLAC", "wav": "WAV"}[fmt], "PCM_16", SR, 1)
    np.testing.assert_array_equal(read(rec, name), src.samples(0.5, 2.5))


def test_post_roll_waits_for_audio_then_gives_up_on_a_stopped_source(tmp_path: Path) -> None:
    rec = recorder(tmp_path, post_s=1.0, stall_s=0.2)
    rec.start()
    src = Stream(rec)
    src.to(3.0)
    ev = onset("glass", 1.5)
    rec.on_event(ev)
    out = rec.on_event(offset(ev, 2.5))  # the post-roll would end at 3.5 s; the source stops at 3.0 s
    assert out.clip["duration_s"] == 3.0  # planned: 0.5 s to 3.5 s
    assert not wait_until(lambda: rec.health.source("hall").clips_saved > 0, timeout=0.5)  # still waiting for audio
    assert saved(rec)  # then, post_s + stall_s after the offset, it ends where the audio ended
    rec.close(5)
    np.testing.assert_array_equal(read(rec, out.clip["file"]), src.samples(0.5, 3.0))


def test_close_finishes_open_clips_with_the_audio_there_is(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    rec.start()
    src = Stream(rec)
    src.to(2.0)
    ev = onset("glass", 1.5)
    rec.on_event(ev)
    src.to(4.0)
    rec.close(5)
    rec.close(5)  # idempotent
    names = only_clips(rec)
    assert len(names) == 1 and rec.health.source("hall").clips_saved == 1
    np.testing.assert_array_equal(read(rec, names[0]), src.samples(0.5, 4.0))


def test_ring_maps_stream_time_to_samples_across_a_gap() -> None:
    ring = _Ring(SR, 10 * SR)
    for i in range(0, SR, BLOCK):  # 1 s, steady: one anchor
        ring.write(np.zeros(BLOCK, np.float32), T0 + i / SR)
    for i in range(0, SR, BLOCK):  # the source restarted 5 s later
        ring.write(np.zeros(BLOCK, np.float32), T0 + 6.0 + i / SR)
    assert len(ring.anchors) == 2
    assert ring.index_of(T0 + 0.5) == SR // 2
    assert ring.index_of(T0 + 3.0) == SR  # in the gap: where the audio resumed
    assert ring.index_of(T0 + 6.25) == SR + SR // 4
    assert ring.index_of(T0 - 1.0) == 0
    assert ring.end_time() == pytest.approx(T0 + 7.0)


# ---------------------------------------------------------------- failures cost clips only


def test_directory_that_cannot_be_made_costs_only_clips_and_recovers(tmp_path: Path) -> None:
    """Root ignores a read-only mode, so the directory is made impossible: its parent is a regular file."""
    blocker = tmp_path / "clips"
    blocker.write_text("not a directory")
    config = ClipsConfig(dir=blocker / "audio", labels=["glass"], pre_s=0.5, post_s=0.5)
    health = Health()
    rec = ClipRecorder(config, SR, health)
    rec.start()
    src = Stream(rec)
    src.to(2.0)
    ev = onset("glass", 1.0)
    rec.on_event(ev)  # no exception here nor in the source thread's writer
    src.to(4.0)
    assert wait_until(lambda: health.source("hall").clips_dropped == 1, timeout=10)
    assert rec.on_event(offset(ev, 3.0)).clip is None  # the offset names no clip that will never exist
    blocker.unlink()  # the disk is back: the next clip is saved
    src.to(6.0)
    ev2 = onset("glass", 5.0)
    rec.on_event(ev2)
    src.to(8.0)
    out = rec.on_event(offset(ev2, 6.0))
    src.to(10.0)
    assert saved(rec)
    rec.close(5)
    assert os.listdir(blocker / "audio") == [out.clip["file"]]
    assert health.source("hall").clips_dropped == 1 and health.source("hall").clips_saved == 1


def test_disk_full_mid_write_leaves_no_temp_file(tmp_path: Path) -> None:
    """A real write failure: a process file-size limit (RLIMIT_FSIZE, EFBIG; binding for root too) in a child process."""
    script = textwrap.dedent(f"""
        import json, resource, signal, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from tests.runtime.test_clips import Stream, offset, onset, recorder
        from tests.helpers import wait_until
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, resource.RLIM_INFINITY))
        rec = recorder(Path({str(tmp_path)!r}), format="wav", pre_s=0.5, post_s=0.5)
        rec.start()
        src = Stream(rec)
        src.to(1.0)
        big = onset("glass", 0.8)  # 5 s of 16-bit audio: 80 kB, past the limit
        rec.on_event(big)
        src.to(6.0)
        big_out = rec.on_event(offset(big, 5.3))
        src.to(6.5)
        small = onset("alarm", 6.0)  # 1 s: 16 kB, fits
        rec.on_event(small)
        src.to(8.0)
        small_out = rec.on_event(offset(small, 6.5))
        src.to(9.0)
        wait_until(lambda: rec.health.source("hall").clips_saved + rec.health.source("hall").clips_dropped >= 2)
        rec.close(5)
        h = rec.health.source("hall")
        print(json.dumps({{"saved": h.clips_saved, "dropped": h.clips_dropped, "files": sorted(p.name for p in rec.dir.iterdir()),
                          "small": small_out.clip["file"]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["saved"] == 1 and result["dropped"] == 1
    assert result["files"] == [result["small"]]  # the failed clip's temporary file is gone
    assert "cannot write" in proc.stderr


def test_writer_falling_behind_drops_overwritten_clips_only(tmp_path: Path) -> None:
    health = Health()
    rec = recorder(tmp_path, health, lag_s=1.0, max_jobs=2)  # ring: pre 1 s + 1 s
    src = Stream(rec)
    src.to(2.0)
    late, lost, full = onset("glass", 1.5), onset("alarm", 1.6), onset("glass", 1.7)
    for ev in (late, lost, full):
        rec.on_event(ev)  # the writer is not running: the third does not fit in the queue
    assert health.source("hall").clips_dropped == 1
    src.to(6.0)  # the pre-roll of the first two is long overwritten when the writer starts
    assert rec.on_event(offset(full, 3.0)).clip is None
    rec.start()
    assert wait_until(lambda: health.source("hall").clips_dropped == 3, timeout=10)
    assert rec.on_event(offset(late, 3.0)).clip is None and rec.on_event(offset(lost, 3.0)).clip is None
    ev = onset("glass", 6.5)  # a writer in time saves the next clip
    src.play(6.6)
    rec.on_event(ev)
    src.play(8.0, step_s=0.05)
    out = rec.on_event(offset(ev, 7.5))
    src.play(10.0)
    assert saved(rec)
    rec.close(5)
    np.testing.assert_array_equal(read(rec, out.clip["file"]), src.samples(5.5, 9.0))
    assert only_clips(rec) == [out.clip["file"]] and health.source("hall").clips_dropped == 3


# ---------------------------------------------------------------- retention


def make_clip_file(directory: Path, name: str, size: int, mtime: float) -> Path:
    path = directory / name
    path.write_bytes(b"\0" * size)
    os.utime(path, (mtime, mtime))
    return path


def test_retention_by_age_and_size_oldest_first_and_foreign_files_untouched(tmp_path: Path) -> None:
    rec = recorder(tmp_path, max_age_days=7, max_total_mb=1.0)
    rec.dir.mkdir()
    now = 1_790_000_000.0
    day = 86400
    names = [clip_name("hall", "glass", now - k * 3600, uuid.uuid4().hex, "flac") for k in range(4)]
    ancient = make_clip_file(rec.dir, clip_name("hall", "alarm", now - 30 * day, "abcdef12", "wav"), 10, now - 30 * day)
    for k, name in enumerate(names):  # 4 x 400 kB, newest first; 1 MB holds two
        make_clip_file(rec.dir, name, 400_000, now - (k + 1) * 3600)
    foreign = [
        make_clip_file(rec.dir, "notes.txt", 10, now - 90 * day),
        make_clip_file(rec.dir, "hall_glass.flac", 900_000, now - 90 * day),  # not a name this recorder gives
        make_clip_file(rec.dir, names[0] + ".bak", 10, now - 90 * day),
        make_clip_file(rec.dir, ".part", 10, now - 90 * day),
    ]
    (rec.dir / "old-clips").mkdir()
    os.utime(rec.dir / "old-clips", (now - 90 * day, now - 90 * day))
    assert rec.retention(now=now) == 3
    left = set(os.listdir(rec.dir))
    assert not ancient.exists()  # by age
    assert names[2] not in left and names[3] not in left  # by size, the oldest first
    assert {names[0], names[1], "old-clips"} | {p.name for p in foreign} == left


def test_retention_runs_at_start_and_removes_half_written_clips_of_a_killed_run(tmp_path: Path) -> None:
    rec = recorder(tmp_path, max_age_days=1)
    rec.dir.mkdir()
    stale = clip_name("hall", "glass", T0, "12345678", "flac")
    make_clip_file(rec.dir, stale, 10, 1_000_000_000)
    make_clip_file(rec.dir, f".{clip_name('hall', 'glass', T0, '9abcdef0', 'flac')}.part", 10, 1_000_000_000)
    make_clip_file(rec.dir, ".keep", 10, 1_000_000_000)
    rec.start()
    rec.close(5)
    assert os.listdir(rec.dir) == [".keep"]


def test_retention_after_each_saved_clip_keeps_the_newest(tmp_path: Path) -> None:
    rec = recorder(tmp_path, pre_s=0.0, post_s=0.0, format="wav", max_total_mb=0.03)  # 1 s of 16-bit audio is 16 kB
    rec.start()
    src = Stream(rec)
    outs = []
    for k in range(3):
        src.to(2.0 * k + 0.5)
        ev = onset("glass", 2.0 * k)
        rec.on_event(ev)
        src.to(2.0 * k + 1.5)
        outs.append(rec.on_event(offset(ev, 2.0 * k + 1.0)))
        src.to(2.0 * k + 2.0)
        assert saved(rec, k + 1)
        stamp = time.time() - 100 + k
        os.utime(rec.dir / outs[-1].clip["file"], (stamp, stamp))  # distinct mtimes whatever the file system's resolution
    rec.close(5)
    assert only_clips(rec) == [outs[2].clip["file"]]


# ---------------------------------------------------------------- rtaudio doctor --config


def test_doctor_checks_the_clips_directory(tmp_path: Path) -> None:
    tiny_site(tmp_path)
    path = tmp_path / "site.yaml"
    base = "site: doc\nmodel: model\nengine: onnxruntime\nmqtt: null\nsources:\n  - {id: hall, type: file, path: clip.wav}\n"
    path.write_text(base + "clips: {dir: saved/clips, labels: [tone_440]}\n")
    check = {c.name: c for c in config_checks(path)}["clips"]
    assert check.ok and str(tmp_path / "saved" / "clips") in check.detail
    assert not (tmp_path / "saved").exists()  # tried, then undone
    (tmp_path / "saved").write_text("a file where the directory's parent should be")
    check = {c.name: c for c in config_checks(path)}["clips"]
    assert check.status == "error" and not check.required and "is a file" in check.detail and "clips.dir" in check.fix
    path.write_text(base)
    assert "clips" not in {c.name for c in config_checks(path)}


# ---------------------------------------------------------------- the daemon


SITE_SR = 16000


def site_audio(seed: int = 7) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Faint 16-bit noise (unique samples) with two 440 Hz and one 1000 Hz bursts; returns it and the bursts."""
    bursts = [("tone_440", 2.0, 4.0), ("tone_1000", 7.0, 9.5), ("tone_440", 12.0, 13.5)]
    n = 18 * SITE_SR
    audio = np.random.default_rng(seed).integers(-60, 60, n).astype(np.float64) / 32768
    for label, a, b in bursts:
        hz = 440 if label == "tone_440" else 1000
        audio[round(a * SITE_SR) : round(b * SITE_SR)] += tone(hz, b - a)
    return (np.round(audio * 32768) / 32768).astype(np.float32), bursts


@pytest.mark.integration
def test_rtaudio_run_clips_every_event_of_two_labels(tmp_path: Path, mosquitto, make_subscriber) -> None:
    audio, bursts = site_audio()
    tiny_site(tmp_path, "scene.wav", audio, SITE_SR)
    (tmp_path / "scene.wav").unlink()
    sf.write(str(tmp_path / "scene.wav"), audio, SITE_SR, subtype="PCM_16")
    config = tmp_path / "site.yaml"
    config.write_text(f"""\
site: lab
model: model
sources:
  - {{id: hall, type: file, path: scene.wav, realtime: false}}
events: {{median_windows: 1}}
mqtt: {{broker: 127.0.0.1, port: {mosquitto.port}, shutdown_flush_s: 5}}
clips: {{dir: clips, labels: [tone_440, tone_1000], pre_s: 1.0, post_s: 1.5, format: flac}}
""")
    sub = make_subscriber(mosquitto, "rtaudio/lab/#")
    topic = "rtaudio/lab/hall/events"
    proc = run_rtaudio("run", "--config", str(config), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sub.wait_for(lambda: sum(json.loads(m.payload)["kind"] == "offset" for m in sub.on(topic)) >= 3, timeout=10)
    events = list({(e["event_id"], e["kind"]): e for e in (json.loads(m.payload) for m in sub.on(topic))}.values())  # QoS 1 may repeat
    offsets = [e for e in events if e["kind"] == "offset" and e["label"] in ("tone_440", "tone_1000")]
    assert sorted(e["label"] for e in offsets) == ["tone_1000", "tone_440", "tone_440"], events
    origins = []
    for e in offsets:
        jsonschema.validate(e, load_schema("events"))
        clip = e["clip"]
        path = tmp_path / "clips" / clip["file"]
        assert path.is_file(), (clip, os.listdir(tmp_path / "clips"), proc.stderr[-3000:])
        data, rate = sf.read(str(path), dtype="float32")
        assert rate == SITE_SR
        planned = iso_seconds(e["offset"]) - iso_seconds(e["onset"]) + 1.0 + 1.5
        assert abs(len(data) / SITE_SR - planned) <= 0.1 and abs(clip["duration_s"] - planned) <= 0.1, (clip, e)
        assert clip["pre_s"] == 1.0 and clip["post_s"] == 1.5
        start = iso_seconds(clip["start"])
        assert abs(start - (iso_seconds(e["onset"]) - 1.0)) <= 0.002
        # Where in the file is this clip? Its samples are the file's, exactly, at one position...
        matches = [int(i) for i in np.flatnonzero(audio[: audio.size - data.size + 1] == data[0]) if np.array_equal(audio[i : i + 64], data[:64])]
        assert len(matches) == 1, matches
        np.testing.assert_array_equal(audio[matches[0] : matches[0] + data.size], data)
        origins.append(start - matches[0] / SITE_SR)  # ...the capture time of the file's first sample
    # ...and every clip agrees on where the stream began: each sits at the stream time its message gives.
    assert max(origins) - min(origins) <= 0.0015, origins
    assert sub.wait_for(lambda: sub.on("rtaudio/lab/health"), timeout=10)
    health = json.loads(sub.on("rtaudio/lab/health")[-1].payload)["sources"]["hall"]  # the last one, sent after the clips were closed
    assert (health["clips_saved"], health["clips_dropped"]) == (3, 0)
    assert sorted(os.listdir(tmp_path / "clips")) == sorted(e["clip"]["file"] for e in offsets)  # no temporary file left


def test_the_rings_hold_the_latest_onset_decision_of_a_clipped_label() -> None:
    """A clipped label whose onset is decided 40 s after it began (its min_duration_s on one source) still has its
    pre-roll in the ring; labels not clipped do not size it; without long durations the default holds."""
    from rtaudio.config.site import validate_site
    from rtaudio.contract import ModelInfo
    from rtaudio.runtime.clips import DEFAULT_LAG_S
    from rtaudio.runtime.rules import build_rules
    from rtaudio.runtime.site import clip_lag_s

    info = ModelInfo(
        model_id="m", version="1", labels=["glass_break", "speech"], sample_rate=16000, window_s=1.0, hop_s=0.5, thresholds=[0.5, 0.5], onnx_sha256="0" * 64
    )
    base = {"site": "lab", "model": "m", "mqtt": None, "clips": {"dir": "c", "labels": ["glass_break"]}}
    source = {"id": "a", "type": "file", "path": "x.wav"}
    plain = validate_site({**base, "sources": [source]})
    assert clip_lag_s(plain, info, build_rules(plain, info)) == DEFAULT_LAG_S
    slow = validate_site(
        {
            **base,
            "events": {"labels": {"speech": {"min_duration_s": 300}}},  # not clipped: no bearing
            "sources": [{**source, "events": {"labels": {"glass_break": {"min_duration_s": 40}}}}],
        }
    )
    # 40 s + median delay (3 // 2 + 1 hops) 1 s + window 1 s + backlog (8 windows x 0.5 s) 4 s + 5 s
    assert clip_lag_s(slow, info, build_rules(slow, info)) == pytest.approx(51.0)
