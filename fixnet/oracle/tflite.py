"""TensorFlow Lite's int8 semantics for the non-linear ops, bit for bit, in NumPy.

fixnet's own int8 softmax and activation tables (fixnet/oracle/softmax.py, ops/activation.py)
compute the functions their own way; a .tflite model run by fixnet must give the integers
TFLite's kernels give. This module writes those kernels down (TensorFlow 2.21, which the
goldens in models/tflite/ops/ come from):

* on gemmlowp's fixed-point arithmetic (fixnet/oracle/gemmlowp.py: saturating rounding
  doubling high multiply, rounding divide by a power of two, ``exp_on_negative_values``,
  ``one_over_one_plus_x_for_x_in_0_1``, ``logistic``, ``tanh`` on raw int32 or int16 values);
* TFLite's parameter preparation (kernels/internal/quantization_util.cc, activations.cc's
  Prepare functions): QuantizeMultiplier, PreprocessSoftmaxScaling, CalculateInputRadius;
* the int8 kernels: SOFTMAX as the reference kernel runs it (reference_ops::Softmax, gemmlowp
  exp and reciprocal: ``softmax_reference``) and as the builtin optimized kernel runs it on
  x86-64 (a float exp table: ``softmax_float_table``); HARD_SWISH (reference_ops::HardSwish,
  int16 fixed point); LEAKY_RELU, RELU, RELU6 (requantization and clamp); and LOGISTIC, TANH,
  ELU, GELU, which both TFLite kernels run as a 256-entry table built in float at Prepare
  (LUTPopulate: ``lut_table``).

Conventions: values are int64 NumPy arrays holding the C values (see gemmlowp.py). Float steps at Prepare time are float32 where the
C++ is float (the tensors' scales are float32) and double where it is double. The transcen-
dental functions of the LUT ops are the C library's float functions (expf, tanhf, expm1f,
erfcf) called through ctypes, as TFLite calls them; without a C library they are NumPy's double
functions rounded to float32 (equal except within an ulp of a rounding boundary).
"""
import ctypes
import ctypes.util
import math

import numpy as np

from .gemmlowp import (INT16_MAX, INT16_MIN, INT32_MAX, exp_on_negative_values, get_reciprocal,
                       rescale, rounding_divide_by_pot, saturating_doubling_high_mul,
                       saturating_rounding_doubling_high_mul, wrap)

__all__ = [
    "quantize_multiplier", "multiply_by_quantized_multiplier", "preprocess_softmax_scaling",
    "calculate_input_radius", "softmax_params", "softmax_reference", "softmax_float_table",
    "softmax_exp_table", "hard_swish_params", "hard_swish", "leaky_relu_params", "leaky_relu",
    "relu_params", "relu", "lut_table", "LUT_TRANSFORMS", "libm_float",
]


# ---- TFLite's parameter preparation (quantization_util.cc) -----------------------------------

def quantize_multiplier(real):
    """TFLite QuantizeMultiplier (double rounding build): (m, shift) with real ~ m * 2^(shift-31),
    m in [2^30, 2^31); (0, 0) for 0 and for shifts below -31. ``real``: a Python float (double)."""
    real = float(real)
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = _round_half_away_double(q * 2.0 ** 31)
    if q_fixed == 2 ** 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return int(q_fixed), int(shift)


def _round_half_away_double(v):
    """C round() on a double."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v)) if abs(v) < 2 ** 52 else int(v)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite MultiplyByQuantizedMultiplier (int32): RoundingDivideByPOT(SRDHM(x * 2^left, m),
    right), the left shift wrapping in int32 as the C++ does."""
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    x = wrap(np.asarray(x, np.int64) << left, 32)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, multiplier), right)


def preprocess_softmax_scaling(beta, input_scale, input_integer_bits=5):
    """TFLite PreprocessSoftmaxScaling: (input_beta_multiplier, input_beta_left_shift) for the
    real multiplier min(beta * input_scale * 2^(31 - input_integer_bits), 2^31 - 1), in double
    (beta and the input scale are the float32 values of the file)."""
    real = min(float(beta) * float(input_scale) * float(1 << (31 - input_integer_bits)),
               float((1 << 31) - 1))
    if not real > 1.0:
        raise ValueError(f"preprocess_softmax_scaling: beta * input_scale * 2^"
                         f"{31 - input_integer_bits} = {real!r} must be > 1 (TFLite refuses it)")
    m, shift = quantize_multiplier(real)
    if shift < 0:
        raise ValueError(f"preprocess_softmax_scaling: shift {shift} < 0")
    return m, shift


def calculate_input_radius(input_integer_bits, input_left_shift, total_signed_bits=31):
    """TFLite CalculateInputRadius: floor((2^ib - 1) * 2^(total - ib) / 2^left_shift)."""
    v = (1.0 * ((1 << input_integer_bits) - 1) * float(1 << (total_signed_bits - input_integer_bits))
         / float(1 << input_left_shift))
    return int(math.floor(v))


def softmax_params(input_scale, beta=1.0):
    """The int8 SOFTMAX reference kernel's params as its Prepare computes them from the input
    scale (float32) and beta (float32): {input_multiplier, input_left_shift, diff_min}."""
    scaled_diff_integer_bits = 5
    m, shift = preprocess_softmax_scaling(np.float32(beta), np.float32(input_scale),
                                          scaled_diff_integer_bits)
    return {"input_multiplier": m, "input_left_shift": shift,
            "diff_min": -calculate_input_radius(scaled_diff_integer_bits, shift)}


# ---- SOFTMAX ----------------------------------------------------------------------------------

def _rows(x):
    x = np.asarray(x)
    if x.dtype != np.int8 or x.ndim != 2:
        raise ValueError(f"softmax: x must be int8 [N, C], got {x.dtype} {x.shape}")
    return x.astype(np.int64)


def softmax_reference(x, input_multiplier, input_left_shift, diff_min):
    """int8 [N, C] logits -> int8 probabilities (scale 1/256, zero point -128) as TFLite's
    reference kernel (reference_ops::Softmax, BUILTIN_REF) computes them.

    Per row, for each d = x_i - max(x) >= diff_min: the difference in Q5.26,
    SRDHM(d * 2^left_shift, input_multiplier), its gemmlowp exp (Q0.31), summed in Q12.19;
    the sum's reciprocal (GetReciprocal) times each exp, rounded right by
    num_bits_over_unit + 23, minus 128, clamped. Differences below diff_min give -128.
    A row whose exponentials sum to 512 or more (TFLite's kernel aborts the process there:
    its shift would exceed 31) gives -128 everywhere, the exact value of the wider shift.
    ``C`` at most 4095 (TFLite's int32 sum wraps beyond)."""
    x = _rows(x)
    n, c = x.shape
    if c > 4095:
        raise ValueError(f"softmax: {c} classes: at most 4095 (the int32 sum of a row)")
    if x.size == 0:
        return np.empty((n, c), np.int8)
    diff = x - x.max(axis=1, keepdims=True)
    used = diff >= diff_min
    d = np.where(used, diff, 0)
    rescaled = saturating_rounding_doubling_high_mul(wrap(d << int(input_left_shift), 32),
                                                     int(input_multiplier))
    exp = exp_on_negative_values(rescaled, 5)
    terms = np.where(used, rescale(exp, 0, 12), 0)
    total = wrap(terms.sum(axis=1), 32)
    recip, bits_over_unit = get_reciprocal(total, 12)
    out = np.empty((n, c), np.int64)
    for r in range(n):       # the shift is per row
        exponent = int(bits_over_unit[r]) + 31 - 8      # >= 23: the sum is at least exp(0)
        if exponent > 31:
            # TFLite aborts here (TFLITE_CHECK: the row's exps sum to 512 or more); the same
            # rounding shift of a value in [0, 2^31) by more than 31 bits is 0
            out[r] = 0
            continue
        out[r] = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(recip[r], exp[r]),
                                        exponent)
    out = np.clip(out - 128, -128, 127)
    return np.where(used, out, -128).astype(np.int8)


def softmax_exp_table(input_scale, beta=1.0):
    """float32 [256] of TFLite's optimized softmax (PopulateSoftmaxLookupTable): entry
    255 - v is expf(-input_scale * beta * v), the product formed in float32."""
    scale = np.float32(-np.float32(input_scale) * np.float32(beta))
    v = np.arange(256, dtype=np.float32)
    table = np.empty(256, np.float32)
    table[255 - np.arange(256)] = libm_float("expf")((scale * v).astype(np.float32))
    return table


def softmax_float_table(x, input_scale, beta=1.0, output_scale=1.0 / 256, output_zero_point=-128):
    """int8 [N, C] -> int8 as TFLite's builtin optimized kernel computes it on x86-64
    (optimized_ops::Softmax with a float table; ARM64 builds with clang use a uint16 table
    instead): e_i = table[255 - max + x_i] (float32), s = e_0 + e_1 + ... in order (float32),
    y_i = clamp(round(e_i * float32(1 / (s * output_scale))) + zero_point)."""
    x = _rows(x)
    n, c = x.shape
    table = softmax_exp_table(input_scale, beta)
    e = table[255 - x.max(axis=1, keepdims=True) + x]
    s = np.zeros(n, np.float32)
    for j in range(c):
        s = (s + e[:, j]).astype(np.float32)
    inv = (np.float32(1.0) / (s * np.float32(output_scale)).astype(np.float32)).astype(np.float32)
    prob = (e * inv[:, None]).astype(np.float32)
    q = _round_half_away_f32(prob).astype(np.int64) + int(output_zero_point)
    return np.clip(q, -128, 127).astype(np.int8)


def _round_half_away_f32(v):
    """roundf: float32 values to the nearest integer, ties away from zero (exact: a float32
    and its floor(|v| + 0.5) are formed in double)."""
    v = np.asarray(v, np.float64)
    return np.copysign(np.floor(np.abs(v) + 0.5), v)


# ---- HARD_SWISH --------------------------------------------------------------------------------

def _downscale_int32_to_int16_multiplier(m):
    if m >= INT32_MAX - (1 << 15):
        return INT16_MAX
    return (m + (1 << 15)) >> 16


def hard_swish_params(input_scale, input_zero_point, output_scale, output_zero_point):
    """HardSwishPrepare: the int16 multipliers and exponents, from float32 scales (the C++
    forms the real multipliers in float)."""
    f = np.float32
    hires_input_scale = f(f(1.0 / 128.0) * f(input_scale))
    reluish_scale = f(f(3.0) / f(32768.0))
    output_multiplier = f(hires_input_scale / f(output_scale))
    reluish_multiplier = f(hires_input_scale / reluish_scale)
    om, oexp = quantize_multiplier(float(output_multiplier))
    rm, rexp = quantize_multiplier(float(reluish_multiplier))
    if oexp > 0:
        raise ValueError(f"hard_swish: output multiplier exponent {oexp} > 0 (TFLite refuses "
                         f"input_scale / output_scale >= 128)")
    return {"input_zero_point": int(input_zero_point), "output_zero_point": int(output_zero_point),
            "output_multiplier_fixedpoint_int16": _downscale_int32_to_int16_multiplier(om),
            "output_multiplier_exponent": oexp,
            "reluish_multiplier_fixedpoint_int16": _downscale_int32_to_int16_multiplier(rm),
            "reluish_multiplier_exponent": rexp}


def _saturating_left_shift16(v, amount):
    return np.clip(np.asarray(v, np.int64) * (1 << amount), INT16_MIN, INT16_MAX)


def hard_swish(x, params):
    """int8 -> int8 as reference_ops::HardSwish computes it (int16 fixed point)."""
    p = params
    x = np.asarray(x, np.int64)
    input_value = wrap(x - p["input_zero_point"], 16)
    hires = wrap(input_value * (1 << 7), 16)
    preshift_out = saturating_rounding_doubling_high_mul(
        hires, p["output_multiplier_fixedpoint_int16"], 16)
    reluish = hires
    rexp = p["reluish_multiplier_exponent"]
    if rexp > 0:
        reluish = _saturating_left_shift16(reluish, rexp - 1)
    reluish = saturating_rounding_doubling_high_mul(
        reluish, p["reluish_multiplier_fixedpoint_int16"], 16)
    if rexp > 0:
        reluish = _saturating_left_shift16(reluish, 1)
    if rexp < 0:
        reluish = rounding_divide_by_pot(reluish, -rexp, 16)
    reluish = wrap((reluish + (1 << 15)) >> 1, 16)
    preshift_output_value = saturating_doubling_high_mul(reluish, preshift_out, 16)
    out = rounding_divide_by_pot(preshift_output_value, -p["output_multiplier_exponent"], 16)
    out = wrap(out + p["output_zero_point"], 16)
    return np.clip(out, -128, 127).astype(np.int8)


# ---- LEAKY_RELU, RELU, RELU6 -------------------------------------------------------------------

def leaky_relu_params(input_scale, input_zero_point, output_scale, output_zero_point, alpha):
    """LeakyReluPrepare: two multipliers from float products (float32 in the C++)."""
    f = np.float32
    alpha_multiplier = f(f(f(input_scale) * f(alpha)) / f(output_scale))
    identity_multiplier = f(f(input_scale) / f(output_scale))
    ma, sa = quantize_multiplier(float(alpha_multiplier))
    mi, si = quantize_multiplier(float(identity_multiplier))
    return {"input_zero_point": int(input_zero_point), "output_zero_point": int(output_zero_point),
            "multiplier_alpha": ma, "shift_alpha": sa,
            "multiplier_identity": mi, "shift_identity": si}


def leaky_relu(x, params):
    """int8 -> int8 as reference_ops::QuantizeLeakyRelu computes it."""
    p = params
    d = np.asarray(x, np.int64) - p["input_zero_point"]
    pos = multiply_by_quantized_multiplier(d, p["multiplier_identity"], p["shift_identity"])
    neg = multiply_by_quantized_multiplier(d, p["multiplier_alpha"], p["shift_alpha"])
    out = p["output_zero_point"] + np.where(d >= 0, pos, neg)
    return np.clip(out, -128, 127).astype(np.int8)


def _roundf_int(v):
    return int(_round_half_away_f32(np.float32(v)))


def relu_params(input_scale, input_zero_point, output_scale, output_zero_point, lo=0.0, hi=None):
    """ReluPrepare and QuantizedReluX: the multiplier (float quotient of the scales) and the
    clamp codes out_zp + roundf(bound / output_scale), within int8. ``hi`` None: no upper
    bound (RELU); 6.0: RELU6; (-1, 1): RELU_N1_TO_1; (0, 1): RELU_0_TO_1."""
    f = np.float32
    m, shift = quantize_multiplier(float(f(f(input_scale) / f(output_scale))))
    act_min = max(-128, int(output_zero_point) + _roundf_int(f(f(lo) / f(output_scale))))
    act_max = 127 if hi is None else min(127, int(output_zero_point)
                                        + _roundf_int(f(f(hi) / f(output_scale))))
    return {"input_zero_point": int(input_zero_point), "output_zero_point": int(output_zero_point),
            "multiplier": m, "shift": shift, "act_min": act_min, "act_max": act_max}


def relu(x, params):
    """int8 -> int8 as optimized_ops::ReluX computes it (one kernel for REF and builtin)."""
    p = params
    d = np.asarray(x, np.int64) - p["input_zero_point"]
    out = p["output_zero_point"] + multiply_by_quantized_multiplier(d, p["multiplier"], p["shift"])
    return np.clip(out, p["act_min"], p["act_max"]).astype(np.int8)


# ---- the table ops (LUTPopulate) ---------------------------------------------------------------

_LIBM = None


def _libm():
    global _LIBM
    if _LIBM is None:
        name = ctypes.util.find_library("m")
        try:
            _LIBM = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBM = False
    return _LIBM


_NUMPY_DOUBLE = {"expf": np.exp, "tanhf": np.tanh, "expm1f": np.expm1}


def _erfc_double(v):
    return np.array([math.erfc(float(t)) for t in np.ravel(v)]).reshape(np.shape(v))


def libm_float(name):
    """The C library's float function ``name`` (expf, tanhf, expm1f, erfcf) over a float32
    array, as TFLite's C++ calls it; NumPy's double function rounded to float32 if there is
    no C library to call."""
    lib = _libm()
    fn = getattr(lib, name, None) if lib else None
    if fn is not None:
        fn.restype = ctypes.c_float
        fn.argtypes = [ctypes.c_float]

        def call(v):
            v = np.asarray(v, np.float32)
            return np.array([fn(float(t)) for t in v.ravel()], np.float32).reshape(v.shape)
        return call
    double = _erfc_double if name == "erfcf" else _NUMPY_DOUBLE[name]
    return lambda v: np.asarray(double(np.asarray(v, np.float64)), np.float32)


def _sigmoid(v):
    f = np.float32
    e = libm_float("expf")((-v).astype(f))
    return (f(1.0) / (f(1.0) + e).astype(f)).astype(f)


def _tanh(v):
    return libm_float("tanhf")(v)


def _elu(v):
    return np.where(v < 0, libm_float("expm1f")(v), v).astype(np.float32)


_SQRT1_2 = np.float32(-0.70710678118654752440)            # static_cast<float>(-M_SQRT1_2)
_SQRT_2_OVER_PI = np.float32(1.12837916709551257390 * 0.70710678118654752440)


def _gelu(v):
    f = np.float32
    erfc = libm_float("erfcf")((v * _SQRT1_2).astype(f))
    return ((f(0.5) * v).astype(f) * erfc).astype(f)


def _gelu_approximate(v):
    f = np.float32
    cube = (((f(0.044715) * v).astype(f) * v).astype(f) * v).astype(f)
    inner = (_SQRT_2_OVER_PI * (v + cube).astype(f)).astype(f)
    t = libm_float("tanhf")(inner)
    return ((f(0.5) * v).astype(f) * (f(1.0) + t).astype(f)).astype(f)


# op -> the float transform its Prepare tabulates (activations.cc)
LUT_TRANSFORMS = {"LOGISTIC": _sigmoid, "TANH": _tanh, "ELU": _elu, "GELU": _gelu,
                  "GELU_APPROXIMATE": _gelu_approximate}


def lut_table(transform, input_scale, input_zero_point, output_scale, output_zero_point):
    """int8 [256] in input-code order (entry x + 128) as TFLite's LUTPopulate<int8_t> builds
    it: dequantized = input_scale * (x - zp) in float32, the transform in float32,
    q = roundf(transformed * (1 / output_scale)) + output_zp, clamped to int8.
    ``transform``: a name of LUT_TRANSFORMS or a float32 -> float32 array function."""
    f = np.float32
    fn = LUT_TRANSFORMS[transform] if isinstance(transform, str) else transform
    codes = np.arange(-128, 128)
    dequantized = (f(input_scale) * (codes - int(input_zero_point)).astype(f)).astype(f)
    transformed = np.asarray(fn(dequantized), f)
    inverse_scale = f(f(1.0) / f(output_scale))
    rescaled = _round_half_away_f32((transformed * inverse_scale).astype(f))
    quantized = (rescaled + float(output_zero_point)).astype(np.int64)
    return np.clip(quantized, -128, 127).astype(np.int8)
