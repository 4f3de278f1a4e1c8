"""Thread policies for tests (fixnet/thread_policy.py): the pass's rule for splitting a step
over threads set to a known value, whatever this machine measured, and put back after.

``split_every_step`` (a fixture) makes every step with tasks and multiply-adds split into as
many parts as it has tasks, up to 4 (also on a machine with fewer CPUs), so that tests of the
threads' bits exercise them even where the measured policy splits nothing (a busy machine)."""
import contextlib
import math

import pytest

from fixnet import thread_policy
from fixnet._kernels import _pass


@contextlib.contextmanager
def policy(min_macs_per_part, threads=4):
    """Each of p parts needs ``min_macs_per_part`` multiply-adds, p up to ``threads``."""
    before, current = _pass.thread_policy(), thread_policy._current
    _pass.set_thread_policy(threads, [math.inf, math.inf] + [min_macs_per_part] * (threads - 1),
                            threads)
    try:
        yield
    finally:
        if before is None:
            _pass.clear_thread_policy()
        else:
            _pass.set_thread_policy(before[0], before[1], before[0])
        thread_policy._current = current


@pytest.fixture
def split_every_step():
    with policy(0, threads=4):
        yield
