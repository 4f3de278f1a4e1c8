"""Up-sampling (UpSampling1D/2D, nearest and bilinear), cropping (Cropping1D/2D) and
transposed convolution (Conv1DTranspose/Conv2DTranspose = zero insertion + conv2d).

The runtime steps are bit-exact with fixnet.oracle on random shapes; the oracles are checked
against independent formulations (np.repeat, slicing, the scatter definition of a transposed
convolution, a float bilinear resize); output lengths and padding follow TensorFlow (a table
recorded from TensorFlow 2.21 / Keras 3.15). The whole models are checked against real Keras
files in test_model_fixtures.py (layers_upsampling*, both writers).
"""
import os

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fixnet
from fixnet import oracle
from fixnet.api import FloatModel
from fixnet.graph import Graph, Node
from fixnet.ops import OPS
from fixnet.ops.conv_transpose import ZeroInsertStep, plan, transpose_axis
from fixnet.ops.resize import BilinearUpsampleStep, CropStep, UpsampleStep
from conftest import MODELS, edit_config

SETTINGS = settings(max_examples=200, deadline=None)
seeds = st.integers(0, 2 ** 32 - 1)
batch = st.sampled_from([0, 1, 2, 3])
sizes = st.integers(1, 7)
channels = st.integers(1, 5)
factors = st.integers(1, 4)
zero_points = st.integers(-128, 127)


def _int8(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def _run(step, x, out_shape):
    """Bind a step to fresh buffers and run it once (twice: the second run must not depend on
    what the first left behind)."""
    bufs = {step.inputs[0]: x.copy(), step.outputs[0]: np.full(out_shape, 77, np.int8)}
    call = step.bind(bufs)
    call()
    bufs[step.inputs[0]][...] = x
    call()
    return bufs[step.outputs[0]]


# --- nearest up-sampling -------------------------------------------------------------------

def test_nearest_upsampling_repeats_rows_and_columns():
    x = np.array([[1, 2], [3, 4]], np.int8).reshape(1, 2, 2, 1)
    y = oracle.upsample_nearest(x, 2, 3)
    np.testing.assert_array_equal(y[0, :, :, 0], [[1, 1, 1, 2, 2, 2], [1, 1, 1, 2, 2, 2],
                                                  [3, 3, 3, 4, 4, 4], [3, 3, 3, 4, 4, 4]])


@SETTINGS
@given(seeds, batch, sizes, sizes, channels, factors, factors)
def test_nearest_upsampling_step_matches_oracle(seed, n, h, w, c, sh, sw):
    rng = np.random.default_rng(seed)
    x = _int8(rng, (n, h, w, c))
    step = UpsampleStep("up", "up", ["x"], ["y"], (sh, sw), (h, w, c))
    got = _run(step, x, (n, h * sh, w * sw, c))
    want = step.oracle([x])[0]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want, np.repeat(np.repeat(x, sh, axis=1), sw, axis=2))


# --- bilinear up-sampling ------------------------------------------------------------------

def test_bilinear_taps_use_half_pixel_centres():
    # output o of a x2 resize reads input (o + 0.5) / 2 - 0.5: -0.25 (clamped to 0), 0.25, 0.75, 1.25
    lo, hi, w_lo, w_hi = oracle.bilinear_taps(2, 2)
    np.testing.assert_array_equal(lo, [0, 0, 0, 1])
    np.testing.assert_array_equal(hi, [0, 1, 1, 1])
    np.testing.assert_array_equal(w_hi, [3, 1, 3, 1])            # quarters (2 * scale = 4)
    np.testing.assert_array_equal(w_lo + w_hi, [4, 4, 4, 4])
    x = np.array([0, 4], np.int8).reshape(1, 1, 2, 1)
    np.testing.assert_array_equal(oracle.upsample_bilinear(x, 1, 2)[0, 0, :, 0], [0, 1, 3, 4])


def _half_pixel_matrix(n_in, scale):
    """The linear map of a half-pixel-centre bilinear resize along one axis, written from the
    definition (TensorFlow's resize with half_pixel_centers=True), in exact fractions:
    output o reads src = (o + 1/2) * n_in / n_out - 1/2; lower = max(floor(src), 0),
    upper = min(ceil(src), n_in - 1), and takes (1 - t) * x[lower] + t * x[upper] with
    t = src - floor(src)."""
    import math
    from fractions import Fraction
    n_out = n_in * scale
    m = [[Fraction(0)] * n_in for _ in range(n_out)]
    for o in range(n_out):
        src = (Fraction(o) + Fraction(1, 2)) * Fraction(n_in, n_out) - Fraction(1, 2)
        t = src - math.floor(src)
        lower, upper = max(math.floor(src), 0), min(math.ceil(src), n_in - 1)
        m[o][lower] += 1 - t
        m[o][upper] += t
    return m


def _taps_matrix(n_in, scale):
    from fractions import Fraction
    lo, hi, w_lo, w_hi = oracle.bilinear_taps(n_in, scale)
    m = [[Fraction(0)] * n_in for _ in range(n_in * scale)]
    for o in range(n_in * scale):
        m[o][int(lo[o])] += Fraction(int(w_lo[o]), 2 * scale)
        m[o][int(hi[o])] += Fraction(int(w_hi[o]), 2 * scale)
    return m


@pytest.mark.parametrize("n_in", range(1, 10))
@pytest.mark.parametrize("scale", range(1, 7))
def test_bilinear_taps_are_the_half_pixel_resize_from_its_definition(n_in, scale):
    assert _taps_matrix(n_in, scale) == _half_pixel_matrix(n_in, scale)


GOLDENS = os.path.join(MODELS, "resize_bilinear_goldens.npz")


def _golden_cases():
    with np.load(GOLDENS) as d:
        n = len([k for k in d.files if k.startswith("size_")])
        return [pytest.param({k[:-len(f"_{i}")]: d[k] for k in d.files if k.endswith(f"_{i}")},
                             id=f"case{i}") for i in range(n)]


def _bilinear_float(x, sh, sw):
    node = Node("up", "upsample", ["x"], ["y"], {"rank": 2, "size": (int(sh), int(sw)),
                                                "interpolation": "bilinear"})
    return OPS["upsample"].run_float(node, [x.astype(np.float64)])[0]


def test_tf_resize_goldens_cover_edges_and_factors():
    cases = [p.values[0] for p in _golden_cases()]
    assert len(cases) >= 8
    assert any(c["x"].shape[1] == 1 for c in cases) and any(1 in c["size"] for c in cases)
    assert max(int(c["size"].max()) for c in cases) >= 4


@pytest.mark.parametrize("case", _golden_cases())
def test_bilinear_float_reference_matches_tf_image_resize(case):
    sh, sw = case["size"]
    got = _bilinear_float(case["x"], sh, sw)
    assert got.shape == case["resize"].shape
    np.testing.assert_allclose(got, case["resize"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got, case["keras"], rtol=0, atol=1e-5)    # Keras's UpSampling2D


@pytest.mark.parametrize("case", _golden_cases())
def test_bilinear_integer_oracle_is_tf_image_resize_rounded(case):
    sh, sw = case["size"]
    codes = case["codes"].astype(np.int8)
    q = oracle.upsample_bilinear(codes, int(sh), int(sw)).astype(np.float64)
    tf_out = case["resize_codes"].astype(np.float64)          # float32 from TF: ~1e-5 off
    assert np.abs(q - tf_out).max() <= 0.5 + 1e-4
    away = np.abs(tf_out - np.floor(tf_out) - 0.5) > 1e-4     # not a tie (ties round up)
    np.testing.assert_array_equal(q[away], np.round(tf_out[away]))


@SETTINGS
@given(seeds, batch, sizes, sizes, channels, factors, factors)
def test_bilinear_upsampling_step_matches_oracle(seed, n, h, w, c, sh, sw):
    rng = np.random.default_rng(seed)
    x = _int8(rng, (n, h, w, c))
    step = BilinearUpsampleStep("up", "up", ["x"], ["y"], (sh, sw), (h, w, c))
    np.testing.assert_array_equal(_run(step, x, (n, h * sh, w * sw, c)), step.oracle([x])[0])


@settings(max_examples=100, deadline=None)
@given(seeds, sizes, sizes, channels, factors, factors)
def test_bilinear_oracle_is_the_float_resize_rounded_to_nearest(seed, h, w, c, sh, sw):
    rng = np.random.default_rng(seed)
    x = _int8(rng, (2, h, w, c))
    node = Node("up", "upsample", ["x"], ["y"], {"rank": 2, "size": (sh, sw),
                                                "interpolation": "bilinear"})
    f = OPS["upsample"].run_float(node, [x.astype(np.float64)])[0]
    q = oracle.upsample_bilinear(x, sh, sw).astype(np.float64)
    assert np.abs(q - f).max() <= 0.5 + 1e-9
    np.testing.assert_array_equal(q, np.floor(f + 0.5 + 1e-9))     # ties round up


# --- cropping ----------------------------------------------------------------------------

@st.composite
def crops(draw):
    h, w = draw(sizes), draw(sizes)
    t = draw(st.integers(0, h - 1))
    b = draw(st.integers(0, h - 1 - t))
    l = draw(st.integers(0, w - 1))
    r = draw(st.integers(0, w - 1 - l))
    return h, w, ((t, b), (l, r))


@SETTINGS
@given(seeds, batch, crops(), channels)
def test_crop_step_matches_oracle(seed, n, geometry, c):
    h, w, ((t, b), (l, r)) = geometry
    rng = np.random.default_rng(seed)
    x = _int8(rng, (n, h, w, c))
    step = CropStep("crop", "crop", ["x"], ["y"], ((t, b), (l, r)), (h, w, c))
    got = _run(step, x, (n, h - t - b, w - l - r, c))
    want = step.oracle([x])[0]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want, x[:, t:h - b, l:w - r])


def test_crop_oracle_rejects_cropping_everything():
    with pytest.raises(ValueError, match="leaves nothing"):
        oracle.crop_nhwc(np.zeros((1, 4, 4, 1), np.int8), 2, 2, 0, 0)


# --- zero insertion ------------------------------------------------------------------------

@SETTINGS
@given(seeds, batch, sizes, sizes, channels, factors, factors, zero_points)
def test_zero_insert_step_matches_oracle_and_holds_real_zero_between(seed, n, h, w, c, sh, sw, zp):
    rng = np.random.default_rng(seed)
    x = _int8(rng, (n, h, w, c))
    step = ZeroInsertStep("zi", "zi", ["x"], ["y"], (sh, sw), zp, (h, w, c))
    got = _run(step, x, (n, (h - 1) * sh + 1, (w - 1) * sw + 1, c))
    want = step.oracle([x])[0]
    np.testing.assert_array_equal(got, want)
    real = want.astype(np.int64) - zp                      # real value / scale
    expect = np.zeros_like(real)
    expect[:, ::sh, ::sw] = x.astype(np.int64) - zp
    np.testing.assert_array_equal(real, expect)


# --- transposed convolution ------------------------------------------------------------------

# Output lengths TensorFlow 2.21 / Keras 3.15 gave for Conv1DTranspose on an input of length 5:
# (kernel, stride, padding, output_padding) -> length, None where TensorFlow refused the layer.
TF_LENGTHS = {
    (1, 1, "valid", None): 5, (1, 1, "valid", 0): 5, (1, 1, "same", None): 5, (1, 1, "same", 0): 5,
    (1, 2, "valid", None): 10, (1, 2, "valid", 0): 9, (1, 2, "valid", 1): 10,
    (1, 2, "same", None): 10, (1, 2, "same", 0): 9, (1, 2, "same", 1): 10,
    (1, 3, "valid", None): 15, (1, 3, "valid", 0): 13, (1, 3, "valid", 1): 14,
    (1, 3, "valid", 2): 15, (1, 3, "same", None): 15, (1, 3, "same", 0): 13,
    (1, 3, "same", 1): 14, (1, 3, "same", 2): 15,
    (2, 1, "valid", None): 6, (2, 1, "valid", 0): 6, (2, 1, "same", None): 5, (2, 1, "same", 0): None,
    (2, 2, "valid", None): 10, (2, 2, "valid", 0): 10, (2, 2, "valid", 1): 11,
    (2, 2, "same", None): 10, (2, 2, "same", 0): None, (2, 2, "same", 1): 9,
    (2, 3, "valid", None): 15, (2, 3, "valid", 0): 14, (2, 3, "valid", 1): 15,
    (2, 3, "valid", 2): 16, (2, 3, "same", None): 15, (2, 3, "same", 0): None,
    (2, 3, "same", 1): 13, (2, 3, "same", 2): 14,
    (3, 1, "valid", None): 7, (3, 1, "valid", 0): 7, (3, 1, "same", None): 5, (3, 1, "same", 0): 5,
    (3, 2, "valid", None): 11, (3, 2, "valid", 0): 11, (3, 2, "valid", 1): 12,
    (3, 2, "same", None): 10, (3, 2, "same", 0): 9, (3, 2, "same", 1): 10,
    (3, 3, "valid", None): 15, (3, 3, "valid", 0): 15, (3, 3, "valid", 1): 16,
    (3, 3, "valid", 2): 17, (3, 3, "same", None): 15, (3, 3, "same", 0): 13,
    (3, 3, "same", 1): 14, (3, 3, "same", 2): 15,
    (4, 1, "valid", None): 8, (4, 1, "valid", 0): 8, (4, 1, "same", None): 5, (4, 1, "same", 0): None,
    (4, 2, "valid", None): 12, (4, 2, "valid", 0): 12, (4, 2, "valid", 1): 13,
    (4, 2, "same", None): 10, (4, 2, "same", 0): None, (4, 2, "same", 1): 9,
    (4, 3, "valid", None): 16, (4, 3, "valid", 0): 16, (4, 3, "valid", 1): 17,
    (4, 3, "valid", 2): 18, (4, 3, "same", None): 15, (4, 3, "same", 0): None,
    (4, 3, "same", 1): 13, (4, 3, "same", 2): 14,
    (5, 1, "valid", None): 9, (5, 1, "valid", 0): 9, (5, 1, "same", None): 5, (5, 1, "same", 0): 5,
    (5, 2, "valid", None): 13, (5, 2, "valid", 0): 13, (5, 2, "valid", 1): 14,
    (5, 2, "same", None): 10, (5, 2, "same", 0): 9, (5, 2, "same", 1): 10,
    (5, 3, "valid", None): 17, (5, 3, "valid", 0): 17, (5, 3, "valid", 1): 18,
    (5, 3, "valid", 2): 19, (5, 3, "same", None): 15, (5, 3, "same", 0): 13,
    (5, 3, "same", 1): 14, (5, 3, "same", 2): 15,
}


@pytest.mark.parametrize("config, length", sorted(TF_LENGTHS.items(), key=str))
def test_transposed_output_length_is_tensorflows(config, length):
    k, s, padding, op = config
    if length is None:
        with pytest.raises(ValueError):
            transpose_axis(5, k, s, padding, op)
    else:
        assert transpose_axis(5, k, s, padding, op)[0] == length


def _transposed_conv_definition(x, w, bias, strides, befores, out_hw):
    """y[n, oh, ow, co] = bias[co] + sum over (ih, iw, kh, kw, ci) with ih * sh + kh - top = oh
    and iw * sw + kw - left = ow of x[n, ih, iw, ci] * w[kh, kw, co, ci] (Keras's kernel
    layout [KH, KW, Cout, Cin]): the scatter form, written out."""
    n, h, wd, cin = x.shape
    kh_, kw_, cout, _ = w.shape
    y = np.zeros((n,) + tuple(out_hw) + (cout,), x.dtype)
    y[...] = bias
    for ih in range(h):
        for iw in range(wd):
            for kh in range(kh_):
                for kw in range(kw_):
                    oh = ih * strides[0] + kh - befores[0]
                    ow = iw * strides[1] + kw - befores[1]
                    if 0 <= oh < out_hw[0] and 0 <= ow < out_hw[1]:
                        y[:, oh, ow, :] += x[:, ih, iw, :] @ w[kh, kw].T
    return y


@st.composite
def transposed_cases(draw):
    rank = draw(st.sampled_from([1, 2]))
    lengths = tuple(draw(st.integers(1, 5)) for _ in range(rank))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    padding = draw(st.sampled_from(["valid", "same"]))
    if draw(st.booleans()):
        op = tuple(draw(st.integers(0, s - 1)) for s in strides)
    else:
        op = None
    try:
        for i in range(rank):
            transpose_axis(lengths[i], kernel[i], strides[i], padding, None if op is None else op[i])
    except ValueError:          # a configuration TensorFlow refuses
        assume(False)
    return rank, lengths, kernel, strides, padding, op


@settings(max_examples=150, deadline=None)
@given(seeds, transposed_cases(), channels, channels, zero_points)
def test_zero_insertion_then_conv2d_is_the_transposed_convolution_in_integers(
        seed, case, cin, cout, zp):
    """The int8 path: zero insertion filled with the zero point, then the conv2d oracle with
    the flipped kernel, the plan's padding and the zero-point term folded into the bias, gives
    exactly the integer transposed convolution of (x - zp)."""
    rank, lengths, kernel, strides, padding, op = case
    rng = np.random.default_rng(seed)
    hw = (1,) + lengths if rank == 1 else lengths
    x = _int8(rng, (2,) + hw + (cin,))
    w_keras = rng.integers(-127, 128, kernel + (cout, cin)).astype(np.int8)
    bias = rng.integers(-1000, 1000, cout).astype(np.int32)
    zi, attrs, w_conv = plan(lengths, w_keras, strides, padding, op)
    s2 = zi or (1, 1)
    xd = oracle.zero_insert(x, *s2, zp)
    (top, bottom), (left, right) = attrs["padding"]
    kh, kw = attrs["kernel_size"]
    out_h = xd.shape[1] + top + bottom - kh + 1
    out_w = xd.shape[2] + left + right - kw + 1
    w_rows = np.ascontiguousarray(np.transpose(w_conv, (3, 0, 1, 2)))      # [Cout, KH, KW, Cin]
    b_eff = bias.astype(np.int64) - zp * w_rows.astype(np.int64).reshape(cout, -1).sum(1)
    params = dict(stride_h=1, stride_w=1, dilation_h=1, dilation_w=1, pad_top=top,
                  pad_left=left, groups=1, pad_value=zp, out_zp=0, act_min=-128, act_max=127)
    acc = oracle.conv2d_accumulators(xd, w_rows, b_eff, params, out_h=out_h, out_w=out_w)
    w4 = w_keras[None] if rank == 1 else w_keras
    befores = (kh - 1 - top, kw - 1 - left)
    want = _transposed_conv_definition(x.astype(np.int64) - zp, w4.astype(np.int64),
                                       bias.astype(np.int64), s2, befores, (out_h, out_w))
    np.testing.assert_array_equal(acc, want)
    lens = [transpose_axis(lengths[i], kernel[i], strides[i], padding,
                           None if op is None else op[i])[0] for i in range(rank)]
    assert (out_h, out_w) == ((1,) + tuple(lens) if rank == 1 else tuple(lens))


@settings(max_examples=40, deadline=None)
@given(seeds, transposed_cases(), channels, channels, st.sampled_from([None, (0.0, None)]))
def test_transposed_conv_graph_float_and_int8(seed, case, cin, cout, clamp):
    """The loader's two nodes as a model: the float reference equals the scatter definition,
    and the int8 model runs its kernels bit-exact with the oracle, with a proof."""
    rank, lengths, kernel, strides, padding, op = case
    rng = np.random.default_rng(seed)
    w_keras = rng.standard_normal(kernel + (cout, cin)) / np.sqrt(np.prod(kernel) * cin)
    bias = rng.normal(0, 0.3, cout)
    zi, attrs, w_conv = plan(lengths, w_keras, strides, padding, op)
    nodes, src = [], "x"
    if zi is not None:
        nodes.append(Node("t/zero_insert", "zero_insert", ["x"], ["xd"], {"rank": rank, "strides": zi},
                          layer="t", keras_class="Conv2DTranspose"))
        src = "xd"
    nodes.append(Node("t", "conv2d", [src], ["y"], dict(attrs, clamp=clamp),
                      {"kernel": w_conv, "bias": bias}, layer="t", keras_class="Conv2DTranspose"))
    g = Graph(["x"], ["y"], nodes)
    g.infer_shapes([lengths + (cin,)])
    fm = FloatModel(g)
    x = rng.standard_normal((6,) + lengths + (cin,)).astype(np.float32)
    y = fm.predict(x)
    hw = (1,) + lengths if rank == 1 else lengths
    w4 = w_keras[None] if rank == 1 else w_keras
    (top, _), (left, _) = attrs["padding"]
    kh, kw = attrs["kernel_size"]
    out_hw = (1,) + y.shape[1:-1] if rank == 1 else y.shape[1:-1]
    want = _transposed_conv_definition(x.reshape((6,) + hw + (cin,)).astype(np.float64), w4, bias,
                                       zi or (1, 1), (kh - 1 - top, kw - 1 - left), out_hw)
    if clamp is not None:
        want = np.maximum(want, 0.0)
    np.testing.assert_allclose(y, want.reshape(y.shape), rtol=1e-5, atol=1e-5)
    qm = fm.quantize(x)
    np.testing.assert_array_equal(qm.predict(x, output="int8"), qm.predict_oracle(x))
    assert qm.overflow_report().proven
    if zi is not None:
        assert qm.tensors["xd"].qparams == qm.tensors["x"].qparams


# --- the Keras layers, from the real fixtures ----------------------------------------------------

def test_data_moves_keep_scale_and_zero_point():
    from conftest import as_list, fixture_data, fixture_path
    d = fixture_data("layers_upsampling_k3")
    fm = fixnet.load(fixture_path("layers_upsampling_k3"))
    qm = fm.quantize(as_list(d, "x_calib")[0])
    moved = [n for n in fm.graph.nodes if n.op in ("upsample", "crop", "zero_insert")]
    assert {n.op for n in moved} == {"upsample", "crop", "zero_insert"}
    for n in moved:
        assert qm.tensors[n.outputs[0]].qparams == qm.tensors[n.inputs[0]].qparams, n.name


def _edit_layer(path, name, change):
    def edit(cfg):
        for l in cfg["config"]["layers"]:
            if l["config"]["name"] == name:
                change(l["config"])
        return cfg
    edit_config(path, edit)


@pytest.mark.parametrize("writer", ["k3", "tfk2"])
@pytest.mark.parametrize("layer, change, match", [
    ("deconv_s2_valid", lambda c: c.update(dilation_rate=[2, 2]), r"dilation_rate \(2, 2\)"),
    ("up_23_bilinear", lambda c: c.update(interpolation="bicubic"), r"interpolation='bicubic'"),
    ("crop_sym1", lambda c: c.update(cropping=[[2, 2], [0, 0]]), r"cropping .* does not fit"),
    ("up_12", lambda c: c.update(data_format="channels_first"), r"channels_first"),
])
def test_bad_configurations_are_refused_naming_the_layer(copy_fixture, writer, layer, change, match):
    p = copy_fixture(f"layers_upsampling_{writer}")
    _edit_layer(p, layer, change)
    with pytest.raises(fixnet.UnsupportedLayerError, match=rf"'{layer}' \(\w+\).*{match}"):
        fixnet.load(p)
