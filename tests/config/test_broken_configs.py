"""Broken site files through the real command line: every problem at once, one line each, never a traceback.

The corpus is ``tests/config/broken/*.yaml``. Each file says in its comment header what
``rtaudio config check`` must print: ``# expect: LINE: text`` for an error line (``-`` when the
problem has no line), ``# warn: LINE: text`` for a warning, ``# exit: N`` when not 2, and
``# needs: openssl`` when it uses certificates the fixture makes with openssl. ``{dir}`` stands for
the site folder. Each reported line must start with ``error: FILE:LINE: text`` (or ``warning:``), and
there must be exactly as many lines as the header lists. A file that fails ``config check`` must
fail ``run`` with the same lines, before anything starts.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rtaudio.config.load import load_site_config
from rtaudio.config.loader import MAX_CONFIG_BYTES, ConfigError
from rtaudio.contract.vocab import PAD, UNK, Vocabulary
from rtaudio.doctor import config_checks
from tests.helpers import REPO, run_rtaudio, tiny_site

CORPUS = Path(__file__).parent / "broken"
CASES = sorted(CORPUS.glob("*.yaml"))
HAS_OPENSSL = shutil.which("openssl") is not None
UNSET = "RTAUDIO_TEST_SURELY_UNSET_CLIP"


@dataclass
class Expected:
    errors: list[tuple[str, str]] = field(default_factory=list)  # (line or "-", text)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    exit: int = 2
    needs: list[str] = field(default_factory=list)


def expected(path: Path) -> Expected:
    """The comment header of a corpus file (read as Latin-1: one file is not UTF-8 on purpose)."""
    out = Expected()
    for line in path.read_bytes().decode("latin-1").splitlines():
        if match := re.match(r"# (expect|warn): (\d+|-): (.*)$", line):
            kind, where, text = match.groups()
            (out.errors if kind == "expect" else out.warnings).append((where, text))
        elif match := re.match(r"# exit: (\d+)$", line):
            out.exit = int(match.group(1))
        elif match := re.match(r"# needs: (.*)$", line):
            out.needs += match.group(1).split()
    assert out.errors or out.warnings, f"{path.name} states no expected line"
    return out


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every corpus file is checked in: the tiny model, clip.wav, a bad PEM, password files (and certificates when openssl is here)."""
    root = tmp_path_factory.mktemp("broken")
    tiny_site(root)
    (root / "bad.pem").write_text("not a certificate\n")
    for name, mode in (("pw-private", 0o600), ("pw-open", 0o644)):
        (root / name).write_text("s3cret\n")
        (root / name).chmod(mode)
    if HAS_OPENSSL:
        for stem in ("", "other-"):
            _openssl(
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rtaudio-test",
                "-keyout", str(root / f"{stem}key.pem"), "-out", str(root / f"{stem}cert.pem"),
            )  # fmt: skip
        _openssl("pkey", "-in", str(root / "key.pem"), "-aes256", "-passout", "pass:sekret", "-out", str(root / "encrypted-key.pem"))
    return root


def _env() -> dict[str, str]:
    env = {**os.environ, "RTAUDIO_DEFAULT_MODEL": str(REPO / "engines" / "default")}
    env.pop(UNSET, None)
    return env


def _check_lines(stderr: str, path: Path, site: Path, want: Expected) -> None:
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert len(errors) + len(warnings) == len(lines), stderr  # nothing but the report
    for kind, got, wanted in (("error", errors, want.errors), ("warning", warnings, want.warnings)):
        assert len(got) == len(wanted), f"{kind}s:\n" + "\n".join(got)
        for where, text in wanted:
            prefix = f"{kind}: {path}:{where}: " if where != "-" else f"{kind}: {path}: "
            line = prefix + text.replace("{dir}", str(site))
            assert any(g.startswith(line) for g in got), f"no line starting\n  {line}\nin\n" + "\n".join(got)


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_broken_config_reports_every_problem_on_one_line_each(case: Path, site_dir: Path) -> None:
    want = expected(case)
    if "openssl" in want.needs and not HAS_OPENSSL:
        pytest.skip("openssl is not installed (it makes the test certificates)")
    path = site_dir / case.name
    shutil.copyfile(case, path)
    before = sorted(p.name for p in site_dir.iterdir())
    result = run_rtaudio("config", "check", str(path), timeout=60, env=_env())
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == want.exit, result.stderr
    _check_lines(result.stderr, path, site_dir, want)
    assert sorted(p.name for p in site_dir.iterdir()) == before  # the checks leave nothing behind (outbox probes)
    if want.exit == 2:  # `run` reads the site the same way and starts nothing
        ran = run_rtaudio("run", "--config", str(path), "--duration", "5", timeout=60, env=_env())
        assert ran.returncode == 2 and "Traceback" not in ran.stderr, ran.stderr
        _check_lines(ran.stderr, path, site_dir, want)


def test_the_corpus_covers_every_hostile_and_checked_case() -> None:
    """The brief's list, so a deleted corpus file is noticed."""
    names = {c.stem for c in CASES}
    assert {
        "missing-password-file",
        "missing-tls-ca",
        "tls-ca-not-pem",
        "outbox-dir-is-a-file",
        "query-unknown-words",
        "window-differs-from-graph",
        "hop-longer-than-window",
        "unset-env-and-another-problem",
        "alias-bomb",
        "latin1-byte-in-comment",
        "broker-url",
        "type-rtsp",
        "host-instead-of-broker",
        "password-file-open-mode",
        "password-plain-tcp",
    } <= names


def test_file_over_the_size_limit_is_refused_before_parsing(site_dir: Path) -> None:
    path = site_dir / "huge.yaml"
    path.write_text("site: lab\n" + "# padding to two mebibytes\n" * (2 * MAX_CONFIG_BYTES // 27))
    size = path.stat().st_size
    for args in (("config", "check", str(path)), ("run", "--config", str(path))):
        result = run_rtaudio(*args, timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines() == [
            f"error: {path}: {size} bytes (2.0 MiB) is over the 1 MiB limit for a config file ({MAX_CONFIG_BYTES} bytes); refused before parsing"
        ]


def test_example_config_passes_as_shipped() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MQTT_PASSWORD"}
    result = run_rtaudio("config", "check", str(REPO / "config" / "site.example.yaml"), timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout.startswith("ok: site building-a")


def test_an_outbox_probe_that_fails_half_way_removes_what_it_made(site_dir: Path) -> None:
    """The first folder can be made, the second cannot (a name longer than the filesystem allows): the first is removed again."""
    path = site_dir / "long-outbox.yaml"
    path.write_text(f"site: lab\nmodel: model\nsources:\n  - {{id: f, type: file, path: clip.wav}}\nmqtt:\n  outbox_dir: fresh/{'x' * 300}\n")
    with pytest.raises(ConfigError) as info:
        load_site_config(path)
    (line,) = info.value.problems
    assert line.startswith(f"{path}:6: mqtt.outbox_dir: cannot create {site_dir / 'fresh'}/xxx") and "name too long" in line.lower()
    assert not (site_dir / "fresh").exists()
    path.write_text(path.read_text().replace("x" * 300, "queue"))
    mqtt = load_site_config(path).mqtt
    assert mqtt is not None and mqtt.outbox_dir == site_dir / "fresh" / "queue"  # creatable: passes ...
    assert not (site_dir / "fresh").exists()  # ... and the probe is undone


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_password_file(site_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0)
    path = tmp_path / "site.yaml"
    path.write_text(f"site: lab\nmodel: {site_dir / 'model'}\nsources:\n  - {{id: f, type: file, path: {site_dir / 'clip.wav'}}}\nmqtt:\n  password_file: pw\n")
    with pytest.raises(ConfigError) as info:
        load_site_config(path)
    assert info.value.problems == [f"{path}:6: mqtt.password_file: {secret} cannot be read (Permission denied)"]


@pytest.mark.integration
@pytest.mark.skipif(not HAS_OPENSSL, reason="openssl is not installed (it makes the test certificates)")
def test_good_tls_files_and_passphrase_pass(site_dir: Path) -> None:
    path = site_dir / "tls-good.yaml"
    secret = site_dir / "key-pass"
    secret.write_text("sekret\n")
    secret.chmod(stat.S_IRUSR | stat.S_IWUSR)
    path.write_text(
        "site: lab\nmodel: model\nsources:\n  - {id: f, type: file, path: clip.wav}\n"
        "mqtt:\n  broker: mqtt.example.org\n  port: 8883\n  password_file: pw-private\n"
        "  tls: {ca: cert.pem, cert: cert.pem, key: encrypted-key.pem, key_password_file: key-pass}\n"
    )
    result = run_rtaudio("config", "check", str(path), timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    path.write_text(path.read_text().replace("key_password_file: key-pass", "key_password: wrong"))
    result = run_rtaudio("config", "check", str(path), timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path}:9: mqtt.tls.key: {site_dir / 'encrypted-key.pem'}: cannot decrypt the key with the configured passphrase")


def test_train_yaml_shares_the_hostile_file_checks(tmp_path: Path) -> None:
    from rtaudio.train.config import TrainConfigError, load_train_config

    bomb = tmp_path / "train.yaml"
    bomb.write_bytes((CORPUS / "alias-bomb.yaml").read_bytes())
    with pytest.raises(TrainConfigError) as info:
        load_train_config(bomb)
    assert info.value.problems == [f"{bomb}:4: YAML alias *a is not allowed in a config file (aliases can expand without bound); write the value out in full"]
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"epochs: 2\n# caf\xe9\n")
    with pytest.raises(TrainConfigError, match=r"latin.yaml:2: byte 0xe9 at offset 15 \(line 2, column 6\) is not UTF-8"):
        load_train_config(latin)


def test_doctor_reports_the_same_checks_by_part(site_dir: Path) -> None:
    path = site_dir / "doctor.yaml"
    path.write_text(
        "site: lab\nmodel: model\nwindow: {window_s: 2}\nsources:\n  - {id: f, type: file, path: clip.wav}\nmqtt: {broker: 127.0.0.1, password_file: nope}\n"
    )
    (check,) = config_checks(path)  # a config error stops the rest
    assert check.name == "config" and check.status == "error" and f"{path}:6: mqtt.password_file: {site_dir / 'nope'} does not exist" in check.detail
    path.write_text(path.read_text().replace("password_file: nope", "password_file: pw-open"))
    checks = {c.name: c for c in config_checks(path)}
    assert checks["config"].ok and "warning: " in checks["config"].detail and "mode 0644" in checks["config"].detail
    assert checks["model"].status == "error" and "window.window_s: 2 s is 32000 samples" in checks["model"].detail


@pytest.mark.integration
def test_run_time_failures_are_one_line_and_exit_2(site_dir: Path) -> None:
    """What only running finds (a port taken after the check, an outbox that will not open) ends `run` with one `error:` line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = site_dir / "port-taken.yaml"
        path.write_text(f"site: lab\nmodel: model\nsources:\n  - {{id: f, type: file, path: clip.wav}}\nmqtt: {{broker: embedded, port: {port}}}\n")
        assert run_rtaudio("config", "check", str(path), timeout=60).returncode == 0  # nothing a check can know
        result = run_rtaudio("run", "--config", str(path), "--duration", "5", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"127.0.0.1:{port} is in use" in line and "embedded MQTT broker" in line

    outbox = site_dir / "ob"
    (outbox / "outbox.sqlite3").mkdir(parents=True)  # the queue's database is a folder
    path = site_dir / "outbox-db.yaml"
    path.write_text("site: lab\nmodel: model\nsources:\n  - {id: f, type: file, path: clip.wav}\nmqtt: {broker: 127.0.0.1, port: 9, outbox_dir: ob}\n")
    result = run_rtaudio("run", "--config", str(path), "--duration", "5", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "outbox" in line and str(outbox / "outbox.sqlite3") in line


def test_a_text_head_onnx_runtime_cannot_load_is_one_line(tmp_path: Path) -> None:
    """ONNX Runtime's own exception types (not ValueError or RuntimeError) also end `run` with one line naming the file."""
    model = tiny_site(tmp_path)
    Vocabulary([PAD, UNK, "water"]).save(model.path)
    for name in ("text_encoder.onnx", "audio_text.onnx"):
        (model.path / name).write_text("not an ONNX graph\n")
    path = tmp_path / "site.yaml"
    path.write_text("site: lab\nmodel: model\nmqtt: null\nsources:\n  - {id: f, type: file, path: clip.wav}\nqueries:\n  leak: water\n")
    assert run_rtaudio("config", "check", str(path), timeout=60).returncode == 0  # the files are there; only loading them tells
    result = run_rtaudio("run", "--config", str(path), "--duration", "5", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: onnxruntime: ") and str(model.path / "text_encoder.onnx") in line
