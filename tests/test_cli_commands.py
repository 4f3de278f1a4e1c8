"""`fixnet inspect`, `fixnet quantize` and `fixnet predict` run as a user runs them, in a child
process, and checked against the Python API: what inspect prints is what the model holds,
quantize's options reach FloatModel.quantize and change what they should, predict writes the
bits QuantizedModel.predict gives. Every user error ends in one line on stderr naming the file
or argument, exit code 2 (usage) or 1 (failure), never a traceback. Also the data readers of
fixnet/cli/data.py (.npy, .npz, image folders)."""
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fixnet
from conftest import fixture_path, sqnr_db
from fixnet.cli.data import read_data, read_images

ROOT = os.path.dirname(os.path.dirname(fixnet.__file__))
BUNDLED_H5 = os.path.join(ROOT, "fixnet", "data", "digits_mlp.h5")
BUNDLED_NPZ = os.path.join(ROOT, "fixnet", "data", "digits_mlp.npz")
CNN = fixture_path("cnn_digits_k3")                    # conv, 32x32x1 (grey images)
CNN_NPZ = fixture_path("cnn_digits_k3", ".npz")
DEAD = fixture_path("dead_digits_k3")                  # conv/depthwise with dead filters, 8x8x1
RGB = fixture_path("layers_depthwise_k3")              # 7x6x3 input
MULTI = fixture_path("multi_io_k3")                    # 2 inputs, 2 outputs


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("FIXNET_ISA", None)
    return env


# `python -m` puts the working folder first on sys.path: children run in a folder without a
# fixnet package in it, so they import the fixnet this test imported (in CI the installed one,
# not the checkout's uncompiled sources)
NEUTRAL_CWD = tempfile.mkdtemp(prefix="fixnet-cli-")


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fixnet.cli"] + [str(a) for a in args],
                          capture_output=True, text=True, cwd=cwd or NEUTRAL_CWD, env=_env(),
                          timeout=300)


def run_main(*args):
    """The command run in this process by fixnet.cli.main (as fast, for the cases that need
    no fresh interpreter): an object with returncode, stdout and stderr, as cli gives."""
    import contextlib
    import io
    import types
    from fixnet.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:                 # argparse's usage errors and --help
            code = e.code
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def ok(r):
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return r.stdout


def error_line(r, code, *names):
    """The one line on stderr of a command that failed with exit ``code``; it names each of
    ``names``."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in names:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def table_rows(text):
    """The cells of every body row of the tables in ``text`` (rich's box drawing)."""
    return [[c.strip() for c in line.strip()[1:-1].split("│")]
            for line in text.splitlines() if line.startswith("│")]


def line_with(text, prefix):
    for line in text.splitlines():
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting {prefix!r} in:\n{text}")


def step_arrays(qm):
    """Everything a QuantizedModel computes with: every step's arrays and every tensor's
    scale and zero point."""
    out = {(s.name, k): v for s in qm.steps for k, v in vars(s).items()
           if isinstance(v, np.ndarray) and not k.startswith("_")}
    out.update({("tensor", t): np.array([spec.qparams.scale, spec.qparams.zero_point])
                for t, spec in qm.tensors.items()})
    return out


def assert_same_model(a, b):
    ea, eb = step_arrays(a), step_arrays(b)
    assert ea.keys() == eb.keys()
    for k in ea:
        assert np.array_equal(ea[k], eb[k]), k


def damaged_copies(tmp_path, fxn):
    """A truncated Keras .h5, an .fxn with one byte flipped, a truncated .fxn."""
    h5 = tmp_path / "truncated.h5"
    h5.write_bytes(open(CNN, "rb").read()[:5000])
    data = bytearray(open(fxn, "rb").read())
    flipped = tmp_path / "flipped.fxn"
    data[len(data) // 2] ^= 0x40
    flipped.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.fxn"
    truncated.write_bytes(bytes(data[: len(data) * 2 // 3]))
    return [str(h5), str(flipped), str(truncated)]


def write_pngs(folder, images, mode):
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    for i, a in enumerate(images):
        Image.fromarray(a, mode).save(os.path.join(folder, f"img{i:03d}.png"))
    return str(folder)


# -- models made once, by the command line, for the whole module ------------------------------

@pytest.fixture(scope="module")
def cnn_fxn(tmp_path_factory):
    """cnn_digits_k3 quantized by `fixnet quantize` on its calibration array: (path, stdout)."""
    out = tmp_path_factory.mktemp("cnn") / "cnn.fxn"
    r = cli("quantize", CNN, "--calib", CNN_NPZ + ":x_calib", "-o", out)
    return str(out), ok(r)


@pytest.fixture(scope="module")
def mlp_fxn(tmp_path_factory):
    """The bundled digits MLP quantized by `fixnet quantize`: (path, stdout)."""
    out = tmp_path_factory.mktemp("mlp") / "digits.fxn"
    r = cli("quantize", BUNDLED_H5, "--calib", BUNDLED_NPZ + ":x_calib", "-o", out)
    return str(out), ok(r)


@pytest.fixture(scope="module")
def multi_fxn(tmp_path_factory):
    """multi_io_k3 (two inputs, two outputs) quantized by `fixnet quantize` (in this process)
    on the two calibration arrays of its .npz, named after the colon."""
    out = tmp_path_factory.mktemp("multi") / "multi.fxn"
    ok(run_main("quantize", MULTI, "--calib",
                fixture_path("multi_io_k3", ".npz") + ":x_calib_0,x_calib_1", "-o", out))
    return str(out)


@pytest.fixture(scope="module")
def cnn_x_test(tmp_path_factory):
    """cnn_digits_k3's test inputs as an .npy file: (path, array)."""
    x = np.load(CNN_NPZ)["x_test"]
    path = tmp_path_factory.mktemp("x") / "x_test.npy"
    np.save(path, x)
    return str(path), x


# -- --help ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["inspect", "quantize", "predict"])
def test_help_lists_the_command_and_shows_an_example(command):
    text = ok(run_main(command, "--help"))
    module = __import__(f"fixnet.cli.{command}", fromlist=["EXAMPLE"])
    assert "example:" in text and module.EXAMPLE.splitlines()[0] in text
    assert command in ok(run_main("--help"))


# -- inspect ---------------------------------------------------------------------------------

def test_inspect_keras_model_one_row_per_node_with_macs_and_totals():
    from fixnet.cost import macs, node_macs
    out = ok(cli("inspect", BUNDLED_H5))
    g = fixnet.load(BUNDLED_H5).graph
    rows = table_rows(out)
    assert len(rows) == len(g.nodes)
    for row, n in zip(rows, g.nodes):
        layer, keras_class, op, shape, params, m = row
        assert (layer, keras_class, op) == (n.layer, n.keras_class, n.op)
        assert shape == "x".join(map(str, g.shapes[n.outputs[0]]))
        assert int(params.replace(",", "") or 0) == sum(w.size for w in n.weights.values())
        assert int(m.replace(",", "") or 0) == node_macs(n, g.shapes[n.outputs[0]], g)
    total_params = sum(w.size for n in g.nodes for w in n.weights.values())
    assert line_with(out, "parameters:") == f"parameters: {total_params:,}"
    assert f"per sample: {macs(g):,} " in out
    assert f"weight bytes: {4 * total_params:,} bytes" in out


def test_inspect_json_with_weights_reads_the_same_model_as_the_h5():
    rows_h5 = table_rows(ok(run_main("inspect", CNN)))
    rows_json = table_rows(ok(run_main("inspect", fixture_path("cnn_digits_k3", ".json"), "--weights",
                                  fixture_path("cnn_digits_k3", ".weights.h5"))))
    assert rows_json == rows_h5 and len(rows_h5) == len(fixnet.load(CNN).graph.nodes)


def test_inspect_fxn_shows_scales_zero_points_headroom_and_macs(cnn_fxn):
    from fixnet.cli.inspect import smallest_headroom
    from fixnet.cost import macs, model_macs, step_macs
    path, _ = cnn_fxn
    out = ok(cli("inspect", path))
    qm = fixnet.load(path)
    rows = table_rows(out)
    assert len(rows) == len(qm.steps)
    least = {}
    for b in qm.overflow_bounds():
        least[b.layer, b.op] = min(least.get((b.layer, b.op), 99.0), b.headroom_bits)
    assert least == {k: b.headroom_bits for k, b in smallest_headroom(qm).items()}
    for row, s in zip(rows, qm.steps):
        layer, op, kind, shape, params, m, scale, zp, headroom = row
        t = qm.tensors[s.outputs[0]]
        assert (layer, op, kind) == (s.layer, s.op, "int8")
        assert shape == "x".join(map(str, t.shape))
        assert float(scale) == pytest.approx(t.qparams.scale, rel=1e-3)
        assert int(zp) == t.qparams.zero_point
        assert int(m.replace(",", "") or 0) == step_macs(s, t.shape)
        w = [getattr(s, k) for k in ("w_q", "bias") if getattr(s, k, None) is not None]
        assert int(params.replace(",", "") or 0) == sum(a.size for a in w)
        if (s.layer, s.op) in least:
            assert float(headroom) == round(least[s.layer, s.op], 1)
        else:
            assert headroom == ""
    # the int8 network does the float graph's multiply-accumulates
    assert model_macs(qm) == macs(fixnet.load(CNN).graph)
    assert f"per sample: {model_macs(qm):,} " in out
    assert "one scale per output channel in all 4 weighted layers" in out
    assert line_with(out, "int32 overflow proof:").startswith("int32 overflow proof: holds")
    assert f"file {os.path.getsize(path):,} bytes" in out
    qp = qm.input_qparams[0]
    assert f"input 'input_layer' (32, 32, 1): int8 scale {qp.scale:.6g}, zero point " \
           f"{qp.zero_point}" in out


def test_inspect_errors_are_one_line(tmp_path, mlp_fxn):
    error_line(cli("inspect", BUNDLED_H5, "--frobnicate"), 2, "--frobnicate")
    error_line(run_main("inspect"), 2, "MODEL")
    error_line(run_main("inspect", fixture_path("cnn_digits_k3", ".json")), 2, "--weights",
               "cnn_digits_k3.json")
    error_line(run_main("inspect", mlp_fxn[0], "--weights", CNN), 2, "--weights", mlp_fxn[0])
    error_line(run_main("inspect", tmp_path / "absent.h5"), 1, tmp_path / "absent.h5")
    for i, path in enumerate(damaged_copies(tmp_path, mlp_fxn[0])):
        error_line((cli if i < 2 else run_main)("inspect", path), 1, path)


def _closed_pipe(args):
    """Run the command with its stdout a pipe whose reader is gone before anything is
    written (`| head` that stopped reading): (exit code, stderr)."""
    p = subprocess.Popen([sys.executable, "-m", "fixnet.cli"] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env(), text=True,
                         cwd=NEUTRAL_CWD)
    p.stdout.close()
    err = p.stderr.read()
    p.stderr.close()
    return p.wait(timeout=120), err


@pytest.mark.parametrize("command", ["inspect", "info"])
def test_output_into_a_closed_pipe_ends_quietly(command):
    code, err = _closed_pipe([command, CNN])
    assert code == 0 and err == "", err
    r = subprocess.run(["bash", "-c", f"set -o pipefail; '{sys.executable}' -m fixnet.cli "
                        f"{command} '{CNN}' | head -2"],
                       capture_output=True, text=True, env=_env(), timeout=120, cwd=NEUTRAL_CWD)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert len(r.stdout.splitlines()) == 2


# -- quantize ----------------------------------------------------------------------------------

def test_quantize_writes_what_the_api_makes_and_summarises_it(cnn_fxn):
    path, out = cnn_fxn
    d = np.load(CNN_NPZ)
    fm = fixnet.load(CNN)
    qm_api = fm.quantize(d["x_calib"], progress=False)
    qm = fixnet.load(path)
    assert_same_model(qm, qm_api)
    x = d["x_test"]
    assert np.array_equal(qm.predict(x, output="int8"), qm_api.predict(x, output="int8"))
    # the summary: one row per int8 step with its output's scale, zero point and headroom
    rows = table_rows(out)
    assert [(r[0], r[1], r[2]) for r in rows] == [(s.layer, s.op, "int8") for s in qm.steps]
    for r, s in zip(rows, qm.steps):
        assert int(r[5]) == qm.tensors[s.outputs[0]].qparams.zero_point
    assert f"file: {path}, {os.path.getsize(path):,} bytes" in out
    assert line_with(out, "int32 overflow proof:").startswith("int32 overflow proof: holds")
    assert "dead channels widened: none" in out
    sqnr = sqnr_db(fm.predict(d["x_calib"]), qm.predict(d["x_calib"]))
    line = line_with(out, "int8 vs float on 200 calibration samples")
    assert f"'dense' SQNR {sqnr:.1f} dB" in line
    agree = np.mean(fm.predict(d["x_calib"]).argmax(1) == qm.predict(d["x_calib"]).argmax(1))
    assert f"argmax agreement {100 * agree:.1f}%" in line
    m = re.search(r"weights: ([\d,]+) bytes .* as int8 weights and int32 biases, ([\d,]+) bytes",
                  out)
    int8_bytes = sum(a.nbytes for s in qm.steps for k, a in vars(s).items()
                     if k in ("w_q", "bias"))
    float_params = sum(w.size for n in fm.graph.nodes for w in n.weights.values())
    assert (int(m[1].replace(",", "")), int(m[2].replace(",", ""))) == (int8_bytes, 4 * float_params)


def _weight_scale_counts(qm):
    from fixnet.cli.inspect import weight_scales
    return [n for n in (weight_scales(s, qm.tensors) for s in qm.steps) if n is not None]


def _scales(qm):
    return {t: spec.qparams.scale for t, spec in qm.tensors.items()}


def _differs(key):
    def check(qm, default):
        a, b = step_arrays(qm), step_arrays(default)
        assert any(not np.array_equal(a[k], b[k]) for k in a if k[1] == key), key
    return check


def _minmax_widens(qm, default):
    # (the input is left out: auto widens it a little to hold a grid of values exactly)
    inner = [t for t in qm.tensors if t not in qm.inputs]
    wider = [t for t in inner if _scales(qm)[t] > _scales(default)[t] * 1.0001]
    narrower = [t for t in inner if _scales(qm)[t] < _scales(default)[t] * 0.9999]
    assert wider and not narrower, (wider, narrower)


def _ranges_differ(qm, default):
    assert _scales(qm) != _scales(default)


def _biases_only(qm, default):
    _differs("bias")(qm, default)
    assert _scales(qm) == _scales(default)


def _per_tensor(qm, default):
    assert set(_weight_scale_counts(qm)) == {1}
    assert max(_weight_scale_counts(default)) > 1


def _softmax_256(qm, default):
    assert qm.output_qparams[0].scale == pytest.approx(1 / 256, rel=1e-6)
    assert default.output_qparams[0].scale == pytest.approx(1 / 255, rel=1e-6)


OPTION_CASES = [
    (["--method", "minmax"], dict(method="minmax"), _minmax_widens),
    (["--no-bias-correction"], dict(bias_correction=False), _biases_only),
    (["--weight-rounding", "nearest"], dict(weight_rounding="nearest"), _differs("w_q")),
    (["--no-per-channel"], dict(per_channel=False), _per_tensor),
    (["--softmax-levels", "256"], dict(softmax_levels=256), _softmax_256),
    (["--method", "percentile", "--percentile", "99"], dict(method="percentile", percentile=99.0),
     _ranges_differ),
    (["--weight-clipping", "mse"], dict(weight_clipping="mse"), _differs("m0")),
]


@pytest.mark.parametrize("cli_args, api_kwargs, check", OPTION_CASES,
                         ids=[" ".join(c[0]) for c in OPTION_CASES])
def test_quantize_options_reach_the_quantizer_and_change_what_they_should(
        tmp_path, cli_args, api_kwargs, check):
    x = np.load(BUNDLED_NPZ)["x_calib"]
    fm = fixnet.load(BUNDLED_H5)
    out = tmp_path / "m.fxn"
    ok(run_main("quantize", BUNDLED_H5, "--calib", BUNDLED_NPZ + ":x_calib", "-o", out, *cli_args))
    qm = fixnet.load(out)
    kwargs = dict(api_kwargs)
    assert_same_model(qm, fm.quantize(x, kwargs.pop("method", "auto"), progress=False, **kwargs))
    check(qm, fm.quantize(x, progress=False))


def test_quantize_without_calib_is_data_free_and_says_so(tmp_path):
    out = tmp_path / "free.fxn"
    r = run_main("quantize", BUNDLED_H5, "--input-range", "0", "1", "-o", out)
    ok(r)
    assert "data-free" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fixnet.DataFreeWarning)
        qm_api = fixnet.load(BUNDLED_H5).quantize(None, input_range=(0.0, 1.0))
    assert_same_model(fixnet.load(out), qm_api)
    assert "int8 vs float" not in r.stdout          # no data to compare on
    # without a range the model does not give itself: a usage error naming the options
    r = run_main("quantize", BUNDLED_H5, "-o", tmp_path / "x.fxn")
    error_line(r, 2, "--calib", "--input-range")
    assert not os.path.exists(tmp_path / "x.fxn")


def test_quantize_image_folder_grey_resized_and_dead_channels(tmp_path):
    """A grey model calibrated on PNGs of another size (resized), with --image-range; the
    dead channels widened are listed as fixnet.report.widened_channels gives them."""
    from fixnet.report import widened_channels
    x = np.load(fixture_path("dead_digits_k3", ".npz"))["x_calib"][:40]       # 8x8x1 in [0, 1]
    imgs = np.kron(np.round(x[..., 0] * 255).astype(np.uint8), np.ones((3, 2), np.uint8))
    folder = write_pngs(tmp_path / "imgs", imgs, "L")                          # 24x16 PNGs
    out = tmp_path / "dead.fxn"
    text = ok(cli("quantize", DEAD, "--calib", folder, "--image-range", "0", "1", "-o", out))
    xs = read_images(folder, (8, 8, 1), image_range=(0.0, 1.0))
    assert xs.shape == (40, 8, 8, 1) and 0.0 <= xs.min() and xs.max() <= 1.0
    qm_api = fixnet.load(DEAD).quantize(xs, progress=False)
    assert_same_model(fixnet.load(out), qm_api)
    widened = widened_channels(qm_api)
    assert widened
    dead_table = text.split("dead channels whose weight scale was widened")[1]
    listed = {(r[0], r[1], int(r[2])) for r in table_rows(dead_table)}
    assert listed == {(w["layer"], w["op"], w["channel"]) for w in widened}
    assert "int8 vs float on 40 calibration samples" in text
    # inspect finds them again in the .fxn file (which holds only the integers)
    line = line_with(ok(run_main("inspect", out)), "dead channels")
    for layer, op, channel in listed:
        assert re.search(rf"'{layer}' \({op}\) channels? [\d, ]*\b{channel}\b", line), line


def test_quantize_data_free_one_input_range_per_input(tmp_path):
    import warnings
    out = tmp_path / "free.fxn"
    ok(run_main("quantize", MULTI, "--input-range", "0", "1", "--input-range", "-1", "1", "-o",
                out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fixnet.DataFreeWarning)
        qm_api = fixnet.load(MULTI).quantize(None, input_range=[(0.0, 1.0), (-1.0, 1.0)])
    assert_same_model(fixnet.load(out), qm_api)
    assert [fixnet.load(out).tensors[t].qparams.real_range[0] for t in qm_api.inputs] == \
        pytest.approx([0.0, -1.0], abs=0.01)
    error_line(run_main("quantize", MULTI, *["--input-range", "0", "1"] * 3, "-o", out), 2,
               "--input-range", "3 times", "2 input(s)")
    error_line(run_main("quantize", MULTI, "--input-range", "1", "0", "-o", out), 2,
               "--input-range 1 0")


def test_quantize_multi_input_npz_names(multi_fxn):
    d = np.load(fixture_path("multi_io_k3", ".npz"))
    qm_api = fixnet.load(MULTI).quantize([d["x_calib_0"], d["x_calib_1"]], progress=False)
    assert_same_model(fixnet.load(multi_fxn), qm_api)


def test_quantize_refuses_to_overwrite_its_input_and_bad_arguments(tmp_path, mlp_fxn):
    fxn = tmp_path / "model.fxn"
    fxn.write_bytes(open(mlp_fxn[0], "rb").read())
    before = fxn.read_bytes()
    error_line(run_main("quantize", fxn, "-o", fxn), 2, "-o", "MODEL", "overwrite")
    assert fxn.read_bytes() == before
    calib = ["--calib", BUNDLED_NPZ + ":x_calib"]
    error_line(run_main("quantize", BUNDLED_H5, *calib, "-o", tmp_path / "m.h5"), 2, "-o", ".fxn")
    error_line(run_main("quantize", BUNDLED_H5, *calib), 2, "-o")
    error_line(cli("quantize", BUNDLED_H5, *calib, "-o", tmp_path / "m.fxn", "--method", "best"),
               2, "--method", "best")
    error_line(run_main("quantize", BUNDLED_H5, *calib, "-o", tmp_path / "m.fxn", "--percentile", "20"),
               2, "--percentile")
    error_line(run_main("quantize", BUNDLED_H5, *calib, "-o", tmp_path / "m.fxn", "--input-range",
                   "0", "1"), 2, "--input-range")
    error_line(run_main("quantize", BUNDLED_H5, *calib, "-o", tmp_path / "no" / "m.fxn"), 2,
               tmp_path / "no")
    error_line(run_main("quantize", BUNDLED_H5, *calib, "-o", tmp_path / "m.fxn",
                        "--image-range", "0", "1"), 2, "--image-range", "folder")
    error_line(run_main("quantize", BUNDLED_H5, *calib, "-o", tmp_path / "m.fxn", "--method",
                        "mse", "--percentile", "99"), 2, "--percentile", "--method mse")
    error_line(run_main("quantize", mlp_fxn[0], *calib, "-o", tmp_path / "m.fxn"), 1, mlp_fxn[0],
               "already")
    for i, path in enumerate(damaged_copies(tmp_path, mlp_fxn[0])[:2]):
        error_line((cli if i == 0 else run_main)("quantize", path, *calib, "-o",
                                                 tmp_path / "m.fxn"), 1, path)
    assert not os.path.exists(tmp_path / "m.fxn")


# -- data files that cannot be used: quantize's --calib and predict's INPUT -------------------

def _bad_data(tmp_path):
    """(DATA argument, what the one-line error must name) for an 8x8x1 / 32x32x1 model."""
    cases = []
    np.save(tmp_path / "shape.npy", np.zeros((5, 3, 3), np.float32))
    cases.append((str(tmp_path / "shape.npy"), "shape"))
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 8, 8, 1)), b=np.zeros((2, 8, 8, 1)))
    cases.append((str(tmp_path / "two.npz"), "name one"))
    cases.append((str(tmp_path / "two.npz") + ":c", "'c'"))
    (tmp_path / "damaged.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    cases.append((str(tmp_path / "damaged.npy"), "damaged.npy"))
    folder = write_pngs(tmp_path / "imgs", np.zeros((2, 8, 8), np.uint8), "L")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    cases.append((folder, os.path.join(folder, "broken.png")))
    return cases


def test_quantize_unusable_calibration_data_is_one_line_naming_the_file(tmp_path):
    for spec, what in _bad_data(tmp_path):
        run = cli if "imgs" in spec else run_main
        line = error_line(run("quantize", DEAD, "--calib", spec, "-o", tmp_path / "m.fxn"), 1,
                          spec.split(":")[0] if "imgs" not in spec else "broken.png", what)
        assert "--calib" in line
    nan = np.load(fixture_path("dead_digits_k3", ".npz"))["x_calib"].copy()
    nan[7, 1, 2, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    error_line(run_main("quantize", DEAD, "--calib", tmp_path / "nan.npy", "-o", tmp_path / "m.fxn"),
               1, tmp_path / "nan.npy", "NaN", "sample 7")
    assert not os.path.exists(tmp_path / "m.fxn")


def test_predict_unusable_input_is_one_line_naming_the_file(tmp_path, cnn_fxn):
    for spec, what in _bad_data(tmp_path):
        if spec.endswith(".npz"):
            np.savez(spec, a=np.zeros((2, 32, 32, 1)), b=np.zeros((2, 32, 32, 1)))
        run = cli if spec.endswith(".npy") else run_main
        line = error_line(run("predict", cnn_fxn[0], spec, "-o", tmp_path / "p.npy"), 1,
                          spec.split(":")[0] if "imgs" not in spec else "broken.png", what)
        assert "INPUT" in line
    x = np.load(CNN_NPZ)["x_test"][:20].copy()
    x[13, 4, 4, 0] = np.inf
    np.save(tmp_path / "inf.npy", x)
    error_line(run_main("predict", cnn_fxn[0], tmp_path / "inf.npy", "-o", tmp_path / "p.npy", "--batch",
                   "8"), 1, tmp_path / "inf.npy", "samples 8 to 15")
    assert not os.path.exists(tmp_path / "p.npy")


# -- predict ---------------------------------------------------------------------------------

def test_predict_fxn_bit_identical_to_the_api_for_every_output_batch_and_threads(
        tmp_path, cnn_fxn, cnn_x_test):
    path, _ = cnn_fxn
    xpath, x = cnn_x_test
    qm = fixnet.load(path)
    r = cli("predict", path, xpath, "-o", tmp_path / "p.npy")
    assert re.match(r"fixnet predict: 360 samples in [\d.]+ s \([\d,]+ samples/s; int8 kernels, "
                    r"1 thread", ok(r))
    p = np.load(tmp_path / "p.npy")
    assert p.dtype == np.float32 and np.array_equal(p, qm.predict(x))
    for output, batch, threads in (("int8", "7", "2"), ("uint8", "100", "1")):
        r = run_main("predict", path, xpath, "-o", tmp_path / f"{output}.npy", "--output", output,
                "--batch", batch, "--threads", threads, "-q")
        assert ok(r) == ""
        got = np.load(tmp_path / f"{output}.npy")
        assert got.dtype == np.dtype(output)
        assert np.array_equal(got, qm.predict(x, output=output))


def test_predict_keras_model_runs_the_float_reference(tmp_path, cnn_x_test):
    xpath, x = cnn_x_test
    ok(run_main("predict", CNN, xpath, "-o", tmp_path / "f.npy"))
    assert np.array_equal(np.load(tmp_path / "f.npy"), fixnet.load(CNN).predict(x))
    error_line(run_main("predict", CNN, xpath, "-o", tmp_path / "i.npy", "--output", "int8"), 2,
               "--output int8", ".fxn")
    assert not os.path.exists(tmp_path / "i.npy")


def test_predict_several_inputs_and_outputs_npz(tmp_path, multi_fxn):
    d = np.load(fixture_path("multi_io_k3", ".npz"))
    qm = fixnet.load(multi_fxn)
    # an .npz whose arrays are named as the model's inputs
    np.savez(tmp_path / "in.npz", features=d["x_test_1"], image=d["x_test_0"])
    ok(cli("predict", multi_fxn, tmp_path / "in.npz", "-o", tmp_path / "out.npz",
           "--batch", "50"))
    with np.load(tmp_path / "out.npz") as z:
        assert sorted(z.files) == sorted(qm.outputs) == ["class", "ink"]
        want = qm.predict([d["x_test_0"], d["x_test_1"]])
        for name, w in zip(qm.outputs, want):
            assert np.array_equal(z[name], w)
    error_line(cli("predict", multi_fxn, tmp_path / "in.npz", "-o",
                   tmp_path / "out.npy"), 2, "out.npy", "2 outputs", "class", ".npz")


def test_predict_image_folders_grey_and_rgb_resized(tmp_path, cnn_fxn):
    rng = np.random.default_rng(5)
    # grey model (32x32x1) on 20x24 PNGs
    grey = write_pngs(tmp_path / "grey", rng.integers(0, 256, (6, 20, 24), dtype=np.uint8), "L")
    ok(run_main("predict", cnn_fxn[0], grey, "-o", tmp_path / "g.npy", "--image-range", "0", "1"))
    xg = read_images(grey, (32, 32, 1), image_range=(0.0, 1.0))
    assert np.array_equal(np.load(tmp_path / "g.npy"), fixnet.load(cnn_fxn[0]).predict(xg))
    # RGB model (7x6x3) on 14x12 PNGs; constant colours survive the resize exactly
    colours = rng.integers(0, 256, (5, 3), dtype=np.uint8)
    imgs = np.broadcast_to(colours[:, None, None, :], (5, 14, 12, 3)).copy()
    rgb = write_pngs(tmp_path / "rgb", imgs, "RGB")
    x = read_images(rgb, (7, 6, 3), image_range=(-1.0, 1.0))
    want = colours.astype(np.float32) * np.float32(2 / 255) - 1
    assert np.allclose(x, want[:, None, None, :], atol=1e-6)
    d = np.load(fixture_path("layers_depthwise_k3", ".npz"))
    qm = fixnet.load(RGB).quantize(d["x_calib"], progress=False)
    qm.save(tmp_path / "rgb.fxn")
    ok(run_main("predict", tmp_path / "rgb.fxn", rgb, "-o", tmp_path / "c.npy", "--image-range", "-1",
           "1"))
    assert np.array_equal(np.load(tmp_path / "c.npy"), qm.predict(x))


def test_predict_bad_arguments_and_damaged_models(tmp_path, cnn_fxn, cnn_x_test):
    fxn, (xpath, _) = cnn_fxn[0], cnn_x_test
    out = tmp_path / "p.npy"
    error_line(cli("predict", fxn, xpath, "-o", out, "--batch", "0"), 2, "--batch")
    error_line(run_main("predict", fxn, xpath, "-o", out, "--threads", "100000"), 2, "--threads")
    error_line(run_main("predict", fxn, xpath, "-o", out, "--output", "int16"), 2, "--output")
    error_line(run_main("predict", fxn, xpath, "-o", tmp_path / "p.csv"), 2, "-o", ".npy")
    error_line(run_main("predict", fxn, xpath, "-o", xpath), 2, "INPUT", "overwrite")
    error_line(run_main("predict", fxn, xpath, "-o", out, "--image-range", "0", "1"), 2,
               "--image-range")
    for i, path in enumerate(damaged_copies(tmp_path, fxn)):
        error_line((cli if i == 1 else run_main)("predict", path, xpath, "-o", out), 1, path)
    assert not os.path.exists(out)


# -- fixnet/cli/data.py -------------------------------------------------------------------------

def test_read_data_npy_npz_and_their_errors(tmp_path):
    from fixnet.errors import DataFileError
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.save(tmp_path / "x.npy", x)
    assert np.array_equal(read_data(tmp_path / "x.npy", [(3, 4)]), x)
    mm = read_data(tmp_path / "x.npy", [(3, 4)], mmap=True)
    assert isinstance(mm, np.memmap) and np.array_equal(mm, x)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(2))
    assert np.array_equal(read_data(f"{tmp_path}/d.npz:x", [(3, 4)]), x)
    # without a name: the array named as the model's input
    assert np.array_equal(read_data(tmp_path / "d.npz", [(3, 4)], ["x"]), x)
    # several inputs: named in order after the colon
    a, b = read_data(f"{tmp_path}/d.npz:x,y", [(3, 4), ()])
    assert np.array_equal(a, x) and b.shape == (2,)

    def message(*args, **kw):
        with pytest.raises(DataFileError) as e:
            read_data(*args, **kw)
        return str(e.value)
    assert "add a first dimension" in message(tmp_path / "x.npy", [(2, 3, 4)])
    assert "(N,) + (4, 3)" in message(tmp_path / "x.npy", [(4, 3)])
    assert "only an .npz" in message(f"{tmp_path}/x.npy:x", [(3, 4)])
    assert "2 inputs" in message(tmp_path / "x.npy", [(3, 4), (3, 4)], ["a", "b"])
    np.save(tmp_path / "s.npy", np.array([["a", "b"]]))
    assert "not numbers" in message(tmp_path / "s.npy", [(2,)])
    np.save(tmp_path / "empty.npy", np.zeros((0, 3, 4), np.float32))
    assert "no samples" in message(tmp_path / "empty.npy", [(3, 4)])
    assert "no such file" in message(tmp_path / "nothere.npy", [(3, 4)])
    os.makedirs(tmp_path / "empty_folder")
    assert "no image files" in message(tmp_path / "empty_folder", [(8, 8, 1)])
    assert "not an image" in message(tmp_path / "empty_folder", [(8, 8, 2)])


def test_read_images_grey_rgb_resize_and_range(tmp_path):
    # constant images survive a bilinear resize exactly: the values are known
    grey = write_pngs(tmp_path / "g", np.full((3, 5, 9), 51, np.uint8) * np.arange(1, 4,
                      dtype=np.uint8)[:, None, None], "L")
    x = read_images(grey, (4, 6, 1), image_range=(0.0, 1.0))
    assert x.shape == (3, 4, 6, 1) and x.dtype == np.float32
    assert np.allclose(x[:, 0, 0, 0], [0.2, 0.4, 0.6]) and np.ptp(x, axis=(1, 2, 3)).max() == 0
    # a 2-D input (height, width) takes grey images too; the default range is 0-255
    assert np.allclose(read_images(grey, (2, 2))[:, 0, 0], [51, 102, 153])
    # an RGB image for a grey model is converted (ITU-R 601 luma), and the reverse
    rgb = write_pngs(tmp_path / "c", np.full((1, 4, 4, 3), (255, 0, 0), np.uint8), "RGB")
    assert read_images(rgb, (4, 4, 1))[0, 0, 0, 0] == pytest.approx(76, abs=1)
    assert np.allclose(read_images(grey, (4, 4, 3))[0], 51)
