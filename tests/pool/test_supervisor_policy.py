"""The supervisor's pure decisions (pool.supervisor.policy): no processes."""

from __future__ import annotations

import ast
import collections
import logging
import pathlib

import pytest

import pool
import pool.supervisor
from pool import ChildProcessDied, ChildStartError, CrashLoopError
from pool.supervisor.policy import (
    ChildEnd,
    DeathHistory,
    Ending,
    ExitDecision,
    Replace,
    after_task,
    decide_exit,
    is_crash_loop,
    is_start_failure,
    memory_verdict,
    recent,
    respawn_delay,
)

pytestmark = pytest.mark.unit


def test_after_task_decision():
    config = pool.PoolConfig(max_tasks_per_child=3, max_memory_per_child=100)
    assert after_task(2, 50, config) is None
    assert "max_tasks_per_child" in after_task(3, 50, config)
    assert "max_memory_per_child" in after_task(1, 101, config)
    assert after_task(10**6, 10**12, pool.PoolConfig()) is None


def test_memory_verdict():
    config = pool.PoolConfig(max_memory_per_child=100, hard_memory_per_child=200)
    assert memory_verdict(50, True, config) is None
    assert memory_verdict(150, True, config) == "recycle"
    assert memory_verdict(250, True, config) == "kill"
    assert memory_verdict(250, False, config) == "recycle"


def test_respawn_delay_doubles_up_to_its_cap():
    config = pool.PoolConfig(respawn_backoff=0.1, respawn_backoff_max=1.0)
    assert [respawn_delay(n, config) for n in range(1, 7)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert respawn_delay(10**6, config) == 1.0


def test_crash_loop_window():
    config = pool.PoolConfig(crash_loop_max_deaths=2, crash_loop_window=10)
    deaths = collections.deque([0.0, 5.0, 9.0])
    assert is_crash_loop(recent(deaths, 9.5, config), config)
    assert not is_crash_loop(recent(deaths, 14.0, config), config)  # 0.0 fell out
    assert list(deaths) == [5.0, 9.0]


def test_start_failure_is_what_the_next_child_would_repeat():
    assert is_start_failure(True, None)  # it said why
    assert is_start_failure(False, 1)  # exited by itself
    assert is_start_failure(False, -11)  # SIGSEGV in native code
    assert not is_start_failure(False, -9)  # SIGKILLed from outside
    assert not is_start_failure(False, -15)
    assert not is_start_failure(False, None)


# -- decide_exit: what a child's end means ------------------------------------------------

_CONFIG = pool.PoolConfig(
    crash_loop_max_deaths=3, crash_loop_window=10, respawn_backoff=0.1, respawn_backoff_max=1.0
)
_BROKEN = ChildStartError(
    7, error_type="ImportError", error_message="no module x", child_traceback="Trace\n  here\n"
)


def _end(**fields) -> ChildEnd:
    defaults = {"pid": 7, "index": 2, "exitcode": -9, "state": "idle"}
    return ChildEnd(**{**defaults, **fields})


def _decide(end: ChildEnd, now: float = 100.0, **history) -> ExitDecision:
    return decide_exit(end, DeathHistory(**history), now, _CONFIG)


@pytest.mark.parametrize(
    ("end", "closing", "replace"),
    [
        (_end(state="stopping", exitcode=0), False, Replace.NOW),  # recycled
        (_end(state="busy", kill_reason=RuntimeError("killed")), False, Replace.NOW),
        (_end(state="busy"), True, Replace.NEVER),  # the pool is stopping
        (_end(state="starting", exitcode=1), True, Replace.NEVER),  # not a start failure
    ],
)
def test_an_expected_end_is_replaced_at_once_unless_the_pool_stops(end, closing, replace):
    decision = _decide(end, closing=closing, deaths=(99.0, 99.5))
    assert decision == ExitDecision(Ending.EXPECTED, replace)  # no log, nothing counted


def test_a_killed_child_fails_its_task_with_the_kill_reason():
    reason = RuntimeError("cancel grace over")
    decision = _decide(_end(state="busy", kill_reason=reason, task_pending=True))
    assert decision.ending is Ending.EXPECTED and decision.task_error is reason


def test_a_death_while_running_is_logged_counted_and_fails_its_task():
    end = _end(state="busy", activity_type="burn", activity_id="a-1", task_pending=True)
    decision = _decide(end)
    assert (decision.ending, decision.replace, decision.counts_as) == (
        Ending.DEATH,
        Replace.NOW,
        "deaths",
    )
    [(level, text)] = decision.logs
    assert level == logging.WARNING
    assert text.startswith("Child process 7 died (killed by SIGKILL (9)")
    assert text.endswith("while running 'burn'")
    error = decision.task_error
    assert isinstance(error, ChildProcessDied)
    assert (error.pid, error.exitcode) == (7, -9)
    assert (error.activity_type, error.activity_id) == ("burn", "a-1")


@pytest.mark.parametrize(
    ("state", "exitcode", "doing"),
    [
        ("idle", 0, "while idle"),
        ("starting", -9, "before it was ready"),  # killed from outside: just a death
        ("starting", -15, "before it was ready"),
    ],
)
def test_a_death_without_a_task_says_what_the_child_was_doing(state, exitcode, doing):
    decision = _decide(_end(state=state, exitcode=exitcode))
    assert decision.ending is Ending.DEATH and decision.task_error is None
    assert decision.logs[0][1].endswith(doing)


def test_repeated_deaths_back_off_the_replacement():
    # Two deaths in the window (one older is forgotten): this is the third -> 0.2 s.
    decision = _decide(_end(), now=100.0, deaths=(80.0, 95.0, 99.0))
    assert (decision.replace, decision.delay) == (Replace.AFTER_BACKOFF, pytest.approx(0.2))
    assert decision.logs[1] == (
        logging.WARNING,
        "3 children died within 10 s: the replacement of child 2 starts in 0.20 s",
    )
    # Deaths never make a crash loop: only start failures do.
    many = _decide(_end(), deaths=tuple(99.0 + n / 100 for n in range(50)))
    assert (many.replace, many.delay, many.fatal) == (Replace.AFTER_BACKOFF, 1.0, None)


def test_the_first_start_failure_before_the_pool_is_up_fails_the_start():
    end = _end(state="starting", exitcode=3, start_error=_BROKEN)
    decision = _decide(end, up=False)
    assert (decision.ending, decision.replace) == (Ending.START_FAILURE, Replace.NEVER)
    assert decision.fails_start is _BROKEN and decision.counts_as is None
    assert decision.logs == ((logging.ERROR, f"{_BROKEN}\nTraceback in the child:\nTrace\n  here"),)
    assert decision.said == ("ImportError", "no module x")
    # Later ones at start say the same: neither logged nor recorded.
    again = _decide(end, up=False, start_error_known=True)
    assert again == ExitDecision(Ending.START_FAILURE, Replace.NEVER)


def test_a_start_failure_logs_the_childs_traceback_only_when_it_says_something_new():
    end = _end(state="starting", exitcode=3, start_error=_BROKEN)
    same = _decide(end, last_said=("ImportError", "no module x"))
    assert same.logs[0] == (logging.ERROR, str(_BROKEN))
    other = _decide(end, last_said=("ValueError", "bad"))
    assert "Traceback in the child:" in other.logs[0][1]


def test_a_start_failure_without_a_report_is_built_from_the_exit_code():
    decision = _decide(_end(state="starting", exitcode=1), up=False)
    error = decision.fails_start
    assert isinstance(error, ChildStartError)
    assert (error.pid, error.exitcode, error.error_type) == (7, 1, None)
    assert decision.logs == ((logging.ERROR, str(error)),)
    segfault = _decide(_end(state="starting", exitcode=-11), up=False)
    assert segfault.ending is Ending.START_FAILURE


def test_start_failures_of_replacements_back_off_then_make_a_crash_loop():
    end = _end(state="starting", exitcode=3, start_error=_BROKEN)
    first = _decide(end)
    assert (first.replace, first.counts_as, first.fatal) == (Replace.NOW, "start_failures", None)
    second = _decide(end, start_failures=(50.0, 99.0))  # 50.0 is out of the window
    assert (second.replace, second.delay) == (Replace.AFTER_BACKOFF, pytest.approx(0.1))
    assert second.logs[1][1] == (
        "2 children failed to start within 10 s: the replacement of child 2 starts in 0.10 s"
    )
    loop = _decide(end, start_failures=(97.0, 98.0, 99.0))  # the fourth > max 3
    assert (loop.replace, loop.counts_as, len(loop.logs)) == (
        Replace.FATAL,
        "start_failures",
        1,
    )
    assert isinstance(loop.fatal, CrashLoopError) and loop.fatal.__cause__ is _BROKEN
    assert (loop.fatal.failures, loop.fatal.window) == (4, 10.0)


def test_a_start_failure_fails_a_task_it_somehow_held():
    end = _end(state="starting", exitcode=1, task_pending=True)
    assert isinstance(_decide(end).task_error, ChildProcessDied)


@pytest.mark.parametrize("module", ["policy", "scheduler", "lookahead"])
def test_the_pure_rooms_import_nothing_that_does_io(module):
    path = pathlib.Path(pool.supervisor.__file__).with_name(f"{module}.py")
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    io = {"asyncio", "os", "select", "socket", "psutil", "multiprocess", "multiprocessing"}
    assert not imported & (io | {"runner", "cloudpickle", "time"})
    relative = {
        node.module
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level == 1
    }
    assert not relative & {"children", "supervision", "pool"}
