"""Fails loudly when a temporalio release changes the private activity context we
set in children (runner/context.py). Widen the pinned range only after this passes."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import temporalio.activity
import temporalio.common
import temporalio.converter
from temporalio.testing import ActivityEnvironment

from runner import context

pytestmark = pytest.mark.unit


def test_context_has_the_fields_we_set():
    shape = context.context_shape()
    missing = [name for name in context.CONTEXT_FIELDS if name not in shape]
    assert not missing, (
        f"temporalio.activity._Context no longer has {missing}: runner/context.py must be "
        "updated for this temporalio release"
    )
    required = [
        f.name
        for f in dataclasses.fields(temporalio.activity._Context)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    new = set(required) - set(context.CONTEXT_FIELDS)
    assert not new, f"temporalio.activity._Context gained required fields {new}"


def test_the_public_activity_api_reads_our_context():
    import threading

    cancelled = threading.Event()
    shutdown = threading.Event()
    holder = context.new_cancellation_holder()
    beats: list[tuple] = []
    info = ActivityEnvironment.default_info()
    token = context.enter_activity_context(
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
        context.exit_activity_context(token)
    assert not temporalio.activity.in_activity()


def test_complete_async_error_is_what_raise_complete_async_raises():
    try:
        temporalio.activity.raise_complete_async()
    except BaseException as err:
        assert isinstance(err, context.CompleteAsyncError)
    assert inspect.isclass(context.CompleteAsyncError)


def test_child_contexts_reuse_the_events_across_tasks():
    import threading

    cancelled = threading.Event()
    shutdown = threading.Event()
    contexts = context.ChildContexts(cancelled, shutdown)
    converter = temporalio.converter.DataConverter.default.payload_converter
    for attempt in (1, 2):
        info = dataclasses.replace(ActivityEnvironment.default_info(), attempt=attempt)
        holder = context.new_cancellation_holder()
        token = contexts.enter(
            info=lambda info=info: info,
            heartbeat=lambda *d: None,
            shield=None,
            payload_converter=converter,
            cancellation_details=holder,
        )
        try:
            assert temporalio.activity.info() is info
            assert not temporalio.activity.is_cancelled()
            assert not temporalio.activity.is_worker_shutdown()
            holder.details = temporalio.activity.ActivityCancellationDetails(cancel_requested=True)
            cancelled.set()
            assert temporalio.activity.is_cancelled()
            assert temporalio.activity.cancellation_details() is holder.details
        finally:
            context.exit_activity_context(token)
        cancelled.clear()
    shutdown.set()
    token = contexts.enter(
        info=ActivityEnvironment.default_info,
        heartbeat=lambda *d: None,
        shield=None,
        payload_converter=converter,
        cancellation_details=context.new_cancellation_holder(),
    )
    try:
        assert temporalio.activity.is_worker_shutdown()
    finally:
        context.exit_activity_context(token)
