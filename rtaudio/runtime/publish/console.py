"""Console publisher: one readable line per tags window, per event and per caption, on stdout.

Times are the stream's UTC times (as in the MQTT payloads). Events stand out: bold and
coloured on a terminal, and always marked with ``>>`` (onset) / ``<<`` (offset).
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from rtaudio.config.site import ConsoleConfig
from rtaudio.runtime.events import CaptionResult, Event, TagResult
from rtaudio.runtime.publish.base import Publisher
from rtaudio.runtime.publish.messages import iso

_BOLD_RED, _BOLD_GREEN, _DIM, _RESET = "\033[1;31m", "\033[1;32m", "\033[2m", "\033[0m"


def _clock(t: float) -> str:
    """``10:00:00.123Z``: the time part of the ISO stamp."""
    return iso(t)[11:]


class ConsolePublisher(Publisher):
    """Prints what rtaudio hears; ``color`` defaults to whether the stream is a terminal."""

    def __init__(self, config: ConsoleConfig, stream: TextIO | None = None, color: bool | None = None):
        self.config = config
        self._stream = stream if stream is not None else sys.stdout
        self._color = color if color is not None else bool(getattr(self._stream, "isatty", lambda: False)())
        self._lock = threading.Lock()

    def tags(self, result: TagResult) -> None:
        if not self.config.tags:
            return
        labels = "  ".join(f"{label} {score:.2f}" for label, score in result.labels) or "-"
        self._print(f"{_clock(result.end_time)}  {result.source_id:<12} {labels}", _DIM if not result.labels else "")

    def event(self, event: Event) -> None:
        if not self.config.events:
            return
        if event.kind == "onset":
            line = f"{_clock(event.onset_time)}  {event.source_id:<12} >> ONSET   {event.label}  peak {event.peak_score:.2f}  [{event.event_id[:8]}]"
            self._print(line, _BOLD_RED)
        else:
            end = event.offset_time if event.offset_time is not None else event.onset_time
            line = (
                f"{_clock(end)}  {event.source_id:<12} << OFFSET  {event.label}"
                f"  {end - event.onset_time:.1f} s  peak {event.peak_score:.2f}"
                f"  mean {event.mean_score:.2f}  [{event.event_id[:8]}]"
            )
            self._print(line, _BOLD_GREEN)

    def caption(self, result: CaptionResult) -> None:
        if self.config.captions:
            self._print(f"{_clock(result.end_time)}  {result.source_id:<12} ~~ CAPTION  {result.caption}", "")

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stream.flush()

    def _print(self, line: str, style: str) -> None:
        if self._color and style:
            line = f"{style}{line}{_RESET}"
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()
