"""Hypothesis strategies and array helpers shared by the kernel tests (tests/test_kernels*.py).

Hypothesis draws shapes, parameters and a seed; NumPy fills the arrays from the seed with
int8_array, which mixes the int8 extremes in on purpose."""
import numpy as np
from hypothesis import strategies as st

seeds = st.integers(0, 2 ** 32 - 1)
zero_points = st.integers(-128, 127)


@st.composite
def clamp_bounds(draw):
    """(act_min, act_max): the full int8 range, a ReLU-like bound, or anything valid."""
    return draw(st.one_of(
        st.just((-128, 127)),
        st.tuples(zero_points, st.just(127)),
        st.tuples(zero_points, zero_points).map(sorted).map(tuple),
    ))


def int8_array(rng, shape, lo=-128, hi=127):
    """Uniform int8 in [lo, hi], with about 10% of entries forced to lo or hi."""
    a = rng.integers(lo, hi, size=shape, endpoint=True).astype(np.int8)
    extremes = rng.random(shape) < 0.1
    a[extremes] = rng.choice(np.array([lo, hi], np.int8), size=int(extremes.sum()))
    return a
