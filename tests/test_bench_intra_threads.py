"""bench/intra_threads.py runs and prints its table: a row per (fixture, batch) with the
1-thread time and, per num_threads, the ratio and the steps split (the numbers themselves
are measured there, never asserted here)."""
import importlib.util
import os

from conftest import MODELS

SCRIPT = os.path.join(os.path.dirname(MODELS), "bench", "intra_threads.py")


def load_script():
    spec = importlib.util.spec_from_file_location("intra_threads_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_fixture_list_names_existing_cnn_and_mlp_models():
    script = load_script()
    assert len(script.MODELS) == 20
    for name in script.MODELS:
        assert os.path.exists(os.path.join(MODELS, name + ".h5")), name


def test_intra_threads_prints_a_row_per_model_and_batch(capsys):
    lines = load_script().main(["--models", "mlp_func_k3,cnn_digits_tfk2", "--batches", "1,3",
                                "--threads", "1,2", "--rounds", "2", "--min-time", "0.001"])
    out = capsys.readouterr().out
    assert lines[0] == ("| model | batch | 1 thread, ms/call | 2 threads: ratio (range), split "
                        "steps | MACs per part (2 parts) |")
    rows = [line.split(" | ") for line in lines[2:]]
    assert [(r[0].lstrip("| "), r[1]) for r in rows] == [
        ("mlp_func_k3", "1"), ("mlp_func_k3", "3"), ("cnn_digits_tfk2", "1"),
        ("cnn_digits_tfk2", "3")]
    for r in rows:
        assert float(r[2]) > 0
        ratio, split = r[3].split(", ")
        assert float(ratio.split(" ")[0]) > 0 and int(split) >= 0
    assert "load average after:" in out and "thread policy" in out
