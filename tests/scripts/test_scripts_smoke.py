"""The load-test scripts keep working: each runs a tiny bounded workload (a few seconds).

The scripts run as subprocesses, exactly as a person runs them; the load tests use the
session's dev server through ``--address`` except one that starts its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pool.testing import DevServer

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
# Generous for a loaded CI machine; every script also bounds itself with --timeout.
_RUN_TIMEOUT = 150


def run_script(name: str, *args: str, json_path: Path) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args, "--json", str(json_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(json_path.read_text()), proc.stdout


def _check_results(data: dict[str, Any], kinds: list[str], activities: int) -> None:
    assert [r["worker"] for r in data["results"]] == kinds
    for r in data["results"]:
        assert r["completed"] == activities, r["error_samples"]
        assert r["errors"] == 0, r["error_samples"]
        assert r["throughput"] > 0
        assert r["latency_s"]["p50"] is not None and r["latency_s"]["p50"] > 0


def test_loadtest_compares_every_worker(dev_server: DevServer, tmp_path: Path) -> None:
    kinds = ["pool", "stock-process", "stock-thread", "stock-async"]
    data, out = run_script(
        "loadtest.py",
        "--address", dev_server.address,
        "--compare", ",".join(kinds),
        "--workload", "noop",
        "--workflows", "2",
        "--activities-per-workflow", "2",
        "--warmup", "2",
        "--timeout", "60",
        "--png", str(tmp_path / "chart.png"),
        json_path=tmp_path / "out.json",
    )  # fmt: skip
    _check_results(data, kinds, 4)
    by_kind = {r["worker"]: r for r in data["results"]}
    # Child RSS is seen for the two process-based workers, none for the others.
    assert by_kind["pool"]["peak_rss_per_child"] > 0
    assert by_kind["stock-process"]["peak_rss_per_child"] > 0
    assert by_kind["stock-thread"]["children"] == []
    assert [(r["base"], r["other"]) for r in data["ratios"]] == [
        ("pool", "stock-process"),
        ("pool", "stock-thread"),
        ("pool", "stock-async"),
    ]
    assert "pool / stock-process" in out
    # The parent CPU per activity, paired: every worker here has a parent that spent some.
    assert all(r["parent_cpu"] > 0 for r in data["ratios"]), data["ratios"]
    assert "parent CPU/act" in out
    # matplotlib is in the test environment: the chart is written, a real PNG.
    assert "wrote" in out and "chart.png" in out, out
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("workload", ["cpu", "heartbeat", "mixed", "payload", "records"])
def test_loadtest_workloads_through_the_pool(
    dev_server: DevServer, tmp_path: Path, workload: str
) -> None:
    data, _ = run_script(
        "loadtest.py",
        "--address", dev_server.address,
        "--worker", "pool",
        "--workload", workload,
        "--workflows", "2",
        "--activities-per-workflow", "4",
        "--work-ms", "5",
        "--payload-kb", "8",
        "--warmup", "2",
        "--timeout", "60",
        json_path=tmp_path / "out.json",
    )  # fmt: skip
    _check_results(data, ["pool"], 8)
    if workload in ("cpu", "heartbeat"):
        assert data["results"][0]["activity_cpu_s"] >= 8 * 0.005 * 0.9


def test_loadtest_with_a_workflow_process_and_an_interceptor(
    dev_server: DevServer, tmp_path: Path
) -> None:
    kinds = ["pool", "stock-process"]
    data, out = run_script(
        "loadtest.py",
        "--address", dev_server.address,
        "--compare", ",".join(kinds),
        "--workload", "payload",
        "--payload-kb", "8",
        "--workflows", "1",
        "--activities-per-workflow", "3",
        "--warmup", "1",
        "--timeout", "60",
        "--workflow-process",
        "--interceptor",
        json_path=tmp_path / "out.json",
    )  # fmt: skip
    _check_results(data, kinds, 3)
    for r in data["results"]:
        # The workflows ran in the workflow process, which used CPU of its own.
        assert r["workflow_process_cpu_s"] > 0
    assert "wf process CPU/act" in out


@pytest.mark.integration
def test_loadtest_starts_its_own_dev_server(tmp_path: Path) -> None:
    data, _ = run_script(
        "loadtest.py",
        "--worker", "stock-async",
        "--workflows", "1",
        "--activities-per-workflow", "2",
        "--warmup", "1",
        "--timeout", "60",
        json_path=tmp_path / "out.json",
    )  # fmt: skip
    _check_results(data, ["stock-async"], 2)
    assert data["address"].startswith("127.0.0.1:")


def test_bench_dispatch_reports_every_figure(tmp_path: Path) -> None:
    data, out = run_script(
        "bench_dispatch.py",
        "--calls", "20",
        "--rounds", "2",
        "--warmup", "5",
        "--loop-calls", "1000",
        "--kills", "1",
        "--timeout", "120",
        json_path=tmp_path / "bench.json",
    )  # fmt: skip
    figures = data["figures"]
    for name in (
        "dispatch_us",
        "heartbeat_us",
        "is_cancelled_us",
        "replacement_ms",
        "idle_rss_bytes",
        "bare_temporalio_rss_bytes",
    ):
        assert figures[name] is not None and figures[name] > 0, name
    assert len(figures["round_trips"]) == 4
    assert "PASS" in out or "MISS" in out
