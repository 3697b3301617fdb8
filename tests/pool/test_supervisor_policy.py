"""The supervisor's pure decisions (pool.supervisor.policy): no processes."""

from __future__ import annotations

import collections

import pytest

import pool
from pool.supervisor.policy import (
    after_task,
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
