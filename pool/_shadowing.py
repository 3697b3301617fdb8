"""A user's own ``runner.py`` or ``shared_state.py`` (or a folder of that name) on
``sys.path`` ahead of ours would be imported in place of our packages; say so plainly
instead of failing later with an unrelated ``ImportError``.

(A user's ``pool.py`` shadows this very package, so it cannot be detected from here:
the README says what to do.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__all__ = ["check_not_shadowed"]

_OURS = ("runner", "shared_state")


def _origin(name: str) -> str | None:
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__file__", None)
    spec = importlib.util.find_spec(name)
    return spec.origin if spec is not None else None


def check_not_shadowed() -> None:
    """Raise ImportError naming the file that shadows one of our packages."""
    home = Path(__file__).resolve().parent.parent  # where pool, runner, shared_state live
    for name in _OURS:
        origin = _origin(name)
        if origin is None:
            continue
        path = Path(origin).resolve()
        if path.name == "__init__.py" and path.parent.parent == home:
            continue
        culprit = path.parent if path.name == "__init__.py" else path
        raise ImportError(
            f"{culprit} shadows the {name!r} package of temporal-process-pool (pool.Worker "
            f"needs its own {name!r}, installed in {home}). Rename your {culprit.name}, or "
            "move it out of the directories on sys.path."
        )
