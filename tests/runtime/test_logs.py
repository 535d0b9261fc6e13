"""The rate-limited log: first occurrence at once, then one line with the count per period, per key."""

from __future__ import annotations

import logging
import threading

import pytest

from rtaudio.runtime.logs import LogLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> tuple[logging.Logger, pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="test.limiter")
    return logging.getLogger("test.limiter"), caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.limiter"]


def test_first_occurrence_then_one_line_with_the_count_per_period(logged: tuple[logging.Logger, pytest.LogCaptureFixture]) -> None:
    logger, caplog = logged
    clock = FakeClock()
    limiter = LogLimiter(logger, every_s=10, clock=clock)
    assert limiter.warning("bad", "bad packet %d", 1)
    for i in range(2, 501):  # 499 more within the period: counted, not written
        clock.now += 0.01
        assert not limiter.warning("bad", "bad packet %d", i)
    assert lines(caplog) == ["bad packet 1"]
    clock.now = 1010.0
    assert limiter.warning("bad", "bad packet %d", 501)  # the period is over: one line standing for 500 occurrences
    assert lines(caplog) == ["bad packet 1", "bad packet 501 (500 times in the last 10 s)"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    clock.now = 1030.0
    assert limiter.warning("bad", "bad packet %d", 502)  # quiet since: written plainly again
    assert lines(caplog)[-1] == "bad packet 502"


def test_keys_are_limited_independently(logged: tuple[logging.Logger, pytest.LogCaptureFixture]) -> None:
    logger, caplog = logged
    clock = FakeClock()
    limiter = LogLimiter(logger, every_s=10, clock=clock)
    for _ in range(100):
        limiter.info("a", "line a")
        limiter.info("b", "line b")
    assert lines(caplog) == ["line a", "line b"]


def test_flush_reports_what_is_pending(logged: tuple[logging.Logger, pytest.LogCaptureFixture]) -> None:
    logger, caplog = logged
    clock = FakeClock()
    limiter = LogLimiter(logger, every_s=10, clock=clock)
    for i in range(5):
        limiter.info("gap", "gap of %d ms", i)
    limiter.info("once", "only once")
    clock.now += 3
    limiter.flush()
    assert lines(caplog) == ["gap of 0 ms", "only once", "gap of 4 ms (4 more times in the last 3 s)"]
    limiter.flush()  # nothing is reported twice
    assert len(lines(caplog)) == 3


def test_a_disabled_level_is_neither_written_nor_counted(logged: tuple[logging.Logger, pytest.LogCaptureFixture]) -> None:
    logger, caplog = logged
    logger.setLevel(logging.INFO)
    try:
        limiter = LogLimiter(logger, every_s=10, clock=FakeClock())
        assert not limiter.debug("d", "debug line")
        limiter.flush()
        assert lines(caplog) == []
    finally:
        logger.setLevel(logging.NOTSET)


def test_keys_are_bounded(logged: tuple[logging.Logger, pytest.LogCaptureFixture]) -> None:
    logger, _ = logged
    limiter = LogLimiter(logger, every_s=10, clock=FakeClock(), max_keys=8)
    for i in range(100):
        limiter.info(f"key{i}", "line")
    assert len(limiter._keys) == 8


def test_threads_lose_no_count(logged: tuple[logging.Logger, pytest.LogCaptureFixture]) -> None:
    logger, caplog = logged
    clock = FakeClock()
    limiter = LogLimiter(logger, every_s=10, clock=clock)
    threads = [threading.Thread(target=lambda: [limiter.warning("k", "hit") for _ in range(2000)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    limiter.flush()
    assert lines(caplog) == ["hit", "hit (15999 more times in the last 0 s)"]


def test_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="every_s 0 must be > 0"):
        LogLimiter(logging.getLogger("test.limiter"), every_s=0)


def test_records_point_at_the_caller(logged: tuple[logging.Logger, pytest.LogCaptureFixture]) -> None:
    logger, caplog = logged
    clock = FakeClock()
    limiter = LogLimiter(logger, every_s=10, clock=clock)
    limiter.warning("k", "first")
    limiter.log(logging.INFO, "j", "direct")
    limiter.warning("k", "again")
    clock.now += 10
    limiter.warning("k", "counted")
    assert [r.filename for r in caplog.records] == ["test_logs.py"] * 3


def test_exception_carries_the_traceback_on_written_lines(logged: tuple[logging.Logger, pytest.LogCaptureFixture]) -> None:
    logger, caplog = logged
    limiter = LogLimiter(logger, every_s=10, clock=FakeClock())
    for _ in range(3):
        try:
            raise RuntimeError("engine fell over")
        except RuntimeError:
            limiter.exception("infer", "inference failed")
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None and "engine fell over" in caplog.text
