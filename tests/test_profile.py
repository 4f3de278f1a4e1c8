"""qm.profile(x): the time of each step of one pass, with its MACs and share (fixnet/profile.py).

Fixture models quantized on their calibration data: one row per kernel call (every step
that is not a view of its input), in the pass's order; MACs as fixnet.cost counts them,
summing to the model's; positive times; shares summing to 100 %. Speed is never asserted."""
import json

import numpy as np
import pytest

import fixnet
from conftest import as_list, fixture_data, fixture_path
from fixnet.cost import model_macs, step_macs
from fixnet.profile import Profile, StepTime
from fixnet.runtime import MAX_ROWS_PER_PASS, PROFILE_MAX_RUNS, PROFILE_MIN_RUNS
from thread_policies import policy

_cache = {}


def quantized(name):
    """The fixture quantized on its calibration data, and its test inputs."""
    if name not in _cache:
        d = fixture_data(name)
        calib = as_list(d, "x_calib")
        qm = fixnet.load(fixture_path(name)).quantize(calib[0] if len(calib) == 1 else calib,
                                                      progress=False)
        _cache[name] = qm, [np.ascontiguousarray(x, np.float32) for x in as_list(d, "x_test")]
    return _cache[name]


def rows(tests, n):
    xs = [t[np.arange(n) % t.shape[0]] for t in tests]
    return xs[0] if len(xs) == 1 else xs


def check_profile(qm, prof, batch, lengths=()):
    shapes = qm.shapes_for(lengths)
    steps = qm.steps_for(lengths)
    kernels = [(i, s) for i, s in enumerate(steps) if not s.alias]
    assert isinstance(prof, Profile) and all(isinstance(r, StepTime) for r in prof.steps)
    assert [r.index for r in prof.steps] == [i for i, _ in kernels]
    assert prof.views == [s.layer or s.name for s in steps if s.alias]
    for r, (_, s) in zip(prof.steps, kernels):
        out = shapes[s.outputs[0]]
        assert (r.name, r.layer, r.op) == (s.name, s.layer, s.op)
        assert r.shape == (batch,) + tuple(out)
        assert r.macs == batch * step_macs(s, out, shapes[s.inputs[0]] if s.inputs else None)
        assert r.time_us > 0
        if r.macs:
            assert r.gmacs_per_s == pytest.approx(r.macs / (r.time_us * 1e3))
        else:
            assert r.gmacs_per_s is None
    assert prof.macs == sum(r.macs for r in prof.steps) == batch * model_macs(qm, lengths) > 0
    assert sum(r.share for r in prof.steps) == pytest.approx(100.0)
    for r in prof.steps:
        assert r.share == pytest.approx(100.0 * r.time_us / prof.steps_us)
    assert prof.pass_us > 0 and prof.batch == batch and prof.lengths == tuple(lengths)
    assert prof.isa == fixnet._kernels.ISA


@pytest.mark.parametrize("name, batch", [("cnn_digits_k3", 1), ("kws_dscnn_k3", 3),
                                         ("mobilenet_small_tfk2", 2)])
def test_profile_has_a_row_per_kernel_call_with_the_models_macs(name, batch):
    qm, tests = quantized(name)
    prof = qm.profile(rows(tests, batch), runs=15)
    assert prof.runs == 15 and prof.num_threads == 1
    check_profile(qm, prof, batch)
    assert all(r.parts == 1 for r in prof.steps)


def test_profile_table_shows_every_row_and_the_totals():
    qm, tests = quantized("cnn_digits_k3")
    prof = qm.profile(rows(tests, 1), runs=10)
    text = prof.table()
    assert str(prof) == text
    lines = text.splitlines()
    assert lines[0] == (f"profile of {qm.name}: batch 1, num_threads 1, median of 10 rounds, "
                        f"kernels {fixnet._kernels.ISA}")
    for r in prof.steps:
        row = next(line for line in lines if f" {r.layer} " in line and f" {r.op} " in line
                   and f" {r.index} " in line)
        assert "x".join(map(str, r.shape)) in row and f"{r.share:.1f}%" in row
        assert (f"{r.macs:,}" if r.macs else " - ") in row
    total = next(line for line in lines if "total (sum of steps)" in line)
    assert f"{prof.macs:,}" in total and "100.0%" in total
    assert any(line.startswith("whole pass: ") for line in lines)
    assert prof.views and f"not listed): {', '.join(prof.views)}" in text


def test_profile_to_dict_is_json_with_the_rows():
    qm, tests = quantized("kws_dscnn_k3")
    prof = qm.profile(rows(tests, 2), runs=5)
    d = json.loads(json.dumps(prof.to_dict()))
    assert d["batch"] == 2 and d["runs"] == 5 and d["macs"] == prof.macs
    assert d["pass_us"] == prof.pass_us and d["steps_us"] == pytest.approx(prof.steps_us)
    assert [s["index"] for s in d["steps"]] == [r.index for r in prof.steps]
    assert [s["macs"] for s in d["steps"]] == [r.macs for r in prof.steps]
    assert [s["share_pct"] for s in d["steps"]] == [r.share for r in prof.steps]


def test_profile_with_threads_says_how_each_step_is_split():
    qm, tests = quantized("cnn_digits_k3")
    x = rows(tests, 4)
    with policy(0, threads=4):        # every step with tasks and MACs split, up to 4 parts
        prof = qm.profile(x, runs=5, num_threads=3)
        qm.predict(x)
        arena = qm._pools[4, ()].free[0]
        assert [r.parts for r in prof.steps] == arena.parts(3)
    check_profile(qm, prof, 4)
    assert prof.num_threads == 3 and max(r.parts for r in prof.steps) == 3
    header = prof.table().splitlines()[2]
    assert "parts" in header


def test_profile_leaves_predict_and_its_results_alone():
    qm, tests = quantized("kws_dscnn_k3")
    x = rows(tests, 3)
    want = qm.predict(x, output="int8")
    stats = qm.arena_stats()
    qm.profile(x, runs=3)
    assert qm.arena_stats() == stats          # its own arena, not one of predict's
    assert qm.predict(x, output="int8").tobytes() == want.tobytes()


def test_profile_of_a_two_input_model_and_of_an_input_of_any_length():
    qm, tests = quantized("multi_io_k3")
    check_profile(qm, qm.profile(rows(tests, 2), runs=3), 2)
    qm, tests = quantized("anylen_conv_k3")
    x = tests[0][:2, :7]
    prof = qm.profile(x, runs=3)
    assert prof.lengths == qm.lengths_of([x]) and prof.lengths
    check_profile(qm, prof, 2, prof.lengths)


def test_profile_takes_as_many_rounds_as_fill_about_a_second_by_default():
    qm, tests = quantized("mlp_func_k3")
    prof = qm.profile(rows(tests, 1))
    assert PROFILE_MIN_RUNS <= prof.runs <= PROFILE_MAX_RUNS
    check_profile(qm, prof, 1)


@pytest.mark.parametrize("runs", [0, -3, 2.5, "10", True])
def test_profile_refuses_bad_runs_naming_them(runs):
    qm, tests = quantized("mlp_func_k3")
    with pytest.raises(fixnet.ArgumentError, match=r"profile: runs must be an integer >= 1"):
        qm.profile(rows(tests, 1), runs=runs)


@pytest.mark.parametrize("num_threads", [0, 1.0, "2", None])
def test_profile_refuses_bad_num_threads_naming_them(num_threads):
    qm, tests = quantized("mlp_func_k3")
    with pytest.raises(fixnet.ArgumentError, match=r"profile: num_threads must be an integer"):
        qm.profile(rows(tests, 1), num_threads=num_threads)


def test_profile_refuses_what_predict_refuses_and_more_than_one_pass():
    qm, tests = quantized("mlp_func_k3")
    x = rows(tests, 1)
    with pytest.raises(fixnet.InputDtypeError, match="input"):
        qm.profile("not an array")
    with pytest.raises(fixnet.InputDtypeError, match="input"):
        qm.profile(None)
    with pytest.raises(fixnet.InputShapeError, match="input"):
        qm.profile(x[:, :-1])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(fixnet.NonFiniteInputError, match="input"):
        qm.profile(bad)
    with pytest.raises(fixnet.InputShapeError, match=r"profile: x has 0 rows"):
        qm.profile(x[:0])
    big = rows(tests, MAX_ROWS_PER_PASS + 1)
    with pytest.raises(fixnet.InputShapeError, match=rf"profile: x has {MAX_ROWS_PER_PASS + 1} rows"):
        qm.profile(big)
    assert qm.profile(big[:MAX_ROWS_PER_PASS], runs=2).batch == MAX_ROWS_PER_PASS
