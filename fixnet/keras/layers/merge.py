"""Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate: layers of several inputs."""
import numpy as np

from .base import (Unsupported, config_int, keras_layer)



MERGES = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply", "Average": "average",
          "Maximum": "maximum", "Minimum": "minimum"}


def broadcast_inputs(layer, names, shapes, what):
    """Input tensor names of an elementwise op on tensors of equal shape: an input of shape
    (1, 1, C) beside (H, W, C) inputs (a squeeze-and-excitation scale, GlobalAveragePooling2D
    with keepdims) or (1, C) beside (L, C) is first repeated to the full shape by a nearest
    up-sampling node, which copies int8 codes exactly. Other shape mismatches are refused."""
    full = max(shapes, key=lambda s: int(np.prod(s)) if s else 1)
    out = []
    for i, (t, s) in enumerate(zip(names, shapes)):
        s = tuple(s)
        if s == tuple(full):
            out.append(t)
            continue
        rank = len(full) - 1
        if len(s) != len(full) or rank not in (1, 2) or s[-1] != full[-1] or any(d != 1 for d in s[:-1]):
            raise Unsupported(f"{what} of tensors of shapes {', '.join(str(tuple(x)) for x in shapes)}; "
                              "fixnet broadcasts only (1, 1, C) against (H, W, C) and (1, C) against (L, C)")
        size = (1, full[0]) if rank == 1 else (full[0], full[1])
        b = layer.tensor(f"broadcast{i}")
        layer.emit("upsample", [t], [b], {"rank": rank, "size": size, "interpolation": "nearest"},
                   suffix=f"broadcast{i}")
        out.append(b)
    return out


@keras_layer(*MERGES)
def merge(layer):
    kind = MERGES[layer.class_name]
    ins = layer.inputs
    if len(ins) < 2 or (kind == "subtract" and len(ins) != 2):
        raise Unsupported(f"{layer.class_name} of {len(ins)} inputs")
    if len({tuple(s) for s in layer.input_shapes}) > 1:
        ins = broadcast_inputs(layer, ins, layer.input_shapes, layer.class_name)
    if kind == "average" and len(ins) > 2:
        # sum pairwise, then one scale by 1/n
        acc = ins[0]
        for i, t in enumerate(ins[1:], 1):
            out = layer.tensor(f"sum{i}")
            layer.emit("binary", [acc, t], [out], {"kind": "add"}, suffix=f"add{i}")
            acc = out
        c = layer.input_shapes[0][-1]
        layer.emit("affine", [acc], layer.outputs, {"clamp": None},
                   {"scale": np.full(c, 1.0 / len(ins)), "offset": np.zeros(c)}, suffix="mean")
        return
    acc = ins[0]
    for i, t in enumerate(ins[1:], 1):
        last = i == len(ins) - 1
        out = layer.outputs[0] if last else layer.tensor(f"partial{i}")
        layer.emit("binary", [acc, t], [out], {"kind": kind}, suffix="" if last else f"{kind}{i}")
        acc = out


@keras_layer("Concatenate")
def concatenate(layer):
    if len(layer.inputs) < 2:
        raise Unsupported(f"Concatenate of {len(layer.inputs)} input")
    layer.emit("concat", layer.inputs, layer.outputs,
               {"axis": config_int(layer.config.get("axis", -1), "axis", lo=-64, hi=64)})
