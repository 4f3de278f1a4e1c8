"""PReLU kernel bit-exact against the oracle, on int8 and on int16 activations (zero points
0); the oracle against float arithmetic and hand-worked int16 values; both take one params
mapping with exactly the keys of the kernel's struct."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fixnet import oracle
from fixnet._kernels import _prelu


def prelu_params(*values):
    """prelu's params mapping from its values in PRELU_PARAMS order (in_zp, pos_m0,
    pos_shift, neg_m0, neg_shift, out_zp, act_min, act_max)."""
    assert len(values) == len(oracle.PRELU_PARAMS)
    return dict(zip(oracle.PRELU_PARAMS, values))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 4), st.integers(1, 70),
       st.integers(-128, 127), st.integers(-128, 127),
       st.integers(2 ** 30, 2 ** 31 - 1), st.integers(-12, 2),
       st.integers(2 ** 30, 2 ** 31 - 1), st.integers(-20, 0),
       st.integers(-128, 127), st.integers(-128, 127))
def test_prelu_bit_exact(seed, outer, inner, in_zp, out_zp, pm, ps, nm, ns, a, b):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (outer, inner), dtype=np.int8)
    alpha = rng.integers(-127, 128, inner, dtype=np.int8)
    lo, hi = min(a, b), max(a, b)
    out = np.empty_like(x)
    params = prelu_params(in_zp, pm, ps, nm, ns, out_zp, lo, hi)
    _prelu.prelu(x, alpha, params, out)
    np.testing.assert_array_equal(out, oracle.prelu(x, alpha, params))


def test_prelu_oracle_matches_real_arithmetic():
    rng = np.random.default_rng(0)
    s_x, s_a, s_y, zx, zy = 0.05, 0.01, 0.04, 3, -7
    x = rng.integers(-128, 128, (5, 33), dtype=np.int8)
    alpha = rng.integers(-127, 128, 33, dtype=np.int8)
    pm, ps = oracle.quantize_multiplier(s_x / s_y)
    nm, ns = oracle.quantize_multiplier(s_x * s_a / s_y)
    got = oracle.prelu(x, alpha, prelu_params(zx, pm, ps, nm, ns, zy, -128, 127)).astype(np.int64)
    xr = (x.astype(np.float64) - zx) * s_x
    yr = np.where(xr >= 0, xr, xr * alpha * s_a)
    want = np.clip(np.round(yr / s_y) + zy, -128, 127)
    assert np.abs(got - want).max() <= 1


def prelu_args():
    """Valid prelu arguments: x, out [2, 4]."""
    return dict(x=np.zeros((2, 4), np.int8), alpha=np.zeros(4, np.int8),
                params=prelu_params(0, 2 ** 30, 0, 2 ** 30, 0, 0, -128, 127),
                out=np.zeros((2, 4), np.int8))


@pytest.mark.parametrize("bad, match", [
    (dict(alpha=np.zeros(3, np.int8)), "alpha"),
    (dict(out=np.zeros((2, 5), np.int8)), "out"),
    (dict(in_zp=200), "in_zp"),
    (dict(pos_m0=-5), "m0"),
    (dict(neg_shift=31), "shift"),
    (dict(out_zp=-129), "out_zp"),
    (dict(act_min=5, act_max=4), "act_min"),
])
def test_prelu_entry_checks(bad, match):
    args = prelu_args()
    for name, value in bad.items():
        if name in args["params"]:
            args["params"][name] = value
        else:
            args[name] = value
    with pytest.raises(ValueError, match=match):
        _prelu.prelu(**args)
    with pytest.raises(ValueError, match=match):
        _prelu.PreluCall(**args)


def test_prelu_params_must_have_exactly_the_struct_keys():
    # Cython's conversion of a mapping to the struct ignores unknown keys: the entry check
    # refuses them (a misspelt key must not leave its field at a default) and names a missing
    # key, for every key; the oracle does the same.
    from test_kernels_conv import missing_or_misspelt
    assert _prelu.PRELU_PARAMS == oracle.PRELU_PARAMS == (
        "in_zp", "pos_m0", "pos_shift", "neg_m0", "neg_shift", "out_zp", "act_min", "act_max")
    args = prelu_args()
    call = _prelu.PreluCall(**args)
    assert call.params == args["params"]    # the struct it filled, given back as a dict
    x, alpha = args["x"], args["alpha"]
    runs = [lambda p: _prelu.prelu(**dict(args, params=p)),
            lambda p: _prelu.PreluCall(**dict(args, params=p)),
            lambda p: oracle.prelu(x, alpha, p),
            lambda p: oracle.prelu_accumulators(x, alpha, p)]
    for key in args["params"]:
        for bad, match in missing_or_misspelt(args["params"], key):
            for run in runs:
                with pytest.raises(ValueError, match=f"prelu: params has {match}"):
                    run(bad)
    for run in runs:
        with pytest.raises(TypeError, match="prelu: params must be a mapping"):
            run(tuple(args["params"].values()))


# ---- int16 activations ---------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 4), st.integers(1, 70),
       st.integers(2 ** 30, 2 ** 31 - 1), st.integers(-12, 2),
       st.integers(2 ** 30, 2 ** 31 - 1), st.integers(-20, 0),
       st.integers(-32768, 32767), st.integers(-32768, 32767))
def test_prelu_int16_bit_exact(seed, outer, inner, pm, ps, nm, ns, a, b):
    rng = np.random.default_rng(seed)
    x = rng.integers(-32768, 32768, (outer, inner)).astype(np.int16)
    x[rng.random(x.shape) < 0.1] = -32768       # |v * alpha| at its largest, 2^15 * 127
    alpha = rng.integers(-127, 128, inner).astype(np.int8)
    lo, hi = min(a, b), max(a, b)
    out = np.empty_like(x)
    params = prelu_params(0, pm, ps, nm, ns, 0, lo, hi)
    call = _prelu.PreluCall(x, alpha, params, out)
    assert call.bits == 16
    call()
    expected = oracle.prelu(x, alpha, params)
    assert expected.dtype == np.int16
    np.testing.assert_array_equal(out, expected)


def test_prelu_int16_oracle_by_hand():
    # pos factor 1/2 (m0 2^30, shift 0): ties round up; neg factor 2^-7 on v * alpha
    x = np.array([[32767, 3, -3, -32768, -128, 0]], np.int16)
    alpha = np.array([64, 64, 64, 127, 1, 5], np.int8)
    params = prelu_params(0, 2 ** 30, 0, 2 ** 30, -6, 0, -32768, 32767)
    # 32767 / 2 = 16383.5 -> 16384; 3 / 2 -> 2; -3 * 64 / 128 = -1.5 -> -2 (right shift: ties
    # away from zero); -32768 * 127 / 128 = -32512; -128 * 1 / 128 = -1; 0
    expected = [[16384, 2, -2, -32512, -1, 0]]
    assert oracle.prelu(x, alpha, params).tolist() == expected
    out = np.empty_like(x)
    _prelu.prelu(x, alpha, params, out)
    assert out.tolist() == expected
    np.testing.assert_array_equal(oracle.prelu_accumulators(x, alpha, params),
                                  [[32767, 3, -192, -32768 * 127, -128, 0]])


def test_prelu_int16_oracle_matches_real_arithmetic():
    rng = np.random.default_rng(1)
    s_x, s_a, s_y = 3e-4, 0.01, 2e-4
    x = rng.integers(-32768, 32768, (5, 33)).astype(np.int16)
    alpha = rng.integers(-127, 128, 33).astype(np.int8)
    pm, ps = oracle.quantize_multiplier(s_x / s_y)
    nm, ns = oracle.quantize_multiplier(s_x * s_a / s_y)
    got = oracle.prelu(x, alpha, prelu_params(0, pm, ps, nm, ns, 0, -32768, 32767))
    xr = x.astype(np.float64) * s_x
    want = np.clip(np.where(xr >= 0, xr, xr * alpha * s_a) / s_y, -32768, 32767)
    assert np.abs(got - want).max() <= 0.5 + 2.0 ** -10


@pytest.mark.parametrize("bad, match", [
    (dict(in_zp=1), "in_zp = 1: int16 tensors are symmetric"),
    (dict(out_zp=-1), "out_zp = -1: int16 tensors are symmetric"),
    (dict(act_min=-32769), "act_min"),
    (dict(act_max=32768), "act_max"),
    (dict(out=np.zeros((2, 4), np.int8)), "out has dtype int8, but x has dtype int16"),
    (dict(out=np.zeros((2, 5), np.int16)), "out has shape"),
])
def test_prelu_int16_entry_checks(bad, match):
    args = dict(x=np.zeros((2, 4), np.int16), alpha=np.zeros(4, np.int8),
                params=prelu_params(0, 2 ** 30, 0, 2 ** 30, 0, 0, -32768, 32767),
                out=np.zeros((2, 4), np.int16))
    _prelu.prelu(**args)
    for name, value in bad.items():
        if name in args["params"]:
            args["params"][name] = value
        else:
            args[name] = value
    with pytest.raises(ValueError, match=match):
        _prelu.prelu(**args)
    if "out" not in bad:
        with pytest.raises(ValueError, match=match):
            oracle.prelu(args["x"], args["alpha"], args["params"])
