"""Weights of 16 levels as int8 codes (fixnet/quant/codebook.py, qparams' weight options), their
4-bit storage in .fxn files (fixnet/fxn/palette.py), and the report comparing the options.
A whole model takes an option as ``quantize(..., weights=option)``."""
import json
import os
import re

import numpy as np
import pytest

import fixnet
from fixnet import fxn, layouts
from fixnet.errors import ModelFileError
from fixnet.fxn.palette import MAX_CODES, expand_palette, palette_form, stored_shape
from fixnet.quant import codebook
from fixnet.quant.qparams import (WEIGHT_MAX, WEIGHT_OPTIONS, QParams, quantize_channels, quantize_weights,
                                  weight_codes)
from fixnet.passes import optimize
from fixnet.report import weight_options
from fixnet.runtime import load_fxn
from conftest import fixture_data, fixture_path, sqnr_db
import fxn_files

# the convnet fixtures of issue 19's "done when" (MobileNetV2-style, ResNet-style, DS-CNN)
CONVNETS = ("mobilenetv2_k3", "mobilenet_small_k3", "resnet_small_k3", "kws_dscnn_k3")
SIZE_RATIO_BAR = 0.55            # a codebook16 .fxn against the int8 .fxn of the same model


def heavy_tailed_rows(seed, shape):
    return np.random.default_rng(seed).standard_t(4, size=shape)


# ---- codebook and int4 codes -----------------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 288), (8, 9), (3, 2000), (5, 1)])
def test_codebooks_use_at_most_16_codes_on_the_grid(shape):
    w = heavy_tailed_rows(1, shape)
    for per_channel in (True, False):
        layer, scale = weight_codes(w, per_channel, "codebook16")       # one table per layer
        rows, scale_r = weight_codes(w, per_channel, "codebook16-channel")
        np.testing.assert_array_equal(scale, scale_r)
        absmax = np.abs(w).max(axis=1) if per_channel else np.abs(w).max()
        np.testing.assert_allclose(scale, absmax / 126 + 0 * scale)
        for codes in (layer, rows):
            assert codes.dtype == np.int8 and np.abs(codes).max() <= codebook.GRID_MAX
        assert len(np.unique(layer)) <= 16
        assert max(len(np.unique(r)) for r in rows) <= 16


def test_zero_weights_stay_zero_in_a_layer_codebook():
    w = heavy_tailed_rows(4, (16, 50))
    w[:, ::3] = 0.0
    codes, _ = weight_codes(w, weights="codebook16")
    assert not codes[:, ::3].any()


def test_a_row_of_few_values_is_kept_exactly():
    """A row with at most 16 distinct grid values is its own best codebook (no error)."""
    u = np.array([[-126, -40, -3, 0, 0, 5, 5, 17, 99, 126] * 3], np.float64)
    np.testing.assert_array_equal(codebook.codebook_codes(u), u)
    np.testing.assert_array_equal(codebook.codebook_codes(u, shared=True, keep_zero=True), u)


def test_int4_is_exactly_int4_in_int8_codes():
    w = heavy_tailed_rows(2, (32, 75))
    codes, scale = weight_codes(w, weights="int4")
    c = codes.astype(np.int64)
    assert np.all(c % codebook.INT4_STEP == 0) and np.abs(c).max() <= 126
    # the same reals as textbook int4: scale4 = max|w| / 7, codes4 = round(w / scale4)
    scale4 = np.abs(w).max(axis=1) / 7
    codes4 = np.clip(np.floor(np.abs(w) / scale4[:, None] + 0.5) * np.sign(w), -7, 7)
    np.testing.assert_array_equal(c // codebook.INT4_STEP, codes4)
    np.testing.assert_allclose(c * scale[:, None], codes4 * scale4[:, None], rtol=1e-12, atol=1e-15)


def test_codes_are_deterministic():
    w = heavy_tailed_rows(3, (40, 144))
    for option in ("codebook16", "int4"):
        a, sa = weight_codes(w, weights=option)
        b, sb = weight_codes(w.copy(), weights=option)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(sa, sb)


@pytest.mark.parametrize("seed", range(4))
def test_codebook_error_is_never_above_int4s(seed):
    """int4's levels are one of the codebooks the search starts from, and Lloyd's steps never
    add error: per row, a codebook's squared error is at most int4's."""
    rng = np.random.default_rng(seed)
    w = np.concatenate([rng.standard_t(3, (20, 200)), rng.normal(size=(20, 200)),
                        rng.uniform(-1, 1, (20, 200)), rng.laplace(size=(20, 200)) ** 3])
    i4, s = weight_codes(w, weights="int4")
    u = w / s[:, None]
    err_i4 = ((u - i4) ** 2).sum(axis=1)
    rows, _ = weight_codes(w, weights="codebook16-channel")
    assert np.all(((u - rows) ** 2).sum(axis=1) <= err_i4 * (1 + 1e-12))
    layer, _ = weight_codes(w, weights="codebook16")        # over the layer, in grid units
    assert ((u - layer) ** 2).sum() <= err_i4.sum() * (1 + 1e-12)
    assert sqnr_db(w, layer * s[:, None]) > sqnr_db(w, i4 * s[:, None]) + 0.5


def test_lloyd_steps_never_increase_the_error():
    rows = np.clip(heavy_tailed_rows(5, (6, 300)) * 20, -126, 126)
    h = codebook.HalfSteps(rows)
    table = codebook.initial_levels(np.sort(rows, axis=1), 16)[0]
    err = h.errors(np.sort(table, axis=1)).sum(axis=1)
    for _ in range(10):
        table = codebook.lloyd(h, table, 1)
        new = h.errors(table).sum(axis=1)
        assert np.all(new <= err + 1e-9)
        err = new
    # the binned errors are the direct ones
    direct = ((rows - codebook.nearest_levels(rows, table)) ** 2).sum(axis=1)
    np.testing.assert_allclose(err, direct, rtol=1e-9)


def test_int8_option_is_todays_quantization_bit_for_bit():
    w = heavy_tailed_rows(6, (16, 27))
    for per_channel in (True, False):
        for clipping in (None, "mse"):
            a = weight_codes(w, per_channel, "int8", clipping)
            b = quantize_weights(w, per_channel, clipping)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
    x, y = QParams(0.02, -5), QParams(0.05, 3)
    bias = np.random.default_rng(0).normal(size=16)
    d = quantize_channels(w, bias, x, y, "layer")
    e = quantize_channels(w, bias, x, y, "layer", weights="int8")
    for f in ("w_q", "scale", "bias", "m0", "shift"):
        np.testing.assert_array_equal(getattr(d, f), getattr(e, f))


def test_unknown_weight_option_is_refused():
    with pytest.raises(ValueError, match="codebook16"):
        weight_codes(np.ones((2, 3)), weights="int2")
    with pytest.raises(ValueError, match="weights must be one of"):
        quantize_channels(np.ones((2, 3)), None, QParams(0.1, 0), QParams(0.1, 0), "l", weights="k")


@pytest.mark.parametrize("option", ["codebook16", "codebook16-channel", "int4"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_quantize_channels_with_a_dead_channel(option, per_channel):
    """A channel whose weights decayed to ~0 while its bias did not is widened as with int8
    weights (per channel: per layer, its scale is the layer's and its bias fits); the others
    keep at most 16 codes (per channel, or in the whole layer)."""
    rng = np.random.default_rng(7)
    w = rng.normal(size=(8, 3, 3, 4))
    w[5] = 1e-34
    bias = rng.normal(size=8)
    bias[5] = 0.5
    x, y = QParams(0.02, -5), QParams(0.05, 3)
    cq = quantize_channels(w, bias, x, y, "conv 'c'", per_channel=per_channel, weights=option)
    assert [wc.channel for wc in cq.widened] == ([5] if per_channel else [])
    codes = cq.w_q.reshape(8, -1)
    # widened: its weights are 0 at its scale; per layer: the layer's level nearest 0
    assert len(np.unique(codes[5])) == 1
    assert abs(int(codes[5, 0])) <= (0 if per_channel or option != "codebook16-channel" else 3)
    if option == "codebook16-channel":
        assert max(len(np.unique(r)) for r in codes) <= 16
    else:
        assert len(np.unique(codes)) <= 16
    if option == "int4":
        assert np.all(codes.astype(np.int64) % 18 == 0)
    assert np.abs(codes).max() <= WEIGHT_MAX


# ---- the .fxn palette ------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis", [((64, 3, 3, 8), 0), ((7, 7, 40), 2), ((1000,), None),
                                       ((33, 71), 0), ((50, 21), 1)])
def test_palette_round_trip(shape, axis):
    rng = np.random.default_rng(8)
    if axis is None:
        a = rng.choice(np.arange(-127, 128, 17), size=shape).astype(np.int8)
    else:                       # 16 codes per slice along axis, 255 in the whole array
        per = rng.integers(-127, 128, size=(shape[axis], 16))
        pick = rng.integers(0, 16, size=(shape[axis],) + tuple(d for i, d in enumerate(shape) if i != axis))
        a = np.moveaxis(np.take_along_axis(per.reshape(per.shape + (1,) * (len(shape) - 1)),
                                           pick[:, None], 1)[:, 0], 0, axis).astype(np.int8)
    form = palette_form(a)
    assert form is not None and form[0] == axis
    stored, t = form[1], form[2]
    assert stored.dtype == np.uint8 and stored.shape == stored_shape(shape, axis, t)
    assert 1 <= t <= MAX_CODES
    b = expand_palette(stored, axis, t, shape)
    assert b.dtype == np.int8 and b.flags.c_contiguous
    np.testing.assert_array_equal(a, b)


def test_arrays_without_a_smaller_palette_form_stay_plain():
    rng = np.random.default_rng(9)
    assert palette_form(rng.integers(-127, 128, (50, 50)).astype(np.int8)) is None   # 255 values
    assert palette_form(np.arange(9, dtype=np.int8).reshape(1, 3, 3)) is None        # too short
    assert palette_form(np.zeros(100, np.int32)) is None


@pytest.fixture(scope="module")
def cnn_models(tmp_path_factory):
    """cnn_digits_k3 quantized with int8 and codebook16 weights, saved."""
    d = fixture_data("cnn_digits_k3")
    fm = fixnet.load(fixture_path("cnn_digits_k3"))
    out = {}
    for option in ("int8", "codebook16"):
        qm = fm.quantize(d["x_calib"][:64], weights=option, progress=False)
        path = tmp_path_factory.mktemp("cb") / f"{option}.fxn"
        qm.save(path)
        out[option] = (qm, str(path))
    return out, d["x_test"][:50]


def test_codebook_model_round_trips_bit_for_bit(cnn_models):
    models, x = cnn_models
    qm, path = models["codebook16"]
    m = fxn.read_manifest(path)
    assert any("palette" in spec for spec in m["arrays"].values())
    loaded = load_fxn(path)
    for output in ("int8", "float32"):
        np.testing.assert_array_equal(qm.predict(x, output=output), loaded.predict(x, output=output))
    for s, r in zip(qm.steps, loaded.steps):
        if getattr(s, "w_q", None) is not None:
            np.testing.assert_array_equal(s.w_q, r.w_q)
            assert r.w_q.dtype == np.int8 and r.w_q.flags.c_contiguous
    assert loaded.overflow_report().proven


def test_codebook_model_is_accurate_and_has_16_codes_per_channel(cnn_models):
    models, x = cnn_models
    qm8, qm16 = models["int8"][0], models["codebook16"][0]
    ref = fixnet.load(fixture_path("cnn_digits_k3")).predict(x)
    assert sqnr_db(ref, qm16.predict(x)) > 15.0
    assert sqnr_db(ref, qm16.predict(x)) <= sqnr_db(ref, qm8.predict(x)) + 1.0
    for s in qm16.steps:
        if getattr(s, "w_q", None) is not None and layouts.has_rows(s.op):
            rows = layouts.flat_rows(layouts.rows_from_step(s.op, s.w_q))
            assert max(len(np.unique(r)) for r in rows) <= 16, s.name


def _weight_bytes(path):
    """Bytes of the steps' weights (w_q) as stored in the file, deflated together."""
    import zlib
    with open(path, "rb") as f:
        _, entries = fxn_files.split(f.read())
    m, segs = fxn_files.segments(entries)
    names = {v["$array"] for s in m["steps"] for k, v in s["state"].items()
             if k == "w_q" and isinstance(v, dict) and "$array" in v}
    return len(zlib.compress(b"".join(segs[n] for n in sorted(names)), 9))


def test_codebook_file_is_smaller(cnn_models):
    """4-bit weights take about half the bytes of int8 ones; the file as a whole keeps what does
    not shrink (per-channel int32 biases and multipliers, the manifest, archive headers)."""
    models, _ = cnn_models
    int8, cb16 = models["int8"][1], models["codebook16"][1]
    assert _weight_bytes(cb16) <= SIZE_RATIO_BAR * _weight_bytes(int8)
    assert os.path.getsize(cb16) <= 0.7 * os.path.getsize(int8)


# ---- damaged palettes ------------------------------------------------------------------------

def _damage(tmp_path, path, edit):
    """Load ``path`` with its first palette array damaged by edit(m, segs, entry, spec)."""
    def fn(m, segs):
        entry = next(e for e, spec in m["arrays"].items() if "palette" in spec)
        edit(m, segs, entry, m["arrays"][entry])
        found.append(entry)
    found = []
    bad = tmp_path / "bad.fxn"
    with open(path, "rb") as f:
        bad.write_bytes(fxn_files.edit_arrays(f.read(), fn))
    with pytest.raises(ModelFileError) as e:
        load_fxn(str(bad))
    assert str(bad) in str(e.value), "the message names the file"
    return found[0], str(e.value)


def _rows(segs, entry, spec):
    p = spec["palette"]
    return np.frombuffer(segs[entry], np.uint8).reshape(
        1 if p["axis"] is None else spec["shape"][p["axis"]], -1)


def _index_beyond(m, segs, entry, spec):
    """One code fewer in the table (the spec agrees): the last code's index is beyond it."""
    segs[entry] = np.delete(_rows(segs, entry, spec), spec["palette"]["codes"] - 1, axis=1).tobytes()
    spec["palette"]["codes"] -= 1


def _stored_short(m, segs, entry, spec):
    segs[entry] = segs[entry][:-1]


def _stored_long(m, segs, entry, spec):
    segs[entry] = segs[entry] + b"\x00"


def _codes_17(m, segs, entry, spec):
    spec["palette"]["codes"] = 17


def _codes_0(m, segs, entry, spec):
    spec["palette"]["codes"] = 0


def _axis_out_of_range(m, segs, entry, spec):
    spec["palette"]["axis"] = len(spec["shape"])


def _palette_extra_key(m, segs, entry, spec):
    spec["palette"]["table"] = "x"


def _palette_removed(m, segs, entry, spec):
    del spec["palette"]


def _palette_on_int32(m, segs, entry, spec):
    spec["dtype"] = "<i4"


def _palette_stored_narrower(m, segs, entry, spec):
    spec["as"] = "|u1"


def _palette_of_a_fill(m, segs, entry, spec):
    spec["fill"] = True


@pytest.mark.parametrize("edit,match", [
    (_index_beyond, "beyond its table"), (_stored_short, "starts at byte|ends at byte"),
    (_stored_long, "starts at byte|ends at byte"), (_codes_17, "palette"), (_codes_0, "palette"),
    (_axis_out_of_range, "palette"), (_palette_extra_key, "palette"),
    (_palette_removed, "starts at byte|ends at byte"), (_palette_on_int32, "palette"),
    (_palette_stored_narrower, "palette|cannot be stored as"), (_palette_of_a_fill, "palette")])
def test_a_damaged_palette_is_a_model_file_error_naming_the_array(cnn_models, tmp_path, edit, match):
    models, _ = cnn_models
    entry, msg = _damage(tmp_path, models["codebook16"][1], edit)
    assert re.search(match, msg), msg
    assert entry in msg, msg


def test_a_nonzero_padding_nibble_is_refused():
    a = np.array([[1, 2, 3], [4, 5, 6]], np.int8)
    stored = np.array([[1, 2, 3, 0x10, 0x02], [4, 5, 6, 0x10, 0x02]], np.uint8)
    np.testing.assert_array_equal(expand_palette(stored, 0, 3, a.shape), a)
    stored[1, 4] = 0x12                                    # row 1's padding nibble is 1
    with pytest.raises(ValueError, match="padding nibble"):
        expand_palette(stored, 0, 3, a.shape)


# ---- the report ------------------------------------------------------------------------------

def test_weight_options_report_on_a_model():
    d = fixture_data("cnn_digits_k3")
    fm = fixnet.load(fixture_path("cnn_digits_k3"))

    def quantize(option):
        return fm.quantize(d["x_calib"][:32], weights=option, progress=False,
                           weight_rounding="nearest")
    rep = weight_options(fm, d["x_test"][:40], quantize)
    assert len(rep) == sum(n.op in layouts.KERNEL_OPS for n in fm.graph.nodes)
    for r in rep:
        assert r["int8_db"] > r["codebook16_db"] >= r["int4_db"], r
        assert r["codebook16-channel_db"] >= r["int4_db"], r
    assert set(rep.model) == set(WEIGHT_OPTIONS)
    assert rep.model["int8"] > rep.model["int4"]
    assert rep.bits["int8"] == 8.0 and 4.0 < rep.bits["codebook16"] < 4.5
    assert rep.bits["codebook16-channel"] > rep.bits["codebook16"]
    text = str(rep)
    assert "weight-only SQNR dB by layer" in text and "codebook16 - int4 dB" in text
    assert "output SQNR dB" in text
    assert json.dumps(rep.to_dict())
    alone = weight_options(fm.graph)                 # a graph; no inputs: weights only
    assert not alone.model and len(alone) == len(rep)
    assert "output SQNR" not in str(alone) and "bits per weight" in str(alone)


@pytest.mark.parametrize("name", CONVNETS + tuple(n.replace("_k3", "_tfk2") for n in CONVNETS))
def test_codebook16_beats_int4_on_every_layer_of_the_convnets(name):
    """At the same size (4 bits per weight, one table per layer), a layer's k-means codebook
    is closer to its float weights than uniform int4 is: on every layer of the fixtures."""
    g = optimize(fixnet.load(fixture_path(name)).graph)
    for n in g.nodes:
        if n.op in layouts.KERNEL_OPS:
            w = layouts.flat_rows(layouts.rows_from_keras(n.op, n.weights["kernel"]))
            cb, s = weight_codes(w, weights="codebook16")
            i4, s4 = weight_codes(w, weights="int4")
            margin = sqnr_db(w, cb * s[:, None]) - sqnr_db(w, i4 * s4[:, None])
            assert margin >= 0.3, (n.name, margin)
            assert len(np.unique(cb)) <= 16
