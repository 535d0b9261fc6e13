#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for rtaudio and run the demo or the tests.
#   tools/dev.sh demo   -> rtaudio run --config config/demo.yaml (embedded MQTT broker on 127.0.0.1:1883)
#   tools/dev.sh test   -> the whole test suite with real mosquitto, ffmpeg, PortAudio (slowest 25 listed)
#   tools/dev.sh test --fast -> the edit-test loop: everything but the integration tests (-m "not integration")
#   tools/dev.sh lint   -> ruff check, ruff format --check, mypy (the full test run does this first)
# Extra arguments go to pytest (or to rtaudio run). Idempotent: a second run skips what is already
# installed, the pip step too while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-test}"

apt_packages=(ffmpeg libportaudio2 libsndfile1 mosquitto-clients)
[ "$what" = test ] && apt_packages+=(mosquitto alsa-utils libasound2-plugins openssl espeak-ng fluidsynth fluid-soundfont-gm chromium chromium-driver)
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
extras=demo; [ "$what" = test ] || [ "$what" = lint ] && extras=train,test
stamp=".venv/.rtaudio-installed-$extras"
wanted="$(sha256sum pyproject.toml | cut -c1-64)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  $py -m pip install -q --upgrade pip >/dev/null
  # torch first, pinned, so nothing pulls a CUDA build from the registry.
  [ "$extras" = train,test ] && $py -m pip install -q torch==2.13.0
  $py -m pip install -q -e ".[$extras]"
  echo "$wanted" > "$stamp"
fi
lint() {
  echo "lint: ruff check, ruff format --check, mypy" >&2
  .venv/bin/ruff check rtaudio tests tools && .venv/bin/ruff format --check -q rtaudio tests tools && .venv/bin/mypy
}
if [ "$what" = lint ]; then
  lint
elif [ "$what" = test ]; then
  args=("${@:2}")
  if [ "${args[0]:-}" = "--fast" ]; then
    exec $py -m pytest -q -p no:cacheprovider -m "not integration" "${args[@]:1}"
  fi
  lint
  exec $py -m pytest -q -p no:cacheprovider --durations=25 "${args[@]}"
else
  exec .venv/bin/rtaudio run --config config/demo.yaml "${@:2}"
fi
