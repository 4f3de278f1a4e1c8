"""One QuantizedModel used from many threads at once: every result has the serial bits, and the
kernels release the GIL so that other threads run meanwhile."""
import random
import threading

import numpy as np
import pytest

import fixnet
from conftest import fixture_data, fixture_path
from gil_probe import gil_released_by, hold_the_gil, steps_while

THREADS = 8
CALLS_PER_THREAD = 200
OUTPUTS = ("float32", "int8", "uint8")


def quantized(name):
    """The fixture quantized quickly (ranges only: the bits, not the accuracy, matter here)."""
    d = fixture_data(name)
    xs = [d[k] for k in sorted(d) if k.startswith("x_calib")]
    qm = fixnet.load(fixture_path(name)).quantize(xs[0] if len(xs) == 1 else xs, "minmax",
                                                  weight_rounding="nearest",
                                                  bias_correction=False, progress=False)
    tests = [np.ascontiguousarray(d[k], np.float32) for k in sorted(d) if k.startswith("x_test")]
    return qm, tests


def rows(tests, start, n):
    """Rows [start, start + n) of every input (cycled past the end of the test set)."""
    idx = np.arange(start, start + n) % tests[0].shape[0]
    return [np.ascontiguousarray(t[idx]) for t in tests]


def make_jobs(tests, single_input):
    """(x, output, kwargs) cases: batch sizes 1, 2, 3, 7 and 300 (two chunks), float32, int8
    (the input quantized by hand) and uint8 outputs, oracle and checked runs."""
    jobs = []
    for i, n in enumerate([1, 1, 2, 3, 7, 1, 3, 300]):
        x = rows(tests, 11 * i, n)
        for output in OUTPUTS:
            jobs.append((x[0] if single_input else x, output, {}))
    x = rows(tests, 5, 4)
    jobs.append((x[0] if single_input else x, "int8", {"check_overflow": True}))
    jobs.append((x[0] if single_input else x, "oracle", {}))
    return jobs


def run(qm, job):
    x, output, kwargs = job
    if output == "oracle":
        return qm.predict_oracle(x)
    return qm.predict(x, output=output, **kwargs)


def same_bits(a, b):
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    return len(a) == len(b) and all(x.dtype == y.dtype and x.shape == y.shape
                                    and x.tobytes() == y.tobytes() for x, y in zip(a, b))


@pytest.mark.parametrize("name", ["cnn_digits_k3", "multi_io_k3"])
def test_many_threads_give_the_serial_bits(name):
    qm, tests = quantized(name)
    jobs = make_jobs(tests, len(qm.inputs) == 1)
    # serial results, computed on a fresh copy so that nothing planned here is reused
    fresh = quantized(name)[0]
    serial = [run(fresh, job) for job in jobs]
    big = [i for i, j in enumerate(jobs) if (j[0] if isinstance(j[0], np.ndarray) else j[0][0]).shape[0] > 256]
    small = [i for i in range(len(jobs)) if i not in big]
    wrong, errors = [], []
    start = threading.Barrier(THREADS)

    def worker(seed):
        rng = random.Random(seed)
        # mostly small batches, two chunked batches per thread, in a random order
        order = [rng.choice(small) for _ in range(CALLS_PER_THREAD - 2)] + rng.sample(big * 2, 2)
        rng.shuffle(order)
        start.wait()
        try:
            for i in order:
                if not same_bits(run(qm, jobs[i]), serial[i]):
                    wrong.append((seed, i))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert not wrong, f"{len(wrong)} of {THREADS * CALLS_PER_THREAD} results differ from serial"
    # the pools stay bounded: at most one arena per thread was ever planned per batch size
    for n, (planned, kept, _) in qm.arena_stats().items():
        assert planned <= THREADS and kept <= THREADS


def test_last_check_is_per_thread():
    qm, (x,) = quantized("cnn_digits_k3")
    reports, seen = {}, []
    start = threading.Barrier(4)
    first = int(np.prod(qm.tensors[qm.steps[0].outputs[0]].shape))   # outputs of one row

    def worker(k):
        start.wait()
        for _ in range(3):
            qm.predict(x[:k + 1], check_overflow=True)
            # this thread's batch size, whatever the other threads ran meanwhile
            seen.append((k, qm.last_check.records[0]["outputs"] // first - 1))
        reports[k] = qm.last_check

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 12 and all(k == got for k, got in seen), seen
    assert len({id(r) for r in reports.values()}) == 4
    assert qm.last_check is None     # this thread ran no checked predict


def test_probe_sees_a_call_that_holds_the_gil():
    # the measurement below is meaningful: pure Python work holds the GIL, and the probe
    # thread then makes no step at all (deterministic: the switch interval is 1000 s)
    assert steps_while(lambda: hold_the_gil(0.1)) == 0


def test_other_threads_run_while_a_long_predict_runs():
    # int8 in and out, one C-contiguous batch of 256 rows: the fast path, where nothing but
    # the kernels could release the GIL (no NumPy call between the input and output copies)
    qm, (x,) = quantized("cnn_digits_k3")
    xq = np.ascontiguousarray(qm.input_qparams[0].quantize(rows([x], 0, 256)[0]))
    want = qm.predict(xq, output="int8")
    assert same_bits(qm.predict(xq, output="int8"), want)      # the fast path is planned

    def long_predict():
        for _ in range(3):
            qm.predict(xq, output="int8")

    steps = gil_released_by(long_predict)
    assert steps > 0, "no other Python thread ran during predict: it held the GIL"
