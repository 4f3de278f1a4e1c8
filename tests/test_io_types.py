"""Input and output types (float32, int8, uint8 in; float32, int8, uint8 out) and the
dequantized weights."""
import numpy as np
import pytest

import fixnet
from conftest import fixture_data, fixture_path


@pytest.fixture(scope="module")
def cnn():
    d = fixture_data("cnn_digits_tfk2")
    fm = fixnet.load(fixture_path("cnn_digits_tfk2"))
    return d, fm, fm.quantize(d["x_calib"])


def test_uint8_input_is_int8_codes_plus_128(cnn):
    d, _, qm = cnn
    x = d["x_test"][:20]
    q = qm.input_qparams[0].quantize(x)
    u = (q.astype(np.int16) + 128).astype(np.uint8)
    assert np.array_equal(qm.predict(u, output="int8"), qm.predict(q, output="int8"))
    assert np.array_equal(qm.predict(u), qm.predict(x))


def test_output_types_agree(cnn):
    d, _, qm = cnn
    x = d["x_test"][:20]
    i8 = qm.predict(x, output="int8")
    u8 = qm.predict(x, output="uint8")
    f32 = qm.predict(x)
    assert i8.dtype == np.int8 and u8.dtype == np.uint8 and f32.dtype == np.float32
    assert np.array_equal(u8.astype(np.int16) - 128, i8)
    qp = qm.output_qparams[0]
    assert np.array_equal(f32, ((i8.astype(np.float64) - qp.zero_point) * qp.scale).astype(np.float32))
    assert np.array_equal(qm.predict(x, output="uint8", check_overflow=True), u8)


def test_dequantized_weights_are_the_float_weights_to_within_half_a_step(cnn):
    # with plain rounding and no clipping, each reconstructed weight is the float weight to
    # within half of its channel's step max|w_c| / 127 (computed here from the float weights)
    d, fm, _ = cnn
    qm = fm.quantize(d["x_calib"], bias_correction=False, weight_rounding="nearest")
    deq = qm.dequantized_weights()
    nodes = {n.name: n for n in qm.float_graph.nodes}
    assert len(deq) >= 4
    for name, w in deq.items():
        ref = nodes[name].weights["kernel"].astype(np.float64)
        assert w["kernel"].shape == ref.shape
        flat = ref.reshape(-1, ref.shape[-1])                 # output channel last (Keras)
        step = np.abs(flat).max(axis=0) / 127
        err = np.abs(w["kernel"].reshape(flat.shape) - flat)
        assert np.all(err <= step / 2 * (1 + 1e-6) + 1e-7), name
        b = nodes[name].weights["bias"]
        assert np.abs(w["bias"] - b).max() <= 1e-3 * max(np.abs(b).max(), 1.0), name


# ---- Rescaling at the input, folded into the input quantization ---------------------------
def _rescaled_cnn(scale, offset, rng):
    # Rescaling -> Conv2D(same): the affine cannot move into the conv (its zero padding would
    # then pad with the wrong value), so without the fold it would be a step of its own
    from fixnet.graph import Graph, Node
    kernel, bias = rng.normal(0, 0.3, size=(3, 3, 3, 4)), rng.normal(0, 0.1, size=4)
    conv = {"rank": 2, "kernel_size": (3, 3), "strides": (1, 1), "dilation": (1, 1), "padding": "same",
            "groups": 1, "clamp": (0.0, None)}
    nodes = [Node("rescaling", "affine", ["pixels"], ["r"], {"clamp": None},
                  {"scale": np.full(3, scale), "offset": np.full(3, offset)}, "rescaling", "Rescaling"),
             Node("c", "conv2d", ["r"], ["y"], conv, {"kernel": kernel, "bias": bias}, "c", "Conv2D")]
    return Graph(["pixels"], ["y"], nodes, {"pixels": (5, 4, 3), "r": (5, 4, 3), "y": (5, 4, 4)})


@pytest.mark.parametrize("scale, offset, folds", [
    (1 / 255, 0.0, True),              # Rescaling(1/255): pixel codes are y's codes
    (1 / 255, -1.0, True),             # an offset of whole steps of y folds too
    (1 / 127.5, -1.0, False),          # -127.5 steps: the input affine runs as a step
    (-1 / 255, 1.0, False),            # a negative scale flips the code order
])
def test_rescaling_at_the_input_folds_into_the_input_quantization(scale, offset, folds, tmp_path):
    from fixnet import reference
    from fixnet.ops.reshape import AliasStep
    from fixnet.quant.quantizer import quantize_graph
    rng = np.random.default_rng(3)
    g = _rescaled_cnn(scale, offset, rng)
    pixels = rng.integers(0, 256, size=(300, 5, 4, 3)).astype(np.float32)
    qm = quantize_graph(g, pixels, progress=False, weight_rounding="nearest")
    steps = {s.name: s for s in qm.steps}
    assert isinstance(steps["rescaling"], AliasStep) == folds
    ref = reference.run(g, [pixels])[0]
    out = qm.predict(pixels)
    err = np.abs(out - ref).max()
    assert err <= 4 * qm.output_qparams[0].scale + 0.02 * np.abs(ref).max(), err
    if folds:
        # camera pixels as uint8 are the model's input codes + 128: no arithmetic before layer 1
        assert qm.input_qparams[0].scale == 1.0 and qm.input_qparams[0].zero_point == -128
        u8 = pixels.astype(np.uint8)
        np.testing.assert_array_equal(qm.predict(u8, output="int8"), qm.predict(pixels, output="int8"))
        r = qm.tensors["r"].qparams
        assert r.scale == pytest.approx(scale) and r.dequantize(np.int8(-128)) == pytest.approx(offset)
        np.testing.assert_array_equal(qm.predict(u8, output="int8"), qm.predict_oracle(u8))
    qm.save(tmp_path / "m.fxn")
    np.testing.assert_array_equal(fixnet.load(tmp_path / "m.fxn").predict(pixels, output="int8"),
                                  qm.predict(pixels, output="int8"))
