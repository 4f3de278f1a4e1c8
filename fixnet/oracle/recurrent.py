"""Integer recurrent layers (SimpleRNN, GRU, LSTM): the ground truth of _kernels/_recurrent.pyx.

Numbers inside one step (fixnet/ops/recurrent.py derives every scale and multiplier):

  x      codes of the layer's input: int8 (zero point folded into the input bias) or int16
         (zero point 0); the call's activation type, that of its initial states, mask and
         outputs too (one activation type per call)
  h16    int16 hidden state, real = sH * h16 (zero point 0); it is what the recurrent product
         reads, so the state fed back keeps 16 bits (the layer's outputs are made from it)
  c16    int16 LSTM cell state, real = sC * c16
  pre    int16 gate pre-activation, real = s_in[g] * pre: the input of gate g's function table
  a      int16 gate value (the table's output), real = s_out[g] * a (2^-15 for sigmoid/tanh)
  acc    int32 accumulators: accx = bx + sum x_q * w_q (every step's input projection),
         acch = bh + sum h16 * r_q (one step's recurrent projection)
  y      output codes (the sequence or last output, returned states) of the call's type:
         clamp(zp + mbqm(h16, m_y), type's range), zp 0 for int16; an initial state s of zero
         point zp enters as h16 = sat16(mbqm(s - zp, m_init_h))

One step, with mbqm(v, m) = multiply_by_quantized_multiplier(v, m0, shift) and sat16 a clamp
to [-32768, 32767]:

  gx = mbqm(accx, mx[c]), gh = mbqm(acch, mh[c])             per channel c, int32
  SimpleRNN  a = T_a(sat16(gx + gh));  h16' = sat16(mbqm(a, ah))
  LSTM       a_g = T_g(sat16(gx_g + gh_g)) for g in i, f, c, o
             c16' = sat16(mbqm(a_f * c16, fc) + mbqm(a_i * a_c, ic))
             h16' = sat16(mbqm(a_o * T_cell(sat16(mbqm(c16', cc))), oh))
  GRU        a_z, a_r = T_z(sat16(gx_z + gh_z)), T_r(sat16(gx_r + gh_r))
             reset_after:   pre_h = sat16(gx_h + mbqm(a_r * clamp(gh_h, +-65535), rh))
             reset before:  rh16 = sat16(mbqm(a_r * h16, rh)); pre_h = sat16(gx_h + mbqm(
                            sum rh16 * r_q[h rows], mh))
             a_h = T_h(pre_h)
             h16' = sat16(mbqm(a_z * h16, zh) + mbqm(min(one_z - a_z, 65535) * a_h, nzh))

Every product above fits int32 (|int16 * int16| <= 2^30; the clamps keep the other two below
2^31), so the only accumulators that can grow are accx and acch; the static proof bounds them
for every input (ops/recurrent.py overflow_bound). The state is saturated to int16 every step,
so nothing grows with the sequence length: the proof holds for any number of steps.

Function tables (activation_table): T[i] = f(s_in * (64 i - 32768)) / s_out rounded, i = 0..1024,
and T(v) interpolates linearly between the two entries around v:
  u = v + 32768; k = u >> 6; t = u & 63;  T(v) = T[k] + floor(((T[k+1] - T[k]) * t + 32) / 64)
"""
import numpy as np

from .core import (ACTIVATION_RANGES, _act, _check_act_zero_point, _same_act,
                   multiply_by_quantized_multiplier, round_half_away)

TABLE_SIZE = 1025                  # entries of a function table: 1024 intervals of 64 codes
TABLE_STEP_BITS = 6
INT16_MIN, INT16_MAX = -32768, 32767

__all__ = ["activation_table", "table_lookup", "rnn", "input_accumulators", "TABLE_SIZE"]


def activation_table(fn, s_in, s_out):
    """int16 table [TABLE_SIZE] of ``fn`` (float64 NumPy function) for inputs of scale s_in and
    outputs of scale s_out (see the module docstring)."""
    x = float(s_in) * (np.arange(TABLE_SIZE, dtype=np.float64) * 64.0 - 32768.0)
    y = round_half_away(np.asarray(fn(x), np.float64) / float(s_out))
    return np.clip(y, INT16_MIN, INT16_MAX).astype(np.int16)


def table_lookup(table, v):
    """The interpolated table T(v) for int16 codes v (any shape). Returns int64."""
    u = np.asarray(v, np.int64) + 32768
    k = u >> TABLE_STEP_BITS
    t = u & ((1 << TABLE_STEP_BITS) - 1)
    tab = np.asarray(table, np.int64)
    lo = tab[k]
    hi = tab[np.minimum(k + 1, TABLE_SIZE - 1)]
    return lo + (((hi - lo) * t + 32) >> TABLE_STEP_BITS)


def _sat16(v):
    return np.clip(v, INT16_MIN, INT16_MAX)


def _mb(v, m):
    """mbqm with one (m0, shift) pair or per-channel arrays; int64 result."""
    return multiply_by_quantized_multiplier(v, m[0], m[1]).astype(np.int64)


def _requant(v, m, zp, dtype):
    """int16 state codes -> codes of activation type ``dtype`` (int8 or int16) of a tensor
    with zero point zp."""
    lo, hi = ACTIVATION_RANGES[dtype]
    return np.clip(zp + _mb(v, m), lo, hi).astype(dtype)


def _check_call(p, x, initial_states, mask):
    """The activation type of a call (x's dtype): its initial states and mask are of it
    (TypeError), and its zero points are valid for it (ValueError; int16: all 0)."""
    x, dtype = _act(x, "x")
    _same_act(dtype, *[(s, f"initial state {i}") for i, s in enumerate(initial_states)],
              *([(mask, "mask")] if mask is not None else []))
    zps = [("y_zp", p.y_zp), ("hs_zp", p.hs_zp), ("cs_zp", p.cs_zp)]
    if initial_states:
        zps += [(f"init_zp[{i}]", p.init_zp[i]) for i in range(len(initial_states))]
    if mask is not None:
        zps.append(("mask_zp", p.mask_zp))
    if getattr(p, "token_gx", None) is not None:
        zps.append(("ids_zp", p.ids_zp))
    for name, zp in zps:
        _check_act_zero_point(zp, dtype, name)
    return x, dtype


def _cell_step(p, gx, h, c, trace, accs):
    """One step of every batch row. gx: int64 [B, G*U] (requantized input projection);
    h, c: int64 [B, U] states. Returns (h', c'); appends the exact recurrent accumulators
    to ``accs`` (a list) if given."""
    U = p.units
    acch = h @ p.r_q.astype(np.int64).T + p.bh
    if p.cell == "gru" and not p.reset_after:
        acch[:, 2 * U:] = 0                     # the candidate reads r * h (below)
    if accs is not None:
        accs.append(acch)
    gh = _mb(acch, (p.mh, p.sh_h))

    def gate(g, pre):
        pre = _sat16(pre)
        a = table_lookup(p.tables[g], pre)
        if trace is not None:
            trace(g, pre, a)
        return a

    if p.cell == "simple_rnn":
        a = gate(0, gx + gh)
        return _sat16(_mb(a, p.m_ah)), c
    if p.cell == "lstm":
        a_i = gate(0, gx[:, :U] + gh[:, :U])
        a_f = gate(1, gx[:, U:2 * U] + gh[:, U:2 * U])
        a_c = gate(2, gx[:, 2 * U:3 * U] + gh[:, 2 * U:3 * U])
        a_o = gate(3, gx[:, 3 * U:] + gh[:, 3 * U:])
        c_new = _sat16(_mb(a_f * c, p.m_fc) + _mb(a_i * a_c, p.m_ic))
        t = gate(4, _mb(c_new, p.m_cc))
        return _sat16(_mb(a_o * t, p.m_oh)), c_new
    a_z = gate(0, gx[:, :U] + gh[:, :U])
    a_r = gate(1, gx[:, U:2 * U] + gh[:, U:2 * U])
    if p.reset_after:
        pre_h = gx[:, 2 * U:] + _mb(a_r * np.clip(gh[:, 2 * U:], -65535, 65535), p.m_rh)
    else:
        rh = _sat16(_mb(a_r * h, p.m_rh))
        acc2 = rh @ p.r_q[2 * U:].astype(np.int64).T
        if accs is not None:
            accs.append(acc2)
        pre_h = gx[:, 2 * U:] + _mb(acc2, (p.mh[2 * U:], p.sh_h[2 * U:]))
    a_h = gate(2, pre_h)
    keep = _mb(a_z * h, p.m_zh)
    new = _mb(np.minimum(p.one_z - a_z, 65535) * a_h, p.m_nzh)
    return _sat16(keep + new), c


def input_accumulators(p, x):
    """accx: int64 [B, T, G*U] = bx + sum_k x_q * w_q (exact)."""
    return x.astype(np.int64) @ p.w_q.astype(np.int64).T + p.bx


def rnn(p, x, initial_states=(), mask=None, trace=None, accumulators=None):
    """Run the integer recurrent layer ``p`` (an RNNStep's parameters) over x [B, T, F] of
    int8 or int16 codes (or, with p.token_gx, token id codes x [B, T]: gx = token_gx[x -
    ids_zp], ids in range). x's dtype is the call's activation type.

    initial_states: arrays [B, U] of that type (h, and c for an LSTM) or (); mask: [B, T]
    codes of that type of a mask tensor (present where the code differs from p.mask_zp) or
    None. int16 zero points are 0.
    trace(name, step, int array): sees every gate's pre-activation ("pre_<gate>") and value
    ("<gate>") and the states ("h", "c") of every step, in processing order.
    accumulators: a list, or None: receives every step's exact recurrent accumulators.
    Returns the outputs the node declares, of the call's type: the sequence [B, T, U] or last
    output [B, U], then with return_state h (and c)."""
    x, dtype = _check_call(p, x, initial_states, mask)
    B, T = x.shape[0], x.shape[1]
    U = p.units
    if getattr(p, "token_gx", None) is not None:
        # token ids (codes - ids_zp; the caller checked them): the projection is a lookup
        gx_all = p.token_gx.astype(np.int64)[x.reshape(B, T).astype(np.int64) - p.ids_zp]
    else:
        gx_all = _mb(input_accumulators(p, x), (p.mx, p.sh_x))
    h = np.zeros((B, U), np.int64)
    c = np.zeros((B, U), np.int64)
    if initial_states:
        h = _sat16(_mb(np.asarray(initial_states[0], np.int64) - p.init_zp[0], p.m_init_h))
        if p.cell == "lstm":
            c = _sat16(_mb(np.asarray(initial_states[1], np.int64) - p.init_zp[1], p.m_init_c))
    present = None if mask is None else (np.asarray(mask, np.int64) != p.mask_zp)
    y = np.full((B, T, U), p.y_zp, dtype)
    prev = np.full((B, U), p.y_zp, dtype)
    order = range(T - 1, -1, -1) if p.go_backwards else range(T)
    gate_names = p.gate_names
    for k, t in enumerate(order):
        tr = None
        if trace is not None:
            def tr(g, pre, a, k=k):
                trace("pre_" + gate_names[g], k, pre)
                trace(gate_names[g], k, a)
        h_new, c_new = _cell_step(p, gx_all[:, t], h, c, tr, accumulators)
        out = _requant(h_new, p.m_y, p.y_zp, dtype)
        if present is not None:
            m = present[:, t][:, None]
            h_new = np.where(m, h_new, h)
            c_new = np.where(m, c_new, c)
            out = np.where(m, out, dtype.type(p.y_zp) if p.zero_output_for_mask else prev)
        h, c, prev = h_new, c_new, out
        if trace is not None:
            trace("h", k, h)
            if p.cell == "lstm":
                trace("c", k, c)
        y[:, T - 1 - k if p.reverse_output else k] = out
    if p.return_sequences:
        result = [y]
    else:
        result = [prev if T else np.full((B, U), p.y_zp, dtype)]
    if p.return_state:
        result.append(_requant(h, p.m_hs, p.hs_zp, dtype))
        if p.cell == "lstm":
            result.append(_requant(c, p.m_cs, p.cs_zp, dtype))
    return result
