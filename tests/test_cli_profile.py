"""`fixnet bench MODEL --profile` as a user runs it (a child process): the per-step table of
the int8 pass after the latency table, and the same rows in the --json file under "profile"
(schema fixnet-bench/1 unchanged: files without the key still read)."""
import json
import os
import subprocess
import sys

import pytest

import fixnet
from conftest import fixture_data, fixture_path
from fixnet.cost import model_macs


def _cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    env.pop("FIXNET_ISA", None)
    return subprocess.run([sys.executable, "-m", "fixnet.cli"] + [str(a) for a in args],
                          capture_output=True, text=True, cwd=str(cwd), env=env, timeout=300)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    work = tmp_path_factory.mktemp("profile")
    out = work / "kws.json"
    r = _cli(["bench", fixture_path("kws_dscnn_k3"), "--calib",
              fixture_path("kws_dscnn_k3", ".npz") + ":x_calib", "--batch", 2, "--runs", 12,
              "--no-float", "--profile", "--json", out], work)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out) as f:
        return r, json.load(f), work


def test_bench_profile_prints_a_row_per_step_and_saves_them(profiled):
    r, res, _ = profiled
    prof = res["profile"]
    assert res["schema"] == "fixnet-bench/1"
    assert (prof["batch"], prof["runs"], prof["num_threads"]) == (2, 12, 1)
    assert prof["macs"] == sum(s["macs"] for s in prof["steps"]) \
        == 2 * res["model"]["macs_per_sample"] > 0
    assert sum(s["share_pct"] for s in prof["steps"]) == pytest.approx(100.0)
    assert all(s["time_us"] > 0 and s["shape"][0] == 2 for s in prof["steps"])
    qm = fixnet.load(fixture_path("kws_dscnn_k3")).quantize(
        fixture_data("kws_dscnn_k3")["x_calib"], progress=False)
    kernels = [(i, s) for i, s in enumerate(qm.steps) if not s.alias]
    assert [(s["index"], s["layer"], s["op"]) for s in prof["steps"]] == [
        (i, s.layer, s.op) for i, s in kernels]
    assert res["model"]["macs_per_sample"] == model_macs(qm)

    text = r.stdout
    assert "profile of " in text and "total (sum of steps)" in text and "whole pass:" in text
    table = text[text.index("profile of "):]
    for s in prof["steps"]:
        assert f" {s['layer']} " in table
    # the profile comes after the latency table and before the note about the JSON file
    assert text.index("latency p50, ms") < text.index("profile of ") < text.index("results written")


def test_compare_prints_files_with_and_without_a_profile(profiled):
    _, res, work = profiled
    old = dict(res)
    del old["profile"]                # a file written before --profile existed
    with open(work / "old.json", "w") as f:
        json.dump(old, f)
    r = _cli(["bench", "--compare", work / "kws.json", work / "old.json"], work)
    assert r.returncode == 0, r.stderr
    assert "fixnet bench results" in r.stdout


def test_profile_is_a_run_option_not_one_of_compare(profiled):
    _, _, work = profiled
    r = _cli(["bench", "--compare", work / "kws.json", "--profile"], work)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith(
        "fixnet bench: error: --profile applies to a benchmark run, not to --compare")
