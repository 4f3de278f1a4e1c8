"""What predict does with every kind of input a user can pass: errors that name the input or
argument, NaN/inf (an error, or clipped on request), any memory layout, empty and huge
batches, lists, scalars. QuantizedModel.predict first, FloatModel.predict at the end."""
import tracemalloc

import numpy as np
import pytest

import fixnet
from fixnet import runtime
from conftest import fixture_data, fixture_path

OUTPUTS = ("float32", "int8", "uint8")


def load(name):
    d = fixture_data(name)
    xs = [d[k] for k in sorted(d) if k.startswith("x_calib")]
    fm = fixnet.load(fixture_path(name))
    qm = fm.quantize(xs[0] if len(xs) == 1 else xs, "minmax", weight_rounding="nearest",
                     bias_correction=False, progress=False)
    tests = [np.ascontiguousarray(d[k], np.float32) for k in sorted(d) if k.startswith("x_test")]
    return fm, qm, tests


@pytest.fixture(scope="module")
def cnn():
    return load("cnn_digits_k3")


@pytest.fixture(scope="module")
def mlp():
    return load("mlp_func_k3")


@pytest.fixture(scope="module")
def multi():
    return load("multi_io_k3")


def bits(out):
    return [o.tobytes() for o in out] if isinstance(out, list) else out.tobytes()


def assert_same(a, b):
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


# -- wrong shape, rank, dtype ----------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 32, 32), (2, 32, 32, 2), (2, 31, 32, 1), (2, 1024),
                                   (32, 32, 1), (1, 2, 32, 32, 1)])
def test_wrong_shape_or_rank_names_the_input(cnn, shape):
    _, qm, _ = cnn
    with pytest.raises(fixnet.InputShapeError, match=f"input '{qm.inputs[0]}'.*{shape[-1]}"):
        qm.predict(np.zeros(shape, np.float32))


@pytest.mark.parametrize("dtype", [np.bool_, np.complex64, object, "U3", "datetime64[s]"])
def test_wrong_dtype_names_the_input(cnn, dtype):
    _, qm, _ = cnn
    with pytest.raises(fixnet.InputDtypeError, match=f"input '{qm.inputs[0]}': dtype"):
        qm.predict(np.zeros((2, 32, 32, 1), dtype))


@pytest.mark.parametrize("x", [0.5, np.float32(1.0), np.array(2.0, np.float32), None, "image"])
def test_scalar_and_0d_inputs_are_refused(cnn, x):
    _, qm, _ = cnn
    with pytest.raises(fixnet.InputError, match=f"input '{qm.inputs[0]}'"):
        qm.predict(x)


def test_ragged_list_is_refused(cnn):
    _, qm, _ = cnn
    with pytest.raises(fixnet.InputDtypeError, match="cannot be made into an array"):
        qm.predict([[1.0, 2.0], [3.0]])


# -- NaN and infinity ------------------------------------------------------------------------

def poisoned(x):
    """x with +inf, -inf and NaN in three places (a copy)."""
    x = x.copy()
    flat = x.reshape(len(x), -1)
    flat[0, 3], flat[-1, 7], flat[len(x) // 2, 11] = np.inf, -np.inf, np.nan
    return x


@pytest.mark.parametrize("n, how", [(1, "fast"), (5, "fast"), (300, "fast"), (1, "checked"),
                                    (5, "checked"), (1, "oracle"), (5, "oracle")])
def test_nonfinite_input_raises_by_default(cnn, n, how):
    _, qm, (x,) = cnn
    xs = poisoned(np.resize(x, (n,) + x.shape[1:]))
    if how == "fast":
        qm.predict(np.ascontiguousarray(xs[:0].reshape(0, *x.shape[1:])))
        qm.predict(np.nan_to_num(xs))                   # the shape's fast path is planned
    with pytest.raises(fixnet.NonFiniteInputError, match=f"input '{qm.inputs[0]}'"):
        if how == "oracle":
            qm.predict_oracle(xs)
        else:
            qm.predict(xs, check_overflow=how == "checked")


@pytest.mark.parametrize("n", [1, 5, 300])
def test_nonfinite_clip_maps_inf_to_the_extreme_codes_and_nan_to_the_zero_point(cnn, n):
    _, qm, (x,) = cnn
    xs = poisoned(np.resize(x, (n,) + x.shape[1:]))
    # what "clip" means, in finite values: +inf is beyond the input range (code 127),
    # -inf below it (code -128), NaN is 0.0 (the zero point; 0.0 is always a code)
    finite = np.where(np.isnan(xs), 0.0, np.where(xs > 0, 1e30, -1e30)).astype(np.float32)
    finite = np.where(np.isfinite(xs), xs, finite)
    codes = qm.input_qparams[0].quantize(finite).reshape(n, -1)
    flat = xs.reshape(n, -1)
    assert codes[0, 3] == 127 and codes[-1, 7] == -128
    assert codes[n // 2, 11] == qm.input_qparams[0].zero_point
    assert not np.isnan(flat[0, :3]).any()
    for output in OUTPUTS:
        want = qm.predict(finite, output=output)
        assert_same(qm.predict(xs, output=output, nonfinite="clip"), want)
    if n <= 5:    # the NumPy oracle is slow
        assert_same(qm.predict(xs, nonfinite="clip", check_overflow=True), qm.predict(finite))
        assert_same(qm.predict_oracle(xs, nonfinite="clip"), qm.predict(finite, output="int8"))
    assert np.isinf(xs).sum() == 2         # the caller's array is left as it was


@pytest.mark.parametrize("bad", ["ignore", "Clip", None, 0, True, ["clip"]])
def test_invalid_nonfinite_names_the_argument(cnn, bad):
    _, qm, (x,) = cnn
    qm.predict(x[:2])
    with pytest.raises(fixnet.FixnetError, match="nonfinite"):
        qm.predict(x[:2], nonfinite=bad)
    with pytest.raises(fixnet.FixnetError, match="nonfinite"):
        qm.predict_oracle(x[:2], nonfinite=bad)


# -- memory layouts --------------------------------------------------------------------------

@pytest.mark.parametrize("output", OUTPUTS)
def test_any_layout_gives_the_contiguous_bits(cnn, output):
    _, qm, (x,) = cnn
    x = x[:12]
    want = qm.predict(x, output=output)
    big = np.zeros((24, 34, 32, 1), np.float32)
    big[::2, 1:33] = x
    layouts = {
        "rows strided": big[::2, 1:33],
        "fortran": np.asfortranarray(x),
        "negative strides": x[::-1][::-1],
        "reversed": x[::-1],
        "transposed copy back": np.ascontiguousarray(x.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0),
    }
    readonly = x.copy()
    readonly.setflags(write=False)
    layouts["read-only"] = readonly
    for name, xi in layouts.items():
        expected = want[::-1] if name == "reversed" else want
        assert_same(qm.predict(xi, output=output), expected)
    q = qm.input_qparams[0].quantize(x)            # int8 inputs too
    assert_same(qm.predict(np.asfortranarray(q), output=output), qm.predict(q, output=output))
    q.setflags(write=False)
    assert_same(qm.predict(q[::-1], output=output), want[::-1])


# -- batch sizes -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cnn", "multi"])
@pytest.mark.parametrize("output", OUTPUTS)
def test_empty_batch_gives_empty_outputs(request, name, output):
    _, qm, tests = request.getfixturevalue(name)
    empty = [t[:0] for t in tests]
    out = qm.predict(empty[0] if len(empty) == 1 else empty, output=output)
    outs = out if isinstance(out, list) else [out]
    assert len(outs) == len(qm.outputs)
    for o, t in zip(outs, qm.outputs):
        assert o.shape == (0,) + tuple(qm.tensors[t].shape) and o.dtype == np.dtype(output)
    checked = qm.predict(empty[0] if len(empty) == 1 else empty, output=output,
                         check_overflow=True)
    for o, c in zip(outs, checked if isinstance(checked, list) else [checked]):
        assert o.shape == c.shape and o.dtype == c.dtype


def test_huge_batch_runs_in_chunks_with_the_one_by_one_bits(mlp):
    _, qm, (x,) = mlp
    n = 10_000
    xs = np.ascontiguousarray(np.resize(x, (n,) + x.shape[1:]))
    for output in OUTPUTS:
        whole = qm.predict(xs, output=output)
        assert whole.shape == (n,) + tuple(qm.tensors[qm.outputs[0]].shape)
        one_by_one = np.concatenate([qm.predict(xs[i:i + 1], output=output) for i in range(n)])
        assert_same(whole, one_by_one)
    # arenas: one of MAX_ROWS_PER_PASS rows and one for the last, shorter chunk (plus batch 1)
    stats = qm.arena_stats()
    assert runtime.MAX_ROWS_PER_PASS in stats and n % runtime.MAX_ROWS_PER_PASS in stats
    assert all(planned == 1 for planned, _, _ in stats.values()), stats


def test_huge_batch_allocates_only_its_result(mlp):
    # 10,000 rows: nothing per row beyond the result array (the arenas are planned for 256
    # rows and the last chunk, once, by the first call)
    _, qm, (x,) = mlp
    n = 10_000
    xs = np.ascontiguousarray(np.resize(x, (n,) + x.shape[1:]))
    for output in ("float32", "int8"):
        first = qm.predict(xs, output=output)
        tracemalloc.start()
        try:
            again = qm.predict(xs, output=output)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert_same(again, first)
        assert peak < again.nbytes + 64 * 1024, (peak, again.nbytes)
    before = qm.arena_stats()
    qm.predict(xs)
    after = qm.arena_stats()
    assert after == before and len(after) <= runtime.BATCH_SIZES_KEPT
    one_arena = after[runtime.MAX_ROWS_PER_PASS][2]
    assert 0 < one_arena < 64 * 1024 * 1024


def test_arena_pools_are_kept_for_a_few_batch_sizes_only(mlp):
    _, qm, (x,) = mlp
    for n in range(1, 20):
        qm.predict(np.resize(x, (n,) + x.shape[1:]))
    assert len(qm.arena_stats()) == runtime.BATCH_SIZES_KEPT
    assert_same(qm.predict(x[:3]), np.concatenate([qm.predict(x[i:i + 1]) for i in range(3)]))


# -- output= ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["float16", "float", "INT8", "", None, 8, np.int8, ["int8"]])
def test_invalid_output_names_the_argument(cnn, bad):
    _, qm, (x,) = cnn
    qm.predict(x[:1])
    for kwargs in ({}, {"check_overflow": True}):
        with pytest.raises(fixnet.FixnetError, match="output must be"):
            qm.predict(x[:1], output=bad, **kwargs)


# -- lists, tuples, dtypes -------------------------------------------------------------------

def test_multi_input_takes_lists_and_tuples_of_arrays_or_nested_lists(multi):
    _, qm, (a, b) = multi
    a, b = a[:5], b[:5]
    want = qm.predict([a, b])
    assert_same(qm.predict((a, b)), want)
    assert_same(qm.predict([a.tolist(), b.tolist()]), want)
    assert_same(qm.predict([a.astype(np.float64), b]), want)
    for output in OUTPUTS:
        assert_same(qm.predict((a, b), output=output), qm.predict([a, b], output=output))


@pytest.mark.parametrize("bad, match", [
    ("one array", "takes 2 input"),
    ("one in a list", "takes 2 input"),
    ("three", "takes 2 input"),
    ("batch sizes", "batch size 4"),
    ("swapped", "input 'image'"),
])
def test_multi_input_errors_name_the_inputs(multi, bad, match):
    _, qm, (a, b) = multi
    a, b = a[:5], b[:5]
    x = {"one array": a, "one in a list": [a], "three": [a, b, b], "batch sizes": [a, b[:4]],
         "swapped": [b, a]}[bad]
    with pytest.raises(fixnet.InputShapeError, match=match):
        qm.predict(x)


def test_float64_input_is_quantized_as_its_float32_value(cnn):
    _, qm, (x,) = cnn
    x64 = x[:6].astype(np.float64)
    for output in OUTPUTS:
        assert_same(qm.predict(x64, output=output), qm.predict(x64.astype(np.float32), output=output))


def test_python_list_input_equals_the_array(cnn):
    _, qm, (x,) = cnn
    for output in OUTPUTS:
        want = qm.predict(x[:3], output=output)
        assert_same(qm.predict(x[:3].tolist(), output=output), want)
        assert_same(qm.predict([x[0], x[1], x[2]], output=output), want)   # list of samples
        assert_same(qm.predict([x[:3]], output=output), want)              # list of one input


def test_integer_inputs_mean_codes(cnn):
    _, qm, (x,) = cnn
    q = qm.input_qparams[0].quantize(x[:4])
    want = qm.predict(q, output="int8")
    u = (q.astype(np.int16) + 128).astype(np.uint8)
    assert_same(qm.predict(u, output="int8"), want)
    assert_same(qm.predict_oracle(q), want)


# -- FloatModel.predict ----------------------------------------------------------------------

def test_float_model_errors_name_the_input(cnn, multi):
    fm, _, (x,) = cnn
    name = fm.graph.inputs[0]
    for bad in (x[0], x[..., 0], np.zeros((2, 32, 32, 2), np.float32), 1.0, np.array(1.0)):
        with pytest.raises(fixnet.InputShapeError, match=f"input '{name}'"):
            fm.predict(bad)
    for dtype in (np.bool_, np.complex64, object, "U2"):
        with pytest.raises(fixnet.InputDtypeError, match=f"input '{name}': dtype"):
            fm.predict(np.zeros((2, 32, 32, 1), dtype))
    with pytest.raises(fixnet.InputDtypeError, match="cannot be made into an array"):
        fm.predict([[1.0], [1.0, 2.0]])
    for bad in (0, -1, 2.5, "8", None, True):
        with pytest.raises(fixnet.FixnetError, match="batch_size"):
            fm.predict(x[:2], batch_size=bad)
    fm2, _, (a, b) = multi
    for bad, match in ((a[:3], "takes 2 input"), ([a[:3], b[:2]], "batch size 2"),
                       ([a[:3], b[:3], b[:3]], "takes 2 input"), ([b[:3], a[:3]], "input 'image'")):
        with pytest.raises(fixnet.InputShapeError, match=match):
            fm2.predict(bad)


def test_float_model_takes_any_layout_lists_and_empty_batches(cnn, multi):
    fm, _, (x,) = cnn
    want = fm.predict(x[:5])
    assert want.dtype == np.float32
    for xi in (x[:5].tolist(), np.asfortranarray(x[:5]), x[:5][::-1][::-1],
               x[:5].astype(np.float64)):
        np.testing.assert_allclose(fm.predict(xi), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fm.predict(x[:5], batch_size=2), want, rtol=1e-6, atol=1e-6)
    empty = fm.predict(x[:0])
    assert empty.shape == (0, 10) and empty.dtype == np.float32
    fm2, _, (a, b) = multi
    outs = fm2.predict((a[:0], b[:0]))
    assert [o.shape for o in outs] == [(0,) + tuple(fm2.graph.shapes[t]) for t in fm2.graph.outputs]
    np.testing.assert_allclose(fm2.predict((a[:4].tolist(), b[:4]))[0], fm2.predict([a[:4], b[:4]])[0])
