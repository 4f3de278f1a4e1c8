"""The 256-entry int8 tables of TFLite's elementwise int8 ops, for fixnet's LookupStep.

Each op with one int8 input and one int8 output is a function of the input's 256 codes, so
running TFLite's exact int8 algorithm (fixnet/oracle/tflite.py) over every code gives a table
that fixnet's lookup kernel runs bit-exactly:

    table = table_for("HARD_SWISH", (in_scale, in_zp), (out_scale, out_zp))
    step = LookupStep(name, layer, inputs, outputs, table)      # fixnet/ops/activation.py

Both of TFLite's CPU kernels (OpResolverType.BUILTIN_REF and the builtin optimized ones)
compute these ops the same way in TensorFlow 2.21 (activations.cc): LOGISTIC, TANH, ELU and
GELU as a float-built table (LUTPopulate), HARD_SWISH in int16 fixed point, LEAKY_RELU and
RELU/RELU6/RELU_N1_TO_1/RELU_0_TO_1 as a requantization and a clamp. (The XNNPACK delegate
rounds LEAKY_RELU differently; it is not modelled.)
"""
import numpy as np

from ..oracle import tflite as tfl

TABLE_OPS = ("LOGISTIC", "TANH", "ELU", "GELU", "HARD_SWISH", "LEAKY_RELU", "RELU", "RELU6",
             "RELU_N1_TO_1", "RELU_0_TO_1")

_RELU_BOUNDS = {"RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0),
                "RELU_0_TO_1": (0.0, 1.0)}


def _scale_zp(qparams, what):
    """(float32 scale, int zero point) of a QParams, a fixnet.tflite Quantization with one
    scale, or a (scale, zero_point) pair."""
    if isinstance(qparams, (tuple, list)) and len(qparams) == 2:
        scale, zp = qparams
    else:
        scale = getattr(qparams, "scale", None)
        zp = getattr(qparams, "zero_point", None)
    scale = np.ravel(np.asarray(scale, np.float64)) if scale is not None else np.empty(0)
    zp = np.ravel(np.asarray(zp, np.int64)) if zp is not None else np.empty(0, np.int64)
    if scale.size != 1 or zp.size != 1:
        raise ValueError(f"table_for: {what} needs one scale and one zero point (per-tensor "
                         f"int8), got {scale.size} scale(s) and {zp.size} zero point(s)")
    s, z = float(np.float32(scale[0])), int(zp[0])
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"table_for: {what} scale {s!r} must be finite and > 0")
    if not -128 <= z <= 127:
        raise ValueError(f"table_for: {what} zero point {z} is outside the int8 range")
    return s, z


def table_for(op, in_qparams, out_qparams, options=None):
    """int8 [256]: entry x_q + 128 is TFLite's int8 output code for input code x_q.

    op: a TFLite builtin op name of TABLE_OPS. in_qparams, out_qparams: the input and output
    tensors' quantization (QParams, fixnet.tflite.Quantization or (scale, zero_point); the
    scale is used as the float32 the file stores). options: the op's options that change the
    result: LEAKY_RELU {"alpha": float}, GELU {"approximate": bool}; others none.
    """
    options = dict(options or {})
    if op not in TABLE_OPS:
        raise ValueError(f"table_for: no int8 table for op {op!r} (ops: {', '.join(TABLE_OPS)})")
    si, zi = _scale_zp(in_qparams, f"{op} input")
    so, zo = _scale_zp(out_qparams, f"{op} output")
    codes = np.arange(-128, 128)
    if op in ("LOGISTIC", "TANH", "ELU"):
        return tfl.lut_table(op, si, zi, so, zo)
    if op == "GELU":
        name = "GELU_APPROXIMATE" if options.get("approximate", False) else "GELU"
        return tfl.lut_table(name, si, zi, so, zo)
    if op == "HARD_SWISH":
        return tfl.hard_swish(codes, tfl.hard_swish_params(si, zi, so, zo))
    if op == "LEAKY_RELU":
        if "alpha" not in options:
            raise ValueError("table_for: LEAKY_RELU needs options {'alpha': float}")
        return tfl.leaky_relu(codes, tfl.leaky_relu_params(si, zi, so, zo, options["alpha"]))
    lo, hi = _RELU_BOUNDS[op]
    return tfl.relu(codes, tfl.relu_params(si, zi, so, zo, lo, hi))
