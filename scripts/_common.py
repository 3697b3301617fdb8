"""Small helpers shared by ``loadtest.py`` and ``bench_dispatch.py``."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The scripts run as ``python scripts/x.py``: this directory is sys.path[0], so
# ``import workloads`` works here, in the fork servers (which get our sys.path) and
# in their children. The project root goes next, for ``pool`` / ``runner`` /
# ``shared_state`` when the project is not installed.
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))
# Fork servers are started with ``python -c``: they see PYTHONPATH but not our
# sys.path (multiprocess's forkserver drops the sys_path it is handed), so without
# this they could not preload ``workloads`` and every child would import it cold.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")) if p
)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table, columns padded to the widest cell."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def environment() -> dict[str, Any]:
    import temporalio.service

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "temporalio": temporalio.service.__version__,
        "argv": sys.argv,
    }


def write_json(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"wrote {path}")
