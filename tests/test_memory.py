"""Resident memory stays flat over many batch-1 predicts (the runtime reuses its buffers).

Slow: run with ``python -m pytest -m slow tests/test_memory.py -s`` (-s prints the measured growth).
"""
import gc
import os

import numpy as np
import pytest

import fixnet
from conftest import as_list, fixture_data, fixture_path

pytestmark = pytest.mark.slow

WARMUP = 5_000
CALLS = 100_000
LIMIT = 1 << 20          # bytes of resident-memory growth allowed over CALLS predicts
ROWS = 16                # distinct test rows the calls cycle through
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    """Resident set size of this process, from /proc/self/statm (its second field, in pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


@pytest.fixture(scope="module")
def models():
    out = {}
    for name in ("cnn_digits_k3", "mlp_seq_k3", "multi_io_k3"):
        d = fixture_data(name)
        calib = [c[:64] for c in as_list(d, "x_calib")]
        qm = fixnet.load(fixture_path(name)).quantize(calib if len(calib) > 1 else calib[0],
                                                      progress=False)
        out[name] = (qm, [x[:ROWS] for x in as_list(d, "x_test")])
    return out


def growth(call, rows):
    """RSS after CALLS calls of ``call(i)`` minus RSS after a warm-up of WARMUP calls."""
    for i in range(WARMUP):
        call(i % rows)
    gc.collect()
    before = rss_bytes()
    for i in range(CALLS):
        call(i % rows)
    gc.collect()
    return rss_bytes() - before


@pytest.mark.parametrize("name, output", [
    ("cnn_digits_k3", "float32"), ("cnn_digits_k3", "int8"),
    ("mlp_seq_k3", "float32"), ("mlp_seq_k3", "int8"),
    ("multi_io_k3", "float32"), ("multi_io_k3", "int8"),
])
def test_batch1_predicts_do_not_grow_resident_memory(models, name, output):
    qm, xs = models[name]
    if output == "int8":      # int8 in and out: no float at either boundary
        xs = [qp.quantize(x) for qp, x in zip(qm.input_qparams, xs)]
    rows = [[np.ascontiguousarray(x[i:i + 1]) for x in xs] for i in range(ROWS)]
    if len(xs) == 1:
        rows = [r[0] for r in rows]
    expected = [qm.predict(r, output=output) for r in rows]

    def call(i):
        y = qm.predict(rows[i], output=output)
        if i == 0:            # the calls compute, not just return: row 0 is checked each cycle
            for a, b in zip(y if isinstance(y, list) else [y],
                            expected[0] if isinstance(y, list) else [expected[0]]):
                assert np.array_equal(a, b)

    grown = growth(call, ROWS)
    print(f"\n{name} output={output}: RSS growth over {CALLS:,} batch-1 predicts after "
          f"{WARMUP:,} warm-up calls: {grown / 1024:.0f} KiB")
    assert grown < LIMIT, f"{name} output={output}: RSS grew by {grown / 1024:.0f} KiB"


def test_the_measurement_sees_a_leak():
    """The same measurement over calls that keep every result: it must report the growth."""
    kept = []
    grown = growth(lambda i: kept.append(np.full(16, i, np.int64)), 1)
    assert grown > 4 * LIMIT, f"{len(kept)} kept arrays, RSS growth {grown / 1024:.0f} KiB"
