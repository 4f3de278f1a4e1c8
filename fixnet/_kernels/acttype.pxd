# cython: language_level=3
"""The two activation types of a kernel call, int8 and int16, for the kernels of the merge
family (_pool, _merge, _layout, _affine, _prelu): the fused type their loops are written in,
and the entry checks that take a call's type from its arrays and check its zero points, pad
values and clamp bounds in that type.

One activation type per call: every activation array of a call is int8, or every one is int16
(TFLite's 16x8 convention: int16 tensors are symmetric, their zero point is 0). The int8
checks are fixedpoint.pxd's, with their messages; the int16 ones name the argument the same
way (fixnet/oracle/core.py's _check_act_* are their oracle twins).
"""
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t

from fixnet._kernels.fixedpoint cimport check_int8, check_output_range, multiply_by_quantized_multiplier

ctypedef fused act_t:
    int8_t
    int16_t


cdef inline int array_bits(object a):
    """16 for an int16 array, 8 for anything else (an int8 array, or one whose typed
    memoryview conversion will then name the wrong dtype)."""
    char = getattr(getattr(a, "dtype", None), "char", None)
    return 16 if char == "h" else 8


cdef inline str dtype_name(object a):
    return str(getattr(a, "dtype", type(a).__name__))


cdef inline int call_bits(str kernel, tuple arrays, tuple names) except -1:
    """The activation type (8 or 16) of a call's arrays, from the first one. TypeError for a
    None array; ValueError naming an array whose type is not the first one's."""
    cdef int bits = 0
    for a, name in zip(arrays, names):
        if a is None:
            raise TypeError(f"{kernel}: {name} must be an int8 or int16 array, not None")
        if bits == 0:
            bits = array_bits(a)
        elif array_bits(a) != bits:
            raise ValueError(f"{kernel}: {name} has dtype {dtype_name(a)}, but {names[0]} has "
                             f"dtype {dtype_name(arrays[0])} (one activation type per call: "
                             f"all int8 or all int16)")
    return bits


cdef inline int check_act_zp(str kernel, str name, int zp, int bits) except -1:
    """int8: zp in [-128, 127]; int16: zp == 0."""
    if bits == 8:
        return check_int8(kernel, name, zp)
    if zp != 0:
        raise ValueError(f"{kernel}: {name} = {zp}: int16 tensors are symmetric, their zero "
                         f"point is 0")
    return 0


cdef inline int check_act_value(str kernel, str name, int value, int bits) except -1:
    """A code of the type (a pad value): int8 [-128, 127], int16 [-32768, 32767]."""
    if bits == 8:
        return check_int8(kernel, name, value)
    if not -32768 <= value <= 32767:
        raise ValueError(f"{kernel}: {name} = {value} is outside the int16 range [-32768, 32767]")
    return 0


cdef inline int check_act_output_range(str kernel, int out_zp, int act_min, int act_max,
                                       int bits) except -1:
    """out_zp a zero point of the type, act_min <= act_max inside the type's range."""
    if bits == 8:
        return check_output_range(kernel, out_zp, act_min, act_max)
    check_act_zp(kernel, "out_zp", out_zp, bits)
    if not (-32768 <= act_min <= act_max <= 32767):
        raise ValueError(f"{kernel}: act_min = {act_min}, act_max = {act_max} must satisfy "
                         f"-32768 <= act_min <= act_max <= 32767")
    return 0


cdef inline int32_t requantize_clamped(int32_t acc, int32_t m0, int shift, int out_zp,
                                       int act_min, int act_max) noexcept nogil:
    """clamp(out_zp + multiply_by_quantized_multiplier(acc, m0, shift), act_min, act_max):
    fixedpoint.pxd's requantize_accumulator for either type (the caller casts the result,
    which lies in [act_min, act_max], to its output type). The zero point is added in int64:
    the multiplier's result may be near INT32_MAX."""
    cdef int64_t v = <int64_t>out_zp + multiply_by_quantized_multiplier(acc, m0, shift)
    if v < act_min:
        v = act_min
    elif v > act_max:
        v = act_max
    return <int32_t>v
