"""Data converters for tests of what happens when conversion itself fails."""

from __future__ import annotations

import dataclasses
from typing import Any

import temporalio.converter

__all__ = ["BROKEN_FAILURES"]


class _BrokenFailureConverter(temporalio.converter.DefaultFailureConverter):
    """Starts writing the failure, then raises (a converter bug)."""

    def to_failure(self, exception: BaseException, payload_converter: Any, failure: Any) -> None:
        failure.message = "half-written"
        raise RuntimeError("converter bug")


# The default converter with a failure converter that raises "converter bug".
BROKEN_FAILURES = dataclasses.replace(
    temporalio.converter.DataConverter.default, failure_converter_class=_BrokenFailureConverter
)
