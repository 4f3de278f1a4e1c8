"""Recurrent layers (SimpleRNN, GRU, LSTM, RNN of a cell, Bidirectional), TimeDistributed,
Embedding, Masking, RepeatVector; how Keras propagates a sequence mask."""
from ... import activations
from .base import (KERAS_LAYERS, KerasLayer, Unsupported, activation_name, activation_params,
                   channel_axis_is_last, config_float, config_int, keras_layer)


# --- recurrent layers, sequences, masks ---------------------------------------------------------
# (IR ops: fixnet/ops/recurrent.py, embedding.py, mask.py; a mask is a (T,) tensor of 0.0/1.0
# that travels beside the sequence it belongs to: see fixnet/keras/builder.py, GraphBuilder.propagate_mask)

RNN_CELLS = {"SimpleRNN": "simple_rnn", "GRU": "gru", "LSTM": "lstm"}

# How Keras propagates a sequence mask through the layers that do not set one themselves
# (fixnet/keras/builder.py, GraphBuilder.propagate_mask; the mask-aware handlers below set layer.output_masks):
# layers that keep their input's mask (supports_masking, the mask unchanged) ...
MASK_KEEPERS = {"Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "BatchNormalization",
                "Rescaling", "Normalization", "Dropout", "SpatialDropout1D", "AlphaDropout",
                "GaussianDropout", "GaussianNoise", "ActivityRegularization", "TimeDistributed"}
# ... layers whose results a mask would change, which fixnet does not apply a mask in ...
MASK_USERS = {"Softmax"}
# ... and the layers whose call takes the mask (Keras 3 files name it: ``mask=``)
MASK_ARGUMENT = {"SimpleRNN", "GRU", "LSTM", "RNN", "Bidirectional", "TimeDistributed",
                 "GlobalAveragePooling1D", "GlobalAvgPool1D", "Softmax"}


def _rnn_activation(layer, cfg, key, default):
    name = activation_name(cfg[key]) if key in cfg else default
    if name == "linear":
        return {"fn": "linear", "params": {}}
    if not activations.known(name) or name == "softmax":
        raise Unsupported(f"{key} '{name}' is not supported in a recurrent layer")
    return {"fn": activations.canonical(name), "params": activation_params(layer, name)}


RNN_CELL_CLASSES = {"SimpleRNNCell": "SimpleRNN", "GRUCell": "GRU", "LSTMCell": "LSTM"}
# what the generic RNN wrapper's config holds (the rest is the cell's)
RNN_WRAPPER_KEYS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll",
                    "time_major", "zero_output_for_mask")


def as_recurrent_layer(cls, cfg):
    """(class, config) of a recurrent layer; a generic ``RNN(cell)`` of one SimpleRNNCell,
    GRUCell or LSTMCell becomes the matching layer with the cell's config."""
    if cls != "RNN":
        return cls, cfg
    cell = cfg.get("cell")
    if not isinstance(cell, dict) or cell.get("class_name") not in RNN_CELL_CLASSES:
        what = cell.get("class_name") if isinstance(cell, dict) else "a list of cells"
        raise Unsupported(f"RNN of {what}; fixnet runs RNN of one SimpleRNNCell, GRUCell or "
                          "LSTMCell")
    merged = dict(cell.get("config") or {})
    merged.update({k: cfg[k] for k in RNN_WRAPPER_KEYS if k in cfg})
    return RNN_CELL_CLASSES[cell["class_name"]], merged


def rnn_attrs(layer, cls, cfg):
    """The IR attrs of a SimpleRNN/GRU/LSTM config (Unsupported for what fixnet cannot run)."""
    if cls not in RNN_CELLS:
        raise Unsupported(f"wraps a {cls}; only SimpleRNN, GRU and LSTM are supported")
    if cfg.get("stateful"):
        raise Unsupported("stateful=True carries states across predict calls; fixnet runs "
                          "stateless recurrent layers only (rebuild the model with stateful=False, "
                          "the weights are the same)")
    if cfg.get("time_major"):
        raise Unsupported("time_major=True is not supported (only batch-major sequences)")
    cell = RNN_CELLS[cls]
    attrs = {"cell": cell, "units": config_int(cfg["units"], "units"),
             "activation": _rnn_activation(layer, cfg, "activation", "tanh"),
             "return_sequences": bool(cfg.get("return_sequences", False)),
             "return_state": bool(cfg.get("return_state", False)),
             "go_backwards": bool(cfg.get("go_backwards", False)),
             "zero_output_for_mask": bool(cfg.get("zero_output_for_mask", False))}
    if cell != "simple_rnn":
        attrs["recurrent_activation"] = _rnn_activation(layer, cfg, "recurrent_activation", "sigmoid")
    if cell == "gru":
        # configs from before Keras 2.1.5 have no reset_after: they computed it the old way
        attrs["reset_after"] = bool(cfg.get("reset_after", False))
    return attrs


def rnn_weights(lw, attrs, use_bias, n_features):
    """{kernel, recurrent_kernel[, bias][, recurrent_bias]} of one recurrent layer, checked."""
    cell, U = attrs["cell"], attrs["units"]
    G = {"simple_rnn": 1, "gru": 3, "lstm": 4}[cell]
    w = lw.take(["kernel", "recurrent_kernel", "bias"] if use_bias else ["kernel", "recurrent_kernel"])
    if w["kernel"].shape != (n_features, G * U):
        lw.misshapen("kernel", w["kernel"].shape, (n_features, G * U))
    if w["recurrent_kernel"].shape != (U, G * U):
        lw.misshapen("recurrent_kernel", w["recurrent_kernel"].shape, (U, G * U))
    out = {"kernel": w["kernel"], "recurrent_kernel": w["recurrent_kernel"]}
    if use_bias:
        b = w["bias"]
        two = cell == "gru" and attrs["reset_after"]
        want = (2, G * U) if two else (G * U,)
        if b.shape != want:
            lw.misshapen("bias", b.shape, want)
        if two:
            out["bias"], out["recurrent_bias"] = b[0], b[1]
        else:
            out["bias"] = b
    return out


def _sequence_input(layer):
    """(x, shape, initial states, mask) of a recurrent layer's call: Keras lists the
    initial_state tensors after the sequence."""
    if not layer.inputs:
        raise Unsupported("called on no input")
    x, shape = layer.inputs[0], layer.input_shapes[0]
    if len(shape) != 2:
        raise Unsupported(f"input of shape {tuple(shape)}; a recurrent layer takes "
                          "(time steps, features) sequences")
    return x, shape, list(layer.inputs[1:]), layer.input_masks[0]


def emit_rnn(layer, attrs, weights, x, init, mask, outputs, suffix="", reverse_output=False):
    attrs = dict(attrs, n_initial_states=len(init), masked=mask is not None,
                 reverse_output=reverse_output)
    layer.emit("rnn", [x] + init + ([mask] if mask is not None else []), outputs, attrs, weights,
               suffix=suffix)


@keras_layer("RNN", *RNN_CELLS)
def recurrent(layer):
    cls, cfg = as_recurrent_layer(layer.class_name, layer.config)
    x, shape, init, mask = _sequence_input(layer)
    attrs = rnn_attrs(layer, cls, cfg)
    n_states = 2 if attrs["cell"] == "lstm" else 1
    if init and len(init) != n_states:
        raise Unsupported(f"called with {len(init)} initial state tensor(s); a {cls} "
                          f"has {n_states}")
    weights = rnn_weights(layer.weights, attrs, cfg.get("use_bias", True), shape[-1])
    outs = [layer.output(k) for k in range(1 + (n_states if attrs["return_state"] else 0))]
    emit_rnn(layer, attrs, weights, x, init, mask, outs)
    layer.output_masks = {outs[0]: mask} if mask is not None and attrs["return_sequences"] else {}


BIDIRECTIONAL_MERGES = {"sum": "add", "mul": "multiply", "ave": "average"}


@keras_layer("Bidirectional")
def bidirectional(layer):
    """Two rnn nodes (the backward one runs go_backwards and, returning sequences, flips its
    output back to input order, as Keras does), then their merge: concat, sum, mul, ave, or
    none (two outputs)."""
    cfg = layer.config
    x, shape, init, mask = _sequence_input(layer)
    inner = cfg["layer"]
    fcls, fcfg = as_recurrent_layer(inner["class_name"], inner["config"])
    back = cfg.get("backward_layer")
    bcls, bcfg = as_recurrent_layer(back["class_name"], back["config"]) if back else \
        (fcls, dict(fcfg, go_backwards=not fcfg.get("go_backwards", False)))
    fa, ba = rnn_attrs(layer, fcls, fcfg), rnn_attrs(layer, bcls, bcfg)
    if fa["return_sequences"] != ba["return_sequences"] or fa["return_state"] != ba["return_state"]:
        raise Unsupported("forward and backward layers differ in return_sequences/return_state")
    merge_mode = cfg.get("merge_mode", "concat")
    if merge_mode not in ("concat", "sum", "mul", "ave", None):
        raise Unsupported(f"merge_mode {merge_mode!r} is not supported")
    seqs = fa["return_sequences"]
    for a in (fa, ba):
        a["zero_output_for_mask"] = seqs        # Bidirectional forces it (both writers)
    n_states = 2 if fa["cell"] == "lstm" else 1
    n_states_b = 2 if ba["cell"] == "lstm" else 1
    if init and len(init) != n_states + n_states_b:
        raise Unsupported(f"called with {len(init)} initial state tensor(s), expected "
                          f"{n_states + n_states_b}")
    fw = rnn_weights(layer.weights.part("forward"), fa, fcfg.get("use_bias", True), shape[-1])
    bw = rnn_weights(layer.weights.part("forward", others=True), ba, bcfg.get("use_bias", True),
                     shape[-1])
    n_main = 2 if merge_mode is None else 1
    state_outs = [layer.output(n_main + k) for k in range(n_states + n_states_b)] \
        if fa["return_state"] else []
    if merge_mode is None:
        f_out, b_out = layer.output(0), layer.output(1)
    else:
        f_out, b_out = layer.tensor("forward"), layer.tensor("backward")
    emit_rnn(layer, fa, fw, x, init[:n_states], mask, [f_out] + state_outs[:n_states], "forward")
    emit_rnn(layer, ba, bw, x, init[n_states:], mask, [b_out] + state_outs[n_states:], "backward",
             reverse_output=seqs)
    mains = [f_out, b_out]
    if merge_mode == "concat":
        layer.emit("concat", [f_out, b_out], [layer.output(0)], {"axis": -1}, suffix="concat")
        mains = [layer.output(0)]
    elif merge_mode is not None:
        layer.emit("binary", [f_out, b_out], [layer.output(0)],
                   {"kind": BIDIRECTIONAL_MERGES[merge_mode]}, suffix=merge_mode)
        mains = [layer.output(0)]
    layer.output_masks = {t: mask for t in mains} if mask is not None and seqs else {}


# inner layers of a TimeDistributed that act on the last axis only, so that applying them to
# the whole (T, ...) tensor is applying them at every time step
_PER_LAST_AXIS = {"Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "BatchNormalization",
                  "Rescaling", "Dropout", "AlphaDropout", "GaussianDropout", "GaussianNoise",
                  "SpatialDropout1D", "ActivityRegularization"}


@keras_layer("TimeDistributed")
def time_distributed(layer):
    inner = layer.config["layer"]
    cls, cfg = inner["class_name"], inner.get("config", {})
    src, shape = layer.single_input()
    if cls == "Flatten":
        layer.emit("reshape", [src], layer.outputs, {"shape": (shape[0], -1)})
        return
    if cls not in _PER_LAST_AXIS or cls == "Softmax" and not channel_axis_is_last(
            cfg.get("axis", -1), len(shape) - 1):
        raise Unsupported(f"TimeDistributed({cls}) is not supported yet; fixnet runs "
                          f"TimeDistributed of {', '.join(sorted(_PER_LAST_AXIS))} and Flatten")
    if cls == "BatchNormalization" and not channel_axis_is_last(cfg.get("axis", -1), len(shape) - 1):
        raise Unsupported("TimeDistributed(BatchNormalization) over an axis but the last")
    KERAS_LAYERS[cls](KerasLayer(layer.name, cls, dict(cfg, axis=-1) if "axis" in cfg else cfg,
                                 layer.weights, layer.inputs, layer.input_shapes, layer.outputs,
                                 layer._emit, layer.keras_version))


@keras_layer("Embedding")
def embedding(layer):
    cfg = layer.config
    src, shape = layer.single_input()
    table = layer.weights.take(["embeddings"])["embeddings"]
    v = config_int(cfg.get("input_dim", table.shape[0]), "input_dim")
    d = config_int(cfg.get("output_dim", table.shape[-1]), "output_dim")
    if table.shape != (v, d):
        layer.weights.misshapen("embeddings", table.shape, (v, d))
    layer.emit("embedding", [src], layer.outputs, {}, {"table": table})
    layer.output_masks = {}
    if cfg.get("mask_zero"):
        m = layer.tensor("mask")
        layer.emit("token_mask", [src], [m], suffix="mask")
        layer.output_masks = {layer.outputs[0]: m}


@keras_layer("Masking")
def masking(layer):
    src, shape = layer.single_input()
    value = config_float(layer.config.get("mask_value", 0.0), "mask_value")
    m = layer.tensor("mask")
    layer.emit("masking", [src], [layer.outputs[0], m], {"mask_value": value})
    layer.output_masks = {layer.outputs[0]: m}


@keras_layer("RepeatVector")
def repeat_vector(layer):
    """(C,) -> (n, C): a reshape to (1, C) and a nearest up-sampling by n along the time axis
    (a copy of int8 codes in int8)."""
    src, shape = layer.single_input()
    if len(shape) != 1:
        raise Unsupported(f"input of shape {tuple(shape)}; RepeatVector takes vectors")
    n = config_int(layer.config["n"], "n")
    row = layer.tensor("row")
    layer.emit("reshape", [src], [row], {"shape": (1, shape[0])}, suffix="row")
    layer.emit("upsample", [row], layer.outputs, {"rank": 1, "size": (1, n),
                                                  "interpolation": "nearest"})
