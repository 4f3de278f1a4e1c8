"""bench/peers.py on .tflite files given on --models (a user's own, a benchmark's): which files
--models means, the random inputs drawn for them (int8, uint8, float), fixnet's runner on a
file, the exactness check, the tables and the summary; a run without TensorFlow (fixnet alone,
a file fixnet refuses skipped); and one real run beside TFLite where TensorFlow is importable."""
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import MODELS, PEERS, peerbench

import fixnet

models = peerbench("models")
tflite_inputs = peerbench("tflite_inputs")
exactness = peerbench("exactness")
file_tables = peerbench("file_tables")
verdicts = peerbench("verdicts")
fixnet_runners = peerbench("runners.fixnet_runners")

TFLITE_DIR = pathlib.Path(MODELS) / "tflite"
INT8IO = TFLITE_DIR / "cnn_digits_k3.int8io.tflite"
UINT8IO = TFLITE_DIR / "cnn_digits_k3.uint8io.tflite"
HAS_TF = importlib.util.find_spec("tensorflow") is not None


def _exit_message(excinfo):
    return str(excinfo.value.code)


# --- which files --models means ---------------------------------------------------------------

def test_a_tflite_path_is_taken_as_it_is_and_once():
    assert models.model_paths([str(INT8IO), str(INT8IO)]) == [INT8IO]


def test_a_folder_means_each_tflite_file_in_it_sorted(tmp_path):
    for name in ("b.tflite", "a.tflite"):
        shutil.copy(INT8IO, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "sub").mkdir()
    shutil.copy(INT8IO, tmp_path / "sub" / "c.tflite")           # not its subfolders
    assert models.model_paths([str(tmp_path)]) == [tmp_path / "a.tflite", tmp_path / "b.tflite"]
    # beside a fixture name, in the order given
    paths = models.model_paths(["mlp_seq_k3", str(tmp_path / "b.tflite")])
    assert [p.name for p in paths] == ["mlp_seq_k3.h5", "b.tflite"]


def test_missing_files_and_other_kinds_of_file_exit_naming_them(tmp_path):
    with pytest.raises(SystemExit) as e:
        models.model_paths([str(tmp_path / "missing.tflite")])
    assert "no model file" in _exit_message(e) and "missing.tflite" in _exit_message(e)
    other = tmp_path / "model.onnx"
    other.write_bytes(b"\0")
    with pytest.raises(SystemExit) as e:
        models.model_paths([str(other)])
    assert "model.onnx is not a .h5 or .tflite file" in _exit_message(e)
    with pytest.raises(SystemExit) as e:
        models.model_paths([str(tmp_path)])                     # a folder without .tflite files
    assert "no .tflite file in the folder" in _exit_message(e) and str(tmp_path) in _exit_message(e)
    with pytest.raises(SystemExit) as e:
        models.model_paths([str(tmp_path / "nowhere")])
    assert "no such file or folder" in _exit_message(e)


# --- the inputs drawn for a file --------------------------------------------------------------

def test_input_specs_are_the_files_own_input_types():
    (spec,) = tflite_inputs.input_specs(fixnet.load(str(INT8IO)))
    assert spec.dtype == np.int8 and spec.shape == (32, 32, 1) and spec.float_range is None
    (spec,) = tflite_inputs.input_specs(fixnet.load(str(UINT8IO)))
    assert spec.dtype == np.uint8 and spec.describe() == "uint8[32x32x1]"


@pytest.mark.parametrize("dtype, lo, hi", [(np.int8, -128, 127), (np.uint8, 0, 255)])
def test_integer_inputs_are_seeded_codes_over_the_whole_range(dtype, lo, hi):
    spec = tflite_inputs.InputSpec("x", (50, 10), dtype)
    (x,) = tflite_inputs.draw_inputs([spec], 8, seed=0)
    assert x.dtype == dtype and x.shape == (8, 50, 10)
    assert x.min() == lo and x.max() == hi                        # 4000 draws over 256 codes
    (again,) = tflite_inputs.draw_inputs([spec], 8, seed=0)
    (other,) = tflite_inputs.draw_inputs([spec], 8, seed=1)
    np.testing.assert_array_equal(x, again)
    assert not np.array_equal(x, other)
    (first,) = tflite_inputs.draw_inputs([spec], 3, seed=0)      # fewer samples: a prefix
    np.testing.assert_array_equal(first, x[:3])


def test_float_inputs_are_floats_over_the_quantized_range():
    ranged = tflite_inputs.InputSpec("f", (640,), np.float32, float_range=(-84.0, 19.0))
    plain = tflite_inputs.InputSpec("g", (16,), np.float32)
    x, y = tflite_inputs.draw_inputs([ranged, plain], 20)
    assert x.dtype == np.float32 and x.min() >= -84.0 and x.max() <= 19.0
    assert x.min() < -80 and x.max() > 15                          # spread over all of it
    assert y.dtype == np.float32 and y.shape == (20, 16) and abs(float(y.mean())) < 0.5


def test_several_inputs_draw_from_their_own_streams():
    spec = tflite_inputs.InputSpec("a", (4,), np.int8)
    a, b = tflite_inputs.draw_inputs([spec, spec], 5)
    assert not np.array_equal(a, b)


def test_a_float_inputs_range_comes_from_its_quantization():
    class QP:
        scale, zero_point, bits = 0.5, 10, 8

    class QM:
        inputs, input_shapes, input_qparams = ["x"], [(3,)], [QP()]
        io_types = {"x": "float32"}

    (spec,) = tflite_inputs.input_specs(QM())
    assert spec.dtype == np.float32 and spec.float_range == (-69.0, 58.5)


def test_a_file_whose_batch_axis_is_fixed_is_timed_at_batch_1_only():
    spec = tflite_inputs.InputSpec("x", (3,), np.int8)
    fixed = tflite_inputs.TfliteFileInputs(INT8IO, "f", [spec], [1, 4], 6, batch_free=False)
    assert fixed.timed == [1] and fixed.batches == [1, 6] and fixed.dropped == [4]
    assert "batch 1 only" in fixed.batch_note() and "batch 4 not timed" in fixed.batch_note()
    free = tflite_inputs.TfliteFileInputs(INT8IO, "f", [spec], [4, 1], 6, batch_free=True)
    assert free.timed == [1, 4] and free.batches == [1, 4, 6] and free.batch_note() == ""
    np.testing.assert_array_equal(free.x[4][0], free.x[6][0][:4])   # one draw, cut to size


# --- fixnet on a file, and the exactness check ------------------------------------------------

@pytest.mark.parametrize("path, dtype", [(INT8IO, np.int8), (UINT8IO, np.uint8)])
def test_fixnets_runner_takes_and_gives_the_files_own_types(path, dtype):
    qm = fixnet.load(str(path))
    specs = tflite_inputs.input_specs(qm)
    batched = tflite_inputs.TfliteFileInputs(path, "f", specs, [1], 5, batch_free=True)
    r = fixnet_runners.fixnet_file_runner(batched, qm)
    y = r.calls[5]()
    assert r.key == "fixnet_tflite" and y.dtype == dtype and y.shape == (5, 10)
    # a file TFLite does not resize: the same samples, one at a time
    one_by_one = tflite_inputs.TfliteFileInputs(path, "f", specs, [1], 5, batch_free=False)
    np.testing.assert_array_equal(fixnet_runners.fixnet_file_runner(one_by_one, qm).calls[5](), y)


def test_compare_outputs_counts_equal_values_and_the_largest_difference():
    a = [np.array([[1, 2, 3]], np.int8), np.array([0.5], np.float32)]
    b = [np.array([[1, 2, -3]], np.int8), np.array([0.5], np.float32)]
    c = exactness.compare_outputs(a, b)
    assert (c["equal"], c["total"], c["max_abs_diff"]) == (3, 4, 6.0)
    assert [o["equal"] for o in c["outputs"]] == [2, 1]
    assert "error" in exactness.compare_outputs(a[0], np.zeros((1, 4), np.int8))
    assert "error" in exactness.compare_outputs(a, a[:1])


# --- tables and summary -----------------------------------------------------------------------

def _file(ratio_xnn, equal=40, total=40):
    timing = {"1": {"median_us": 10.0, "fixnet_over": ratio_xnn, "gmacs": 1.0}}
    return {"kind": "tflite", "what": "x.tflite", "file": "x.tflite", "inputs": ["int8[4]"],
            "outputs": 1, "accuracy_samples": 4, "macs_per_sample": 1000, "batch_note": "",
            "runners": {"fixnet_tflite": {"label": "", "status": "ok", "note": "",
                                          "batches": {"1": dict(timing["1"], fixnet_over=1.0)}},
                        "tflite_xnnpack": {"label": "", "status": "ok", "note": "",
                                           "batches": timing}},
            "exactness": {"tflite_ref": {"equal": equal, "total": total, "max_abs_diff":
                                         0.0 if equal == total else 2.0}}}


def _results():
    return {"settings": {"batches": [1]}, "machine": {"fixnet_isa": "avx2"},
            "models": {"a": _file(0.5), "b": _file(1.5, equal=39),
                       "c": {"kind": "tflite", "what": "c.tflite", "file": "c.tflite",
                             "runners": {}, "skipped": "fixnet refuses it: LSTM"}}}


def test_the_files_tables_show_fixnet_over_xnnpack_exactness_and_skipped_files():
    tables = file_tables.tflite_file_tables(_results()["models"])
    (timing, header, rows, _), (_, eheader, erows, _), (_, _, srows, _) = tables
    assert "fixnet .tflite / XNNPACK" in header
    assert [r[0] for r in rows] == ["a", "b"]
    assert rows[0][header.index("fixnet .tflite / XNNPACK")] == "0.50x"
    assert erows[1][eheader.index("= TFLite ref")] == "39/40 (97.5%)"
    assert srows == [["c", "fixnet refuses it: LSTM"]]


def test_the_summary_takes_fixnet_over_xnnpack_per_file_and_exactness():
    results = _results()
    verdicts.set_verdicts(results)
    v = results["verdicts_tflite_files"]
    assert results["verdicts"] is None                    # issue 9's bars: fixtures only
    assert v["fixnet_over_xnnpack"] == {"a": 0.5, "b": 1.5}
    assert v["geomean"] == pytest.approx(0.75 ** 0.5) and v["above_1.25"] == ["b 1.50x"]
    assert v["differ_from_ref"] == ["b 39/40 (max |diff| 2)"] and v["skipped"] == ["c"]
    assert [ok for ok, _ in v["lines"]] == [False, True, False]


# --- whole runs -------------------------------------------------------------------------------

def _run(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    r = subprocess.run([sys.executable, PEERS, *args, "--micro", "none", "--quick",
                        "--json", str(out_json), "--markdown", str(out_md)],
                       capture_output=True, text=True, env=env, timeout=600, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out_json.read_text()), out_md.read_text(), r.stdout


def test_a_file_fixnet_refuses_is_skipped_and_the_run_goes_on(tmp_path):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a flatbuffer")
    res, md, out = _run(["--models", str(bad), str(INT8IO),
                         "--skip", "tflite_xnnpack,tflite_builtin,tflite_ref"], tmp_path)
    skipped = res["models"]["broken"]
    assert skipped["skipped"].startswith("fixnet cannot load it") or \
        skipped["skipped"].startswith("fixnet refuses it")
    assert "not a TFLite model" in skipped["skipped"] and "broken.tflite" not in skipped["skipped"]
    f = res["models"]["cnn_digits_k3.int8io"]["runners"]["fixnet_tflite"]
    assert f["status"] == "ok" and f["batches"]["1"]["fixnet_over"] == 1.0
    assert "| broken | fixnet" in md and "Your .tflite files" in out


@pytest.mark.skipif(not HAS_TF, reason="TensorFlow is not installed (the TFLite peers need it)")
def test_a_committed_tflite_file_beside_tflite(tmp_path):
    res, md, _ = _run(["--models", str(UINT8IO), "--accuracy-samples", "8"], tmp_path)
    m = res["models"]["cnn_digits_k3.uint8io"]
    assert m["kind"] == "tflite" and m["inputs"] == ["uint8[32x32x1]"] and m["batch_free"]
    assert {k: r["status"] for k, r in m["runners"].items()} == {
        "fixnet_tflite": "ok", "tflite_xnnpack": "ok", "tflite_builtin": "ok", "tflite_ref": "ok"}
    ref = m["exactness"]["tflite_ref"]
    assert ref["equal"] == ref["total"] == 80 and ref["max_abs_diff"] == 0.0
    ratio = m["runners"]["tflite_xnnpack"]["batches"]["1"]["fixnet_over"]
    assert ratio > 0
    v = res["verdicts_tflite_files"]
    assert v["fixnet_over_xnnpack"] == {"cnn_digits_k3.uint8io": ratio}
    assert "fixnet .tflite / XNNPACK" in md
    assert "| cnn_digits_k3.uint8io | uint8[32x32x1] | 8 | 80/80 | 0 |" in md
