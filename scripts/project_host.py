"""Where one host ends: a model from measured per-activity CPU figures to many cores.

    measured (loadtest --workflow-process): p parent CPU/activity, c child overhead/activity,
    s server CPU/activity, w the activity's own CPU
        -> 1/p activities/s one parent can drive
        -> (w + c) / p child cores that saturate one parent
        -> efficiency at N processes = min(1, N_sat / N) with N_sat = (w + c) / p

Assumptions: the server and the parent each on cores of their own, each child on one core
(no sharing), the parent's asyncio loop a single core. Only the pure model is here so far.
"""

from __future__ import annotations


def parent_rate(p: float) -> float:
    """Activities per second one parent can drive (p: parent CPU seconds per activity)."""
    return 1.0 / p


def saturating_cores(w: float, c: float, p: float) -> float:
    """Child cores at which one parent is saturated: each child needs w + c per activity."""
    return (w + c) / p


def efficiency(processes: int, w: float, c: float, p: float) -> float:
    """Expected CPU efficiency (activity CPU / (wall x processes)) at ``processes`` children."""
    return min(1.0, saturating_cores(w, c, p) / processes) * w / (w + c) if w > 0 else 0.0
