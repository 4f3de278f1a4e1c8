"""fixnet.tflite.read_tflite: a .tflite file read into plain values, checked against what the
fixtures' converter run recorded (the .npz files: TFLite's own input/output scales, zero points,
tensor names, signature keys, op and type lists) and against the Keras weights the file was
converted from; a file that is damaged, hostile or outside what fixnet reads gives a
TfliteFileError naming the file and the tensor or operator, and never anything else.

The damaged-file cases run in this process (the reader is pure Python over a bounds-checked
FlatBuffer table: no native code to crash), from fixed seeds, in a few seconds; the edits are
tests/tflite_edits.py's. The whole-path campaign (tests/test_fuzz.py: fixnet.load and predict
in worker processes that may crash) damages .tflite files with the same edits.
"""
import glob
import os
import random
import subprocess
import sys

import numpy as np
import pytest

import fixnet
from fixnet.api import load_tflite
from fixnet.tflite import TfliteDependencyError, TfliteFileError, TfliteModel, read_tflite

# the parser packages are in the test extra (pip install '.[test]'): a missing one fails here
import flatbuffers  # noqa: E402
import tflite  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")
ALL_FILES = sorted(glob.glob(os.path.join(MODELS, "*.tflite")))


def model_path(name):
    return os.path.join(MODELS, name + ".tflite")


# --- the fixtures, against what the converter run recorded ---------------------------------------

def _npz_with_io_params():
    out = []
    for f in sorted(glob.glob(os.path.join(MODELS, "*.npz"))):
        name = os.path.basename(f)[:-4]
        if os.path.exists(model_path(name)):
            with np.load(f) as d:
                if "tflite_input_scale" in d.files and d["tflite_input_scale"].size == 1:
                    out.append(name)
    return out


IO_FIXTURES = _npz_with_io_params()


def test_every_fixture_file_reads():
    assert len(ALL_FILES) >= 70
    for f in ALL_FILES:
        m = read_tflite(f)
        assert isinstance(m, TfliteModel) and m.version == 3 and m.operators and m.tensors


@pytest.mark.parametrize("name", IO_FIXTURES)
def test_input_and_output_quantization_and_names_are_the_converters(name):
    """The scale, zero point, tensor name and signature key of the model's input and output,
    as the fixture script read them through TFLite's interpreter when it made the file."""
    m = read_tflite(model_path(name))
    with np.load(os.path.join(MODELS, name + ".npz")) as d:
        (i,), (o,) = m.inputs, m.outputs
        named = "tflite_input_names" in d.files          # the later fixture runs record names
        for t, kind in ((m.tensors[i], "input"), (m.tensors[o], "output")):
            assert not named or t.name == str(d[f"tflite_{kind}_names"][0])
            assert t.type == "INT8" and t.dtype == np.int8 and t.data is None
            q = t.quantization
            assert q.scale.shape == (1,) and not q.per_channel
            assert q.scale[0] == d[f"tflite_{kind}_scale"]
            assert q.zero_point[0] == d[f"tflite_{kind}_zero_point"]
        assert m.tensors[i].shape == (1,) + d["tflite_input_int8"].shape[1:]
        assert m.tensors[o].shape == (1,) + d["tflite_int8_raw"].shape[1:]
        (sig,) = m.signature_defs
        assert sig.key == "serving_default" and sig.subgraph_index == 0
        if not named:
            return
        assert sig.inputs == {str(d["tflite_input_signature_keys"][0]): i}
        assert sig.outputs == {str(d["tflite_output_signature_keys"][0]): o}


FILES_16X8 = [p for p in sorted(glob.glob(os.path.join(MODELS, "*.tflite16x8.npz")))
              if os.path.exists(p[:-len(".tflite16x8.npz")] + ".16x8.tflite")]


@pytest.mark.parametrize("path", FILES_16X8, ids=os.path.basename)
def test_16x8_files_hold_the_ops_and_types_the_converter_listed(path):
    f = path[:-len(".tflite16x8.npz")] + ".16x8.tflite"
    m = read_tflite(f)
    with np.load(path) as d:
        assert os.path.getsize(f) == int(d["tflite16x8_bytes"])
        assert sorted({op.op for op in m.operators}) == sorted(d["tflite16x8_ops"])
        assert sorted({str(t.dtype) for t in m.tensors}) == sorted(d["tflite16x8_tensor_types"])


def test_cnn_digits_ops_options_and_tensors():
    m = read_tflite(model_path("cnn_digits_k3"))
    assert m.description == "MLIR Converted." and m.subgraph_name == "main"
    assert [op.op for op in m.operators] == [
        "CONV_2D", "MAX_POOL_2D", "CONV_2D", "AVERAGE_POOL_2D", "CONV_2D", "SHAPE",
        "STRIDED_SLICE", "PACK", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    conv = m.operators[0]
    assert conv.options_type == "Conv2DOptions"
    assert conv.options == {"padding": "SAME", "stride_w": 1, "stride_h": 1,
                            "fused_activation_function": "RELU", "dilation_w_factor": 1,
                            "dilation_h_factor": 1, "quantized_bias_type": "FLOAT32"}
    assert m.operators[4].options["stride_h"] == 2
    assert m.operators[1].options_type == "Pool2DOptions"
    assert m.operators[1].options["filter_width"] == 2 and m.operators[1].options["padding"] == "VALID"
    assert m.operators[10].options == {"beta": 1.0}
    assert m.operators[8].options_type is None and m.operators[8].options == {}
    assert m.operator_codes[conv.opcode_index].builtin == "CONV_2D" and conv.version == 3
    x, w, b = (m.tensors[k] for k in conv.inputs)
    y = m.tensors[conv.outputs[0]]
    assert x.shape == (1, 32, 32, 1) and x.shape_signature == (-1, 32, 32, 1)
    assert w.shape == (16, 3, 3, 1) and w.dtype == np.int8 and w.data.shape == w.shape
    assert b.shape == (16,) and b.dtype == np.int32 and b.data.dtype == np.int32
    assert y.shape == (1, 32, 32, 16)
    assert not w.data.flags.writeable and not b.data.flags.writeable
    assert w.quantization.per_channel and w.quantization.quantized_dimension == 0
    assert w.quantization.scale.shape == (16,) and not np.any(w.quantization.zero_point)
    assert np.abs(w.data).max() <= 127
    # TFLite's bias scale is the input scale times each channel's weight scale
    np.testing.assert_allclose(b.quantization.scale, x.quantization.scale * w.quantization.scale,
                               rtol=1e-6)
    assert m.metadata["min_runtime_version"].rstrip(b"\0") == b"1.14.0"


def test_weights_are_the_keras_weights_quantized():
    """The first conv's int8 kernel times its per-channel scales is the Keras kernel (HWIO in
    the .h5, OHWI in the .tflite) within half a step; its int32 bias likewise."""
    import h5py
    m = read_tflite(model_path("cnn_digits_k3"))
    with h5py.File(os.path.join(MODELS, "cnn_digits_k3.h5"), "r") as f:
        kernel = np.array(f["model_weights/conv2d/sequential/conv2d/kernel"])
        bias = np.array(f["model_weights/conv2d/sequential/conv2d/bias"])
    conv = m.operators[0]
    w, b = m.tensors[conv.inputs[1]], m.tensors[conv.inputs[2]]
    s = w.quantization.scale
    real = w.data.astype(np.float64) * s[:, None, None, None]
    err = np.abs(real - kernel.transpose(3, 0, 1, 2))
    assert np.all(err <= s[:, None, None, None] * 0.5001)
    bs = b.quantization.scale
    assert np.all(np.abs(b.data * bs.astype(np.float64) - bias) <= bs * 0.5001)


def test_kws_dscnn_and_mobilenetv2():
    m = read_tflite(model_path("kws_dscnn_k3"))
    ops = [op.op for op in m.operators]
    assert ops[0] == "CONV_2D" and ops[-1] == "SOFTMAX" and "DEPTHWISE_CONV_2D" in ops
    dw = next(op for op in m.operators if op.op == "DEPTHWISE_CONV_2D")
    assert dw.options["depth_multiplier"] == 1 and dw.options["padding"] in ("SAME", "VALID")
    w = m.tensors[dw.inputs[1]]
    # depthwise weights: (1, kh, kw, channels), per channel along the last dimension
    assert w.shape[0] == 1 and w.quantization.quantized_dimension == 3
    assert w.quantization.scale.shape == (w.shape[3],)

    m = read_tflite(model_path("mobilenetv2_k3"))
    ops = [op.op for op in m.operators]
    assert ops.count("CONV_2D") >= 30 and ops.count("DEPTHWISE_CONV_2D") >= 15 and "ADD" in ops
    assert m.tensors[m.inputs[0]].shape == (1, 96, 96, 3)
    for op in m.operators:
        for k in op.inputs:
            t = m.tensors[k]
            if t.data is not None and t.dtype == np.int8:
                assert t.data.shape == t.shape


def test_16x8_file_has_int16_activations_and_int64_zero_points():
    m = read_tflite(model_path("kws_dscnn_k3.16x8"))
    x = m.tensors[m.operators[0].outputs[0]]
    assert x.type == "INT16" and x.dtype == np.int16 and x.quantization.zero_point[0] == 0


def test_the_reader_reads_what_the_unchecked_generated_classes_read():
    """The checked table changes no value: every tensor, buffer and operator of every fixture
    as the tflite package's classes read them on a plain FlatBuffer table."""
    for f in ALL_FILES:
        buf = open(f, "rb").read()
        raw = tflite.Model.GetRootAs(buf, 0)
        g = raw.Subgraphs(0)
        m = read_tflite(f)
        assert len(m.tensors) == g.TensorsLength() and len(m.operators) == g.OperatorsLength()
        for i, t in enumerate(m.tensors):
            rt = g.Tensors(i)
            shape = rt.ShapeAsNumpy()
            assert t.name == rt.Name().decode()
            assert t.shape == (() if isinstance(shape, int) else tuple(shape.tolist()))
            data = raw.Buffers(rt.Buffer()).DataAsNumpy()
            if t.data is None:
                assert isinstance(data, int) or data.size == 0
            else:
                assert t.data.tobytes() == data.tobytes()
        for i, op in enumerate(m.operators):
            ro = g.Operators(i)
            for mine, theirs in ((op.inputs, ro.InputsAsNumpy()), (op.outputs, ro.OutputsAsNumpy())):
                assert mine == (() if isinstance(theirs, int) else tuple(theirs.tolist()))


def test_optional_inputs_are_minus_one():
    m = read_tflite(model_path("rnn_lstm_tfk2"))
    lstm = [op for op in m.operators if op.op == "UNIDIRECTIONAL_SEQUENCE_LSTM"]
    assert lstm and all(-1 in op.inputs for op in lstm)
    assert lstm[0].options["fused_activation_function"] == "TANH"
    assert isinstance(lstm[0].options["time_major"], bool)


def test_bytes_are_read_like_the_file():
    with open(model_path("mlp_seq_k3"), "rb") as f:
        data = f.read()
    a, b = read_tflite(bytearray(data)), read_tflite(model_path("mlp_seq_k3"))
    assert a.source == "<bytes>" and [t.shape for t in a.tensors] == [t.shape for t in b.tensors]


# --- files built here: features the fixtures do not have -----------------------------------------

def build(*, n_subgraphs=1, weights="inline", scales=(0.5, 0.25, 0.125), zero_points=None,
          qdim=0, weight_type="INT8", weight_shape=(3, 4), weight_bytes=None, sparse=False,
          activation=0, extra=b""):
    """A FULLY_CONNECTED model: int8 input (1, 4) -> output (1, 3), weights ``weight_shape``
    (per-channel ``scales`` along ``qdim``), int32 bias; the weights stored ``inline`` in the
    FlatBuffer or at an ``offset``/size past it (as converters do for files over 2 GB)."""
    B = flatbuffers.Builder(1024)
    types = {k: v for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
    if weight_bytes is None:
        if weight_type == "INT4":
            weight_bytes = bytes([0x21, 0xF8, 0x7A, 0x00, 0x43, 0x65])   # 12 int4 values
        else:
            weight_bytes = np.arange(12, dtype=np.int8).tobytes()
    bias_bytes = np.array([1, -2, 3], "<i4").tobytes()

    def vec_i32(start, values):
        start(B, len(values))
        for v in reversed(values):
            B.PrependInt32(v)
        return B.EndVector()

    def buffer(data):
        dv = B.CreateByteVector(data) if data else None
        tflite.BufferStart(B)
        if dv is not None:
            tflite.BufferAddData(B, dv)
        return tflite.BufferEnd(B)

    def buffer_at(offset, size):
        tflite.BufferStart(B)
        tflite.BufferAddOffset(B, offset)
        tflite.BufferAddSize(B, size)
        return tflite.BufferEnd(B)

    def quant(sc, zp, dim=0):
        tflite.QuantizationParametersStartScaleVector(B, len(sc))
        for v in reversed(sc):
            B.PrependFloat32(v)
        s = B.EndVector()
        tflite.QuantizationParametersStartZeroPointVector(B, len(zp))
        for v in reversed(zp):
            B.PrependInt64(v)
        z = B.EndVector()
        tflite.QuantizationParametersStart(B)
        tflite.QuantizationParametersAddScale(B, s)
        tflite.QuantizationParametersAddZeroPoint(B, z)
        tflite.QuantizationParametersAddQuantizedDimension(B, dim)
        return tflite.QuantizationParametersEnd(B)

    def sparsity():
        tflite.SparsityParametersStart(B)
        return tflite.SparsityParametersEnd(B)

    def tensor(name, shape, ttype, buf, q, sp=None):
        n = B.CreateString(name)
        sh = vec_i32(tflite.TensorStartShapeVector, list(shape))
        tflite.TensorStart(B)
        tflite.TensorAddShape(B, sh)
        tflite.TensorAddType(B, types[ttype])
        tflite.TensorAddBuffer(B, buf)
        tflite.TensorAddName(B, n)
        tflite.TensorAddQuantization(B, q)
        if sp is not None:
            tflite.TensorAddSparsity(B, sp)
        return tflite.TensorEnd(B)

    def subgraph():
        zp = [0] * len(scales) if zero_points is None else list(zero_points)
        ts = [tensor("x", (1, 4), "INT8", 1, quant([0.1], [-3])),
              tensor("w", weight_shape, weight_type, 2, quant(list(scales), zp, qdim),
                     sparsity() if sparse else None),
              tensor("b", (3,), "INT32", 3, quant([0.05, 0.025, 0.0125], [0, 0, 0])),
              tensor("y", (1, 3), "INT8", 0, quant([0.2], [5]))]
        tflite.SubGraphStartTensorsVector(B, len(ts))
        for t in reversed(ts):
            B.PrependUOffsetTRelative(t)
        tv = B.EndVector()
        tflite.FullyConnectedOptionsStart(B)
        tflite.FullyConnectedOptionsAddFusedActivationFunction(B, activation)
        tflite.FullyConnectedOptionsAddKeepNumDims(B, True)
        opts = tflite.FullyConnectedOptionsEnd(B)
        ins = vec_i32(tflite.OperatorStartInputsVector, [0, 1, 2])
        outs = vec_i32(tflite.OperatorStartOutputsVector, [3])
        tflite.OperatorStart(B)
        tflite.OperatorAddOpcodeIndex(B, 0)
        tflite.OperatorAddInputs(B, ins)
        tflite.OperatorAddOutputs(B, outs)
        tflite.OperatorAddBuiltinOptionsType(B, tflite.BuiltinOptions.FullyConnectedOptions)
        tflite.OperatorAddBuiltinOptions(B, opts)
        op = tflite.OperatorEnd(B)
        tflite.SubGraphStartOperatorsVector(B, 1)
        B.PrependUOffsetTRelative(op)
        ov = B.EndVector()
        gi = vec_i32(tflite.SubGraphStartInputsVector, [0])
        go = vec_i32(tflite.SubGraphStartOutputsVector, [3])
        tflite.SubGraphStart(B)
        tflite.SubGraphAddTensors(B, tv)
        tflite.SubGraphAddInputs(B, gi)
        tflite.SubGraphAddOutputs(B, go)
        tflite.SubGraphAddOperators(B, ov)
        return tflite.SubGraphEnd(B)

    # the file is built twice when the weights go past the FlatBuffer: the first pass finds
    # its length, the second writes the offset (the placeholder takes the same bytes)
    def whole(offset):
        B.__init__(1024)
        if weights == "inline":
            w = buffer(weight_bytes)
        else:
            w = buffer_at(offset, len(weight_bytes))
        bufs = [buffer(b""), buffer(b""), w, buffer(bias_bytes)]
        subs = [subgraph() for _ in range(n_subgraphs)]
        tflite.ModelStartBuffersVector(B, len(bufs))
        for b in reversed(bufs):
            B.PrependUOffsetTRelative(b)
        bv = B.EndVector()
        tflite.ModelStartSubgraphsVector(B, len(subs))
        for s in reversed(subs):
            B.PrependUOffsetTRelative(s)
        sv = B.EndVector()
        tflite.OperatorCodeStart(B)
        tflite.OperatorCodeAddBuiltinCode(B, tflite.BuiltinOperator.FULLY_CONNECTED)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(B, tflite.BuiltinOperator.FULLY_CONNECTED)
        tflite.OperatorCodeAddVersion(B, 4)
        oc = tflite.OperatorCodeEnd(B)
        tflite.ModelStartOperatorCodesVector(B, 1)
        B.PrependUOffsetTRelative(oc)
        ocv = B.EndVector()
        desc = B.CreateString("built by the test")
        tflite.ModelStart(B)
        tflite.ModelAddVersion(B, 3)
        tflite.ModelAddOperatorCodes(B, ocv)
        tflite.ModelAddSubgraphs(B, sv)
        tflite.ModelAddDescription(B, desc)
        tflite.ModelAddBuffers(B, bv)
        B.Finish(tflite.ModelEnd(B), file_identifier=b"TFL3")
        return bytes(B.Output())

    data = whole(2)
    if weights != "inline":
        pad = (-len(data)) % 16
        data = whole(len(data) + pad) + b"\0" * pad + weight_bytes + extra
    return data


def test_a_built_model_reads():
    m = read_tflite(build())
    assert m.description == "built by the test" and m.inputs == (0,) and m.outputs == (3,)
    (fc,) = m.operators
    assert fc.op == "FULLY_CONNECTED" and fc.version == 4 and fc.inputs == (0, 1, 2)
    assert fc.options["keep_num_dims"] is True and fc.options["fused_activation_function"] == "NONE"
    w = m.tensors[1]
    np.testing.assert_array_equal(w.data, np.arange(12).reshape(3, 4))
    np.testing.assert_array_equal(w.quantization.scale, [0.5, 0.25, 0.125])
    assert m.tensors[0].quantization.zero_point.tolist() == [-3] and m.tensors[3].data is None


def test_weights_stored_past_the_flatbuffer_are_read_and_checked():
    """Files over 2 GB keep buffers at an offset/size past the FlatBuffer (offset > 1)."""
    data = build(weights="offset")
    m = read_tflite(data)
    np.testing.assert_array_equal(m.tensors[1].data, np.arange(12).reshape(3, 4))
    assert not m.tensors[1].data.flags.writeable
    with pytest.raises(TfliteFileError, match=r"<bytes>: tensor 1 'w': buffer 2 holds 13 bytes; "
                                              r"shape \(3, 4\) of 8-bit values needs 12"):
        read_tflite(build(weights="offset", weight_bytes=bytes(13)))
    with pytest.raises(TfliteFileError, match=r"buffer 2: 12 bytes at offset \d+ lie past the end"):
        read_tflite(data[:-1])


def test_int4_weights_are_unpacked_low_nibble_first():
    m = read_tflite(build(weight_type="INT4"))
    w = m.tensors[1]
    assert w.type == "INT4" and w.dtype == np.int8
    np.testing.assert_array_equal(w.data.reshape(-1),
                                  [1, 2, -8, -1, -6, 7, 0, 0, 3, 4, 5, 6])
    with pytest.raises(TfliteFileError, match=r"holds 12 bytes; shape \(3, 4\) of 4-bit values needs 6"):
        read_tflite(build(weight_type="INT4", weight_bytes=bytes(12)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_subgraphs=2), r"<bytes>: the model table: 2 subgraphs; fixnet reads models with "
                          r"exactly one"),
    (dict(sparse=True), r"tensor 1 'w': a sparse tensor"),
    (dict(scales=(0.5, 0.25)), r"tensor 1 'w': 2 scales along dimension 0 of size 3"),
    (dict(zero_points=(0, 0)), r"tensor 1 'w': quantization has 3 scale\(s\) and 2 zero point"),
    (dict(qdim=2), r"tensor 1 'w': per-channel quantization along dimension 2 of a tensor of "
                   r"shape \(3, 4\)"),
    (dict(scales=(0.5, float("nan"), 0.1)), r"tensor 1 'w': quantization scale nan \(index 1\)"),
    (dict(scales=(0.5, 0.0, 0.1)), r"tensor 1 'w': quantization scale 0.0 \(index 1\)"),
    (dict(zero_points=(0, 200, 0)), r"tensor 1 'w': zero point 200 \(index 1\) is outside the "
                                    r"INT8 range"),
    (dict(weight_shape=(3, -4)), r"tensor 1 'w': shape \(3, -4\) has a negative dimension"),
    (dict(weight_shape=(3, 1 << 30, 1 << 30)), r"tensor 1 'w': shape \(3, 1073741824, "
                                               r"1073741824\) needs .* past the memory limit"),
    (dict(weight_shape=(3, 5)), r"tensor 1 'w': buffer 2 holds 12 bytes; shape \(3, 5\)"),
    (dict(activation=77), r"operator 0 \(FULLY_CONNECTED, output 'y'\): .*field "
                          r"'fused_activation_function' holds 77"),
])
def test_inconsistent_files_are_refused_naming_what(kwargs, message):
    with pytest.raises(TfliteFileError, match=message):
        read_tflite(build(**kwargs))


def test_a_tensor_beyond_max_memory_is_refused_before_reading():
    data = build()
    read_tflite(data, max_memory=1 << 20)
    with pytest.raises(TfliteFileError, match=r"<bytes>: .*past the memory limit of 100 bytes"):
        read_tflite(data, max_memory=100)


def test_a_file_beyond_max_memory_is_refused_unread(tmp_path):
    p = tmp_path / "m.tflite"
    p.write_bytes(build())
    with pytest.raises(TfliteFileError, match=r"m\.tflite: the file's .* past the memory limit"):
        read_tflite(p, max_memory=64)


@pytest.mark.parametrize("data, message", [
    (b"", r"0 bytes"),
    (b"\x89HDF\r\n\x1a\n" + bytes(100), r"identifier is .* \(it is an HDF5 file"),
    (b"FIXNET\x00" + bytes(100), r"it is a fixnet \.fxn model"),
    (bytes(100), r"identifier is b'\\x00\\x00\\x00\\x00', not b'TFL3'"),
])
def test_not_a_tflite_file(tmp_path, data, message):
    p = tmp_path / "x.tflite"
    p.write_bytes(data)
    with pytest.raises(TfliteFileError, match=r"x\.tflite: not a TFLite model: .*" + message):
        read_tflite(str(p))


def test_a_missing_file_is_a_fixnet_error(tmp_path):
    with pytest.raises(TfliteFileError, match=r"nothere\.tflite: cannot read"):
        read_tflite(tmp_path / "nothere.tflite")
    with pytest.raises(fixnet.ArgumentError, match="read_tflite: source must be a path"):
        read_tflite(42)
    assert issubclass(TfliteFileError, fixnet.ModelFileError)


def test_without_the_parser_packages_the_package_imports_and_reading_says_what_to_install(tmp_path):
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tflite', 'flatbuffers'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import fixnet, fixnet.tflite\n"
        "try:\n"
        f"    fixnet.tflite.read_tflite({model_path('mlp_seq_k3')!r})\n"
        "except fixnet.FixnetError as e:\n"
        "    assert isinstance(e, fixnet.tflite.TfliteDependencyError), type(e)\n"
        "    print(e)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(fixnet.__file__)), os.environ.get("PYTHONPATH", "")]))
    # run outside the checkout: its unbuilt source tree must not shadow the fixnet imported here
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "pip install 'fixnet[tflite]'" in r.stdout
    assert issubclass(TfliteDependencyError, fixnet.FixnetError)


# --- damaged files ------------------------------------------------------------------------------

from tflite_edits import EDITS, tables as _tables  # noqa: E402

FUZZ_FIXTURES = ["mlp_seq_k3", "layers_merge_k3", "cnn_digits_k3", "kws_dscnn_k3.16x8",
                 "rnn_lstm_tfk2", "layers_tensor_ops_k3"]
FUZZ_CASES = 1400


def fuzz_case(seed, originals, workdir):
    """Damage one fixture (chosen with its edit from ``seed``) and read it. Returns (outcome,
    description): "ok" (it read), "refused" (a TfliteFileError naming the file), or a
    failure: "unnamed" (a FixnetError whose message does not name the file), "other" (any
    other exception)."""
    rng = random.Random(seed)
    edit = EDITS[seed % len(EDITS)]
    name = rng.choice(FUZZ_FIXTURES)
    data = bytearray(originals[name])
    what = f"seed {seed}: {name}: {edit.__name__[2:]}: " + edit(rng, data, _tables(originals[name]))
    source = bytes(data)
    label = "<bytes>"
    if seed % 5 == 0:                             # a tenth of the cases through a file
        label = os.path.join(workdir, f"case{seed}.tflite")
        with open(label, "wb") as f:
            f.write(source)
        source = label
    try:
        read_tflite(source)
    except fixnet.FixnetError as e:
        if not isinstance(e, TfliteFileError) or not str(e).startswith(label + ": "):
            return "unnamed", f"{what}: {type(e).__name__}: {e}"
        return "refused", what
    except BaseException as e:                    # noqa: B902 -- the point of the test
        return "other", f"{what}: {type(e).__name__}: {e}"
    # what reads is then loaded (converted to fixnet's steps, each run once) and run: only
    # FixnetError, which names the file, may come out of that either
    try:
        qm = load_tflite(source)
        x = [np.full((1,) + qm.tensors[t].shape, qm.tensors[t].qparams.zero_point,
                     qm.tensors[t].qparams.dtype)
             for t in qm.inputs]
        qm.predict(x if len(x) > 1 else x[0])
    except fixnet.FixnetError as e:
        if label not in str(e):
            return "unnamed", f"{what}: load: {type(e).__name__}: {e}"
        return "loaded-refused", what
    except BaseException as e:                    # noqa: B902 -- the point of the test
        return "other", f"{what}: load: {type(e).__name__}: {e}"
    return "ok", what


def campaign(seeds, workdir):
    """Run the cases ``seeds``; return (outcome counts, outcome counts per edit, failures)."""
    import collections
    originals = {n: open(model_path(n), "rb").read() for n in FUZZ_FIXTURES}
    counts = collections.Counter()
    by_edit = collections.defaultdict(collections.Counter)
    failures = []
    for seed in seeds:
        outcome, what = fuzz_case(seed, originals, workdir)
        counts[outcome] += 1
        by_edit[EDITS[seed % len(EDITS)].__name__[2:]][outcome] += 1
        if outcome not in ("ok", "refused", "loaded-refused"):
            failures.append(what)
    return counts, by_edit, failures


def test_damaged_files_read_or_give_a_tflite_file_error(tmp_path):
    """1400 damaged files (every edit kind 100 times, over six fixtures; about 10 s): each
    reads, or gives a TfliteFileError whose message starts with the file's name; nothing else."""
    counts, by_edit, failures = campaign(range(FUZZ_CASES), str(tmp_path))
    assert not failures, f"{len(failures)} of {FUZZ_CASES} damaged files:\n" + "\n".join(failures[:20])
    assert counts["refused"] > 0 and counts["ok"] > 0 and counts["loaded-refused"] > 0, counts
    # the targeted edits break what they edit: the reader must refuse nearly all of them (a
    # shape edited to 0 or 1000, say, may stay consistent with nothing to contradict it)
    for edit in ("tensor_buffer_index", "buffer_size", "opcode_index", "tensor_type",
                 "quantization_length"):
        c = by_edit[edit]
        assert c["refused"] >= 0.9 * sum(c.values()), (edit, c)


@pytest.mark.fuzz
def test_damaged_files_campaign(tmp_path):
    """The long run: FIXNET_FUZZ_CASES (default 30000) cases from FIXNET_FUZZ_SEED (default
    1000000); ``python -m pytest tests/test_tflite_reader.py -m fuzz``."""
    n = int(os.environ.get("FIXNET_FUZZ_CASES", 30000))
    start = int(os.environ.get("FIXNET_FUZZ_SEED", 1_000_000))
    counts, by_edit, failures = campaign(range(start, start + n), str(tmp_path))
    print(f"\n.tflite damaged files: {dict(counts)}")
    for edit, c in sorted(by_edit.items()):
        print(f"  {edit:24s} {dict(c)}")
    assert not failures, f"{len(failures)} of {n} damaged files:\n" + "\n".join(failures[:20])


def test_every_truncation_of_a_small_file_is_refused():
    """Every length of layers_merge_k3.tflite short of the whole file (5.5 kB): the FlatBuffer
    header, each table and vector, and the buffers' data all end somewhere."""
    data = open(model_path("layers_merge_k3"), "rb").read()
    for n in range(0, len(data), 7):
        with pytest.raises(TfliteFileError, match=r"^<bytes>: "):
            read_tflite(data[:n])


def test_a_damaged_stride_asking_for_a_huge_padded_image_is_refused(tmp_path):
    """Case 1025893 of the long campaign: a bit flip makes a CONV_2D's stride 2^24, so SAME
    padding asks for 520 million padded rows; the converter refuses the operator (the padded
    image is past the memory limit) instead of the oracle check running out of memory."""
    originals = {n: open(model_path(n), "rb").read() for n in FUZZ_FIXTURES}
    outcome, what = fuzz_case(1025893, originals, str(tmp_path))
    assert outcome == "loaded-refused", what


def test_a_large_memory_limit_does_not_reserve_it_to_read_a_small_file():
    """max_memory bounds what a file may hold; reading a 5 kB file under a limit of 1 TB reads
    5 kB (it once asked for a buffer of the whole limit and ran out of memory)."""
    m = read_tflite(model_path("layers_merge_k3"), max_memory="1TB")
    assert isinstance(m, TfliteModel) and m.operators
    assert fixnet.load(model_path("layers_merge_k3"), max_memory="1TB").steps
