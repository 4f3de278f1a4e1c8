"""Graph rewrites before quantization. Each takes a Graph and returns a new one computing the
same function (up to float rounding): identities removed, BatchNorm folded into the Dense before
it, clamp activations fused into the layer before them."""
import copy

import numpy as np

from . import layouts
from .ops.activation import activation_function
from .graph import Graph


def _copy(graph):
    nodes = [copy.copy(n) for n in graph.nodes]
    for n in nodes:
        n.inputs, n.outputs = list(n.inputs), list(n.outputs)
        n.attrs, n.weights = dict(n.attrs), dict(n.weights)
    return Graph(list(graph.inputs), list(graph.outputs), nodes, dict(graph.shapes), graph.name,
                 graph.source)


def _rename_tensor(graph, old, new):
    for n in graph.nodes:
        n.inputs = [new if t == old else t for t in n.inputs]
    graph.outputs = [new if t == old else t for t in graph.outputs]


def _sole_consumer(graph, tensor):
    """The one node reading ``tensor``, if exactly one does and it is not a model output."""
    if tensor in graph.outputs:
        return None
    users = graph.consumers().get(tensor, [])
    return users[0] if len(users) == 1 else None


def remove_identities(graph):
    g = _copy(graph)
    for n in list(g.nodes):
        if n.op != "identity":
            continue
        src, dst = n.inputs[0], n.outputs[0]
        if dst in g.outputs and src in g.inputs:
            continue       # an identity model: keep a node so the output has a producer
        g.nodes.remove(n)
        if dst in g.outputs:
            # keep the model's output name: the producer of src writes dst instead
            prod = g.producers()[src]
            prod.outputs = [dst if t == src else t for t in prod.outputs]
            _rename_tensor(g, src, dst)
            g.shapes[dst] = g.shapes[src]
        else:
            _rename_tensor(g, dst, src)
    return g


def _scale_output_channels(node, scale, offset):
    """Fold y*scale + offset (per output channel) into a dense/conv node's weights."""
    kernel = layouts.scale_output_channels(node.op, node.weights["kernel"], scale)
    bias = node.weights.get("bias", np.zeros(scale.shape[0])).astype(np.float64) * scale + offset
    node.weights = {"kernel": kernel, "bias": bias}


CHANNEL_OPS = layouts.KERNEL_OPS


def fold_batchnorm(graph):
    """dense/conv (no clamp) -> affine  becomes one dense/conv with scaled kernel and shifted bias."""
    g = _copy(graph)
    prods = g.producers()
    for bn in list(g.nodes):
        if bn.op != "affine":
            continue
        d = prods.get(bn.inputs[0])
        if d is None or d.op not in CHANNEL_OPS or d.attrs.get("clamp") is not None:
            continue
        if _sole_consumer(g, bn.inputs[0]) is not bn:
            continue
        _scale_output_channels(d, bn.weights["scale"], bn.weights["offset"])
        if "input_mean" in bn.attrs and "input_var" in bn.attrs:
            # the BatchNormalization's moving statistics describe the layer's output before the
            # fold; after it, the folded output's are these (for data-free quantization)
            s, o = bn.weights["scale"], bn.weights["offset"]
            d.attrs["output_stats"] = (np.asarray(bn.attrs["input_mean"]) * s + o,
                                       np.asarray(bn.attrs["input_var"]) * s * s)
        d.attrs["clamp"] = bn.attrs.get("clamp")
        d.attrs["folded"] = d.attrs.get("folded", []) + [bn.layer]
        d.outputs = list(bn.outputs)
        g.nodes.remove(bn)
        prods = g.producers()
    return g


def fold_padding(graph):
    """pad -> conv/depthwise with 'valid' padding  becomes the convolution's own padding (both
    pad with real 0.0, so this is exact)."""
    g = _copy(graph)
    prods = g.producers()
    for c in list(g.nodes):
        if c.op not in ("conv2d", "depthwise_conv2d") or c.attrs.get("padding") != "valid":
            continue
        p = prods.get(c.inputs[0])
        if p is None or p.op != "pad" or _sole_consumer(g, c.inputs[0]) is not c:
            continue
        c.attrs["padding"] = tuple(tuple(x) for x in p.attrs["pads"])
        c.attrs["folded"] = [p.layer] + c.attrs.get("folded", [])
        c.inputs = list(p.inputs)
        g.nodes.remove(p)
        prods = g.producers()
    return g


def fold_affine_into_next_dense(graph):
    """affine (no clamp) -> dense  becomes one dense: x*s + o feeding W is x @ (s * W) + o @ W.
    This is a BatchNormalization right after the input or a Flatten."""
    g = _copy(graph)
    prods = g.producers()
    for d in list(g.nodes):
        if d.op != "dense":
            continue
        a = prods.get(d.inputs[0])
        if a is None or a.op != "affine" or a.attrs.get("clamp") is not None:
            continue
        if _sole_consumer(g, d.inputs[0]) is not d:
            continue
        kernel = d.weights["kernel"].astype(np.float64)
        bias = d.weights.get("bias", np.zeros(kernel.shape[1])).astype(np.float64)
        d.weights = {"kernel": a.weights["scale"][:, None] * kernel,
                     "bias": bias + a.weights["offset"] @ kernel}
        d.attrs["folded"] = [a.layer] + d.attrs.get("folded", [])
        if "input_mean" in a.attrs and "input_var" in a.attrs:
            d.attrs["input_stats"] = (a.attrs["input_mean"], a.attrs["input_var"])
        d.inputs = list(a.inputs)
        g.nodes.remove(a)
        prods = g.producers()
    return g


def _clamp_of(node):
    if node.op != "activation":
        return None
    return activation_function(node.attrs)[1]


def fuse_activations(graph):
    """dense/conv/affine/add -> clamp activation (relu, relu6, ...) becomes the producer's clamp
    bounds."""
    g = _copy(graph)
    prods = g.producers()
    for act in list(g.nodes):
        clamp = _clamp_of(act)
        if clamp is None:
            continue
        p = prods.get(act.inputs[0])
        if p is None or p.op not in CHANNEL_OPS + ("affine", "binary") or p.attrs.get("clamp") is not None:
            continue
        if _sole_consumer(g, act.inputs[0]) is not act:
            continue
        p.attrs["clamp"] = clamp
        p.attrs["fused"] = p.attrs.get("fused", []) + [act.layer]
        p.outputs = list(act.outputs)
        g.nodes.remove(act)
        prods = g.producers()
    return g


def clamp_before_saturating_activations(graph):
    """dense/conv/affine -> f, with f constant outside [a, b] (hard_sigmoid): the producer's
    output is shifted by -a and clamped to [0, b - a], and f reads y + a. The function is
    unchanged; the int8 range of the producer covers only inputs that matter, and its grid
    starts exactly at the window's edge (as TFLite's relu6(x + 3) / 6 decomposition has it)."""
    from .activations import saturation_window
    g = _copy(graph)
    prods = g.producers()
    for act in g.nodes:
        if act.op != "activation":
            continue
        window = saturation_window(act.attrs["fn"], **act.attrs.get("params", {}))
        p = prods.get(act.inputs[0])
        if window is None or p is None or p.op not in CHANNEL_OPS + ("affine",):
            continue
        if p.attrs.get("clamp") is not None or _sole_consumer(g, act.inputs[0]) is not act:
            continue
        a, b = window
        if p.op == "affine":
            p.weights = dict(p.weights, offset=p.weights["offset"] - a)
        else:
            n_out = layouts.out_channels(p.op, p.weights["kernel"])
            bias = p.weights.get("bias", np.zeros(n_out))
            p.weights = dict(p.weights, bias=np.asarray(bias, np.float64) - a)
            if "output_stats" in p.attrs:
                m, v = p.attrs["output_stats"]
                p.attrs["output_stats"] = (np.asarray(m) - a, v)
        p.attrs["clamp"] = (0.0, b - a)
        act.attrs = dict(act.attrs, params=dict(act.attrs.get("params", {}), input_offset=a))
    return g


def fold_embedding_into_rnn(graph):
    """embedding -> recurrent layer (its only reader) becomes the recurrent layer reading the
    token ids, with ``token_kernel`` = table @ kernel: every step's input projection is then a
    row of that [V, G*U] matrix (exact), looked up per token in int8 too (the embedded vectors
    are never rounded to int8). Only for ids that int8 holds exactly (a model input, at most
    MAX_VOCAB ids); otherwise the Embedding stays, and quantize() says why it cannot run."""
    from .ops.embedding import _vocab_too_large
    g = _copy(graph)
    prods = g.producers()
    for c in list(g.nodes):
        if c.op != "rnn" or c.attrs.get("token_input"):
            continue
        p = prods.get(c.inputs[0])
        if p is None or p.op != "embedding" or _sole_consumer(g, c.inputs[0]) is not c \
                or p.inputs[0] not in g.inputs or _vocab_too_large(p):
            continue
        table = p.weights["table"].astype(np.float64)
        c.weights["token_kernel"] = (table @ c.weights.pop("kernel").astype(np.float64)).astype(np.float32)
        c.attrs["token_input"] = True
        c.attrs["folded"] = [p.layer] + c.attrs.get("folded", [])
        c.inputs[0] = p.inputs[0]
        g.nodes.remove(p)
        prods = g.producers()
    return g


def optimize(graph):
    """All passes, in the order that lets each enable the next."""
    g = fold_embedding_into_rnn(fold_padding(fold_batchnorm(remove_identities(graph))))
    return clamp_before_saturating_activations(fuse_activations(fold_affine_into_next_dense(g)))
