"""Ring buffer and windowing: positions, clock, bounds, drops — with small capacities and odd sizes."""

from __future__ import annotations

import numpy as np
import pytest

from rtaudio.runtime.buffer import RingBuffer


def ramp(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)


@pytest.mark.parametrize("window,hop,block", [(10, 3, 1), (10, 3, 7), (16, 16, 5), (7, 2, 23), (9, 4, 100)])
def test_windows_are_exact_slices_of_the_stream(window: int, hop: int, block: int) -> None:
    buf = RingBuffer(sample_rate=10, window=window, hop=hop, max_backlog=1000)
    total, got = 200, []
    for start in range(0, total, block):
        buf.write(ramp(start, min(block, total - start)), capture_time=start / 10)
        got.extend(buf.due_windows())
    expected_ends = list(range(window, total + 1, hop))
    assert [w.end_index for w in got] == expected_ends
    for w in got:
        np.testing.assert_array_equal(w.samples, ramp(w.end_index - window, window))
        assert w.start_time == pytest.approx((w.end_index - window) / 10)
        assert w.end_time == pytest.approx((w.end_index - 1) / 10)


def test_capacity_is_fixed_and_backlog_drops_oldest() -> None:
    buf = RingBuffer(sample_rate=100, window=10, hop=5, max_backlog=3)
    assert buf.capacity == 10 + 5 * 3
    buf.write(ramp(0, 1000), 0.0)  # far more than fits: 199 windows due
    windows = buf.due_windows()
    assert len(windows) == 3 and buf.dropped == 199 - 3
    assert [w.end_index for w in windows] == [990, 995, 1000]  # the newest survive
    np.testing.assert_array_equal(windows[-1].samples, ramp(990, 10))
    assert buf._data.nbytes == buf.capacity * 4


def test_limit_leaves_windows_for_the_next_call() -> None:
    buf = RingBuffer(sample_rate=100, window=10, hop=5, max_backlog=8)
    buf.write(ramp(0, 30), 0.0)
    assert buf.pending() == 5
    first = buf.due_windows(limit=2)
    rest = buf.due_windows()
    assert [w.end_index for w in first + rest] == [10, 15, 20, 25, 30] and buf.dropped == 0


def test_capture_clock_follows_anchors_across_gaps() -> None:
    buf = RingBuffer(sample_rate=10, window=4, hop=4, max_backlog=8)
    buf.write(ramp(0, 4), 100.0)
    buf.write(ramp(4, 4), 200.0)  # a reconnect: the clock jumps
    a, b = buf.due_windows()
    assert (a.start_time, a.end_time) == (100.0, pytest.approx(100.3))
    assert (b.start_time, b.end_time) == (200.0, pytest.approx(200.3))


@pytest.mark.parametrize("window,hop,backlog", [(0, 1, 1), (10, 0, 1), (10, 11, 1), (10, 5, 0)])
def test_contract_checked_at_construction(window: int, hop: int, backlog: int) -> None:
    with pytest.raises(ValueError):
        RingBuffer(16000, window, hop, backlog)
