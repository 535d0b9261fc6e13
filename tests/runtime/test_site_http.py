"""``rtaudio run`` with ``http:`` on: /metrics rising under the demo, /healthz following a real RTP
sender that stops and comes back, the systemd watchdog fed by the same checks, and the MQTT health
message, /metrics and /healthz agreeing (real mosquitto, real ffmpeg, real sockets)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Broker, Subscriber, demo_site, free_port, needs_ffmpeg, run_rtaudio, spawn_rtaudio, wait_until

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET (an HTTP error status is an answer, not an exception)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    status, text = get(base + "/metrics")
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def sample(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return values.get((name, tuple(sorted(labels.items()))))


def stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err


def health_messages(sub: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.on("rtaudio/demo/health")]


def test_the_demo_serves_rising_metrics_and_health_message_metrics_and_healthz_agree(tmp_path: Path, mosquitto: Broker) -> None:
    """A looped real-time demo source keeps the site running (metrics rise); a second source reads the demo file
    once, fast, then falls silent: its frozen counters and its failing check must read the same on all three."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    site = demo_site(tmp_path / "site.yaml", mosquitto, sources=("demo", "rec"), http={"listen": f"127.0.0.1:{port}"})
    data = yaml.safe_load(site.read_text())
    data["sources"][0].update(realtime=True, loop=True)
    data["sources"][1].update(realtime=False, silent_after_s=2)
    site.write_text(yaml.safe_dump(data))
    sub = Subscriber(mosquitto, "rtaudio/demo/health")
    process = spawn_rtaudio("run", "--config", str(site))
    try:
        assert wait_until(lambda: get(base + "/readyz")[0] == 200, timeout=60), stop(process)
        first = sample(metrics(base), "rtaudio_windows_total", source="demo") or 0
        assert wait_until(lambda: (sample(metrics(base), "rtaudio_windows_total", source="demo") or 0) >= first + 3)
        later = metrics(base)
        assert sample(later, "rtaudio_capture_to_publish_seconds_count", source="demo")
        assert sample(later, "rtaudio_inference_seconds_count")
        buckets = sorted(
            (float(dict(labels)["le"]), value)
            for (name, labels), value in later.items()
            if name == "rtaudio_capture_to_publish_seconds_bucket" and ("source", "demo") in labels
        )
        assert buckets[-1][0] == float("inf") and [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative

        assert wait_until(lambda: get(base + "/healthz")[0] == 503, timeout=60)  # rec has ended: silent past its 2 s

        def settled() -> bool:  # two health messages in a row with rec's counters unchanged: it is done
            recs = [h["sources"]["rec"] for h in health_messages(sub)[-2:]]
            return len(recs) == 2 and recs[0]["windows_processed"] == recs[1]["windows_processed"]

        assert sub.wait_for(settled, timeout=30)
        message = health_messages(sub)[-1]
        scraped = metrics(base)
        status, body = get(base + "/healthz")
        rec = message["sources"]["rec"]
        assert rec["windows_processed"] > 0 and sample(scraped, "rtaudio_windows_total", source="rec") == rec["windows_processed"]
        assert sample(scraped, "rtaudio_samples_total", source="rec") == rec["samples"]
        assert rec["events_opened"] and all(sample(scraped, "rtaudio_events_opened_total", source="rec", label=k) == v for k, v in rec["events_opened"].items())
        failing = [(f["check"], f.get("source")) for f in json.loads(body)["checks"]]
        assert status == 503 and failing == [("source_silent", "rec")] == [(f["check"], f.get("source")) for f in message["failing"]]
        assert message["healthy"] is False and sample(scraped, "rtaudio_healthy") == 0
        assert sample(scraped, "rtaudio_health_check_failing", check="source_silent", source="rec") == 1
        assert sample(scraped, "rtaudio_health_check_failing", check="source_silent", source="demo") == 0
        done = run_rtaudio("healthcheck", "--config", str(site))
        assert done.returncode == 1 and json.loads(done.stdout)["checks"][0]["source"] == "rec", done.stdout + done.stderr
    finally:
        err = stop(process)
        sub.close()
    assert "Traceback" not in err, err
    unreachable = run_rtaudio("healthcheck", "--url", base, "--timeout", "2")
    assert unreachable.returncode == 1 and "unreachable" in unreachable.stderr


def send_rtp(port: int, seconds: float) -> subprocess.Popen[bytes]:
    """A real ffmpeg RTP sender: a 440 Hz tone as L16 mono 16 kHz, in real time."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}"]
    cmd += ["-ac", "1", "-c:a", "pcm_s16be", "-f", "rtp", f"rtp://127.0.0.1:{port}"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Systemd:
    """The notification socket systemd would listen on: every datagram rtaudio sends, with its arrival time."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = path
        self.received: list[tuple[float, list[str]]] = []

    def drain(self) -> list[tuple[float, list[str]]]:
        while True:
            try:
                self.received.append((time.monotonic(), self.sock.recv(4096).decode().split("\n")))
            except TimeoutError:
                return self.received

    def saw(self, predicate: Callable[[list[str]], bool], since: float = 0.0) -> bool:
        return any(t >= since and predicate(lines) for t, lines in self.drain())


@needs_ffmpeg
def test_healthz_and_the_watchdog_follow_a_source_that_stops_and_recovers(tmp_path: Path, mosquitto: Broker) -> None:
    http_port, rtp_port, limit = free_port(), free_port(udp=True), 3.0
    site = tmp_path / "site.yaml"
    data = yaml.safe_load(demo_site(site, mosquitto).read_text())
    data["sources"] = [{"id": "paging", "type": "rtp", "bind": "127.0.0.1", "port": rtp_port, "payload": "L16", "sample_rate": 16000, "silent_after_s": limit}]
    data["http"] = {"listen": f"127.0.0.1:{http_port}"}
    site.write_text(yaml.safe_dump(data))
    base = f"http://127.0.0.1:{http_port}"
    systemd = Systemd(tmp_path / "notify")
    env = {**os.environ, "NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "2000000"}
    sub = Subscriber(mosquitto, "rtaudio/demo/health")
    sender = send_rtp(rtp_port, 60)
    process = spawn_rtaudio("run", "--config", str(site), env=env)
    try:
        assert wait_until(lambda: get(base + "/healthz")[0] == 200 and get(base + "/readyz")[0] == 200, timeout=60), stop(process)
        assert wait_until(lambda: systemd.saw(lambda lines: "READY=1" in lines), timeout=10)
        assert wait_until(lambda: systemd.saw(lambda lines: "WATCHDOG=1" in lines), timeout=10)

        sender.terminate()
        sender.wait(10)
        stopped = time.monotonic()
        assert wait_until(lambda: get(base + "/healthz")[0] == 503, timeout=limit + 10)
        took = time.monotonic() - stopped
        status, body = get(base + "/healthz")
        failing = json.loads(body)["checks"]
        assert status == 503 and [(f["check"], f.get("source")) for f in failing] == [("source_silent", "paging")], body
        assert took < limit + 3.0, f"/healthz took {took:.1f} s to fail after the audio stopped (limit {limit} s)"
        # The watchdog is held back and STATUS names the check; MQTT health says the same.
        failed_at = time.monotonic()
        assert wait_until(lambda: systemd.saw(lambda lines: any(x.startswith("STATUS=failing: source_silent paging") for x in lines), failed_at), timeout=5)
        assert not systemd.saw(lambda lines: "WATCHDOG=1" in lines, failed_at + 0.1)
        assert sub.wait_for(lambda: any(not h["healthy"] and h["failing"][0]["source"] == "paging" for h in health_messages(sub)), timeout=20)
        assert run_rtaudio("healthcheck", "--config", str(site)).returncode == 1

        sender = send_rtp(rtp_port, 60)
        assert wait_until(lambda: get(base + "/healthz")[0] == 200, timeout=20)
        done = run_rtaudio("healthcheck", "--config", str(site))
        assert done.returncode == 0 and json.loads(done.stdout)["status"] == "ok", done.stdout + done.stderr
        back = time.monotonic()
        assert wait_until(lambda: systemd.saw(lambda lines: "WATCHDOG=1" in lines, back), timeout=10)
    finally:
        sender.kill()
        err = stop(process)
        systemd.drain()
        sub.close()
        systemd.sock.close()
    assert "Traceback" not in err, err
    assert any("STOPPING=1" in lines for _, lines in systemd.received)
