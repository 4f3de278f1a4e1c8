"""The merge-family ops (fixnet/ops/merge.py, pool.py, affine.py, prelu.py) on int16 tensors:
quantize() chooses the int16 parameters when a node's tensors are int16 (add's left shift 15,
int16 clamp bounds, zero points 0); the step's kernel, run on int16 buffers, gives its oracle's
bits and the float op's result to within an int16 step; the overflow bounds take |x| up to
32768 and prove int32; int8 steps keep their parameters and bounds.

Each test quantizes one node with a fixnet.quant.quantizer.QuantContext whose tensors are given
int16 QParams directly (no calibration), as the quantizer does for an int16 node.
"""
import numpy as np
import pytest

from fixnet.graph import Graph, Node
from fixnet.ops import OPS
from fixnet.ops.merge import ADD_LEFT_SHIFT
from fixnet.quant.qparams import QParams, qparams_from_range
from fixnet.quant.config import QuantConfig
from fixnet.quant.quantizer import QuantContext


def quantize_node(node, shapes, qparams, bits=16, graph_inputs=()):
    """(step, QuantContext) for ``node`` whose tensors have the given shapes (no batch) and
    QParams; the step's activation type set as the quantizer sets it."""
    graph = Graph(inputs=list(graph_inputs), outputs=list(node.outputs), nodes=[node],
                  shapes=dict(shapes))
    q = QuantContext(graph, {}, QuantConfig())
    q.qp.update(qparams)
    step = OPS[node.op].quantize(node, q)
    step.bits = bits
    return step, q


def int16_codes(rng, shape, lo=-32768, hi=32767):
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(np.int16)


def run_step(step, ins, out_shape):
    """Run the step's kernel on int16 buffers (batch 2) and check it against the oracle;
    returns the output codes."""
    bufs = dict(zip(step.inputs, ins))
    bufs[step.outputs[0]] = np.full(out_shape, 99, np.int16)
    step.bind(bufs)()
    out = bufs[step.outputs[0]]
    (expected,) = step.oracle(ins)
    assert expected.dtype == np.int16
    np.testing.assert_array_equal(out, expected.reshape(out.shape))
    return out


def real_of(codes, qp):
    """The real values of int16 codes, in float64 (QParams.dequantize rounds to float32: a
    few thousandths of a step at int16 resolution)."""
    return (codes.astype(np.float64) - qp.zero_point) * qp.scale


def float_output(node, reals):
    (y,) = OPS[node.op].run_float(node, reals)
    return y


def double_rounding(*shifts):
    """TFLite's requantization rounds twice: the doubling high multiply to 2^-right of a
    step, then the right shift to nearest: up to 2^-(right + 1) of a step beyond the half
    step of one rounding (the smallest right shift among ``shifts`` bounds it)."""
    return 2.0 ** -(min(max(-int(s), 0) for s in shifts) + 1)


def assert_within_steps(codes, qp, real, steps):
    """codes dequantize to ``real`` (clipped to qp's range) within ``steps`` of qp.scale."""
    lo, hi = qp.real_range
    err = np.abs(real_of(codes, qp) - np.clip(real, lo, hi)) / qp.scale
    assert err.max() <= steps, err.max()


@pytest.mark.parametrize("kind", ["add", "subtract", "average", "multiply", "maximum",
                                  "minimum"])
def test_binary_int16(kind):
    rng = np.random.default_rng(1)
    shape = (5, 7)
    xq = QParams(float(np.float32(3.0 / 32767)), 0, 16)
    yq = QParams(float(np.float32(0.7 / 32767)), 0, 16)
    x, y = int16_codes(rng, (2,) + shape), int16_codes(rng, (2,) + shape)
    node = Node("m", "binary", ["x", "y"], ["z"], attrs={"kind": kind, "clamp": None}, layer="m")
    real = float_output(node, [real_of(x, xq), real_of(y, yq)])
    oq = qparams_from_range(real.min(), real.max(), bits=16)
    step, _ = quantize_node(node, {"x": shape, "y": shape, "z": shape},
                            {"x": xq, "y": yq, "z": oq})
    p = step.kernel_params()
    assert (p["x_zp"], p["y_zp"], p["out_zp"], p["act_min"], p["act_max"]) == (0, 0, 0, -32768,
                                                                              32767)
    if kind in ("add", "subtract", "average"):
        assert p["left_shift"] == ADD_LEFT_SHIFT[16] == 15
    z = run_step(step, [x, y], (2,) + shape)
    # add: the inputs' 2^-15 roundings add a little to the output's half step
    shifts = [p[k] for k in ("shift", "out_shift", "x_shift", "y_shift") if k in p]
    if kind in ("add", "subtract", "average"):
        shifts = [p["out_shift"]]
    assert_within_steps(z, oq, real, 0.5 + double_rounding(*shifts) + 2.0 ** -10)
    bound = step.overflow_bound()
    assert bound.proven
    if kind in ("add", "subtract", "average"):
        assert int(bound.worst[0]) == 32768 << 15 == 2 ** 30


def test_binary_int8_keeps_its_parameters():
    node = Node("m", "binary", ["x", "y"], ["z"], attrs={"kind": "add", "clamp": None}, layer="m")
    qp = QParams(0.02, 3)
    step, _ = quantize_node(node, {"x": (4,), "y": (4,), "z": (4,)},
                            {"x": qp, "y": QParams(0.01, -7), "z": QParams(0.03, 1)}, bits=8)
    assert step.kernel_params()["left_shift"] == ADD_LEFT_SHIFT[8] == 20
    assert int(step.overflow_bound().worst[0]) == 255 << 20


def test_binary_int16_clamp_bounds_are_int16_codes():
    node = Node("m", "binary", ["x", "y"], ["z"], attrs={"kind": "add", "clamp": (0.0, 6.0)},
                layer="m")
    qp = QParams(float(np.float32(8.0 / 32767)), 0, 16)
    step, _ = quantize_node(node, {"x": (4,), "y": (4,), "z": (4,)}, {"x": qp, "y": qp, "z": qp})
    p = step.kernel_params()
    assert (p["act_min"], p["act_max"]) == (0, qp.code_of(6.0)) and p["act_max"] > 127


@pytest.mark.parametrize("same", [True, False])
def test_concat_int16(same):
    rng = np.random.default_rng(2)
    qa = QParams(float(np.float32(2.0 / 32767)), 0, 16)
    qb = qa if same else QParams(float(np.float32(0.5 / 32767)), 0, 16)
    a, b = int16_codes(rng, (2, 3, 4, 5)), int16_codes(rng, (2, 3, 4, 2))
    node = Node("c", "concat", ["a", "b"], ["z"], attrs={"axis": -1}, layer="c")
    oq = qa
    step, _ = quantize_node(node, {"a": (3, 4, 5), "b": (3, 4, 2), "z": (3, 4, 7)},
                            {"a": qa, "b": qb, "z": oq})
    z = run_step(step, [a, b], (2, 3, 4, 7))
    if same:
        np.testing.assert_array_equal(z, np.concatenate([a, b], axis=-1))
    real = float_output(node, [real_of(a, qa), real_of(b, qb)])
    shifts = [shift for _, m0, shift, _, _ in step.parts if m0]
    assert_within_steps(z, oq, real, 0.5 + double_rounding(*shifts) if shifts else 0.0)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_int16(kind):
    rng = np.random.default_rng(3)
    qp = QParams(float(np.float32(5.0 / 32767)), 0, 16)
    x = int16_codes(rng, (2, 9, 8, 6))
    node = Node("p", "pool", ["x"], ["z"], layer="p",
                attrs={"kind": kind, "rank": 2, "kernel_size": (3, 3), "strides": (2, 2),
                       "padding": "same"})
    out_shape = OPS["pool"].infer_shapes(node, [(9, 8, 6)])[0]
    step, q = quantize_node(node, {"x": (9, 8, 6), "z": out_shape}, {"x": qp})
    assert OPS["pool"].output_qparams(node, q) == [qp]
    z = run_step(step, [x], (2,) + out_shape)
    real = float_output(node, [real_of(x, qp)])
    assert_within_steps(z, qp, real, 0.0 if kind == "max" else 0.5 + 1e-6)
    if kind == "avg":
        bound = step.overflow_bound()
        assert int(bound.worst[0]) == 32768 * 9 + 4 and bound.proven   # + the rounding term
        step.bits = 8
        assert int(step.overflow_bound().worst[0]) == 128 * 9 + 4


def test_global_max_pool_int16():
    rng = np.random.default_rng(4)
    qp = QParams(float(np.float32(1.0 / 32767)), 0, 16)
    x = int16_codes(rng, (2, 5, 6, 3))
    node = Node("g", "global_pool", ["x"], ["z"], layer="g",
                attrs={"kind": "max", "rank": 2, "keepdims": False})
    step, _ = quantize_node(node, {"x": (5, 6, 3), "z": (3,)}, {"x": qp, "z": qp})
    z = run_step(step, [x], (2, 3))
    np.testing.assert_array_equal(z, x.max(axis=(1, 2)))


def test_pad_int16_pads_with_zero():
    rng = np.random.default_rng(5)
    qp = QParams(float(np.float32(1.0 / 32767)), 0, 16)
    x = int16_codes(rng, (2, 3, 4, 5))
    node = Node("z", "pad", ["x"], ["z"], attrs={"pads": ((1, 2), (0, 3)), "rank": 2}, layer="z")
    step, _ = quantize_node(node, {"x": (3, 4, 5), "z": (6, 7, 5)}, {"x": qp, "z": qp})
    assert step.kernel_params()["value"] == 0
    z = run_step(step, [x], (2, 6, 7, 5))
    np.testing.assert_array_equal(z, np.pad(x, ((0, 0), (1, 2), (0, 3), (0, 0))))


def test_affine_int16():
    rng = np.random.default_rng(6)
    c = 6
    scale = np.array([0.5, -2.0, 1.0, 0.0, 3.0, -0.25])
    offset = np.array([0.1, -0.3, 0.0, 0.7, 2.0, 0.0])
    xq = QParams(float(np.float32(2.0 / 32767)), 0, 16)
    x = int16_codes(rng, (2, 4, c))
    node = Node("a", "affine", ["h"], ["z"], attrs={"clamp": None}, layer="a",
                weights={"scale": scale, "offset": offset})
    real = float_output(node, [real_of(x, xq)])
    oq = qparams_from_range(real.min(), real.max(), bits=16)
    step, _ = quantize_node(node, {"h": (4, c), "z": (4, c)}, {"h": xq, "z": oq})
    assert (step.out_zp, step.act_min, step.act_max) == (0, -32768, 32767)
    z = run_step(step, [x], (2, 4, c))
    # the int8 weights (127 levels per channel) bound the error: about |x| * scale / 254
    w_err = np.abs(np.asarray(xq.real_range)).max() * np.abs(scale).max() / 254
    assert_within_steps(z, oq, real, 0.5 + w_err / oq.scale)
    bound = step.overflow_bound()
    expected = np.abs(step.bias.astype(np.int64)) + 32768 * np.abs(step.w_q.astype(np.int64))
    np.testing.assert_array_equal(bound.worst, expected << np.maximum(step.shift, 0))
    assert bound.proven


def test_affine_folds_an_int16_input_only_without_offset():
    xq = QParams(float(np.float32(1.0 / 32767)), 0, 16)
    for offset, folds in ((0.0, True), (0.5, False)):
        node = Node("a", "affine", ["in"], ["z"], attrs={"clamp": None}, layer="a",
                    weights={"scale": np.full(3, 2.0), "offset": np.full(3, offset)})
        graph = Graph(inputs=["in"], outputs=["z"], nodes=[node], shapes={"in": (3,), "z": (3,)})
        q = QuantContext(graph, {"z": (-3.0, 3.0)}, QuantConfig())
        q.qp["in"] = xq
        fold = OPS["affine"].output_qparams(node, q)[0]
        if folds:
            assert fold == QParams(float(np.float32(2.0 * xq.scale)), 0, 16)
        else:
            assert fold.bits == 8 and fold != QParams(float(np.float32(2.0 * xq.scale)), 0, 16)


def test_prelu_int16():
    rng = np.random.default_rng(7)
    alpha = np.array([0.25, 0.0, -0.5, 1.5, 0.01])
    xq = QParams(float(np.float32(4.0 / 32767)), 0, 16)
    x = int16_codes(rng, (2, 3, 5))
    node = Node("r", "prelu", ["x"], ["z"], layer="r", weights={"alpha": alpha})
    real = float_output(node, [real_of(x, xq)])
    oq = qparams_from_range(real.min(), real.max(), bits=16)
    step, _ = quantize_node(node, {"x": (3, 5), "z": (3, 5)}, {"x": xq, "z": oq})
    p = step.kernel_params()
    assert (p["in_zp"], p["out_zp"], p["act_min"], p["act_max"]) == (0, 0, -32768, 32767)
    z = run_step(step, [x], (2, 3, 5))
    a_err = 4.0 * np.abs(alpha).max() / 254        # alpha's int8 rounding
    assert_within_steps(z, oq, real, 0.5 + a_err / oq.scale)
    bound = step.overflow_bound()
    assert bound.proven
    assert int(bound.worst[0]) >= 32768 * 127 << max(p["neg_shift"], 0)
    step.bits = 8
    assert int(step.overflow_bound().worst[0]) == 255 * 127 << max(p["neg_shift"], 0)
