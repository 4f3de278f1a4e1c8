"""Structured damage to a .tflite file: each ``e_<name>(rng, data, tables)`` edits the bytes
``data`` (a bytearray of an undamaged file) in place where one field of the FlatBuffer lies
(an offset, a buffer index, a shape, a type, a vector length, an operator's tensor index...)
and returns what it did. ``tables(data)`` gives the undamaged file's tables (the generated
classes of the ``tflite`` package, unchecked: the file is good). Used by the reader's own
campaign (tests/test_tflite_reader.py) and by the whole-path campaign (tests/fuzzcases.py).
"""
import struct

import tflite


def _field(tab, slot):
    """The byte position of field ``slot`` (0-based) of a plain generated table."""
    off = tab.Offset(4 + 2 * slot)
    return tab.Pos + off if off else None


def _vector(tab, slot):
    """(byte position of the length word, length) of vector field ``slot``."""
    off = tab.Offset(4 + 2 * slot)
    if not off:
        return None, 0
    start = tab.Vector(off)
    return start - 4, tab.VectorLen(off)


def tables(data):
    """The undamaged file's tables (plain, unchecked: the file is good)."""
    m = tflite.Model.GetRootAs(data, 0)
    g = m.Subgraphs(0)
    tensors = [g.Tensors(i) for i in range(g.TensorsLength())]
    return m, g, tensors, [g.Operators(i) for i in range(g.OperatorsLength())]


def _pick_tensor(rng, tensors, want=None):
    choices = [t for t in tensors if want is None or want(t)]
    return rng.choice(choices or tensors)


def e_tensor_buffer_index(rng, data, tabs):
    m, g, tensors, ops = tabs
    t = _pick_tensor(rng, tensors, lambda t: _field(t._tab, 2))
    v = rng.choice([m.BuffersLength(), m.BuffersLength() + 7, 0xFFFFFFFF])
    struct.pack_into("<I", data, _field(t._tab, 2), v)
    return f"tensor '{t.Name().decode()}' buffer index {v}"


def e_shape_dim(rng, data, tabs):
    t = _pick_tensor(rng, tabs[2], lambda t: _vector(t._tab, 0)[1])
    pos, n = _vector(t._tab, 0)
    k = rng.randrange(n)
    v = rng.choice([-1, -(1 << 31), 1 << 30, 0x7FFFFFFF, 0, 1000])
    struct.pack_into("<i", data, pos + 4 + 4 * k, v)
    return f"tensor '{t.Name().decode()}' dimension {k} set to {v}"


def e_shape_rank(rng, data, tabs):
    t = _pick_tensor(rng, tabs[2], lambda t: _vector(t._tab, 0)[1])
    pos, n = _vector(t._tab, 0)
    v = rng.choice([0, n + 1, 1000, 1 << 20, 0xFFFFFFFF])
    struct.pack_into("<I", data, pos, v)
    return f"tensor '{t.Name().decode()}' rank {n} -> {v}"


def e_tensor_type(rng, data, tabs):
    t = _pick_tensor(rng, tabs[2], lambda t: _field(t._tab, 1))
    v = rng.choice([19, 50, 100, 127, -1, -128])       # no TensorType
    struct.pack_into("<b", data, _field(t._tab, 1), v)
    return f"tensor '{t.Name().decode()}' type -> {v}"


def e_buffer_size(rng, data, tabs):
    """The length of a constant tensor's data vector (not to 0: a tensor without data is a
    run-time tensor, which nothing in the file contradicts)."""
    m, tensors = tabs[0], tabs[2]
    sized = sorted({t.Buffer() for t in tensors if m.Buffers(t.Buffer()).DataLength()})
    j = rng.choice(sized)
    pos, n = _vector(m.Buffers(j)._tab, 0)
    v = rng.choice([n - 1, n + 1, n * 2, 1 << 31, 0xFFFFFFFF])
    struct.pack_into("<I", data, pos, v & 0xFFFFFFFF)
    return f"buffer {j} length {n} -> {v}"


def e_quantization_length(rng, data, tabs):
    qs = [t.Quantization() for t in tabs[2]]
    qs = [q for q in qs if q is not None and q.ScaleLength()]
    q = rng.choice(qs)
    slot = rng.choice([2, 3])                     # scale, zero_point
    pos, n = _vector(q._tab, slot)
    v = rng.choice([n + 1, max(n - 1, 0), 0, 1 << 28])
    struct.pack_into("<I", data, pos, v)
    return f"quantization vector {slot} length {n} -> {v}"


def e_quantized_dimension(rng, data, tabs):
    qs = [t.Quantization() for t in tabs[2]]
    qs = [q for q in qs if q is not None and _field(q._tab, 6)]
    if not qs:
        return e_quantization_length(rng, data, tabs)
    q = rng.choice(qs)
    v = rng.choice([-1, 1, 3, 7, 1 << 30])
    struct.pack_into("<i", data, _field(q._tab, 6), v)
    return f"quantized_dimension -> {v}"


def e_opcode_index(rng, data, tabs):
    o = rng.choice([o for o in tabs[3] if _field(o._tab, 0)] or tabs[3])
    pos = _field(o._tab, 0)
    if pos is None:
        return e_operator_tensor_index(rng, data, tabs)
    v = rng.choice([tabs[0].OperatorCodesLength(), 255, 0xFFFFFFFF])
    struct.pack_into("<I", data, pos, v)
    return f"opcode index -> {v}"


def e_operator_tensor_index(rng, data, tabs):
    o = rng.choice(tabs[3])
    slot = rng.choice([1, 2])
    pos, n = _vector(o._tab, slot)
    k = rng.randrange(n)
    v = rng.choice([-2, -1000, len(tabs[2]), len(tabs[2]) + 100, 0x7FFFFFFF])
    struct.pack_into("<i", data, pos + 4 + 4 * k, v)
    return f"operator {'inputs' if slot == 1 else 'outputs'}[{k}] -> {v}"


def e_options_value(rng, data, tabs):
    o = rng.choice([o for o in tabs[3] if o.BuiltinOptionsType()] or tabs[3])
    pos = _field(o._tab, 3)
    if pos is None:
        return e_operator_tensor_index(rng, data, tabs)
    v = rng.choice([0, 200, 255, 127, 61])
    struct.pack_into("<B", data, pos, v)
    return f"builtin_options_type -> {v}"


def e_offset(rng, data, tabs):
    """Any offset (a table's, a vector's, a string's, a vtable's) pointed elsewhere."""
    m, g, tensors, ops = tabs
    t = rng.choice(tensors)
    candidates = [(m._tab.Pos, "<i", "the model's vtable offset"),
                  (g._tab.Pos, "<i", "the subgraph's vtable offset"),
                  (t._tab.Pos, "<i", f"tensor '{t.Name().decode()}' vtable offset")]
    for tab, slot, what in ((m._tab, 2, "subgraphs vector"), (m._tab, 4, "buffers vector"),
                            (g._tab, 0, "tensors vector"), (g._tab, 3, "operators vector"),
                            (t._tab, 3, "tensor name"), (t._tab, 4, "tensor quantization"),
                            (t._tab, 0, "tensor shape")):
        p = _field(tab, slot)
        if p is not None:
            candidates.append((p, "<I", what))
    pos, fmt, what = rng.choice(candidates)
    v = rng.choice([0, 1, 3, len(data), len(data) - 2, 0x7FFFFFFF, 0xFFFFFFFF,
                    -len(data), rng.randrange(len(data))])
    if fmt == "<I":
        v &= 0xFFFFFFFF
    else:
        v = ((v + (1 << 31)) % (1 << 32)) - (1 << 31)
    struct.pack_into(fmt, data, pos, v)
    return f"{what} at {pos} -> {v}"


def e_truncate(rng, data, tabs):
    cut = rng.choice([0, 3, 4, 7, 8, 12, 16, 64, len(data) // 3, len(data) // 2,
                      len(data) - 1, len(data) - 16, rng.randrange(len(data))])
    del data[cut:]
    return f"truncated to {cut} bytes"


def e_flip_bits(rng, data, tabs):
    offs = sorted(rng.randrange(len(data)) for _ in range(rng.choice([1, 1, 2, 4, 16])))
    for o in offs:
        data[o] ^= 1 << rng.randrange(8)
    return f"bit flips at {offs}"


def e_overwrite(rng, data, tabs):
    o = rng.randrange(len(data))
    k = rng.choice([1, 4, 8, 64])
    fill = rng.choice(["zero", "ff", "random"])
    for i in range(o, min(o + k, len(data))):
        data[i] = 0 if fill == "zero" else 0xFF if fill == "ff" else rng.randrange(256)
    return f"{k} bytes at {o} overwritten with {fill}"


EDITS = [e_truncate, e_flip_bits, e_overwrite, e_offset, e_tensor_buffer_index, e_shape_dim,
         e_shape_rank, e_tensor_type, e_buffer_size, e_quantization_length,
         e_quantized_dimension, e_opcode_index, e_operator_tensor_index, e_options_value]
