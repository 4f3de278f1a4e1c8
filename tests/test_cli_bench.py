"""`fixnet bench` as a user runs it, in a child process (`python -m fixnet.cli bench ...`):
the JSON it writes holds every field and its numbers agree with each other and with the
machine; --compare prints saved results side by side; bad arguments and damaged files end in
one line on stderr with the right exit code."""
import datetime
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

import fixnet
from conftest import fixture_path
from fixnet.cost import macs, model_macs

DATA = os.path.join(os.path.dirname(fixnet.__file__), "data")
DEMO_H5 = os.path.join(DATA, "digits_mlp.h5")
DEMO_CALIB = os.path.join(DATA, "digits_mlp.npz") + ":x_calib"
LATENCY_KEYS = ("p50", "p90", "p99", "mean", "min", "max")


def _cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    env.pop("FIXNET_ISA", None)
    return subprocess.run([sys.executable, "-m", "fixnet.cli"] + [str(a) for a in args],
                          capture_output=True, text=True, cwd=str(cwd), env=env, timeout=120)


def _one_line_error(r, code, *names):
    """The run failed with ``code`` and one line on stderr naming each of ``names``."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fixnet bench: error: "), r.stderr
    for name in names:
        assert str(name) in lines[0], (name, lines[0])


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def demo_fxn(work):
    """The demo model quantized on its calibration data and saved as .fxn."""
    d = np.load(os.path.join(DATA, "digits_mlp.npz"))
    path = work / "digits.fxn"
    fixnet.load(DEMO_H5).quantize(d["x_calib"]).save(str(path))
    return path


@pytest.fixture(scope="module")
def demo_run(work):
    """`fixnet bench` on the demo model with its calibration data, --json."""
    out = work / "demo.json"
    r = _cli(["bench", DEMO_H5, "--calib", DEMO_CALIB, "--runs", 25, "--json", out], work)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out) as f:
        return r, json.load(f), out


def _check_path(p, batch, macs_per_sample, runs):
    lat = p["latency_ms"]
    assert set(LATENCY_KEYS) <= set(lat)
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"]
    assert p["runs"] == runs
    assert p["throughput_per_s"] == pytest.approx(batch / (lat["p50"] * 1e-3), rel=1e-9)
    assert p["macs_per_sample"] == macs_per_sample
    assert p["gmacs_per_s"] == pytest.approx(macs_per_sample * batch / (lat["p50"] * 1e-3) / 1e9,
                                             rel=1e-9)
    assert p["peak_rss_bytes"] > 10 * 2 ** 20          # Python + NumPy alone take more
    assert "predict" in p["timed"]


def test_bench_json_of_the_demo_model_holds_every_field_consistently(demo_run, demo_fxn, work):
    r, res, out = demo_run
    assert res["schema"] == "fixnet-bench/1"
    stamp = datetime.datetime.strptime(res["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - stamp).total_seconds()) < 600

    # the machine: as `fixnet info --system` describes it
    info = _cli(["info", "--system"], work)
    assert info.returncode == 0, info.stderr
    fields = dict(line.split(": ", 1) for line in info.stdout.splitlines() if ": " in line)
    h = res["host"]
    assert h["isa"] == fields["kernel build in use"].split()[0]
    assert fields["CPU"].startswith(f"{h['cpu']} ({h['machine']}), {h['cores']} cores")
    assert h["cores"] == os.cpu_count() and h["hostname"] == socket.gethostname()
    assert h["fixnet"] == fixnet.__version__ and h["numpy"] == np.__version__
    assert h["python"] == ".".join(map(str, sys.version_info[:3]))

    m = res["model"]
    with open(DEMO_H5, "rb") as f:
        assert m["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert (m["file"], m["format"], m["inputs"], m["outputs"]) == (
        "digits_mlp.h5", "keras-h5", [[64]], [[10]])
    float_macs = macs(fixnet.load(DEMO_H5).graph)
    int8_macs = model_macs(fixnet.load(str(demo_fxn)))
    assert m["macs_per_sample"] == int8_macs > 0
    assert res["calibration"] == {"kind": "data", "data": DEMO_CALIB, "samples": 200,
                                  "input_range": None}
    s = res["settings"]
    assert (s["batch"], s["threads"], s["runs"]) == (1, 1, 25)

    _check_path(res["int8"], 1, int8_macs, 25)
    _check_path(res["float"], 1, float_macs, 25)
    assert res["int8"]["arena_bytes"] == fixnet.load(str(demo_fxn)).memory_plan(1).peak_bytes
    # on Linux the high-water mark is reset before each path: its peak is that of its runs
    scope = "path" if sys.platform.startswith("linux") else "process"
    assert res["int8"]["peak_rss_scope"] == res["float"]["peak_rss_scope"] == scope
    assert res["load_peak_rss_bytes"] > 10 * 2 ** 20
    assert res["speedup"] == pytest.approx(
        res["float"]["latency_ms"]["p50"] / res["int8"]["latency_ms"]["p50"], rel=1e-12)
    assert res["float_note"] is None

    # the printed table shows the same numbers
    text = r.stdout
    assert f"calibration: {DEMO_CALIB} (200 samples)" in text
    p50_row = next(line for line in text.splitlines() if "latency p50, ms" in line)
    assert f"{res['int8']['latency_ms']['p50']:.4g}" in p50_row
    assert f"{res['float']['latency_ms']['p50']:.4g}" in p50_row
    assert f"{res['speedup']:.2f}x" in text and f"kernel build: {h['isa']}" in text
    assert f"results written to {out}" in text


def test_bench_records_batch_and_threads_on_a_two_input_model_quantized_data_free(work):
    out = work / "multi.json"
    model = fixture_path("multi_io_k3")
    r = _cli(["bench", model, "--input-range", 0, 1, "--batch", 4, "--threads", 2, "--runs", 20,
              "--no-float", "--json", out], work)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out) as f:
        res = json.load(f)
    assert (res["settings"]["batch"], res["settings"]["threads"]) == (4, 2)
    with pytest.warns(fixnet.DataFreeWarning):
        qm = fixnet.load(model).quantize(None, input_range=(0.0, 1.0))
    _check_path(res["int8"], 4, model_macs(qm), 20)
    assert res["model"]["inputs"] == [list(s) for s in qm.input_shapes] and len(qm.inputs) == 2
    assert res["settings"]["input_ranges"] == [list(qp.real_range) for qp in qm.input_qparams]
    assert res["calibration"]["kind"] == "data-free" and res["calibration"]["input_range"] == [0, 1]
    assert res["float"] is None and res["speedup"] is None and "--no-float" in res["float_note"]
    assert "calibration: data-free" in r.stdout and "DataFreeWarning" not in r.stderr
    assert "batch 4, int8 threads 2, 3 warm-up calls" in r.stdout

    # without --calib or --input-range this model (no Rescaling at its input) cannot be quantized
    _one_line_error(_cli(["bench", model, "--runs", 5], work), 1, model, "--calib",
                    "--input-range")


def test_bench_of_a_fxn_file_has_no_float_path_and_says_so(demo_fxn, work):
    out = work / "fxn.json"
    r = _cli(["bench", demo_fxn, "--runs", 20, "--json", out], work)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out) as f:
        res = json.load(f)
    assert res["float"] is None and res["speedup"] is None
    assert "no float weights" in res["float_note"] and res["float_note"] in r.stdout
    assert res["model"]["format"] == "fxn" and res["calibration"]["kind"] == "fxn"
    _check_path(res["int8"], 1, model_macs(fixnet.load(str(demo_fxn))), 20)
    assert "float (NumPy)" not in r.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the high-water mark is "
                    "reset through /proc/self/clear_refs (Linux)")
def test_peak_rss_of_the_runs_leaves_out_what_quantizing_needed(work):
    # a 51 MB calibration array is read, used and dropped before the runs: the peak while
    # loading and quantizing holds it, the peak of the int8 runs does not
    x = np.load(os.path.join(DATA, "digits_mlp.npz"))["x_calib"]
    calib = work / "big_calib.npy"
    np.save(calib, x[np.random.default_rng(0).integers(0, len(x), 200_000)])
    out = work / "big.json"
    r = _cli(["bench", DEMO_H5, "--calib", calib, "--runs", 20, "--no-float", "--json", out],
             work)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out) as f:
        res = json.load(f)
    assert res["load_peak_rss_bytes"] - res["int8"]["peak_rss_bytes"] > 30 * 2 ** 20, r.stdout
    assert res["int8"]["peak_rss_bytes"] > 10 * 2 ** 20


def test_compare_prints_saved_results_side_by_side(demo_run, work):
    _, res, a = demo_run
    # the same model benchmarked on a second machine: its file as that machine would write it
    other = json.loads(json.dumps(res))
    other["host"].update(hostname="pi5", cpu="Cortex-A76", isa="dotprod", cores=4)
    other["int8"]["latency_ms"] = {k: v / 2 for k, v in res["int8"]["latency_ms"].items()}
    other["int8"]["throughput_per_s"] = res["int8"]["throughput_per_s"] * 2
    b = work / "pi5.json"
    b.write_text(json.dumps(other))
    r = _cli(["bench", "--compare", a, b], work)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for label in ("pi5", "Cortex-A76", "dotprod", "demo.json", res["host"]["hostname"],
                  res["host"]["isa"], "digits_mlp.h5"):
        assert label in out, (label, out)

    def row(label):
        """The cells of the table row that starts with ``label``."""
        line = next(line for line in out.splitlines() if line.lstrip("│ ").startswith(label))
        return [c.strip() for c in line.split("│")[1:-1]]
    assert row("int8 p50, ms")[1:] == [f"{res['int8']['latency_ms']['p50']:.4g}",
                                       f"{res['int8']['latency_ms']['p50'] / 2:.4g}"]
    assert row("cores")[1:] == [str(res["host"]["cores"]), "4"]
    assert row("batch")[1:] == ["1", "1"]
    assert row("int8 throughput vs the first")[1:] == ["1.00x", "2.00x"]
    assert row("int8 speed-up over float")[1:] == [f"{res['speedup']:.2f}x"] * 2


def test_compare_of_different_models_has_no_ratio(demo_run, work, demo_fxn):
    _, _, a = demo_run
    out = work / "fxn2.json"
    assert _cli(["bench", demo_fxn, "--runs", 20, "--json", out], work).returncode == 0
    r = _cli(["bench", "--compare", a, out], work)
    assert r.returncode == 0, r.stderr
    assert "int8 throughput vs the first" not in r.stdout and "sha256 differs" in r.stdout
    assert "n/a" in r.stdout                                 # the .fxn has no float p50


@pytest.mark.parametrize("args, names", [
    ([DEMO_H5, "--runs", "0"], ["--runs", "0 is not"]),
    ([DEMO_H5, "--batch", "-2"], ["--batch"]),
    ([DEMO_H5, "--threads", "two"], ["--threads", "two"]),
    ([DEMO_H5, "--threads", "100000"], ["--threads", "100000"]),
    ([DEMO_H5, "--warmup", "1.5"], ["--warmup"]),
    ([DEMO_H5, "--input-range", "1", "0"], ["--input-range", "LO"]),
    ([DEMO_H5, "--calib", "x.npy", "--input-range", "0", "1"], ["--input-range", "--calib"]),
    ([DEMO_H5, "--compare", "a.json"], ["--compare", "MODEL"]),
    (["--compare"], ["--compare"]),
    ([], ["MODEL", "--compare"]),
])
def test_bad_arguments_are_one_line_usage_errors(args, names, work):
    _one_line_error(_cli(["bench"] + args, work), 2, *names)


def test_usage_errors_that_depend_on_the_model_file(demo_fxn, work, demo_run):
    _one_line_error(_cli(["bench", demo_fxn, "--calib", DEMO_CALIB], work), 2, "--calib",
                    demo_fxn)
    arch = fixture_path("cnn_digits_k3", ".json")
    _one_line_error(_cli(["bench", arch], work), 2, arch, "--weights")
    _one_line_error(_cli(["bench", "--compare", demo_run[2], "--batch", "2"], work), 2,
                    "--batch", "--compare")


def test_damaged_model_files_fail_with_one_line_naming_the_file(demo_fxn, work):
    with open(DEMO_H5, "rb") as f:
        head = f.read(4000)
    truncated = work / "truncated.h5"
    truncated.write_bytes(head)
    _one_line_error(_cli(["bench", truncated, "--runs", 5], work), 1, truncated)

    data = bytearray(demo_fxn.read_bytes())
    data[len(data) // 2:len(data) // 2 + 32] = bytes(32)
    damaged = work / "damaged.fxn"
    damaged.write_bytes(bytes(data))
    _one_line_error(_cli(["bench", damaged, "--runs", 5], work), 1, damaged)
    _one_line_error(_cli(["bench", work / "absent.h5"], work), 1, "absent.h5")
    no_folder = work / "absent" / "out.json"
    _one_line_error(_cli(["bench", demo_fxn, "--json", no_folder], work), 2, "--json", no_folder)   # a usage error, as for every command


def test_damaged_or_foreign_json_in_compare_fails_naming_the_file(demo_run, work):
    _, res, good = demo_run
    cut = work / "cut.json"
    cut.write_text(good.read_text()[:200])
    foreign = work / "foreign.json"
    foreign.write_text(json.dumps({"schema": "something-else/1", "rows": []}))
    missing = work / "missing.json"
    partial = json.loads(json.dumps(res))
    del partial["int8"]["latency_ms"]["p99"]
    missing.write_text(json.dumps(partial))
    newer = work / "newer.json"
    newer.write_text(json.dumps(dict(res, schema="fixnet-bench/2")))
    binary = work / "binary.json"
    shutil.copy(DEMO_H5, binary)
    for bad, extra in ((cut, "JSON"), (foreign, "not a fixnet bench result"),
                       (missing, "int8.latency_ms.p99"), (newer, "fixnet-bench/2"),
                       (binary, "JSON"), (work / "absent.json", "no such file")):
        _one_line_error(_cli(["bench", "--compare", good, bad], work), 1, bad, extra)
