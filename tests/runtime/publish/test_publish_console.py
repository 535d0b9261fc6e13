"""ConsolePublisher: one readable line per window and per event."""

from __future__ import annotations

import io

from rtaudio.config.site import ConsoleConfig
from rtaudio.runtime.events import Event, TagResult
from rtaudio.runtime.publish.console import ConsolePublisher

T = 1795341600.123  # 2026-11-22T10:00:00.123Z


def test_tags_line_has_time_source_and_labels_with_scores() -> None:
    out = io.StringIO()
    ConsolePublisher(ConsoleConfig(), out).tags(TagResult("lobby", "m", T - 1, T, [("speech", 0.912), ("music", 0.4)]))
    assert out.getvalue() == "10:00:00.123Z  lobby        speech 0.91  music 0.40\n"


def test_quiet_window_is_a_dash() -> None:
    out = io.StringIO()
    ConsolePublisher(ConsoleConfig(), out).tags(TagResult("lobby", "m", T - 1, T, []))
    assert out.getvalue().rstrip().endswith("lobby        -")


def test_events_are_marked_and_coloured_on_a_terminal() -> None:
    out = io.StringIO()
    console = ConsolePublisher(ConsoleConfig(), out, color=True)
    console.event(Event("onset", "abcdef1234", "lobby", "m", "smoke_alarm", T, None, 0.93, 0.9, 3))
    console.event(Event("offset", "abcdef1234", "lobby", "m", "smoke_alarm", T, T + 3.2, 0.95, 0.81, 30))
    onset_line, offset_line = out.getvalue().splitlines()
    assert onset_line.startswith("\033[1;31m") and onset_line.endswith("\033[0m")
    assert ">> ONSET   smoke_alarm  peak 0.93  [abcdef12]" in onset_line
    assert "10:00:03.323Z" in offset_line and "<< OFFSET  smoke_alarm  3.2 s  peak 0.95  mean 0.81" in offset_line


def test_plain_output_when_not_a_terminal_and_switches_respected() -> None:
    out = io.StringIO()
    console = ConsolePublisher(ConsoleConfig(tags=False), out)
    console.tags(TagResult("lobby", "m", T - 1, T, [("speech", 0.9)]))
    console.event(Event("onset", "abc", "lobby", "m", "glass", T, None, 0.8, 0.8, 1))
    assert out.getvalue().count("\n") == 1 and "\033" not in out.getvalue() and "glass" in out.getvalue()
    out = io.StringIO()
    ConsolePublisher(ConsoleConfig(events=False), out).event(Event("onset", "abc", "lobby", "m", "glass", T, None, 0.8, 0.8, 1))
    assert out.getvalue() == ""
