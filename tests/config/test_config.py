"""site.yaml validation: every error at once, each naming its YAML path, value and what is allowed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rtaudio.config.load import load_site_config
from rtaudio.config.loader import ConfigError
from rtaudio.runtime.sources.file import FileConfig as FileSource
from tests.helpers import REPO, run_rtaudio, tiny_site

BASE = """\
site: lab
model: model
sources:
  - id: replay
    type: file
    path: clip.wav
  - id: cam
    type: rtp
    port: 5004
mqtt:
  broker: 127.0.0.1
"""


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    tiny_site(tmp_path)
    return tmp_path


def write(site: Path, text: str) -> Path:
    path = site / "site.yaml"
    path.write_text(text)
    return path


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return run_rtaudio("config", "check", str(path), timeout=60)


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_site_config(path)
    return info.value.problems


def test_valid_config_resolves_paths_relative_to_file(site: Path) -> None:
    config = load_site_config(write(site, BASE))
    assert config.model == site / "model"
    assert isinstance(config.sources[0], FileSource) and config.sources[0].path == site / "clip.wav"
    assert config.engine.type == "auto"
    result = check(site / "site.yaml")
    assert result.returncode == 0, result.stderr
    assert "replay (file)" in result.stdout


def test_typo_key_names_path_line_and_allowed_keys(site: Path) -> None:
    path = write(site, BASE.replace("    port: 5004", "    port: 5004\n    jiter_ms: 40"))
    result = check(path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "site.yaml:10: sources[1].jiter_ms: unknown key" in lines[0]
    assert "jitter_ms" in lines[0]  # the allowed keys of an rtp source are listed


def test_unknown_source_type(site: Path) -> None:
    path = write(site, BASE.replace("type: rtp", "type: webcam"))
    result = check(path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "sources[1].type: 'webcam' is not allowed; expected one of ffmpeg, file, microphone, rtp" in line


def test_bad_sample_rate(site: Path) -> None:
    text = BASE + "  - {id: mic, type: microphone, sample_rate: 12345}\n"
    (line,) = problems(write(site, text.replace("mqtt:\n  broker: 127.0.0.1\n", "") + "mqtt: {broker: 127.0.0.1}\n"))
    assert line.endswith("sources[2].sample_rate: 12345 is not allowed; expected one of 8000, 16000, 22050, 32000, 44100, 48000")


def test_unreadable_model_directory(site: Path) -> None:
    result = check(write(site, BASE.replace("model: model", "model: nowhere")))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "model:" in line and "nowhere" in line and "does not exist" in line


def test_model_with_mismatched_hash_is_refused(site: Path) -> None:
    onnx_file = site / "model" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    (line,) = problems(write(site, BASE))
    assert "SHA-256" in line and "does not match" in line


def test_model_missing_metadata_is_refused(site: Path) -> None:
    (site / "model" / "model.json").unlink()
    (line,) = problems(write(site, BASE))
    assert "has no model.json" in line


def test_all_errors_reported_at_once(site: Path) -> None:
    text = BASE.replace("port: 5004", "port: 99999").replace("broker: 127.0.0.1", "broker: 127.0.0.1\n  qos: 2").replace("site: lab", "site: 'bad site'")
    lines = problems(write(site, text))
    assert len(lines) == 3
    joined = "\n".join(lines)
    assert "sources[1].port" in joined and "mqtt.qos: unknown key" in joined and "site: 'bad site'" in joined


def test_env_substitution_and_missing_variable(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = BASE + "  password: ${RTAUDIO_TEST_PW}\n  username: ${RTAUDIO_TEST_USER:-rtaudio}\n"
    monkeypatch.setenv("RTAUDIO_TEST_PW", "s3cret")
    config = load_site_config(write(site, text))
    assert config.mqtt.resolved_password() == "s3cret" and config.mqtt.username == "rtaudio"
    assert "s3cret" not in repr(config)  # secrets never end up in logs
    monkeypatch.delenv("RTAUDIO_TEST_PW")
    (line,) = problems(write(site, text))
    assert "RTAUDIO_TEST_PW is not set" in line


def test_password_file(site: Path) -> None:
    (site / "pw").write_text("from-file\n")
    config = load_site_config(write(site, BASE + "  password_file: " + str(site / "pw") + "\n"))
    assert config.mqtt.resolved_password() == "from-file"


def test_duplicate_ids_and_unknown_event_label(site: Path) -> None:
    text = BASE.replace("id: cam", "id: replay") + "events:\n  labels:\n    tone_440: {threshold: 0.6}\n"
    (line,) = problems(write(site, text))
    assert "'replay' is used twice" in line
    text = BASE + "events:\n  labels:\n    smoke: {threshold: 0.6}\n"
    (line,) = problems(write(site, text))
    assert "events.labels.smoke: not a label of the model; expected one of tone_440, tone_1000, noise" in line


def test_even_median_window_and_g711_rate(site: Path) -> None:
    text = BASE.replace("    port: 5004", "    port: 5004\n    payload: PCMU\n    sample_rate: 48000") + "events: {median_windows: 4}\n"
    lines = problems(write(site, text))
    assert any("events.median_windows: 4 is not allowed; expected an odd number" in line for line in lines)
    assert any("payload PCMU is 8000 Hz" in line for line in lines)


def test_not_yaml_and_not_a_mapping(site: Path) -> None:
    assert "not valid YAML" in problems(write(site, "site: [unclosed\n"))[0]
    assert "expected a mapping" in problems(write(site, "- just\n- a list\n"))[0]


def test_schema_command_prints_json_schema() -> None:
    result = run_rtaudio("config", "schema", timeout=60)
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    assert set(schema["$defs"]["RtpConfig"]["properties"]) >= {"port", "payload", "jitter_ms", "allow_from"}


def test_every_field_is_titled_and_described_or_bounded() -> None:
    """The example config and schema are only as good as the field docs."""
    from rtaudio.config.site import SiteConfig

    schema = SiteConfig.model_json_schema()
    missing = [f"{name}.{field}" for name, model in schema["$defs"].items() for field, spec in model.get("properties", {}).items() if "title" not in spec]
    assert not missing, missing


def test_example_config_is_valid_and_shows_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    root = REPO
    monkeypatch.setenv("MQTT_PASSWORD", "x")
    example = root / "config" / "site.example.yaml"
    config = load_site_config(example, check_model=False)
    data = yaml.safe_load(example.read_text().replace("${MQTT_PASSWORD}", "x"))
    from rtaudio.config.site import SiteConfig

    assert set(data) == set(SiteConfig.model_fields)
    types = {s["type"] for s in data["sources"]}
    assert types == {"microphone", "rtp", "ffmpeg", "file"}
    assert config.mqtt is not None


def test_config_reference_is_up_to_date() -> None:
    root = REPO
    result = subprocess.run([sys.executable, str(root / "tools" / "gen_config_docs.py"), "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
