"""The public entry points: ``load`` and the float model it returns."""
import os

import numpy as np

from . import reference
from .errors import FixnetError, InputDtypeError, InputShapeError
from .runtime import check_input_array


def load(path, weights=None):
    """Read a Keras model into a FloatModel. Never imports TensorFlow, never runs code stored
    in a file.

    path: a full-model HDF5 file (``model.save("x.h5")``, any Keras from 2.0 to 3), a Keras 3
        ``.keras`` archive, or an architecture JSON (``model.to_json()``) with ``weights``.
    weights: with a JSON architecture, the weights file (``save_weights``: ``.h5`` or
        ``.weights.h5``).
    """
    from .keras_h5 import load_keras_h5, load_keras_json
    if weights is not None:
        return FloatModel(load_keras_json(path, weights))
    if os.fspath(path).lower().endswith(".json"):
        raise FixnetError(f"{path}: an architecture JSON needs its weights: "
                          "fixnet.load(path, weights='model.weights.h5')")
    return FloatModel(load_keras_h5(path))


class FloatModel:
    """A Keras model as a float graph: ``predict`` runs the NumPy float reference,
    ``quantize`` makes the int8 QuantizedModel."""

    def __init__(self, graph):
        self.graph = graph

    @property
    def name(self):
        return self.graph.name

    @property
    def input_shapes(self):
        return [self.graph.shapes[t] for t in self.graph.inputs]

    @property
    def output_shapes(self):
        return [self.graph.shapes[t] for t in self.graph.outputs]

    def __repr__(self):
        return (f"<FloatModel '{self.name}' from {os.path.basename(self.graph.source)}: "
                f"{len(self.graph.nodes)} nodes, inputs {self.input_shapes}, "
                f"outputs {self.output_shapes}>")

    def predict(self, x, batch_size=1024):
        """Float32 outputs of the model, as Keras computes them (within float rounding)."""
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self.graph.inputs):
            raise InputShapeError(f"model takes {len(self.graph.inputs)} input(s), got {len(xs)}")
        checked = []
        for t, xi in zip(self.graph.inputs, xs):
            xi = np.asarray(xi) if not isinstance(xi, np.ndarray) else xi
            if xi.dtype.kind in "iu":
                xi = xi.astype(np.float32)
            checked.append(check_input_array(xi, t, self.graph.shapes[t], allow_int8=False))
        n = checked[0].shape[0]
        parts = []
        for i in range(0, max(n, 1), batch_size):
            outs = reference.run(self.graph, [c[i:i + batch_size] for c in checked])
            parts.append([o.astype(np.float32) for o in outs])
        res = [np.concatenate([p[k] for p in parts]) for k in range(len(self.graph.outputs))]
        return res[0] if len(res) == 1 else res

    def quantize(self, calibration=None, per_channel=True, on_overflow_risk="error",
                 batch_size=128):
        """Convert to int8 (see fixnet.quant.quantizer.quantize_graph). Returns a QuantizedModel."""
        from .quant.quantizer import quantize_graph
        return quantize_graph(self.graph, calibration, per_channel=per_channel,
                              on_overflow_risk=on_overflow_risk, batch_size=batch_size)
