"""A QuantizedModel shipped to other processes: pickled as its .fxn bytes and nothing else, and
fixnet.dask.predict mapping it over the blocks of a Dask array on a LocalCluster with two
worker processes, bit-identical to qm.predict on one machine."""
import logging
import os
import pickle
import pickletools

import numpy as np
import pytest

import fixnet
from conftest import as_list, fixture_data, fixture_path

dask = pytest.importorskip("dask", reason="the dask extra is not installed")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import fixnet.dask  # noqa: E402  (after the importorskip)


@pytest.fixture(scope="module")
def cnn():
    d = fixture_data("cnn_digits_k3")
    qm = fixnet.load(fixture_path("cnn_digits_k3")).quantize(d["x_calib"][:64], progress=False)
    return qm, d["x_test"]


@pytest.fixture(scope="module")
def multi_io():
    d = fixture_data("multi_io_k3")
    qm = fixnet.load(fixture_path("multi_io_k3")).quantize(as_list(d, "x_calib"), progress=False)
    return qm, as_list(d, "x_test")


def _globals(data):
    """Every module.name a pickle would import when loaded."""
    found, strings = [], []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            found.append(".".join(strings[-2:]))
        elif op.name == "GLOBAL":
            found.append(arg.replace(" ", "."))
    return found


def test_a_pickled_model_is_its_fxn_bytes_and_one_loader_call(cnn, tmp_path):
    qm, x = cnn
    for protocol in range(3, pickle.HIGHEST_PROTOCOL + 1):     # 2 wraps bytes in _codecs
        data = pickle.dumps(qm, protocol=protocol)
        assert _globals(data) == ["fixnet.runtime.model_from_bytes"], protocol
        clone = pickle.loads(data)
        assert np.array_equal(clone.predict(x, output="int8"), qm.predict(x, output="int8"))
    qm.save(tmp_path / "m.fxn")
    # the bytes inside the pickle are the .fxn file's, whole
    assert (tmp_path / "m.fxn").read_bytes() in pickle.dumps(qm)


def test_a_damaged_pickle_is_refused_as_a_damaged_model(cnn):
    qm, _ = cnn
    data = bytearray(pickle.dumps(qm))
    i = data.index(b"PK\x03\x04") + 200                    # inside the .fxn payload
    data[i] ^= 0xFF
    with pytest.raises(fixnet.ModelFileError, match="checksum"):
        pickle.loads(bytes(data))
    with pytest.raises(fixnet.ModelFileError, match="must be bytes"):
        fixnet.runtime.model_from_bytes("not bytes")


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as c:
        yield c


def test_dask_predict_on_two_worker_processes_is_bit_identical(cnn, client):
    from distributed import get_task_stream

    qm, x = cnn
    pids = client.run(os.getpid)
    assert len(pids) == 2 and os.getpid() not in pids.values()
    xd = da.from_array(x, chunks=(45,) + x.shape[1:])      # 8 blocks for 2 workers
    for output in ("float32", "int8", "uint8"):
        with get_task_stream(client) as ts:
            got = fixnet.dask.predict(qm, xd, output=output).compute()
        want = qm.predict(x, output=output)
        assert got.dtype == want.dtype and np.array_equal(got, want), output
        # every task ran in the worker processes: one per block (Dask may fuse the block's
        # task with what follows it; the key keeps the function's name)
        ran = [t for t in ts.data if "predict_block" in str(t["key"])]
        assert len(ran) >= 8, (output, [t["key"] for t in ts.data])
        assert {t["worker"] for t in ts.data} <= set(pids), output


def test_dask_predict_several_inputs_and_outputs(multi_io):
    qm, xs = multi_io
    # rows chunked differently per input: aligned to the first input's blocks
    xd = [da.from_array(xs[0], chunks=(100, 4, 8, 1)), da.from_array(xs[1], chunks=(70, 4))]
    got = fixnet.dask.predict(qm, xd, output="int8")
    assert isinstance(got, list) and len(got) == len(qm.outputs)
    want = qm.predict(xs, output="int8")
    for g, w in zip(dask.compute(*got, scheduler="threads"), want):
        assert np.array_equal(g, w)
    # NumPy inputs are cut into blocks of block_rows rows
    got = fixnet.dask.predict(qm, xs, block_rows=64)
    assert got[0].numblocks[0] == -(-len(xs[0]) // 64)
    for g, w in zip(dask.compute(*got, scheduler="sync"), qm.predict(xs)):
        assert np.array_equal(g, w)


def test_dask_predict_refuses_bad_arguments(cnn):
    qm, x = cnn
    with pytest.raises(fixnet.InputShapeError, match=r"\(N,\) \+ \(32, 32, 1\)"):
        fixnet.dask.predict(qm, da.zeros((10, 32, 32), chunks=5))
    with pytest.raises(fixnet.InputShapeError, match="2 input array"):
        fixnet.dask.predict(qm, [x, x])
    with pytest.raises(fixnet.ArgumentError, match="QuantizedModel"):
        fixnet.dask.predict(fixnet.load(fixture_path("cnn_digits_k3")), x)
    with pytest.raises(fixnet.ArgumentError, match="block_rows"):
        fixnet.dask.predict(qm, x, block_rows=0)
    with pytest.raises(fixnet.FixnetError, match="output"):
        fixnet.dask.predict(qm, x, output="float64")
    with pytest.raises(fixnet.ArgumentError, match="num_threads"):
        fixnet.dask.predict(qm, x, num_threads=0)
