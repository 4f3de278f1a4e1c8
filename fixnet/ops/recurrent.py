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
weights: kernel [F, G*U], recurrent_kernel [U, G*U], bias [G*U] (optional); a GRU with
  reset_after also recurrent_bias [3U]. Gate order as Keras stores it: LSTM i, f, c, o;
  GRU z, r, h.

The float reference is the cell equations of Keras in float64. int8 execution is not
implemented yet: quantize() refuses a graph with an rnn node (see ``int8_unsupported``).
"""
import numpy as np

from ..activations import activation
from ..errors import UnsupportedLayerError
from . import Op, register

GATES = {"simple_rnn": 1, "gru": 3, "lstm": 4}
STATES = {"simple_rnn": 1, "gru": 1, "lstm": 2}


def _fn(spec):
    return activation(spec["fn"], **spec.get("params", {}))[0]


def _simple_step(xw, h, states, R, act, ract, U, reset_after, rb):
    h_new = act(xw + h @ R)
    return h_new, [h_new]


def _gru_step(xw, h, states, R, act, ract, U, reset_after, rb):
    if reset_after:
        inner = h @ R
        if rb is not None:
            inner = inner + rb
        z = ract(xw[:, :U] + inner[:, :U])
        r = ract(xw[:, U:2 * U] + inner[:, U:2 * U])
        hh = act(xw[:, 2 * U:] + r * inner[:, 2 * U:])
    else:
        zr = h @ R[:, :2 * U]
        z = ract(xw[:, :U] + zr[:, :U])
        r = ract(xw[:, U:2 * U] + zr[:, U:])
        hh = act(xw[:, 2 * U:] + (r * h) @ R[:, 2 * U:])
    h_new = z * h + (1.0 - z) * hh
    return h_new, [h_new]


def _lstm_step(xw, h, states, R, act, ract, U, reset_after, rb):
    c = states[1]
    g = xw + h @ R
    i, f = ract(g[:, :U]), ract(g[:, U:2 * U])
    c_new = f * c + i * act(g[:, 2 * U:3 * U])
    o = ract(g[:, 3 * U:])
    h_new = o * act(c_new)
    return h_new, [h_new, c_new]


STEPS = {"simple_rnn": _simple_step, "gru": _gru_step, "lstm": _lstm_step}


def run_rnn(attrs, weights, x, initial_states=None, mask=None):
    """The Keras recurrent loop in float64. x: [B, T, F]; mask: [B, T] (nonzero = present) or
    None. Returns (outputs [B, T, U] in processing order, final states [h, (c)])."""
    cell, U = attrs["cell"], int(attrs["units"])
    x = np.asarray(x, np.float64)
    B, T = x.shape[0], x.shape[1]
    W = weights["kernel"].astype(np.float64)
    R = weights["recurrent_kernel"].astype(np.float64)
    xw = x @ W
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
        out, new = step(xw[:, t], states[0], states, R, act, ract, U, attrs.get("reset_after", True), rb)
        if mask is not None:
            m = (np.asarray(mask[:, t]) != 0)[:, None]
            new = [np.where(m, s_new, s_old) for s_new, s_old in zip(new, states)]
            out = np.where(m, out, 0.0 if zero_out else prev_out)
        states = new
        prev_out = out
        outs[:, k] = out
    return outs, states


@register
class RNN(Op):
    name = "rnn"

    def infer_shapes(self, node, in_shapes):
        a = node.attrs
        cell, U = a["cell"], int(a["units"])
        x = in_shapes[0]
        if len(x) != 2:
            raise UnsupportedLayerError(f"{node.describe()}: input shape {tuple(x)}; a recurrent "
                                        "layer takes (time steps, features) sequences")
        G = GATES[cell]
        kernel, rk = node.weights["kernel"], node.weights["recurrent_kernel"]
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
        seq, states = run_rnn(a, node.weights, inputs[0], inputs[1:1 + n_init] or None, mask)
        if a.get("return_sequences"):
            out = seq[:, ::-1] if a.get("reverse_output") else seq
        else:
            out = seq[:, -1] if seq.shape[1] else np.zeros((seq.shape[0], int(a["units"])))
        return [out] + (list(states) if a.get("return_state") else [])

    def int8_unsupported(self, node):
        return "int8 execution of recurrent layers is not implemented yet (FloatModel.predict " \
               "runs them in float)"
