"""The wire forms of RunTask and TaskDone (plain tuples, the Info packed) lose nothing.

The packed Info knows some fields by name; these tests fail loudly when a temporalio
release adds, renames or retypes a field of Info, Priority or RetryPolicy, so the
packing is reviewed before the pinned range is widened."""

from __future__ import annotations

import dataclasses
import os
import pickle
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import temporalio.activity
import temporalio.common
from temporalio.testing import ActivityEnvironment

from runner import (
    PackedTask,
    RunTask,
    TaskDone,
    done_from_wire,
    done_to_wire,
    dumps,
    dumps_frame,
    loads,
    messages,
    task_from_wire,
    task_to_wire,
)

pytestmark = pytest.mark.unit

# The Info fields of temporalio 1.35, with the types the packing expects.
KNOWN_INFO_FIELDS = (
    "activity_id",
    "activity_type",
    "attempt",
    "current_attempt_scheduled_time",
    "heartbeat_details",
    "heartbeat_timeout",
    "is_local",
    "namespace",
    "schedule_to_close_timeout",
    "scheduled_time",
    "start_to_close_timeout",
    "started_time",
    "task_queue",
    "task_token",
    "workflow_id",
    "workflow_namespace",
    "workflow_run_id",
    "workflow_type",
    "priority",
    "retry_policy",
    "activity_run_id",
)


def _full_info() -> temporalio.activity.Info:
    """An Info with a distinct, non-default value in every field."""
    now = datetime.now(timezone.utc)
    return temporalio.activity.Info(
        activity_id="act-1",
        activity_type="do_it",
        attempt=3,
        current_attempt_scheduled_time=now - timedelta(seconds=1, microseconds=7),
        heartbeat_details=[{"step": 2}, "x"],
        heartbeat_timeout=timedelta(seconds=4, microseconds=1),
        is_local=True,
        namespace="ns",
        schedule_to_close_timeout=timedelta(days=2, seconds=5),
        scheduled_time=datetime(1960, 5, 6, 7, 8, 9, 10, tzinfo=timezone.utc),
        start_to_close_timeout=timedelta(minutes=3),
        started_time=now,
        task_queue="tq",
        task_token=b"\x00token\xff",
        workflow_id="wf",
        workflow_namespace="wf-ns",
        workflow_run_id="run",
        workflow_type="Wf",
        priority=temporalio.common.Priority(
            priority_key=2, fairness_key="tenant", fairness_weight=0.5
        ),
        retry_policy=temporalio.common.RetryPolicy(
            initial_interval=timedelta(milliseconds=250),
            backoff_coefficient=1.5,
            maximum_interval=timedelta(seconds=9),
            maximum_attempts=7,
            non_retryable_error_types=["Bad"],
        ),
        activity_run_id="arun",
    )


def _assert_same(got: Any, want: Any) -> None:
    """Equal, of the same type, field by field (datetimes with the same tzinfo)."""
    assert type(got) is type(want)
    if dataclasses.is_dataclass(want):
        for f in dataclasses.fields(want):
            _assert_same(getattr(got, f.name), getattr(want, f.name))
        return
    assert got == want
    if isinstance(want, datetime):
        assert got.tzinfo is want.tzinfo or got.tzinfo == want.tzinfo
        assert got.fold == want.fold


def test_info_has_the_fields_the_packing_knows():
    names = tuple(f.name for f in dataclasses.fields(temporalio.activity.Info))
    assert names == KNOWN_INFO_FIELDS, (
        "temporalio.activity.Info changed: review pack_info/unpack_info in "
        "runner/messages.py for this temporalio release, then update this list"
    )
    classes = (temporalio.activity.Info, temporalio.common.Priority, temporalio.common.RetryPolicy)
    for cls in classes:
        assert all(f.init for f in dataclasses.fields(cls)), cls
        assert not hasattr(cls, "__slots__"), f"{cls} gained __slots__: _rebuild needs __dict__"
    assert tuple(f.name for f in dataclasses.fields(temporalio.common.Priority)) == (
        "priority_key",
        "fairness_key",
        "fairness_weight",
    )
    assert tuple(f.name for f in dataclasses.fields(temporalio.common.RetryPolicy)) == (
        "initial_interval",
        "backoff_coefficient",
        "maximum_interval",
        "maximum_attempts",
        "non_retryable_error_types",
    )


@pytest.mark.parametrize(
    "info",
    [
        _full_info(),
        ActivityEnvironment.default_info(),
        # Unset optionals and values of unexpected types travel as themselves.
        dataclasses.replace(
            _full_info(),
            heartbeat_timeout=None,
            schedule_to_close_timeout=None,
            start_to_close_timeout=None,
            retry_policy=None,
            workflow_id=None,
            activity_run_id=None,
        ),
        dataclasses.replace(
            _full_info(),
            scheduled_time=datetime(2024, 1, 2, 3, 4, 5, 6),  # naive
            started_time=datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=2))),
            current_attempt_scheduled_time=datetime(2024, 1, 1, tzinfo=timezone.utc).replace(
                fold=1
            ),
            heartbeat_timeout=5,  # type: ignore[arg-type]
            priority=None,  # type: ignore[arg-type]
            retry_policy=temporalio.common.RetryPolicy(maximum_interval=None),
        ),
        dataclasses.replace(_full_info(), start_to_close_timeout=[1]),  # type: ignore[arg-type]
    ],
    ids=["full", "default", "unset", "odd-types", "list-value"],
)
def test_info_round_trips_every_field(info: temporalio.activity.Info):
    _assert_same(messages.unpack_info(messages.pack_info(info)), info)
    task = RunTask(
        task_id=9, activity_type="do_it", args=(1, "a"), info=info, heartbeat_interval=2.5
    )
    wire = loads(dumps(task_to_wire(task)))
    assert type(wire) is tuple
    got = task_from_wire(wire)
    assert type(got) is PackedTask
    assert (got.task_id, got.activity_type, got.args, got.heartbeat_interval) == (
        9,
        "do_it",
        (1, "a"),
        2.5,
    )
    assert got.task_token == info.task_token
    _assert_same(got.unpack_info(), info)
    assert got.unpack_info() == info
    assert loads(dumps(task)) == task  # and as the dataclass it is


def test_packed_info_is_plain_data():
    # Only builtins in the packed form: no class to look up, no reduce call per field.
    def plain(value: Any) -> bool:
        if isinstance(value, (tuple, list)):
            return all(plain(v) for v in value)
        if isinstance(value, dict):
            return all(plain(k) and plain(v) for k, v in value.items())
        return value is None or type(value) in (int, float, str, bytes, bool)

    assert plain(messages.pack_info(_full_info()))


@pytest.mark.parametrize(
    "done",
    [
        TaskDone(task_id=1, outcome="completed", value={"a": [1, 2]}, cpu_seconds=0.25),
        TaskDone(
            task_id=2,
            outcome="failed",
            failure=b"f",
            last_heartbeat=b"h",
            heartbeat_error=b"e",
            cpu_seconds=1.0,
        ),
        TaskDone(task_id=-1, outcome="cancelled"),
    ],
)
def test_task_done_round_trips(done: TaskDone):
    wire = loads(dumps(done_to_wire(done)))
    assert type(wire) is tuple
    _assert_same(done_from_wire(wire), done)
    assert pickle.loads(pickle.dumps(done)) == done
    # Every field crosses: the wire form follows the dataclass.
    assert len(wire) == len(dataclasses.fields(TaskDone))


def test_a_large_payload_crosses_beside_the_pickle_and_arrives_uncopied():
    payload = os.urandom(messages.OUT_OF_BAND_FROM)
    small = b"s" * (messages.OUT_OF_BAND_FROM - 1)
    done = TaskDone(task_id=3, outcome="completed", result=payload, last_heartbeat=small)
    parts = dumps_frame(done_to_wire(done))
    assert parts[-1] == payload
    assert sum(len(part) for part in parts[:-1]) < len(small) + 1024  # not in the pickle
    back = done_from_wire(loads(bytearray(b"".join(parts))))
    assert isinstance(back.result, memoryview) and back.result.readonly
    assert back.result == payload
    assert type(back.last_heartbeat) is bytes and back.last_heartbeat == small
    _assert_same(dataclasses.replace(back, result=payload), done)


def test_a_task_without_large_payloads_is_one_plain_pickle():
    task = RunTask(
        task_id=1,
        activity_type="do_it",
        args=(),
        info=_full_info(),
        heartbeat_interval=1.0,
        encoded_args=b"x" * 100,
    )
    parts = dumps_frame(task_to_wire(task))
    assert len(parts) == 1 and parts[0][:1] == b"\x80"  # the pickle's PROTO opcode
    assert task_from_wire(loads(parts[0])).encoded_args == b"x" * 100


def test_buffers_of_a_message_cloudpickle_sends_are_sent_once():
    class Local:  # the stdlib cannot pickle it: cloudpickle sends it by value
        pass

    payload = os.urandom(messages.OUT_OF_BAND_FROM)
    # The buffer comes first, so the stdlib's attempt reports it before it fails.
    parts = dumps_frame((messages.out_of_band(payload), Local()))
    assert len(parts) == 3 and parts[2] == payload
    buffer, local = loads(b"".join(parts))
    assert buffer == payload and type(local).__name__ == "Local"
