"""Slot suppliers and per-activity-type limits."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.worker import ResourceBasedSlotConfig, WorkerTuner

import pool
from pool.activity.slots import ResourceTargets, resources_allow
from tests.helpers import workflow_id
from tests.pool import _activities as A


def _peaks(path: Path) -> dict[str, int]:
    level: dict[str, int] = {}
    peak: dict[str, int] = {}
    total = total_peak = 0
    for line in path.read_text().splitlines():
        kind = line[1:]
        step = 1 if line[0] == "+" else -1
        level[kind] = level.get(kind, 0) + step
        total += step
        peak[kind] = max(peak.get(kind, 0), level[kind])
        total_peak = max(total_peak, total)
    peak["all"] = total_peak
    return peak


async def test_per_type_limit_leaves_the_rest_to_other_types(client, task_queue, tmp_path):
    log = tmp_path / "log"
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[A.render_video, A.resize_image],
        workflows=[A.RunOne],
        processes=3,
        activity_type_limits={"render_video": 1},
    ):
        handles = [
            await client.start_workflow(
                A.RunOne.run, args=[name, [str(log), 0.3]], id=workflow_id(), task_queue=task_queue
            )
            for name in ["render_video"] * 3 + ["resize_image"] * 4
        ]
        await asyncio.gather(*(h.result() for h in handles))
    peaks = _peaks(log)
    assert peaks["render"] == 1
    assert peaks["resize"] >= 2  # the cores a waiting render does not need went to resizes
    assert peaks["all"] <= 3


def test_per_type_limit_must_name_a_registered_type(client, task_queue):
    with pytest.raises(pool.WorkerConfigError, match="not a registered activity type"):
        pool.Worker(
            client,
            task_queue=task_queue,
            activities=[A.render_video],
            activity_type_limits={"no_such": 1},
        )
    with pytest.raises(pool.WorkerConfigError, match="at least 1"):
        pool.Worker(
            client,
            task_queue=task_queue,
            activities=[A.render_video],
            activity_type_limits={"render_video": 0},
        )


@pytest.mark.unit
def test_resource_decision():
    targets = ResourceTargets(
        minimum=1, maximum=4, ramp_throttle=0.05, target_memory=0.8, target_cpu=0.9
    )
    assert resources_allow(0, 0.0, 0.99, 0.99, targets)  # below the minimum: always
    assert resources_allow(1, 0.1, 0.5, 0.5, targets)
    assert not resources_allow(1, 0.01, 0.5, 0.5, targets)  # ramp throttle
    assert not resources_allow(1, 0.1, 0.85, 0.5, targets)  # memory over target
    assert not resources_allow(1, 0.1, 0.5, 0.95, targets)  # cpu over target
    assert not resources_allow(4, 1.0, 0.1, 0.1, targets)  # at the maximum


async def test_resource_based_tuner_runs_activities(client, task_queue, tmp_path):
    log = tmp_path / "log"
    tuner = WorkerTuner.create_resource_based(
        target_memory_usage=0.95,
        target_cpu_usage=1.0,
        activity_config=ResourceBasedSlotConfig(
            minimum_slots=1, maximum_slots=2, ramp_throttle=timedelta(milliseconds=10)
        ),
    )
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[A.resize_image],
        workflows=[A.RunOne],
        processes=3,
        tuner=tuner,
    ) as worker:
        assert "ResourceSlots" in repr(worker)
        handles = [
            await client.start_workflow(
                A.RunOne.run,
                args=["resize_image", [str(log), 0.2]],
                id=workflow_id(),
                task_queue=task_queue,
            )
            for _ in range(5)
        ]
        await asyncio.gather(*(h.result() for h in handles))
    assert _peaks(log)["all"] <= 2  # the supplier's maximum, though 3 children were idle


async def test_max_activities_per_second_spaces_task_starts(client, task_queue):
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[A.started_at],
        workflows=[A.RunOne],
        processes=2,
        max_activities_per_second=4.0,
    ):
        handles = [
            await client.start_workflow(
                A.RunOne.run, args=["started_at", []], id=workflow_id(), task_queue=task_queue
            )
            for _ in range(9)
        ]
        starts = sorted(await asyncio.gather(*(h.result() for h in handles)))
    # 4 per second spaces the polls 0.25 s apart. The polls made before the tasks existed
    # (one per child: 2) answer as soon as they appear, and the next takes a permit at
    # once (the limiter was idle), so nine starts span at least (9 - 3) intervals, less
    # a little dispatch jitter; unlimited, they would start within milliseconds.
    assert starts[-1] - starts[0] >= 6 * 0.25 - 0.1, starts


@pytest.mark.parametrize("lookahead", [True, False])
async def test_lookahead_polls_for_busy_children(client, task_queue, lookahead):
    """Against the server: with lookahead, short tasks are polled while the children
    are still busy (the poller feeds it real round trips); without, never."""
    async with pool.Worker(
        client,
        task_queue=task_queue,
        activities=[A.pid_and_square],
        workflows=[A.FanOut],
        pool_config=pool.PoolConfig(processes=2, lookahead=lookahead),
    ) as worker:
        results = await client.execute_workflow(
            A.FanOut.run, args=["pid_and_square", 40], id=workflow_id(), task_queue=task_queue
        )
        assert [square for square, _ in results] == [i * i for i in range(40)]
        snapshot = worker.process_pool.snapshot()
        round_trip = worker.process_pool.lookahead.ahead()
        if lookahead:
            assert round_trip > 0 and snapshot.promised_ahead > 0
        else:
            assert round_trip == 0 and snapshot.promised_ahead == snapshot.tasks_waited == 0
