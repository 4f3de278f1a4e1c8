"""Oracle of the merge ops (fixnet/ops/merge.py): add, subtract, average, multiply, maximum,
minimum and concatenation; kernels in fixnet/_kernels/_merge.pyx (the binary ops) and
_layout.pyx (concatenation). The binary ops work elementwise on arrays of one shape (the
kernels take them flattened); MBQM is ``multiply_by_quantized_multiplier``. A binary op takes
x, y and one ``params`` mapping, the one its kernel takes: exactly the keys ADD_PARAMS,
MUL_PARAMS or MAXIMUM_PARAMS; a missing or unknown key is an error naming it.

Every function takes int8 or int16 activations, one type per call (the output has the
inputs' type; int16 zero points are 0)."""
import numpy as np

from .core import (ACTIVATION_RANGES, INT32_MAX, INT32_MIN, _act, _check_act_output_range,
                   _check_act_zero_point, _clamp_to, _params, _same_act, _wrap_int32,
                   multiply_by_quantized_multiplier)

__all__ = [
    "ADD_PARAMS",
    "MUL_PARAMS",
    "MAXIMUM_PARAMS",
    "add_accumulators",
    "add",
    "mul",
    "maximum",
    "requantize_into",
    "concatenate",
]


# The keys of the params mappings (the fields of the kernels' structs, _kernels/params.pxd).
ADD_PARAMS = ("x_zp", "x_m0", "x_shift", "y_zp", "y_m0", "y_shift", "left_shift", "out_m0",
              "out_shift", "out_zp", "act_min", "act_max", "subtract")
MUL_PARAMS = ("x_zp", "y_zp", "m0", "shift", "out_zp", "act_min", "act_max")
MAXIMUM_PARAMS = ("x_zp", "x_m0", "x_shift", "y_zp", "y_m0", "y_shift", "out_zp", "act_min",
                  "act_max", "take_min")


def _binary_inputs(x, y, kernel):
    """(x, y as int64, their activation dtype): one type, one shape."""
    x, dtype = _act(x, "x")
    _same_act(dtype, (y, "y"))
    y, _ = _act(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"{kernel}: x has shape {x.shape} but y has shape {y.shape}; "
                         f"broadcast them before the kernel")
    return x, y, dtype


def _check_flag(value, name, kernel):
    if int(value) not in (0, 1):
        raise ValueError(f"{kernel}: {name} = {value} must be 0 or 1")


def _check_left_shift(left_shift, zps, dtype):
    """left_shift in [0, 24] and (x - zp) * 2^left_shift in int32 for every x of ``dtype``
    (int16: zp = 0, so left_shift <= 16)."""
    left_shift = int(left_shift)
    lo, hi = ACTIVATION_RANGES[np.dtype(dtype)]
    if not 0 <= left_shift <= 24:
        raise ValueError(f"add: left_shift = {left_shift} must be in [0, 24]")
    for name, zp in zps:
        if (hi - int(zp)) << left_shift > INT32_MAX or (lo - int(zp)) << left_shift < INT32_MIN:
            raise ValueError(f"add: left_shift = {left_shift} with {name} = {zp}: "
                             f"(x - {name}) * 2^left_shift can leave int32 for {dtype} x")


def add_accumulators(x, y, params):
    """Exact int64 value of add's int32 intermediate r = sx + sy (sx - sy if subtract).

    sx = MBQM((x - x_zp) * 2^left_shift, x_m0, x_shift), sy likewise; params: add's mapping
    (ADD_PARAMS; the output's fields are not read here). A value outside int32 means the
    kernel's r wraps modulo 2^32 (checked mode raises on it).
    """
    (x_zp, x_m0, x_shift, y_zp, y_m0, y_shift, left_shift, _, _, _, _, _,
     subtract) = _params(params, ADD_PARAMS, "add")
    x, y, dtype = _binary_inputs(x, y, "add")
    _check_act_zero_point(x_zp, dtype, "x_zp")
    _check_act_zero_point(y_zp, dtype, "y_zp")
    _check_left_shift(left_shift, (("x_zp", x_zp), ("y_zp", y_zp)), dtype)
    _check_flag(subtract, "subtract", "add")
    sx = multiply_by_quantized_multiplier((x - int(x_zp)) << int(left_shift), x_m0, x_shift)
    sy = multiply_by_quantized_multiplier((y - int(y_zp)) << int(left_shift), y_m0, y_shift)
    sx, sy = sx.astype(np.int64), sy.astype(np.int64)
    return sx - sy if int(subtract) else sx + sy


def add(x, y, params):
    """TFLite's quantized add (or subtract) of two tensors of the same shape and activation
    type; params: a mapping with exactly the keys ADD_PARAMS.

    Both inputs go to a common fine scale: sx = MBQM((x - x_zp) * 2^left_shift, x_m0,
    x_shift), sy likewise (real factors x_scale / (2 max scale), ...); r = sx + sy, or
    sx - sy if subtract (int32, wrapping modulo 2^32); out = clamp(out_zp + MBQM(r, out_m0,
    out_shift), act_min, act_max). Zero points int8 (0 for int16); left_shift in [0, 24]
    with (x - zp) * 2^left_shift in int32 for every x of the type (TFLite uses 20 for int8,
    15 for int16: |x| * 2^15 <= 2^30). Returns the inputs' type.
    """
    *_, out_m0, out_shift, out_zp, act_min, act_max, _ = _params(params, ADD_PARAMS, "add")
    dtype = _binary_inputs(x, y, "add")[2]
    _check_act_output_range(dtype, out_zp, act_min, act_max)
    r = _wrap_int32(add_accumulators(x, y, params))
    return _clamp_to(dtype, out_zp, multiply_by_quantized_multiplier(r, out_m0, out_shift),
                     act_min, act_max)


def mul(x, y, params):
    """Quantized elementwise product: clamp(out_zp + MBQM((x - x_zp) * (y - y_zp), m0,
    shift), act_min, act_max); real factor x_scale * y_scale / out_scale. The product is at
    most 255^2 (int8) or 2^30 (int16, zero points 0) in magnitude: it fits int32. params: a
    mapping with exactly the keys MUL_PARAMS. Returns the inputs' type."""
    x_zp, y_zp, m0, shift, out_zp, act_min, act_max = _params(params, MUL_PARAMS, "mul")
    x, y, dtype = _binary_inputs(x, y, "mul")
    _check_act_zero_point(x_zp, dtype, "x_zp")
    _check_act_zero_point(y_zp, dtype, "y_zp")
    _check_act_output_range(dtype, out_zp, act_min, act_max)
    product = (x - int(x_zp)) * (y - int(y_zp))
    return _clamp_to(dtype, out_zp, multiply_by_quantized_multiplier(product, m0, shift),
                     act_min, act_max)


def maximum(x, y, params):
    """Elementwise max (min if take_min) of two tensors (int8 or int16) after moving both to
    the output
    quantization: rx = out_zp + MBQM(x - x_zp, x_m0, x_shift), ry likewise (exact, before
    the clamp; real factors x_scale / out_scale, y_scale / out_scale);
    out = clamp(max(rx, ry), act_min, act_max). params: a mapping with exactly the keys
    MAXIMUM_PARAMS. Returns the inputs' type."""
    (x_zp, x_m0, x_shift, y_zp, y_m0, y_shift, out_zp, act_min, act_max,
     take_min) = _params(params, MAXIMUM_PARAMS, "maximum")
    x, y, dtype = _binary_inputs(x, y, "maximum")
    _check_act_zero_point(x_zp, dtype, "x_zp")
    _check_act_zero_point(y_zp, dtype, "y_zp")
    _check_act_output_range(dtype, out_zp, act_min, act_max)
    _check_flag(take_min, "take_min", "maximum")
    rx = int(out_zp) + multiply_by_quantized_multiplier(x - int(x_zp), x_m0, x_shift).astype(
        np.int64)
    ry = int(out_zp) + multiply_by_quantized_multiplier(y - int(y_zp), y_m0, y_shift).astype(
        np.int64)
    r = np.minimum(rx, ry) if int(take_min) else np.maximum(rx, ry)
    return np.clip(r, act_min, act_max).astype(dtype)


def requantize_into(x, in_zp, m0, shift, out_zp):
    """The block requantize_into writes into out[:, offset:offset + n]: [outer, n] of x's
    type (int8 or int16: out has the same).

    x: [outer, n]. m0 == 0 means "same quantization" (then in_zp must equal out_zp): the
    block is x itself. Otherwise clamp(out_zp + MBQM(x - in_zp, m0, shift)) to the type's
    range, real factor in_scale / out_scale.
    """
    x, dtype = _act(x, "x")
    if x.ndim != 2:
        raise ValueError(f"requantize_into: x has shape {x.shape}, expected [outer, n]")
    _check_act_zero_point(in_zp, dtype, "in_zp")
    _check_act_zero_point(out_zp, dtype, "out_zp")
    if int(m0) == 0:
        if int(in_zp) != int(out_zp):
            raise ValueError(f"requantize_into: m0 = 0 means a plain copy, but in_zp = {in_zp} "
                             f"!= out_zp = {out_zp}")
        return x.astype(dtype)
    lo, hi = ACTIVATION_RANGES[dtype]
    return _clamp_to(dtype, out_zp, multiply_by_quantized_multiplier(x - int(in_zp), m0, shift),
                     lo, hi)


def concatenate(blocks, out_zp):
    """Concatenate [outer, n_i] blocks (all int8 or all int16) along axis 1 into the output
    quantization.

    blocks: iterable of (x, in_zp, m0, shift), each as requantize_into's arguments. Any
    Keras Concatenate is this after viewing each input as [outer, axis_len * inner].
    Returns [outer, sum n_i] of the blocks' type.
    """
    parts = [requantize_into(x, in_zp, m0, shift, out_zp) for x, in_zp, m0, shift in blocks]
    if not parts:
        raise ValueError("concatenate: no blocks")
    _same_act(parts[0].dtype, *((p, f"block {i}") for i, p in enumerate(parts)))
    if len({p.shape[0] for p in parts}) != 1:
        raise ValueError(f"concatenate: blocks have different outer sizes "
                         f"{[p.shape[0] for p in parts]}")
    return np.concatenate(parts, axis=1)
