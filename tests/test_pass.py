"""predict's pass: one C loop over the kernel calls, the memory plan that lets tensors share
one block, and the native threads that split large layers (``num_threads``).

Every result is compared bit for bit with the NumPy oracle (the ground truth) or with the
serial kernel call; the memory plan is checked against its own rules (no two tensors live at
the same step overlap; outputs live to the end; aliases share their storage)."""
import math
import os
import signal
import threading
import time

import numpy as np
import pytest

import fixnet
from fixnet._kernels._step import KernelCall
from conftest import fixture_data, fixture_path, fixtures
from conftest import as_list as fixture_arrays
from fixnet import runtime
from fixnet._kernels import _dense
from fixnet._kernels._pass import MAX_THREADS
from fixnet.cost import model_macs, step_macs
from gil_probe import steps_while
from thread_policies import policy, split_every_step  # noqa: F401  (a fixture)

ALL_FIXTURES = fixtures(exclude=("layers_channels_first", "anylen_strided"))   # refused, by design
THREAD_COUNTS = (1, 2, 3, 4)

_cache = {}


def quantized(name):
    """The fixture quantized quickly (minmax ranges: the bits, not the accuracy, matter)."""
    if name not in _cache:
        d = fixture_data(name)
        xs = fixture_arrays(d, "x_calib")
        qm = fixnet.load(fixture_path(name)).quantize(
            xs[0] if len(xs) == 1 else xs, "minmax", weight_rounding="nearest",
            bias_correction=False, progress=False)
        tests = [np.ascontiguousarray(x, np.float32) for x in fixture_arrays(d, "x_test")]
        _cache[name] = qm, tests
    return _cache[name]


def batch(tests, n):
    xs = [np.ascontiguousarray(t[np.arange(n) % t.shape[0]]) for t in tests]
    return xs[0] if len(xs) == 1 else xs


def as_list(y):
    return y if isinstance(y, list) else [y]


def assert_same_bits(got, want, what):
    got, want = as_list(got), as_list(want)
    assert len(got) == len(want), what
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, what
        assert a.tobytes() == b.tobytes(), what


# ---- the whole pass, every fixture ------------------------------------------------------------

@pytest.mark.usefixtures("split_every_step")      # (whatever this machine's policy splits)
@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_thread_count_gives_the_oracle_bits(name):
    qm, tests = quantized(name)
    for n in (1, 5):
        x = batch(tests, n)
        want = qm.predict_oracle(x)
        assert_same_bits(qm.predict(x, output="int8", check_overflow=True), want,
                         f"{name} batch {n} checked")
        for threads in THREAD_COUNTS:
            for _ in range(2):      # the second call takes the fast path
                assert_same_bits(qm.predict(x, output="int8", num_threads=threads), want,
                                 f"{name} batch {n} num_threads={threads}")


@pytest.mark.parametrize("n", [1, 4])
def test_threads_split_the_steps_whose_parts_have_the_policys_multiply_adds(n):
    # the mechanism is in use on a fixture (not only available): under a policy of 500K
    # multiply-adds per part, some steps are split, each into the most parts (up to the
    # threads and its tasks) that get that many; their results are the serial bits (above)
    qm, tests = quantized("mobilenetv2_k3")
    qm.predict(batch(tests, n))
    arena = qm._pools[n, ()].free[0]
    shapes = qm.shapes_for()
    steps = [s for s in qm.steps if not s.alias]
    assert arena.call_macs == [n * step_macs(s, shapes[s.outputs[0]], shapes[s.inputs[0]])
                               for s in steps]
    assert sum(arena.call_macs) == n * model_macs(qm)
    least = 500_000
    with policy(least, threads=4):
        for threads in (1, 2, 3, 4):
            parts = arena.parts(threads)
            for call, macs, p in zip(arena.calls, arena.call_macs, parts):
                tasks = call.n_tasks if getattr(call, "splittable", False) else 0
                want = max([k for k in range(2, min(threads, tasks) + 1) if macs >= k * least],
                           default=1)
                assert p == want, (type(call).__name__, macs, tasks, threads)
        assert arena.parallel_calls == [i for i, p in enumerate(arena.parts(4)) if p > 1]
        assert arena.parallel_calls, "no step of mobilenetv2_k3 is split over threads"
        small = [i for i, m in enumerate(arena.call_macs) if 0 < m < 2 * least]
        assert small and not set(small) & set(arena.parallel_calls)
    with policy(math.inf):
        assert arena.parallel_calls == [] and set(arena.parts(4)) == {1}


# ---- the memory plan -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet_small_k3", "mobilenetv2_k3", "layers_merge_k3",
                                  "layers_upsampling_k3", "layers_padding_reshape_tfk2",
                                  "multi_io_k3", "mlp_func_k3"])
@pytest.mark.parametrize("n", [1, 3])
def test_memory_plan_keeps_live_tensors_apart(name, n):
    qm, _ = quantized(name)
    plan = qm.memory_plan(n)
    end = len(qm.steps)
    placements = plan.tensors
    for i, a in enumerate(placements):
        for b in placements[i + 1:]:
            live_together = a.first <= b.last and b.first <= a.last
            apart = a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset
            assert apart or not live_together, f"{a.names} and {b.names} overlap"
        assert a.offset % 64 == 0 and a.offset + a.nbytes <= plan.peak_bytes
    for t in qm.outputs:
        assert plan.placement(t).last == end, f"output {t} must live until it is stored"
    for t in qm.inputs:
        assert plan.placement(t).first == -1
    for s in qm.steps:
        if s.alias:
            assert plan.placement(s.inputs[0]) is plan.placement(s.outputs[0])
        else:
            for t in s.outputs:
                p = plan.placement(t)
                assert p.first == qm.steps.index(s) or p.first < qm.steps.index(s)
                if getattr(s, "persistent_outputs", False):
                    assert p.first == qm.steps.index(s) and all(
                        q is p or q.offset + q.nbytes <= p.offset
                        or p.offset + p.nbytes <= q.offset for q in placements)
    sizes = {t: n * int(np.prod(qm.tensors[t].shape)) for q in placements for t in q.names}
    assert plan.total_bytes == sum(q.nbytes for q in placements)
    assert all(q.nbytes == sizes[q.names[0]] for q in placements)


def test_memory_plan_shares_memory_on_a_deep_model():
    qm, tests = quantized("resnet_small_k3")
    plan = qm.memory_plan(1)
    assert plan.peak_bytes < plan.total_bytes
    assert str(plan).startswith("memory plan, batch 1: peak")
    qm.predict(batch(tests, 1))
    planned, kept, nbytes = qm.arena_stats()[1]
    assert (planned, kept) == (1, 1) and nbytes == plan.peak_bytes


def test_a_persistent_output_keeps_its_memory():
    # zero insertion fills its gaps once, at bind: no other tensor may write there
    qm, tests = quantized("layers_upsampling_k3")
    assert any(getattr(s, "persistent_outputs", False) for s in qm.steps)
    x = batch(tests, 2)
    want = qm.predict_oracle(x)
    for _ in range(3):
        assert_same_bits(qm.predict(x, output="int8"), want, "repeated calls")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_memory_plan_checks_batch(bad):
    qm, _ = quantized("mlp_func_k3")
    with pytest.raises(fixnet.ArgumentError, match="memory_plan: batch"):
        qm.memory_plan(bad)


# ---- one C loop --------------------------------------------------------------------------------

def test_a_model_of_kernels_is_one_segment():
    qm, tests = quantized("resnet_small_k3")
    qm.predict(batch(tests, 1))
    assert qm._pools[1, ()].free[0].segment_count == 1


def test_python_steps_split_the_loop_into_segments():
    qm, tests = quantized("layers_upsampling_k3")    # NumPy copies between kernels
    qm.predict(batch(tests, 1))
    arena = qm._pools[1, ()].free[0]
    python_calls = [c for c in arena.calls if not isinstance(c, KernelCall)]
    assert python_calls and 1 < arena.segment_count <= len(arena.calls) - len(python_calls)


def test_a_small_model_runs_holding_the_gil_and_a_large_one_releases_it():
    small, tests = quantized("mlp_func_k3")
    x = batch(tests, 1)
    small.predict(x)
    assert steps_while(lambda: [small.predict(x) for _ in range(2000)]) == 0
    large, tests = quantized("resnet_small_k3")
    xq = large.input_qparams[0].quantize(batch(tests, 64))
    large.predict(xq, output="int8")
    steps = max(steps_while(lambda: [large.predict(xq, output="int8") for _ in range(3)])
                for _ in range(3))
    assert steps > 0


# ---- threads -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -2, MAX_THREADS + 1, 2.0, "4", True, None])
def test_num_threads_is_checked(bad):
    qm, tests = quantized("mlp_func_k3")
    with pytest.raises(fixnet.ArgumentError, match="num_threads"):
        qm.predict(batch(tests, 1), num_threads=bad)


def test_num_threads_takes_numpy_integers():
    qm, tests = quantized("mlp_func_k3")
    x = batch(tests, 2)
    assert_same_bits(qm.predict(x, num_threads=np.int64(3)), qm.predict(x), "np.int64")


def _dense_case(rng, n, k, c):
    x = rng.integers(-128, 128, (n, k), dtype=np.int8)
    w = rng.integers(-127, 128, (c, k), dtype=np.int8)
    bias = rng.integers(-2 ** 20, 2 ** 20, c, dtype=np.int32)
    m0 = rng.integers(2 ** 30, 2 ** 31 - 1, c, dtype=np.int64).astype(np.int32)
    shift = rng.integers(-12, 2, c, dtype=np.int32)
    want = np.empty((n, c), np.int8)
    _dense.dense(x, w, bias, m0, shift, -3, -128, 127, want)
    out = np.full((n, c), 99, np.int8)
    packed = _dense.pack_dense_weights(w, bias)
    call = _dense.DenseCall(x, w, bias, m0, shift, -3, -128, 127, out, packed=packed)
    return call, out, want


@pytest.mark.parametrize("shape", [(1, 5, 3), (1, 1100, 70), (3, 64, 33), (9, 4200, 40),
                                   (17, 31, 100), (2, 0, 8), (1, 2048, 64)])
def test_dense_tasks_give_the_kernel_bits_for_any_split(shape):
    rng = np.random.default_rng(sum(shape))
    call, out, want = _dense_case(rng, *shape)
    n_tasks = call.n_tasks
    assert n_tasks >= 1
    for parts in (1, 2, 3, 5):
        out.fill(99)
        cuts = sorted(set([0, n_tasks] + list(rng.integers(0, n_tasks + 1, parts - 1))))
        for first, last in reversed(list(zip(cuts, cuts[1:]))):
            call.run_tasks(first, last)
        np.testing.assert_array_equal(out, want, err_msg=f"{shape} cuts {cuts}")
    with pytest.raises(ValueError, match="task range"):
        call.run_tasks(0, n_tasks + 1)


@pytest.mark.usefixtures("split_every_step")
def test_many_python_threads_each_with_native_threads():
    qm, tests = quantized("mobilenetv2_k3")
    xs = [batch(tests, n) for n in (1, 2, 5)]
    want = [qm.predict(x, output="int8") for x in xs]
    errors = []
    start = threading.Barrier(4)

    def worker(k):
        start.wait()
        for i in range(30):
            j = (i + k) % 3
            got = qm.predict(xs[j], output="int8", num_threads=1 + (i + k) % 4)
            if got.tobytes() != want[j].tobytes():
                errors.append((k, i))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.usefixtures("split_every_step")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_after_the_threads_started_can_use_threads():
    qm, tests = quantized("mobilenetv2_k3")
    x = batch(tests, 1)
    want = qm.predict(x, output="int8", num_threads=2)      # the workers exist now
    stop = threading.Event()

    def busy():       # a parent thread using the pool while the fork happens
        while not stop.is_set():
            qm.predict(x, output="int8", num_threads=2)

    t = threading.Thread(target=busy)
    t.start()
    try:
        time.sleep(0.05)
        pid = os.fork()
        if pid == 0:      # the child: exit code 0 only if threaded predicts give the bits
            ok = all(qm.predict(x, output="int8", num_threads=3).tobytes() == want.tobytes()
                     for _ in range(20))
            os._exit(0 if ok else 1)
        deadline = time.monotonic() + 60
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung in predict(num_threads=3)")
            time.sleep(0.02)
    finally:
        stop.set()
        t.join()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_max_threads_is_exported_by_the_runtime():
    assert runtime.MAX_THREADS == MAX_THREADS >= 4


@pytest.mark.parametrize("n", [1, 2, 9])
def test_dense_long_rows_at_batch_one_and_in_tiles(n):
    # K = 4200 for one row (the GEMV kernel), two, and nine (tiles of MR rows and a last
    # partial tile)
    from fixnet import oracle
    rng = np.random.default_rng(n)
    x = rng.integers(-128, 128, (n, 4200), dtype=np.int8)
    w = rng.integers(-127, 128, (32, 4200), dtype=np.int8)
    bias = rng.integers(-2 ** 20, 2 ** 20, 32, dtype=np.int32)
    m0 = np.full(32, 2 ** 30 + 12345, np.int32)
    shift = np.full(32, -14, np.int32)
    out = np.empty((n, 32), np.int8)
    _dense.DenseCall(x, w, bias, m0, shift, 0, -128, 127, out,
                     packed=_dense.pack_dense_weights(w, bias))()
    np.testing.assert_array_equal(out, oracle.dense(x, w, bias, m0, shift, 0, -128, 127))
