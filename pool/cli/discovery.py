"""Finding the activities and workflows in the user's modules (``run MODULE[:ATTR]...``).

    "pkg.mod"       ─▶ import ─▶ every @activity.defn callable, every @workflow.defn class
    "pkg.mod:ATTR"  ─▶ import ─▶ that one object, or the list/tuple of them it names
                    ─▶ Discovered(activities, workflows): each Temporal name once

Import failures, paths given for modules, unknown attributes, modules with nothing to run
and two objects under one Temporal name are LaunchError(EXIT_CONFIG) with what to do.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .errors import EXIT_CONFIG, LaunchError, one_line

__all__ = ["Discovered", "discover"]


@dataclass(frozen=True)
class Discovered:
    """What ``run`` found in its modules, in discovery order."""

    activities: tuple[Callable[..., Any], ...]
    workflows: tuple[type, ...]

    @property
    def activity_names(self) -> list[str]:
        return [_activity_name(a) for a in self.activities]

    @property
    def workflow_names(self) -> list[str]:
        return [_workflow_name(w) for w in self.workflows]


def _activity_name(fn: Any) -> str:
    defn = getattr(fn, "__temporal_activity_definition", None)
    name = getattr(defn, "name", None)
    return name if name else "(dynamic)"


def _workflow_name(cls: type) -> str:
    defn = cls.__dict__.get("__temporal_workflow_definition")
    name = getattr(defn, "name", None)
    return name if name else "(dynamic)"


def _kind(obj: Any) -> str | None:
    """``activity``, ``workflow`` or None for anything else."""
    if inspect.isclass(obj):
        # Only the decorated class itself, not an undecorated subclass that inherits it.
        return "workflow" if "__temporal_workflow_definition" in obj.__dict__ else None
    if callable(obj) and hasattr(obj, "__temporal_activity_definition"):
        return "activity"
    return None


def _import(name: str) -> ModuleType:
    if name.endswith(".py") or "/" in name or os.sep in name:
        dotted = name.removesuffix(".py").replace(os.sep, ".").replace("/", ".").strip(".")
        raise LaunchError(
            EXIT_CONFIG,
            f"{name!r} is a path, not a module name: pass the dotted name ({dotted!r}) and run "
            "from the directory that contains the package",
        )
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
            raise LaunchError(
                EXIT_CONFIG,
                f"unknown module {name!r} ({err}): check the spelling, and run from the "
                f"directory that contains it or add that directory to PYTHONPATH "
                f"(current directory: {os.getcwd()})",
            ) from None
        raise LaunchError(
            EXIT_CONFIG,
            f"module {name!r} imports {err.name!r}, which is not installed: install it in "
            f"this environment ({sys.executable})",
        ) from None
    except SyntaxError as err:
        raise LaunchError(
            EXIT_CONFIG,
            f"module {name!r} does not compile: {err.msg} ({err.filename}, line {err.lineno})",
        ) from None
    except Exception as err:
        raise LaunchError(
            EXIT_CONFIG,
            f"importing module {name!r} failed: {type(err).__name__}: {one_line(err)}; fix the "
            "error at import time (try: python -c 'import " + name + "')",
        ) from None


def _resolve_target(target: str) -> tuple[str, list[Any]]:
    """One ``MODULE[:ATTR]`` -> (a label for messages, candidate objects)."""
    module_name, _, attr = target.partition(":")
    if not module_name or (":" in target and not attr):
        raise LaunchError(
            EXIT_CONFIG,
            f"{target!r} is not MODULE or MODULE:ATTR: for example myapp.activities or "
            "myapp.workflows:OrderWorkflow",
        )
    module = _import(module_name)
    if not attr:
        return f"module {module_name!r}", list(vars(module).values())
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LaunchError(
                EXIT_CONFIG,
                f"module {module_name!r} has no attribute {attr!r}: check the name after the "
                "colon (an activity, a workflow class, or a list of them)",
            ) from None
    if isinstance(obj, (list, tuple)):
        bad = [repr(o) for o in obj if _kind(o) is None]
        if bad:
            raise LaunchError(
                EXIT_CONFIG,
                f"{target} holds {', '.join(bad[:3])}, which is neither an @activity.defn "
                "callable nor a @workflow.defn class: list only those",
            )
        return target, list(obj)
    if _kind(obj) is None:
        raise LaunchError(
            EXIT_CONFIG,
            f"{target} is {type(obj).__name__} {obj!r:.60}, neither an @activity.defn callable, "
            "a @workflow.defn class, nor a list of them: decorate it or name another attribute",
        )
    return target, [obj]


def discover(targets: Sequence[str]) -> Discovered:
    """Import each target and collect its activities and workflow classes.

    The same object found twice (a module re-exporting another's activity) counts once;
    two different objects under one Temporal name are an error.
    """
    activities: dict[str, tuple[Any, str]] = {}
    workflows: dict[str, tuple[type, str]] = {}
    for target in targets:
        label, candidates = _resolve_target(target)
        found = 0
        for obj in candidates:
            kind = _kind(obj)
            if kind is None:
                continue
            found += 1
            if kind == "activity":
                name, table = _activity_name(obj), activities
            else:
                name, table = _workflow_name(obj), workflows  # type: ignore[assignment]
            previous = table.get(name)
            if previous is None:
                table[name] = (obj, label)
            elif previous[0] is not obj:
                raise LaunchError(
                    EXIT_CONFIG,
                    f"two different {kind} definitions are named {name!r} (in {previous[1]} and "
                    f"{label}): rename one (@{kind}.defn(name=...)) or load only one of them",
                )
        if found == 0:
            raise LaunchError(
                EXIT_CONFIG,
                f"no activities or workflows found in {label}: decorate functions with "
                "@activity.defn and classes with @workflow.defn, or name the module that "
                "defines them",
            )
    return Discovered(
        activities=tuple(obj for obj, _ in activities.values()),
        workflows=tuple(obj for obj, _ in workflows.values()),
    )
