"""PReLU kernel bit-exact against the oracle; the oracle against float arithmetic."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fixnet import oracle
from fixnet._kernels import _prelu


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
    _prelu.prelu(x, alpha, in_zp, pm, ps, nm, ns, out_zp, lo, hi, out)
    np.testing.assert_array_equal(out, oracle.prelu(x, alpha, in_zp, pm, ps, nm, ns, out_zp, lo, hi))


def test_prelu_oracle_matches_real_arithmetic():
    rng = np.random.default_rng(0)
    s_x, s_a, s_y, zx, zy = 0.05, 0.01, 0.04, 3, -7
    x = rng.integers(-128, 128, (5, 33), dtype=np.int8)
    alpha = rng.integers(-127, 128, 33, dtype=np.int8)
    pm, ps = oracle.quantize_multiplier(s_x / s_y)
    nm, ns = oracle.quantize_multiplier(s_x * s_a / s_y)
    got = oracle.prelu(x, alpha, zx, pm, ps, nm, ns, zy, -128, 127).astype(np.int64)
    xr = (x.astype(np.float64) - zx) * s_x
    yr = np.where(xr >= 0, xr, xr * alpha * s_a)
    want = np.clip(np.round(yr / s_y) + zy, -128, 127)
    assert np.abs(got - want).max() <= 1


@pytest.mark.parametrize("bad, match", [
    (dict(alpha=np.zeros(3, np.int8)), "alpha"),
    (dict(out=np.zeros((2, 5), np.int8)), "out"),
    (dict(in_zp=200), "in_zp"),
    (dict(pm=5), "m0"),
])
def test_prelu_entry_checks(bad, match):
    args = dict(x=np.zeros((2, 4), np.int8), alpha=np.zeros(4, np.int8), in_zp=0, pm=2 ** 30,
                ps=0, nm=2 ** 30, ns=0, out_zp=0, lo=-128, hi=127, out=np.zeros((2, 4), np.int8))
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        _prelu.prelu(args["x"], args["alpha"], args["in_zp"], args["pm"], args["ps"], args["nm"],
                     args["ns"], args["out_zp"], args["lo"], args["hi"], args["out"])
