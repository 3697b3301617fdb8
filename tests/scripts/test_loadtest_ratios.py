"""The load test's ratios and target checks: pure functions of the figures of its runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import loadtest

pytestmark = pytest.mark.unit


def _result(worker: str, throughput: float, parent_cpu_s: float, completed: int = 40) -> Any:
    return {
        "worker": worker,
        "throughput": throughput,
        "cpu_efficiency": 0.005,
        "latency_s": {"p50": 0.1},
        "parent_cpu_s": parent_cpu_s,
        "completed": completed,
    }


def test_parent_cpu_ratio_is_per_completed_activity() -> None:
    # 0.4 s over 40 activities against 1.2 s over 60: 10 ms against 20 ms.
    rows = loadtest.ratios(
        [_result("pool", 12.0, 0.4, 40), _result("stock-process", 10.0, 1.2, 60)]
    )
    assert rows[0]["parent_cpu"] == pytest.approx(0.5)
    assert rows[0]["throughput"] == pytest.approx(1.2)


def test_parent_cpu_ratio_is_none_when_nothing_completed() -> None:
    rows = loadtest.ratios([_result("pool", 0.0, 0.4, 0), _result("stock-process", 1.0, 1.0)])
    assert rows[0]["parent_cpu"] is None


def test_repeats_pair_the_parent_cpu_ratio_and_give_its_range() -> None:
    runs = [
        loadtest.ratios([_result("pool", 12.0, p), _result("stock-process", 10.0, 0.8)])
        for p in (0.4, 0.2, 0.32)
    ]
    row = loadtest.median_ratios(runs)[0]
    assert row["parent_cpu"] == pytest.approx(0.4)
    assert row["parent_cpu_range"] == pytest.approx([0.25, 0.5])


def _checks(payload_kb: int, parent_cpu: float, throughput: float) -> list[list[str]]:
    args = argparse.Namespace(workload="payload", payload_kb=payload_kb, work_ms=20.0)
    rows = [{"base": "pool", "other": "stock-process", "parent_cpu": parent_cpu,
             "throughput": throughput}]  # fmt: skip
    return loadtest.targets(args, [], rows)


def test_one_mib_payloads_check_issue_13s_two_targets() -> None:
    checks = _checks(1024, parent_cpu=0.48, throughput=1.6)
    assert [(c[0], c[1], c[3]) for c in checks] == [
        ("parent CPU per activity pool / stock-process", "0.48x", "MISS"),
        ("payload throughput pool / stock-process", "1.60x", "PASS"),
    ]
    assert [c[3] for c in _checks(2048, parent_cpu=0.30, throughput=1.2)] == ["PASS", "MISS"]


def test_smaller_payloads_have_no_target() -> None:
    assert _checks(256, parent_cpu=0.1, throughput=9.0) == []
