"""int8 models whose inputs have a dimension of any length (None): quantized once, run at
any length (fixnet/lengths.py, QuantizedModel's pools per (batch size, lengths)).

Fixtures by real Keras (models/make_anylength_models.py, both writers): ``anylen_conv``
(Input(None, 8) -> Conv1D same -> Dense per step -> GlobalMaxPooling1D -> Dense softmax), the
digits images read as sequences of rows, with Keras float outputs at 8 and 5 rows;
``anylen_two`` (two inputs, each of its own length); ``anylen_strided`` (a stride-2 Conv1D:
refused in int8).
"""
import json
import os
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

import fixnet
import fixnet.fxn
from fixnet import runtime
from fixnet.errors import (ArgumentError, InputShapeError, ModelFileError,
                           UnsupportedLayerError)
from conftest import rewrite_fxn_manifest, fixture_data, fixture_path, sqnr_db

WRITERS = ("k3", "tfk2")


def rows_of_length(x, length):
    """Real sequences of ``length`` rows from the digits images x (N, 8, 8): the first rows
    of each image, and beyond 8 rows the next image's rows (a longer real sequence)."""
    if length <= 8:
        return np.ascontiguousarray(x[:, :length])
    more = np.roll(x, -1, axis=0)[:, :length - 8]
    return np.ascontiguousarray(np.concatenate([x, more], axis=1))


@pytest.fixture(scope="module", params=WRITERS)
def conv(request):
    name = f"anylen_conv_{request.param}"
    d = fixture_data(name)
    fm = fixnet.load(fixture_path(name))
    return fm, fm.quantize(d["x_calib"], progress=False), d


@pytest.fixture(scope="module")
def two():
    d = fixture_data("anylen_two_k3")
    fm = fixnet.load(fixture_path("anylen_two_k3"))
    return fm, fm.quantize([d["x_calib_0"], d["x_calib_1"]], progress=False), d


def test_the_float_model_matches_keras_at_both_stored_lengths(conv):
    fm, _, d = conv
    assert fm.input_shapes == [(None, 8)]
    for key, x in (("keras_float", d["x_test"]), ("short_keras_float", d["short_x_test"])):
        np.testing.assert_allclose(fm.predict(x), d[key], rtol=1e-5, atol=1e-6)


def test_the_int8_model_records_which_dims_follow_the_length(conv):
    _, qm, _ = conv
    assert qm.length_symbols == [("rows", 0)]
    assert qm.input_shapes == [(None, 8)]
    seq = [t for t, s in qm.tensors.items() if None in s.shape]
    assert "rows" in seq and len(seq) >= 3          # input, conv, per-step dense
    for t, s in qm.tensors.items():
        assert s.length_of == tuple(0 if d is None else None for d in s.shape), t
    assert qm.shapes_for((13,))["conv"] == (13, 32)


@pytest.mark.parametrize("length", [8, 5, 12, 1])
def test_kernels_equal_the_oracle_bit_for_bit_at_every_length(conv, length):
    _, qm, d = conv
    x = rows_of_length(d["x_test"], length)
    codes = qm.predict(x, output="int8")
    assert codes.shape == (len(x), 10)
    np.testing.assert_array_equal(codes, qm.predict_oracle(x))
    # and checked execution (int64 accumulators) gives the same bits
    np.testing.assert_array_equal(qm.predict(x[:40], output="int8", check_overflow=True),
                                  codes[:40])


def test_int8_is_close_to_keras_float_at_both_stored_lengths(conv):
    _, qm, d = conv
    for key, x in (("keras_float", d["x_test"]), ("short_keras_float", d["short_x_test"])):
        y = qm.predict(x)
        # measured: 41.7 dB at 8 rows, 40.2 dB at 5 rows, top-1 agreement 100% and 99.7%
        # (both writers: their trained weights came out the same)
        assert sqnr_db(d[key], y) > 33, key
        assert np.mean(y.argmax(1) == d[key].argmax(1)) >= 0.98, key
        assert abs(np.mean(y.argmax(1) == d["y_test"]) -
                   np.mean(d[key].argmax(1) == d["y_test"])) <= 0.01, key


@pytest.mark.parametrize("length", [8, 5, 12, 1])
def test_batch_one_equals_batch_n_at_every_length(conv, length):
    _, qm, d = conv
    x = rows_of_length(d["x_test"][:24], length)
    whole = qm.predict(x, output="int8")
    one_by_one = np.concatenate([qm.predict(x[i:i + 1], output="int8") for i in range(len(x))])
    np.testing.assert_array_equal(whole, one_by_one)


def test_a_length_gives_the_same_results_whatever_ran_before(conv):
    """Separate runs of each length == runs interleaved with other lengths (pools, fast path
    and resolved steps never leak between lengths)."""
    _, qm, d = conv
    xs = {n: rows_of_length(d["x_test"][:16], n) for n in (3, 8, 11)}
    fresh, fresh_float = {}, {}
    for n, x in xs.items():
        alone = fixnet.runtime.model_from_bytes(fixnet.fxn.encode_model(qm))
        fresh[n] = alone.predict(x, output="int8")
        alone = fixnet.runtime.model_from_bytes(fixnet.fxn.encode_model(qm))
        fresh_float[n] = alone.predict(x)            # the float output, on its own fresh model
    for _ in range(2):                       # the second round takes the fast path
        for n in (8, 3, 11, 3, 8):
            np.testing.assert_array_equal(qm.predict(xs[n], output="int8"), fresh[n])
            np.testing.assert_array_equal(qm.predict(xs[n]), fresh_float[n])


def test_a_batch_holds_one_length(conv):
    _, qm, d = conv
    ragged = [d["x_test"][0], d["x_test"][1, :5]]
    with pytest.raises(fixnet.FixnetError):
        qm.predict(ragged)


def test_a_length_of_zero_is_an_input_shape_error_naming_the_input(conv):
    fm, qm, _ = conv
    x = np.zeros((2, 0, 8), np.float32)
    with pytest.raises(InputShapeError, match="input 'rows'.*at least one step"):
        qm.predict(x)
    with pytest.raises(InputShapeError, match="input 'rows'"):
        qm.predict_oracle(x)
    with pytest.raises(fixnet.FixnetError):     # the float model cannot run it either
        fm.predict(x)


def test_large_batches_run_in_chunks_at_any_length(conv):
    _, qm, d = conv
    n = runtime.MAX_ROWS_PER_PASS + 44
    x = rows_of_length(np.concatenate([d["x_test"]] * 2)[:n], 6)
    codes = qm.predict(x, output="int8")
    np.testing.assert_array_equal(codes, qm.predict_oracle(x))
    empty = qm.predict(x[:0])
    assert empty.shape == (0, 10)


def test_threads_alternating_lengths_give_the_serial_bits(conv):
    _, qm, d = conv
    xs = [rows_of_length(d["x_test"][:8], n) for n in (2, 8, 5, 12)]
    serial = [qm.predict(x, output="int8") for x in xs]
    errors, barrier = [], threading.Barrier(4)

    def work(k):
        try:
            barrier.wait()
            for i in range(40):
                j = (k + i) % len(xs)
                if not np.array_equal(qm.predict(xs[j], output="int8"), serial[j]):
                    errors.append((k, i))
        except Exception as e:      # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_pools_are_kept_per_batch_size_and_length_within_the_limit(conv):
    _, qm, d = conv
    q = fixnet.runtime.model_from_bytes(fixnet.fxn.encode_model(qm))
    for n in (2, 3, 4, 5, 6, 7):
        q.predict(rows_of_length(d["x_test"][:3], n))
    stats = q.arena_stats()
    assert len(stats) == runtime.BATCH_SIZES_KEPT
    assert set(stats) == {(3, (n,)) for n in (4, 5, 6, 7)}
    fast_lengths = {shape[1] for _, shape in q._fast}           # keys: (output, x.shape)
    assert fast_lengths == {4, 5, 6, 7}, "dropped pools leave the fast path"


def test_memory_plan_at_two_lengths(conv):
    _, qm, _ = conv
    p5, p12 = qm.memory_plan(2, length=5), qm.memory_plan(2, length=12)
    assert p5.placement("conv").nbytes == 2 * 5 * 32
    assert p12.placement("conv").nbytes == 2 * 12 * 32
    assert p12.peak_bytes > p5.peak_bytes
    assert p5.placement("probs").nbytes == p12.placement("probs").nbytes == 20
    with pytest.raises(ArgumentError, match="length="):
        qm.memory_plan(2)
    with pytest.raises(ArgumentError, match="length"):
        qm.memory_plan(2, length=0)
    mlp = fixnet.load(fixture_path("mlp_seq_k3")).quantize(
        fixture_data("mlp_seq_k3")["x_calib"], progress=False)
    with pytest.raises(ArgumentError, match="fixed input shapes"):
        mlp.memory_plan(1, length=4)


def test_fxn_save_and_load_are_bit_identical_at_two_lengths(conv, tmp_path):
    _, qm, d = conv
    path = tmp_path / "anylen.fxn"
    qm.save(path)
    back = fixnet.load(path)
    assert back.input_shapes == [(None, 8)]
    assert back.tensors["conv"].length_of == (0, None)
    for x in (d["x_test"], d["short_x_test"]):
        np.testing.assert_array_equal(back.predict(x, output="int8"), qm.predict(x, output="int8"))
    manifest = fixnet.fxn.read_manifest(str(path))
    entry = next(t for t in manifest["tensors"] if t["name"] == "conv")
    assert entry["shape"] == [None, 32] and entry["length_of"] == [0, None]
    assert "length_of" not in next(t for t in manifest["tensors"] if t["name"] == "probs")


_rewrite_manifest = rewrite_fxn_manifest


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["tensors"][1].pop("length_of"), "length_of"),
    (lambda m: m["tensors"][1].__setitem__("length_of", [None, 0]), "length_of"),
    (lambda m: m["tensors"][1].__setitem__("length_of", [3, None]), "length"),
    (lambda m: m["tensors"][-1].__setitem__("shape", [None]), "length_of"),
    (lambda m: m["tensors"][1].__setitem__("shape", [None, "x"]), "shape"),
])
def test_the_fxn_reader_refuses_lengths_that_do_not_hold_together(conv, tmp_path, edit, message):
    _, qm, _ = conv
    good, bad = tmp_path / "good.fxn", tmp_path / "bad.fxn"
    qm.save(good)
    _rewrite_manifest(good, bad, edit)
    with pytest.raises(ModelFileError, match=message):
        fixnet.load(bad)


def test_strided_conv1d_at_any_length_is_refused_naming_the_layer():
    for w in WRITERS:
        name = f"anylen_strided_{w}"
        fm = fixnet.load(fixture_path(name))
        d = fixture_data(name)
        np.testing.assert_allclose(fm.predict(d["short_x_test"]), d["short_keras_float"],
                                   rtol=1e-5, atol=1e-6)     # the float model runs
        with pytest.raises(UnsupportedLayerError, match="'conv_s2' \\(Conv1D\\).*is 4, 6, 7") as e:
            fm.quantize(d["x_calib"], progress=False)
        assert [layer for layer, _, _ in e.value.layers] == ["conv_s2"]


def test_two_inputs_each_of_its_own_length(two):
    fm, qm, d = two
    assert qm.length_symbols == [("rows", 0), ("cols", 0)]
    assert qm.tensors["conv"].length_of == (0, None)
    assert qm.tensors["per_col"].length_of == (1, None)
    for xs, key in (([d["x_test_0"], d["x_test_1"]], "keras_float_0"),
                    ([d["short_x_test_0"], d["short_x_test_1"]], "short_keras_float_0")):
        y = qm.predict(xs)
        assert sqnr_db(d[key], y) > 30, key
        np.testing.assert_array_equal(qm.predict(xs, output="int8"), qm.predict_oracle(xs))
    x, c = rows_of_length(d["x_test_0"][:20], 3), d["x_test_1"][:20, :7]
    np.testing.assert_array_equal(qm.predict([x, c], output="int8"), qm.predict_oracle([x, c]))
    assert qm.memory_plan(1, length=(3, 7)).placement("per_col").nbytes == 7 * 24
    with pytest.raises(ArgumentError, match="one per dimension"):
        qm.memory_plan(1, length=(3, 7, 2))


def _cli(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    env.pop("FIXNET_ISA", None)
    return subprocess.run([sys.executable, "-m", "fixnet.cli"] + args, capture_output=True,
                          text=True, cwd=str(tmp_path), env=env, timeout=120)


def test_commands_on_an_any_length_model(tmp_path):
    h5, npz = fixture_path("anylen_conv_k3"), fixture_path("anylen_conv_k3", ".npz")
    d = fixture_data("anylen_conv_k3")
    np.save(tmp_path / "x5.npy", d["short_x_test"][:30])
    r = _cli(["quantize", h5, "--calib", f"{npz}:x_calib", "-o", "m.fxn"], tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cli(["predict", "m.fxn", "x5.npy", "-o", "p.npy"], tmp_path)
    assert r.returncode == 0, r.stderr
    qm = fixnet.load(str(tmp_path / "m.fxn"))
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), qm.predict(d["short_x_test"][:30]))
    r = _cli(["inspect", "m.fxn"], tmp_path)
    assert r.returncode == 0 and "Tx32" in r.stdout, r.stderr
    r = _cli(["bench", "m.fxn", "--runs", "3"], tmp_path)           # no length to time at
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--length" in r.stderr
    r = _cli(["bench", "m.fxn", "--runs", "3", "--length", "12", "--json", "b.json"], tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["settings"]["lengths"] == [12]
    assert result["int8"]["arena_bytes"] == qm.memory_plan(1, length=12).peak_bytes
    r = _cli(["bench", fixture_path("mlp_seq_k3"), "--input-range", "0", "1", "--length", "3"],
             tmp_path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "--length" in r.stderr and "Traceback" not in r.stderr


def test_data_free_quantization_at_any_length():
    d = fixture_data("anylen_conv_k3")
    fm = fixnet.load(fixture_path("anylen_conv_k3"))
    with pytest.warns(fixnet.DataFreeWarning):
        qm = fm.quantize(None, input_range=(0.0, 1.0))
    for key, x in (("keras_float", d["x_test"]), ("short_keras_float", d["short_x_test"])):
        np.testing.assert_array_equal(qm.predict(x, output="int8"), qm.predict_oracle(x))
        assert sqnr_db(d[key], qm.predict(x)) > 30, key         # measured: 36.2 and 36.0 dB


def test_a_layer_whose_int8_parameters_depend_on_the_length_is_refused_naming_it():
    """A global average divides by the length: its int8 multiplier cannot serve every length
    (the float model runs it; int8 refuses, naming the layer)."""
    d = fixture_data("anylen_conv_k3")
    fm = fixnet.load(fixture_path("anylen_conv_k3"))
    (pool,) = [n for n in fm.graph.nodes if n.op == "global_pool"]
    pool.attrs["kind"] = "avg"                    # GlobalAveragePooling1D in its place
    assert fm.predict(d["short_x_test"][:3]).shape == (3, 10)
    with pytest.raises(UnsupportedLayerError, match="'gmax'.*any length") as e:
        fm.quantize(d["x_calib"], progress=False)
    assert [layer for layer, _, _ in e.value.layers] == ["gmax"]
