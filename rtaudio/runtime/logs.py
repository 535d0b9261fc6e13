"""Rate-limited logging for lines that repeat on the audio path (per packet, per block, per retry).

A hostile or broken sender can trigger the same log line thousands of times a second; the log
must stay readable and cheap. ``LogLimiter`` logs the first occurrence of each key at once,
then at most one line per key every ``every_s`` seconds, saying how many occurrences it
stands for. ``flush`` writes the counts still pending (call it when the loop ends).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_EVERY_S = 10.0
MAX_KEYS = 256  # keys are meant to be a fixed set per call site; this bounds the memory if not


@dataclass
class _Key:
    """What is known about one key: when its window started and what it has suppressed."""

    window_start: float
    suppressed: int = 0
    level: int = logging.INFO
    message: str = ""
    args: tuple[object, ...] = ()


class LogLimiter:
    """Logs each key's first occurrence, then one line with the count every ``every_s`` seconds.

    Thread-safe. ``key`` names the kind of line (e.g. ``"malformed"``); the arguments may vary
    between occurrences and the line written shows the latest. ``clock`` is for tests.
    """

    def __init__(self, logger: logging.Logger, every_s: float = DEFAULT_EVERY_S, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS):
        if every_s <= 0:
            raise ValueError(f"every_s {every_s} must be > 0")
        self.logger, self.every_s, self.clock, self.max_keys = logger, every_s, clock, max_keys
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        self._lock = threading.Lock()

    def log(self, level: int, key: str, message: str, *args: object, exc_info: bool = False, stacklevel: int = 1) -> bool:
        """Log ``message % args`` unless ``key`` was logged less than ``every_s`` ago; True if written.

        ``exc_info`` (the traceback of the exception being handled, on written lines only) and
        ``stacklevel`` (counted from the caller of this method) as in ``logging``.
        """
        if not self.logger.isEnabledFor(level):
            return False
        now = self.clock()
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                self._keys[key] = _Key(now)
                while len(self._keys) > self.max_keys:
                    self._keys.popitem(last=False)
                count = 1
            elif now - state.window_start >= self.every_s:
                count = state.suppressed + 1
                elapsed = now - state.window_start
                state.window_start, state.suppressed = now, 0
                self._keys.move_to_end(key)
            else:
                state.suppressed += 1
                state.level, state.message, state.args = level, message, args
                return False
        if count == 1:
            self.logger.log(level, message, *args, exc_info=exc_info, stacklevel=stacklevel + 1)
        else:
            self.logger.log(level, message + " (%d times in the last %.0f s)", *args, count, elapsed, exc_info=exc_info, stacklevel=stacklevel + 1)
        return True

    def debug(self, key: str, message: str, *args: object) -> bool:
        return self.log(logging.DEBUG, key, message, *args, stacklevel=2)

    def info(self, key: str, message: str, *args: object) -> bool:
        return self.log(logging.INFO, key, message, *args, stacklevel=2)

    def warning(self, key: str, message: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, message, *args, stacklevel=2)

    def exception(self, key: str, message: str, *args: object) -> bool:
        """ERROR with the traceback of the exception being handled (call from an ``except`` block)."""
        return self.log(logging.ERROR, key, message, *args, exc_info=True, stacklevel=2)

    def flush(self) -> None:
        """Write one line for each key with occurrences not yet reported, and forget all keys."""
        with self._lock:
            now = self.clock()
            pending = [(k, s, now - s.window_start) for k, s in self._keys.items() if s.suppressed]
            self._keys.clear()
        for _key, state, elapsed in pending:
            self.logger.log(state.level, state.message + " (%d more times in the last %.0f s)", *state.args, state.suppressed, elapsed)
