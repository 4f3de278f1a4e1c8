"""The HTML report (fixnet/html_report.py) and `fixnet report`, without a browser: the page
holds every layer, names the layer the error report says adds the most noise, is
self-contained, and the command's errors are one line with the right exit code.
(tests/test_report_browser.py renders the page in headless Chromium.)"""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fixnet
from conftest import fixture_path

pytest.importorskip("matplotlib")

from fixnet.errors import FixnetError  # noqa: E402
from fixnet.html_report import html_report, _matplotlib  # noqa: E402

DATA = os.path.join(os.path.dirname(fixnet.__file__), "data")
MLP = os.path.join(DATA, "digits_mlp.h5")
MLP_NPZ = os.path.join(DATA, "digits_mlp.npz")
CNN = fixture_path("cnn_digits_k3")
CNN_NPZ = fixture_path("cnn_digits_k3", ".npz")


def _model(h5, npz, n=64):
    d = np.load(npz)
    fm = fixnet.load(h5)
    x = d["x_calib"][:n]
    return fm, fm.quantize(x), x, d


@pytest.fixture(scope="module")
def mlp():
    return _model(MLP, MLP_NPZ, 200)


@pytest.fixture(scope="module")
def cnn():
    return _model(CNN, CNN_NPZ)


def _noise(db):
    return 0.0 if db == math.inf else 10.0 ** (-db / 10.0)


def _costliest_layer(qm, x):
    """Recomputed from qm.report(x) for a chain of steps: per Keras layer, the relative noise
    power of its last step's output minus that of the tensor feeding its first step."""
    recs = qm.report(x).records
    qp = qm.tensors[qm.inputs[0]].qparams
    x64 = np.asarray(x, np.float64)
    err = x64 - qp.dequantize(qp.quantize(x))
    sqnr = {qm.inputs[0]: math.inf if not err.any() else
            10 * math.log10(np.sum(x64 ** 2) / np.sum(err.astype(np.float64) ** 2))}
    sqnr.update({r["tensor"]: r["sqnr_db"] for r in recs})
    added = {}
    for s in qm.steps:
        assert len(s.inputs) == 1, "the fixtures used here are chains"
        if s.layer not in added:
            added[s.layer] = [sqnr[s.inputs[0]], None]
        added[s.layer][1] = sqnr[s.outputs[0]]
    costs = {k: _noise(o) - _noise(i) for k, (i, o) in added.items()}
    return max(costs, key=costs.get), costs


def _external_refs(page):
    """src/href values and url(...)s that are not data: URIs or in-page anchors."""
    refs = re.findall(r'''(?:src|href|xlink:href)\s*=\s*["']([^"']*)["']''', page)
    refs += re.findall(r"url\(\s*['\"]?([^)'\"]*)", page)
    return [r for r in refs if not (r.startswith("data:") or r.startswith("#"))]


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_report_has_every_layer_names_the_costliest_and_is_self_contained(which, request):
    fm, qm, x, d = request.getfixturevalue(which)
    rep = html_report(qm, x, float_model=fm, eval_x=d["x_test"], labels=d["y_test"])
    page = rep.html
    # every step of the int8 network has its row in the per-layer table, with its SQNR
    for r in qm.report(x).records:
        row = re.search(r"<tr[^>]*><td>" + re.escape(r["layer"]) + r"</td><td>" + re.escape(r["op"])
                        + r"</td><td>" + re.escape(r["tensor"]) + r"</td><td[^>]*>([^<]*)</td>", page)
        assert row, (r["layer"], r["op"])
        assert row.group(1) == ("∞" if r["sqnr_db"] == math.inf else f"{r['sqnr_db']:.1f}")
    # the conclusion names the layer that adds the most noise according to qm.report
    worst, costs = _costliest_layer(qm, x)
    assert rep.conclusion.startswith(f"layer '{worst}' "), (rep.conclusion, costs)
    assert f"layer &#x27;{worst}&#x27;" in page
    # nothing is fetched: no external src/href/url(), no http(s) anywhere
    assert _external_refs(page) == []
    assert not re.search(r"https?://", page.replace("http://www.w3.org/", ""))
    assert "<script" not in page and "<link" not in page and "@import" not in page
    # the plots it says it has are in the page: PNGs as data URIs, SVGs inline
    imgs = re.findall(r"<img [^>]*src=\"data:image/png;base64,([A-Za-z0-9+/=]+)\"", page)
    assert len(imgs) == rep.plots["png"] == page.count("<img ")
    assert page.count("<svg") == rep.plots["svg"] >= 3
    import base64
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in imgs)
    weighted = [s for s in qm.steps if getattr(s, "w_q", None) is not None]
    n_act = sum(1 for s in qm.steps if s.op != "reshape")
    assert rep.plots["png"] == len(weighted) + n_act
    # output-level numbers on the evaluation data
    (out,) = rep.outputs
    p_f, p_q = fm.predict(d["x_test"]), qm.predict(d["x_test"])
    assert out["top1_agreement"] == np.mean(p_f.argmax(1) == p_q.argmax(1))
    assert out["accuracy_int8"] == np.mean(p_q.argmax(1) == d["y_test"])
    assert f"{100 * out['accuracy_int8']:.2f}" in page
    json.dumps(rep.to_dict())      # the numbers serialise


def test_weight_ranges_marked_are_the_ones_the_int8_weights_use(cnn):
    from fixnet.html_report import _weight_data
    fm, qm, x, d = cnn
    deq = qm.dequantized_weights()
    data = _weight_data(qm)
    assert [s.name for s, *_ in data] == list(deq)
    for s, w, ranges, source in data:
        assert source == "float model"
        k = deq[s.name]["kernel"].reshape(-1, ranges.size)
        # every dequantized weight lies inside its channel's marked range, and the channel's
        # largest one reaches it within a code (scaled to their largest |w|; adaptive rounding
        # may round that one down)
        assert np.all(np.abs(k) <= ranges * (1 + 1e-6))
        assert np.all(np.abs(k).max(axis=0) >= ranges * (126 / 127) * (1 - 1e-6))
        # the float weights are the layer's, and each channel's range is its largest |w|
        assert np.allclose(np.abs(w).max(axis=0), ranges, rtol=1e-6)
    # with nearest rounding, each float weight is within half a step of its int8 value
    qn = fm.quantize(x, weight_rounding="nearest", progress=False)
    deq = qn.dequantized_weights()
    for s, w, ranges, source in _weight_data(qn):
        k = deq[s.name]["kernel"].reshape(-1, ranges.size)
        assert np.all(np.abs(w - k) <= ranges / 127 * 0.5 * (1 + 1e-4))


def test_report_of_a_model_without_its_float_graph_gives_each_layers_own_error(mlp, tmp_path):
    """A .fxn file has no float graph: the page says so, and each layer's SQNR is its own
    (ErrorReport reference "layer"); the worst layer named is the one with the lowest."""
    fm, qm, x, d = mlp
    qm.save(str(tmp_path / "m.fxn"))
    q2 = fixnet.load(str(tmp_path / "m.fxn"))
    rep = html_report(q2, x)
    assert rep.to_dict()["reference"] == "layer"
    assert "No float model" in rep.html and "of its own" in rep.conclusion
    layers = [r for r in rep.to_dict()["layers"] if r["sqnr_db"] is not None]
    assert {r["op"] for r in layers} >= {"dense"}
    worst = min(layers, key=lambda r: r["sqnr_db"])
    assert f"'{worst['layer']}'" in rep.conclusion


def test_missing_matplotlib_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(FixnetError, match=r"pip install 'fixnet\[plot\]'"):
        _matplotlib()


# -- the command --------------------------------------------------------------------------------------

def _cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    env.pop("FIXNET_ISA", None)
    return subprocess.run([sys.executable, "-m", "fixnet.cli"] + args, capture_output=True,
                          text=True, cwd=str(cwd), env=env, timeout=300)


def _one_line_error(r, code, *names):
    assert r.returncode == code, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in names:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_fixnet_report_writes_the_page_and_the_json(tmp_path):
    out, js = tmp_path / "r.html", tmp_path / "r.json"
    r = _cli(["report", MLP, "--calib", MLP_NPZ + ":x_calib", "--eval", MLP_NPZ + ":x_test",
              "--eval-labels", MLP_NPZ + ":y_test", "--html", str(out), "--json", str(js),
              "--method", "minmax", "--weight-rounding", "nearest"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads(js.read_text())
    assert rec["conclusion"] in r.stdout and f"wrote {out}" in r.stdout
    page = out.read_text()
    assert rec["conclusion"].replace("'", "&#x27;") in page
    assert "method minmax, weight rounding nearest, bias correction on" in page
    # the numbers are those of the same quantization done in Python
    fm = fixnet.load(MLP)
    d = np.load(MLP_NPZ)
    qm = fm.quantize(d["x_calib"], method="minmax", weight_rounding="nearest", progress=False)
    assert rec["samples"] == len(d["x_test"])    # a small model: every sample by default
    want = qm.report(d["x_test"]).records
    assert [(r_["layer"], r_["op"], r_["saturated"]) for r_ in rec["layers"]] == \
        [(w["layer"], w["op"], w["saturated"]) for w in want]
    assert np.allclose([r_["sqnr_db"] for r_ in rec["layers"]], [w["sqnr_db"] for w in want])
    acc = np.mean(qm.predict(d["x_test"]).argmax(1) == d["y_test"])
    assert rec["outputs"][0]["accuracy_int8"] == pytest.approx(acc)
    assert f"accuracy float {100 * rec['outputs'][0]['accuracy_float']:.2f}%" in r.stdout


def test_fixnet_report_errors_are_one_line(tmp_path):
    calib = MLP_NPZ + ":x_calib"
    html = str(tmp_path / "r.html")
    # usage errors: exit 2
    _one_line_error(_cli(["report", MLP, "--calib", calib, "--html", html, "--method", "bogus"],
                         tmp_path), 2, "--method")
    _one_line_error(_cli(["report", MLP, "--calib", calib], tmp_path), 2, "--html")
    # a damaged model file: exit 1, naming it
    bad = tmp_path / "damaged.h5"
    bad.write_bytes(open(MLP, "rb").read()[:5000])
    _one_line_error(_cli(["report", str(bad), "--calib", calib, "--html", html], tmp_path), 1,
                    str(bad))
    # a missing calibration file, a missing array: exit 1, naming them
    _one_line_error(_cli(["report", MLP, "--calib", str(tmp_path / "nope.npy"), "--html", html],
                         tmp_path), 1, "--calib", "nope.npy")
    _one_line_error(_cli(["report", MLP, "--calib", MLP_NPZ + ":x_nothing", "--html", html],
                         tmp_path), 1, "--calib", "x_nothing")
    # labels that do not match the evaluation data
    _one_line_error(_cli(["report", MLP, "--calib", calib, "--eval", MLP_NPZ + ":x_calib",
                          "--eval-labels", MLP_NPZ + ":y_test", "--html", html], tmp_path), 1,
                    "--eval-labels", "y_test")
    # a .fxn file has no float model: quantization options and labels need the Keras file
    fm = fixnet.load(MLP)
    fm.quantize(np.load(MLP_NPZ)["x_calib"], progress=False).save(str(tmp_path / "m.fxn"))
    _one_line_error(_cli(["report", str(tmp_path / "m.fxn"), "--calib", calib, "--html", html,
                          "--method", "mse"], tmp_path), 2, "m.fxn", "--method", "Keras model")
    # an output folder that does not exist: a usage error (exit 2) before the work, as in every command
    _one_line_error(_cli(["report", MLP, "--calib", calib, "--html",
                          str(tmp_path / "no" / "r.html")], tmp_path), 2, "--html")
    assert not os.path.exists(html)


def test_fixnet_report_of_a_tflite_file(tmp_path):
    """`fixnet report model.tflite`: no quantization (the file's own), the page and the JSON
    with each layer's own SQNR, the conclusion naming a layer."""
    from conftest import fixture_path
    tfl = fixture_path("tflite/mlp_seq_k3.int8io", ".tflite")
    out, js = tmp_path / "r.html", tmp_path / "r.json"
    r = _cli(["report", tfl, "--calib", fixture_path("mlp_seq_k3", ".npz") + ":x_test", "--html",
              str(out), "--json", str(js)], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "adds the most quantization noise of its own" in r.stdout
    d = json.loads(js.read_text())
    assert d["reference"] == "layer" and d["outputs"] == []
    dense = [l for l in d["layers"] if l["op"] == "dense"]
    assert len(dense) == 3 and all(20 < l["sqnr_db"] < 80 for l in dense)
    assert "No float model" in out.read_text()
