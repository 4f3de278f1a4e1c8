"""Sequence masks: which time steps of a (T, ...) sequence are present (1.0) or padding (0.0),
as Keras computes them; the recurrent layers (fixnet/ops/recurrent.py) read them.

masking (Keras Masking): outputs [y, mask] with mask[t] = any(x[t, :] != mask_value) and
    y = x * mask[t] (padding steps become zeros, as Keras outputs them).
token_mask (Embedding(mask_zero=True)): mask[t] = ids[t] != 0, from the layer's input ids.

Masks are float arrays of 0.0/1.0 without a feature axis; an AND of two masks (a merge layer's
output mask) is a ``binary`` minimum (an OR, in Keras 3, a maximum).

int8 (kernels: fixnet/_kernels/_mask.pyx; oracle: fixnet/oracle/mask.py):
- A mask is an int8 tensor with MASK_QPARAMS (scale 1.0, zero point 0): code 1 for a present
  step, 0 for padding; exactly 0.0 and 1.0. A binary minimum/maximum of two masks keeps those
  qparams (fixnet/ops/merge.py: a min/max of inputs sharing their qparams keeps them), so
  merged masks stay exact 0/1 codes.
- masking: y = x on present steps, x's zero point (real 0.0) on padding steps; y keeps x's
  scale and zero point. In int8, "equal to mask_value" means "quantizes to the same code as
  mask_value" at x's quantization (QParams.code_of): a feature within half an int8 step of
  mask_value counts as equal, so a step whose every feature is that close is padding (the
  float op asks for exact equality). Padding written as exactly mask_value, as Keras users
  write it, is padding in both.
- token_mask: a 256-entry lookup over the ids' codes, 1 where trunc(id) != 0 (the float op's
  rule on the dequantized id); with the ids' qparams of fixnet/ops/embedding.py (1.0, -128)
  that is code != -128.
- masked_mean: S = sum of (x_q - x_zp) over present steps (int32, |S| <= 255 T), the mean in
  1/256 input steps a = round(256 S / n) (integer division rounding half away from zero),
  then y = clamp(y_zp + multiply_by_quantized_multiplier(a, s_x / (256 s_y))). A row with no
  present step (NaN in float) gives the zero point, real 0.0. T is at most
  oracle.MASKED_MEAN_MAX_STEPS (32767: 256 S stays in int32).

int16 (one type per step; the same kernels and oracles on int16 arrays): a mask is an int16
tensor with MASK16_QPARAMS (scale 1.0, zero point 0, codes 0 and 1). masking: y = x or 0, the
mask code of mask_value at x's int16 scale. token_mask: a 65536-entry lookup over the int16
token ids (the int8 ids converted exactly: the code is the id), 1 where the code is not 0.
masked_mean: S in int32 (|S| <= 32768 T < 2^30), a = round(256 S / n) formed in int64, |a| <=
2^23; the requantization as for int8, clamped to int16. Where an int16 mask meets an int8
reader (a recurrent layer, a masked mean kept int8) the quantizer converts it to MASK_QPARAMS
exactly (fixnet.quant.quantizer.Converts), and an int8 mask to MASK16_QPARAMS.
"""
import numpy as np

from .. import oracle
from .._kernels import _mask
from ..errors import UnsupportedLayerError
from ..quant.qparams import QParams, acc_input_max, requant_multipliers
from ..step import OverflowBound, Step
from .base import Op, register
from .activation import LookupStep
from .embedding import IDS_QPARAMS

# The quantization of every mask tensor: codes 0 and 1 are the reals 0.0 and 1.0.
MASK_QPARAMS = QParams(1.0, 0)
MASK16_QPARAMS = QParams(1.0, 0, 16)        # the same codes in an int16 tensor


def mask_qparams(bits):
    """The QParams of a mask tensor of activation type ``bits`` (8 or 16)."""
    return MASK16_QPARAMS if bits == 16 else MASK_QPARAMS


def require_mask(node, q, tensor):
    """UnsupportedLayerError naming the layer unless ``tensor`` is quantized as a mask of the
    node's activation type."""
    want = mask_qparams(q.qparams(tensor).bits)
    if q.qparams(tensor) != want:
        raise UnsupportedLayerError(f"{node.describe()}: its mask '{tensor}' is quantized with "
                                    f"{q.qparams(tensor)}, not as a 0/1 mask {want}")


@register
class Masking(Op):
    name = "masking"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        if len(s) != 2:
            raise UnsupportedLayerError(f"{node.describe()}: input shape {tuple(s)}; fixnet masks "
                                        "(time steps, features) sequences only")
        return [tuple(s), (s[0],)]

    def run_float(self, node, inputs):
        x = np.asarray(inputs[0], np.float64)
        m = np.any(x != node.attrs["mask_value"], axis=-1).astype(np.float64)
        return [x * m[:, :, None], m]

    def output_qparams(self, node, q):
        return [q.qparams(node.inputs[0]), mask_qparams(q.qparams(node.inputs[0]).bits)]

    def quantize(self, node, q):
        x_qp = q.qparams(node.inputs[0])
        t, f = q.shape(node.inputs[0])
        return MaskingStep(node.name, node.layer, node.inputs, node.outputs,
                           x_qp.code_of(node.attrs["mask_value"]), x_qp.zero_point, (t, f))


class MaskingStep(Step):
    """y, mask = oracle.masking(x, mask_code, in_zp)."""
    op = "masking"

    def __init__(self, name, layer, inputs, outputs, mask_code, in_zp, shape):
        super().__init__(name, layer, inputs, outputs)
        self.mask_code, self.in_zp = int(mask_code), int(in_zp)
        self.shape = tuple(None if d is None else int(d) for d in shape)   # (T, F)

    # Buffers and oracle inputs come as (N, T, F) and (N, T): the time steps are taken from
    # them, not from the planned shape, for sequences whose length is known at run time only.
    def bind(self, bufs):
        return _mask.MaskingCall(bufs[self.inputs[0]], self.mask_code, self.in_zp,
                                     bufs[self.outputs[0]], bufs[self.outputs[1]])

    def oracle(self, ins):
        y, m = oracle.masking(ins[0], self.mask_code, self.in_zp)
        return [y, m]


@register
class TokenMask(Op):
    name = "token_mask"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        if len(s) != 1:
            raise UnsupportedLayerError(f"{node.describe()}: mask_zero on ids of shape {tuple(s)}; "
                                        "only (time steps,) sequences of ids are supported")
        return [tuple(s)]

    def run_float(self, node, inputs):
        return [(np.trunc(np.asarray(inputs[0], np.float64)) != 0).astype(np.float64)]

    def input_qparams(self, node, index):
        return IDS_QPARAMS          # it reads token ids, as the Embedding beside it does

    def output_qparams(self, node, q):
        return [mask_qparams(q.qparams(node.inputs[0]).bits)]

    def quantize(self, node, q):
        ids_qp = q.qparams(node.inputs[0])
        ids = np.trunc(ids_qp.dequantize(np.arange(ids_qp.qmin, ids_qp.qmax + 1))
                       .astype(np.float64))
        return TokenMaskStep(node.name, node.layer, node.inputs, node.outputs,
                             (ids != 0).astype(ids_qp.dtype))


class TokenMaskStep(LookupStep):
    """mask = table[ids - min]: 1 where the code's token id is not 0 (see TokenMask); int8 ids
    256 entries, int16 ids 65536."""
    op = "token_mask"


@register
class MaskedMean(Op):
    """Keras GlobalAveragePooling1D of a masked sequence: inputs [x (T, C), mask (T,)],
    y = sum_t x[t] * mask[t] / sum_t mask[t] (NaN for a sequence with every step masked, as
    Keras gives); attrs: keepdims (output (1, C))."""
    name = "masked_mean"

    def infer_shapes(self, node, in_shapes):
        x, m = in_shapes
        if len(x) != 2 or tuple(m) != (x[0],):
            raise UnsupportedLayerError(f"{node.describe()}: a masked mean of shape {tuple(x)} "
                                        f"with a mask of shape {tuple(m)}")
        return [(1, x[1]) if node.attrs.get("keepdims") else (x[1],)]

    def run_float(self, node, inputs):
        x = np.asarray(inputs[0], np.float64)
        m = np.asarray(inputs[1], np.float64)[:, :, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            y = (x * m).sum(axis=1) / m.sum(axis=1)
        return [y[:, None, :] if node.attrs.get("keepdims") else y]

    def quantize(self, node, q):
        x, m = node.inputs
        require_mask(node, q, m)
        t, c = q.shape(x)
        if t is not None and t > oracle.MASKED_MEAN_MAX_STEPS:
            raise UnsupportedLayerError(f"{node.describe()}: a masked mean over {t} time steps; "
                                        f"int8 averages at most {oracle.MASKED_MEAN_MAX_STEPS}")
        x_qp, y_qp = q.qparams(x), q.qparams(node.outputs[0])
        (m0,), (shift,) = requant_multipliers(
            x_qp.scale / ((1 << oracle.MASKED_MEAN_SCALE_BITS) * y_qp.scale), node.describe(),
            y_qp.bits)
        return MaskedMeanStep(node.name, node.layer, node.inputs, node.outputs, x_qp.zero_point,
                              int(m0), int(shift), y_qp.zero_point, (t, c))


class MaskedMeanStep(Step):
    """y = oracle.masked_mean(x, mask, in_zp, m0, shift, out_zp); shape: x's (T, C)."""
    op = "masked_mean"

    def __init__(self, name, layer, inputs, outputs, in_zp, m0, shift, out_zp, shape):
        super().__init__(name, layer, inputs, outputs)
        self.in_zp, self.m0, self.shift, self.out_zp = int(in_zp), int(m0), int(shift), int(out_zp)
        self.shape = tuple(None if d is None else int(d) for d in shape)   # (T, C)

    # x and the mask come as (N, T, C) and (N, T) (T from them: see MaskingStep), int8 or int16
    # (the step's type); the output
    # is (N, C) or, with keepdims, (N, 1, C): the same bytes.
    def _check_length(self, x):
        """InputShapeError naming the layer for a sequence longer than the kernel averages (an
        input of any length can bring one)."""
        if x.shape[1] > oracle.MASKED_MEAN_MAX_STEPS:
            from ..errors import InputShapeError
            raise InputShapeError(f"layer '{self.layer}' (GlobalAveragePooling1D, masked): a "
                                  f"sequence of {x.shape[1]} steps; int8 averages at most "
                                  f"{oracle.MASKED_MEAN_MAX_STEPS}")

    def bind(self, bufs):
        x, y = bufs[self.inputs[0]], bufs[self.outputs[0]]
        self._check_length(x)
        return _mask.MaskedMeanCall(x, bufs[self.inputs[1]], self.in_zp, self.m0,
                                        self.shift, self.out_zp,
                                        y.reshape(y.shape[0], self.shape[1]))

    def oracle(self, ins):
        self._check_length(ins[0])
        return [oracle.masked_mean(ins[0], ins[1], self.in_zp, self.m0, self.shift, self.out_zp)]

    def accumulators(self, ins):
        # what the kernel holds in int32: int8, the sum times 256 (before the division by n);
        # int16, the sum (times 256 in int64)
        s, _ = oracle.masked_mean_sums(ins[0], ins[1], self.in_zp)
        return s if self.bits == 16 else s << oracle.MASKED_MEAN_SCALE_BITS

    def overflow_bound(self):
        """The largest int32 value: int8, 256 |S| <= 256 * 255 * T, or the mean |a| <= 255 *
        256 shifted left by the requantization; int16, |S| <= 32768 T, or |a| <= 32768 * 256
        shifted left. T: the steps planned, or for a sequence of any length (None) the most
        the kernel takes, MASKED_MEAN_MAX_STEPS (it refuses longer)."""
        t = self.shape[0] if self.shape[0] is not None else oracle.MASKED_MEAN_MAX_STEPS
        if self.bits == 16:
            largest = acc_input_max(16)                      # |x| <= 32768
            mean = largest << oracle.MASKED_MEAN_SCALE_BITS
            worst = max(largest * t, mean << max(self.shift, 0))
        else:
            scaled = 255 << oracle.MASKED_MEAN_SCALE_BITS
            worst = max(scaled * t, scaled << max(self.shift, 0))
        return OverflowBound(self.layer, self.op, np.full(self.shape[1], worst, np.int64))
