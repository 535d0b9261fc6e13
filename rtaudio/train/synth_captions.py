"""One-sentence captions of synthetic scenes, from their strong labels (deterministic by ``rng``).

A timeline's audible stretches are merged into occurrences (an alarm's pauses or a phone's
off-cadence do not make a new event); occurrences spanning most of the scene become the
background, the rest are narrated in onset order with temporal connectives ("while" for
overlaps, "then"/"followed by"/"after that" for successions). Each label has several
phrasings, as a clause ("a door slams") and as a noun phrase ("a door slam"), so captions
vary across seeds for the same scene.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Event = tuple[str, float, float]

# label -> (clauses, noun phrases)
PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "smoke_alarm": (
        ("a smoke alarm beeps", "a smoke detector goes off", "a fire alarm sounds"),
        ("the beeping of a smoke alarm", "a smoke detector's shrill beeps"),
    ),
    "co_alarm": (
        ("a carbon monoxide alarm chirps", "a CO detector beeps rapidly", "a carbon monoxide detector sounds"),
        ("quick beeps from a carbon monoxide alarm", "a CO alarm's rapid beeping"),
    ),
    "doorbell": (("a doorbell rings", "the doorbell chimes", "someone rings the doorbell"), ("a doorbell chime", "the ding-dong of a doorbell")),
    "knock": (("someone knocks on a door", "a person knocks at the door", "there is knocking on a door"), ("a knock at the door", "knocking on a door")),
    "glass_break": (("glass shatters", "a window breaks", "a glass smashes"), ("breaking glass", "the sound of shattering glass")),
    "dog_bark": (("a dog barks", "a dog is barking", "a dog starts barking"), ("a barking dog", "a dog's bark")),
    "speech": (("a man speaks", "a woman speaks", "people talk", "someone is talking"), ("someone talking", "people talking", "a voice")),
    "footsteps": (("someone walks by", "footsteps cross the room", "a person walks across the floor"), ("footsteps", "the sound of footsteps")),
    "water_running": (("water runs", "a tap is running", "water flows from a faucet"), ("running water", "the sound of a running tap")),
    "hvac_hum": (
        ("a fan hums", "the air conditioning hums", "ventilation drones"),
        ("the hum of a fan", "the steady drone of ventilation", "an air conditioner's hum"),
    ),
    "siren": (("a siren wails", "an emergency siren sounds outside", "a police siren blares"), ("the wail of a siren", "a siren outside")),
    "phone_ring": (("a phone rings", "a telephone is ringing", "a mobile phone rings"), ("a ringing phone", "the ring of a telephone")),
    "door_slam": (("a door slams", "a door bangs shut", "someone slams a door"), ("a door slam", "the bang of a door")),
    "music": (("music plays", "a song is playing", "music is playing on a radio"), ("music", "a tune playing", "some music")),
    "vacuum_cleaner": (("a vacuum cleaner runs", "someone is vacuuming", "a vacuum cleaner whines"), ("a vacuum cleaner", "the whine of a vacuum cleaner")),
    "baby_cry": (("a baby cries", "an infant is crying", "a baby wails"), ("a crying baby", "a baby's cry")),
    "typing": (("someone types on a keyboard", "keys clatter on a keyboard", "a person is typing"), ("keyboard typing", "the clatter of a keyboard")),
    # the building label set's other labels (rtaudio/train/labels.py), for captions of real corpus clips
    "dog": (("a dog barks", "a dog is barking", "a dog growls and barks"), ("a barking dog", "a dog's bark")),
    "door": (("a door opens", "a door closes", "a door creaks open", "a door shuts"), ("a door closing", "the creak of a door")),
    "shout_scream": (("a person screams", "someone shouts", "a man yells in pain", "someone cries out"), ("screaming", "a scream", "shouting")),
    "laughter": (("someone laughs", "a person is laughing", "people laugh"), ("laughter", "a laugh")),
    "crowd": (("a crowd cheers", "many people talk at once", "a crowd murmurs"), ("a crowd", "the murmur of a crowd", "cheering")),
    "cough": (("someone coughs", "a person is coughing", "a man clears his throat and coughs"), ("a cough", "coughing")),
    "gunshot": (("a gun fires", "gunshots ring out", "a shot is fired"), ("gunfire", "a gunshot", "shots")),
    "explosion": (("something explodes", "an explosion booms", "a blast goes off"), ("an explosion", "a loud blast")),
    "cat": (("a cat meows", "a cat is meowing", "a cat mews"), ("a meowing cat", "a cat's meow")),
    "bird": (("a bird sings", "birds chirp", "a bird calls"), ("birdsong", "chirping birds", "a bird's call")),
    "rain": (("rain falls", "it is raining", "rain patters down"), ("rain", "the patter of rain")),
    "wind": (("the wind blows", "wind howls", "a gust of wind blows"), ("wind", "the howl of the wind")),
    "thunder": (("thunder rumbles", "thunder cracks", "a thunderclap booms"), ("thunder", "a rumble of thunder")),
    "fire": (("a fire crackles", "flames roar", "something is burning"), ("a crackling fire", "the roar of flames")),
    "alarm_beep": (("something beeps", "an electronic device beeps repeatedly", "a timer beeps"), ("electronic beeping", "a beeping device")),
    "vehicle": (("a car drives by", "a vehicle passes", "a car's tyres screech"), ("passing traffic", "a passing car")),
    "aircraft": (("an airplane flies overhead", "a helicopter flies by", "a jet roars past"), ("an aircraft overhead", "a plane")),
    "engine": (("an engine runs", "an engine revs", "a motor idles"), ("a running engine", "the rumble of an engine")),
    "tools": (("someone saws wood", "a hammer strikes", "a power drill whirs"), ("hammering", "sawing", "the noise of tools")),
}
# a pattern's pauses (T3: 1.5 s, T4: 5 s, a phone's off-cadence: up to 4 s) do not make a new event
MERGE_GAP_S = {"smoke_alarm": 2.0, "co_alarm": 5.5, "phone_ring": 4.5}
BACKGROUND_SHARE = 0.75  # an occurrence this share of the scene or longer is background
SEQUENCE: tuple[str, ...] = (", then {c}", ", followed by {n}", "; after that, {c}", " and then {c}", ", and a moment later {c}", ", before {c}")
LATER: tuple[str, ...] = (", and later {c}", "; some time later, {c}", ", then after a pause {c}")
OVERLAP: tuple[str, ...] = (" while {c}", " as {c}", ", and at the same time {c}", ", meanwhile {c}")
WITH_BACKGROUND = ("{b} in the background as {f}", "{f} while {b}", "{f}, with {bn} in the background", "{b} throughout as {f}")
ONLY_BACKGROUND = ("{b} throughout", "{b} steadily throughout the scene", "throughout, {b}")
QUIET = ("a quiet room with only faint ambient noise", "nothing but the faint hum of an empty room", "a silent room with soft background noise")


@dataclass
class _Occurrence:
    label: str
    onset: float
    offset: float
    count: int = 1


def _occurrences(timeline: Sequence[Event]) -> list[_Occurrence]:
    """Same-label stretches overlapping or within the label's ``MERGE_GAP_S`` joined into one occurrence, by onset."""
    merged: list[_Occurrence] = []
    for label, onset, offset in sorted(timeline, key=lambda e: (e[1], e[0])):
        same = [o for o in merged if o.label == label and onset - o.offset < MERGE_GAP_S.get(label, 0.0)]
        if same:
            same[-1].offset = max(same[-1].offset, offset)
        else:
            merged.append(_Occurrence(label, onset, offset))
    return sorted(merged, key=lambda o: o.onset)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _clause(occ: _Occurrence, rng: np.random.Generator, again: bool) -> str:
    text = _pick(rng, PHRASES[occ.label][0])
    if occ.count == 2:
        return text + " twice"
    if occ.count > 2:
        return text + _pick(rng, (" several times", " repeatedly"))
    return text + (" again" if again else "")


def _narrate(events: list[_Occurrence], rng: np.random.Generator) -> str:
    """The foreground in onset order, each joined to the one before by a temporal connective."""
    mentioned: set[str] = set()
    text, previous, used = "", None, ""
    for occ in events:
        again = occ.label in mentioned
        mentioned.add(occ.label)
        if previous is None:
            text = _clause(occ, rng, again)
        else:
            if occ.onset < previous.offset - 0.1:
                options = OVERLAP
            else:
                options = LATER if occ.onset - previous.offset > 3.0 else SEQUENCE
            template = used = _pick(rng, [t for t in options if t != used])  # no connective twice in a row
            plain = occ.count == 1 and not again and "{n}" in template
            text += template.format(c=_clause(occ, rng, again), n=_pick(rng, PHRASES[occ.label][1]) if plain else _clause(occ, rng, again))
        previous = occ if previous is None or occ.offset > previous.offset else previous
    return text


def caption_scene(timeline: Sequence[Event], rng: np.random.Generator) -> str:
    """One natural sentence describing the scene's events, their order and overlaps, and its background."""
    unknown = sorted({label for label, _, _ in timeline} - set(PHRASES))
    if unknown:
        raise ValueError(f"no caption phrases for labels {unknown}; allowed: {', '.join(PHRASES)}")
    occurrences = _occurrences(timeline)
    if not occurrences:
        sentence = _pick(rng, QUIET)
    else:
        span = max(o.offset for o in occurrences) - min(o.onset for o in occurrences)
        background = [o for o in occurrences if o.offset - o.onset >= BACKGROUND_SHARE * span and len(occurrences) > 1]
        foreground: list[_Occurrence] = []
        behind = {o.label for o in background}
        for occ in (o for o in occurrences if o.label not in behind):  # back-to-back repeats become "twice"
            if foreground and foreground[-1].label == occ.label:
                foreground[-1].count += 1
                foreground[-1].offset = occ.offset
            else:
                foreground.append(occ)
        b = " and ".join(_pick(rng, PHRASES[o.label][0]) for o in background)
        if not foreground:
            sentence = _pick(rng, ONLY_BACKGROUND).format(b=b)
        elif not background:
            sentence = _narrate(foreground, rng)
        else:
            f = _narrate(foreground, rng)
            bn = " and ".join(_pick(rng, PHRASES[o.label][1]) for o in background)
            sentence = _pick(rng, WITH_BACKGROUND).format(b=b, f=f, bn=bn)
    return sentence[0].upper() + sentence[1:] + "."
