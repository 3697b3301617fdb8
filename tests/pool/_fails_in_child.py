"""A module that imports only in the test process (which sets the flag first): in a
child process its import fails, as a module with a missing dependency would there."""

from __future__ import annotations

import sys

from temporalio import activity

if not getattr(sys, "_pool_test_import_allowed", False):
    raise ImportError("tests.pool._fails_in_child imports only in the test process")


@activity.defn
def never_runs() -> None:
    raise AssertionError("no child can import this module")
