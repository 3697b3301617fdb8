"""The worker facade: ``pool.Worker``, a drop-in for ``temporalio.worker.Worker``.

Worker(client, **options)
  ─▶ plugins.py        the client's and the worker's plugins configure the options
  ─▶ plan.py           options -> plan, pure: which activities run in children, threads
                       or on the loop, the executor taken or replaced, slots, pollers,
                       limits; every bad option an error naming the fix
  ─▶ activity_side.py  ours: the pool, slots, poller, dispatcher, heartbeats (built)
  ─▶ workflow_side.py  temporalio's worker: workflows, local activities, Nexus (built)
run / shutdown / async with ─▶ lifecycle.py  created -> starting -> running ->
                       shutting down -> stopped / failed; the start and shutdown order
snapshot / readiness  ─▶ snapshot.py  frozen copies read on the worker's loop
"""

from .facade import Worker
from .snapshot import WorkerSnapshot

__all__ = ["Worker", "WorkerSnapshot"]
