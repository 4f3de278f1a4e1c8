"""TFLite's int8 semantics for the non-linear ops (fixnet/oracle/tflite.py, fixnet/tflite/
tables.py, fixnet/_kernels/_tflite_softmax.pyx, fixnet/tflite/steps.py).

The ground truth is TFLite itself: models/tflite/ops/ holds one-op int8 models and the outputs
TFLite 2.21 gave on inputs covering every int8 code (models/make_tflite_op_goldens.py). The
oracle must equal the reference kernels (BUILTIN_REF) on every value, the float-table softmax
variant the builtin optimized kernels; the Cython kernel must equal the oracle. The scales are
read from the .tflite files with fixnet.tflite.read_tflite, as the loader reads them. No
TensorFlow here.
"""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fixnet

from fixnet._kernels import _tflite_softmax
from fixnet.oracle import gemmlowp as fp
from fixnet.oracle import tflite as tfl
from fixnet.quant.qparams import QParams
from fixnet.step import TensorSpec
from fixnet.tflite.steps import TfliteSoftmaxStep
from fixnet.tflite.tables import TABLE_OPS, table_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDENS = sorted(glob.glob(os.path.join(ROOT, "models", "tflite", "ops", "*.npz")))
NAMES = [os.path.basename(p)[:-4] for p in GOLDENS]


def stored_output(d, which):
    """A golden's int8 outputs of ``which`` ("ref", "opt": builtin optimized kernels, "auto":
    with the XNNPACK delegate); the npz stores the last two where they differ from "ref"."""
    y = np.array(d["y_ref"])
    if which != "ref":
        y.ravel()[d[which + "_index"]] = d[which + "_value"]
    return y


def golden(name):
    """(npz, input quantization, output quantization, op options) of a golden, the
    quantization and options read from its .tflite."""
    from fixnet.tflite import read_tflite      # needs the test extra's parser: no skip
    d = np.load(os.path.join(ROOT, "models", "tflite", "ops", name + ".npz"))
    m = read_tflite(os.path.join(ROOT, "models", "tflite", "ops", name + ".tflite"))
    (op,) = m.operators
    assert op.op == str(d["op"])
    qin = m.tensors[op.inputs[0]].quantization
    qout = m.tensors[op.outputs[0]].quantization
    # the interpreter reported the same quantization when the golden was made
    assert np.float32(qin.scale[0]) == d["in_scale"] and qin.zero_point[0] == d["in_zero_point"]
    assert np.float32(qout.scale[0]) == d["out_scale"] and qout.zero_point[0] == d["out_zero_point"]
    return d, qin, qout, op.options


def test_every_op_has_goldens():
    ops = {str(np.load(p)["op"]) for p in GOLDENS}
    assert {"SOFTMAX", "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU", "RELU6", "GELU"} <= ops
    softmax_classes = {np.load(p)["x"].shape[1] for p in GOLDENS if "softmax" in p}
    assert softmax_classes == {2, 10, 35, 1000}


@pytest.mark.parametrize("name", NAMES)
def test_oracle_equals_tflite_reference_kernels(name):
    d, qin, qout, options = golden(name)
    x, op = d["x"], str(d["op"])
    if op == "SOFTMAX":
        assert float(qout.scale[0]) == 1.0 / 256 and int(qout.zero_point[0]) == -128
        params = tfl.softmax_params(qin.scale[0], options["beta"])
        y = tfl.softmax_reference(x, **params)
        y_opt = tfl.softmax_float_table(x, qin.scale[0], options["beta"])
    else:
        opts = {"alpha": options["alpha"]} if op == "LEAKY_RELU" else {}
        if op == "GELU":
            opts = {"approximate": options["approximate"]}
        table = table_for(op, qin, qout, opts)
        assert table.dtype == np.int8 and table.shape == (256,)
        y = y_opt = table[x.astype(np.int64) + 128]
    y_ref = stored_output(d, "ref")
    assert np.array_equal(y, y_ref), f"{int(np.sum(y != y_ref))} of {y.size} differ"
    # the builtin optimized kernels (x86-64 build): the same tables; softmax a float exp table
    want = stored_output(d, "opt")
    assert np.array_equal(y_opt, want), f"{int(np.sum(y_opt != want))} of {y.size} differ"


def test_goldens_cover_every_code():
    for p in GOLDENS:
        x = np.load(p)["x"]
        assert set(np.unique(x)) == set(range(-128, 128)), p


# ---- the softmax kernel against the oracle ---------------------------------------------------

def random_rows(rng, n, c):
    rows = [rng.integers(-128, 128, size=(n, c)),
            np.clip(rng.integers(-128, 128, size=(n, 1)) + rng.integers(-6, 7, size=(n, c)),
                    -128, 127),
            np.full((2, c), -128), np.full((2, c), 127)]
    return np.concatenate(rows).astype(np.int8)


@pytest.mark.parametrize("c", [1, 2, 3, 10, 35, 256, 257, 1000, 4095])
def test_kernel_equals_oracle(c):
    rng = np.random.default_rng(c)
    for _ in range(4):
        scale = float(np.float32(np.exp(rng.uniform(np.log(1e-3), np.log(8.0)))))
        beta = float(np.float32(rng.choice([1.0, 0.5, 2.0, rng.uniform(0.1, 3.0)])))
        if beta * scale * 2 ** 26 <= 1.0:
            continue
        params = tfl.softmax_params(scale, beta)
        x = random_rows(rng, max(1, 3000 // c), c)
        out = np.empty_like(x)
        _tflite_softmax.tflite_softmax(x, params, out)
        assert np.array_equal(out, tfl.softmax_reference(x, **params)), (scale, beta, params)


def test_kernel_tables_are_the_oracle_exp():
    for scale in (0.003, 0.05, 0.4, 3.0):
        p = tfl.softmax_params(scale)
        x = np.zeros((1, 4), np.int8)
        call = _tflite_softmax.TfliteSoftmaxCall(x, p, np.empty_like(x))
        exp_of, term_of = call.tables()
        d = -np.arange(256)
        used = d >= p["diff_min"]
        rescaled = fp.saturating_rounding_doubling_high_mul(d << p["input_left_shift"],
                                                             p["input_multiplier"])
        want = np.where(used, fp.exp_on_negative_values(rescaled, 5), 0)
        assert np.array_equal(exp_of, want)
        assert np.array_equal(term_of, np.where(used, fp.rescale(want, 0, 12), 0))


def test_a_row_that_would_abort_tflite_gives_minus_128():
    # 600 equal logits: the exps sum to 600 >= 512, where TFLite's reference kernel aborts
    p = tfl.softmax_params(0.05)
    x = np.zeros((3, 600), np.int8)
    x[1, :256] = -128
    x[2, :100] = -128      # 500 near the maximum: a shift of 31, still TFLite's result
    out = np.empty_like(x)
    _tflite_softmax.tflite_softmax(x, p, out)
    assert np.all(out[0] == -128)
    assert np.array_equal(out, tfl.softmax_reference(x, **p))


def test_kernel_checks_its_arguments():
    p = tfl.softmax_params(0.1)
    x = np.zeros((2, 3), np.int8)
    with pytest.raises(ValueError, match="no key 'diff_min'"):
        _tflite_softmax.TfliteSoftmaxCall(x, {k: p[k] for k in p if k != "diff_min"},
                                          np.empty_like(x))
    with pytest.raises(ValueError, match="out has shape"):
        _tflite_softmax.TfliteSoftmaxCall(x, p, np.empty((2, 4), np.int8))
    with pytest.raises(ValueError, match="at most 4095"):
        _tflite_softmax.TfliteSoftmaxCall(np.zeros((1, 4096), np.int8), p,
                                          np.empty((1, 4096), np.int8))
    with pytest.raises(ValueError, match="input_multiplier"):
        _tflite_softmax.TfliteSoftmaxCall(x, dict(p, input_multiplier=5), np.empty_like(x))
    with pytest.raises(ValueError, match="diff_min"):
        _tflite_softmax.TfliteSoftmaxCall(x, dict(p, diff_min=-2 ** 30), np.empty_like(x))


# ---- the step, and a saved model that holds it -----------------------------------------------

def softmax_model(c=10, scale=0.07):
    from fixnet.runtime import QuantizedModel
    step = TfliteSoftmaxStep.from_scales("sm", "softmax", ["x"], ["y"], scale, c)
    tensors = {"x": TensorSpec((c,), QParams(float(np.float32(scale)), 3)),
               "y": TensorSpec((c,), QParams(1.0 / 256, -128))}
    return QuantizedModel([step], tensors, ["x"], ["y"], name="tflite_softmax")


def test_step_runs_the_kernel_and_its_oracle():
    qm = softmax_model()
    x = random_rows(np.random.default_rng(5), 200, 10)
    y = qm.predict(x, output="int8")
    assert np.array_equal(y, tfl.softmax_reference(x, **qm.steps[0].params))
    assert np.array_equal(qm.steps[0].oracle([x])[0], y)
    bound = qm.steps[0].overflow_bound()
    assert bound.proven and int(bound.worst[0]) == 10 * 2 ** 19


def test_saved_model_with_the_step_loads_in_a_fresh_process(tmp_path):
    qm = softmax_model(35, 0.21)
    x = random_rows(np.random.default_rng(6), 100, 35)
    path = str(tmp_path / "sm.fxn")
    qm.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", qm.predict(x, output="int8"))
    code = ("import numpy as np, fixnet\n"
            f"qm = fixnet.load({path!r})\n"
            f"y = qm.predict(np.load({str(tmp_path / 'x.npy')!r}), output='int8')\n"
            f"assert np.array_equal(y, np.load({str(tmp_path / 'y.npy')!r}))\n"
            "print(type(qm.steps[0]).__name__)\n")
    # the fixnet this test imported (the installed one, or this source tree when built in place)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__))
               + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "TfliteSoftmaxStep"


# ---- the elementwise tables ------------------------------------------------------------------

def test_table_for_takes_qparams_pairs_and_checks_them():
    a = table_for("TANH", QParams(0.03, -2), QParams(1 / 128, 0))
    assert np.array_equal(a, table_for("TANH", (0.03, -2), (1 / 128, 0)))
    with pytest.raises(ValueError, match="no int8 table"):
        table_for("CONV_2D", (0.1, 0), (0.1, 0))
    with pytest.raises(ValueError, match="alpha"):
        table_for("LEAKY_RELU", (0.1, 0), (0.1, 0))
    with pytest.raises(ValueError, match="one scale"):
        table_for("TANH", (np.array([0.1, 0.2]), np.array([0, 0])), (0.1, 0))
    with pytest.raises(ValueError, match="zero point"):
        table_for("TANH", (0.1, 300), (0.1, 0))


@pytest.mark.parametrize("op", TABLE_OPS)
def test_tables_are_close_to_the_function(op):
    f = {"LOGISTIC": lambda v: 1 / (1 + np.exp(-v)), "TANH": np.tanh,
         "ELU": lambda v: np.where(v < 0, np.expm1(v), v),
         "GELU": lambda v: 0.5 * v * (1 + np.vectorize(__import__("math").erf)(v / np.sqrt(2))),
         "HARD_SWISH": lambda v: v * np.clip(v + 3, 0, 6) / 6,
         "LEAKY_RELU": lambda v: np.where(v >= 0, v, 0.2 * v),
         "RELU": lambda v: np.maximum(v, 0), "RELU6": lambda v: np.clip(v, 0, 6),
         "RELU_N1_TO_1": lambda v: np.clip(v, -1, 1), "RELU_0_TO_1": lambda v: np.clip(v, 0, 1)}[op]
    si, zi, so, zo = 0.05, 7, 0.03, -20
    table = table_for(op, (si, zi), (so, zo), {"alpha": 0.2} if op == "LEAKY_RELU" else {})
    want = np.clip(np.round(f(si * (np.arange(-128, 128) - zi)) / so) + zo, -128, 127)
    assert np.max(np.abs(table - want)) <= 1


# ---- gemmlowp's fixed point against real arithmetic ------------------------------------------

@pytest.mark.parametrize("bits", [32, 16])
def test_fixed_point_functions_are_close_to_float(bits):
    frac = bits - 1
    tol = 2.0 ** -20 if bits == 32 else 2.0 ** -9      # gemmlowp's accuracy, not the last bit
    for ib in (0, 2, 5):
        a = np.linspace(-(2 ** ib) + 2.0 ** -8, 0, 500) if ib else np.linspace(-0.999, 0, 500)
        raw = np.round(a * 2.0 ** (bits - 1 - ib)).astype(np.int64)
        e = fp.exp_on_negative_values(raw, ib, bits) / 2.0 ** frac
        assert np.max(np.abs(e - np.exp(raw / 2.0 ** (bits - 1 - ib)))) < tol
    ib = 3
    v = np.linspace(-7.9, 7.9, 301)
    raw = np.round(v * 2.0 ** (bits - 1 - ib)).astype(np.int64)
    real = raw / 2.0 ** (bits - 1 - ib)
    lg = fp.logistic(raw, ib, bits) / 2.0 ** frac
    th = fp.tanh(raw, ib, bits) / 2.0 ** frac
    assert np.max(np.abs(lg - 1 / (1 + np.exp(-real)))) < tol
    assert np.max(np.abs(th - np.tanh(real))) < tol
    x = np.linspace(0, 0.999, 200)
    r = fp.one_over_one_plus_x_for_x_in_0_1(np.round(x * 2.0 ** frac).astype(np.int64), bits)
    assert np.max(np.abs(r / 2.0 ** frac - 1 / (1 + np.round(x * 2.0 ** frac) / 2.0 ** frac))) \
        < tol


def test_rounding_helpers_are_gemmlowps():
    x = np.array([-7, -6, -5, -4, -3, 3, 4, 5, 6, 7, 2 ** 31 - 1, -2 ** 31])
    assert list(fp.rounding_divide_by_pot(x, 1)) == [-4, -3, -3, -2, -2, 2, 2, 3, 3, 4,
                                                      2 ** 30, -2 ** 30]
    assert fp.saturating_rounding_doubling_high_mul(-2 ** 31, -2 ** 31) == 2 ** 31 - 1
    assert fp.saturating_rounding_doubling_high_mul(-2 ** 15, -2 ** 15, 16) == 2 ** 15 - 1
    assert fp.saturating_rounding_multiply_by_pot(np.array([2 ** 29, -2 ** 29, 5]), 2).tolist() \
        == [2 ** 31 - 1, -2 ** 31, 20]
    assert tfl.quantize_multiplier(0.5) == (2 ** 30, 0)
    assert tfl.quantize_multiplier(1e-12) == (0, 0)
    assert list(fp.count_leading_zeros32(np.array([0, 1, 2 ** 19, 2 ** 31 - 1, -1]))) \
        == [32, 31, 12, 1, 0]
