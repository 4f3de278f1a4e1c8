"""embedding: y[..., :] = table[ids[...]]. Keras Embedding: integer token ids -> rows of an
[V, D] table (weights: table). Ids are cast to integers as Keras casts them (toward zero);
an id outside [0, V) is an InputError naming the layer.

int8 (not implemented yet: quantize() refuses the graph): an int8 row lookup.
"""
import numpy as np

from ..errors import InputError, UnsupportedLayerError
from . import Op, register


@register
class Embedding(Op):
    name = "embedding"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        table = node.weights["table"]
        if table.ndim != 2:
            raise UnsupportedLayerError(f"{node.describe()}: embedding table of shape {table.shape}")
        return [tuple(s) + (table.shape[1],)]

    def run_float(self, node, inputs):
        table = node.weights["table"]
        x = np.asarray(inputs[0], np.float64)
        if not np.all(np.isfinite(x)):
            raise InputError(f"{node.describe()}: token ids hold NaN or infinity")
        ids = np.trunc(x).astype(np.int64)
        bad = (ids < 0) | (ids >= table.shape[0])
        if bad.any():
            raise InputError(f"{node.describe()}: token id {int(ids[bad].flat[0])} is outside "
                             f"[0, {table.shape[0]}) (the layer's input_dim)")
        return [table.astype(np.float64)[ids]]

    def int8_unsupported(self, node):
        return "int8 execution of Embedding is not implemented yet (FloatModel.predict runs it)"
