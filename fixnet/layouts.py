"""Every weight layout of fixnet, defined once; every other module asks this one.

Three layouts per weighted op:

- **Keras** (the float graph keeps it: ``node.weights["kernel"]``): dense [K, C]; conv2d
  [KH, KW, Cin/groups, Cout]; depthwise_conv2d [KH, KW, C, M] (output channel o = c * M + m);
  rnn kernel [F, G*U] and recurrent kernel [U, G*U] (G gates of U units, gate-major); affine
  (a BatchNormalization or Rescaling left alone) scale [C].
- **rows**, one per output channel (what scales, rounding and bias correction work on):
  dense [C, K]; conv2d [Cout, KH, KW, Cin/groups]; depthwise_conv2d [C*M, KH, KW]; rnn
  [G*U, F] and [G*U, U]; affine [C, 1]. ``flat_rows`` makes any of them [C, K].
- **step** (``step.w_q``, what the oracle reads and the kernels pack): dense [C, K]; conv2d
  [Cout, KH, KW, Cin/groups]; depthwise_conv2d [KH, KW, C*M] (the taps outermost, channels
  contiguous: the depthwise kernels' lanes); rnn [G*U, F] / [G*U, U]; affine [C].

The kernels' own packed layouts (GEMM panels, depthwise tiles) are made from the step layout
by fixnet/_kernels/gemm_pack.py and ``_conv.pack_depthwise_weights``. A leaf: NumPy only.
"""
import numpy as np

KERNEL_OPS = ("dense", "conv2d", "depthwise_conv2d")          # Keras layers with a kernel
ROW_OPS = KERNEL_OPS + ("rnn", "affine")                        # steps whose w_q has rows


def has_rows(op):
    """True for the ops whose weights have a layout here (a global average pooling's fixed
    weights do not: they are not a layer's)."""
    return op in ROW_OPS


def _unknown(op):
    return ValueError(f"no weight layout for op '{op}'")


def rows_from_keras(op, kernel):
    """Keras's kernel as weight rows, output channel first (see the module docstring)."""
    k = np.asarray(kernel)
    if op in ("dense", "rnn"):                   # [K, C] -> [C, K]
        return k.T
    if op == "affine":                           # scale [C] -> [C, 1]: a one-tap row each
        return k.reshape(-1, 1)
    if op == "conv2d":                           # [KH, KW, Cin_g, Cout] -> [Cout, KH, KW, Cin_g]
        return np.transpose(k, (3, 0, 1, 2))
    if op == "depthwise_conv2d":                 # [KH, KW, C, M] -> [C*M, KH, KW]
        kh, kw, c, m = k.shape
        return np.transpose(k.reshape(kh, kw, c * m), (2, 0, 1))
    raise _unknown(op)


def keras_from_rows(op, rows, depth_multiplier=1):
    """The inverse of rows_from_keras: rows back in Keras's layout (a depthwise layer's
    ``depth_multiplier`` M splits its C*M rows; an affine's rows [C, 1] give [C])."""
    r = np.asarray(rows)
    if op in ("dense", "rnn"):
        return r.T
    if op == "conv2d":
        return np.transpose(r, (1, 2, 3, 0))
    if op == "depthwise_conv2d":                 # [C*M, KH, KW] -> [KH, KW, C, M]
        t = np.transpose(r, (1, 2, 0))
        return t.reshape(t.shape[0], t.shape[1], -1, int(depth_multiplier))
    if op == "affine":
        return r.reshape(-1)
    raise _unknown(op)


def step_from_rows(op, rows):
    """Quantized rows in the step's layout (C-contiguous, as the kernels take them)."""
    r = np.asarray(rows)
    if op == "depthwise_conv2d":                 # [C*M, KH, KW] -> [KH, KW, C*M]
        r = np.transpose(r, (1, 2, 0))
    elif op == "affine":                         # [C, 1] -> [C]
        r = r[:, 0]
    elif op not in ("dense", "conv2d", "rnn"):
        raise _unknown(op)
    return np.ascontiguousarray(r)


def rows_from_step(op, w_q):
    """A step's weights back as rows, output channel first."""
    w = np.asarray(w_q)
    if op == "depthwise_conv2d":                 # [KH, KW, C*M] -> [C*M, KH, KW]
        return np.transpose(w, (2, 0, 1))
    if op == "affine":                           # [C] -> [C, 1]
        return w.reshape(-1, 1)
    if op in ("dense", "conv2d", "rnn"):
        return w
    raise _unknown(op)


def flat_rows(rows):
    """Rows of any op as [C, K] (K: the inputs one output channel reads)."""
    r = np.asarray(rows)
    return r.reshape(r.shape[0], -1)


def scale_output_channels(op, kernel, scale):
    """Keras's ``kernel`` with output channel o multiplied by ``scale[o]`` (a BatchNormalization
    folded into the layer before it)."""
    k = np.asarray(kernel, np.float64)
    if op == "depthwise_conv2d":                 # [KH, KW, C, M], channel o = c * M + m
        return k * np.asarray(scale).reshape(k.shape[2], k.shape[3])
    if op in KERNEL_OPS:                         # [..., Cout]
        return k * scale
    raise _unknown(op)


def out_channels(op, kernel):
    """The output channels of a layer from Keras's kernel (a depthwise layer's C * M)."""
    return rows_from_keras(op, kernel).shape[0]


def taps(op, kernel):
    """The inputs one output element reads (multiply-adds per output element) from Keras's
    kernel: dense K; conv2d KH * KW * Cin/groups; depthwise_conv2d KH * KW."""
    return flat_rows(rows_from_keras(op, kernel)).shape[1]


def step_taps(op, w_q):
    """taps(), from a step's weights."""
    return flat_rows(rows_from_step(op, w_q)).shape[1]
