"""The float reference executor: runs a Graph in NumPy float64 (cast to float32 at the end).
It is what ``FloatModel.predict`` returns and what calibration observes."""
import numpy as np

from .ops import op_for


def last_uses(graph):
    last = {}
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            last[t] = i
    return last


def run(graph, xs, observe=None):
    """Run ``graph`` on a list of input arrays (with batch). ``observe(tensor, array)`` sees every
    tensor as it is produced. Returns the list of output arrays (float64)."""
    vals = {}
    for t, x in zip(graph.inputs, xs):
        vals[t] = np.asarray(x, np.float64)
        if observe:
            observe(t, vals[t])
    keep = set(graph.outputs)
    last = last_uses(graph)
    for i, n in enumerate(graph.nodes):
        op = op_for(n)
        ins = [vals[t] for t in n.inputs]
        if observe and hasattr(op, "run_float_observed"):     # shows values inside the op too
            outs = op.run_float_observed(n, ins, observe)
        else:
            outs = op.run_float(n, ins)
        for t, v in zip(n.outputs, outs):
            vals[t] = v
            if observe:
                observe(t, v)
        for t in n.inputs:                 # free what nothing later reads
            if last.get(t) == i and t not in keep:
                vals.pop(t, None)
    return [vals[t] for t in graph.outputs]
