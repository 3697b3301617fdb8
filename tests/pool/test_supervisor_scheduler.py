"""The scheduler's decisions (pool.supervisor.scheduler): which child takes a task, how
many polls the children back, the accounting of promises. Plain values, no processes."""

from __future__ import annotations

import pytest

from pool.supervisor.lookahead import Lookahead
from pool.supervisor.scheduler import Reservation, Scheduler

pytestmark = pytest.mark.unit


def _learnt(run: float = 0.2, poll: float = 0.01) -> Lookahead:
    """A lookahead that has seen enough runs of "work" and one poll round trip."""
    lookahead = Lookahead()
    for _ in range(Lookahead.MIN_RUNS):
        lookahead.observe_run("work", run)
    lookahead.observe_poll(poll)
    return lookahead


def test_each_idle_child_backs_one_promise_and_promises_use_them_up():
    scheduler: Scheduler[str] = Scheduler(Lookahead())
    assert scheduler.promisable(0.0) == 0
    scheduler.add_idle("a")
    scheduler.add_idle("b")
    assert scheduler.promisable(0.0) == 2 and scheduler.free() == 2
    scheduler.promise()
    assert scheduler.promisable(0.0) == 1 and scheduler.free() == 1
    assert scheduler.promised_ahead == 0  # backed by an idle child
    scheduler.give_back()
    assert scheduler.reserved == 0 and scheduler.promisable(0.0) == 2


def test_prefetch_adds_promises_beyond_every_child_and_counts_them_ahead():
    scheduler: Scheduler[str] = Scheduler(Lookahead(), prefetch=2)
    assert scheduler.promisable(0.0) == 2
    scheduler.promise()
    scheduler.promise()
    assert scheduler.promisable(0.0) == 0
    assert scheduler.promised_ahead == 2 and scheduler.free() == -2


def test_promise_now_goes_beyond_what_is_promisable():
    scheduler: Scheduler[str] = Scheduler(Lookahead())
    scheduler.promise_now()
    assert scheduler.reserved == 1 and scheduler.promisable(0.0) == -1
    assert scheduler.promised_ahead == 0


def test_the_child_that_finished_last_takes_the_next_task():
    scheduler: Scheduler[str] = Scheduler(Lookahead())
    for child in ("a", "b", "c"):
        scheduler.add_idle(child)
    assert scheduler.take_idle() == "c"
    scheduler.add_idle("c")
    assert [scheduler.take_idle() for _ in range(3)] == ["c", "b", "a"]
    assert scheduler.idle == 0


def test_a_busy_child_backs_a_promise_only_while_its_window_is_open():
    scheduler: Scheduler[str] = Scheduler(_learnt(run=0.2, poll=0.01))
    opens = scheduler.task_started("a", "work", 10.0)
    assert opens == pytest.approx(10.19)  # one round trip before its expected end
    assert scheduler.promisable(10.0) == 0
    assert scheduler.promisable(10.195) == 1
    assert scheduler.promisable(10.205) == 1
    assert scheduler.promisable(10.22) == 0  # over a round trip late: no lookahead
    scheduler.promise()
    assert scheduler.promised_ahead == 1  # backed by a busy child


def test_no_window_for_an_unknown_type_or_with_lookahead_off():
    scheduler: Scheduler[str] = Scheduler(_learnt())
    assert scheduler.task_started("a", "never-seen", 0.0) is None
    assert scheduler.promisable(0.0) == 0
    off: Scheduler[str] = Scheduler(Lookahead(enabled=False))
    assert off.task_started("a", "work", 0.0) is None


def test_a_window_already_open_needs_no_wake_up():
    scheduler: Scheduler[str] = Scheduler(_learnt(run=0.001, poll=0.01))
    assert scheduler.task_started("a", "work", 5.0) is None
    assert scheduler.promisable(5.0) == 1


def test_a_short_task_type_lets_each_child_back_several_polls():
    lookahead = Lookahead()
    lookahead.observe_poll(0.04)
    for _ in range(Lookahead.RECENT_KEPT):
        lookahead.observe_run("tiny", 0.001)
    scheduler: Scheduler[str] = Scheduler(lookahead, prefetch=1)
    scheduler.add_idle("a")
    assert scheduler.promisable(0.0) == Lookahead.MAX_DEPTH + 1


def test_task_ended_closes_the_window_and_learns_only_from_real_runs():
    lookahead = _learnt(run=0.2)
    scheduler: Scheduler[str] = Scheduler(lookahead)
    scheduler.task_started("a", "work", 0.0)
    scheduler.task_ended("a", "work", None)  # cancelled: says nothing of the next run
    assert scheduler.promisable(0.2) == 0
    assert lookahead.window("work", 0.0) == pytest.approx((0.19, 0.21))
    scheduler.task_ended("a", "work", 0.5)
    assert lookahead.window("work", 0.0) == pytest.approx((0.49, 0.51))


def test_forget_drops_an_idle_child_and_a_busy_childs_window():
    scheduler: Scheduler[str] = Scheduler(_learnt(run=0.001))
    scheduler.add_idle("a")
    scheduler.task_started("b", "work", 0.0)
    assert scheduler.promisable(0.0) == 2
    scheduler.forget("a")
    scheduler.forget("b")
    scheduler.forget("never-known")
    assert scheduler.idle == 0 and scheduler.promisable(0.0) == 0


def test_waits_are_counted_timed_and_shown():
    scheduler: Scheduler[str] = Scheduler(Lookahead())
    scheduler.wait_began()
    scheduler.wait_ended(0.25)
    scheduler.wait_began()
    scheduler.wait_ended(0.5)
    assert (scheduler.tasks_waited, scheduler.wait_seconds, scheduler.wait_max) == (2, 0.75, 0.5)
    scheduler.add_idle("a")
    scheduler.promise()
    assert repr(scheduler) == "<Scheduler [idle: 1, reserved: 1, windows: 0 | prefetch: 0]>"


def test_a_reservation_ends_once_whichever_way_and_however_often_it_is_ended():
    ended: list[bool] = []  # the notify flag of each give-back
    used = Reservation(ended.append)
    assert used.held
    used.use()
    used.use()
    used.release()  # the task took its child: releasing it later gives back nothing
    assert ended == [False] and not used.held
    released = Reservation(ended.append)
    released.release()
    released.release()
    released.use()  # a task that waited for its type's limit: it runs unreserved
    assert ended == [False, True] and not released.held
