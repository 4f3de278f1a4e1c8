"""Calibration methods, streaming histograms, data-free quantization, bias correction and
adaptive weight rounding: each against an answer known independently of the code under test."""
import warnings

import numpy as np
import pytest

import fixnet
from conftest import as_list, fixture_data, fixture_path, fixtures, sqnr_db
from fixnet.passes import optimize
from fixnet.quant import ranges as R
from fixnet.quant.calibrate import Observer, _Progress, collect_statistics
from fixnet.quant.datafree import DataFreeWarning, has_batchnorm_statistics
from fixnet.quant.histogram import StreamingHistogram
from fixnet.quant.qparams import WEIGHT_MAX, quantize_weights, weight_quantization_error


def hist_of(x, nbins=2048):
    h = StreamingHistogram(nbins)
    h.add(x)
    return h


def quantization_mse(x, lo, hi):
    """The real mean squared error of int8 fake quantization of samples x over [lo, hi]."""
    qp = fixnet.quant.qparams.qparams_from_range(lo, hi)
    return float(np.mean((qp.dequantize(qp.quantize(x)).astype(np.float64) - x) ** 2))


# --------------------------------------------------------------------------- histogram
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streamed_histogram_equals_the_histogram_of_all_data_at_once(seed):
    rng = np.random.default_rng(seed)
    # ranges that grow batch after batch (forcing merges), exact zeros, both signs
    parts = [rng.normal(0, 0.01, 500), np.zeros(300), rng.laplace(0, 1, 2000),
             rng.uniform(-50, 3, 100), rng.normal(5, 1, 1000), np.array([1e3])]
    x = np.concatenate(parts)
    whole = hist_of(x, 512)
    streamed = StreamingHistogram(512)
    for p in parts:
        for chunk in np.array_split(p, 7):
            streamed.add(chunk)
    other_order = StreamingHistogram(512)
    for p in parts[::-1]:
        other_order.add(p)
    for h in (streamed, other_order):
        assert (h.exp, h.start, h.zeros, h.total, h.min, h.max) == \
            (whole.exp, whole.start, whole.zeros, whole.total, whole.min, whole.max)
        np.testing.assert_array_equal(h.counts, whole.counts)
    # merging two partial histograms gives the same again
    a, b = hist_of(x[:1500], 512), hist_of(x[1500:], 512)
    a.merge(b)
    np.testing.assert_array_equal(a.counts, whole.counts)
    assert a.counts.sum() + a.zeros == x.size


def test_histogram_bins_count_what_falls_in_them():
    x = np.random.default_rng(3).laplace(size=20000)
    h = hist_of(x, 256)
    left, right, n = h.bins()
    for i in range(0, n.size, 17):
        inside = (x > left[i]) & (x <= right[i]) if left[i] >= 0 else (x >= left[i]) & (x < right[i])
        assert inside.sum() == n[i]
    # the grid is as fine as nbins allows: at least half of the bins span the data
    assert (right[-1] - left[0]) / h.width > 256 / 2


def test_observer_memory_does_not_grow_with_the_data():
    fm = fixnet.load(fixture_path("mlp_seq_k3"))
    g = optimize(fm.graph)
    rng = np.random.default_rng(0)

    def state_bytes(n_batches):
        obs = Observer(g, nbins=512, moments=True)
        from fixnet import reference
        for _ in range(n_batches):
            reference.run(g, [rng.uniform(0, 1 + rng.uniform(0, 5), (64, 64))], observe=obs)
        arrays = [a for st in obs.stats.values() for a in (st.hist.counts, st.sum)]
        arrays += [m.sum for m in obs.moments.values()]
        return sum(a.nbytes for a in arrays)

    assert state_bytes(2) == state_bytes(40)


# --------------------------------------------------------------------------- methods
def test_minmax_is_the_exact_extremes():
    x = np.random.default_rng(4).normal(1.0, 2.0, 10000)
    assert R.choose_range(hist_of(x), "minmax") == (x.min(), x.max())
    assert R.choose_range(hist_of(np.abs(x) + 1), "minmax") == (0.0, np.abs(x).max() + 1)  # holds 0.0


def test_percentile_of_known_distributions():
    rng = np.random.default_rng(5)
    u = rng.uniform(0, 1, 400000)
    lo, hi = R.choose_range(hist_of(u), "percentile", percentile=99.0)
    assert lo == 0.0 and hi == pytest.approx(0.99, abs=2e-3)
    g = rng.normal(0, 1, 400000)
    lo, hi = R.choose_range(hist_of(g), "percentile", percentile=99.9)
    # the 0.1% and 99.9% points of the standard normal: -/+ 3.0902
    assert lo == pytest.approx(-3.0902, abs=0.03) and hi == pytest.approx(3.0902, abs=0.03)


def test_mse_range_of_a_laplacian_is_narrower_than_minmax_and_near_the_true_optimum():
    x = np.random.default_rng(6).laplace(0, 1, 200000)
    lo, hi = R.choose_range(hist_of(x), "mse")
    assert hi - lo < x.max() - x.min()
    # brute force over symmetric clipping thresholds, on the samples themselves
    grid = np.linspace(4, x.max(), 80)
    best = min(quantization_mse(x, -a, a) for a in grid)
    assert quantization_mse(x, lo, hi) <= best * 1.03
    assert quantization_mse(x, lo, hi) < quantization_mse(x, x.min(), x.max())


def test_mse_keeps_the_full_range_of_a_uniform_distribution():
    x = np.random.default_rng(7).uniform(-1, 3, 100000)
    lo, hi = R.choose_range(hist_of(x), "mse")
    assert lo == pytest.approx(-1, abs=0.01) and hi == pytest.approx(3, abs=0.01)


def test_entropy_clips_rare_outliers_but_not_the_body():
    rng = np.random.default_rng(8)
    body = rng.uniform(0, 1, 100000)
    lo, hi = R.choose_range(hist_of(body), "entropy")
    assert lo == 0.0 and hi >= 0.95
    x = np.concatenate([body, np.full(3, 4.0)])             # 3 values in 100003 far out
    lo, hi = R.choose_range(hist_of(x), "entropy")
    assert 0.95 <= hi < 1.1
    # one-sided with ReLU's spike of zeros: the spike does not drag the range down
    relu = np.maximum(rng.normal(0, 1, 200000), 0)
    assert R.choose_range(hist_of(relu), "entropy")[1] > 3.0


def test_auto_takes_the_widest_range_among_near_optimal_ones():
    rng = np.random.default_rng(9)
    for x in (rng.laplace(0, 1, 100000), rng.uniform(0, 1, 100000), np.maximum(rng.normal(size=100000), 0)):
        h = hist_of(x)
        cands = {m: R.choose_range(h, m) for m in ("minmax", "percentile", "mse", "entropy")}
        errs = {m: R.quantization_mse(h, *r) for m, r in cands.items()}
        lo, hi = R.choose_range(h, "auto")
        assert (lo, hi) in cands.values()
        assert R.quantization_mse(h, lo, hi) <= min(errs.values()) * (1 + R.AUTO_TOLERANCE)
        near = [r for m, r in cands.items() if errs[m] <= min(errs.values()) * (1 + R.AUTO_TOLERANCE)]
        assert hi - lo == max(b - a for a, b in near)


def test_histogram_mse_estimate_tracks_the_real_error():
    x = np.random.default_rng(10).laplace(0, 1, 200000)
    h = hist_of(x)
    for lo, hi in [(-4, 4), (-8, 6), (x.min(), x.max())]:
        assert R.quantization_mse(h, lo, hi) == pytest.approx(quantization_mse(x, lo, hi), rel=0.05)


def test_mse_weight_clipping_lowers_each_channel_error():
    rng = np.random.default_rng(11)
    w = rng.laplace(0, 0.05, (16, 3, 3, 8))
    w[0, 0, 0, 0] = 2.0                                     # an outlier in channel 0
    q0, s0 = quantize_weights(w)
    q1, s1 = quantize_weights(w, clipping="mse")
    assert np.abs(q1).max() <= WEIGHT_MAX and q1.dtype == np.int8
    flat = w.reshape(16, -1)
    e0 = ((flat - q0.reshape(16, -1) * s0[:, None]) ** 2).sum(1)
    e1 = ((flat - q1.reshape(16, -1) * s1[:, None]) ** 2).sum(1)
    assert np.all(e1 <= e0 + 1e-15) and e1.sum() < e0.sum()
    np.testing.assert_allclose(e1, weight_quantization_error(flat, s1 * WEIGHT_MAX))


# --------------------------------------------------------------------------- data forms
@pytest.fixture(scope="module")
def mlp():
    d = fixture_data("mlp_seq_k3")
    return d, fixnet.load(fixture_path("mlp_seq_k3"))


def _qparams(qm):
    return {t: (s.qparams.scale, s.qparams.zero_point) for t, s in qm.tensors.items()}


@pytest.mark.parametrize("method", ["mse", "percentile", "entropy", "minmax", "auto"])
def test_generator_list_and_array_calibration_agree(mlp, method):
    d, fm = mlp
    x = d["x_calib"]
    pulled = []

    def gen():                                              # a one-shot generator, odd batch sizes
        for i in range(0, len(x), 37):
            pulled.append(i)
            yield x[i:i + 37]

    kw = dict(method=method, weight_rounding="nearest", progress=False)
    ref = fm.quantize(x, **kw)
    for data in (gen(), [x[i:i + 50] for i in range(0, len(x), 50)], iter(list(x[None]))):
        qm = fm.quantize(data, **kw)
        assert _qparams(qm) == _qparams(ref)
        np.testing.assert_array_equal(qm.predict(d["x_test"], output="int8"),
                                      ref.predict(d["x_test"], output="int8"))
    assert len(pulled) == int(np.ceil(len(x) / 37))         # read once


def test_adaptive_rounding_is_nearly_independent_of_batching(mlp):
    d, fm = mlp
    x = d["x_calib"]
    a = fm.quantize(x, progress=False)
    b = fm.quantize((x[i:i + 13] for i in range(0, len(x), 13)), progress=False)
    assert _qparams(a) == _qparams(b)
    same = np.mean(a.predict(d["x_test"], output="int8") == b.predict(d["x_test"], output="int8"))
    assert same >= 0.99


def test_bad_arguments_are_refused(mlp):
    d, fm = mlp
    with pytest.raises(ValueError, match="method"):
        fm.quantize(d["x_calib"], method="kl")
    with pytest.raises(ValueError, match="weight_clipping"):
        fm.quantize(d["x_calib"], weight_clipping="max")
    with pytest.raises(ValueError, match="percentile"):
        fm.quantize(d["x_calib"], method="percentile", percentile=20)


def test_progress_bar_only_on_a_terminal_and_when_asked():
    assert not _Progress(False, 10)._enabled()
    assert _Progress(True, 10)._enabled()
    auto = _Progress("auto", 10, delay=0.0)
    assert auto._enabled() == __import__("sys").stderr.isatty()


def test_progress_bar_runs(mlp, monkeypatch):
    """progress=True starts a bar that counts every calibration sample and is stopped, and it
    changes nothing in the result."""
    import rich.progress
    d, fm = mlp
    bars = []

    class Recording:
        def __init__(self, *columns, **kwargs):
            self.events, self.total, self.completed = [], None, None
            bars.append(self)

        def start(self):
            self.events.append("start")

        def add_task(self, description, total, completed):
            self.total, self.completed = total, completed
            return 0

        def update(self, task, completed):
            self.completed = completed

        def stop(self):
            self.events.append("stop")

    monkeypatch.setattr(rich.progress, "Progress", Recording)
    with_bar = fm.quantize(d["x_calib"], progress=True)
    assert bars, "progress=True showed no bar"
    for bar in bars:
        assert bar.events == ["start", "stop"]
        assert bar.total == bar.completed == len(d["x_calib"])
    n_bars = len(bars)
    without = fm.quantize(d["x_calib"], progress=False)
    assert len(bars) == n_bars, "progress=False showed a bar"
    assert _qparams(with_bar) == _qparams(without)
    np.testing.assert_array_equal(with_bar.predict(d["x_test"], output="int8"),
                                  without.predict(d["x_test"], output="int8"))


# --------------------------------------------------------------------------- the default vs TFLite
LABELLED = fixtures(("mlp_", "cnn_", "kws_", "resnet_", "mobilenet", "concat_", "multi_io"))

_CACHE = {}


def default_model(name):
    if name not in _CACHE:
        d = fixture_data(name)
        fm = fixnet.load(fixture_path(name))
        calib = as_list(d, "x_calib")
        _CACHE[name] = (d, fm, fm.quantize(calib[0] if len(calib) == 1 else calib, progress=False))
    return _CACHE[name]


def _inputs(d):
    xs = as_list(d, "x_test")
    return xs[0] if len(xs) == 1 else xs


def _outs(v):
    return v if isinstance(v, list) else [v]


@pytest.mark.parametrize("name", LABELLED)
def test_default_beats_or_equals_tflite(name):
    d, _, qm = default_model(name)
    got = _outs(qm.predict(_inputs(d)))
    refs, tfl = as_list(d, "keras_float"), as_list(d, "tflite_int8")   # every output, no gap
    assert "y_test" in d and len(got) == len(refs) == len(tfl), name
    for g, ref, t in zip(got, refs, tfl):
        assert sqnr_db(ref, g) >= sqnr_db(ref, t), name
    if name.startswith(("mlp_", "cnn_digits")):            # the digits classifiers
        acc_f = (refs[0].argmax(1) == d["y_test"]).mean()
        acc_q = (got[0].argmax(1) == d["y_test"]).mean()
        assert acc_q >= acc_f - 0.005, (name, acc_f, acc_q)


# --------------------------------------------------------------------------- data-free
BN_FIXTURES = [n for n in LABELLED if n.startswith(("mlp_", "cnn_digits", "kws_dscnn", "resnet_small",
                                                    "mobilenet_small", "mobilenetv2"))]


@pytest.mark.parametrize("name", BN_FIXTURES)
def test_data_free_is_within_two_points_of_calibrated(name):
    d, fm, qm = default_model(name)
    with pytest.warns(DataFreeWarning, match="calibration"):
        free = fm.quantize(input_range=(0.0, 1.0))
    x, y = _inputs(d), d["y_test"]
    acc_cal = (_outs(qm.predict(x))[0].argmax(1) == y).mean()
    acc_free = (_outs(free.predict(x))[0].argmax(1) == y).mean()
    assert free.overflow_report().proven
    assert has_batchnorm_statistics(optimize(fm.graph)), name   # the loader kept moving stats
    assert acc_free >= acc_cal - 0.02, (name, acc_cal, acc_free)


def test_data_free_without_an_input_range_says_to_pass_one():
    fm = fixnet.load(fixture_path("cnn_digits_k3"))
    with pytest.raises(fixnet.CalibrationError, match=r"input_range=\(low, high\)"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataFreeWarning)     # refused before any warning
            fm.quantize()


def test_batchnorm_statistics_set_the_data_free_statistics_of_the_layer_they_fold_into():
    from fixnet.graph import Graph, Node
    from fixnet.quant.datafree import Stats, propagate
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(4, 3)), rng.normal(size=3)
    mean, var = np.array([1.0, -2.0, 0.5]), np.array([4.0, 1.0, 0.25])
    gamma, beta, eps = np.array([1.0, 2.0, 0.5]), np.array([0.1, 0.0, -0.3]), 1e-3
    inv = gamma / np.sqrt(var + eps)
    nodes = [Node("d", "dense", ["x"], ["y"], {}, {"kernel": kernel, "bias": bias}, "d", "Dense"),
             Node("bn", "affine", ["y"], ["z"], {"clamp": None, "input_mean": mean, "input_var": var},
                  {"scale": inv, "offset": beta - mean * inv}, "bn", "BatchNormalization")]
    g = optimize(Graph(["x"], ["z"], nodes, {"x": (4,), "y": (3,), "z": (3,)}))
    assert [n.op for n in g.nodes] == ["dense"]
    st = propagate(g, {"x": Stats(np.zeros(4), np.ones(4))})["z"]
    # a BatchNormalization's output has mean beta and deviation |gamma| sd / sqrt(var + eps)
    np.testing.assert_allclose(st.mean, beta, atol=1e-12)
    np.testing.assert_allclose(np.sqrt(st.var), gamma * np.sqrt(var / (var + eps)))


def test_data_free_input_range_from_a_rescaling_layer():
    from fixnet.quant.datafree import input_statistics
    from fixnet.graph import Graph, Node
    n = Node("rescale", "affine", ["x"], ["y"], {"clamp": None},
             {"scale": np.full(3, 1 / 127.5), "offset": np.full(3, -1.0)}, "rescale", "Rescaling")
    g = Graph(["x"], ["y"], [n], {"x": (4, 4, 3), "y": (4, 4, 3)})
    st = input_statistics(g)["x"]
    assert st.range(5.0) == (0.0, 255.0)
    n.keras_class = "Normalization"
    n.weights = {"scale": 1 / np.array([1.0, 2.0, 4.0]), "offset": -np.array([10.0, 0.0, -1.0]) / np.array([1.0, 2.0, 4.0])}
    st = input_statistics(g)["x"]
    np.testing.assert_allclose(st.mean[0, 0], [10.0, 0.0, -1.0])
    np.testing.assert_allclose(np.sqrt(st.var[0, 0]), [1.0, 2.0, 4.0])


# --------------------------------------------------------------------------- bias correction
def _layer_outputs(qm, g, x):
    """{tensor: (int8 dequantized, float)} of every step's output (oracle and float reference)."""
    from fixnet import reference
    f = {}
    reference.run(g, [x], observe=lambda t, v: f.__setitem__(t, v))
    vals = {t: qm.tensors[t].qparams.quantize(x) for t in qm.inputs}
    out = {}
    for s in qm.steps:
        for t, o in zip(s.outputs, s.oracle([vals[u] for u in s.inputs])):
            vals[t] = o.reshape((o.shape[0],) + qm.tensors[t].shape)
            out[t] = (qm.tensors[t].qparams.dequantize(vals[t]).astype(np.float64), f[t])
    return out


@pytest.mark.parametrize("name", ["cnn_digits_k3", "mobilenet_small_k3"])
def test_bias_correction_reduces_the_mean_output_error(name):
    d = fixture_data(name)
    fm = fixnet.load(fixture_path(name))
    g = optimize(fm.graph)
    kw = dict(method="minmax", weight_rounding="nearest", progress=False)
    plain = fm.quantize(d["x_calib"], bias_correction=False, **kw)
    corrected = fm.quantize(d["x_calib"], bias_correction=True, **kw)
    assert corrected.overflow_report().proven
    x = d["x_test"][:64]
    a, b = _layer_outputs(plain, g, x), _layer_outputs(corrected, g, x)
    convs = [s for s in plain.steps if s.op in ("conv2d", "depthwise_conv2d", "dense")]
    first = convs[0].outputs[0]           # the first layer sees the same input either way

    def mean_error(o):                    # per output channel, over samples and positions
        q, f = o
        return np.abs((q - f).reshape(-1, q.shape[-1]).mean(axis=0)).mean()

    assert mean_error(b[first]) < 0.7 * mean_error(a[first])
    total_a = sum(mean_error(a[s.outputs[0]]) for s in convs)
    total_b = sum(mean_error(b[s.outputs[0]]) for s in convs)
    assert total_b < total_a


def test_adaptive_rounding_lowers_the_output_error_of_a_layer():
    d = fixture_data("kws_dscnn_k3")
    fm = fixnet.load(fixture_path("kws_dscnn_k3"))
    g = optimize(fm.graph)
    kw = dict(method="minmax", bias_correction=False, progress=False)
    near = fm.quantize(d["x_calib"], weight_rounding="nearest", **kw)
    adap = fm.quantize(d["x_calib"], weight_rounding="adaptive", **kw)
    x = d["x_test"][:64]
    a, b = _layer_outputs(near, g, x), _layer_outputs(adap, g, x)
    out = g.outputs[0]
    first = near.steps[0].outputs[0]
    for t in (first, out):
        assert sqnr_db(b[t][1], b[t][0]) > sqnr_db(a[t][1], a[t][0]) + 1.0, t
    for s, t in zip(near.steps, adap.steps):      # same scales, codes still in [-127, 127]
        if s.op == "conv2d":
            assert np.abs(t.w_q.astype(int)).max() <= WEIGHT_MAX
            assert np.mean(s.w_q == t.w_q) > 0.5


# --------------------------------------------------------------------------- input grids
@pytest.mark.parametrize("values, step, expect", [
    (np.arange(17) / 16.0, 1 / 16, (0.0, 255 / 240)),            # digits: 16 steps -> m = 15
    (np.arange(256, dtype=np.float64), 1.0, (0.0, 255.0)),      # 8-bit pixels: scale 1
    (np.arange(256) / 255.0, 1 / 255, (0.0, 1.0)),              # pixels / 255
    (np.arange(-3, 4) * 0.5, 0.5, (-1.5, -1.5 + 255 * 0.5 / 42)),  # 6 steps -> m = 42
])
def test_input_lattice_range_holds_every_grid_point_exactly(values, step, expect):
    from fixnet.quant.calibrate import InputLattice
    from fixnet.quant.qparams import qparams_from_range
    lat = InputLattice()
    rng = np.random.default_rng(0)
    for _ in range(3):
        lat.add(rng.choice(values, size=(50, 4)).astype(np.float32))
    lat.add(values.astype(np.float32))
    lo, hi = lat.range()
    assert (lo, hi) == pytest.approx(expect)
    qp = qparams_from_range(lo, hi)
    m = round(step / qp.scale)                       # grid step = m codes
    codes = qp.quantize(values.astype(np.float32)).astype(np.int64)
    np.testing.assert_array_equal(codes - qp.zero_point, np.round(values / step).astype(np.int64) * m)


@pytest.mark.parametrize("values", [
    np.linspace(0.1, 1.0, 50),               # 0 is not on the grid
    np.r_[0.0, 0.3, 1.0],                    # not one grid
    np.arange(300, dtype=np.float64),        # more than 256 grid points
    np.random.default_rng(1).normal(size=5000),   # continuous: more distinct values than kept
])
def test_input_lattice_declines_what_is_not_a_small_grid(values):
    from fixnet.quant.calibrate import InputLattice
    lat = InputLattice(cap=4096)
    lat.add(values.astype(np.float32))
    assert lat.range() is None
    assert lat.values.size <= 4096


def test_softmax_levels_option(mlp):
    d, fm = mlp
    x = d["x_calib"]
    q255 = fm.quantize(x, progress=False)
    q256 = fm.quantize(x, progress=False, softmax_levels=256)
    assert q255.output_qparams[0].scale == pytest.approx(1 / 255)
    assert q256.output_qparams[0].scale == 1 / 256
    p = q255.predict(x)
    assert p.max() == 1.0                      # a confident prediction's 1.0 is exact
    assert q256.predict(x).max() == 255 / 256
    with pytest.raises(ValueError, match="softmax_levels"):
        fm.quantize(x, progress=False, softmax_levels=128)


def test_data_free_warning_is_exported_and_can_be_silenced(mlp):
    d, fm = mlp
    assert fixnet.DataFreeWarning is DataFreeWarning
    with pytest.warns(fixnet.DataFreeWarning):
        fm.quantize(input_range=(0.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=fixnet.DataFreeWarning)
        fm.quantize(input_range=(0.0, 1.0))


def test_second_moment_survives_a_blas_that_returns_non_finite_sums(monkeypatch):
    # seen with NumPy's OpenBLAS under arm64 emulation: float32 matmul of finite inputs gave
    # inf/NaN, and the adaptive codes cast from them were garbage weights
    from fixnet.graph import Node
    from fixnet.quant.rounding import SecondMoment
    node = Node("d", "dense", ["x"], ["y"], {"clamp": None},
                {"kernel": np.zeros((5, 3)), "bias": np.zeros(3)}, "d", "Dense")
    x = np.random.default_rng(0).normal(size=(40, 5))
    ref = SecondMoment(node)
    ref.add(node, x)
    real = np.matmul
    monkeypatch.setattr(np, "matmul", lambda a, b: np.full(real(a, b).shape, np.nan, np.float32))
    got = SecondMoment(node)
    got.add(node, x)
    np.testing.assert_allclose(got.moment, ref.moment, rtol=1e-5)
    assert np.all(np.isfinite(got.moment))
