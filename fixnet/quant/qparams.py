"""Scales and zero points: turning float ranges and float weights into the numeric contract.

real value = scale * (q - zero_point); activations are int8 [-128, 127] per tensor and
asymmetric; weights are int8 [-127, 127] symmetric, per output channel by default.
"""
from dataclasses import dataclass

import numpy as np

from ..errors import QuantizationError
from ..oracle import quantize_multiplier, round_half_away

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_MAX = 127            # weights never use -128 (see DESIGN: int16 pair sums)
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


@dataclass(frozen=True)
class QParams:
    """Per-tensor quantization of an int8 activation tensor."""
    scale: float        # real units per int8 step, > 0
    zero_point: int     # int8 code of real 0.0, in [-128, 127]

    def quantize(self, x):
        q = round_half_away(np.asarray(x, np.float64) / self.scale) + self.zero_point
        return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)

    def dequantize(self, q):
        return ((np.asarray(q, np.float64) - self.zero_point) * self.scale).astype(np.float32)

    def code_of(self, real):
        """The int8 code nearest to ``real``, clamped to int8."""
        return int(np.clip(round_half_away(np.float64(real) / self.scale) + self.zero_point,
                           INT8_MIN, INT8_MAX))

    @property
    def real_range(self):
        return ((INT8_MIN - self.zero_point) * self.scale, (INT8_MAX - self.zero_point) * self.scale)




def qparams_from_range(lo, hi):
    """Asymmetric int8 parameters covering [lo, hi], widened so that 0.0 is exactly a code
    (zero padding and ReLU clamps are then exact)."""
    lo = min(float(lo), 0.0)
    hi = max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise QuantizationError(f"range [{lo}, {hi}] is not finite")
    if hi - lo < 1e-12:            # a tensor that is always 0: any scale represents it
        return QParams(1.0 / 255.0, INT8_MIN)
    # scales are stored as float32, as TFLite stores them, so both quantize alike
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(round_half_away(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
    return QParams(scale, zp)


def quantize_weights(w, per_channel=True, clipping=None):
    """Symmetric int8 weights. ``w`` is [C, ...] with the output channel first.

    clipping: None (the scale maps each channel's largest |w| to 127) or "mse" (each channel's
        clipping threshold is the one, from 50% to 100% of its largest |w|, that minimises the
        squared error between the channel's weights and their int8 reconstruction).
    Returns (w_q int8 [C, ...] in [-127, 127], scale float64 [C]: real units per step).
    """
    w = np.asarray(w, np.float64)
    c = w.shape[0]
    flat = w.reshape(c, -1)
    if per_channel:
        absmax = np.abs(flat).max(axis=1) if flat.shape[1] else np.zeros(c)
    else:
        absmax = np.full(c, np.abs(flat).max() if flat.size else 0.0)
    if clipping == "mse" and flat.size:
        absmax = _mse_weight_threshold(flat, absmax, per_channel)
    elif clipping is not None:
        raise ValueError(f"weight clipping must be None or 'mse', got {clipping!r}")
    scale = np.where(absmax > 0, absmax / WEIGHT_MAX, 1.0)
    q = np.clip(round_half_away(flat / scale[:, None]), -WEIGHT_MAX, WEIGHT_MAX)
    return q.astype(np.int8).reshape(w.shape), scale


def weight_quantization_error(flat, threshold):
    """Squared error per row of ``flat`` [C, K] quantized symmetrically with |w| <= threshold [C]."""
    scale = np.where(threshold > 0, threshold / WEIGHT_MAX, 1.0)[:, None]
    q = np.clip(round_half_away(flat / scale), -WEIGHT_MAX, WEIGHT_MAX)
    return ((flat - q * scale) ** 2).sum(axis=1)


def _mse_weight_threshold(flat, absmax, per_channel, ratios=np.linspace(0.5, 1.0, 101)):
    """Per channel (or for the whole tensor), the clipping threshold in ratios * absmax of least
    squared weight error (ties go to the widest)."""
    best, best_err = absmax.copy(), None
    for r in ratios[::-1]:
        t = absmax * r
        err = weight_quantization_error(flat, t)
        if not per_channel:
            err = np.full_like(err, err.sum())
        if best_err is None:
            best_err = err
            continue
        better = err < best_err * (1.0 - 1e-12)
        best = np.where(better, t, best)
        best_err = np.where(better, err, best_err)
    return best


def quantize_bias(b, scale, where):
    """int32 bias codes for real bias ``b`` at per-channel ``scale`` (input_scale * weight_scale)."""
    q = round_half_away(np.asarray(b, np.float64) / scale)
    if np.any(np.abs(q) > INT32_MAX):
        worst = int(np.argmax(np.abs(q)))
        raise QuantizationError(
            f"{where}: bias of channel {worst} ({float(np.asarray(b).ravel()[worst]):.6g}) is "
            f"{abs(q[worst]):.3g} steps of {scale.ravel()[worst]:.3g}, beyond int32; the weights or "
            "the input range of this layer are too small for its bias")
    return q.astype(np.int64)


def requant_multipliers(real, where):
    """Fixed-point (m0 int32, shift int32) arrays for an array of positive real multipliers."""
    real = np.atleast_1d(np.asarray(real, np.float64))
    out = [quantize_multiplier(float(r)) for r in real]
    m0 = np.array([m for m, _ in out], np.int32)
    shift = np.array([s for _, s in out], np.int32)
    if np.any(shift > 30):
        raise QuantizationError(f"{where}: requantization factor {real.max():.3g} is too large "
                                "to represent as a fixed-point multiplier")
    return m0, shift


def activation_bounds(clamp, out_qp):
    """The int8 clamp bounds [lo, hi] implementing a fused clamp activation.

    ``clamp`` is (low, high) in real units (either may be None), or None for no clamp.
    """
    lo, hi = INT8_MIN, INT8_MAX
    if clamp is None:
        return lo, hi
    low, high = clamp
    if low is not None:
        lo = max(lo, out_qp.code_of(low))
    if high is not None:
        hi = min(hi, out_qp.code_of(high))
    return lo, hi
