"""Scales and zero points: turning float ranges and float weights into the numeric contract.

real value = scale * (q - zero_point); activations are int8 [-128, 127] per tensor and
asymmetric; weights are int8 [-127, 127] symmetric, per output channel by default.
"""
from dataclasses import dataclass

import numpy as np

from ..errors import OverflowRiskError, QuantizationError
from ..oracle import quantize_multiplier, round_half_away
from .codebook import INT4_MAX, codebook_table, grid_scale, int4_codes, int4_table, nearest_levels

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_MAX = 127            # weights never use -128 (see DESIGN: int16 pair sums)
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


INT16_MIN, INT16_MAX = -32768, 32767
ACTIVATION_BITS = (8, 16)


@dataclass(frozen=True)
class QParams:
    """Per-tensor quantization of an activation tensor: int8 (asymmetric, any zero point in
    int8) or int16 (symmetric: zero point 0, codes [-32768, 32767], as TFLite's 16x8 mode)."""
    scale: float        # real units per code step, > 0
    zero_point: int     # code of real 0.0: in [-128, 127] for int8, 0 for int16
    bits: int = 8       # 8 or 16: the activation type (files written before hold int8)

    @property
    def qmin(self):
        return INT8_MIN if self.bits == 8 else INT16_MIN

    @property
    def qmax(self):
        return INT8_MAX if self.bits == 8 else INT16_MAX

    @property
    def dtype(self):
        return np.dtype(np.int8) if self.bits == 8 else np.dtype(np.int16)

    @property
    def type_name(self):
        return "int8" if self.bits == 8 else "int16"

    def quantize(self, x):
        q = round_half_away(np.asarray(x, np.float64) / self.scale) + self.zero_point
        return np.clip(q, self.qmin, self.qmax).astype(self.dtype)

    def quantize_tflite(self, x):
        """TFLite's QUANTIZE (reference AffineQuantize): the float32 quotient of float32
        values, rounded half away from zero (std::round), + zero point, clamped. Differs from
        quantize (a float64 quotient) by one code where the float32 quotient is a half."""
        q = round_half_away(np.asarray(np.float32(x) / np.float32(self.scale), np.float64))
        return np.clip(q + self.zero_point, self.qmin, self.qmax).astype(self.dtype)

    def dequantize(self, q):
        return ((np.asarray(q, np.float64) - self.zero_point) * self.scale).astype(np.float32)

    def code_of(self, real):
        """The code nearest to ``real``, clamped to the type's range."""
        return int(np.clip(round_half_away(np.float64(real) / self.scale) + self.zero_point,
                           self.qmin, self.qmax))

    @property
    def real_range(self):
        return ((self.qmin - self.zero_point) * self.scale, (self.qmax - self.zero_point) * self.scale)


def qparams_from_range(lo, hi, bits=8):
    """Parameters covering [lo, hi], widened so that 0.0 is exactly a code (zero padding and
    ReLU clamps are then exact). bits=8: asymmetric int8; bits=16: symmetric int16 (zero
    point 0, scale max(|lo|, |hi|) / 32767)."""
    lo = min(float(lo), 0.0)
    hi = max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise QuantizationError(f"range [{lo}, {hi}] is not finite")
    if bits not in ACTIVATION_BITS:
        raise QuantizationError(f"activation bits must be 8 or 16, not {bits!r}")
    if hi - lo < 1e-12:            # a tensor that is always 0: any scale represents it
        return QParams(1.0 / 255.0, INT8_MIN) if bits == 8 else QParams(1.0 / 32767.0, 0, 16)
    # every code's real value, up to hi - lo from the zero point, must be a finite float32:
    # predict's float outputs are float32
    if hi - lo >= FLOAT32_MAX:
        raise QuantizationError(f"range [{lo:.3g}, {hi:.3g}] is too wide for float32 values")
    if bits == 16:
        return QParams(float(np.float32(max(-lo, hi) / INT16_MAX)), 0, 16)
    # scales are stored as float32, as TFLite stores them, so both quantize alike
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(round_half_away(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
    return QParams(scale, zp)


def acc_input_max(bits):
    """The largest |x_q| a kernel multiplies into its accumulator: 128 for int8 inputs (raw
    codes are multiplied; the zero-point term is folded into the bias), 32768 for int16."""
    return ACC_INPUT_MAX if bits == 8 else -INT16_MIN


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


def weight_quantization_error(flat, threshold, levels=WEIGHT_MAX):
    """Squared error per row of ``flat`` [C, K] quantized symmetrically with |w| <= threshold [C]
    to codes in [-levels, levels] (127: int8; 7: int4)."""
    scale = np.where(threshold > 0, threshold / levels, 1.0)[:, None]
    q = np.clip(round_half_away(flat / scale), -levels, levels)
    return ((flat - q * scale) ** 2).sum(axis=1)


def _mse_weight_threshold(flat, absmax, per_channel, ratios=np.linspace(0.5, 1.0, 101),
                          levels=WEIGHT_MAX):
    """Per channel (or for the whole tensor), the clipping threshold in ratios * absmax of least
    squared weight error with codes in [-levels, levels] (ties go to the widest)."""
    best, best_err = absmax.copy(), None
    for r in ratios[::-1]:
        t = absmax * r
        err = weight_quantization_error(flat, t, levels)
        if not per_channel:
            err = np.full_like(err, err.sum())
        if best_err is None:
            best_err = err
            continue
        better = err < best_err * (1.0 - 1e-12)
        best = np.where(better, t, best)
        best_err = np.where(better, err, best_err)
    return best


# ---- weights with at most 16 levels (fixnet/quant/codebook.py), as int8 codes ----------------

# "int8": 255 uniform levels (quantize_weights). The others use at most 16 distinct int8 codes
# per layer or per output channel, which the .fxn file stores as 4-bit indices plus a table of
# codes: "codebook16", one k-means codebook of 16 levels for the whole layer, in units of each
# channel's scale (4 bits per weight and a table of 16 codes per layer); "codebook16-channel",
# one codebook per output channel (a table per channel: 4 bits per weight plus 128 bits per
# channel, which only pays on long rows); "int4", 15 uniform levels per channel (codes 18 * k,
# k in [-7, 7]; one table per layer).
WEIGHT_OPTIONS = ("int8", "codebook16", "codebook16-channel", "int4")


def check_weight_option(weights):
    if weights not in WEIGHT_OPTIONS:
        raise ValueError(f"weights must be one of {', '.join(map(repr, WEIGHT_OPTIONS))}, "
                         f"not {weights!r}")


def weight_codes(w, per_channel=True, weights="int8", clipping=None):
    """int8 codes and per-channel scales of weights ``w`` [C, ...] (output channel first) under
    a weight option (WEIGHT_OPTIONS), alone: no bias, no widening (quantize_channels does
    those). int8: quantize_weights. The others: scale max|w| / 126 per channel (or per layer;
    int4 with clipping "mse": the threshold of least int4 error), codes as in
    fixnet.quant.codebook. Returns (codes int8 [C, ...] in [-127, 127], scale float64 [C])."""
    check_weight_option(weights)
    if weights == "int8":
        return quantize_weights(w, per_channel, clipping)
    flat = np.asarray(w, np.float64).reshape(np.shape(w)[0], -1)
    scale = fewer_levels_scale(flat, per_channel, weights, clipping)
    codes = fewer_level_codes(flat, scale, weights)
    return codes.astype(np.int8).reshape(np.shape(w)), scale


def fewer_levels_scale(flat, per_channel, weights, clipping=None):
    """Per row of ``flat`` [C, K], the int8 scale of the options other than int8: the largest
    |w| of the row (or of the layer) / 126; int4 with clipping "mse" clips at the threshold
    of least squared int4 error (the codebooks ignore clipping: their levels are fitted to
    the weights, outliers included)."""
    c = flat.shape[0]
    absmax = np.abs(flat).max(axis=1) if flat.size else np.zeros(c)
    if not per_channel:
        absmax = np.full(c, absmax.max() if c else 0.0)
    if clipping == "mse" and weights == "int4" and flat.size:
        absmax = _mse_weight_threshold(flat, absmax, per_channel, levels=INT4_MAX)
    elif clipping not in (None, "mse"):
        raise ValueError(f"weight clipping must be None or 'mse', got {clipping!r}")
    return grid_scale(absmax)


def fewer_level_codes(flat, scale, weights, table=None):
    """Codes (float64 integers in [-126, 126]) of rows ``flat`` [C, K] at per-row ``scale`` [C]
    under an option other than int8: each weight its nearest level of ``table`` (default
    fewer_level_table's)."""
    u = flat / scale[:, None]
    if weights == "int4":
        return int4_codes(u)                # round half away from zero, as textbook int4
    return nearest_levels(u, fewer_level_table(flat, scale, weights) if table is None else table)


def fewer_level_table(flat, scale, weights, fitted=None):
    """The codes each row of ``flat`` [C, K] (at per-row ``scale`` [C]) may take under an option
    other than int8, ascending: [C, L]. codebook16's one codebook is fitted to the layer's
    weights in units of each channel's scale (every channel counts alike, as int4's uniform
    levels treat them: weighting the channels by scale^2, i.e. the error in real units, made
    the outputs of the fixture convnets worse), to the rows ``fitted`` only ([C] bool, default
    all: the others only take its levels), and holds 0 (zero weights stay zero)."""
    c = flat.shape[0]
    u = flat / scale[:, None]
    if weights == "int4":
        table = int4_table()
    elif weights == "codebook16-channel":
        table = codebook_table(u)
    else:
        fitted = np.ones(c, bool) if fitted is None else fitted
        table = codebook_table(u, shared=True, row_weight=fitted.astype(np.float64), keep_zero=True)
    return np.broadcast_to(table, (c, table.shape[1]))


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


# ---- fixed-point multipliers ------------------------------------------------------------------

# A requantization multiplier scales an integer v (an accumulator, a difference of codes) and
# the result is added to an int8 zero point and clamped to int8. For any real >= 256, every
# v != 0 lands at least 256 steps away, beyond int8 from any zero point, and v = 0 lands on the
# zero point: every such multiplier gives the same int8 outputs. So they are all represented
# by 256 exactly (m0 = 2^30, shift 9), which keeps the left shift (and the overflow proof's
# factor 2^shift) small. 2^30 is where the fixed-point form itself ends (shift 30). For an
# int16 output the same holds from 65536 (every v != 0 lands beyond int16 from zero point 0).
MULTIPLIER_SATURATES = 256.0
MULTIPLIER_SATURATES_BY_BITS = {8: MULTIPLIER_SATURATES, 16: 65536.0}
# Below 2^-32, m0 * 2^(shift - 31) is (0, 0): |accumulator| < 2^31 (the overflow proof) times
# the multiplier is below half an output step, so the exact product rounds to 0 as well.
MULTIPLIER_UNDERFLOW = 2.0 ** -32


def fixed_point_multiplier(real, bits=8):
    """(m0, shift) for one real multiplier >= 0 under the rules above, for a result of
    ``bits`` (8 or 16): multipliers from 256 up (int16: 65536) become 256 (65536), with the
    same results, those below 2^-32 become (0, 0). Raises ValueError for a negative or
    non-finite value (requant_multipliers turns it into a QuantizationError naming the
    layer)."""
    real = float(real)
    if not np.isfinite(real) or real < 0:
        raise ValueError(f"real multiplier {real!r} is not finite and >= 0")
    return quantize_multiplier(min(real, MULTIPLIER_SATURATES_BY_BITS[bits]))


def left_shift_of(real, bits=8):
    """The left shift (>= 0) the requantization of ``real`` applies to the accumulator."""
    return max(fixed_point_multiplier(real, bits)[1], 0)


def requant_multipliers(real, where, bits=8):
    """Fixed-point (m0 int32, shift int32) arrays for an array of positive real multipliers.

    Every finite multiplier >= 0 has one (see fixed_point_multiplier: >= 256 saturates
    exactly as 256 does, or >= 65536 as 65536 for ``bits`` 16, the type of the result;
    < 2^-32 is 0); a multiplier that is not finite or negative (damaged
    weights or scales) is a QuantizationError naming ``where``, never a bare ValueError."""
    real = np.atleast_1d(np.asarray(real, np.float64))
    bad = ~np.isfinite(real) | (real < 0)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise QuantizationError(f"{where}: requantization factor {real[i]!r} (channel {i}) is not "
                                "a finite non-negative number; are its weights or ranges finite?")
    out = [fixed_point_multiplier(r, bits) for r in real]
    m0 = np.array([m for m, _ in out], np.int32)
    shift = np.array([s for _, s in out], np.int32)
    return m0, shift


# ---- weights, bias and multipliers of one layer, with dead channels widened -------------------

ACC_INPUT_MAX = 128          # the kernels multiply raw int8 codes: |x_q| <= 128
ACC_LIMIT = 2 ** 31          # the overflow proof: worst |accumulator| << left shift < 2^31
WIDEN_TARGET = 2 ** 30       # a widened channel keeps one bit of that as headroom
MAX_WIDENING_STEPS = 400     # doublings of a weight scale before giving up (2^400: none is that far)


@dataclass(frozen=True)
class WidenedChannel:
    """One output channel whose weight scale was widened so that its int32 bias fits with an
    overflow proof (see quantize_channels)."""
    channel: int
    natural_scale: float     # max|w| / 127 (or the clipped scale); 0.0 for all-zero weights
    scale: float             # the widened weight scale, real units per weight step
    bias: float             # the channel's real bias (BatchNorm folded in)


@dataclass
class ChannelQuant:
    """A layer quantized per output channel: what its Step needs, and what was widened."""
    w_q: np.ndarray          # int8 [C, ...], in [-127, 127]
    scale: np.ndarray        # float64 [C]: weight scale per channel
    bias: np.ndarray         # int32 [C]: bias codes at input_scale * scale, -x_zp * sum w_q folded in
    m0: np.ndarray           # int32 [C]
    shift: np.ndarray        # int32 [C]
    widened: tuple           # WidenedChannel records, by channel


def nearest_codes(flat, scale):
    """Symmetric int8 codes of weight rows ``flat`` [C, K] at per-row ``scale`` [C]."""
    return np.clip(round_half_away(flat / scale[:, None]), -WEIGHT_MAX, WEIGHT_MAX)


def channel_worst(codes, b, scale, x_qp, y_qp):
    """The overflow proof's worst |accumulator| << left shift of one channel (float; compare
    with ACC_LIMIT): codes [K], real bias b, weight scale ``scale``."""
    b_q = float(round_half_away(b / (x_qp.scale * scale)))
    b_eff = b_q - x_qp.zero_point * float(codes.sum())
    worst = abs(b_eff) + acc_input_max(x_qp.bits) * float(np.abs(codes).sum())
    return worst * 2.0 ** left_shift_of(x_qp.scale * scale / y_qp.scale, y_qp.bits)


def widened_scale(row, b, natural, x_qp, y_qp, where, channel):
    """The weight scale for one channel whose bias does not fit at ``natural`` (real bias
    ``b``, weights ``row`` [K]): the scale, doubled from the one at which the bias takes a
    quarter of int32 (or from ``natural`` if larger), at which the overflow proof holds with
    a bit to spare. The weights then round to 0 or to small codes, and the channel outputs
    its bias: what the float layer computes, to within rounding."""
    start = abs(b) / (x_qp.scale * (WIDEN_TARGET / 2))
    s = max(natural, start)
    for _ in range(MAX_WIDENING_STEPS):
        if not np.isfinite(x_qp.scale * s / y_qp.scale):
            break
        if channel_worst(nearest_codes(row[None], np.array([s]))[0], b, s, x_qp, y_qp) <= WIDEN_TARGET:
            return s
        s *= 2.0
    raise QuantizationError(f"{where}: channel {channel} (bias {b:.6g}) cannot be given an int32 "
                            "bias with an overflow proof at any weight scale")


def needs_widening(row, b, natural, x_qp, y_qp):
    """Whether a channel's weight scale must be widened for its bias: its weights are all 0
    and its bias is not (any scale represents it; the widest that keeps the bias exact is
    taken), or its overflow proof fails at ``natural`` because of the bias (the proof holds
    without it; a proof broken by the weights alone is the overflow check's to report)."""
    if natural == 0.0:
        return b != 0.0
    codes = nearest_codes(row[None], np.array([natural]))[0]
    if channel_worst(codes, b, natural, x_qp, y_qp) < ACC_LIMIT:
        return False
    return channel_worst(codes, 0.0, natural, x_qp, y_qp) < ACC_LIMIT


def quantize_channels(rows, bias, x_qp, y_qp, where, per_channel=True, clipping=None,
                      round_codes=None, weights="int8"):
    """Weights, int32 bias and requantization multipliers of a layer with one weight row per
    output channel: y[c] = x . rows[c] + bias[c], input ``x_qp``, output ``y_qp``.

    rows: float [C, ...] (output channel first); bias: float [C] or None. Weight scales are
    max|w| / 127 per channel (quantize_weights; per_channel, clipping), except for a channel
    whose bias cannot be held: one with all-zero weights and a non-zero bias, or whose int32
    bias would not fit with an overflow proof (|bias_eff| + 128 * sum|w_q|, times 2^left
    shift, below 2^31; bias_eff with the input zero-point term -x_zp * sum w_q folded in).
    Real networks have such channels: filters whose weights decayed to ~1e-34 while their bias
    (after BatchNorm folding) is ~0.5. Their weight scale is widened (widened_scale) until the
    proof holds with a bit to spare, so their weights round to 0 or to small codes and they
    output their bias; they are listed in ``widened``.
    round_codes: optional callable(rows [C, K], scale [C]) -> codes [C, K] (adaptive
        rounding) at the final scales; a widened channel keeps them only while its proof
        still holds, and invalid codes (not finite, beyond 127) are never taken.
    weights: "int8" (the above), or "codebook16", "codebook16-channel", "int4" (WEIGHT_OPTIONS,
        weight_codes): at most 16 distinct codes per layer (per channel for
        codebook16-channel), at scales max|w| / 126, widened as above. A widened channel
        takes its nearest levels at its scale (codebook16's table holds 0, so a dead
        channel's weights stay 0), or keeps its nearest int8 codes if those break its proof.
        round_codes, given, is called as round_codes(rows, scale, levels=table) with the
        codes [C, L] each row may take, and picks among them.
    Raises QuantizationError naming ``where`` for non-finite weights or bias, or a bias beyond
    int32 that widening cannot help (the weights alone break the proof).
    """
    rows = np.asarray(rows, np.float64)
    c = rows.shape[0]
    flat = rows.reshape(c, -1)
    bias = np.zeros(c) if bias is None else np.asarray(bias, np.float64).reshape(c)
    if not np.all(np.isfinite(flat)):
        raise QuantizationError(f"{where}: its weights are not all finite")
    if not np.all(np.isfinite(bias)):
        raise QuantizationError(f"{where}: its bias is not all finite")
    check_weight_option(weights)
    if weights == "int8":
        _, scale = quantize_weights(flat, per_channel=per_channel, clipping=clipping)
    else:
        scale = fewer_levels_scale(flat, per_channel, weights, clipping)
    # 0.0 where there was no weight to scale (all zero: the scale is 1.0)
    absmax = np.abs(flat).max(axis=1) if flat.size else np.zeros(c)
    if not per_channel:
        absmax = np.full(c, absmax.max() if c else 0.0)
    natural = np.where(absmax > 0, scale, 0.0)
    widened = []
    for i in range(c):
        if needs_widening(flat[i], bias[i], natural[i], x_qp, y_qp):
            scale[i] = widened_scale(flat[i], bias[i], natural[i], x_qp, y_qp, where, i)
            widened.append(WidenedChannel(i, float(natural[i]), float(scale[i]), float(bias[i])))
    codes = nearest_codes(flat, scale)
    if weights != "int8":
        codes = _fewer_level_channels(flat, scale, codes, bias, weights, widened, x_qp, y_qp,
                                      round_codes)
    elif round_codes is not None:
        adaptive = round_codes(flat, scale)
        if adaptive is not None and np.all(np.isfinite(adaptive)) and np.all(np.abs(adaptive) <= WEIGHT_MAX):
            for w in widened:
                # a widened channel keeps its nearest codes if the adaptive ones break its proof
                if channel_worst(adaptive[w.channel], w.bias, w.scale, x_qp, y_qp) > WIDEN_TARGET:
                    adaptive[w.channel] = codes[w.channel]
            codes = adaptive
    w_q = codes.astype(np.int8)
    b_q = quantize_bias(bias, x_qp.scale * scale, where)
    b_eff = b_q - x_qp.zero_point * w_q.astype(np.int64).sum(axis=1)
    if np.any(np.abs(b_eff) > INT32_MAX):
        i = int(np.argmax(np.abs(b_eff)))
        raise OverflowRiskError(f"{where}: the int32 bias of channel {i} with the input "
                                "zero-point term folded in does not fit int32")
    m0, shift = requant_multipliers(x_qp.scale * scale / y_qp.scale, where, y_qp.bits)
    return ChannelQuant(w_q.reshape(rows.shape), scale, b_eff.astype(np.int32), m0, shift,
                        tuple(widened))


def _fewer_level_channels(flat, scale, nearest, bias, weights, widened, x_qp, y_qp,
                          round_codes=None):
    """quantize_channels' codes for the options other than int8: each weight its nearest level,
    or with ``round_codes`` the levels adaptive rounding picks (round_codes(flat, scale,
    levels=table)); the widened rows (at their own scales) do not shape codebook16's table.
    A widened row whose codes break its overflow proof takes its nearest levels, or if those
    break it too its ``nearest`` int8 codes."""
    fitted = np.ones(flat.shape[0], bool)
    fitted[[w.channel for w in widened]] = False
    table = fewer_level_table(flat, scale, weights, fitted)
    levels = fewer_level_codes(flat, scale, weights, table)
    codes = levels.copy()
    if round_codes is not None:
        adaptive = round_codes(flat, scale, levels=table)
        if adaptive is not None and np.all(np.isfinite(adaptive)) and np.all(np.abs(adaptive) <= WEIGHT_MAX):
            codes = adaptive.copy()
    for w in widened:
        i = w.channel
        for fallback in (levels[i], nearest[i]):
            if channel_worst(codes[i], bias[i], scale[i], x_qp, y_qp) <= WIDEN_TARGET:
                break
            codes[i] = fallback
    return codes


def activation_bounds(clamp, out_qp):
    """The clamp bounds [lo, hi] (codes of ``out_qp``'s type) implementing a fused clamp
    activation.

    ``clamp`` is (low, high) in real units (either may be None), or None for no clamp.
    """
    lo, hi = out_qp.qmin, out_qp.qmax
    if clamp is None:
        return lo, hi
    low, high = clamp
    if low is not None:
        lo = max(lo, out_qp.code_of(low))
    if high is not None:
        hi = min(hi, out_qp.code_of(high))
    return lo, hi
