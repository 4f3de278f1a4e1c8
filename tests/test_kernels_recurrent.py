"""The recurrent kernel (_kernels/_recurrent.pyx) is bit-exact with fixnet.oracle.rnn for every
cell (SimpleRNN, GRU with and without reset_after, LSTM), direction, output mode, mask and
initial state, on random parameters far beyond what quantize() makes (any int16 table, any
valid multiplier, any zero point), with int8 and with int16 activations, on every kernel
build this CPU runs; both refuse a call that mixes the types or gives an int16 tensor a zero
point; and the int16 function tables meet their stated error bounds, checked on all 65536
inputs.

Hypothesis draws the shapes and flags and a seed; NumPy fills the arrays from the seed.
"""
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fixnet._kernels
from fixnet import oracle
from kernel_builds import build_params
from fixnet.activations import activation
from fixnet.ops.recurrent import GATE_NAMES, GATES, Q15, SATURATING, TABLE_ERROR_BOUND

# every build fixnet knows; the ones this machine cannot run are skipped with the reason
BUILDS = build_params(fixnet._kernels.load_build)
SETTINGS = settings(max_examples=300, deadline=None)
SCALARS = ("m_ah", "m_fc", "m_ic", "m_cc", "m_oh", "m_rh", "m_zh", "m_nzh", "m_y", "m_hs", "m_cs",
           "m_init_h", "m_init_c")


def random_multipliers(rng, n, shifts=(-24, 2)):
    m0 = rng.integers(2 ** 30, 2 ** 31, n, dtype=np.int64).astype(np.int32)
    m0[rng.random(n) < 0.05] = 0                                   # a zero multiplier is valid
    return m0, rng.integers(shifts[0], shifts[1] + 1, n).astype(np.int32)


def random_step(rng, cell, U, F, flags):
    """An RNNStep-like parameter set with every value drawn at random (valid, not sensible)."""
    G = GATES[cell]
    names = GATE_NAMES[cell]
    p = SimpleNamespace(cell=cell, units=U, gate_names=names, **flags)
    p.w_q = rng.integers(-127, 128, (G * U, F)).astype(np.int8)
    p.r_q = rng.integers(-127, 128, (G * U, U)).astype(np.int8)
    p.bx = rng.integers(-2 ** 22, 2 ** 22, G * U).astype(np.int32)
    p.bh = rng.integers(-2 ** 22, 2 ** 22, G * U).astype(np.int32)
    # shifts up to +2 could push accumulators (< 2^28 here) past int32 before the multiply:
    # both sides saturate alike, which is part of what is checked
    p.mx, p.sh_x = random_multipliers(rng, G * U)
    p.mh, p.sh_h = random_multipliers(rng, G * U)
    if rng.random() < 0.5:
        p.tables = rng.integers(-32768, 32768, (len(names), oracle.TABLE_SIZE)).astype(np.int16)
    else:                                                     # real functions at real scales
        fns = ["sigmoid", "tanh", "hard_sigmoid", "relu", "linear", "softsign"]
        p.tables = np.stack([oracle.activation_table(activation(fns[rng.integers(len(fns))])[0],
                                                     2.0 ** -rng.integers(8, 14), Q15)
                             for _ in names])
    for name in SCALARS:
        m0, sh = random_multipliers(rng, 1, (-20, 1))
        setattr(p, name, (int(m0[0]), int(sh[0])))
    p.one_z = int(rng.integers(0, 65536))
    p.token_gx, p.ids_zp = None, -128
    p.y_zp, p.hs_zp, p.cs_zp, p.mask_zp = (int(v) for v in rng.integers(-128, 128, 4))
    p.init_zp = tuple(int(v) for v in rng.integers(-128, 128, 2))
    return p


@st.composite
def configs(draw):
    cell = draw(st.sampled_from(["simple_rnn", "gru", "lstm"]))
    flags = dict(reset_after=draw(st.booleans()), go_backwards=draw(st.booleans()),
                 reverse_output=draw(st.booleans()), return_sequences=draw(st.booleans()),
                 return_state=draw(st.booleans()), zero_output_for_mask=draw(st.booleans()),
                 masked=draw(st.booleans()),
                 n_init=draw(st.sampled_from([0, 1] if cell != "lstm" else [0, 2])))
    return (cell, draw(st.integers(1, 9)), draw(st.integers(0, 7)), draw(st.integers(0, 6)),
            draw(st.sampled_from([0, 1, 3])), flags, draw(st.integers(0, 2 ** 32 - 1)))


@pytest.mark.parametrize("build", BUILDS)
@SETTINGS
@given(configs(), st.integers(1, 40))
def test_token_input_is_bit_exact_with_the_oracle(build, cfg, vocab):
    """A folded Embedding: the input projection is a row of token_gx per token id."""
    cell, U, _, T, B, flags, seed = cfg
    rng = np.random.default_rng(seed)
    p = random_step(rng, cell, U, 0, flags)
    p.token_gx = rng.integers(-2 ** 20, 2 ** 20, (vocab, GATES[cell] * U)).astype(np.int32)
    p.ids_zp = int(rng.integers(-128, 128 - vocab))
    x = (p.ids_zp + rng.integers(0, vocab, (B, T))).astype(np.int8)
    check_against_oracle(build._recurrent, p, x, rng)


def as_int16(p):
    """The parameters ``p`` for int16 activations: every zero point of a tensor 0."""
    p.y_zp = p.hs_zp = p.cs_zp = p.mask_zp = p.ids_zp = 0
    p.init_zp = (0, 0)
    return p


def random_codes(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def check_against_oracle(module, p, x, rng):
    """Random initial states (if p takes them) and mask codes (30% padding, if masked), of
    x's type; the kernel's outputs must be the oracle's, bit for bit, and of that type."""
    B, T = x.shape[0], x.shape[1]
    inits = [random_codes(rng, x.dtype, (B, p.units)) for _ in range(p.n_init)]
    mask = None
    if p.masked:
        mask = np.where(rng.random((B, T)) < 0.3, p.mask_zp,
                        random_codes(rng, x.dtype, (B, T))).astype(x.dtype)
    want = oracle.rnn(p, x, inits, mask)
    got = run_kernel(module, p, x, inits, mask)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert w.dtype == x.dtype
        np.testing.assert_array_equal(g, w)


def output_shapes(p, B, T):
    shapes = [(B, T, p.units) if p.return_sequences else (B, p.units)]
    if p.return_state:
        shapes += [(B, p.units)] * (2 if p.cell == "lstm" else 1)
    return shapes


def run_kernel(module, p, x, inits, mask, out_dtype=None):
    outs = [np.full(s, 99, out_dtype or x.dtype) for s in output_shapes(p, x.shape[0], x.shape[1])]
    module.RnnCall(x, list(inits), mask, outs, p)()
    return outs


@pytest.mark.parametrize("build", BUILDS)
@SETTINGS
@given(configs())
def test_kernel_is_bit_exact_with_the_oracle(build, cfg):
    cell, U, F, T, B, flags, seed = cfg
    rng = np.random.default_rng(seed)
    p = random_step(rng, cell, U, F, flags)
    x = rng.integers(-128, 128, (B, T, F)).astype(np.int8)
    check_against_oracle(build._recurrent, p, x, rng)


@pytest.mark.parametrize("build", BUILDS)
@SETTINGS
@given(configs())
def test_int16_kernel_is_bit_exact_with_the_oracle(build, cfg):
    """int16 x, initial states, mask and outputs (zero points 0) over the full int16 range:
    the input projection multiplies int16 codes, the outputs are int16 codes."""
    cell, U, F, T, B, flags, seed = cfg
    rng = np.random.default_rng(seed)
    p = as_int16(random_step(rng, cell, U, F, flags))
    x = random_codes(rng, np.int16, (B, T, F))
    if rng.random() < 0.2:
        x[:] = rng.choice([-32768, 32767])             # the extremes the overflow proof allows
    check_against_oracle(build._recurrent, p, x, rng)


@pytest.mark.parametrize("build", BUILDS)
@SETTINGS
@given(configs(), st.integers(1, 40))
def test_int16_token_input_is_bit_exact_with_the_oracle(build, cfg, vocab):
    """Token ids as int16 codes (zero point 0: the code is the id)."""
    cell, U, _, T, B, flags, seed = cfg
    rng = np.random.default_rng(seed)
    p = as_int16(random_step(rng, cell, U, 0, flags))
    p.token_gx = rng.integers(-2 ** 20, 2 ** 20, (vocab, GATES[cell] * U)).astype(np.int32)
    x = rng.integers(0, vocab, (B, T)).astype(np.int16)
    check_against_oracle(build._recurrent, p, x, rng)


LSTM_FLAGS = dict(reset_after=True, go_backwards=False, reverse_output=False, return_sequences=True,
                  return_state=True, zero_output_for_mask=False, masked=True, n_init=2)


@pytest.mark.parametrize("build", BUILDS)
def test_one_activation_type_per_call(build):
    """x, initial states, mask and outputs of one type: a call that mixes int8 and int16
    is refused by the kernel (ValueError) and the oracle (TypeError), naming the array."""
    rng = np.random.default_rng(3)
    p = as_int16(random_step(rng, "lstm", 3, 2, LSTM_FLAGS))
    B, T = 2, 4
    x16 = random_codes(rng, np.int16, (B, T, 2))
    s16 = [random_codes(rng, np.int16, (B, 3)) for _ in range(2)]
    m16 = np.ones((B, T), np.int16)
    with pytest.raises(ValueError, match="output 0 has dtype int8.*one activation type per call"):
        run_kernel(build._recurrent, p, x16, s16, m16, out_dtype=np.int8)
    s_mixed = [s16[0], s16[1].astype(np.int8)]
    with pytest.raises(ValueError, match="initial state 1 has dtype int8"):
        run_kernel(build._recurrent, p, x16, s_mixed, m16)
    with pytest.raises(TypeError, match="initial state 1: dtype int8"):
        oracle.rnn(p, x16, s_mixed, m16)
    with pytest.raises(ValueError, match="mask has dtype int8"):
        run_kernel(build._recurrent, p, x16, s16, m16.astype(np.int8))
    with pytest.raises(TypeError, match="mask: dtype int8"):
        oracle.rnn(p, x16, s16, m16.astype(np.int8))
    with pytest.raises(TypeError, match="int8 or int16"):
        oracle.rnn(p, x16.astype(np.int32), s16, m16)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("field", ["y_zp", "hs_zp", "cs_zp", "mask_zp", "init_zp"])
def test_int16_zero_points_are_zero(build, field):
    """int16 tensors are symmetric: a nonzero zero point of any of the call's tensors is
    refused by the kernel and the oracle alike."""
    rng = np.random.default_rng(4)
    p = as_int16(random_step(rng, "lstm", 3, 2, LSTM_FLAGS))
    setattr(p, field, (0, 5) if field == "init_zp" else 5)
    x = random_codes(rng, np.int16, (2, 4, 2))
    s = [random_codes(rng, np.int16, (2, 3)) for _ in range(2)]
    m = np.ones((2, 4), np.int16)
    with pytest.raises(ValueError, match="zero point is 0"):
        run_kernel(build._recurrent, p, x, s, m)
    with pytest.raises(ValueError, match="zero point is 0"):
        oracle.rnn(p, x, s, m)


@pytest.mark.parametrize("build", BUILDS)
def test_rows_are_independent(build):
    """Batch 1 gives the rows of batch N (each row runs on its own scratch, as a task)."""
    rng = np.random.default_rng(7)
    p = random_step(rng, "lstm", 6, 5, dict(reset_after=True, go_backwards=False, reverse_output=False,
                                           return_sequences=True, return_state=True,
                                           zero_output_for_mask=False, masked=False, n_init=0))
    x = rng.integers(-128, 128, (9, 11, 5)).astype(np.int8)
    whole = run_kernel(build._recurrent, p, x, [], None)
    for i in range(9):
        one = run_kernel(build._recurrent, p, x[i:i + 1], [], None)
        for a, b in zip(one, whole, strict=True):
            np.testing.assert_array_equal(a[0], b[i])


@pytest.mark.parametrize("build", BUILDS)
def test_bad_weights_are_refused(build):
    rng = np.random.default_rng(1)
    p = random_step(rng, "gru", 4, 3, dict(reset_after=True, go_backwards=False, reverse_output=False,
                                          return_sequences=False, return_state=False,
                                          zero_output_for_mask=False, masked=False, n_init=0))
    x = np.zeros((2, 5, 4), np.int8)                  # 4 features, weights take 3
    with pytest.raises(ValueError, match="do not fit"):
        run_kernel(build._recurrent, p, x, [], None)
    p.mx = p.mx.copy()
    p.mx[0] = -5                                      # a negative multiplier
    with pytest.raises(ValueError, match="invalid multiplier"):
        run_kernel(build._recurrent, p, np.zeros((2, 5, 3), np.int8), [], None)


# ---- the function tables ----------------------------------------------------------------------

@pytest.mark.parametrize("fn, params", [("sigmoid", {}), ("tanh", {}), ("hard_sigmoid", {"keras3": True}),
                                        ("hard_sigmoid", {"keras3": False})])
def test_function_table_error_bound(fn, params):
    """On every one of the 65536 int16 inputs, the interpolated table differs from the float
    function by at most TABLE_ERROR_BOUND (real units) at the scales quantize uses."""
    f = activation(fn, **params)[0]
    s_in = SATURATING[fn] / 32768.0
    table = oracle.activation_table(f, s_in, Q15)
    v = np.arange(-32768, 32768)
    got = oracle.table_lookup(table, v) * Q15
    err = np.abs(got - f(v * s_in))
    assert err.max() <= TABLE_ERROR_BOUND[fn], (fn, err.max())
    # and the bound is not loose by more than a factor of 2 (it states what the table does)
    assert err.max() > TABLE_ERROR_BOUND[fn] / 2


def test_table_lookup_interpolates_between_entries():
    table = np.zeros(oracle.TABLE_SIZE, np.int16)
    table[512], table[513] = 0, 64                   # inputs 0 and 64
    v = np.arange(0, 65)
    np.testing.assert_array_equal(oracle.table_lookup(table, v), v)
    table[513] = -64
    np.testing.assert_array_equal(oracle.table_lookup(table, v), -v)
