"""The deployment files agree with the code: the systemd unit's watchdog and the Docker HEALTHCHECK."""

from __future__ import annotations

import configparser
import json
import re
import shlex

from rtaudio.cli import build_parser
from rtaudio.config.site import HealthConfig
from tests.helpers import REPO

UNIT = REPO / "tools" / "jetson" / "rtaudio.service"
DOCKERFILE = REPO / "tools" / "jetson" / "Dockerfile"


def unit_service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_unit_is_notified_and_its_watchdog_outlasts_every_default_health_limit() -> None:
    service = unit_service()
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    watchdog_s = float(service["WatchdogSec"])
    limits = HealthConfig()
    # systemd restarts when no WATCHDOG=1 came for WatchdogSec; rtaudio withholds it only while a check fails,
    # and a check fails only after its limit: a shorter WatchdogSec would cut a recovery short.
    assert watchdog_s > max(limits.source_silent_s, limits.engine_failing_s, limits.mqtt_down_s)
    assert shlex.split(service["ExecStart"])[1:3] == ["run", "--config"]


def test_the_docker_healthcheck_is_a_valid_rtaudio_call() -> None:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK (.*?) CMD (\[.*\])$", text, re.M)
    assert match, "no HEALTHCHECK ... CMD [...] in the Dockerfile"
    argv = json.loads(match.group(2))
    assert argv[0] == "rtaudio"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "healthcheck" and args.config is not None
    timeout = float(re.search(r"--timeout=(\d+)s", match.group(1)).group(1))  # type: ignore[union-attr]
    assert args.timeout < timeout  # the command gives up before Docker kills it
