"""The test layers of tests/conftest.py hold: a unit test cannot start a process."""

from __future__ import annotations

import os
import subprocess

import multiprocess
import pytest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "start",
    [
        lambda: subprocess.Popen(["true"]),
        lambda: multiprocess.get_context("spawn").Process(target=print).start(),
        lambda: os.fork(),  # looked up when called: the guard has patched it by then
    ],
    ids=["subprocess", "multiprocess", "fork"],
)
def test_a_unit_test_cannot_start_a_process(start) -> None:
    with pytest.raises(AssertionError, match="marked unit started a process"):
        start()


def test_this_test_is_in_the_unit_layer(request: pytest.FixtureRequest) -> None:
    layers = [
        m.name for m in request.node.iter_markers() if m.name in ("unit", "process", "integration")
    ]
    assert layers == ["unit"]
