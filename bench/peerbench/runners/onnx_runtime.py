"""ONNX Runtime (CPUExecutionProvider): int8 = tf2onnx from_tflite of the fixture's int8
.tflite (a QDQ graph, int8 in/out); float = tf2onnx of the Keras model. On a recurrent fixture,
both come from the Keras model, int8 by quantize_static (see onnx_rnn_runners)."""
import logging
import os
import tempfile

from .base import Runner, Unavailable, import_tensorflow
from .keras_float import load_keras_model, serving_fn

RECURRENT_ONNX_OPS = ("LSTM", "GRU", "RNN", "Loop", "Scan")
OPSET = 17


def onnx_runners(m, threads, want):
    """The ONNX Runtime runners of `want` on model `m`: (made, failed) as tflite_runners; a
    missing onnxruntime / tf2onnx / TensorFlow raises Unavailable."""
    try:
        import onnxruntime as ort
        import tf2onnx
    except ImportError as e:
        why = (f"not installed ({e.name}, which tf2onnx needs to convert the .tflite)"
               if e.name == "tensorflow" else f"not installed ({e.name})")
        raise Unavailable(f"{why}; pip install onnxruntime tf2onnx tensorflow") from None
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    tf = import_tensorflow(threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    made, failed = [], []

    def session(model_proto):
        return ort.InferenceSession(model_proto.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])

    def runs(sess, xs):
        name = sess.get_inputs()[0].name
        return {n: (lambda x: lambda: sess.run(None, {name: x})[0])(xs[n]) for n in m.batches}

    if m.kind == "rnn":
        return onnx_rnn_runners(m, threads, want, tf, ort, tf2onnx, session)
    if "ort_float" in want:
        try:
            model, which = load_keras_model(m, threads)
            shape = (None,) + tuple(m.x[m.batches[0]].shape[1:])
            spec = (tf.TensorSpec(shape, tf.float32, name="x"),)
            fn = tf.function(lambda x: model(x, training=False))
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=OPSET)
            made.append(Runner("ort_float", "ONNX Runtime float", runs(session(proto), m.x),
                               f"onnxruntime {ort.__version__}; tf2onnx {tf2onnx.__version__} "
                               f"from_function of the {which} model, opset {OPSET}"))
        except Unavailable as e:
            failed.append(("ort_float", "ONNX Runtime float", str(e)))
        except Exception as e:  # noqa: BLE001 - a converter failure is a result, not a crash
            failed.append(("ort_float", "ONNX Runtime float", f"failed: {type(e).__name__}: {e}"))
    if "ort_int8" in want:
        label = "ONNX Runtime int8 (QDQ from the .tflite)"
        try:
            if not m.tflite.exists() or m.tflite_x is None:
                raise Unavailable(f"no {m.tflite.name}")
            proto, _ = tf2onnx.convert.from_tflite(str(m.tflite), opset=OPSET)
            # the graph's int8 output is the .tflite's output tensor: same scale and zero point
            made.append(Runner("ort_int8", label, runs(session(proto), m.tflite_x),
                               f"onnxruntime {ort.__version__}; tf2onnx {tf2onnx.__version__} "
                               f"from_tflite, opset {OPSET}", m.tflite_out_q))
        except Unavailable as e:
            failed.append(("ort_int8", label, str(e)))
        except Exception as e:  # noqa: BLE001
            failed.append(("ort_int8", label, f"failed: {type(e).__name__}: {e}"))
    return made, failed


def onnx_rnn_runners(m, threads, want, tf, ort, tf2onnx, session):
    """ONNX Runtime on a recurrent fixture, made as models/make_recurrent_models.py makes its
    ort_int8 peer (that script writes into models/, so its function is not reused): tf2onnx
    from_function (opset 17) of the Keras model with a free batch dimension, outputs out_00,
    out_01, ...; for int8, quantize_qdq of it (quantize_static over the fixture's calibration
    samples). Float in and float out (QuantizeLinear / DequantizeLinear inside the graph); the
    recurrent op (LSTM / GRU, or a Loop) stays float there. Returns (made, failed)."""
    made, failed = [], []
    keys = [k for k in ("ort_float", "ort_int8") if k in want]
    labels = {"ort_float": "ONNX Runtime float",
              "ort_int8": "ONNX Runtime int8 (quantize_static QDQ of the Keras model)"}
    try:
        model, which = load_keras_model(m, threads)
        shape = (None,) + tuple(model.inputs[0].shape[1:])   # the time dimension as Keras has it
        fn = serving_fn(tf, model, shape, tf.as_dtype(m.x_calib.dtype))
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature,
                                                 opset=OPSET)
    except Exception as e:  # noqa: BLE001 - a converter failure is a result, not a crash
        why = str(e) if isinstance(e, Unavailable) else f"failed: {type(e).__name__}: {e}"
        return [], [(k, labels[k], why) for k in keys]
    out_names = sorted(o.name for o in proto.graph.output)
    conv_note = (f"onnxruntime {ort.__version__}; tf2onnx {tf2onnx.__version__} from_function "
                 f"of the {which} model, opset {OPSET}")

    def runs(sess):
        name = sess.get_inputs()[0].name
        one = len(out_names) == 1

        def bind(x):
            if one:
                return lambda: sess.run(out_names, {name: x})[0]
            return lambda: sess.run(out_names, {name: x})
        return {n: bind(m.x[n]) for n in m.batches}

    if "ort_float" in want:
        try:
            sess = session(proto)
            made.append(Runner("ort_float", labels["ort_float"], runs(sess), conv_note))
            made[-1].calls[m.timed[0]]()
        except Exception as e:  # noqa: BLE001
            made = [r for r in made if r.key != "ort_float"]
            failed.append(("ort_float", labels["ort_float"], f"failed: {type(e).__name__}: {e}"))
    if "ort_int8" in want:
        try:
            qproto = quantize_qdq(proto, m.x_calib)
            ops = sorted({n.op_type for n in qproto.graph.node})
            rec = [o for o in ops if o in RECURRENT_ONNX_OPS]
            r = Runner("ort_int8", labels["ort_int8"], runs(session(qproto)),
                       conv_note + "; quantize_static QDQ s8s8 per-channel, MinMax over x_calib; "
                       "float in / float out; recurrent op(s) kept float: "
                       + (", ".join(rec) if rec else "none (unrolled)"))
            r.calls[m.timed[0]]()
            made.append(r)
        except Exception as e:  # noqa: BLE001
            failed.append(("ort_int8", labels["ort_int8"], f"failed: {type(e).__name__}: {e}"))
    return made, failed


def quantize_qdq(proto, x_calib):
    """onnxruntime.quantization.quantize_static of the float graph `proto`: QDQ, QInt8
    activations and weights, per-channel, MinMax over the calibration samples fed one by one.
    Returns the int8 graph (a ModelProto); the files it needs live in a temporary folder."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    in_name = proto.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self, xc):
            self.it = iter(xc[i:i + 1] for i in range(len(xc)))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {in_name: x}

    with tempfile.TemporaryDirectory(prefix="fixnet-peers-onnx-") as tmp:
        fpath, qpath = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(proto, fpath)
        root = logging.getLogger()
        level = root.level        # quantize_static advises pre-processing on the root
        root.setLevel(logging.ERROR)      # logger, once per model: not our business
        try:
            quantize_static(fpath, qpath, Reader(x_calib),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        return onnx.load(qpath)
