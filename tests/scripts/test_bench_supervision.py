"""scripts/bench_supervision.py keeps working and its figures stay within issue 4's
bound (one round each, a short stock task)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_supervision_frees_the_core_after_the_grace(tmp_path: Path) -> None:
    out = tmp_path / "sup.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_supervision.py"),
            "--rounds",
            "1",
            "--grace",
            "0.2",
            "--stock-seconds",
            "0.5",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = json.loads(out.read_text())
    for misbehaviour in ("swallows_cancellation", "ignores_sigterm"):
        [after_grace] = figures["pool"][misbehaviour]["core_free_after_grace_s"]
        assert after_grace < 0.5 + 0.5  # issue 4's 0.5 s, with room for a loaded CI box
    assert figures["stock_busy_s"] >= 0.5  # the stock pool cannot stop it
