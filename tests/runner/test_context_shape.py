"""Fails loudly when a temporalio release changes the private activity context we
set in children (runner/_context.py). Widen the pinned range only after this passes."""

from __future__ import annotations

import dataclasses
import inspect

import temporalio.activity
import temporalio.common
import temporalio.converter

from runner import _context


def test_context_has_the_fields_we_set():
    shape = _context.context_shape()
    missing = [name for name in _context.CONTEXT_FIELDS if name not in shape]
    assert not missing, (
        f"temporalio.activity._Context no longer has {missing}: runner/_context.py must be "
        "updated for this temporalio release"
    )
    required = [
        f.name
        for f in dataclasses.fields(temporalio.activity._Context)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    new = set(required) - set(_context.CONTEXT_FIELDS)
    assert not new, f"temporalio.activity._Context gained required fields {new}"


def test_the_public_activity_api_reads_our_context():
    import threading

    cancelled = threading.Event()
    shutdown = threading.Event()
    holder = _context.new_cancellation_holder()
    beats: list[tuple] = []
    info = temporalio.activity.Info(
        activity_id="a",
        activity_type="t",
        attempt=1,
        current_attempt_scheduled_time=__import__("datetime").datetime.now(),
        heartbeat_details=[],
        heartbeat_timeout=None,
        is_local=False,
        namespace="default",
        schedule_to_close_timeout=None,
        scheduled_time=__import__("datetime").datetime.now(),
        start_to_close_timeout=None,
        started_time=__import__("datetime").datetime.now(),
        task_queue="q",
        task_token=b"t",
        workflow_id="w",
        workflow_namespace="default",
        workflow_run_id="r",
        workflow_type="W",
        priority=temporalio.common.Priority.default,
        retry_policy=None,
    )
    token = _context.enter_activity_context(
        info=info,
        heartbeat=lambda *d: beats.append(d),
        cancelled_event=cancelled,
        worker_shutdown_event=shutdown,
        shield=None,
        payload_converter=temporalio.converter.DataConverter.default.payload_converter,
        cancellation_details=holder,
    )
    try:
        assert temporalio.activity.info() is info
        temporalio.activity.heartbeat(1, 2)
        assert beats == [(1, 2)]
        assert not temporalio.activity.is_cancelled()
        holder.details = temporalio.activity.ActivityCancellationDetails(cancel_requested=True)
        cancelled.set()
        assert temporalio.activity.is_cancelled()
        assert temporalio.activity.cancellation_details().cancel_requested
        shutdown.set()
        assert temporalio.activity.is_worker_shutdown()
        temporalio.activity.wait_for_cancelled_sync(0)
    finally:
        _context.exit_activity_context(token)
    assert not temporalio.activity.in_activity()


def test_complete_async_error_is_what_raise_complete_async_raises():
    try:
        temporalio.activity.raise_complete_async()
    except BaseException as err:
        assert isinstance(err, _context.CompleteAsyncError)
    assert inspect.isclass(_context.CompleteAsyncError)
