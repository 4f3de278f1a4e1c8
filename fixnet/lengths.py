"""Inputs of any length (a None dimension) in an int8 model: which dimension of which tensor
follows which input's length.

Every None dimension of a model input is its own *length symbol*, numbered in input order
then dimension order (symbol k: input ``symbols[k][0]``, dimension ``symbols[k][1]``, without
batch). An int8 model can run at any length when every tensor dimension that changes with the
lengths *is* one of them: then one run's shapes are the declared shapes with each None replaced
by its symbol's length, and every step's integers are the same at every length. A dimension
that is another function of a length (a strided or "valid" convolution, a Flatten of the time
axis, an UpSampling) is refused, naming the layer.

``length_of`` (per tensor, one entry per dimension): None for a fixed dimension, else the
symbol index k. QuantizedModel keeps it in ``TensorSpec.length_of``.
"""
from .errors import UnsupportedLayerError

# Where quantization needs one length for a dimension of any length (per-element data-free
# statistics, the mean shift bias correction removes, which counts padded edges): this many
# steps. One quantized model then serves every length.
ANY_LENGTH = 32

# Lengths the shape rule is tried at (three runs, a different prime per symbol and run, so
# that a dimension equal to one symbol's length in every run is that length)
_TRIAL_RUNS = 3


def length_symbols(inputs, shapes):
    """[(input name, dimension)] of every None dimension of the inputs, in order."""
    return [(t, d) for t in inputs for d, size in enumerate(shapes[t]) if size is None]


def _primes(count, start=7):
    found, n = [], start
    while len(found) < count:
        if all(n % p for p in range(2, int(n ** 0.5) + 1)):
            found.append(n)
        n += 1
    return found


def tensor_lengths(graph):
    """{tensor: (shape, length_of)} of ``graph`` (a float Graph whose inputs may have None
    dimensions): ``shape`` with None where the dimension follows a symbol, ``length_of`` the
    symbol per dimension (see the module docstring). Raises UnsupportedLayerError naming the
    first layer whose output has a dimension that changes with a length without being it."""
    symbols = length_symbols(graph.inputs, graph.shapes)
    if not symbols:
        return {t: (tuple(s), (None,) * len(s)) for t, s in graph.shapes.items()}
    primes = _primes(len(symbols) * _TRIAL_RUNS)
    trials = []                           # per run: the lengths per symbol
    for r in range(_TRIAL_RUNS):
        trials.append([primes[k * _TRIAL_RUNS + r] for k in range(len(symbols))])
    runs = []
    for lengths in trials:
        in_shapes = []
        for t in graph.inputs:
            shape = list(graph.shapes[t])
            for k, (name, d) in enumerate(symbols):
                if name == t:
                    shape[d] = lengths[k]
            in_shapes.append(tuple(shape))
        runs.append(graph.shapes_for(in_shapes))
    by_values = {tuple(lengths[k] for lengths in trials): k for k in range(len(symbols))}
    result = {}
    for t in graph.inputs:
        result[t] = (tuple(graph.shapes[t]),
                     tuple(next((k for k, s in enumerate(symbols) if s == (t, d)), None)
                           for d in range(len(graph.shapes[t]))))
    for n in graph.nodes:
        for t in n.outputs:
            shape, follows = [], []
            for d in range(len(runs[0][t])):
                sizes = tuple(run[t][d] for run in runs)
                if len(set(sizes)) == 1:
                    shape.append(sizes[0])
                    follows.append(None)
                elif sizes in by_values:
                    shape.append(None)
                    follows.append(by_values[sizes])
                else:
                    why = (f"output dimension {d + 1} of '{t}' is {sizes[0]}, {sizes[1]}, "
                           f"{sizes[2]} for input lengths {', '.join(str(tr) for tr in trials)}: "
                           "int8 runs at any length only where every dimension is either fixed "
                           "or an input's length (a stride, 'valid' padding, a flatten or an "
                           "upsampling of that axis needs a fixed input length)")
                    layer = n.layer or n.name
                    raise UnsupportedLayerError(
                        f"{graph.source or graph.name}: cannot quantize for inputs of any length: "
                        f"layer '{layer}' ({n.keras_class or n.op}): {why}",
                        [(layer, n.keras_class or n.op, why)])
            result[t] = (tuple(shape), tuple(follows))
    return result


def resolve_shape(shape, length_of, lengths):
    """``shape`` with each None dimension replaced by the length of its symbol."""
    return tuple(size if k is None else lengths[k] for size, k in zip(shape, length_of))


def substitute(value, length):
    """``value`` (a step attribute) with every None inside tuples and lists replaced by
    ``length``: the shapes a step baked at quantize time, resolved for one run."""
    if isinstance(value, tuple):
        return tuple(length if v is None else substitute(v, length) for v in value)
    if isinstance(value, list):
        return [length if v is None else substitute(v, length) for v in value]
    return value


def at_length(graph, length=ANY_LENGTH):
    """``graph`` (a float Graph) if its inputs have no dimension of any length, else a
    shallow copy whose ``shapes`` are those of a run with every such dimension at ``length``."""
    symbols = length_symbols(graph.inputs, graph.shapes)
    if not symbols:
        return graph
    import copy
    run = copy.copy(graph)
    run.shapes = graph.shapes_for([tuple(length if d is None else d for d in graph.shapes[t])
                                   for t in graph.inputs])
    return run
