"""How the parent builds a failed outcome (pool.activity.dispatch.report), no server."""

from __future__ import annotations

import pytest
import temporalio.converter

from pool.activity.dispatch.report import build_failure
from tests.converters import BROKEN_FAILURES

pytestmark = pytest.mark.unit


async def test_a_failure_is_built_with_the_data_converter() -> None:
    outcome = await build_failure(temporalio.converter.DataConverter.default, ValueError("no"))
    assert outcome.failure is not None
    assert outcome.failure.message == "no"
    assert outcome.failure.application_failure_info.type == "ValueError"


async def test_a_failure_converter_that_raises_is_reported_as_stock_reports_it() -> None:
    outcome = await build_failure(BROKEN_FAILURES, ValueError("no"))
    assert outcome.failure is not None
    assert outcome.failure.message == "Failed building exception result: converter bug"
    assert outcome.failure.HasField("application_failure_info")
    assert outcome.label == "failed"
