#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for rtaudio and run the demo or the tests.
#   tools/dev.sh demo   -> rtaudio run --config config/demo.yaml (embedded MQTT broker on 127.0.0.1:1883)
#   tools/dev.sh test   -> the whole test suite with real mosquitto, ffmpeg, PortAudio
# Idempotent: a second run skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-test}"

apt_packages=(ffmpeg libportaudio2 libsndfile1 mosquitto-clients)
[ "$what" = test ] && apt_packages+=(mosquitto alsa-utils libasound2-plugins openssl espeak-ng fluidsynth fluid-soundfont-gm)
missing=()
for pkg in "${apt_packages[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# mosquitto's Debian service would hold port 1883; tests start their own brokers on free ports.
command -v systemctl >/dev/null 2>&1 && systemctl stop mosquitto >/dev/null 2>&1 || true

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
py=.venv/bin/python
$py -m pip install -q --upgrade pip >/dev/null
if [ "$what" = test ]; then
  # torch first, pinned, so nothing pulls a CUDA build from the registry.
  $py -m pip install -q torch==2.13.0
  $py -m pip install -q -e ".[train,test]"
  exec $py -m pytest -q -p no:cacheprovider "${@:2}"
else
  $py -m pip install -q -e .
  exec .venv/bin/rtaudio run --config config/demo.yaml "${@:2}"
fi
