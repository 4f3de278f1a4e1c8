"""The README's first command, `fixnet demo`, run as a user runs it: the installed console
script when this Python has one (pip install .), else `python -m fixnet.cli`, in a child
process; it exits 0 and prints accuracies that are the bundled model's."""
import os
import re
import subprocess
import sys
import sysconfig

import numpy as np

import fixnet


def _demo_command():
    """The `fixnet` script pip installed for this interpreter, else the module."""
    script = os.path.join(sysconfig.get_path("scripts"), "fixnet")
    if os.name != "nt" and os.access(script, os.X_OK):
        return [script, "demo"]
    return [sys.executable, "-m", "fixnet.cli", "demo"]


def _percentages(text, row):
    """The percentages printed on the table row labelled ``row``, as fractions."""
    for line in text.splitlines():
        if row in line:
            return [float(v) / 100 for v in re.findall(r"(\d+\.\d+)%", line)]
    raise AssertionError(f"no row {row!r} in the demo's output:\n{text}")


def test_fixnet_demo_runs_and_prints_the_bundled_models_accuracies(tmp_path):
    # the child imports the fixnet this test imported (the installed one, or this source tree)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    r = subprocess.run(_demo_command(), capture_output=True, text=True, cwd=str(tmp_path),
                       env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "fixnet demo: a Keras" in out and "360 test images, 200 calibration images" in out
    assert os.path.join(os.path.dirname(fixnet.__file__), "data", "digits_mlp.h5") in out

    d = np.load(os.path.join(os.path.dirname(fixnet.__file__), "data", "digits_mlp.npz"))
    y, kf, tfl = d["y_test"], d["keras_float"], d["tflite_int8"]
    acc_keras, acc_tfl = (kf.argmax(1) == y).mean(), (tfl.argmax(1) == y).mean()

    acc_float, acc_int8, acc_tfl_printed = _percentages(out, "test accuracy")
    assert acc_tfl_printed == round(acc_tfl, 4)               # the stored TFLite results
    assert acc_float == round(acc_keras, 4)                   # the float path is Keras's
    assert acc_int8 >= acc_float - 0.01, out                  # int8 within a point of float
    agree_float, agree_int8, agree_tfl = _percentages(out, "top-1 agreement with Keras float")
    assert agree_float == 1.0
    assert agree_int8 >= agree_tfl - 0.005, out
    assert _percentages(out, "top-1 agreement with TFLite int8")[0] >= 0.99, out
    assert "int32 overflow proof" in out and "batch-1 latency" in out


def _cli(args, tmp_path, **env_extra):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    env.pop("FIXNET_ISA", None)
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "fixnet.cli"] + args, capture_output=True,
                          text=True, cwd=str(tmp_path), env=env, timeout=120)


def _field(text, label):
    for line in text.splitlines():
        if line.startswith(label + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no line {label!r} in:\n{text}")


def test_info_system_prints_the_kernel_build_chosen_at_import_and_the_cpu(tmp_path):
    from fixnet import _kernels

    r = _cli(["info", "--system"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    runnable = _kernels.available_builds()
    # without FIXNET_ISA the child picks the first build this CPU runs, as this process did
    # unless it was forced
    assert _field(r.stdout, "kernel build in use").split()[0] == runnable[0]
    assert _field(r.stdout, "kernel builds this CPU runs") == ", ".join(runnable)
    installed = _field(r.stdout, "kernel builds installed").split(", ")
    assert set(runnable) <= set(installed) and "baseline" in installed
    cpu = _field(r.stdout, "CPU")
    assert f"{os.cpu_count()} cores" in cpu
    assert os.path.dirname(fixnet.__file__) in r.stdout


def test_info_system_names_a_build_forced_by_fixnet_isa(tmp_path):
    r = _cli(["info", "--system"], tmp_path, FIXNET_ISA="baseline")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _field(r.stdout, "kernel build in use").startswith("baseline (forced by FIXNET_ISA")


def test_info_prints_macs_per_layer_and_in_all(tmp_path):
    from conftest import fixture_path
    from fixnet.cost import macs

    path = fixture_path("kws_dscnn_k3")
    r = _cli(["info", path], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    total = macs(fixnet.load(path).graph)
    assert f"{total:,} multiply-accumulates per sample" in r.stdout
    r = _cli(["info"], tmp_path)
    assert r.returncode == 2 and "--system" in r.stderr


def _one_line(r, code, *names):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in names:
        assert n in lines[0], (n, lines[0])


def test_info_and_demo_errors_are_one_line_with_their_exit_code(tmp_path):
    # usage errors: exit 2, one line naming the argument
    _one_line(_cli(["info", "--sytem"], tmp_path), 2, "--sytem")
    _one_line(_cli(["demo", "extra"], tmp_path), 2, "extra")
    _one_line(_cli(["nosuchcommand"], tmp_path), 2, "nosuchcommand")
    # a damaged model file: exit 1, one line naming the file; --debug adds the traceback
    bad = tmp_path / "damaged.h5"
    from conftest import fixture_path
    bad.write_bytes(open(fixture_path("cnn_digits_k3"), "rb").read()[:4000])
    _one_line(_cli(["info", str(bad)], tmp_path), 1, "damaged.h5")
    r = _cli(["--debug", "info", str(bad)], tmp_path)
    assert r.returncode == 1 and "Traceback" in r.stderr and "damaged.h5" in r.stderr
    _one_line(_cli(["info", str(tmp_path / "absent.h5")], tmp_path), 1, "absent.h5")
