"""The data-movement and lookup ops on int16 tensors: upsample (nearest, bilinear), crop,
zero_insert, embedding, masking, masked_mean, token_mask.

Kernels (fixnet/_kernels/_embedding.pyx, _mask.pyx: baseline-only modules, every build runs
them; the resize steps are NumPy, the same on every build; token_mask is the int16 lookup of
_elementwise, tested per build in test_kernels.py) bit-exact with their oracles on int16
arrays, their entry checks (int16 zero points 0, one activation type per call); each step
quantized as an int16 node, run on int16 buffers, against its oracle and the float op; whole
models with activations="int16": the upsampling fixtures and sub-graphs of the text and
masking fixtures run bit-exactly with the oracle and under checked execution, save and load,
and are at least as accurate as int8.
"""
import copy

import numpy as np
import pytest

import fixnet
from fixnet import oracle
from fixnet._kernels import _embedding, _mask
from fixnet.api import FloatModel
from fixnet.errors import InputError
from fixnet.graph import Graph, Node
from fixnet.metrics import sqnr_db
from fixnet.ops import OPS
from fixnet.ops.embedding import IDS16_QPARAMS, IDS_QPARAMS
from fixnet.ops.mask import MASK16_QPARAMS, MASK_QPARAMS
from fixnet.quant.qparams import QParams
from fixnet.runtime import load_fxn

from conftest import by_index, fixture_data, fixture_path
from test_ops_int16_merge import int16_codes, quantize_node, real_of

QP16 = QParams(float(np.float32(2.0 / 32767)), 0, 16)


# ---- the oracles and steps of the spatial moves ---------------------------------------------

def run_int16_step(node, shape_in, shape_out, x):
    """Quantize ``node`` as an int16 node (input and output QP16), run its step on int16
    buffers and check it against the oracle; returns the output codes."""
    step, _ = quantize_node(node, {"x": shape_in, "y": shape_out}, {"x": QP16, "y": QP16})
    out = np.full((x.shape[0],) + shape_out, 99, np.int16)
    bufs = {"x": x, "y": out}
    step.bind(bufs)()
    (want,) = step.oracle([x])
    assert want.dtype == np.int16
    np.testing.assert_array_equal(out, want.reshape(out.shape))
    return step, out


@pytest.mark.parametrize("rank, size", [(2, (2, 3)), (2, (3, 1)), (1, (1, 4))])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_upsample_int16_step_is_its_oracle_and_the_float_op(rank, size, interpolation):
    rng = np.random.default_rng(sum(size))
    shape_in = (4, 5, 3) if rank == 2 else (6, 3)
    node = Node("up", "upsample", ["x"], ["y"], {"rank": rank, "size": size,
                                                 "interpolation": interpolation})
    shape_out = OPS["upsample"].infer_shapes(node, [shape_in])[0]
    x = int16_codes(rng, (2,) + shape_in)
    x[0, 0] = -32768                                     # the extremes of the type
    x[1, -1] = 32767
    step, out = run_int16_step(node, shape_in, shape_out, x)
    (f,) = OPS["upsample"].run_float(node, [real_of(x, QP16)])
    # nearest moves codes; bilinear rounds its weighted mean once (half a step)
    err = np.abs(real_of(out, QP16) - f).max() / QP16.scale
    assert err <= (0.0 if interpolation == "nearest" else 0.5 + 1e-9), err
    if interpolation == "bilinear":
        bound = step.overflow_bound()
        d = 4 * size[0] * size[1]
        assert bound.proven and int(bound.worst[0]) == 32768 * d + d // 2
    else:
        assert step.overflow_bound() is None


def test_bilinear_int16_refuses_factors_whose_int32_sum_could_wrap():
    node = Node("up", "upsample", ["x"], ["y"], {"rank": 2, "size": (128, 128),
                                                 "interpolation": "bilinear"})
    step, _ = quantize_node(node, {"x": (1, 1, 1), "y": (128, 128, 1)}, {"x": QP16, "y": QP16})
    assert not step.overflow_bound().proven               # 32768 * 65536 >= 2^31
    with pytest.raises(ValueError, match="could wrap"):
        step.bind({"x": np.zeros((1, 1, 1, 1), np.int16), "y": np.zeros((1, 128, 128, 1), np.int16)})
    step.bits = 8                                          # int8: 128.5 * 65536 < 2^31
    assert step.overflow_bound() is None
    step.bind({"x": np.zeros((1, 1, 1, 1), np.int8), "y": np.zeros((1, 128, 128, 1), np.int8)})


@pytest.mark.parametrize("rank", [1, 2])
def test_crop_int16_step_moves_codes(rank):
    rng = np.random.default_rng(rank)
    shape_in = (6, 7, 2) if rank == 2 else (9, 2)
    crops = ((1, 2), (2, 1)) if rank == 2 else ((0, 0), (3, 1))
    node = Node("crop", "crop", ["x"], ["y"], {"rank": rank, "crops": crops})
    shape_out = OPS["crop"].infer_shapes(node, [shape_in])[0]
    x = int16_codes(rng, (2,) + shape_in)
    _, out = run_int16_step(node, shape_in, shape_out, x)
    x4 = x.reshape((2,) + ((1,) if rank == 1 else ()) + shape_in)
    (t, b), (l, r) = crops
    np.testing.assert_array_equal(out.reshape(x4[:, t:x4.shape[1] - b, l:x4.shape[2] - r].shape),
                                  x4[:, t:x4.shape[1] - b, l:x4.shape[2] - r])


@pytest.mark.parametrize("rank, strides", [(2, (2, 3)), (1, (1, 2))])
def test_zero_insert_int16_fills_with_zero(rank, strides):
    rng = np.random.default_rng(7)
    shape_in = (3, 4, 2) if rank == 2 else (5, 2)
    node = Node("zi", "zero_insert", ["x"], ["y"], {"rank": rank, "strides": strides})
    shape_out = OPS["zero_insert"].infer_shapes(node, [shape_in])[0]
    x = int16_codes(rng, (2,) + shape_in, lo=1)          # no zero among the codes
    step, out = run_int16_step(node, shape_in, shape_out, x)
    assert step.value == 0
    (f,) = OPS["zero_insert"].run_float(node, [real_of(x, QP16)])
    np.testing.assert_array_equal(real_of(out, QP16), f)
    assert np.count_nonzero(out) == x.size


def test_spatial_moves_take_one_type_per_call():
    for op, attrs, out_shape in [("upsample", {"rank": 2, "size": (2, 2)}, (1, 4, 4, 1)),
                                 ("upsample", {"rank": 2, "size": (2, 2),
                                               "interpolation": "bilinear"}, (1, 4, 4, 1)),
                                 ("crop", {"rank": 2, "crops": ((1, 0), (0, 1))}, (1, 1, 1, 1)),
                                 ("zero_insert", {"rank": 2, "strides": (2, 2)}, (1, 3, 3, 1))]:
        node = Node("n", op, ["x"], ["y"], attrs)
        step, _ = quantize_node(node, {"x": (2, 2, 1), "y": out_shape[1:]},
                                {"x": QP16, "y": QP16})
        with pytest.raises(ValueError, match="one activation type"):
            step.bind({"x": np.zeros((1, 2, 2, 1), np.int16), "y": np.zeros(out_shape, np.int8)})
    with pytest.raises(ValueError, match="zero point is 0"):
        oracle.zero_insert(np.zeros((1, 2, 2, 1), np.int16), 2, 2, 3)
    zi = Node("n", "zero_insert", ["x"], ["y"], {"rank": 2, "strides": (2, 2)})
    step, _ = quantize_node(zi, {"x": (2, 2, 1), "y": (3, 3, 1)}, {"x": QParams(0.1, 3),
                                                                   "y": QParams(0.1, 3)}, bits=8)
    with pytest.raises(ValueError, match="zero point is 0"):
        step.bind({"x": np.zeros((1, 2, 2, 1), np.int16), "y": np.zeros((1, 3, 3, 1), np.int16)})


# ---- embedding and the mask kernels against their oracles ----------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_embedding_int16_kernel_is_the_oracle(seed):
    rng = np.random.default_rng(seed)
    vocab, dim, n = int(rng.integers(1, 300)), int(rng.integers(0, 20)), int(rng.integers(0, 40))
    table = int16_codes(rng, (vocab, dim))
    ids = rng.integers(0, vocab, n).astype(np.int16)
    out = np.full((n, dim), 99, np.int16)
    assert _embedding.embedding(ids, table, 0, out) == -1
    np.testing.assert_array_equal(out, oracle.embedding(ids, 0, table))
    if n:
        bad = ids.copy()
        k = int(rng.integers(n))
        bad[k] = vocab if seed % 2 else -1
        assert _embedding.embedding(bad, table, 0, out) == int(np.flatnonzero(
            (bad < 0) | (bad >= vocab))[0])
        np.testing.assert_array_equal(oracle.embedding_bad_ids(bad, 0, vocab), [bad[k]])


@pytest.mark.parametrize("seed", range(12))
def test_masking_int16_kernel_is_the_oracle(seed):
    rng = np.random.default_rng(seed)
    n, t, f = int(rng.integers(0, 4)), int(rng.integers(0, 12)), int(rng.integers(0, 9))
    mask_code = int(rng.integers(-32768, 32768))
    x = int16_codes(rng, (n, t, f))
    pad = rng.random((n, t)) < 0.4
    x[pad] = mask_code
    if f:
        x[(rng.random((n, t)) < 0.3) & ~pad, 0] = mask_code ^ 1
    y, m = np.full_like(x, 99), np.full((n, t), 99, np.int16)
    _mask.masking(x, mask_code, 0, y, m)
    want_y, want_m = oracle.masking(x, mask_code, 0)
    assert want_y.dtype == want_m.dtype == np.int16
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(m, want_m)
    if f:
        np.testing.assert_array_equal(m[pad], 0)
        assert (y[pad] == 0).all()


@pytest.mark.parametrize("seed", range(16))
def test_masked_mean_int16_kernel_is_the_oracle(seed):
    rng = np.random.default_rng(seed)
    n, t, c = int(rng.integers(0, 4)), int(rng.integers(0, 40)), int(rng.integers(0, 17))
    x = int16_codes(rng, (n, t, c))
    if seed % 4 == 0:
        x[:] = -32768 if seed % 8 else 32767               # the largest sums
    mask = (rng.random((n, t)) < 0.7).astype(np.int16)
    m0, shift = int(rng.integers(2 ** 30, 2 ** 31)), int(rng.integers(-31, 8))
    out = np.full((n, c), 99, np.int16)
    _mask.masked_mean(x, mask, 0, m0, shift, 0, out)
    want = oracle.masked_mean(x, mask, 0, m0, shift, 0)
    assert want.dtype == np.int16
    np.testing.assert_array_equal(out, want)


def test_masked_mean_int16_longest_sequence_keeps_its_sum_in_int32():
    t = oracle.MASKED_MEAN_MAX_STEPS
    x = np.full((1, t, 2), -32768, np.int16)
    x[0, :, 1] = 32767
    mask = np.ones((1, t), np.int16)
    m0, shift = oracle.quantize_multiplier(1.0 / 256)
    out = np.zeros((1, 2), np.int16)
    _mask.masked_mean(x, mask, 0, m0, shift, 0, out)
    np.testing.assert_array_equal(out, [[-32768, 32767]])
    np.testing.assert_array_equal(out, oracle.masked_mean(x, mask, 0, m0, shift, 0))
    s, _ = oracle.masked_mean_sums(x, mask, 0)
    assert np.abs(s).max() == 32768 * t < 2 ** 31


@pytest.mark.parametrize("call, err, match", [
    (lambda: _embedding.embedding(np.zeros(2, np.int16), np.zeros((3, 4), np.int16), -128,
                                  np.zeros((2, 4), np.int16)), ValueError, "zero point is 0"),
    (lambda: _embedding.embedding(np.zeros(2, np.int8), np.zeros((3, 4), np.int16), 0,
                                  np.zeros((2, 4), np.int16)), ValueError, "one activation type"),
    (lambda: _mask.masking(np.zeros((1, 2, 3), np.int16), 0, 5, np.zeros((1, 2, 3), np.int16),
                           np.zeros((1, 2), np.int16)), ValueError, "zero point is 0"),
    (lambda: _mask.masking(np.zeros((1, 2, 3), np.int16), 40000, 0,
                           np.zeros((1, 2, 3), np.int16), np.zeros((1, 2), np.int16)),
     ValueError, "int16 range"),
    (lambda: _mask.masking(np.zeros((1, 2, 3), np.int16), 0, 0, np.zeros((1, 2, 3), np.int16),
                           np.zeros((1, 2), np.int8)), ValueError, "one activation type"),
    (lambda: _mask.masked_mean(np.zeros((1, 2, 3), np.int16), np.zeros((1, 2), np.int16), 0,
                               2 ** 30, 0, 1, np.zeros((1, 3), np.int16)), ValueError,
     "zero point is 0"),
    (lambda: _mask.masked_mean(np.zeros((1, 2, 3), np.int16), np.zeros((1, 2), np.int8), 0,
                               2 ** 30, 0, 0, np.zeros((1, 3), np.int16)), ValueError,
     "one activation type"),
    (lambda: _mask.masked_mean(None, np.zeros((1, 2), np.int16), 0, 2 ** 30, 0, 0,
                               np.zeros((1, 3), np.int16)), TypeError, "not None"),
    (lambda: oracle.embedding(np.zeros(2, np.int8), 0, np.zeros((3, 4), np.int16)), TypeError,
     "one activation type"),
    (lambda: oracle.masked_mean(np.zeros((1, 2, 3), np.int16), np.zeros((1, 2), np.int8), 0,
                                2 ** 30, 0, 0), TypeError, "one activation type"),
    (lambda: oracle.masking(np.zeros((1, 2, 3), np.int16), 0, 1), ValueError, "zero point is 0"),
])
def test_int16_entry_checks(call, err, match):
    with pytest.raises(err, match=match):
        call()


# ---- whole models ----------------------------------------------------------------------------

def as_list(v):
    return v if isinstance(v, list) else [v]


def check_int16_model(qm, x, tmp_path, ops):
    """qm runs its int16 steps of ``ops`` bit-exactly with the oracle, under checked execution
    (the same result), with a proven overflow report, and the same after a .fxn round trip."""
    ran = {s.op for s in qm.steps if s.bits == 16}
    assert set(ops) <= ran, (ops, ran)
    got, codes = as_list(qm.predict(x)), as_list(qm.predict_oracle(x))
    checked = as_list(qm.predict(x, check_overflow=True))
    for t, g, o, c in zip(qm.outputs, got, codes, checked):
        qp = qm.tensors[t].qparams
        assert o.dtype == qp.dtype
        np.testing.assert_array_equal(g, qp.dequantize(o))
        np.testing.assert_array_equal(c, g)
    assert qm.overflow_report().proven
    path = tmp_path / "model.fxn"
    qm.save(str(path))
    back = load_fxn(str(path))
    assert [s.bits for s in back.steps] == [s.bits for s in qm.steps]
    for a, b in zip(as_list(back.predict(x)), got):
        np.testing.assert_array_equal(a, b)
    return got


@pytest.mark.parametrize("name", ["layers_upsampling_k3", "layers_upsampling1d_k3"])
def test_upsampling_fixture_int16(name, tmp_path):
    d = fixture_data(name)
    x_calib = d["x_calib"] if "x_calib" in d else d["x_calib_0"]
    x_test = (d["x_test"] if "x_test" in d else d["x_test_0"])[:32]
    refs = by_index(d, "keras_float")
    fm = fixnet.load(fixture_path(name))
    q8 = fm.quantize(x_calib, progress=False)
    q16 = fm.quantize(x_calib, activations="int16", progress=False)
    assert not q16.kept_int8 and all(s.bits == 16 for s in q16.steps)
    ops = {"upsample_nearest", "crop", "zero_insert"} | (
        {"upsample_bilinear"} if name == "layers_upsampling_k3" else set())
    got16 = check_int16_model(q16, x_test, tmp_path, ops)
    got8 = as_list(q8.predict(x_test))
    for i, (a, b) in enumerate(zip(got8, got16)):
        s8, s16 = sqnr_db(refs[i][:32], a), sqnr_db(refs[i][:32], b)
        assert s16 >= s8, (i, s8, s16)


def _text_embedding():
    g = fixnet.load(fixture_path("rnn_text_k3")).graph
    nodes = [copy.deepcopy(n) for n in g.nodes if n.op == "embedding"]
    sub = Graph(list(g.inputs), [nodes[0].outputs[0]], nodes, name="emb_sub", source=g.source)
    sub.infer_shapes([g.shapes[t] for t in g.inputs])
    return sub


def test_embedding_of_the_text_fixture_int16(tmp_path):
    d = fixture_data("rnn_text_k3")
    x_calib, x_test = d["x_calib"].astype(np.float32), d["x_test"].astype(np.float32)[:64]
    fm = FloatModel(_text_embedding())
    q8 = fm.quantize(x_calib, progress=False)
    q16 = fm.quantize(x_calib, activations="int16", progress=False)
    # the ids stay int8 codes (ids 0..255), converted exactly to int16 ids for the lookup
    assert q16.input_qparams == [IDS_QPARAMS] and q16.output_qparams[0].bits == 16
    (convert,) = [s for s in q16.steps if s.op == "rescale"]
    assert q16.tensors[convert.outputs[0]].qparams == IDS16_QPARAMS
    got = check_int16_model(q16, x_test, tmp_path, {"embedding"})[0]
    want = fm.predict(x_test)
    y_qp = q16.output_qparams[0]
    # half an int16 step, and the float32 rounding of the dequantized output
    assert np.abs(got - want).max() <= 0.5 * y_qp.scale + 1e-6
    assert sqnr_db(want, got) > sqnr_db(want, q8.predict(x_test)) + 30
    # int8 and uint8 id inputs: the same codes
    codes = q16.predict(x_test, output="int16")
    np.testing.assert_array_equal(q16.predict(x_test.astype(np.uint8), output="int16"), codes)
    bad = x_test[:2].copy()
    bad[0, 0] = 255
    if fm.graph.nodes[0].weights["table"].shape[0] <= 255:
        with pytest.raises(InputError, match="token id 255 "):
            q16.predict(bad)


def _mask_graph():
    """Embedding(mask_zero=True) -> token_mask; Masking of the embedded sequence; the masks
    merged by a minimum -> masked mean (test_sequence_ops_int8's graph)."""
    rng = np.random.default_rng(5)
    table = rng.normal(size=(30, 4))
    table[7] = 0.0                                             # a row Masking takes for padding
    nodes = [Node("emb", "embedding", ["ids"], ["emb"], {}, {"table": table}, layer="emb",
                  keras_class="Embedding"),
             Node("emb/mask", "token_mask", ["ids"], ["tok"], layer="emb", keras_class="Embedding"),
             Node("m", "masking", ["emb"], ["seq", "seq_mask"], {"mask_value": 0.0}, layer="m",
                  keras_class="Masking"),
             Node("and", "binary", ["tok", "seq_mask"], ["both"], {"kind": "minimum"},
                  layer="and", keras_class="Minimum"),
             Node("gap", "masked_mean", ["seq", "both"], ["gap"], {"keepdims": False},
                  layer="gap", keras_class="GlobalAveragePooling1D")]
    g = Graph(["ids"], ["gap", "both", "seq"], nodes, name="mask_merge16")
    g.infer_shapes([(9,)])
    ids = rng.integers(0, 30, (64, 9)).astype(np.float32)
    ids[rng.random((64, 9)) < 0.3] = 0
    ids[:, 4] = 7
    return g, ids


def test_token_mask_masking_and_masked_mean_int16(tmp_path):
    g, ids = _mask_graph()
    fm = FloatModel(g)
    q8 = fm.quantize(ids, progress=False)
    q16 = fm.quantize(ids, activations="int16", progress=False)
    assert all(s.bits == 16 for s in q16.steps if s.op != "rescale")
    specs = dict(zip(q16.outputs, q16.output_qparams))
    assert specs["both"] == MASK16_QPARAMS and q16.tensors["tok"].qparams == MASK16_QPARAMS
    assert q16.tensors["seq_mask"].qparams == MASK16_QPARAMS
    got = check_int16_model(q16, ids, tmp_path, {"embedding", "token_mask", "masking",
                                                  "masked_mean", "minimum"})
    want = fm.predict(ids)
    np.testing.assert_array_equal(got[1], want[1])              # the mask: exact 0/1
    assert (got[2][ids == 7] == 0).all()                         # Masking's padding: 0.0
    for w, a, b in zip(want, q8.predict(ids), got):
        assert sqnr_db(w, b) >= sqnr_db(w, a)
    x_qp, y_qp = q16.tensors["seq"].qparams, specs["gap"]
    assert np.abs(got[0] - want[0]).max() <= 0.5 * x_qp.scale * (1 + 2.0 ** -8) + y_qp.scale


def test_int16_mask_meets_int8_readers_as_an_int8_mask():
    """Masking and token_mask int16, the merge and the masked mean int8: the int16 masks are
    converted to the int8 mask qparams exactly (not to their calibrated range), and the model
    gives the all-int8 model's mask and a mean as close to the float one."""
    g, ids = _mask_graph()
    fm = FloatModel(g)
    qm = fm.quantize(ids, progress=False, activations="int16",
                     overrides={"and": {"activations": "int8"}, "gap": {"activations": "int8"}})
    bits = {s.layer: s.bits for s in qm.steps if s.op != "rescale"}
    assert bits == {"emb": 16, "m": 16, "and": 8, "gap": 8}
    to8 = [s for s in qm.steps if s.op == "rescale" and s.bits == 8]
    assert {qm.tensors[s.outputs[0]].qparams for s in to8 if s.inputs[0] in ("tok", "seq_mask")} \
        == {MASK_QPARAMS}
    want, got = fm.predict(ids), qm.predict(ids)
    np.testing.assert_array_equal(got[1], want[1])
    for t, o, g in zip(qm.outputs, qm.predict_oracle(ids), got):
        np.testing.assert_array_equal(qm.tensors[t].qparams.dequantize(o), g)


def test_masking_fixture_int16_beside_int8_recurrent_layers(tmp_path):
    """rnn_variants_k3 (Masking -> recurrent layers, a masked GlobalAveragePooling1D) with
    activations="int16": masking and the masked mean run int16, the recurrent layers int8
    reading the int16 mask converted to an int8 mask; bit-exact with the oracle, checked,
    saved and loaded, every output at least as accurate as int8."""
    d = fixture_data("rnn_variants_k3")
    fm = fixnet.load(fixture_path("rnn_variants_k3"))
    q8 = fm.quantize(d["x_calib"][:64], progress=False)
    # the recurrent layers run int16 too under activations="int16": kept int8 here, by
    # override, so that they read the int16 mask converted to int8
    every16 = fm.quantize(d["x_calib"][:64], activations="int16", progress=False)
    rnn_layers = {s.layer for s in every16.steps if s.op == "rnn"}
    q16 = fm.quantize(d["x_calib"][:64], activations="int16", progress=False,
                      overrides={name: {"activations": "int8"} for name in rnn_layers})
    masks = [s for s in q16.steps if s.op == "rescale" and s.bits == 8
             and q16.tensors[s.inputs[0]].qparams == MASK16_QPARAMS]
    assert masks and all(q16.tensors[s.outputs[0]].qparams == MASK_QPARAMS for s in masks)
    x = d["x_test"][:32]
    got = check_int16_model(q16, x, tmp_path, {"masking", "masked_mean"})
    refs = by_index(d, "keras_float")
    for i, (a, b) in enumerate(zip(q8.predict(x), got)):
        assert sqnr_db(refs[i][:32], b) >= sqnr_db(refs[i][:32], a), i
