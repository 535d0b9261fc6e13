"""MQTT connection failures name their true reason in the log (real mosquitto, real TLS, real paho):
an unknown CA, a host name mismatch, a client certificate refused, TLS to a plain port, a refused
login, nothing listening, an unresolvable host; each once as WARNING, then DEBUG while retrying.
And the start-up warning when a password would travel without TLS."""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from rtaudio.config.site import MqttConfig, TlsConfig
from rtaudio.runtime.publish.mqtt import MqttPublisher, describe_refusal, is_loopback, plaintext_password_warning
from tests.helpers import Broker, free_port, wait_until

LOGGER = "rtaudio.runtime.publish.mqtt"


@pytest.fixture
def publishers() -> Iterator[Callable[..., MqttPublisher]]:
    """Started publishers (reconnect backoff capped at 1 s); closed at teardown so no thread outlives the test."""
    made: list[MqttPublisher] = []

    def make(site: str = "hq", **config: Any) -> MqttPublisher:
        publisher = MqttPublisher(MqttConfig(**{"broker": "127.0.0.1", "reconnect_max_s": 1.0, **config}), site, model_id="tiny-1")
        made.append(publisher)
        publisher.start()
        return publisher

    yield make
    for publisher in made:
        publisher.close(0)


def mqtt_records(caplog: pytest.LogCaptureFixture, text: str, regex: bool = False) -> list[logging.LogRecord]:
    """The publisher's log records containing ``text`` (a regular expression with ``regex``)."""
    found = (lambda m: re.search(text, m) is not None) if regex else (lambda m: text in m)
    return [r for r in caplog.records if r.name == LOGGER and found(r.getMessage())]


def certificates(directory: Path) -> dict[str, Path]:
    """A CA; ``server`` for 127.0.0.1 and ``other`` for the name broker.test only, both signed by it."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=rtaudio failures CA")
    for name, san in (("server", "IP:127.0.0.1"), ("other", "DNS:broker.test")):
        (directory / f"{name}.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        sign = ["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
        openssl(*sign, "-out", f"{name}.crt", "-extfile", f"{name}.ext")
    return {name: directory / name for name in ("ca.crt", "server.crt", "server.key", "other.crt", "other.key")}


@pytest.fixture
def tls_broker(make_mosquitto: Callable[..., Broker], tmp_path: Path) -> tuple[Broker, dict[str, int], dict[str, Path]]:
    """mosquitto with a plain listener and three TLS ones: ``good`` (cert for 127.0.0.1), ``other_name``
    (cert for broker.test only) and ``client_cert`` (requires a client certificate)."""
    certs = certificates(tmp_path)
    ports = {"good": free_port(), "other_name": free_port(), "client_cert": free_port()}
    settings = []
    for name, port in ports.items():
        server = "other" if name == "other_name" else "server"
        settings += [f"listener {port} 127.0.0.1", f"cafile {certs['ca.crt']}", f"certfile {certs[server + '.crt']}", f"keyfile {certs[server + '.key']}"]
        if name == "client_cert":
            settings.append("require_certificate true")
    return make_mosquitto(settings=settings), ports, certs


def assert_warned_once_then_debug(caplog: pytest.LogCaptureFixture, text: str, regex: bool = False) -> None:
    """``text`` logged at WARNING on the first failure and only at DEBUG on the retries after it."""
    assert wait_until(lambda: len(mqtt_records(caplog, text, regex)) >= 2, 15), f"no retry logged {text!r}: {caplog.text}"
    levels = [r.levelno for r in mqtt_records(caplog, text, regex)]
    assert levels[0] == logging.WARNING and set(levels[1:]) == {logging.DEBUG}, levels


@pytest.mark.integration
def test_unknown_ca_logs_the_certificate_verify_error(tls_broker, publishers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    _, ports, _ = tls_broker
    publisher = publishers(port=ports["good"], tls=TlsConfig())  # the system CAs do not know the test CA
    # OpenSSL's verify message: which one depends on whether the broker sends its CA along
    assert_warned_once_then_debug(
        caplog, r"certificate verify failed: (unable to get local issuer certificate|self-signed certificate in certificate chain)", True
    )
    (warning,) = [r for r in mqtt_records(caplog, "certificate verify failed") if r.levelno == logging.WARNING]
    assert f"127.0.0.1:{ports['good']}" in warning.getMessage() and "mqtt.tls.ca" in warning.getMessage()
    assert not mqtt_records(caplog, "cannot reach")
    assert not publisher.connected


@pytest.mark.integration
def test_host_name_mismatch_is_named(tls_broker, publishers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    _, ports, certs = tls_broker
    publishers(port=ports["other_name"], tls=TlsConfig(ca=certs["ca.crt"]))  # the CA is right, the name is not
    assert_warned_once_then_debug(caplog, "certificate verify failed: IP address mismatch, certificate is not valid for '127.0.0.1'")
    assert "mqtt.broker must be a name or address the broker's certificate lists" in mqtt_records(caplog, "mismatch")[0].getMessage()


@pytest.mark.integration
def test_client_certificate_refused_by_the_broker_is_named(tls_broker, publishers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    _, ports, certs = tls_broker
    publishers(port=ports["client_cert"], tls=TlsConfig(ca=certs["ca.crt"]))  # no client certificate
    assert wait_until(lambda: mqtt_records(caplog, "client certificate"), 15), caplog.text
    message = mqtt_records(caplog, "client certificate")[0].getMessage()
    assert "certificate required" in message.lower() and "mqtt.tls.cert" in message


@pytest.mark.integration
def test_tls_to_a_plain_port_says_so(tls_broker, publishers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    broker, _, certs = tls_broker
    publishers(port=broker.port, tls=TlsConfig(ca=certs["ca.crt"]))
    assert wait_until(lambda: mqtt_records(caplog, "a TLS listener?"), 15), caplog.text
    assert mqtt_records(caplog, f"TLS to 127.0.0.1:{broker.port} failed")


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_wrong_password_names_the_refusal(make_mosquitto, publishers, protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    broker = make_mosquitto(users={"rtaudio": "s3cret"})
    publisher = publishers(port=broker.port, protocol=protocol, username="rtaudio", password="n0t-the-Pa55word")
    # mosquitto answers a wrong password with "Not authorized" (MQTT 5: 0x87, 3.1.1: 5), not "Bad user name or password"
    assert_warned_once_then_debug(caplog, "refused the connection: Not authorized for user 'rtaudio' (a wrong password")
    assert "check mqtt.username and mqtt.password" in mqtt_records(caplog, "refused the connection")[0].getMessage()
    assert not publisher.connected
    assert "n0t-the-Pa55word" not in caplog.text


@pytest.mark.integration
def test_anonymous_client_refused_names_not_authorised(make_mosquitto, publishers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    broker = make_mosquitto(anonymous=False)
    publishers(port=broker.port)
    assert wait_until(lambda: mqtt_records(caplog, "refused the connection: Not authorized for anonymous clients (it requires a login"), 15), caplog.text


def test_refusal_reason_codes_are_named() -> None:
    def refusal(code: int, username: str | None = "rtaudio") -> str:
        return describe_refusal(ReasonCode(PacketTypes.CONNACK, identifier=code), "broker", 1883, username)

    assert refusal(134) == (
        "the broker at broker:1883 refused the login: Bad user name or password for user 'rtaudio'; check mqtt.username and mqtt.password / mqtt.password_file"
    )
    assert "for no username (mqtt.username is not set)" in refusal(134, None)
    assert "Not authorized for user 'rtaudio' (a wrong password" in refusal(135)
    assert "Client identifier not valid; check mqtt.client_id" in refusal(133)
    assert refusal(136) == "the broker at broker:1883 refused the connection: Server unavailable"


@pytest.mark.integration
def test_nothing_listening_and_unknown_host_are_named(publishers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    port = free_port()  # free a moment ago: nothing listens there
    publishers(port=port)
    publishers(site="other", broker="rtaudio-test.invalid", port=port)
    assert wait_until(lambda: mqtt_records(caplog, f"127.0.0.1:{port} refused the connection (is the broker running"), 15), caplog.text
    assert wait_until(lambda: mqtt_records(caplog, "cannot resolve the broker host 'rtaudio-test.invalid'"), 15), caplog.text


@pytest.mark.integration
def test_password_over_plain_tcp_to_loopback_is_mentioned_and_login_works(make_mosquitto, publishers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    broker = make_mosquitto(users={"rtaudio": "s3cret"})
    publisher = publishers(port=broker.port, username="rtaudio", password="s3cret")
    assert wait_until(lambda: publisher.connected, 15)
    (record,) = mqtt_records(caplog, "without TLS")
    assert record.levelno == logging.INFO and "loopback" in record.getMessage()


def test_password_without_tls_warns_for_a_remote_broker(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    warning = plaintext_password_warning(MqttConfig(broker="mqtt.example.com", username="rtaudio", password_file=secret), "mqtt.example.com")
    assert warning is not None and "mqtt.example.com:1883 without TLS" in warning and "set mqtt.tls" in warning
    assert "s3cret" not in warning
    with_tls = MqttConfig(broker="mqtt.example.com", port=8883, username="rtaudio", password="s3cret", tls=TlsConfig())
    assert plaintext_password_warning(with_tls, "mqtt.example.com") is None
    assert plaintext_password_warning(MqttConfig(broker="mqtt.example.com", username="rtaudio"), "mqtt.example.com") is None  # no password
    assert "loopback" in (plaintext_password_warning(MqttConfig(broker="::1", username="u", password="p"), "::1") or "")


def test_is_loopback() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "localhost", "LOCALHOST", "cam.localhost"))
    assert not any(is_loopback(h) for h in ("10.0.0.2", "192.0.2.1", "mqtt.example.com", "localhost.example.com", "::2"))


@pytest.mark.integration
def test_remote_plain_password_warning_at_start(publishers, caplog: pytest.LogCaptureFixture) -> None:
    """The start-up path logs it as a WARNING for a broker that is not on loopback (nothing need answer there)."""
    caplog.set_level(logging.INFO, LOGGER)
    publishers(broker="rtaudio-test.invalid", port=free_port(), username="rtaudio", password="s3cret")
    (record,) = mqtt_records(caplog, "without TLS")
    assert record.levelno == logging.WARNING and "anyone on the network path can read it" in record.getMessage()
