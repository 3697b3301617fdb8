"""pool/worker/lifecycle.py: the worker's state and its start / shutdown order, against
fake sides (no process, no server).

    Lifecycle: created -> starting -> running -> shutting down -> stopped / failed
    run_sides(fake activity side, fake temporalio worker) ─▶ the calls each side saw, in order
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from pool.worker.lifecycle import Lifecycle, Sides, State, run_sides

pytestmark = pytest.mark.unit


class FakeActivitySide:
    """Records its calls; ``start`` / ``run`` fail when told to."""

    def __init__(self, calls: list[str], *, start_error=None, run_error=None) -> None:
        self.calls = calls
        self.start_error = start_error
        self.run_error = run_error
        self.stop = asyncio.Event()

    async def start(self) -> None:
        self.calls.append("activity start")
        if self.start_error is not None:
            raise self.start_error

    async def run(self) -> None:
        self.calls.append("activity run")
        if self.run_error is not None:
            raise self.run_error
        await self.stop.wait()

    async def shutdown(self, graceful: float, before_close: Any = None) -> None:
        self.calls.append(f"activity shutdown {graceful}")
        self.stop.set()
        if before_close is not None:
            await asyncio.wait([before_close])
            self.calls.append("activity saw the workflow side done")
        await self.close()

    async def close(self) -> None:
        self.calls.append("activity close")


class FakeInner:
    """temporalio's worker, as far as the lifecycle uses it."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        self.calls.append("workflows run")
        await self.stopped.wait()

    async def shutdown(self) -> None:
        self.calls.append("workflows shutdown")
        self.stopped.set()


def sides(activity=None, inner=None, local_in_pool=None) -> Any:
    return Sides(activity=activity, inner=inner, local_in_pool=local_in_pool, local_threads=None)


def test_the_transitions_a_worker_makes_and_the_readiness_it_reports():
    life = Lifecycle()
    assert (life.state, life.started, life.describe()) == (State.CREATED, False, "starting")
    life.move(State.STARTING)
    assert life.started and not life.was_ready
    life.move(State.RUNNING)
    assert life.was_ready and life.describe() == "ok"
    life.shutdown_requested.set()
    assert life.describe() == "shutting down"
    life.move(State.SHUTTING_DOWN)
    life.move(State.STOPPED)
    assert life.ended and life.describe() == "shut down"
    assert repr(life) == "<Lifecycle stopped>"


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ((), State.RUNNING),
        ((State.STARTING,), State.SHUTTING_DOWN),
        ((State.STARTING, State.FAILED), State.STARTING),
    ],
)
def test_any_other_transition_is_refused(path, bad):
    life = Lifecycle()
    for state in path:
        life.move(state)
    with pytest.raises(RuntimeError, match=f"cannot go from .* to {bad.value}"):
        life.move(bad)


async def _run_until_running(s: Any, life: Lifecycle, **kw: Any) -> asyncio.Task[None]:
    life.move(State.STARTING)
    task = asyncio.create_task(run_sides(s, life, timedelta(seconds=2), kw.get("on_fatal")))
    await life.wait_ready_or_ended()
    return task


async def test_a_requested_shutdown_stops_both_sides_and_ends_stopped():
    calls: list[str] = []
    life = Lifecycle()
    task = await _run_until_running(sides(FakeActivitySide(calls), FakeInner(calls)), life)
    assert life.state is State.RUNNING and calls[0] == "activity start"
    life.shutdown_requested.set()
    await task
    assert life.state is State.STOPPED
    assert calls[:3] == ["activity start", "workflows run", "activity run"]
    assert set(calls[3:]) == {"activity shutdown 2.0", "workflows shutdown", "activity close"}


async def test_the_pool_outlives_the_workflow_side_when_local_activities_use_it():
    calls: list[str] = []
    life = Lifecycle()
    s = sides(FakeActivitySide(calls), FakeInner(calls), local_in_pool=object())
    task = await _run_until_running(s, life)
    life.shutdown_requested.set()
    await task
    assert calls.index("workflows shutdown") < calls.index("activity saw the workflow side done")
    assert calls[-1] == "activity close"


async def test_a_failed_start_closes_the_activity_side_and_ends_failed():
    calls: list[str] = []
    life = Lifecycle()
    error = ConnectionError("no server")
    s = sides(FakeActivitySide(calls, start_error=error), FakeInner(calls))
    task = await _run_until_running(s, life)
    with pytest.raises(ConnectionError, match="no server"):
        await task
    assert life.state is State.FAILED and not life.was_ready
    assert calls == ["activity start", "activity close"]  # temporalio's worker never ran


async def test_a_side_that_fails_is_reported_then_the_worker_shuts_down_failed():
    calls: list[str] = []
    seen: list[BaseException] = []

    async def on_fatal(err: BaseException) -> None:
        seen.append(err)

    life = Lifecycle()
    error = RuntimeError("crash loop")
    s = sides(FakeActivitySide(calls, run_error=error), FakeInner(calls), local_in_pool=object())
    task = await _run_until_running(s, life, on_fatal=on_fatal)
    with pytest.raises(RuntimeError, match="crash loop"):
        await task
    assert seen == [error]
    assert life.state is State.FAILED and life.was_ready
    # A failed activity side does not wait for the workflow side before closing.
    assert "activity saw the workflow side done" not in calls


async def test_nothing_to_run_still_starts_and_stops():
    life = Lifecycle()
    task = await _run_until_running(sides(), life)
    assert life.state is State.RUNNING
    life.shutdown_requested.set()
    await task
    assert life.state is State.STOPPED
