"""How the parent builds a failed outcome (pool.activity.dispatch.report), no server."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import temporalio.converter

from pool.activity.dispatch.report import build_failure

pytestmark = pytest.mark.unit


class _BrokenFailureConverter(temporalio.converter.DefaultFailureConverter):
    def to_failure(self, exception: BaseException, payload_converter: Any, failure: Any) -> None:
        failure.message = "half-written"
        raise RuntimeError("converter bug")


async def test_a_failure_is_built_with_the_data_converter() -> None:
    outcome = await build_failure(temporalio.converter.DataConverter.default, ValueError("no"))
    assert outcome.failure is not None
    assert outcome.failure.message == "no"
    assert outcome.failure.application_failure_info.type == "ValueError"


async def test_a_failure_converter_that_raises_is_reported_as_stock_reports_it() -> None:
    dc = dataclasses.replace(
        temporalio.converter.DataConverter.default, failure_converter_class=_BrokenFailureConverter
    )
    outcome = await build_failure(dc, ValueError("no"))
    assert outcome.failure is not None
    assert outcome.failure.message == "Failed building exception result: converter bug"
    assert outcome.failure.HasField("application_failure_info")
    assert outcome.label == "failed"
