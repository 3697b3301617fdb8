"""Native thread pools sized to the child, and optional CPU pinning.

NumPy/SciPy (OpenBLAS, MKL, BLIS, Accelerate), OpenMP code, numexpr and PyTorch
start a thread per core in every process: N children on N cores would run N x N
threads fighting for the cores. Each child therefore caps them (joblib/loky do the
same in their workers):

    child start, before the activities' modules are imported
        ├─ environment variables the libraries read when they load
        │  (never one the user set)
        └─ threadpoolctl for a library already loaded (the fork server's preload,
           a main module imported by spawn), unless the user set a variable

The parent computes the limit (``PoolConfig.native_threads``); 0 or None leaves the
libraries alone.
"""

from __future__ import annotations

import logging
import os
import sys

import psutil

__all__ = ["THREAD_VARIABLES", "limit_native_threads", "pin_to_core"]

logger = logging.getLogger("runner")

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
# Modules whose import loads a native thread pool that threadpoolctl can resize.
_POOLED = ("numpy", "scipy", "torch", "sklearn", "numexpr")


def limit_native_threads(limit: int | None) -> dict[str, str]:
    """Cap native thread pools at ``limit`` threads; returns the variables set."""
    if not limit:
        return {}
    chosen = {name: str(limit) for name in THREAD_VARIABLES if name not in os.environ}
    os.environ.update(chosen)
    user_set = len(chosen) < len(THREAD_VARIABLES)
    if not user_set and any(name in sys.modules for name in _POOLED):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - a dependency; only if removed
            logger.warning("threadpoolctl is missing: loaded native thread pools keep their size")
        else:
            threadpool_limits(limits=limit)
    return chosen


def pin_to_core(index: int) -> int | None:
    """Pin this process to one of the cores it may use (child ``index`` gets the
    ``index``-th, round robin); None where the platform cannot pin."""
    process = psutil.Process()
    try:
        allowed = sorted(process.cpu_affinity() or [])
    except (AttributeError, NotImplementedError, OSError):  # macOS has no affinity API
        return None
    if not allowed:
        return None
    core = allowed[index % len(allowed)]
    process.cpu_affinity([core])
    return core
