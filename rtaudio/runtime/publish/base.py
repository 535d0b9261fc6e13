"""The publisher base class: where tags, events and health leave the process.

Threading contract: ``tags``/``event``/``health``/``level`` are called from the pipeline thread,
``caption`` from the caption worker's thread; all must return at once (queue and go); delivery happens on the publisher's own thread(s).
``close(timeout)`` flushes what it can within ``timeout`` seconds and says goodbye.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from rtaudio.runtime.events import CaptionResult, Event, TagResult
from rtaudio.runtime.level import LevelReading


class Publisher(ABC):
    """A destination for what rtaudio hears."""

    def start(self) -> None:
        """Connect / begin delivering (non-blocking)."""

    @abstractmethod
    def tags(self, result: TagResult) -> None:
        """One window's labels above the reporting floor."""

    @abstractmethod
    def event(self, event: Event) -> None:
        """An onset or offset."""

    def caption(self, result: CaptionResult) -> None:
        """A caption of one source's caption window (caption worker thread; default: ignored)."""

    def health(self, snapshot: dict[str, Any]) -> None:
        """Periodic health snapshot (``Health.snapshot()``)."""

    def level(self, reading: LevelReading) -> None:
        """One source's sound level over one interval (pipeline thread; default: ignored)."""

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to ``timeout`` seconds, then disconnect."""
