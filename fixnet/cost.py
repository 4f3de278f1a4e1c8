"""Arithmetic cost of a float graph: multiply-accumulates (MACs) per sample.

Counted as benchmarks and papers count them: for every dense, conv2d and depthwise_conv2d
node, one MAC per (output element, kernel tap) pair, padded taps included (the kernels compute
them too); for a recurrent node (SimpleRNN, GRU, LSTM), its input and recurrent kernels once per
time step. Per-element ops (bias, scale and shift, activations, pooling, merges) are not
counted. Conv1D and the halves of SeparableConv1D/2D are conv2d / depthwise_conv2d nodes
(1-D as H = 1); a Conv2DTranspose is a zero-insert node and a conv2d node, counted as that conv
does it (over the zero-inserted input).
"""
import math

from . import layouts

MAC_OPS = ("dense", "conv2d", "depthwise_conv2d", "rnn")


def node_macs(node, out_shape, graph=None):
    """MACs per sample of one node whose first output has shape ``out_shape`` (no batch
    dimension); 0 for ops that are not in MAC_OPS. A recurrent ("rnn") node needs ``graph``
    for its input's length: per time step, its input and recurrent kernels (all gates) once
    each; a time dimension of any length (None) counts one step."""
    outputs = math.prod(1 if d is None else int(d) for d in out_shape)   # None: per time step
    if node.op in layouts.KERNEL_OPS:       # one multiply-add per output and tap (fixnet.layouts)
        return outputs * layouts.taps(node.op, node.weights["kernel"])
    if node.op == "rnn":
        if graph is None:
            return 0
        steps = graph.shapes[node.inputs[0]][0]
        # (a folded Embedding's token_kernel is a lookup: no input product)
        per_step = int(node.weights["kernel"].size if "kernel" in node.weights else 0) \
            + int(node.weights["recurrent_kernel"].size)
        return (1 if steps is None else int(steps)) * per_step
    return 0


def layer_macs(graph, input_shapes=None):
    """[(node name, op, MACs per sample)] for the nodes that multiply-accumulate, in order.
    ``input_shapes``: the shapes of one run (for inputs of any length), else the graph's."""
    if input_shapes is not None:
        import copy
        graph = copy.copy(graph)
        graph.shapes = graph.shapes_for(input_shapes)
    out = []
    for n in graph.nodes:
        if n.op in MAC_OPS:
            out.append((n.name, n.op, node_macs(n, graph.shapes[n.outputs[0]], graph)))
    return out


def macs(graph, input_shapes=None):
    """Total multiply-accumulates per sample of a float graph (shapes inferred; a dimension
    of any length counts 1 step unless ``input_shapes`` gives a run's shapes)."""
    return sum(m for _, _, m in layer_macs(graph, input_shapes))


def step_macs(step, out_shape, in_shape=None):
    """MACs per sample of one int8 runtime step (a QuantizedModel's, e.g. read from a .fxn
    file, which has no float graph) whose first output has shape ``out_shape`` (and first
    input ``in_shape``: a recurrent step's sequence); counted as node_macs counts them.
    The weights' layouts are fixnet.layouts's; a recurrent step counts w_q [G * U, F] and
    r_q [G * U, U] once per time step. A global average pooling (a depthwise kernel's step
    with fixed weights) counts none, as node_macs counts pooling."""
    outputs = math.prod(1 if d is None else int(d) for d in out_shape)   # None: per time step
    w = getattr(step, "w_q", None)
    if w is None or step.op not in MAC_OPS:
        return 0
    if step.op == "rnn":
        steps = 1 if not in_shape or in_shape[0] is None else int(in_shape[0])
        return steps * (int(w.size) + int(step.r_q.size))
    return outputs * layouts.step_taps(step.op, w)


def model_macs(qm, lengths=()):
    """Total multiply-accumulates per sample of a QuantizedModel (at ``lengths`` for inputs
    of any length, qm.lengths_of; without them such a dimension counts 1 step)."""
    shapes = qm.shapes_for(lengths)
    return sum(step_macs(s, shapes[s.outputs[0]], shapes[s.inputs[0]] if s.inputs else None)
               for s in qm.steps)
