"""When predict splits a step over threads (fixnet/thread_policy.py, fixnet/_kernels/_pass.pyx):
each of p parts must hold min_macs_per_part[p] multiply-adds, measured as the pool's wake-up
cost times the fastest GEMM kernel's rate at the first pass that wants threads. What is
checked here is the rule and its bookkeeping; the times themselves are not asserted."""
import math

import numpy as np
import pytest

import fixnet
from conftest import fixture_data, fixture_path
from fixnet import thread_policy
from fixnet._kernels import _pass
from thread_policies import policy

_cache = {}


def quantized(name):
    if name not in _cache:
        d = fixture_data(name)
        qm = fixnet.load(fixture_path(name)).quantize(d["x_calib"], "minmax", progress=False)
        _cache[name] = qm, np.ascontiguousarray(d["x_test"][:4], np.float32)
    return _cache[name]


@pytest.fixture
def fresh_policy():
    """No policy in use (the next pass that wants threads measures one), then the one in use
    before the test."""
    with policy(math.inf):
        thread_policy.reset()
        yield


def test_no_policy_is_measured_until_a_pass_wants_threads(fresh_policy):
    qm, x = quantized("resnet_small_k3")
    qm.predict(x, num_threads=1)
    assert _pass.thread_policy() is None
    qm.predict(x, num_threads=2)
    got = thread_policy.current()
    assert got is not None and got.source == "measured"
    assert _pass.thread_policy()[0] == got.threads == min(2, thread_policy.usable_cpus())


def test_a_pass_with_nothing_to_split_never_measures(fresh_policy):
    qm, x = quantized("resnet_small_k3")
    qm.predict(x)
    a = qm._pools[4, ()].free[0]
    nothing = _pass.Arena(a.bufs, a.calls, a.loads, a.float_stores, a.int8_stores, a.nbytes)
    nothing.run(4)                      # no MAC counts: no step is a candidate
    assert _pass.thread_policy() is None and thread_policy.current() is None


def test_a_measured_policy_is_a_factor_times_wake_cost_times_the_gemm_rate(fresh_policy):
    got = thread_policy.calibrate(4)
    cpus = thread_policy.usable_cpus()
    assert got.cpus == cpus and got.threads == min(4, cpus)
    assert got.gmacs_per_s == thread_policy.gemm_macs_per_ns() > 0
    assert sorted(got.wake_us) == sorted(got.min_macs_per_part) == list(range(2, got.threads + 1))
    for p in got.wake_us:
        assert got.wake_us[p] > 0
        assert got.min_macs_per_part[p] == pytest.approx(
            thread_policy.PART_FACTOR * got.wake_us[p] * 1e3 * got.gmacs_per_s)
    threads, table = _pass.thread_policy()
    assert threads == got.threads
    for p in range(2, threads + 1):          # (p x the minimum never decreases with p)
        assert table[p] * p == pytest.approx(max(q * got.min_macs_per_part[q]
                                                 for q in range(2, p + 1)))
    assert "thread policy (measured)" in str(got)


def test_the_environment_sets_the_threshold(fresh_policy, monkeypatch):
    monkeypatch.setenv("FIXNET_MIN_MACS_PER_PART", "250000")
    got = thread_policy.calibrate(3)
    assert got.source == "FIXNET_MIN_MACS_PER_PART=250000" and not got.wake_us
    assert got.min_macs_per_part == {p: 250000.0 for p in range(2, got.threads + 1)}
    monkeypatch.setenv("FIXNET_MIN_MACS_PER_PART", "lots")
    with pytest.raises(fixnet.ArgumentError, match="FIXNET_MIN_MACS_PER_PART"):
        thread_policy.calibrate(2)


def test_a_pass_uses_no_more_threads_than_the_process_has_cpus(fresh_policy, monkeypatch):
    monkeypatch.setenv("FIXNET_MIN_MACS_PER_PART", "0")
    qm, x = quantized("resnet_small_k3")
    qm.predict(x, num_threads=8)
    cpus = thread_policy.usable_cpus()
    assert thread_policy.current().threads == min(8, cpus)
    assert max(qm._pools[4, ()].free[0].parts(8)) == min(8, cpus)


def test_the_policy_asks_p_parts_for_p_times_the_multiply_adds():
    # p x min_macs_per_part[p] never decreases: 2 parts at 100 each (200 in all) but
    # 3 parts at 10 each (30) becomes 3 parts at 200 / 3
    with policy(0):
        _pass.set_thread_policy(3, [math.inf, math.inf, 100.0, 10.0], 3)
        threads, table = _pass.thread_policy()
        assert threads == 3 and table[2] == 100.0 and table[3] == pytest.approx(200.0 / 3)
    with pytest.raises(ValueError, match="min_macs_per_part"):
        _pass.set_thread_policy(3, [0, 0, 1.0], 3)
    with pytest.raises(ValueError, match="not a number"):
        _pass.set_thread_policy(2, [0, 0, float("nan")], 2)


def test_steps_without_multiply_adds_are_never_split():
    qm, x = quantized("resnet_small_k3")
    qm.predict(x)
    arena = qm._pools[4, ()].free[0]
    with policy(0):
        for call, macs, parts in zip(arena.calls, arena.call_macs, arena.parts(4)):
            tasks = call.n_tasks if getattr(call, "splittable", False) else 0
            assert parts == (min(4, tasks) if macs > 0 and tasks > 1 else 1)
        assert any(m == 0 for m in arena.call_macs)      # (the Add steps)


def test_an_arena_checks_its_mac_counts():
    qm, x = quantized("mlp_func_k3")
    qm.predict(x)
    a = qm._pools[4, ()].free[0]
    with pytest.raises(ValueError, match="MAC counts"):
        _pass.Arena(a.bufs, a.calls, a.loads, a.float_stores, a.int8_stores, a.nbytes, [1])
    b = _pass.Arena(a.bufs, a.calls, a.loads, a.float_stores, a.int8_stores, a.nbytes)
    assert b.call_macs == [0.0] * len(a.calls)


def test_a_pass_asks_again_when_the_policy_is_old_or_covers_fewer_threads():
    qm, x = quantized("resnet_small_k3")
    qm.predict(x)
    asked = []
    with policy(math.inf, threads=2):
        _pass.set_thread_calibrator(asked.append)
        try:
            qm.predict(x, num_threads=2)
            assert asked == []                              # fresh, and covers 2 threads
            _pass.set_thread_policy(2, [0, 0, math.inf], 2, 0.0)     # old at once
            for _ in range(64):         # (the clock is read every 64th pass)
                qm.predict(x, num_threads=2)
            assert asked == [2] * len(asked) and asked
            _pass.set_thread_policy(2, [0, 0, math.inf], 4)          # 4 CPUs, covers 2
            del asked[:]
            qm.predict(x, num_threads=3)
            qm.predict(x, num_threads=2)
            assert asked == [3]
        finally:
            _pass.set_thread_calibrator(thread_policy._on_first_use)
