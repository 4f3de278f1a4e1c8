"""The portable int8 model file (.fxn): every fixture survives save/load bit for bit, the file
holds int8/int32 data and no float weights, and every kind of damage or foreign content is a
ModelFileError naming the file, never a crash, never code run."""
import hashlib
import io
import json
import os
import struct
import zipfile

import numpy as np
import pytest

import fixnet
from fixnet import fxn
from fixnet.runtime import load_fxn
from fixnet.errors import ModelFileError
from fixnet.runtime import QuantizedModel
from fixnet.step import Step
from fixnet.fxn.stored import store_array, stored_spec
from conftest import ALL_FIXTURES, as_list, fixture_data, fixture_path
import fxn_files

FIXTURES = list(ALL_FIXTURES)          # pinned in conftest.py: a missing file fails, by name
# The fixtures fixnet refuses to load, with the error: every other one must save and reload
# (a FixnetError from any of them fails its round trip; nothing is skipped).
REFUSED = {"layers_channels_first_k3": fixnet.UnsupportedLayerError,
           "layers_channels_first_tfk2": fixnet.UnsupportedLayerError,
           # a stride over an axis of any length (tests/test_anylength_int8.py)
           "anylen_strided_k3": fixnet.UnsupportedLayerError,
           "anylen_strided_tfk2": fixnet.UnsupportedLayerError}
CASES = [f for f in FIXTURES if f not in REFUSED]
SMALL = "mlp_func_k3"


# The round trip does not depend on how good the ranges are: the first rows of x_calib and of
# x_test keep the large fixtures (MobileNetV2) quick.
CALIB_ROWS, TEST_ROWS = 32, 100


def _quantize(name):
    d = fixture_data(name)
    calib = [c[:CALIB_ROWS] for c in as_list(d, "x_calib")]
    qm = fixnet.load(fixture_path(name)).quantize(calib[0] if len(calib) == 1 else calib)
    xs = [x[:TEST_ROWS] for x in as_list(d, "x_test")]
    return qm, (xs[0] if len(xs) == 1 else xs)


def _outs(v):
    return v if isinstance(v, list) else [v]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_exactly_the_expected_fixtures_are_refused(name):
    with pytest.raises(REFUSED[name]):
        _quantize(name)


@pytest.fixture(scope="module", params=CASES)
def saved(request, tmp_path_factory):
    name = request.param
    qm, x = _quantize(name)
    path = str(tmp_path_factory.mktemp("fxn") / f"{name}.fxn")
    fxn.save_model(qm, path)
    return name, qm, x, path, load_fxn(path)


# ---- round trip --------------------------------------------------------------------------

def test_fixture_list_covers_every_family():
    assert any(c.startswith("mlp_") for c in CASES)
    assert any(c.startswith("layers_") for c in CASES)
    assert any(c.startswith("multi_io") for c in CASES)
    assert any(c.startswith(("cnn_", "resnet_", "mobilenet_")) for c in CASES)


def test_predictions_bit_identical_after_reload(saved):
    name, qm, x, path, loaded = saved
    assert isinstance(loaded, QuantizedModel)
    x1 = [v[:1] for v in x] if isinstance(x, list) else x[:1]       # another arena size
    for xb, output, dtype in ((x, "int8", np.int8), (x, "float32", np.float32), (x1, "int8", np.int8)):
        before, after = _outs(qm.predict(xb, output=output)), _outs(loaded.predict(xb, output=output))
        assert len(before) == len(after) == len(qm.outputs), name
        for a, b in zip(before, after):
            assert a.dtype == b.dtype == dtype
            np.testing.assert_array_equal(a, b, err_msg=name)


def _same(a, b, where):
    """Deep equality with exact types: tuples stay tuples, int32 arrays stay int32."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _same(u, v, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), where                # same keys, same order
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif a is not None and not callable(a) and not hasattr(a, "__array_interface__"):
        assert a == b, where


def test_graph_and_step_state_round_trip_exactly(saved):
    name, qm, _, path, loaded = saved
    assert loaded.name == qm.name
    assert loaded.inputs == qm.inputs and loaded.outputs == qm.outputs
    assert list(loaded.tensors) == list(qm.tensors)
    for t, spec in qm.tensors.items():
        assert loaded.tensors[t].shape == spec.shape and type(loaded.tensors[t].shape) is tuple
        assert loaded.tensors[t].qparams == spec.qparams
    assert len(loaded.steps) == len(qm.steps)
    for i, (s, r) in enumerate(zip(qm.steps, loaded.steps)):
        assert type(r) is type(s)
        a, b = s.__getstate__(), r.__getstate__()
        assert set(a) == set(b), f"{name} step {i}"
        for k in a:
            if k.startswith("_"):        # caches rebuilt on load (DenseStep's packed weights)
                continue
            _same(a[k], b[k], f"{name} step {i} ({type(s).__name__}).{k}")


def test_loaded_model_keeps_the_overflow_proof(saved):
    _, qm, _, _, loaded = saved
    assert loaded.overflow_report().proven == qm.overflow_report().proven
    for b0, b1 in zip(qm.overflow_bounds(), loaded.overflow_bounds()):
        np.testing.assert_array_equal(b0.worst, b1.worst)


def test_file_holds_integers_not_float_weights(saved):
    name, qm, _, path, _ = saved
    m = fxn.read_manifest(path)
    ints = floats = 0
    for entry, spec in m["arrays"].items():
        dt = np.dtype(spec["dtype"])
        n = int(np.prod(spec["shape"]))
        if dt.kind == "f":          # only per-tensor / per-channel scales may be float
            assert len(spec["shape"]) <= 1, f"{name}: float array {entry} {spec}"
            floats += n
        else:
            assert dt.kind in "iub", entry
            ints += n
    assert floats <= 0.05 * max(ints, 1) + 64
    int8_bytes = sum(int(np.prod(s["shape"])) for s in m["arrays"].values() if s["dtype"] == "|i1")
    n_params = int(fixture_data(name)["n_params"]) if "n_params" in fixture_data(name) else None
    if n_params:        # weights are one byte each, not four
        assert os.path.getsize(path) < 4 * n_params + 65536
        assert int8_bytes <= n_params + 4096 * len(qm.steps)
    assert os.path.getsize(path) < os.path.getsize(fixture_path(name))


def test_save_is_deterministic(saved, tmp_path):
    name, qm, _, path, loaded = saved
    fxn.save_model(qm, tmp_path / "again.fxn")          # same model, same bytes
    with open(path, "rb") as f:
        assert (tmp_path / "again.fxn").read_bytes() == f.read()
    fxn.save_model(loaded, tmp_path / "resaved.fxn")    # a loaded model saves the same content,
    m0, m1 = fxn.read_manifest(path), fxn.read_manifest(tmp_path / "resaved.fxn")
    assert m0.pop("converted_from") == name + ".h5"     # only its source is now the .fxn file
    assert m1.pop("converted_from") == name + ".fxn"
    assert m0 == m1
    assert loaded.source == path


def test_header_layout(saved):
    _, _, _, path, _ = saved
    with open(path, "rb") as f:
        data = f.read()
    magic, version, length, digest = struct.unpack_from("<7sIQ32s", data)
    assert magic == b"FIXNET\x00" and version == fxn.FORMAT_VERSION == 2
    assert length == len(data) - 51 == len(data) - fxn.HEADER_SIZE
    assert hashlib.sha256(data[51:]).digest() == digest
    with zipfile.ZipFile(io.BytesIO(data[51:])) as z:
        m = json.loads(z.read("manifest.json"))
        # format 2: the manifest and every array in one entry, both deflated
        assert z.namelist() == ["manifest.json"] + (["arrays.bin"] if m["arrays"] else [])
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    assert m["format"] == "fixnet-int8-model" and m["format_version"] == 2
    assert fxn.is_fxn_file(path)


def test_load_uses_neither_tensorflow_nor_h5py(good, tmp_path):
    """fixnet.load of a .fxn file in a fresh interpreter where importing TensorFlow, Keras or
    h5py fails."""
    import subprocess
    import sys
    data, qm, x = good
    path = _write(tmp_path, data, "m.fxn")
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras', 'h5py'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np\n"
        "import fixnet\n"
        "qm = fixnet.load(sys.argv[1])\n"
        "np.save(sys.argv[2], qm.predict(np.load(sys.argv[3]), output='int8'))\n")
    np.save(tmp_path / "x.npy", x)
    # the subprocess imports the same fixnet this test process imported (installed or built
    # in place), never a source tree without compiled kernels
    import fixnet
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    r = subprocess.run([sys.executable, "-c", code, path, str(tmp_path / "y.npy"),
                        str(tmp_path / "x.npy")], capture_output=True, text=True,
                       cwd=str(tmp_path), env=env)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), qm.predict(x, output="int8"))


def test_public_api_save_and_load(tmp_path):
    qm, x = _quantize(SMALL)
    p = str(tmp_path / "m.fxn")
    qm.save(p)
    loaded = fixnet.load(p)
    np.testing.assert_array_equal(qm.predict(x, output="int8"), loaded.predict(x, output="int8"))


# ---- damaged and foreign files ----------------------------------------------------------

@pytest.fixture(scope="module")
def good(tmp_path_factory):
    qm, x = _quantize(SMALL)
    path = tmp_path_factory.mktemp("good") / "good.fxn"
    fxn.save_model(qm, path)
    with open(path, "rb") as f:
        return f.read(), qm, x


def _write(tmp_path, data, name="bad.fxn"):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def _load_fails(path, match="", cls=ModelFileError):
    with pytest.raises(cls, match=match) as e:
        load_fxn(path)
    assert os.fspath(path) in str(e.value), "the message names the file"
    assert isinstance(e.value, fixnet.FixnetError)
    return e.value


def _rebuild(data, edit_manifest=None, entries=None, version=None):
    """A file with edited content but a valid header and checksum (what a crafted file is)."""
    with zipfile.ZipFile(io.BytesIO(data[fxn.HEADER_SIZE:])) as z:
        files = {n: z.read(n) for n in z.namelist()}
    if edit_manifest is not None:
        m = json.loads(files["manifest.json"])
        m = edit_manifest(m) or m
        files["manifest.json"] = json.dumps(m).encode()
    if entries is not None:
        entries(files)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, b in files.items():
            z.writestr(n, b)
    payload = buf.getvalue()
    v = struct.unpack_from("<I", data, 7)[0] if version is None else version
    return struct.pack("<7sIQ32s", b"FIXNET\x00", v, len(payload),
                       hashlib.sha256(payload).digest()) + payload


def _npy(a):
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


def test_rebuilt_file_is_accepted(good, tmp_path):
    data, qm, x = good
    loaded = load_fxn(_write(tmp_path, _rebuild(data)))
    np.testing.assert_array_equal(loaded.predict(x, output="int8"), qm.predict(x, output="int8"))


def test_flipped_byte_in_the_middle_is_detected(good, tmp_path):
    data = bytearray(good[0])
    data[len(data) // 2] ^= 0x5A
    _load_fails(_write(tmp_path, bytes(data)), "damaged.*checksum")


def test_any_flipped_byte_is_detected(good, tmp_path):
    data = good[0]
    positions = list(range(fxn.HEADER_SIZE + 2)) + list(range(fxn.HEADER_SIZE, len(data), 97))
    for i in positions + [len(data) - 1]:
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(ModelFileError):
            load_fxn(_write(tmp_path, bytes(bad)))


@pytest.mark.parametrize("cut", [0, 3, 7, 9, 11, 30, 51, 52, 200, "half", -1])
def test_truncated_file(good, tmp_path, cut):
    data = good[0]
    n = len(data) // 2 if cut == "half" else (len(data) + cut if cut < 0 else cut)
    _load_fails(_write(tmp_path, data[:n]), "truncated")


def test_trailing_bytes(good, tmp_path):
    _load_fails(_write(tmp_path, good[0] + b"\x00"), "damaged.*after the end")


def test_wrong_magic(good, tmp_path):
    _load_fails(_write(tmp_path, b"FIXNOT\x00" + good[0][7:]), "not a fixnet .fxn model file")


def test_keras_file_is_not_an_fxn_file():
    _load_fails(fixture_path(SMALL), "not a fixnet .fxn model file.*HDF5")


def test_missing_file(tmp_path):
    _load_fails(str(tmp_path / "nowhere.fxn"), "cannot read")


def test_newer_format_version(good, tmp_path):
    data = bytearray(good[0])
    struct.pack_into("<I", data, 7, 7)
    e = _load_fails(_write(tmp_path, bytes(data)), cls=fxn.FxnVersionError,
                    match=r"written by a newer fixnet: format version 7, this fixnet reads up to 2; "
                          r"upgrade fixnet")
    assert isinstance(e, ModelFileError)


def test_newer_version_is_reported_even_if_the_rest_differs(tmp_path):
    # a future layout: whatever follows the version, the version error comes first
    data = b"FIXNET\x00" + struct.pack("<I", 3) + b"an entirely different layout"
    _load_fails(_write(tmp_path, data), cls=fxn.FxnVersionError, match="newer fixnet")


def test_version_zero_is_damage_not_newer(good, tmp_path):
    data = bytearray(good[0])
    struct.pack_into("<I", data, 7, 0)
    e = _load_fails(_write(tmp_path, bytes(data)), "format version 0")
    assert not isinstance(e, fxn.FxnVersionError)


def test_manifest_naming_a_foreign_class_runs_nothing(good, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))

    def edit(m):
        m["steps"][0]["class"] = "os.system"
        m["steps"][0]["module"] = "os"

    _load_fails(_write(tmp_path, _rebuild(good[0], edit)), r"'os\.system'.*not a fixnet step")
    assert calls == []

    def edit2(m):
        m["steps"][0]["class"] = "system"
        m["steps"][0]["module"] = "os"
    _load_fails(_write(tmp_path, _rebuild(good[0], edit2)), "not a fixnet step")
    assert calls == []


class EvilStep(Step):
    """A Step subclass outside the fixnet package: a file must not be able to name it."""
    ran = []

    def __init__(self, *a, **k):
        EvilStep.ran.append("init")

    def __setstate__(self, state):
        EvilStep.ran.append("setstate")

    def bind(self, bufs):
        EvilStep.ran.append("bind")
        return lambda: None


def test_step_classes_outside_fixnet_are_refused(good, tmp_path):
    assert "EvilStep" not in fxn.step_registry()

    def edit(m):
        m["steps"][0]["class"] = "EvilStep"
        m["steps"][0]["module"] = __name__
    _load_fails(_write(tmp_path, _rebuild(good[0], edit)), "'EvilStep'.*not a fixnet step")
    assert EvilStep.ran == []


def test_unknown_tagged_value_is_refused(good, tmp_path):
    def edit(m):
        m["steps"][0]["state"]["act_min"] = {"$eval": "__import__('os').system('true')"}
    _load_fails(_write(tmp_path, _rebuild(good[0], edit)), "not an encoded value")


def test_dunder_attribute_is_refused(good, tmp_path):
    def edit(m):
        m["steps"][0]["state"]["__class__"] = "x"
    _load_fails(_write(tmp_path, _rebuild(good[0], edit)), "attribute name")


def test_step_reading_an_unknown_tensor(good, tmp_path):
    def edit(m):
        m["steps"][1]["state"]["inputs"] = ["no_such_tensor"]
    _load_fails(_write(tmp_path, _rebuild(good[0], edit)),
                "step 1 .* reads tensor 'no_such_tensor', which the file does not describe")


def test_steps_out_of_order(good, tmp_path):
    def edit(m):
        m["steps"][0], m["steps"][1] = m["steps"][1], m["steps"][0]
    _load_fails(_write(tmp_path, _rebuild(good[0], edit)), "before any step writes it")


def test_model_output_unknown(good, tmp_path):
    def edit(m):
        m["outputs"] = ["nope"]
    _load_fails(_write(tmp_path, _rebuild(good[0], edit)), "model outputs")


def test_bad_qparams(good, tmp_path):
    def edit(m):
        m["tensors"][0]["qparams"]["scale"] = -1.0
    _load_fails(_write(tmp_path, _rebuild(good[0], edit)), "scale")

    def edit2(m):
        m["tensors"][0]["qparams"]["zero_point"] = 300
    _load_fails(_write(tmp_path, _rebuild(good[0], edit2)), "zero point")


def _dense(m):
    """Index of the first DenseStep in a manifest."""
    return next(i for i, s in enumerate(m["steps"]) if s["class"] == "DenseStep")


def _array_of(m, step, attr):
    return m["steps"][step]["state"][attr]["$array"]


def _with_arrays(data, fn):
    """``data`` (a format-2 file) with ``fn(manifest, {array name: stored bytes})`` applied."""
    return fxn_files.edit_arrays(data, fn)


def test_weights_of_the_wrong_dtype(good, tmp_path):
    m0 = fxn.read_manifest(_write(tmp_path, good[0], "ok.fxn"))
    entry = _array_of(m0, _dense(m0), "w_q")
    shape = m0["arrays"][entry]["shape"]

    def edit(m, segs):
        fxn_files.store(m, segs, entry, np.ones(shape, np.float32))
    _load_fails(_write(tmp_path, _with_arrays(good[0], edit)), "w_q.*not int8")


def test_array_disagreeing_with_the_manifest(good, tmp_path):
    m0 = fxn.read_manifest(_write(tmp_path, good[0], "ok.fxn"))
    entry = _array_of(m0, _dense(m0), "bias")

    def edit(m, segs):                     # 3 int16 in place of the bias, its spec unchanged
        segs[entry] = np.arange(3, dtype="<i2").tobytes()
    e = _load_fails(_write(tmp_path, _with_arrays(good[0], edit)), "inconsistent")
    assert entry in str(e)


def test_bias_of_the_wrong_dtype_or_length_names_the_step(good, tmp_path):
    m0 = fxn.read_manifest(_write(tmp_path, good[0], "ok.fxn"))
    i = _dense(m0)
    entry = _array_of(m0, i, "bias")
    n = m0["arrays"][entry]["shape"][0]
    for arr in (np.arange(n, dtype=np.int16), np.arange(n + 1, dtype=np.int32)):
        def edit(m, segs, arr=arr):
            fxn_files.store(m, segs, entry, arr)
        name = m0["steps"][i]["state"]["name"]
        _load_fails(_write(tmp_path, _with_arrays(good[0], edit)),
                    f"step {i} '{name}' \\(DenseStep\\) does not fit its tensors")


def test_weights_holding_minus_128(good, tmp_path):
    m0 = fxn.read_manifest(_write(tmp_path, good[0], "ok.fxn"))
    entry = _array_of(m0, _dense(m0), "w_q")
    shape = m0["arrays"][entry]["shape"]

    def edit(m, segs):
        fxn_files.store(m, segs, entry, np.full(shape, -128, np.int8))
    _load_fails(_write(tmp_path, _with_arrays(good[0], edit)), "-128")


def test_missing_array(good, tmp_path):
    m0 = fxn.read_manifest(_write(tmp_path, good[0], "ok.fxn"))
    entry = _array_of(m0, _dense(m0), "w_q")

    def edit(m, segs):
        del m["arrays"][entry], segs[entry]
    _load_fails(_write(tmp_path, _with_arrays(good[0], edit)), "does not hold")


def test_reference_to_an_array_not_in_the_file(good, tmp_path):
    def edit(m):
        m["steps"][_dense(m)]["state"]["w_q"] = {"$array": "elsewhere"}
    _load_fails(_write(tmp_path, _rebuild(good[0], edit)), "does not hold")


# ---- format 2: how the arrays are stored (fixnet/fxn/stored.py) ----------------------------

def test_stored_forms_round_trip_every_dtype_exactly():
    rng = np.random.default_rng(0)
    cases = []
    for dt in fxn.container.ARRAY_DTYPES:
        d = np.dtype(dt)
        if d.kind in "iu":
            info = np.iinfo(d)
            cases += [rng.integers(info.min, info.max, (3, 5), dtype=d, endpoint=True),
                      np.array([info.min, info.max], d), np.array([0, 1, 2], d),
                      np.full((4, 2), info.max, d), np.zeros((0, 3), d), np.array([7], d)]
        elif d.kind == "f":
            cases += [rng.normal(size=(2, 3)).astype(d), np.array([0.0, -0.0, np.nan, np.inf], d),
                      np.full(5, -0.0, d), np.full(3, np.nan, d)]
        else:
            cases += [np.array([True, False, True]), np.ones(4, bool)]
    for a in cases:
        spec, data = store_array(a)
        s = stored_spec("x", dict(spec, offset=0), fxn.container.ARRAY_DTYPES,
                        fxn.container._is_shape)
        assert s.nbytes == len(data)
        b = s.decode(data)
        assert b.dtype == a.dtype and b.shape == a.shape and b.flags.c_contiguous and b.flags.writeable
        assert b.tobytes() == a.tobytes(), (a, spec)     # bit for bit: -0.0, NaN payloads


def test_stored_forms_take_the_fewest_bytes():
    spec, data = store_array(np.array([-13, -5, -7, -13], "<i4"))       # shifts: int8
    assert spec.get("as") == "|i1" and len(data) == 4
    spec, data = store_array(np.array([0, 200, 7], "<i4"))              # unsigned byte
    assert spec.get("as") == "|u1" and len(data) == 3
    spec, data = store_array(np.array([-705269, 551186], "<i4"))        # needs all 4 bytes
    assert "as" not in spec and len(data) == 8
    spec, data = store_array(np.full((64, 3), 4194304, "<i4"))          # one value
    assert spec.get("fill") is True and len(data) == 4
    spec, data = store_array(np.full((64, 3), 12, "<i8"))
    assert spec.get("fill") is True and spec.get("as") == "|i1" and len(data) == 1
    spec, data = store_array(np.array([1, -1] * 50, np.int8))           # 4-bit indices
    assert spec["palette"] == {"axis": None, "codes": 2} and len(data) == 2 + 50
    # byte planes: byte 0 of every element, then byte 1, ...
    assert store_array(np.array([0x0102, 0x0304], "<i2"))[1] == bytes([2, 4, 1, 3])


def test_an_int_array_is_never_stored_as_a_type_it_cannot_widen_from():
    for dt in ("<u2", "<u4", "<u8"):
        spec, _ = store_array(np.array([0, 300], dt))
        assert np.can_cast(spec.get("as", dt), dt, "safe")
    spec, _ = store_array(np.array([-1, 1], "<i2"))
    assert spec["as"] == "|i1"


def _segment_edit(tmp_path, good, fn, match):
    """Load ``good`` with fn(manifest, segments) applied; the error names the array."""
    m0 = fxn.read_manifest(_write(tmp_path, good[0], "ok.fxn"))
    entry = _array_of(m0, _dense(m0), "bias")
    e = _load_fails(_write(tmp_path, _with_arrays(good[0], lambda m, segs: fn(m, segs, entry))),
                    match)
    return entry, str(e)


@pytest.mark.parametrize("edit,match", [
    (lambda m, segs, e: m["arrays"][e].update(**{"as": "<i8"}), "cannot be stored as '<i8'"),
    (lambda m, segs, e: m["arrays"][e].update(**{"as": "<u2"}), "cannot be stored as|starts at"),
    (lambda m, segs, e: m["arrays"][e].update(**{"as": "<f4"}), "cannot be stored as '<f4'"),
    (lambda m, segs, e: m["arrays"][e].update(**{"as": "<i4"}), "cannot be stored as '<i4'"),
    (lambda m, segs, e: m["arrays"][e].update(fill=1), "fill 1"),
    (lambda m, segs, e: m["arrays"][e].update(palette={"axis": None, "codes": 4}), "palette"),
    (lambda m, segs, e: m["arrays"][e].update(shuffle=True), "is not one the format stores"),
    (lambda m, segs, e: segs.update({e: segs[e][:-1]}), "starts at|ends at"),
    (lambda m, segs, e: segs.update({e: segs[e] + b"\x00"}), "starts at|ends at"),
])
def test_a_damaged_stored_form_names_the_array(good, tmp_path, edit, match):
    entry, msg = _segment_edit(tmp_path, good, edit, match)
    assert entry in msg, msg


def test_offsets_must_tile_the_arrays_entry(good, tmp_path):
    specs = fxn.read_manifest(_write(tmp_path, good[0], "ok.fxn"))["arrays"]
    name = max(specs, key=lambda n: specs[n]["offset"])          # not the first array
    for delta, match in ((1, "starts at byte"), (-1, "starts at byte"), (2 ** 40, "starts at"),
                         ("0", "offset '0'"), (-5, "offset -5"), (None, "offset None")):
        def edit(m, delta=delta):
            spec = m["arrays"][name]
            spec["offset"] = spec["offset"] + delta if type(delta) is int and delta != -5 else delta
        e = _load_fails(_write(tmp_path, _rebuild(good[0], edit)), match)
        assert name in str(e)


@pytest.mark.parametrize("how,match", [
    ("short", "arrays.bin holds|arrays.bin.*bytes"), ("long", "arrays.bin holds"),
    ("missing", "arrays.bin.*missing"), ("extra", "unexpected")])
def test_the_arrays_entry_must_hold_exactly_the_arrays(good, tmp_path, how, match):
    def entries(files):
        if how == "short":
            files["arrays.bin"] = files["arrays.bin"][:-1]
        elif how == "long":
            files["arrays.bin"] += b"\x00"
        elif how == "missing":
            del files["arrays.bin"]
        else:
            files["arrays/00000_w_q.npy"] = _npy(np.zeros(3, np.int8))
    _load_fails(_write(tmp_path, _rebuild(good[0], None, entries)), match)


def test_a_bool_stored_as_another_byte_is_refused(tmp_path):
    qm, _ = _quantize(SMALL)
    qm.steps[0].flags_extra = np.array([True, False, True])
    p = tmp_path / "m.fxn"
    fxn.save_model(qm, p)
    name = next(n for n, s in fxn.read_manifest(p)["arrays"].items() if s["dtype"] == "|b1")

    def edit(m, segs):
        segs[name] = b"\x01\x02\x01"
    e = _load_fails(_write(tmp_path, _with_arrays(p.read_bytes(), edit)), "a bool is stored as")
    assert name in str(e)


def test_an_older_fixnet_refuses_a_format_2_file_by_its_version(good, tmp_path, monkeypatch):
    monkeypatch.setattr(fxn.container, "READABLE_VERSIONS", (1,))
    _load_fails(_write(tmp_path, good[0]), cls=fxn.FxnVersionError,
                match=r"format version 2, this fixnet reads up to 1; upgrade fixnet")


# ---- format 1 (one .npy entry per array), still read: tests/data/fxn_094588e ---------------

OLD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fxn_094588e",
                   SMALL + ".fxn")


@pytest.fixture(scope="module")
def old():
    with open(OLD, "rb") as f:
        data = f.read()
    assert struct.unpack_from("<I", data, 7)[0] == 1
    return data


def test_format_1_file_is_read(old, tmp_path):
    load_fxn(_write(tmp_path, old))
    load_fxn(_write(tmp_path, _rebuild(old)))


def test_format_1_array_disagreeing_with_the_manifest(old, tmp_path):
    m0 = fxn.read_manifest(_write(tmp_path, old, "ok.fxn"))
    entry = _array_of(m0, _dense(m0), "bias")

    def entries(files):
        files[entry] = _npy(np.zeros(3, np.int16))
    _load_fails(_write(tmp_path, _rebuild(old, None, entries)), "the manifest says")


def test_format_1_missing_array(old, tmp_path):
    m0 = fxn.read_manifest(_write(tmp_path, old, "ok.fxn"))
    entry = _array_of(m0, _dense(m0), "w_q")
    _load_fails(_write(tmp_path, _rebuild(old, None, lambda f: f.pop(entry))), "missing")


def test_pickled_array_is_refused(old, tmp_path):
    m0 = fxn.read_manifest(_write(tmp_path, old, "ok.fxn"))
    entry = _array_of(m0, _dense(m0), "w_q")

    def entries(files):
        b = io.BytesIO()
        np.save(b, np.array([object()], dtype=object), allow_pickle=True)
        files[entry] = b.getvalue()
    _load_fails(_write(tmp_path, _rebuild(old, None, entries)), "damaged|inconsistent")


def test_format_1_entries_in_a_format_2_file_are_refused(old, tmp_path):
    """A format-1 archive under a format-2 header (and manifest): its .npy entries are not
    arrays.bin."""
    def edit(m):
        m["format_version"] = 2
    _load_fails(_write(tmp_path, _rebuild(old, edit, version=2)), "inconsistent|damaged")


def test_bad_json_manifest(good, tmp_path):
    def entries(files):
        files["manifest.json"] = files["manifest.json"][:-10]
    _load_fails(_write(tmp_path, _rebuild(good[0], None, entries)), "not valid JSON")


def test_payload_that_is_not_an_archive(tmp_path):
    payload = b"definitely not a zip archive" * 10
    data = struct.pack("<7sIQ32s", b"FIXNET\x00", 1, len(payload),
                       hashlib.sha256(payload).digest()) + payload
    _load_fails(_write(tmp_path, data), "not a valid archive")


# ---- saving ------------------------------------------------------------------------------

def _leftovers(directory):
    return [f for f in os.listdir(directory) if f.endswith(".tmp")]


def test_save_into_a_missing_directory_leaves_nothing(good, tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "m.fxn"
    with pytest.raises(fxn.FxnWriteError, match="cannot save") as e:
        fxn.save_model(good[1], target)
    assert isinstance(e.value, OSError) and isinstance(e.value, ModelFileError)
    assert str(target) in str(e.value)
    assert not (tmp_path / "no").exists()


def test_save_onto_a_directory_leaves_nothing(good, tmp_path):
    target = tmp_path / "adir"
    target.mkdir()
    with pytest.raises(fxn.FxnWriteError):
        fxn.save_model(good[1], target)
    assert target.is_dir() and not any(target.iterdir())
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_save_keeps_the_old_file_and_no_partial_file(good, tmp_path, monkeypatch, failing):
    data, qm, _ = good
    target = tmp_path / "m.fxn"
    target.write_bytes(b"the previous version")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(fxn.FxnWriteError, match="No space left"):
        fxn.save_model(qm, target)
    monkeypatch.undo()
    assert target.read_bytes() == b"the previous version"
    assert _leftovers(tmp_path) == []


def test_save_overwrites_atomically(good, tmp_path):
    data, qm, x = good
    target = tmp_path / "m.fxn"
    target.write_bytes(b"old")
    fxn.save_model(qm, target)
    assert target.read_bytes() == data
    assert _leftovers(tmp_path) == []


def test_unstorable_attribute_is_a_clear_error_and_writes_nothing(tmp_path):
    qm, _ = _quantize(SMALL)
    qm.steps[0].callback = object()
    target = tmp_path / "m.fxn"
    with pytest.raises(ModelFileError, match=r"step 0 .*attribute 'callback'.*builtins\.object"):
        fxn.save_model(qm, target)
    assert not target.exists() and _leftovers(tmp_path) == []


def test_values_json_lacks_round_trip(tmp_path):
    """Tuples, ordered dicts with non-string keys, NumPy scalars, non-finite floats, bytes and
    shared arrays all come back as they were."""
    qm, x = _quantize(SMALL)
    shared = np.arange(5, dtype=np.int16)
    extra = {"t": ((1, 2), (3,)), "d": {(1, 2): "a", 3: [1.5, float("inf")], "z": None},
             "n": np.int32(-7), "f": np.float32(0.1), "nan": float("nan"), "b": b"\x00\xff",
             "a1": shared, "a2": shared, "bool": True, "qp": qm.tensors[qm.inputs[0]].qparams}
    qm.steps[0].__dict__.update(extra)
    p = tmp_path / "m.fxn"
    fxn.save_model(qm, p)
    s = load_fxn(p).steps[0]
    for k, v in extra.items():
        if k == "nan":
            assert type(s.nan) is float and np.isnan(s.nan)
            continue
        _same(v, getattr(s, k), k)
    assert s.a1 is s.a2                   # one array object stays one object
    assert list(s.d) == [(1, 2), 3, "z"]
    assert np.isinf(s.d[3][1])


def test_manifest_version_must_match_the_header(good, tmp_path):
    def edit(m):
        m["format_version"] = 1
    _load_fails(_write(tmp_path, _rebuild(good[0], edit)), "differs from the header")


def test_save_through_a_symlink_replaces_its_target(good, tmp_path):
    data, qm, _ = good
    real = tmp_path / "real.fxn"
    real.write_bytes(b"old")
    link = tmp_path / "link.fxn"
    link.symlink_to(real)
    fxn.save_model(qm, link)
    assert link.is_symlink() and real.read_bytes() == data
