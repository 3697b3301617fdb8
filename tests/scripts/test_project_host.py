"""The host projection model's pure functions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import project_host

pytestmark = pytest.mark.unit


def test_one_parent_rate_and_saturation() -> None:
    assert project_host.parent_rate(0.002) == pytest.approx(500.0)
    assert project_host.saturating_cores(0.020, 0.0, 0.002) == pytest.approx(10.0)


def test_efficiency_falls_beyond_saturation() -> None:
    assert project_host.efficiency(8, 0.020, 0.0, 0.002) == pytest.approx(1.0)
    assert project_host.efficiency(16, 0.020, 0.0, 0.002) == pytest.approx(10 / 16)
    assert project_host.efficiency(4, 0.0, 0.001, 0.002) == 0.0
