"""The float IR: a list of nodes in execution order over named tensors.

Shapes never include the batch dimension. Every node remembers the Keras layer (name and
class) it came from, so errors and reports can name it.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np


@dataclass
class Node:
    name: str                      # unique node name (the Keras layer name, plus a suffix if split)
    op: str                        # IR op, a key of fixnet.ops.OPS
    inputs: List[str]              # tensor names
    outputs: List[str]             # tensor names
    attrs: Dict = field(default_factory=dict)
    weights: Dict[str, np.ndarray] = field(default_factory=dict)
    layer: str = ""                # Keras layer name, for messages
    keras_class: str = ""          # Keras class name, for messages

    def describe(self):
        if self.keras_class:
            return f"layer '{self.layer}' ({self.keras_class})"
        return f"node '{self.name}' ({self.op})"


@dataclass
class Graph:
    inputs: List[str]
    outputs: List[str]
    nodes: List[Node]
    shapes: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    name: str = "model"
    source: str = ""               # file the graph was read from

    def producers(self):
        return {t: n for n in self.nodes for t in n.outputs}

    def consumers(self):
        users = {}
        for n in self.nodes:
            for t in n.inputs:
                users.setdefault(t, []).append(n)
        return users

    def infer_shapes(self, input_shapes):
        """Fill ``shapes`` for every tensor from the input shapes (no batch dimension)."""
        self.shapes = self.shapes_for(input_shapes)
        return self.shapes

    def shapes_for(self, input_shapes):
        """{tensor: shape} for these input shapes (no batch dimension), ``shapes`` unchanged.
        A dimension may be None (a sequence of any length): ``shapes`` holds it so for a
        model whose input is declared so; shapes_for with the lengths of actual inputs gives
        the shapes of one run."""
        from .ops import op_for

        shapes = {t: tuple(s) for t, s in zip(self.inputs, input_shapes)}
        for n in self.nodes:
            outs = op_for(n).infer_shapes(n, [shapes[t] for t in n.inputs])
            for t, s in zip(n.outputs, outs):
                shapes[t] = tuple(None if d is None else int(d) for d in s)
        return shapes

    def summary(self):
        rows = []
        for n in self.nodes:
            shape = self.shapes.get(n.outputs[0]) if n.outputs else None
            rows.append((n.name, n.op, shape, sum(int(w.size) for w in n.weights.values())))
        return rows
