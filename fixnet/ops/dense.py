"""dense: y = clamp(x @ kernel + bias). Keras Dense (BatchNorm folded in, activation fused).

int8: acc[c] = bias_eff[c] + sum_k x_q[k] * w_q[c, k]   (int32; bias_eff holds -x_zp * sum_k w_q)
      y_q[c] = clamp(y_zp + multiply_by_quantized_multiplier(acc, m0[c], shift[c]))
"""
import numpy as np

from .. import layouts, oracle
from .._kernels import _dense, _wide
from ..errors import UnsupportedLayerError
from ..quant.qparams import INT32_MAX, acc_input_max, activation_bounds
from ..step import OverflowBound, Step
from .base import KeepsWidened, Op, WideAccumulators, register


def apply_clamp(y, clamp):
    if clamp is None:
        return y
    lo, hi = clamp
    if lo is not None:
        y = np.maximum(y, lo)
    if hi is not None:
        y = np.minimum(y, hi)
    return y


@register
class Dense(Op):
    name = "dense"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        k, c = node.weights["kernel"].shape
        if not s or s[-1] != k:
            raise UnsupportedLayerError(f"{node.describe()}: input shape {s} does not end in the "
                                        f"kernel's {k} inputs")
        return [tuple(s[:-1]) + (c,)]

    def run_float(self, node, inputs):
        (x,) = inputs
        w = node.weights["kernel"].astype(np.float64)
        y = np.asarray(x, np.float64) @ w
        if "bias" in node.weights:
            y = y + node.weights["bias"]
        return [apply_clamp(y, node.attrs.get("clamp"))]

    def quantize(self, node, q):
        y_qp = q.qparams(node.outputs[0])
        rows = layouts.rows_from_keras("dense", node.weights["kernel"])         # [C, K]
        cq = q.quantize_channels(node, rows, node.weights.get("bias"))
        lo, hi = activation_bounds(node.attrs.get("clamp"), y_qp)
        step = DenseStep(node.name, node.layer, node.inputs, node.outputs,
                         layouts.step_from_rows("dense", cq.w_q), cq.bias, cq.m0, cq.shift,
                         y_qp.zero_point, lo, hi)
        step.widened = cq.widened
        return step


class DenseStep(WideAccumulators, KeepsWidened, Step):
    op = "dense"
    # "double": multiply_by_quantized_multiplier (fixnet's rule); "single": TFLite's
    # single-rounding rule of its per-channel FULLY_CONNECTED (fixnet.tflite sets it)
    rounding = "double"

    def __init__(self, name, layer, inputs, outputs, w_q, bias, m0, shift, out_zp, act_min, act_max):
        super().__init__(name, layer, inputs, outputs)
        self.w_q, self.bias, self.m0, self.shift = w_q, bias, m0, shift   # [C, K], [C] x3
        self.out_zp, self.act_min, self.act_max = int(out_zp), int(act_min), int(act_max)
        self._packed = None
        self.packed_weights()       # at quantize time, once, shared by every arena

    def adjust_bias(self, delta):
        """Add ``delta`` (int per output channel, bias codes) to the int32 bias: the bias
        correction of fixnet.quant.bias_correction. A channel whose bias would leave int32
        keeps its bias. Call at quantize time (overflow_bound reads the adjusted bias)."""
        b = self.bias.astype(np.int64) + np.asarray(delta, np.int64)
        self.bias = np.where(np.abs(b) <= INT32_MAX, b, self.bias).astype(np.int32)

    def packed_weights(self):
        """w_q and bias in the dense kernel's layout (_dense.pack_dense_weights), packed once;
        packed again only if w_q or bias was replaced by another array (adjust_bias does
        that; changing them in place is not noticed)."""
        p = self._packed
        if p is None or p.source is not self.w_q or p.source_bias is not self.bias \
                or p.bits != self.bits:
            p = self._packed = _dense.pack_dense_weights(self.w_q, self.bias, bits=self.bits)
        return p

    def __getstate__(self):
        # The packed copy is derived data of this build's kernels: not pickled, packed again.
        state = super().__getstate__()
        state["_packed"] = None
        return state

    def bind(self, bufs):
        x = bufs[self.inputs[0]]
        y = bufs[self.outputs[0]]
        k, c = self.w_q.shape[1], self.w_q.shape[0]
        if self.is_wide():
            return _wide.DenseWideCall(x.reshape(-1, k), self.w_q, self.bias, self.m0,
                                       self.shift, self.out_zp, self.act_min, self.act_max,
                                       y.reshape(-1, c))
        return _dense.DenseCall(x.reshape(-1, k), self.w_q, self.bias, self.m0, self.shift,
                                self.out_zp, self.act_min, self.act_max, y.reshape(-1, c),
                                packed=self.packed_weights(),
                                rounding="single" if self.single_rounding() else "double")

    def accumulators(self, ins):
        k = self.w_q.shape[1]
        return oracle.dense_accumulators(ins[0].reshape(-1, k), self.w_q, self.bias)

    def oracle(self, ins):
        x = ins[0]
        k = self.w_q.shape[1]
        if self.is_wide():
            y = oracle.dense_wide(x.reshape(-1, k), self.w_q, self.bias, self.m0, self.shift,
                                  self.out_zp, self.act_min, self.act_max)
        else:
            y = oracle.dense(x.reshape(-1, k), self.w_q, self.bias, self.m0, self.shift,
                             self.out_zp, self.act_min, self.act_max,
                             rounding="single" if self.single_rounding() else "double")
        return [y.reshape(x.shape[:-1] + (self.w_q.shape[0],))]

    def overflow_bound(self):
        worst = (np.abs(self.bias.astype(np.int64))
                 + acc_input_max(self.bits) * np.abs(self.w_q.astype(np.int64)).sum(axis=1))
        if self.single_rounding():     # no left shift: the int64 product takes acc as it is
            return OverflowBound(self.layer, self.op, worst)
        return self.accumulator_bound(worst)

    def single_rounding(self):
        """True for TFLite's single-rounding requantization; ValueError for a rounding that
        is not "double" or "single", or "single" on int16 (a damaged file: bind names it)."""
        if self.rounding not in ("double", "single"):
            raise ValueError(f"rounding {self.rounding!r} is not 'double' or 'single'")
        if self.rounding == "single" and self.bits != 8:
            raise ValueError("single rounding is for int8 dense steps")
        return self.rounding == "single"
