"""rnn: a recurrent layer (Keras SimpleRNN, GRU, LSTM; each direction of a Bidirectional) run
over the time axis of a (T, F) sequence.

attrs:
  cell: "simple_rnn" | "gru" | "lstm"; units: U
  activation, recurrent_activation: {"fn": name, "params": {...}} (fixnet.activations; the
      hard_sigmoid of each writer: Keras 3's relu6(x + 3) / 6, Keras 2's clip(0.2 x + 0.5, 0, 1))
  reset_after (gru): the reset gate multiplies (h @ R_h + b_rh), Keras 3's and tf.keras 2's
      default; else it multiplies h before the product (Keras 2.0-2.2's default)
  go_backwards: steps run from the last to the first (the mask reversed with them)
  reverse_output: a returned sequence is flipped back to input order (a Bidirectional's
      backward direction); otherwise a go_backwards sequence comes out in processing order,
      as Keras returns it
  return_sequences: the output is (T, U), the output of every step, else (U,) of the last
  return_state: the final states follow the output: h (SimpleRNN, GRU), h and c (LSTM)
  n_initial_states: that many inputs after x are the initial states (else zeros)
  masked: the last input is a (T,) mask (1.0 = step present); a masked step keeps the
      states and repeats the previous output (zeros with zero_output_for_mask)
  token_input: x is a (T,) sequence of token ids and token_kernel [V, G*U] replaces kernel
      (passes.fold_embedding_into_rnn: an Embedding folded in; its table @ kernel)
weights: kernel [F, G*U], recurrent_kernel [U, G*U], bias [G*U] (optional); a GRU with
  reset_after also recurrent_bias [3U]. Gate order as Keras stores it: LSTM i, f, c, o;
  GRU z, r, h.

The float reference is the cell equations of Keras in float64 (run_rnn).

int8 (fixnet/oracle/recurrent.py states the integer step exactly; _kernels/_recurrent.pyx runs
it): int8 weights per gate and unit (symmetric, one scale per row of the kernel and one per
row of the recurrent kernel), int8 inputs and outputs, int32 accumulators, gate
pre-activations and gate values in int16, sigmoid/tanh/... as interpolated int16 tables, the
LSTM cell state in int16 with its own calibrated scale, GRU's reset product in integers.
The state fed back into the recurrent product is int16 (real = sH * h16): with an int8 state
the rounding of h at every step cost 2-4 dB of output SQNR on the fixtures, below ONNX
Runtime's int8 models (which keep the recurrence in float). The int8 outputs are made from it.

int16 activations (activations="int16"): the same step with int16 inputs and outputs (one
type per step: x, initial states, mask and outputs; zero points 0). The input projection
multiplies int16 x by the int8 kernel rows into int32, proven with |x| <= 32768
(overflow_bound; a layer whose proof fails runs int8, the quantizer's fallback); the outputs
are requantized from h16 to the output's int16 codes. Everything inside the step is as above.

Scales (quantize): a gate whose function saturates (sigmoid, tanh, hard_sigmoid) reads a fixed
input domain (|x| < 16, 8, 4: int16 codes of 2^-11, 2^-12, 2^-13); other functions read
HEADROOM x the calibrated range of their input. Functions bounded by 1 give Q0.15 outputs;
others HEADROOM x their calibrated output range. The cell state's scale is HEADROOM x its
calibrated range, sH = 1/32767 when the layer's outputs cannot leave [-1, 1], else HEADROOM x
the calibrated range of h. Calibration sees every step's gates and states (trace names of
run_rnn, observed as "<node>/<name>"), so every calibration method applies to them.
Weight codes are chosen by adaptive rounding (fixnet.quant.rounding) on the second moment of
the step input [x_t, h_(t-1)] when calibration measured it.
"""
import numpy as np

from .. import layouts, oracle
from .._kernels import _recurrent
from ..activations import activation, canonical
from ..errors import QuantizationError, UnsupportedLayerError
from ..quant.gptq import round_rows_scaled
from ..quant.qparams import QParams, WEIGHT_MAX, acc_input_max, requant_multipliers, round_half_away
from ..step import OverflowBound, Step
from .base import Op, register

GATES = {"simple_rnn": 1, "gru": 3, "lstm": 4}
STATES = {"simple_rnn": 1, "gru": 1, "lstm": 2}


def _fn(spec):
    return activation(spec["fn"], **spec.get("params", {}))[0]


GATE_NAMES = {"simple_rnn": ("a",), "gru": ("z", "r", "n"), "lstm": ("i", "f", "g", "o", "tanh_c")}


def _simple_step(xw, h, states, R, act, ract, U, reset_after, rb, tr):
    pre = xw + h @ R
    h_new = act(pre)
    if tr:
        tr("a", pre, h_new)
    return h_new, [h_new]


def _gru_step(xw, h, states, R, act, ract, U, reset_after, rb, tr):
    if reset_after:
        inner = h @ R
        if rb is not None:
            inner = inner + rb
        pre_z = xw[:, :U] + inner[:, :U]
        pre_r = xw[:, U:2 * U] + inner[:, U:2 * U]
        z, r = ract(pre_z), ract(pre_r)
        pre_n = xw[:, 2 * U:] + r * inner[:, 2 * U:]
    else:
        zr = h @ R[:, :2 * U]
        pre_z = xw[:, :U] + zr[:, :U]
        pre_r = xw[:, U:2 * U] + zr[:, U:]
        z, r = ract(pre_z), ract(pre_r)
        pre_n = xw[:, 2 * U:] + (r * h) @ R[:, 2 * U:]
    hh = act(pre_n)
    if tr:
        tr("z", pre_z, z)
        tr("r", pre_r, r)
        tr("n", pre_n, hh)
    h_new = z * h + (1.0 - z) * hh
    return h_new, [h_new]


def _lstm_step(xw, h, states, R, act, ract, U, reset_after, rb, tr):
    c = states[1]
    g = xw + h @ R
    i, f = ract(g[:, :U]), ract(g[:, U:2 * U])
    cand = act(g[:, 2 * U:3 * U])
    c_new = f * c + i * cand
    o = ract(g[:, 3 * U:])
    t = act(c_new)
    h_new = o * t
    if tr:
        for name, pre, val in (("i", g[:, :U], i), ("f", g[:, U:2 * U], f),
                               ("g", g[:, 2 * U:3 * U], cand), ("o", g[:, 3 * U:], o),
                               ("tanh_c", c_new, t)):
            tr(name, pre, val)
    return h_new, [h_new, c_new]


STEPS = {"simple_rnn": _simple_step, "gru": _gru_step, "lstm": _lstm_step}


def run_rnn(attrs, weights, x, initial_states=None, mask=None, trace=None, where="a recurrent layer"):
    """The Keras recurrent loop in float64. x: [B, T, F]; mask: [B, T] (nonzero = present) or
    None. Returns (outputs [B, T, U] in processing order, final states [h, (c)]).

    trace(name, k, array [B, U]): sees, at processing step k, every gate's pre-activation
    ("pre_<gate>") and value ("<gate>", GATE_NAMES) and the states after the step ("h", and
    "c" for an LSTM): the same names and meaning as fixnet.oracle.rnn's trace. ``where``
    names the layer in errors."""
    cell, U = attrs["cell"], int(attrs["units"])
    x = np.asarray(x, np.float64)
    B, T = x.shape[0], x.shape[1]
    R = weights["recurrent_kernel"].astype(np.float64)
    if attrs.get("token_input"):
        from .embedding import token_ids
        table = weights["token_kernel"]
        xw = table.astype(np.float64)[token_ids(x, table.shape[0], where,
                                                "the folded Embedding's input_dim")]
    else:
        xw = x @ weights["kernel"].astype(np.float64)
    if "bias" in weights:
        xw = xw + weights["bias"].astype(np.float64)
    rb = weights.get("recurrent_bias")
    rb = None if rb is None else rb.astype(np.float64)
    act, ract = _fn(attrs["activation"]), _fn(attrs.get("recurrent_activation", {"fn": "sigmoid"}))
    if initial_states:
        states = [np.asarray(s, np.float64).reshape(B, U) for s in initial_states]
    else:
        states = [np.zeros((B, U)) for _ in range(STATES[cell])]
    step = STEPS[cell]
    order = range(T - 1, -1, -1) if attrs.get("go_backwards") else range(T)
    zero_out = bool(attrs.get("zero_output_for_mask"))
    prev_out = np.zeros((B, U))
    outs = np.empty((B, T, U))
    for k, t in enumerate(order):
        tr = None
        if trace is not None:
            def tr(name, pre, val, k=k):
                trace("pre_" + name, k, pre)
                trace(name, k, val)
        out, new = step(xw[:, t], states[0], states, R, act, ract, U, attrs.get("reset_after", True),
                        rb, tr)
        if mask is not None:
            m = (np.asarray(mask[:, t]) != 0)[:, None]
            new = [np.where(m, s_new, s_old) for s_new, s_old in zip(new, states)]
            out = np.where(m, out, 0.0 if zero_out else prev_out)
        states = new
        prev_out = out
        outs[:, k] = out
        if trace is not None:
            trace("h", k, states[0])
            if cell == "lstm":
                trace("c", k, states[1])
    return outs, states


@register
class RNN(Op):
    name = "rnn"

    def infer_shapes(self, node, in_shapes):
        a = node.attrs
        cell, U = a["cell"], int(a["units"])
        x = in_shapes[0]
        G = GATES[cell]
        if a.get("token_input"):
            if len(x) != 1 or node.weights["token_kernel"].shape[1] != G * U:
                raise UnsupportedLayerError(f"{node.describe()}: token ids of shape {tuple(x)}")
            x = (x[0], 0)
            kernel = np.zeros((0, G * U))
        else:
            kernel = node.weights["kernel"]
        if len(x) != 2:
            raise UnsupportedLayerError(f"{node.describe()}: input shape {tuple(x)}; a recurrent "
                                        "layer takes (time steps, features) sequences")
        rk = node.weights["recurrent_kernel"]
        if kernel.shape != (x[1], G * U) or rk.shape != (U, G * U):
            raise UnsupportedLayerError(f"{node.describe()}: weights {kernel.shape}, {rk.shape} do "
                                        f"not fit input {tuple(x)} and {U} units")
        for s in in_shapes[1:1 + int(a.get("n_initial_states", 0))]:
            if tuple(s) != (U,):
                raise UnsupportedLayerError(f"{node.describe()}: an initial state of shape "
                                            f"{tuple(s)}, expected ({U},)")
        if a.get("masked") and tuple(in_shapes[-1]) != (x[0],):
            raise UnsupportedLayerError(f"{node.describe()}: mask of shape {tuple(in_shapes[-1])} "
                                        f"for a sequence of shape {tuple(x)}")
        out = (x[0], U) if a.get("return_sequences") else (U,)
        return [out] + ([(U,)] * STATES[cell] if a.get("return_state") else [])

    def reference_bytes(self, node, in_shapes):
        t = in_shapes[0][0] or 1                     # the input projection and every step's output
        u = int(node.attrs["units"])
        return 8 * t * u * (GATES[node.attrs["cell"]] + 1)

    def run_float(self, node, inputs):
        a = node.attrs
        n_init = int(a.get("n_initial_states", 0))
        mask = inputs[-1] if a.get("masked") else None
        seq, states = run_rnn(a, node.weights, inputs[0], inputs[1:1 + n_init] or None, mask,
                              where=node.describe())
        return self._outputs(node, seq, states)

    def _outputs(self, node, seq, states):
        a = node.attrs
        if a.get("return_sequences"):
            out = seq[:, ::-1] if a.get("reverse_output") else seq
        else:
            out = seq[:, -1] if seq.shape[1] else np.zeros((seq.shape[0], int(a["units"])))
        return [out] + (list(states) if a.get("return_state") else [])

    def run_float_observed(self, node, inputs, observe):
        """run_float, also showing ``observe`` every step's gates and states (as
        "<node>/<trace name>", [B, T, U] in processing order) and the step inputs
        [x_t, h_(t-1)] ("<node>/xh", [B * T, F + U]) for adaptive weight rounding."""
        a = node.attrs
        n_init = int(a.get("n_initial_states", 0))
        mask = inputs[-1] if a.get("masked") else None
        seen = {}

        def trace(name, k, v):
            seen.setdefault(name, []).append(v)

        seq, states = run_rnn(a, node.weights, inputs[0], inputs[1:1 + n_init] or None, mask, trace,
                              node.describe())
        x = np.asarray(inputs[0], np.float64)
        B, T = x.shape[0], x.shape[1]
        if T:
            for name, vs in seen.items():
                observe(f"{node.name}/{name}", np.stack(vs, axis=1))
            h = np.stack(seen["h"], axis=1)                               # processing order
            h0 = (np.asarray(inputs[1], np.float64).reshape(B, 1, -1) if n_init
                  else np.zeros((B, 1, h.shape[2])))
            h_prev = np.concatenate([h0, h[:, :-1]], axis=1)
            xs = x[:, ::-1] if a.get("go_backwards") else x
            if a.get("token_input"):            # no kernel to round: the moment of h alone
                xs = np.zeros((B, T, 0))
            observe(f"{node.name}/xh", np.concatenate([xs, h_prev], axis=2).reshape(B * T, -1))
        return self._outputs(node, seq, states)

    def quantize(self, node, q):
        return quantize_rnn(node, q)

    def input_qparams(self, node, index):
        from .embedding import IDS_QPARAMS
        return IDS_QPARAMS if index == 0 and node.attrs.get("token_input") else None


# ---------------------------------------------------------------------------------------------
# int8

SATURATING = {"sigmoid": 16.0, "tanh": 8.0, "hard_sigmoid": 4.0}   # f is constant to int16
BOUNDED = {"sigmoid", "tanh", "hard_sigmoid", "softsign"}           # |f(x)| <= 1
UNIT_INTERVAL = {"sigmoid", "hard_sigmoid"}                         # 0 <= f(x) <= 1
HEADROOM = 2.0          # calibrated internal ranges are doubled: int16 has bits to spare
Q15 = 2.0 ** -15
# Largest |T(v) s_out - f(v s_in)| over all 65536 int16 inputs v of the interpolated tables at
# the fixed domains above (tests/test_kernels_recurrent.py checks it on every input): the
# interpolation error (at most max|f''| h^2 / 8 with h = 64 s_in: 1.2e-5 for sigmoid, 2.9e-5
# for tanh; hard_sigmoid's kinks fall between entries) plus half a Q0.15 step each for the
# rounded entries and the rounded interpolation: measured 1.26 (sigmoid), 1.55 (tanh), 1.33
# and 1.40 (hard_sigmoid of Keras 3 and 2) steps of 2^-15.
TABLE_ERROR_BOUND = {"sigmoid": 1.6 * Q15, "tanh": 1.6 * Q15, "hard_sigmoid": 1.6 * Q15}


def _m(real, where, bits=8):
    """(m0, shift) of one real multiplier, as requant_multipliers makes them for a result of
    ``bits`` bits (a QuantizationError naming ``where`` for one that is not finite and >= 0)."""
    m0, shift = requant_multipliers(real, where, bits)
    return int(m0[0]), int(shift[0])


def _absmax(q, name, fallback):
    r = q.ranges.get(name)
    if r is None or not np.all(np.isfinite(r)):
        return fallback
    return max(abs(float(r[0])), abs(float(r[1])), 0.0)


def _gate_functions(a):
    act, ract = a["activation"], a.get("recurrent_activation", {"fn": "sigmoid"})
    return {"simple_rnn": [act], "gru": [ract, ract, act],
            "lstm": [ract, ract, act, ract, act]}[a["cell"]]


def _weight_scales(rows, bias, in_scale):
    """Per-row symmetric scales max|w| / 127, widened where the bias needs it: |bias| in
    codes of in_scale * scale stays below 2^29 (a dead row with a real bias)."""
    s = np.abs(rows).max(axis=1) / WEIGHT_MAX if rows.shape[1] else np.zeros(rows.shape[0])
    if bias is not None:
        s = np.maximum(s, np.abs(bias) / (in_scale * 2.0 ** 29))
    return np.where(s > 0, s, 1.0)


def quantize_rnn(node, q):
    a, w = node.attrs, node.weights
    where = node.describe()
    cell, U = a["cell"], int(a["units"])
    G = GATES[cell]
    for k, v in w.items():
        if not np.all(np.isfinite(v)):
            raise QuantizationError(f"{where}: weight '{k}' holds NaN or infinity")
    n_init = int(a.get("n_initial_states", 0))
    x_qp = q.qparams(node.inputs[0])
    fns = _gate_functions(a)
    names = GATE_NAMES[cell]
    init_qp = [q.qparams(t) for t in node.inputs[1:1 + n_init]]
    s_in, s_out, sH, sC = _step_scales(q, node, fns, names, init_qp)
    # -- weights: rows [G*U, F] and [G*U, U], one scale per row of each
    tokens = bool(a.get("token_input"))
    W = np.zeros((G * U, 0)) if tokens else layouts.rows_from_keras("rnn", w["kernel"]).astype(np.float64)
    R = layouts.rows_from_keras("rnn", w["recurrent_kernel"]).astype(np.float64)
    b = w["bias"].astype(np.float64) if "bias" in w else None
    rb = w.get("recurrent_bias")
    rb = rb.astype(np.float64) if (rb is not None and cell == "gru" and a.get("reset_after", True)) else None
    sW = _weight_scales(W, b, x_qp.scale)
    sR = _weight_scales(R, rb, sH)
    w_q, r_q = _round_weights(q, node, W, R, sW, sR)
    gate_of = np.repeat(np.arange(G), U)
    s_in_c = np.array(s_in)[gate_of]
    bx = -int(x_qp.zero_point) * w_q.astype(np.int64).sum(axis=1)
    if b is not None:
        bx = bx + round_half_away(b / (x_qp.scale * sW)).astype(np.int64)
    bh = np.zeros(G * U, np.int64)
    if rb is not None:
        bh = round_half_away(rb / (sH * sR)).astype(np.int64)
    mx, sh_x = requant_multipliers(x_qp.scale * sW / s_in_c, where)
    token_gx = None
    if tokens:
        # every token's input projection, straight in the gates' int16 domains (int32 codes;
        # sat16 after the recurrent part is added, as for a computed projection)
        from .embedding import IDS_QPARAMS
        ids16 = QParams(IDS_QPARAMS.scale, 0, 16)   # the int8 ids converted: code = id
        if x_qp not in (IDS_QPARAMS, ids16):
            raise UnsupportedLayerError(f"{where}: its token ids need the input quantization "
                                        f"{IDS_QPARAMS} (or {ids16} in an int16 step), the "
                                        f"input has {x_qp}")
        proj = w["token_kernel"].astype(np.float64) + (b if b is not None else 0.0)
        token_gx = np.clip(round_half_away(proj / s_in_c), -2 ** 30, 2 ** 30).astype(np.int32)
        bx = np.zeros(G * U, np.int64)
    mh, sh_h = requant_multipliers(sH * sR / s_in_c, where)
    tables = np.stack([oracle.activation_table(_fn(spec), si, so)
                       for spec, si, so in zip(fns, s_in, s_out)])
    out_qp = q.qparams(node.outputs[0])
    p = dict(cell=cell, units=U, reset_after=bool(a.get("reset_after", True)),
             go_backwards=bool(a.get("go_backwards")), reverse_output=bool(a.get("reverse_output")),
             return_sequences=bool(a.get("return_sequences")),
             return_state=bool(a.get("return_state")),
             zero_output_for_mask=bool(a.get("zero_output_for_mask")),
             n_init=n_init, masked=bool(a.get("masked")), gate_names=names,
             w_q=w_q, bx=_int32(bx, where), mx=mx, sh_x=sh_x, token_gx=token_gx,
             ids_zp=int(x_qp.zero_point),
             r_q=r_q, bh=_int32(bh, where), mh=mh, sh_h=sh_h, tables=tables,
             s_in=tuple(s_in), s_out=tuple(s_out), sH=sH, sC=sC,
             y_zp=int(out_qp.zero_point), m_y=_m(sH / out_qp.scale, where, out_qp.bits))
    p.update(_cell_multipliers(cell, s_in, s_out, sH, sC, where))
    p.update(_state_params(q, node, out_qp, init_qp, sH, sC, where))
    p["mask_zp"] = int(q.qparams(node.inputs[-1]).zero_point) if a.get("masked") else 0
    return RNNStep(node.name, node.layer, node.inputs, node.outputs, p)


def _step_scales(q, node, fns, names, init_qp):
    """The scales of the int16 values inside the step: per gate its input (pre-activation) and
    output, the hidden state sH and an LSTM's cell sC (1.0 for other cells), from the
    calibrated ranges (with HEADROOM) or from what the activation functions bound."""
    a = node.attrs
    cell = a["cell"]
    n_init = len(init_qp)
    s_in, s_out = [], []
    for spec, name in zip(fns, names):
        fn = canonical(spec["fn"])
        if fn in SATURATING:
            s_in.append(SATURATING[fn] / 32768.0)
        else:
            s_in.append(max(HEADROOM * _absmax(q, f"{node.name}/pre_{name}", 1.0), 1e-6) / 32768.0)
        if fn in BOUNDED:
            s_out.append(Q15)
        else:
            s_out.append(max(HEADROOM * _absmax(q, f"{node.name}/{name}", 1.0), 1e-6) / 32767.0)
    act_fn = canonical(a["activation"]["fn"])
    ract_fn = canonical(a.get("recurrent_activation", {"fn": "sigmoid"})["fn"])
    if act_fn in BOUNDED and (cell == "simple_rnn" or ract_fn in UNIT_INTERVAL):
        h_max = max([1.0] + [max(abs(v) for v in qp.real_range) for qp in init_qp[:1]])
    else:
        h_max = max(HEADROOM * _absmax(q, f"{node.name}/h", 1.0), 1e-6)
    sH = h_max / 32767.0
    sC = max(HEADROOM * _absmax(q, f"{node.name}/c", 1.0), 1e-6) / 32767.0 if cell == "lstm" else 1.0
    if cell == "lstm" and n_init > 1:
        sC = max(sC, max(abs(v) for v in init_qp[1].real_range) / 32767.0)
    return s_in, s_out, sH, sC


def _cell_multipliers(cell, s_in, s_out, sH, sC, where):
    """The requantization multipliers (m0, shift) inside the step of ``cell``, from the scales
    of its int16 values; those of the other cells are (0, 0)."""
    p = {}
    unused = (0, 0)             # the multipliers of the other cells: (m0, shift) of 0
    p.update(m_ah=unused, m_fc=unused, m_ic=unused, m_cc=unused, m_oh=unused,
             m_rh=unused, m_zh=unused, m_nzh=unused, one_z=0)
    if cell == "simple_rnn":
        p["m_ah"] = _m(s_out[0] / sH, where)
    elif cell == "lstm":
        p.update(m_fc=_m(s_out[1], where), m_ic=_m(s_out[0] * s_out[2] / sC, where),
                 m_cc=_m(sC / s_in[4], where), m_oh=_m(s_out[3] * s_out[4] / sH, where))
    else:
        p.update(m_rh=_m(s_out[1], where), m_zh=_m(s_out[0], where),
                 m_nzh=_m(s_out[0] * s_out[2] / sH, where),
                 one_z=int(min(round(1.0 / s_out[0]), 65535)))
    return p


def _state_params(q, node, out_qp, init_qp, sH, sC, where):
    """Zero points and multipliers of the returned states and of the initial states given as
    inputs, against the step's state scales sH (and sC for an LSTM's cell)."""
    a = node.attrs
    p = {}
    state_out = node.outputs[1:] if a.get("return_state") else []
    hs_qp = q.qparams(state_out[0]) if state_out else out_qp
    cs_qp = q.qparams(state_out[1]) if len(state_out) > 1 else None
    p.update(hs_zp=int(hs_qp.zero_point), m_hs=_m(sH / hs_qp.scale, where, hs_qp.bits),
             cs_zp=int(cs_qp.zero_point) if cs_qp else 0,
             m_cs=_m(sC / cs_qp.scale, where, cs_qp.bits) if cs_qp else (0, 0))
    p.update(init_zp=tuple(int(qp.zero_point) for qp in init_qp),
             m_init_h=_m(init_qp[0].scale / sH, where) if init_qp else (0, 0),
             m_init_c=_m(init_qp[1].scale / sC, where) if len(init_qp) > 1 else (0, 0))
    return p


def _int32(v, where):
    v = np.asarray(v, np.int64)
    if v.size and np.abs(v).max() >= 2 ** 31:
        raise QuantizationError(f"{where}: a recurrent bias does not fit int32")
    return v.astype(np.int32)


def _round_weights(q, node, W, R, sW, sR):
    """int8 codes of the kernel rows W [G*U, F] and recurrent rows R [G*U, U] at per-row
    scales sW, sR: adaptive rounding on the moment of [x_t, h_(t-1)] when calibration has
    it, else nearest."""
    m = q.moments.get(node.name)
    F = W.shape[1]
    if m is not None and getattr(m, "count", 0) and m.moment.shape[-1] == F + R.shape[1]:
        rows = np.concatenate([W, R], axis=1)
        scale = np.concatenate([np.repeat(sW[:, None], F, 1), np.repeat(sR[:, None], R.shape[1], 1)], 1)
        codes = round_rows_scaled(rows, scale, m.moment)
        return (np.ascontiguousarray(codes[:, :F]).astype(np.int8),
                np.ascontiguousarray(codes[:, F:]).astype(np.int8))
    near = lambda rows, s: np.clip(round_half_away(rows / s[:, None]), -WEIGHT_MAX, WEIGHT_MAX)
    return (np.ascontiguousarray(near(W, sW), np.int8), np.ascontiguousarray(near(R, sR), np.int8))


class RNNStep(Step):
    """An integer recurrent layer, int8 or int16 activations (``bits``; fixnet/oracle/recurrent.py
    states the arithmetic). Parameters are attributes (see quantize_rnn); inputs: x [T, F],
    initial states, mask."""
    op = "rnn"

    def __init__(self, name, layer, inputs, outputs, params):
        super().__init__(name, layer, inputs, outputs)
        self.__dict__.update(params)

    def _split(self, ins):
        x = ins[0]
        init = ins[1:1 + self.n_init]
        mask = ins[-1] if self.masked else None
        return x, init, mask

    def oracle(self, ins, trace=None):
        x, init, mask = self._split(ins)
        if self.token_gx is not None:
            self.check_ids(x)
        return oracle.rnn(self, x, init, mask, trace)

    def internal_scales(self):
        """{trace name: real units per int16 code} of the values inside the step."""
        out = {"h": self.sH}
        if self.cell == "lstm":
            out["c"] = self.sC
        for name, si, so in zip(self.gate_names, self.s_in, self.s_out):
            out["pre_" + name], out[name] = si, so
        return out

    def internal_values(self, ins):
        """{trace name: real values [B, steps, U]} inside the step on inputs ``ins`` (codes of
        the step's type),
        through the oracle: every gate's pre-activation and value, the states (h, c)."""
        seen = {}
        self.oracle(ins, trace=lambda name, k, v: seen.setdefault(name, []).append(v))
        scales = self.internal_scales()
        return {name: np.stack(vs, axis=1).astype(np.float64) * scales[name]
                for name, vs in seen.items()}

    def accumulators(self, ins):
        """Exact accumulators of every step: the input projections, and the recurrent ones
        met on the way (int64 [B, steps * G * U])."""
        x, init, mask = self._split(ins)
        accs = [] if self.token_gx is not None else [oracle.input_accumulators(self, x).reshape(x.shape[0], -1)]
        oracle.rnn(self, x, init, mask, accumulators=accs)
        return np.concatenate(accs, axis=1)

    def overflow_bound(self):
        # accx: raw input codes (|x| <= 128 for int8, 32768 for int16) times the kernel rows,
        # plus the bias; acch: int16 states (|h| <= 32768, and r * h for GRU's reset) times
        # the recurrent rows
        left = lambda sh: np.int64(1) << np.maximum(sh.astype(np.int64), 0)
        x_max = acc_input_max(self.bits)
        wx = (np.abs(self.bx.astype(np.int64)) + x_max * np.abs(self.w_q.astype(np.int64)).sum(axis=1)) \
            * left(self.sh_x)
        wh = (np.abs(self.bh.astype(np.int64)) + 32768 * np.abs(self.r_q.astype(np.int64)).sum(axis=1)) \
            * left(self.sh_h)
        return OverflowBound(self.layer, self.op, np.maximum(wx, wh))

    def bind(self, bufs):
        x, init, mask = self._split([bufs[t] for t in self.inputs])
        call = _recurrent.RnnCall(x, list(init), mask, [bufs[t] for t in self.outputs], self)
        if self.token_gx is None:
            return call

        def run():          # a Python step: the ids are checked first (the pass cannot raise from C)
            self.check_ids(x)
            call()
        return run

    def check_ids(self, x):
        """InputError naming the layer for a token id without a row (token_input)."""
        from ..errors import InputError
        ids = np.asarray(x, np.int64) - self.ids_zp
        bad = (ids < 0) | (ids >= self.token_gx.shape[0])
        if bad.any():
            raise InputError(f"layer '{self.layer}': token id {int(ids[bad].flat[0])} is outside "
                             f"[0, {self.token_gx.shape[0]}) (the folded Embedding's input_dim)")
