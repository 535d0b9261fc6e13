"""The building label set of the shipped models (``docs/labels.md`` defines each label).

One list, used by the real-audio corpus rules, the synthetic scenes' label mapping and the
training recipes, so a label is spelled the same everywhere.
"""

from __future__ import annotations

BUILDING_LABELS: tuple[str, ...] = (
    # people
    "speech",
    "shout_scream",
    "laughter",
    "crowd",
    "baby_cry",
    "cough",
    # impacts and danger
    "footsteps",
    "door",
    "knock",
    "glass_break",
    "gunshot",
    "explosion",
    # animals
    "dog",
    "cat",
    "bird",
    # water and weather
    "water_running",
    "rain",
    "wind",
    "thunder",
    "fire",
    # alarms and signals
    "smoke_alarm",
    "co_alarm",
    "siren",
    "doorbell",
    "phone_ring",
    "alarm_beep",
    # machines and vehicles
    "vehicle",
    "aircraft",
    "engine",
    "hvac_hum",
    "vacuum_cleaner",
    "typing",
    "tools",
    # music
    "music",
)

# The synthetic generator's names (rtaudio.train.synth) for labels the building set spells otherwise.
SYNTHETIC_NAMES: dict[str, str] = {"dog_bark": "dog", "door_slam": "door"}

# Sounds shorter than a window (0.5 s hop): a 3-window median of their scores would erase them, so their
# events are decided on the window alone (model.json ``median_windows``; a site can still override it).
SHORT_EVENT_LABELS: tuple[str, ...] = ("glass_break", "gunshot", "explosion")


def event_median_windows(labels: list[str] | tuple[str, ...]) -> dict[str, int]:
    """The per-label median smoothing a model with ``labels`` ships (export writes it into model.json)."""
    return {label: 1 for label in labels if label in SHORT_EVENT_LABELS}
