"""int8 execution of the sequence ops around recurrent layers (issue 11): embedding, masking,
token_mask, masked_mean, and masks merged by a binary minimum/maximum.

Kernels (fixnet/_kernels/_embedding.pyx, _mask.pyx) bit-exact with the oracle (fixnet/oracle/embedding.py, mask.py)
on random shapes and zero points; the oracle against exact arithmetic; the ops against the
float reference on sub-graphs of the Keras fixtures rnn_text_* (Embedding + GRU) and
rnn_variants_* (Masking, masked GlobalAveragePooling1D) and on small graphs built here; the
refusals naming the layer; .fxn round trips.

The whole fixtures cannot be quantized until the int8 ``rnn`` op exists:
test_fixture_refusal_names_only_recurrent_layers checks that only rnn layers are left, and
test_whole_text_fixture_int8 runs (instead of skipping) once they are not.
"""
import copy
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fixnet
from fixnet import oracle
from fixnet._kernels import _embedding, _mask
from fixnet.api import FloatModel
from fixnet.errors import InputError, UnsupportedLayerError
from fixnet.runtime import load_fxn
from fixnet.graph import Graph, Node
from fixnet.ops import op_for
from fixnet.ops.embedding import IDS_QPARAMS
from fixnet.ops.mask import MASK_QPARAMS
from fixnet.quant.quantizer import build_quantized_model, refuse_unquantizable

from conftest import fixture_data, fixture_path

WRITERS = ("k3", "tfk2")


# ---- kernels against the oracle ---------------------------------------------------------------

def test_kernel_constants_are_the_oracles():
    assert _mask.MASKED_MEAN_SCALE_BITS == oracle.MASKED_MEAN_SCALE_BITS
    assert _mask.MASKED_MEAN_MAX_STEPS == oracle.MASKED_MEAN_MAX_STEPS
    # the bound the limit stands for: 256 * 255 * T in int32 for T = MAX, not for T = MAX + 1...
    assert 255 * 256 * oracle.MASKED_MEAN_MAX_STEPS < 2 ** 31
    # ... and the limit is a power of two minus one (T < 2^23 / 256)
    assert oracle.MASKED_MEAN_MAX_STEPS + 1 == 2 ** 23 // 256


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 4), st.integers(0, 12), st.integers(0, 9),
       st.integers(-128, 127), st.integers(-128, 127), st.floats(0, 1))
def test_masking_bit_exact(seed, n, t, f, mask_code, in_zp, padded):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (n, t, f), dtype=np.int8)
    pad = rng.random((n, t)) < padded
    x[pad] = mask_code                                    # whole padding steps
    near = rng.random((n, t)) < 0.3                       # steps with one feature off the code
    if f:
        x[near & ~pad, 0] = np.int8(mask_code ^ 1) if mask_code != -128 else 0
    y = np.full_like(x, 99)
    m = np.full((n, t), 99, np.int8)
    _mask.masking(x, mask_code, in_zp, y, m)
    want_y, want_m = oracle.masking(x, mask_code, in_zp)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(m, want_m)
    assert set(np.unique(m)) <= {0, 1}
    if f:
        np.testing.assert_array_equal(m[pad], 0)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 4), st.integers(0, 40), st.integers(0, 17),
       st.integers(-128, 127), st.integers(-128, 127), st.integers(2 ** 30, 2 ** 31 - 1),
       st.integers(-31, 9), st.booleans())
def test_masked_mean_bit_exact(seed, n, t, c, in_zp, out_zp, m0, shift, odd_codes):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (n, t, c), dtype=np.int8)
    mask = (rng.random((n, t)) < rng.random()).astype(np.int8)
    if n:
        mask[0] = 0                                       # a row with every step masked
    if odd_codes:                                         # any code but 0 counts as present
        mask = mask * rng.integers(-128, 128, (n, t)).astype(np.int8)
    out = np.full((n, c), 99, np.int8)
    _mask.masked_mean(x, mask, in_zp, m0, shift, out_zp, out)
    np.testing.assert_array_equal(out, oracle.masked_mean(x, mask, in_zp, m0, shift, out_zp))
    if n and c:
        np.testing.assert_array_equal(out[0], out_zp)     # all masked: real 0.0


def test_masked_mean_worst_case_sum_at_the_step_limit():
    t = oracle.MASKED_MEAN_MAX_STEPS
    x = np.full((2, t, 2), -128, np.int8)
    x[1] = 127
    mask = np.ones((2, t), np.int8)
    m0, shift = oracle.quantize_multiplier(1.0 / 256)     # y = mean, in input steps
    out = np.empty((2, 2), np.int8)
    _mask.masked_mean(x, mask, 127, m0, shift, 0, out)
    s, n = oracle.masked_mean_sums(x, mask, 127)
    assert int(np.abs(s).max()) * 256 == 255 * 256 * t < 2 ** 31
    np.testing.assert_array_equal(out, oracle.masked_mean(x, mask, 127, m0, shift, 0))
    np.testing.assert_array_equal(out, [[-128, -128], [0, 0]])
    with pytest.raises(ValueError, match="time steps"):
        _mask.masked_mean(np.zeros((1, t + 1, 1), np.int8), np.ones((1, t + 1), np.int8),
                              0, m0, shift, 0, np.empty((1, 1), np.int8))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 256), st.integers(0, 20), st.integers(0, 30),
       st.integers(-128, 127), st.booleans())
def test_embedding_bit_exact(seed, vocab, dim, n, ids_zp, with_bad):
    rng = np.random.default_rng(seed)
    table = rng.integers(-128, 128, (vocab, dim), dtype=np.int8)
    lo, hi = max(-128, ids_zp), min(127, ids_zp + vocab - 1)
    if lo > hi:                                            # no code is a valid id
        with_bad = True
        lo, hi = -128, 127
    ids = rng.integers(lo, hi + 1, n).astype(np.int8)
    if with_bad and n:
        codes = np.arange(-128, 128)
        invalid = codes[(codes - ids_zp < 0) | (codes - ids_zp >= vocab)]
        if invalid.size:
            ids[rng.integers(n)] = rng.choice(invalid)
    out = np.full((n, dim), 99, np.int8)
    first_bad = _embedding.embedding(ids, table, ids_zp, out)
    bad = oracle.embedding_bad_ids(ids, ids_zp, vocab)
    if bad.size:
        assert first_bad >= 0 and int(ids[first_bad]) - ids_zp == int(bad[0])
        with pytest.raises(ValueError, match=f"token id {int(bad[0])} "):
            oracle.embedding(ids, ids_zp, table)
    else:
        assert first_bad == -1
        np.testing.assert_array_equal(out, oracle.embedding(ids, ids_zp, table))


@pytest.mark.parametrize("call, match", [
    (lambda: _embedding.embedding(np.zeros(2, np.int8), np.zeros((3, 4), np.int8), -128,
                                 np.zeros((2, 5), np.int8)), "out has shape"),
    (lambda: _embedding.embedding(np.zeros(2, np.int8), np.zeros((0, 4), np.int8), -128,
                                 np.zeros((2, 4), np.int8)), "no rows"),
    (lambda: _mask.masking(np.zeros((1, 2, 3), np.int8), 0, 200, np.zeros((1, 2, 3), np.int8),
                               np.zeros((1, 2), np.int8)), "in_zp"),
    (lambda: _mask.masking(np.zeros((1, 2, 3), np.int8), 0, 0, np.zeros((1, 2, 3), np.int8),
                               np.zeros((1, 3), np.int8)), "mask has shape"),
    (lambda: _mask.masked_mean(np.zeros((1, 2, 3), np.int8), np.zeros((1, 2), np.int8), 0, -5,
                                   0, 0, np.zeros((1, 3), np.int8)), "m0"),
    (lambda: _mask.masked_mean(np.zeros((1, 2, 3), np.int8), np.zeros((1, 2), np.int8), 0,
                                   2 ** 30, 0, 0, np.zeros((1, 2), np.int8)), "out has shape"),
])
def test_kernel_entry_checks(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- the oracle against exact arithmetic ------------------------------------------------------

def _round_half_away(fr):
    q = abs(fr.numerator) * 2 + fr.denominator
    r = q // (2 * fr.denominator)
    return r if fr >= 0 else -r


@settings(max_examples=500, deadline=None)
@given(st.integers(-(2 ** 31), 2 ** 31 - 1), st.integers(1, 2 ** 20))
def test_rounding_divide_is_exact_round_half_away(p, n):
    assert int(oracle.rounding_divide(p, n)) == _round_half_away(Fraction(p, n))


def test_masked_mean_oracle_within_one_step_of_real_arithmetic():
    rng = np.random.default_rng(1)
    for s_x, s_y, zx, zy in [(0.05, 0.02, 3, -7), (0.004, 0.0039, -128, -128), (0.1, 0.9, 0, 5),
                             (0.5, 0.001, -20, 0)]:
        x = rng.integers(-128, 128, (50, 13, 6), dtype=np.int8)
        mask = (rng.random((50, 13)) < 0.7).astype(np.int8)
        mask[:, 0] = 1
        (m0,), (shift,) = fixnet.quant.qparams.requant_multipliers(s_x / (256 * s_y), "test")
        got = oracle.masked_mean(x, mask, zx, int(m0), int(shift), zy).astype(np.int64)
        real = ((x.astype(np.float64) - zx) * s_x * mask[:, :, None]).sum(1) / mask.sum(1)[:, None]
        exact = np.clip(np.round(real / s_y) + zy, -128, 127)
        assert np.abs(got - exact).max() <= 1


def test_masking_oracle_padding_is_code_equality():
    x = np.array([[[5, 5], [5, 6], [6, 5], [5, 5]]], np.int8)
    y, m = oracle.masking(x, 5, -2)
    np.testing.assert_array_equal(m, [[0, 1, 1, 0]])
    np.testing.assert_array_equal(y, [[[-2, -2], [5, 6], [6, 5], [-2, -2]]])


# ---- graphs ---------------------------------------------------------------------------------

def mean_tolerance(x_qp, y_qp):
    """How far an int8 masked mean may be from the float one: the input's rounding (half an
    input step, and the mean in 1/256 input steps: half of that) plus the requantization (at
    most one output step: TFLite's two roundings)."""
    return 0.5 * x_qp.scale * (1 + 2.0 ** -8) + y_qp.scale



def sub_graph(name, keep, outputs, extra=()):
    """A Graph of the fixture's nodes whose op is in ``keep`` (copies), then ``extra`` nodes,
    over the fixture's inputs; shapes inferred."""
    g = fixnet.load(fixture_path(name)).graph
    nodes = [copy.deepcopy(n) for n in g.nodes if n.op in keep] + list(extra)
    sub = Graph(list(g.inputs), outputs(nodes), nodes, name=name + "_sub", source=g.source)
    sub.infer_shapes([g.shapes[t] for t in g.inputs])
    return sub


def text_embedding(writer):
    return sub_graph(f"rnn_text_{writer}", {"embedding"}, lambda ns: [ns[0].outputs[0]])


def masked_average(writer):
    """Masking -> GlobalAveragePooling1D over its mask (the fixture averages a GRU's output;
    here the masked input itself), with the masked sequence and the mask as outputs too."""
    def extra_nodes():
        g = fixnet.load(fixture_path(f"rnn_variants_{writer}")).graph
        masking = next(n for n in g.nodes if n.op == "masking")
        mean = copy.deepcopy(next(n for n in g.nodes if n.op == "masked_mean"))
        mean.inputs = list(masking.outputs)
        return [mean]
    return sub_graph(f"rnn_variants_{writer}", {"masking"},
                     lambda ns: [ns[1].outputs[0]] + list(ns[0].outputs), extra_nodes())


def ids_data(writer):
    d = fixture_data(f"rnn_text_{writer}")
    return d["x_calib"].astype(np.float32), d["x_test"].astype(np.float32)


@pytest.mark.parametrize("writer", WRITERS)
def test_embedding_of_the_text_fixture(writer):
    g = text_embedding(writer)
    x_calib, x_test = ids_data(writer)
    fm = FloatModel(g)
    # ids seen in calibration only up to 49: the input still holds ids 0..255 exactly
    qm = fm.quantize(x_calib % 50, progress=False)
    assert qm.input_qparams == [IDS_QPARAMS]
    table = g.nodes[0].weights["table"]
    y_qp = qm.output_qparams[0]
    # the whole table, rows calibration never read too, within half a step (none clipped)
    assert np.abs(y_qp.dequantize(y_qp.quantize(table)) - table).max() <= 0.5 * y_qp.scale * (1 + 1e-6)
    want = fm.predict(x_test)
    got = qm.predict(x_test)
    assert np.abs(got - want).max() <= 0.5 * qm.output_qparams[0].scale * (1 + 1e-6)
    codes = qm.predict(x_test, output="int8")
    np.testing.assert_array_equal(codes, qm.predict_oracle(x_test))
    # uint8 inputs are the ids themselves; int8 inputs the ids - 128
    np.testing.assert_array_equal(qm.predict(x_test.astype(np.uint8), output="int8"), codes)
    np.testing.assert_array_equal(qm.predict((x_test - 128).astype(np.int8), output="int8"), codes)
    # batch 1 and batch N: the same bits
    for i in (0, 7, 359):
        np.testing.assert_array_equal(qm.predict(x_test[i:i + 1], output="int8")[0], codes[i])
    assert op_for(g.nodes[0]).int8_unsupported(g.nodes[0]) is None


@pytest.mark.parametrize("writer", WRITERS)
def test_embedding_id_without_a_row_is_an_input_error(writer):
    g = text_embedding(writer)
    x_calib, x_test = ids_data(writer)
    qm = FloatModel(g).quantize(x_calib, progress=False)
    vocab = g.nodes[0].weights["table"].shape[0]
    bad = x_test[:3].copy()
    bad[1, 5] = vocab                                         # 200: a code, but no row
    layer = g.nodes[0].layer
    for run in (lambda: qm.predict(bad), lambda: qm.predict(bad[1:2]),
                lambda: qm.predict(bad.astype(np.uint8)), lambda: qm.predict_oracle(bad),
                lambda: qm.predict(bad, check_overflow=True)):
        with pytest.raises(InputError, match=f"'{layer}'.*token id {vocab} is outside"):
            run()
    bad[1, 5] = 255                                           # the largest code
    with pytest.raises(InputError, match="token id 255 "):
        qm.predict(bad)
    # the model still works after the error (the arena the failed pass took is not reused)
    np.testing.assert_array_equal(qm.predict(x_test[:3], output="int8"),
                                  qm.predict_oracle(x_test[:3]))


def _table_graph(vocab, reader=None):
    """ids (6,) -> [relu ->] embedding of a random [vocab, 4] table (+ a dense reading the
    ids too, with reader="dense")."""
    rng = np.random.default_rng(vocab)
    nodes, src = [], "ids"
    if reader == "relu":
        nodes.append(Node("ids_relu", "activation", ["ids"], ["ids_relu"], {"fn": "relu"},
                          layer="ids_relu", keras_class="ReLU"))
        src = "ids_relu"
    nodes.append(Node("emb", "embedding", [src], ["emb"], {},
                      {"table": rng.normal(size=(vocab, 4))}, layer="emb", keras_class="Embedding"))
    outputs = ["emb"]
    if reader == "dense":
        nodes.append(Node("feat", "dense", ["ids"], ["feat"], {"clamp": None},
                          {"kernel": rng.normal(size=(6, 3)), "bias": np.zeros(3)}, layer="feat",
                          keras_class="Dense"))
        outputs.append("feat")
    g = Graph(["ids"], outputs, nodes, name="emb_graph")
    g.infer_shapes([(6,)])
    return g


def _ranges(g, x):
    """{tensor: (min, max)} of every tensor of g on x (the float ops)."""
    vals = {g.inputs[0]: x}
    for n in g.nodes:
        for t, v in zip(n.outputs, op_for(n).run_float(n, [vals[i] for i in n.inputs])):
            vals[t] = v
    return {t: (float(v.min()), float(v.max())) for t, v in vals.items()}


def test_embedding_refusals_name_the_layer():
    ids = np.random.default_rng(0).integers(0, 200, (20, 6)).astype(np.float32)
    big = _table_graph(300)
    with pytest.raises(UnsupportedLayerError, match=r"'emb' \(Embedding\).*300 token ids.*"
                                                    r"ids above 255 do not fit int8 codes"):
        FloatModel(big).quantize(ids, progress=False)
    with pytest.raises(UnsupportedLayerError, match=r"layer 'emb' \(Embedding\).*ids above 255"):
        build_quantized_model(big, _ranges(big, ids))         # quantize() itself refuses too
    computed = _table_graph(256, "relu")
    with pytest.raises(UnsupportedLayerError, match=r"layer 'emb' \(Embedding\).*come from "
                                                    r"layer 'ids_relu'"):
        FloatModel(computed).quantize(ids, progress=False)
    shared = _table_graph(200, "dense")
    # calibration ids 0..49: the input's range (the Dense reads it too) does not hold ids
    with pytest.raises(UnsupportedLayerError, match=r"layer 'emb' \(Embedding\).*also read by "
                                                    r"layer 'feat' \(Dense\)"):
        FloatModel(shared).quantize(ids % 50, progress=False)
    # a 256-row vocabulary is the largest that runs: id 255 is code 127
    ok = FloatModel(_table_graph(256)).quantize(ids, progress=False)
    x = np.array([[0, 1, 128, 254, 255, 7]], np.float32)
    np.testing.assert_allclose(ok.predict(x), FloatModel(_table_graph(256)).predict(x),
                               atol=0.5 * ok.output_qparams[0].scale * (1 + 1e-6))


@pytest.mark.parametrize("writer", WRITERS)
def test_masking_and_masked_mean_of_the_variants_fixture(writer):
    g = masked_average(writer)
    d = fixture_data(f"rnn_variants_{writer}")
    x_calib, x_test = d["x_calib"], d["x_test"]
    assert (x_test == 0).all(axis=-1).any()                   # the fixture pads with mask_value
    fm = FloatModel(g)
    qm = fm.quantize(x_calib, progress=False)
    mean_q, seq_q, mask_q = qm.output_qparams
    assert mask_q == MASK_QPARAMS and seq_q == qm.input_qparams[0]
    want = fm.predict(x_test)
    got = qm.predict(x_test)
    # the mask agrees exactly with the float op (padding is exactly mask_value there)
    np.testing.assert_array_equal(got[2], want[2])
    # the masked sequence: x quantized, padding exactly 0.0
    assert np.abs(got[1] - want[1]).max() <= 0.5 * seq_q.scale * (1 + 1e-6)
    assert (got[1][want[2] == 0] == 0).all()
    # the mean: the input's rounding and one requantization
    assert np.abs(got[0] - want[0]).max() <= mean_tolerance(seq_q, mean_q)
    codes = qm.predict(x_test, output="int8")
    for a, b in zip(codes, qm.predict_oracle(x_test)):
        np.testing.assert_array_equal(a, b)
    for i in (0, 100, 359):
        for a, b in zip(qm.predict(x_test[i:i + 1], output="int8"), codes):
            np.testing.assert_array_equal(a[0], b[i])
    for n in g.nodes:
        assert op_for(n).int8_unsupported(n) is None
    (bound,) = [b for b in qm.overflow_bounds() if b.op == "masked_mean"]
    assert bound.proven and int(bound.worst.max()) >= 255 * 256 * x_test.shape[1]
    checked = qm.predict(x_test[:20], output="int8", check_overflow=True)
    for a, b in zip(checked, codes):
        np.testing.assert_array_equal(a, b[:20])


def _masking_graph(mask_value, steps=5, features=3):
    nodes = [Node("mask", "masking", ["x"], ["seq", "seq_mask"], {"mask_value": mask_value},
                  layer="mask", keras_class="Masking"),
             Node("gap", "masked_mean", ["seq", "seq_mask"], ["gap"], {"keepdims": True},
                  layer="gap", keras_class="GlobalAveragePooling1D")]
    g = Graph(["x"], ["gap", "seq_mask"], nodes, name="masking_graph")
    g.infer_shapes([(steps, features)])
    return g


def test_masking_equal_means_same_code_and_empty_rows_give_zero():
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 2, (40, 5, 3)).astype(np.float32)
    x[rng.random((40, 5)) < 0.3] = -1.5                        # padding written as mask_value
    x[0] = -1.5                                                # a row with every step padded
    g = _masking_graph(-1.5)
    fm = FloatModel(g)
    # (calibration refuses NaN outputs: it gets the rows with a present step)
    qm = fm.quantize(x[1:], progress=False)
    (want_mean, want_mask), (got_mean, got_mask) = fm.predict(x), qm.predict(x)
    assert got_mean.shape == want_mean.shape == (40, 1, 3)    # keepdims
    np.testing.assert_array_equal(got_mask, want_mask)
    assert np.isnan(want_mean[0]).all() and (got_mean[0] == 0).all()   # NaN in float: 0.0
    assert np.abs(got_mean[1:] - want_mean[1:]).max() <= mean_tolerance(qm.input_qparams[0],
                                                                         qm.output_qparams[0])
    # within half a step of mask_value is padding in int8, not in float (documented)
    x_qp = qm.input_qparams[0]
    center = (x_qp.code_of(-1.5) - x_qp.zero_point) * x_qp.scale      # the code's own value
    value = np.float32((center - 1.5) / 2) if abs(center + 1.5) > 1e-6 else np.float32(center + x_qp.scale / 4)
    assert value != np.float32(-1.5) and x_qp.quantize(value) == x_qp.code_of(-1.5)
    near = x[1:2].copy()
    near[0, 2] = value
    assert fm.predict(near)[1][0, 2] == 1 and qm.predict(near)[1][0, 2] == 0


def test_token_mask_and_merged_masks():
    """Embedding(mask_zero=True) -> token_mask; Masking of the embedded sequence; the two masks
    merged by a minimum (tf.keras 2) and a maximum (Keras 3) -> masked means."""
    rng = np.random.default_rng(5)
    table = rng.normal(size=(30, 4))
    table[7] = 0.0                                             # a row Masking takes for padding
    nodes = [Node("emb", "embedding", ["ids"], ["emb"], {}, {"table": table}, layer="emb",
                  keras_class="Embedding"),
             Node("emb/mask", "token_mask", ["ids"], ["tok"], layer="emb", keras_class="Embedding"),
             Node("m", "masking", ["emb"], ["seq", "seq_mask"], {"mask_value": 0.0}, layer="m",
                  keras_class="Masking")]
    outs = ["tok"]
    for kind in ("minimum", "maximum"):
        nodes += [Node(f"and_{kind}", "binary", ["tok", "seq_mask"], [kind], {"kind": kind},
                       layer=f"merge_{kind}", keras_class=kind.capitalize()),
                  Node(f"gap_{kind}", "masked_mean", ["seq", kind], [f"gap_{kind}"],
                       {"keepdims": False}, layer=f"gap_{kind}", keras_class="GlobalAveragePooling1D")]
        outs += [kind, f"gap_{kind}"]
    g = Graph(["ids"], outs, nodes, name="mask_merge")
    g.infer_shapes([(9,)])
    ids = rng.integers(0, 30, (64, 9)).astype(np.float32)
    ids[rng.random((64, 9)) < 0.3] = 0
    ids[:, 4] = 7
    fm = FloatModel(g)
    qm = fm.quantize(ids, progress=False)
    assert qm.input_qparams == [IDS_QPARAMS]
    specs = dict(zip(outs, qm.output_qparams))
    for t in ("tok", "minimum", "maximum"):
        assert specs[t] == MASK_QPARAMS, t
    want, got = fm.predict(ids), qm.predict(ids)
    codes = qm.predict(ids, output="int8")
    for t, w, q, c in zip(outs, want, got, codes):
        if t in ("tok", "minimum", "maximum"):
            np.testing.assert_array_equal(q, w)               # exact 0/1
            assert set(np.unique(c)) <= {0, 1}
        else:
            seq_qp = qm.tensors["seq"].qparams
            assert np.abs(q - w).max() <= mean_tolerance(seq_qp, specs[t]), t
    for a, b in zip(codes, qm.predict_oracle(ids)):
        np.testing.assert_array_equal(a, b)
    for n in nodes:
        assert op_for(n).int8_unsupported(n) is None


def test_fxn_round_trip_of_the_sequence_steps(tmp_path):
    rng = np.random.default_rng(8)
    nodes = [Node("emb", "embedding", ["ids"], ["emb"], {}, {"table": rng.normal(size=(40, 5))},
                  layer="emb", keras_class="Embedding"),
             Node("emb/mask", "token_mask", ["ids"], ["tok"], layer="emb", keras_class="Embedding"),
             Node("m", "masking", ["emb"], ["seq", "seq_mask"], {"mask_value": 0.0}, layer="m",
                  keras_class="Masking"),
             Node("both", "binary", ["tok", "seq_mask"], ["both"], {"kind": "minimum"},
                  layer="both", keras_class="Multiply"),
             Node("gap", "masked_mean", ["seq", "both"], ["gap"], {"keepdims": False},
                  layer="gap", keras_class="GlobalAveragePooling1D")]
    g = Graph(["ids"], ["gap", "seq"], nodes, name="seq_fxn")
    g.infer_shapes([(7,)])
    ids = rng.integers(0, 40, (50, 7)).astype(np.float32)
    ids[rng.random((50, 7)) < 0.3] = 0
    qm = FloatModel(g).quantize(ids, progress=False)
    path = tmp_path / "seq.fxn"
    qm.save(str(path))
    back = load_fxn(str(path))
    assert [type(s).__name__ for s in back.steps] == [type(s).__name__ for s in qm.steps]
    assert {"EmbeddingStep", "TokenMaskStep", "MaskingStep", "MaskedMeanStep"} <= \
        {type(s).__name__ for s in back.steps}
    for a, b in zip(back.predict(ids, output="int8"), qm.predict(ids, output="int8")):
        np.testing.assert_array_equal(a, b)
    bad = ids[:2].copy()
    bad[0, 0] = 41
    with pytest.raises(InputError, match="'emb'.*token id 41 "):
        back.predict(bad)


# ---- the whole fixtures -------------------------------------------------------------------------

FULL = [f"{n}_{w}" for n in ("rnn_text", "rnn_variants") for w in WRITERS]
OURS = {"embedding", "masking", "token_mask", "masked_mean"}


@pytest.mark.parametrize("name", FULL)
def test_whole_fixtures_quantize(name):
    """With the int8 recurrent op, nothing in the Embedding and Masking fixtures is refused."""
    g = fixnet.load(fixture_path(name)).graph
    assert {n.op for n in g.nodes} & OURS
    refuse_unquantizable(g)                     # raises UnsupportedLayerError naming any layer


@pytest.mark.parametrize("writer", WRITERS)
def test_whole_text_fixture_int8(writer):
    """The Embedding + GRU fixture in int8 (its Embedding folded into the GRU): kernels equal
    to the oracle, top-1 agreeing with Keras float."""
    name = f"rnn_text_{writer}"
    fm = fixnet.load(fixture_path(name))
    d = fixture_data(name)
    qm = fm.quantize(d["x_calib"].astype(np.float32), progress=False)
    x = d["x_test"].astype(np.float32)
    codes = qm.predict(x, output="int8")
    np.testing.assert_array_equal(codes, qm.predict_oracle(x))
    agree = np.mean(qm.predict(x).argmax(-1) == d["keras_float"].argmax(-1))
    assert agree >= 0.9, agree


def test_masked_mean_longer_than_the_kernel_averages_names_the_layer():
    """An input of any length can bring a sequence longer than the int8 masked mean takes
    (MASKED_MEAN_MAX_STEPS): an InputShapeError naming the layer, from the kernels and from
    the oracle alike."""
    from fixnet.graph import Graph, Node
    from fixnet.quant.quantizer import quantize_graph
    nodes = [Node("mask", "masking", ["x"], ["y", "m"], {"mask_value": 0.0}, layer="mask",
                  keras_class="Masking"),
             Node("gap", "masked_mean", ["y", "m"], ["out"], {}, layer="gap",
                  keras_class="GlobalAveragePooling1D")]
    g = Graph(["x"], ["out"], nodes, name="long")
    g.infer_shapes([(None, 4)])
    rng = np.random.default_rng(0)
    qm = quantize_graph(g, rng.normal(size=(16, 8, 4)), progress=False)
    x = rng.normal(size=(1, oracle.MASKED_MEAN_MAX_STEPS + 1, 4)).astype(np.float32)
    with pytest.raises(fixnet.InputShapeError, match="'gap'.*at most 32767"):
        qm.predict(x)
    with pytest.raises(fixnet.InputShapeError, match="'gap'"):
        qm.predict_oracle(x)
    ok = x[:, :oracle.MASKED_MEAN_MAX_STEPS]
    np.testing.assert_array_equal(qm.predict(ok, output="int8"), qm.predict_oracle(ok))
