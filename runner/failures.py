"""What a failure says when the data converter cannot build it (both sides use it).

temporalio's worker, when its failure converter raises while converting an activity's
exception, reports a plain application failure naming the converter's error instead;
the child (building a failure to send) and the parent (building one to report) do
the same, through :func:`replace_with_fallback`.
"""

from __future__ import annotations

import traceback

import temporalio.api.failure.v1

__all__ = ["replace_with_fallback"]


def replace_with_fallback(
    failure: temporalio.api.failure.v1.Failure,
    inner: BaseException,
    original: BaseException | None = None,
) -> None:
    """Rewrite ``failure`` in place: the converter failed with ``inner``; ``original``
    (the activity's exception), when given, keeps its traceback in the stack trace."""
    failure.Clear()
    failure.message = f"Failed building exception result: {inner}"
    if original is not None:
        failure.stack_trace = "".join(traceback.format_exception(original))
    failure.application_failure_info.SetInParent()
