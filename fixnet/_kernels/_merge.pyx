# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The merge op's elementwise kernels (fixnet/ops/merge.py): add / subtract / average,
multiply, maximum / minimum (concatenation copies with _layout.pyx's requantize_into).

x, y and out are flat arrays of one length (the caller flattens and broadcasts) and one
activation type, int8 or int16 (int16: zero points 0); the other arguments are one ``params``
mapping with exactly the fields of the kernel's struct
(params.pxd: add_params, mul_params, maximum_params; named in ADD_PARAMS, MUL_PARAMS,
MAXIMUM_PARAMS). Bit-exact with ``fixnet.oracle.add`` / ``mul`` / ``maximum``, which take the
same mapping. Private: fixnet.runtime builds one Call object per layer (arguments checked
once) and calls it in a loop.

An int8 input has only 256 values, so whatever depends on one input alone is computed once
per value into a table when the Call object is built: add's rescaled inputs sx, sy (then one
multiply_by_quantized_multiplier per element instead of three: csrc/binary.h, the lookups as
gathers and requant.h's vector epilogue in the AVX2 build) and maximum's requantized inputs
(then a table lookup and a max per element). From PAIR_TABLE_MIN_SIZE (16384) elements on,
add and mul build the 256 x 256 table of every (x, y) pair once, when the Call object is built
(64 KiB), and then do one lookup per element.

An int16 input has 65536 values: no tables. Every element goes through the rule
(csrc/binary.h's int16 loops: 8 elements at a time with requant.h's vector forms on AVX2 and
NEON, the scalar twin elsewhere). add's left_shift is then at most 16 (TFLite uses 15 for
int16: |x| * 2^15 <= 2^30).
"""
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint32_t, INT32_MAX, INT32_MIN

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.acttype cimport call_bits, check_act_output_range, check_act_zp
from fixnet._kernels.fixedpoint cimport (
    check_length,
    check_multipliers,
    check_params,
    multiply_by_quantized_multiplier,
    requantize_accumulator,
)
from fixnet._kernels.params cimport add_params, maximum_params, mul_params

# Below this many elements a call keeps the GIL: releasing it would cost more than the work.
# From PAIR_TABLE_MIN_SIZE elements on, add and mul use a table of all 256 * 256 results.
cdef enum:
    NOGIL_MIN_SIZE = 4096
    PAIR_TABLE_MIN_SIZE = 16384


# ---- the loops -----------------------------------------------------------------------------

from fixnet._kernels.requant cimport fx_requant, fx_requant_bytes, fx_requant_init

cdef extern from "binary.h" nogil:
    const char* FX_ADD_ISA
    void fx_add(const int8_t* x, const int8_t* y, int8_t* out, size_t n,
                const int32_t* x_table, const int32_t* y_table, const fx_requant* q)
    const char* FX_BINARY16_ISA
    ctypedef struct fx_binary16:
        fx_requant x, y, out
        int32_t left_shift, flip, act_min, act_max
    void fx_add16(const int16_t* x, const int16_t* y, int16_t* out, size_t n,
                  const fx_binary16* k)
    void fx_mul16(const int16_t* x, const int16_t* y, int16_t* out, size_t n,
                  const fx_binary16* k)
    void fx_maximum16(const int16_t* x, const int16_t* y, int16_t* out, size_t n,
                      const fx_binary16* k)


# The loop of int8 add: "avx2" (the table lookups, then requant.h's vector epilogue) or
# "scalar"; the int16 loops': "avx2", "neon" or "scalar".
ADD_ISA = FX_ADD_ISA.decode()
BINARY16_ISA = FX_BINARY16_ISA.decode()

cdef enum:
    # lanes of the per-tensor requantization constants (every lane the same; the vector
    # loops load 8)
    ADD_LANES = 16


cdef void pair_table_impl(const int8_t* x, const int8_t* y, int8_t* out, Py_ssize_t size,
                          const int8_t* table) noexcept nogil:
    """out[i] = table[(x[i] + 128) * 256 + y[i] + 128]: any int8 x int8 -> int8 function."""
    cdef Py_ssize_t i
    for i in range(size):
        out[i] = table[((<int>x[i] + 128) << 8) + (<int>y[i] + 128)]


cdef int8_t* allocate_pair_table() except NULL:
    """256 * 256 bytes for a table of results indexed by (x + 128) * 256 + y + 128."""
    cdef int8_t* table = <int8_t*>PyMem_Malloc(256 * 256)
    if table == NULL:
        raise MemoryError()
    return table


cdef void fill_pair_rows(int8_t* row_x, int8_t* all_y, int v) noexcept nogil:
    """row_x[:] = v - 128, all_y[j] = j - 128: the 256 pairs of row v of a pair table."""
    cdef int j
    for j in range(256):
        row_x[j] = <int8_t>(v - 128)
        all_y[j] = <int8_t>(j - 128)


cdef void mul_impl(const int8_t* x, const int8_t* y, int8_t* out, Py_ssize_t size, int x_zp,
                   int y_zp, int32_t m0, int shift, int out_zp, int act_min,
                   int act_max) noexcept nogil:
    """out[i] = clamp(out_zp + MBQM((x[i] - x_zp) * (y[i] - y_zp), m0, shift)); the product
    is at most 255^2 in magnitude."""
    cdef Py_ssize_t i
    for i in range(size):
        out[i] = requantize_accumulator((<int32_t>x[i] - x_zp) * (<int32_t>y[i] - y_zp),
                                        m0, shift, out_zp, act_min, act_max)


cdef void maximum_impl(const int8_t* x, const int8_t* y, int8_t* out, Py_ssize_t size,
                       const int8_t* x_table, const int8_t* y_table, bint take_min) noexcept nogil:
    """out[i] = max (min) of x_table[x[i]] and y_table[y[i]], tables indexed by value + 128.

    The tables hold the clamped requantized inputs: clamping is monotone, so
    clamp(max(rx, ry)) == max(clamp(rx), clamp(ry)), and likewise for min.
    """
    cdef Py_ssize_t i
    cdef int8_t a, b
    if take_min:
        for i in range(size):
            a, b = x_table[<int>x[i] + 128], y_table[<int>y[i] + 128]
            out[i] = a if a < b else b
    else:
        for i in range(size):
            a, b = x_table[<int>x[i] + 128], y_table[<int>y[i] + 128]
            out[i] = a if a > b else b


# ---- entry checks --------------------------------------------------------------------------

# The keys of a params mapping: the fields of the structs (params.pxd), in order.
cdef add_params _add_fields
cdef mul_params _mul_fields
cdef maximum_params _maximum_fields
ADD_PARAMS = tuple(<dict>_add_fields)
MUL_PARAMS = tuple(<dict>_mul_fields)
MAXIMUM_PARAMS = tuple(<dict>_maximum_fields)


cdef int check_binary_lengths(str kernel, Py_ssize_t nx, Py_ssize_t ny,
                              Py_ssize_t n_out) except -1:
    check_length(kernel, "y", ny, nx, "same as x; broadcast before the kernel")
    check_length(kernel, "out", n_out, nx, "same as x")
    return 0


cdef int check_multiplier(str kernel, str m0_name, int m0, str shift_name, int shift) except -1:
    """check_multipliers for one (m0, shift) pair, naming the arguments."""
    cdef int32_t m0_32 = m0, shift_32 = shift
    try:
        check_multipliers(kernel, &m0_32, &shift_32, 1)
    except ValueError as e:
        raise ValueError(str(e).replace("m0[0]", m0_name).replace("shift[0]", shift_name)) from None
    return 0


cdef int check_flag(str kernel, str name, int value) except -1:
    if value != 0 and value != 1:
        raise ValueError(f"{kernel}: {name} = {value} must be 0 or 1")
    return 0


cdef int check_left_shift(int left_shift, str zp_name, int zp, int bits) except -1:
    """left_shift in [0, 24], and (x - zp) * 2^left_shift in int32 for every x of the type
    (int16: zp = 0, so left_shift <= 16)."""
    cdef int64_t lo = -128 if bits == 8 else -32768
    cdef int64_t hi = 127 if bits == 8 else 32767
    if not 0 <= left_shift <= 24:
        raise ValueError(f"add: left_shift = {left_shift} must be in [0, 24]")
    if ((hi - zp) << left_shift) > INT32_MAX or ((lo - zp) << left_shift) < INT32_MIN:
        raise ValueError(f"add: left_shift = {left_shift} with {zp_name} = {zp}: "
                         f"(x - {zp_name}) * 2^left_shift can leave int32 for int{bits} x")
    return 0


# ---- Python entry points -------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class BinaryCall(KernelCall):
    """Base of the binary Call classes: x, y and out of one activation type (``bits``: int8
    or int16), checked once, and, for int16, the constants of csrc/binary.h's loops."""
    cdef readonly int bits                 # 8 or 16: the call's activation type
    cdef const int8_t[::1] x, y            # int8 arrays (empty for an int16 call)
    cdef int8_t[::1] out
    cdef const int16_t[::1] x16, y16       # int16 arrays (empty for an int8 call)
    cdef int16_t[::1] out16
    cdef fx_binary16 k16                   # int16: multipliers, left shift, clamp
    cdef void* k16_block                   # owns k16's arrays

    cdef int bind_arrays(self, str kernel, object x, object y, object out) except -1:
        """Take the arrays (typed by their activation type) and check their lengths; sets
        bits and the task fields."""
        self.bits = call_bits(kernel, (x, y, out), ("x", "y", "out"))
        if self.bits == 16:
            self.x16, self.y16, self.out16 = x, y, out
            check_binary_lengths(kernel, self.x16.shape[0], self.y16.shape[0],
                                 self.out16.shape[0])
        else:
            self.x, self.y, self.out = x, y, out
            check_binary_lengths(kernel, self.x.shape[0], self.y.shape[0], self.out.shape[0])
        self.n_tasks = 1
        self.work_share = <double>self.size() / NOGIL_MIN_SIZE
        return 0

    cdef Py_ssize_t size(self) noexcept nogil:
        return self.x16.shape[0] if self.bits == 16 else self.x.shape[0]

    cdef int init16(self, int x_m0, int x_shift, int y_m0, int y_shift, int out_m0,
                    int out_shift, int left_shift, int flip, int act_min,
                    int act_max) except -1:
        """Fill k16 (every multiplier already checked; 0 for one the kernel does not use)."""
        cdef int32_t m0s[3][ADD_LANES]
        cdef int32_t shifts[3][ADD_LANES]
        cdef size_t block = fx_requant_bytes(ADD_LANES)
        cdef int v
        for v in range(ADD_LANES):
            m0s[0][v], m0s[1][v], m0s[2][v] = x_m0, y_m0, out_m0
            shifts[0][v], shifts[1][v], shifts[2][v] = x_shift, y_shift, out_shift
        PyMem_Free(self.k16_block)     # in case __init__ runs twice
        self.k16_block = PyMem_Malloc(3 * block)
        if self.k16_block == NULL:
            raise MemoryError()
        fx_requant_init(&self.k16.x, self.k16_block, m0s[0], shifts[0], ADD_LANES, 0, act_min,
                        act_max)
        fx_requant_init(&self.k16.y, <char*>self.k16_block + block, m0s[1], shifts[1],
                        ADD_LANES, 0, act_min, act_max)
        fx_requant_init(&self.k16.out, <char*>self.k16_block + 2 * block, m0s[2], shifts[2],
                        ADD_LANES, 0, act_min, act_max)
        self.k16.left_shift, self.k16.flip = left_shift, flip
        self.k16.act_min, self.k16.act_max = act_min, act_max
        return 0

    def __dealloc__(self):
        PyMem_Free(self.k16_block)


@cython.auto_pickle(False)
cdef class PairTableCall(BinaryCall):
    """Base of AddCall and MulCall. int8: from PAIR_TABLE_MIN_SIZE elements on, the table of
    all 256 x 256 results, made by running the subclass's own loop (``direct``) over every
    pair once; a call is then one lookup per element, else the direct loop. int16 (65536 x
    65536 pairs: no table): the subclass's int16 loop (``direct16``)."""
    cdef int8_t* pair_table  # all 256 * 256 results, or NULL below PAIR_TABLE_MIN_SIZE

    cdef void direct(self, const int8_t* x, const int8_t* y, int8_t* out,
                     Py_ssize_t size) noexcept nogil:
        pass

    cdef void direct16(self, const int16_t* x, const int16_t* y, int16_t* out,
                       Py_ssize_t size) noexcept nogil:
        pass

    cdef int make_pair_table(self) except -1:
        """Make the pair table if the call is int8 and long enough (last in __init__:
        direct() must see every constant)."""
        cdef int8_t row_x[256]
        cdef int8_t all_y[256]
        cdef int v
        PyMem_Free(self.pair_table)  # in case __init__ runs twice
        self.pair_table = NULL
        if self.bits == 8 and self.x.shape[0] >= PAIR_TABLE_MIN_SIZE:
            self.pair_table = allocate_pair_table()
            for v in range(256):  # row v: the 256 pairs (v - 128, y) through the loop itself
                fill_pair_rows(row_x, all_y, v)
                self.direct(row_x, all_y, self.pair_table + 256 * v, 256)
        return 0

    def __dealloc__(self):
        PyMem_Free(self.pair_table)

    @property
    def uses_pair_table(self):
        """True if a call is one lookup per element in the table of all 256 x 256 results."""
        return self.pair_table != NULL

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        cdef Py_ssize_t size = self.size()
        if size == 0:
            return
        if self.bits == 16:
            self.direct16(&self.x16[0], &self.y16[0], &self.out16[0], size)
        elif self.pair_table != NULL:
            pair_table_impl(&self.x[0], &self.y[0], &self.out[0], size, self.pair_table)
        else:
            self.direct(&self.x[0], &self.y[0], &self.out[0], size)


@cython.auto_pickle(False)
cdef class AddCall(PairTableCall):
    """add with its arguments checked once: ``AddCall(...)()`` runs the kernel.

    ``AddCall(x, y, params, out)``; ``params`` gives back the add_params it was built with,
    as a dict. int8: holds the 256-entry tables of sx and sy (sy negated for subtract);
    int16: the three multipliers for csrc/binary.h's fx_add16. Keeps x, y, out alive.
    """
    cdef readonly add_params params
    cdef int32_t x_table[256]
    cdef int32_t y_table[256]
    cdef fx_requant q        # int8: the output's requantization (csrc/requant.h), lanes alike
    cdef void* q_block       # owns q's arrays

    def __init__(self, x, y, params, out):
        cdef add_params p
        check_params("add", params, ADD_PARAMS)
        p = params
        cdef int x_zp = p.x_zp, x_m0 = p.x_m0, x_shift = p.x_shift, y_zp = p.y_zp
        cdef int y_m0 = p.y_m0, y_shift = p.y_shift, left_shift = p.left_shift
        cdef int out_m0 = p.out_m0, out_shift = p.out_shift, out_zp = p.out_zp
        cdef int act_min = p.act_min, act_max = p.act_max, subtract = p.subtract
        self.bind_arrays("add", x, y, out)
        cdef int bits = self.bits
        check_act_zp("add", "x_zp", x_zp, bits)
        check_act_zp("add", "y_zp", y_zp, bits)
        check_multiplier("add", "x_m0", x_m0, "x_shift", x_shift)
        check_multiplier("add", "y_m0", y_m0, "y_shift", y_shift)
        check_multiplier("add", "out_m0", out_m0, "out_shift", out_shift)
        check_left_shift(left_shift, "x_zp", x_zp, bits)
        check_left_shift(left_shift, "y_zp", y_zp, bits)
        check_act_output_range("add", out_zp, act_min, act_max, bits)
        check_flag("add", "subtract", subtract)
        self.params = p
        if bits == 16:
            self.init16(x_m0, x_shift, y_m0, y_shift, out_m0, out_shift, left_shift, subtract,
                        act_min, act_max)
        else:
            self.init_tables()
        self.make_pair_table()

    cdef int init_tables(self) except -1:
        """int8: the 256-entry tables of sx and sy and the output's requantization."""
        cdef const add_params* p = &self.params
        cdef int v
        cdef int32_t sy
        for v in range(-128, 128):
            self.x_table[v + 128] = multiply_by_quantized_multiplier(
                (v - p.x_zp) * (<int32_t>1 << p.left_shift), p.x_m0, p.x_shift)
            sy = multiply_by_quantized_multiplier((v - p.y_zp) * (<int32_t>1 << p.left_shift),
                                                  p.y_m0, p.y_shift)
            # sx - sy == sx + (-sy) modulo 2^32; negate as unsigned (defined for any sy).
            self.y_table[v + 128] = <int32_t>(0u - <uint32_t>sy) if p.subtract else sy
        cdef int32_t m0s[ADD_LANES]
        cdef int32_t shifts[ADD_LANES]
        for v in range(ADD_LANES):
            m0s[v], shifts[v] = p.out_m0, p.out_shift
        PyMem_Free(self.q_block)     # in case __init__ runs twice
        self.q_block = PyMem_Malloc(fx_requant_bytes(ADD_LANES))
        if self.q_block == NULL:
            raise MemoryError()
        fx_requant_init(&self.q, self.q_block, m0s, shifts, ADD_LANES, p.out_zp, p.act_min,
                        p.act_max)
        return 0

    def __dealloc__(self):
        PyMem_Free(self.q_block)

    cdef void direct(self, const int8_t* x, const int8_t* y, int8_t* out,
                     Py_ssize_t size) noexcept nogil:
        fx_add(x, y, out, size, self.x_table, self.y_table, &self.q)

    cdef void direct16(self, const int16_t* x, const int16_t* y, int16_t* out,
                       Py_ssize_t size) noexcept nogil:
        fx_add16(x, y, out, size, &self.k16)


@cython.auto_pickle(False)
cdef class MulCall(PairTableCall):
    """mul with its arguments checked once: ``MulCall(...)()`` runs the kernel."""
    cdef readonly mul_params params     # MulCall(x, y, params, out): given back as a dict

    def __init__(self, x, y, params, out):
        cdef mul_params p
        check_params("mul", params, MUL_PARAMS)
        p = params
        self.bind_arrays("mul", x, y, out)
        check_act_zp("mul", "x_zp", p.x_zp, self.bits)
        check_act_zp("mul", "y_zp", p.y_zp, self.bits)
        check_multiplier("mul", "m0", p.m0, "shift", p.shift)
        check_act_output_range("mul", p.out_zp, p.act_min, p.act_max, self.bits)
        self.params = p
        if self.bits == 16:
            self.init16(0, 0, 0, 0, p.m0, p.shift, 0, 0, p.act_min, p.act_max)
        self.make_pair_table()

    cdef void direct(self, const int8_t* x, const int8_t* y, int8_t* out,
                     Py_ssize_t size) noexcept nogil:
        mul_impl(x, y, out, size, self.params.x_zp, self.params.y_zp, self.params.m0,
                 self.params.shift, self.params.out_zp, self.params.act_min,
                 self.params.act_max)

    cdef void direct16(self, const int16_t* x, const int16_t* y, int16_t* out,
                       Py_ssize_t size) noexcept nogil:
        fx_mul16(x, y, out, size, &self.k16)


@cython.auto_pickle(False)
cdef class MaximumCall(BinaryCall):
    """maximum with its arguments checked once: ``MaximumCall(...)()`` runs the kernel.

    ``MaximumCall(x, y, params, out)``; ``params`` gives back the maximum_params it was built
    with, as a dict. int8: holds the 256-entry tables clamp(out_zp + MBQM(v - zp, m0, shift))
    of both inputs; int16: the two multipliers for csrc/binary.h's fx_maximum16.
    """
    cdef readonly maximum_params params
    cdef int8_t x_table[256]
    cdef int8_t y_table[256]
    cdef bint take_min

    def __init__(self, x, y, params, out):
        cdef maximum_params p
        check_params("maximum", params, MAXIMUM_PARAMS)
        p = params
        cdef int x_zp = p.x_zp, x_m0 = p.x_m0, x_shift = p.x_shift, y_zp = p.y_zp
        cdef int y_m0 = p.y_m0, y_shift = p.y_shift, out_zp = p.out_zp
        cdef int act_min = p.act_min, act_max = p.act_max, take_min = p.take_min
        self.bind_arrays("maximum", x, y, out)
        check_act_zp("maximum", "x_zp", x_zp, self.bits)
        check_act_zp("maximum", "y_zp", y_zp, self.bits)
        check_multiplier("maximum", "x_m0", x_m0, "x_shift", x_shift)
        check_multiplier("maximum", "y_m0", y_m0, "y_shift", y_shift)
        check_act_output_range("maximum", out_zp, act_min, act_max, self.bits)
        check_flag("maximum", "take_min", take_min)
        self.params = p
        self.take_min = take_min
        if self.bits == 16:
            self.init16(x_m0, x_shift, y_m0, y_shift, 0, 0, 0, take_min, act_min, act_max)
            return
        cdef int v
        for v in range(-128, 128):
            self.x_table[v + 128] = requantize_accumulator(v - x_zp, x_m0, x_shift, out_zp,
                                                           act_min, act_max)
            self.y_table[v + 128] = requantize_accumulator(v - y_zp, y_m0, y_shift, out_zp,
                                                           act_min, act_max)

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        cdef Py_ssize_t size = self.size()
        if size == 0:
            return
        if self.bits == 16:
            fx_maximum16(&self.x16[0], &self.y16[0], &self.out16[0], size, &self.k16)
        else:
            maximum_impl(&self.x[0], &self.y[0], &self.out[0], size, self.x_table,
                         self.y_table, self.take_min)


def add(x, y, params, out):
    """TFLite's quantized add (subtract if subtract == 1) of x and y into out, all int8 or all
    int16; params: a
    mapping with exactly the keys ADD_PARAMS (x_zp, x_m0, x_shift, y_zp, y_m0, y_shift,
    left_shift, out_m0, out_shift, out_zp, act_min, act_max, subtract).

    sx = MBQM((x - x_zp) * 2^left_shift, x_m0, x_shift), sy likewise; r = sx + sy (sx - sy),
    int32 wrapping modulo 2^32; out = clamp(out_zp + MBQM(r, out_m0, out_shift), act_min,
    act_max). Zero points int8 (0 for int16); m0s in [2^30, 2^31) or 0, shifts in [-31, 30];
    left_shift in [0, 24] with (x - zp) * 2^left_shift in int32 for every x of the type
    (TFLite uses 20 for int8, 15 for int16).
    """
    AddCall(x, y, params, out)()


def mul(x, y, params, out):
    """out = clamp(out_zp + MBQM((x - x_zp) * (y - y_zp), m0, shift), act_min, act_max);
    real factor x_scale * y_scale / out_scale; x, y, out all int8 or all int16 (the product
    is at most 2^30 in magnitude). params: a mapping with exactly the keys MUL_PARAMS (x_zp,
    y_zp, m0, shift, out_zp, act_min, act_max)."""
    MulCall(x, y, params, out)()


def maximum(x, y, params, out):
    """out = clamp(max(rx, ry), act_min, act_max) (min if take_min == 1), x, y, out all int8
    or all int16, with
    rx = out_zp + MBQM(x - x_zp, x_m0, x_shift) and ry likewise (exact, before the clamp).
    params: a mapping with exactly the keys MAXIMUM_PARAMS (x_zp, x_m0, x_shift, y_zp, y_m0,
    y_shift, out_zp, act_min, act_max, take_min)."""
    MaximumCall(x, y, params, out)()
