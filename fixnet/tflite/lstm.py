"""TFLite's int8 UNIDIRECTIONAL_SEQUENCE_LSTM (the fused LSTM the converter writes for a Keras
LSTM quantized to int8): the integer "8x8_16" LSTM of TFLite's lstm_eval.cc, in NumPy.

What TFLite computes (EvalInteger8x8_16 -> LstmStepInteger8x8_16, TensorFlow 2.21; the
portable tensor_utils), per sample and time step, x the step's int8 input codes, h the int8
output state, c the int16 cell state (scale 2^cell_shift, a power of two):

* each gate g (input, forget, cell, output; in that order of evaluation: forget, cell, input,
  output, which does not matter: each reads x, h and c only):
  ``a = clamp16(MBQM(bx_g + Wx_g . x, mx_g, sx_g))`` then
  ``a = clamp16(MBQM(bh_g + Wh_g . h, mh_g, sh_g) + a)`` (MatrixBatchVectorMultiplyAccumulate
  with an int16 output: each product requantized on its own, added to what the output holds,
  saturated to int16); MBQM is MultiplyByQuantizedMultiplier (gemmlowp's two roundings).
  The biases fold the zero points in: ``bx_g = bias_g - x_zp * rowsum(Wx_g)``,
  ``bh_g = -h_zp * rowsum(Wh_g)`` (PrecomputeZeroPointTimesWeightWithBias).
  The multipliers are QuantizeMultiplier of ``float(w_scale * x_scale) / 2^-12`` (float32
  arithmetic; without layer norm the gates are Q3.12, the ``intermediates`` 0..3 unused).
* activations: i, f, o = gemmlowp ``logistic`` of the Q3.12 int16 (Q0.15 out); the cell
  gate g = gemmlowp ``tanh`` of the Q3.12 int16 (the op's activation, TANH).
* cell: ``c = int16(RDBPOT(f * c, 15))``; ``u = int16(RDBPOT(i * g, 30 + cell_shift))``;
  ``c = clamp16(c + u)``; with cell_clip > 0, ``c = clamp(c, -q, q)``, q =
  int16(cell_clip / cell_scale) saturated (RDBPOT: gemmlowp RoundingDivideByPOT).
* hidden: ``t = tanh(c)`` read with 15 + cell_shift integer bits (Q0.15 out);
  ``h = clamp8(MBQM(o * t, mH, sH) + hidden_zp)``, mH/sH of float(2^-15 / hidden_scale *
  2^-15), hidden_scale and hidden_zp those of ``intermediates[4]``; without projection the
  output and the next output state are h.

Initial state: the output state is its zero point (TFLite resets an int8 variable tensor to
its zero point), the cell state 0. Each predict starts there (TFLite's interpreter keeps the
state across invoke() calls until reset_all_variables(); fixnet's predict is stateless, as a
Keras LSTM is).

Runs: plain Keras LSTMs (24 inputs, input gate present, no peephole, no projection, no layer
norm, time_major False, activation TANH, per-tensor int8 weights). Refused with the reason:
CIFG, peephole, projection, layer norm, time-major, float or hybrid LSTMs, other activations,
per-channel weights, a cell scale that is not a power of two, a state given in the file.

TfliteLstmStep's ``oracle`` is the transcription above, step for step (int64 NumPy);
its ``run`` is the same arithmetic, vectorized differently: the input products of every
time step in one float64 matrix product (exact: every sum is far below 2^53), and the
activations as 65536-entry tables of the oracle's own functions (built once per step).
"""
import math

import numpy as np

from ..oracle.core import multiply_by_quantized_multiplier, quantize_multiplier
from ..oracle.gemmlowp import logistic, rounding_divide_by_pot, tanh, wrap
from ..step import OverflowBound, Step
from .op_rules import _fault

GATES = ("input", "forget", "cell", "output")
GATE_BITS = 3               # the gates are Q3.12 int16 (no layer norm)
INT16_MIN, INT16_MAX = -(2 ** 15), 2 ** 15 - 1
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1

# the operator's inputs (tensorflow/lite/kernels/lstm_shared.h)
X = 0
INPUT_TO = {"input": 1, "forget": 2, "cell": 3, "output": 4}
RECURRENT_TO = {"input": 5, "forget": 6, "cell": 7, "output": 8}
PEEPHOLE = (9, 10, 11)
BIAS = {"input": 12, "forget": 13, "cell": 14, "output": 15}
PROJECTION = (16, 17)
OUTPUT_STATE, CELL_STATE = 18, 19
LAYER_NORM = (20, 21, 22, 23)

PARAM_ARRAYS = ("w_x", "w_h", "b_x", "b_h", "m_x", "s_x", "m_h", "s_h")
PARAM_INTS = ("cell_shift", "cell_clip", "hidden_m", "hidden_s", "hidden_zp", "state_zp")


# -- the oracle ------------------------------------------------------------------------------

def _clamp(v, lo, hi):
    return np.clip(v, lo, hi)


def _gate_oracle(p, g, x, h):
    """One gate's int16 pre-activation [N, U] from x [N, I] and h [N, O] (int64 arrays)."""
    acc = wrap(p["b_x"][g] + x @ p["w_x"][g].astype(np.int64).T, 32)
    a = _clamp(multiply_by_quantized_multiplier(acc, p["m_x"][g], p["s_x"][g]), INT16_MIN,
               INT16_MAX)
    acc = wrap(p["b_h"][g] + h @ p["w_h"][g].astype(np.int64).T, 32)
    return _clamp(multiply_by_quantized_multiplier(acc, p["m_h"][g], p["s_h"][g]) + a,
                  INT16_MIN, INT16_MAX)


def cell_update(p, i, f, g, c):
    """UpdateLstmCellInteger: the new int16 cell state from the gates (int64 arrays)."""
    c = wrap(rounding_divide_by_pot(f * c, 15), 16)
    u = wrap(rounding_divide_by_pot(i * g, 30 + p["cell_shift"]), 16)
    c = _clamp(c + u, INT16_MIN, INT16_MAX)
    if p["cell_clip"] > 0:
        c = _clamp(c, -p["cell_clip"], p["cell_clip"])
    return c


def hidden(p, o, t):
    """CwiseMul to int8: the output gate times tanh(cell), requantized to the hidden state."""
    return _clamp(multiply_by_quantized_multiplier(o * t, p["hidden_m"], p["hidden_s"])
                  + p["hidden_zp"], -128, 127)


def lstm_reference(x, p, h0=None, c0=None, return_state=False):
    """int8 [N, T, I] -> int8 [N, T, O] as TFLite's integer LSTM computes it (module
    docstring), from the ints of ``lstm_params``. ``h0`` (int8 [N, O]) and ``c0`` (int16
    [N, U]): the initial states (default: the output state's zero point and 0). With
    ``return_state``: (outputs, h, c)."""
    x = np.asarray(x).astype(np.int64)
    n, steps = x.shape[0], x.shape[1]
    units = p["w_x"].shape[1]
    h = (np.full((n, p["w_h"].shape[2]), p["state_zp"], np.int64) if h0 is None
         else np.asarray(h0).astype(np.int64))
    c = np.zeros((n, units), np.int64) if c0 is None else np.asarray(c0).astype(np.int64)
    out = np.empty((n, steps, h.shape[1]), np.int8)
    for t in range(steps):
        pre = [_gate_oracle(p, k, x[:, t], h) for k in range(4)]
        i = logistic(pre[0], GATE_BITS, 16)
        f = logistic(pre[1], GATE_BITS, 16)
        g = tanh(pre[2], GATE_BITS, 16)
        o = logistic(pre[3], GATE_BITS, 16)
        c = cell_update(p, i, f, g, c)
        h = hidden(p, o, tanh(c, 15 + p["cell_shift"], 16))
        out[:, t] = h
    if return_state:
        return out, h.astype(np.int8), c.astype(np.int16)
    return out


# -- Prepare: the ints TFLite derives from the file ------------------------------------------

def _f32(v):
    return np.float32(v)


def gate_multiplier(w_scale, in_scale):
    """QuantizeMultiplier of w_scale * in_scale / 2^-12 in float32 (the Prepare's float
    arithmetic: the product rounded to float32, the division by 2^-12 exact)."""
    eff = _f32(_f32(w_scale) * _f32(in_scale)) / _f32(2.0 ** -12)
    return quantize_multiplier(float(_f32(eff)))


def hidden_multiplier(hidden_scale):
    """QuantizeMultiplier of float(2^-15 / hidden_scale * 2^-15) (double arithmetic, the
    result stored in a float)."""
    eff = _f32(2.0 ** -15 / float(_f32(hidden_scale)) * 2.0 ** -15)
    return quantize_multiplier(float(eff))


def checked_log2(scale):
    """TFLite CheckedLog2 (float32): (the rounded log2, whether it is within 1e-3 of it)."""
    lg = _f32(_f32(math.log(float(_f32(scale)))) * _f32(1.0 / math.log(2.0)))
    rounded = _f32(math.copysign(math.floor(abs(float(lg)) + 0.5), float(lg)))  # std::round
    return int(rounded), bool(abs(_f32(lg - rounded)) < 1e-3)


def quantized_clip(clip, scale, lo, hi):
    """static_cast<int>(min(max(clip / scale, lo), hi)) in float32 (0 when clip <= 0)."""
    if not clip > 0:
        return 0
    v = _f32(_f32(clip) / _f32(scale))
    return int(np.trunc(min(max(v, _f32(lo)), _f32(hi))))


def folded_bias(bias, w, zero_point):
    """bias + (-zero_point) * rowsum(w) (PrecomputeZeroPointTimesWeightWithBias), int64."""
    b = np.zeros(w.shape[0], np.int64) if bias is None else np.asarray(bias).astype(np.int64)
    return b - int(zero_point) * w.astype(np.int64).sum(axis=1)


# -- the step --------------------------------------------------------------------------------

class TfliteLstmStep(Step):
    """int8 [N, T, I] -> int8 [N, T, O]: TFLite's integer UNIDIRECTIONAL_SEQUENCE_LSTM
    (module docstring). ``params``: w_x int8 [4, U, I], w_h int8 [4, U, O], b_x / b_h int32
    [4, U] (zero points folded in), m_x / s_x / m_h / s_h int32 [4] (per gate, in the order
    input, forget, cell, output), and the ints cell_shift, cell_clip (0: none), hidden_m,
    hidden_s, hidden_zp, state_zp."""
    op = "tflite_lstm"

    def __init__(self, name, layer, inputs, outputs, params, steps):
        super().__init__(name, layer, inputs, outputs)
        self.params = {k: np.ascontiguousarray(params[k], np.int8 if k.startswith("w") else
                                               np.int32) for k in PARAM_ARRAYS}
        self.params.update({k: int(params[k]) for k in PARAM_INTS})
        self.steps = int(steps)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_cache")}

    # the tables of the oracle's activation functions over every int16 code
    def tables(self):
        cache = self.__dict__.get("_cache_tables")
        if cache is None:
            codes = np.arange(INT16_MIN, INT16_MAX + 1, dtype=np.int64)
            cache = (logistic(codes, GATE_BITS, 16).astype(np.int64),
                     tanh(codes, GATE_BITS, 16).astype(np.int64),
                     tanh(codes, 15 + self.params["cell_shift"], 16).astype(np.int64))
            self.__dict__["_cache_tables"] = cache
        return cache

    def run(self, x):
        """The same integers as ``oracle``: x int8 [N, T, I] -> int8 [N, T, O]."""
        p = self.params
        sig, tnh, tanh_c = self.tables()
        x = np.asarray(x).reshape((-1, self.steps, p["w_x"].shape[2]))
        n, units, out_units = x.shape[0], p["w_x"].shape[1], p["w_h"].shape[2]
        wx = p["w_x"].reshape(4 * units, -1).astype(np.float64)
        wh = p["w_h"].reshape(4 * units, -1).astype(np.float64)
        bx, bh = p["b_x"].reshape(-1).astype(np.int64), p["b_h"].reshape(-1).astype(np.int64)
        mx, sx = np.repeat(p["m_x"], units), np.repeat(p["s_x"], units)
        mh, sh = np.repeat(p["m_h"], units), np.repeat(p["s_h"], units)
        # every input product at once: [N, T, 4U], exact in float64 (one 2-D product: NumPy
        # runs a stacked 3-D one without BLAS)
        prod = (x.reshape(-1, x.shape[2]).astype(np.float64) @ wx.T).reshape(n, self.steps, -1)
        ax = wrap(bx + prod.astype(np.int64), 32)
        ax = _clamp(multiply_by_quantized_multiplier(ax, mx, sx), INT16_MIN, INT16_MAX)
        h = np.full((n, out_units), p["state_zp"], np.int64)
        c = np.zeros((n, units), np.int64)
        out = np.empty((n, self.steps, out_units), np.int8)
        for t in range(self.steps):
            acc = wrap(bh + (h.astype(np.float64) @ wh.T).astype(np.int64), 32)
            pre = _clamp(multiply_by_quantized_multiplier(acc, mh, sh) + ax[:, t], INT16_MIN,
                         INT16_MAX) - INT16_MIN
            i, f, g, o = (pre[:, k * units:(k + 1) * units] for k in range(4))
            c = cell_update(p, sig[i], sig[f], tnh[g], c)
            h = hidden(p, sig[o], tanh_c[c - INT16_MIN])
            out[:, t] = h
        return out

    def bind(self, bufs):
        x, y = bufs[self.inputs[0]], bufs[self.outputs[0]]
        y3 = y.reshape((-1, self.steps, self.params["w_h"].shape[2]))
        return lambda: np.copyto(y3, self.run(x))

    def oracle(self, ins):
        p = self.params
        x = np.asarray(ins[0]).reshape((-1, self.steps, p["w_x"].shape[2]))
        return [lstm_reference(x, p)]

    def overflow_bound(self):
        """The int32 gate accumulators: |folded bias| + 128 * sum|w| per gate row, for the
        input and the recurrent products (each requantized on its own)."""
        p = self.params
        worst = []
        for w, b in (("w_x", "b_x"), ("w_h", "b_h")):
            s = np.abs(p[w].astype(np.int64)).sum(axis=2)
            worst.append((np.abs(p[b].astype(np.int64)) + 128 * s).reshape(-1))
        return OverflowBound(self.layer, self.op, np.concatenate(worst), what="gate accumulator")


# -- the converter's rule --------------------------------------------------------------------

class LstmRules:
    """op_unidirectional_sequence_lstm, and the STRIDED_SLICE that takes one time step of a
    sequence (how the converter writes return_sequences=False), mixed into OpRules."""

    def op_unidirectional_sequence_lstm(self, op):
        """UNIDIRECTIONAL_SEQUENCE_LSTM -> TfliteLstmStep. Long because it is one list: the
        refusals of each variant TFLite's integer LSTM has and this step does not, then the
        gates' weights, biases and multipliers read as TFLite's Prepare derives them."""
        o = op.options
        ins = list(op.inputs) + [-1] * max(0, 24 - len(op.inputs))
        if len(op.inputs) != 24:
            _fault(f"{len(op.inputs)} inputs (only the 24-input LSTM runs here)")
        x, y = ins[X], op.outputs[0]
        xt = self.tensor(x)
        w_type = self.tensor(ins[INPUT_TO["output"]]).type
        if xt.type != "INT8" or w_type != "INT8":
            _fault(f"input '{xt.name}' is {xt.type} with {w_type} weights: only the int8 "
                   "(8x8_16) integer LSTM runs here, not a float or hybrid one")
        if ins[INPUT_TO["input"]] < 0:
            _fault("CIFG (no input gate) is not supported")
        if any(ins[k] >= 0 for k in PEEPHOLE):
            _fault("peephole connections are not supported")
        if any(ins[k] >= 0 for k in PROJECTION):
            _fault("a projection is not supported")
        if any(ins[k] >= 0 for k in LAYER_NORM):
            _fault("layer normalization is not supported")
        if o.get("time_major"):
            _fault("time_major (fixnet's first axis is the batch)")
        if o.get("fused_activation_function", "TANH") != "TANH":
            _fault(f"activation {o.get('fused_activation_function')} (TFLite's integer LSTM "
                   "runs TANH only)")
        if o.get("diagonal_recurrent_tensors"):
            _fault("diagonal recurrent weights are not supported")
        if len(op.intermediates) != 5:
            _fault(f"{len(op.intermediates)} intermediates (the integer LSTM has 5)")
        if len(xt.shape) != 3:
            _fault(f"input shape {xt.shape} is not [batch, time, features]")
        _, steps, features = (int(d) for d in xt.shape)
        x_qp = self.qparams(x)
        h_state, c_state = self.tensor(ins[OUTPUT_STATE]), self.tensor(ins[CELL_STATE])
        for t, kind in ((h_state, "INT8"), (c_state, "INT16")):
            if t.type != kind:
                _fault(f"state '{t.name}' is {t.type} (expected {kind})")
            if t.data is not None and np.asarray(t.data).size:
                _fault(f"state '{t.name}' holds values in the file (fixnet starts from zero)")
            if t.quantization is None or t.quantization.scale.shape[0] != 1:
                _fault(f"state '{t.name}' has no per-tensor scale")
        for s in (ins[OUTPUT_STATE], ins[CELL_STATE]):
            others = [c for c in self.consumers.get(s, []) if c is not op]
            if others or s in self.m.outputs or s in self.m.inputs:
                _fault(f"state '{self.tensor(s).name}' is shared with other operators or the "
                       "model's inputs or outputs")
        h_scale, state_zp = _f32(h_state.quantization.scale[0]), int(h_state.quantization.zero_point[0])
        c_scale = _f32(c_state.quantization.scale[0])
        if int(c_state.quantization.zero_point[0]) != 0:
            _fault("the cell state has a zero point")
        cell_shift, pow2 = checked_log2(c_scale)
        if not pow2:
            _fault(f"cell state scale {float(c_scale)} is not a power of two")
        if not (0 <= 15 + cell_shift <= 6 and 0 <= 30 + cell_shift <= 31):
            _fault(f"cell state scale 2^{cell_shift} (TFLite's tanh takes 2^-15 .. 2^-9)")
        hid = self.tensor(op.intermediates[4])
        hq = hid.quantization
        if hq is None or hq.scale.shape[0] != 1:
            _fault("intermediate 4 (the hidden state) has no per-tensor scale")
        yt = self.tensor(y)
        if yt.type != "INT8" or tuple(yt.shape[:2]) != tuple(xt.shape[:2]):
            _fault(f"output '{yt.name}' is {yt.type} {yt.shape}: expected int8 "
                   f"{tuple(xt.shape[:2])} + (units,)")
        w_x, w_h, b_x, b_h, m_x, s_x, m_h, s_h = [], [], [], [], [], [], [], []
        units = None
        for g in GATES:
            wx, wx_scale = self.lstm_weights(ins[INPUT_TO[g]])
            wh, wh_scale = self.lstm_weights(ins[RECURRENT_TO[g]])
            units = wx.shape[0] if units is None else units
            if wx.shape != (units, features) or wh.shape[0] != units:
                _fault(f"{g} gate weights {wx.shape}, {wh.shape} do not fit {units} units and "
                       f"{features} features")
            bt = self.tensor(ins[BIAS[g]])
            if bt.type != "INT32":
                _fault(f"{g} gate bias '{bt.name}' is {bt.type} (expected int32)")
            bias = self.constant(ins[BIAS[g]], f"{g} gate bias").astype(np.int64).reshape(-1)
            if bias.shape != (units,):
                _fault(f"{g} gate bias has shape {bias.shape}, expected ({units},)")
            w_x.append(wx)
            w_h.append(wh)
            b_x.append(folded_bias(bias, wx, x_qp.zero_point))
            b_h.append(folded_bias(None, wh, state_zp))
            for (m, s), ms, ss in ((gate_multiplier(wx_scale, x_qp.scale), m_x, s_x),
                                   (gate_multiplier(wh_scale, h_scale), m_h, s_h)):
                ms.append(m)
                ss.append(s)
        out_units = w_h[0].shape[1]
        if any(w.shape != (units, out_units) for w in w_h) or \
                int(np.prod(h_state.shape)) != out_units or int(np.prod(c_state.shape)) != units:
            _fault("the recurrent weights and states do not fit one another")
        if out_units != units or tuple(yt.shape) != (xt.shape[0], steps, units):
            _fault(f"output shape {yt.shape} (expected (1, {steps}, {units}))")
        b_x, b_h = np.array(b_x), np.array(b_h)
        if np.abs(np.concatenate([b_x, b_h])).max() > INT32_MAX:
            _fault("a bias with the zero point folded in leaves int32")
        hidden_m, hidden_s = hidden_multiplier(hq.scale[0])
        params = dict(w_x=np.array(w_x), w_h=np.array(w_h), b_x=b_x, b_h=b_h,
                      m_x=np.array(m_x), s_x=np.array(s_x), m_h=np.array(m_h),
                      s_h=np.array(s_h), cell_shift=cell_shift,
                      cell_clip=quantized_clip(o.get("cell_clip", 0.0), c_scale, -32768, 32767),
                      hidden_m=hidden_m, hidden_s=hidden_s, hidden_zp=int(hq.zero_point[0]),
                      state_zp=state_zp)
        step = TfliteLstmStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                              [self.define(y)], params, steps)
        bound = step.overflow_bound()
        if not bound.proven:
            _fault("its gate accumulators can leave int32")
        self.steps.append(step)

    def lstm_weights(self, i):
        """int8 [rows, cols] weight codes and their one float32 scale (TFLite's LSTM reads
        params.scale: per-tensor weights)."""
        t = self.tensor(i)
        if t.type != "INT8":
            _fault(f"weights '{t.name}' are {t.type} (a float or hybrid LSTM)")
        q = t.quantization
        if q is None or q.scale.shape[0] != 1:
            _fault(f"weights '{t.name}' are not quantized per tensor")
        if np.any(q.zero_point != 0):
            _fault(f"weights '{t.name}' have a zero point")
        w = self.constant(i, "weights").astype(np.int8)
        if w.ndim != 2:
            _fault(f"weights '{t.name}' have shape {w.shape}")
        return w, _f32(q.scale[0])

    def strided_slice_time_step(self, op):
        """STRIDED_SLICE [N, T, C] -> [N, C] taking one time step (shrink_axis_mask 2, the
        batch and channels whole): a crop of L to one step (Keras' return_sequences=False
        after a fused LSTM)."""
        from ..ops.resize import CropStep
        x, y = op.inputs[0], op.outputs[0]
        o = op.options
        if self.qparams(x) != self.qparams(y):
            _fault("input and output are quantized differently")
        shape = [int(d) for d in self.tensor(x).shape]
        begin, end, step = (self.constant(op.inputs[k], what).astype(np.int64).reshape(-1)
                            for k, what in ((1, "begin"), (2, "end"), (3, "strides")))
        if len(begin) != 3 or len(end) != 3 or np.any(step != 1):
            _fault(f"begin {begin.tolist()}, end {end.tolist()}, strides {step.tolist()}")
        for mask in ("ellipsis_mask", "new_axis_mask"):
            if int(o.get(mask, 0)):
                _fault(f"{mask} {o[mask]}")
        for a in (0, 2):        # the batch and channel axes whole
            lo = 0 if int(o.get("begin_mask", 0)) >> a & 1 else int(begin[a])
            hi = shape[a] if int(o.get("end_mask", 0)) >> a & 1 else int(end[a])
            if (lo, hi) != (0, shape[a]):
                _fault(f"slices axis {a} ({lo}:{hi}); only one time step is taken here")
        t = 0 if int(o.get("begin_mask", 0)) >> 1 & 1 else int(begin[1])
        t = t + shape[1] if t < 0 else t
        if not 0 <= t < shape[1]:
            _fault(f"time step {int(begin[1])} outside {shape[1]} steps")
        if self.sample_shape(y) != (shape[2],):
            _fault(f"output shape {self.tensor(y).shape}")
        self.steps.append(CropStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                   [self.define(y)], ((t, shape[1] - 1 - t), (0, 0)),
                                   (shape[1], 1, shape[2])))
