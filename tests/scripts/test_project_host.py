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


def _run(processes: int, w: float, c: float, p: float, s: float = 0.0) -> project_host.PerActivity:
    return project_host.PerActivity("cpu", processes, w, c, p, s, 0.0, 0.0)


def test_on_shared_cores_the_total_cpu_bounds_the_wall() -> None:
    # 2 children, 2 cores: the parent's and the server's CPU take cores from the work.
    run = _run(2, w=0.020, c=0.0, p=0.005, s=0.005)
    # wall per activity = (20 + 5 + 5) ms / 2 cores = 15 ms > 20 / 2 = 10 ms
    assert project_host.shared_efficiency(run, cores=2) == pytest.approx(0.020 / (0.015 * 2))
    # With cores to spare the children's own share bounds it: every child busy.
    assert project_host.shared_efficiency(run, cores=64) == pytest.approx(1.0)


def test_the_parents_core_bounds_the_wall_when_it_is_the_slowest() -> None:
    run = _run(1, w=0.001, c=0.0, p=0.004)
    assert project_host.shared_efficiency(run, cores=64) == pytest.approx(0.25)


def test_a_loadtest_result_becomes_per_activity_figures() -> None:
    result = {
        "completed": 100,
        "activity_cpu_s": 2.0,
        "children_cpu_s": 2.5,
        "parent_cpu_s": 0.3,
        "server_cpu_s": 0.4,
        "workflow_process_cpu_s": 0.6,
        "cpu_efficiency": 0.8,
    }
    run = project_host.from_result(result, "cpu 20 ms", 2)
    assert (run.w, run.c, run.p, run.s, run.f) == pytest.approx((0.02, 0.005, 0.003, 0.004, 0.006))
    assert "cpu 20 ms | 2 |" in project_host.report([run], cores=2)


def test_the_idle_gap_comes_from_the_one_process_run() -> None:
    one = project_host.PerActivity("cpu", 1, 0.020, 0.0, 0.002, 0.0, 0.0, 0.8)
    assert project_host.idle_gap(one) == pytest.approx(0.005)  # 20 / 0.8 = 25 ms per task
    # With the gap a child's pace is 40 tasks/s; the parent's 500/s caps 16 of them.
    assert project_host.rate(4, 0.020, 0.0, 0.002, g=0.005) == pytest.approx(160.0)
    assert project_host.rate(16, 0.020, 0.0, 0.002, g=0.005) == pytest.approx(500.0)
    assert project_host.efficiency(16, 0.020, 0.0, 0.002, g=0.005) == pytest.approx(0.8 * 12.5 / 16)
