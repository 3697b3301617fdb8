"""The demo's and the load tests' progress: a rich bar on a terminal, plain lines
otherwise."""

from __future__ import annotations

import io

import pytest

from pool.cli.progress import ProgressBar

pytestmark = pytest.mark.unit


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_rich_bar() -> None:
    out = _Terminal()
    bar = ProgressBar(total=10, label="activities", out=out)
    bar.update(3, "| 1/2 children busy")
    bar.finish()
    text = out.getvalue()
    assert "activities" in text and "3/10" in text and "1/2 children busy" in text
    assert "\x1b[" in text  # drawn with terminal control sequences
    assert "progress:" not in text


def test_a_pipe_gets_plain_lines_at_most_one_per_period() -> None:
    out = io.StringIO()
    bar = ProgressBar(total=4, label="activities", out=out, every=3600.0)
    bar.update(1, "a")
    bar.update(2, "b")  # within the period: not written
    bar.update(4, "c", final=True)  # the final line always is
    bar.finish()
    assert out.getvalue().splitlines() == [
        "progress: [######..................] 1/4 activities a",
        "progress: [########################] 4/4 activities c",
    ]
