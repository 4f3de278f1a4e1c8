"""A .fxn file's content as the parts of a QuantizedModel (ModelParts), every tensor and step
checked; and the check that the model built from them runs (check_model)."""
import dataclasses
import math
import os

import numpy as np

from ..errors import ModelFileError
from ..lengths import length_symbols
from ..limits import MemoryBudget, max_memory_bytes
from ..errors import ConfigError
from ..quant.config import QuantConfig
from ..quant.qparams import ACTIVATION_BITS, INT8_MAX, INT8_MIN, QParams
from ..step import Step, TensorSpec
from .codec import Decoder, step_registry
from .container import (HEADER_SIZE, MAX_TENSOR_ELEMENTS, bad_file, is_tensor_shape,
                        parse_container, read_container, short_repr)

# Cheap semantic checks on well-known step attributes: int8 weights never use -128 (DESIGN).
WEIGHT_ATTRS = ("w_q", "alpha_q")


INPUT_ROUNDINGS = ("fixnet", "tflite")


@dataclasses.dataclass
class ModelParts:
    """What a .fxn file holds, read and checked: a QuantizedModel's constructor arguments, and
    whether the saved model had an int32 overflow proof (check_model rebuilds it)."""
    source: str
    name: str
    steps: list
    tensors: dict
    inputs: list
    outputs: list
    overflow_proven: bool = False
    config: object = None       # the QuantConfig the model was made with (None: not recorded)
    input_rounding: str = "fixnet"  # QuantizedModel.input_rounding ("tflite": a .tflite's)


def read_model_parts(path, max_memory=None):
    """Read a .fxn file into the parts of the QuantizedModel that predicts bit for bit what the
    saved one did (fixnet.runtime.load_fxn builds and checks it).

    Raises ModelFileError, naming the file, if it is not an .fxn file, is truncated or damaged
    (checksum), or its content does not hold together; FxnVersionError (a ModelFileError) if a
    newer fixnet wrote it; ModelFileError if its arrays and tensors (at batch 1) would need more
    than ``max_memory`` bytes (see fixnet.limits; checked before they are read). Uses NumPy
    only: no TensorFlow, no h5py, no pickle.
    """
    path = os.fspath(path)
    budget = MemoryBudget(max_memory_bytes(max_memory), path)
    manifest, arrays = read_container(path, with_arrays=True, budget=budget)
    return _model_parts(path, manifest, arrays, budget)


def model_parts_from_bytes(data, name="<fxn bytes>", max_memory=None):
    """The parts of the model whose .fxn file content is ``data`` (bytes, as ``encode_model``
    makes them; checked exactly as a file is). ``name`` names the data in errors."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ModelFileError(f"{name}: .fxn content must be bytes, not {type(data).__name__}")
    data = bytes(data)
    budget = MemoryBudget(max_memory_bytes(max_memory), name)
    budget.need(max(len(data) - HEADER_SIZE, 0), "the model's content")
    budget.used = 0
    manifest, arrays = parse_container(name, data, with_arrays=True, budget=budget)
    return _model_parts(name, manifest, arrays, budget)


def _model_parts(path, m, arrays, budget=None):
    dec = Decoder(path, arrays)
    tensors = _tensor_specs(path, m, dec, budget)
    _check_io(path, m, tensors)
    registry = step_registry()
    defined = set(m["inputs"])
    steps = [_read_step(path, i, s, registry, dec, tensors, defined)
             for i, s in enumerate(m["steps"])]
    for t in m["outputs"]:
        if t not in defined:
            raise bad_file(path, f"model output '{t}' is written by no step")
    unused = set(arrays) - dec.used
    if unused:
        raise bad_file(path, f"array(s) {sorted(unused)[:5]} are referred to by no step")

    _check_lengths(path, tensors, m["inputs"])
    rounding = m.get("input_rounding", "fixnet")
    if rounding not in INPUT_ROUNDINGS:
        raise bad_file(path, f"input_rounding {rounding!r} is not one of {INPUT_ROUNDINGS}")
    return ModelParts(path, m["name"], steps, tensors, m["inputs"], m["outputs"],
                      m.get("overflow_proven") is True, _config(path, m.get("config")), rounding)


def _config(path, record):
    """The QuantConfig the manifest records (None for files written before configs)."""
    if record is None:
        return None
    try:
        return QuantConfig.from_dict(record)
    except ConfigError as e:
        raise bad_file(path, f"its quantization config is not valid ({e})") from None
    except (TypeError, ValueError) as e:
        raise bad_file(path, f"its quantization config is not valid ({type(e).__name__}: {e})") from None



def _tensor_specs(path, m, dec, budget):
    """{name: TensorSpec} of the manifest's tensors, each shape, size and qparams checked."""
    tensors = {}
    for i, t in enumerate(m["tensors"]):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise bad_file(path, f"tensor {i} has no name")
        name = t["name"]
        if name in tensors:
            raise bad_file(path, f"tensor '{name}' is listed twice")
        shape = t.get("shape")
        # a dimension of any length (null) counts as 1, as fixnet/limits.py does for the float
        # graph: the limits are per step of the sequence
        elements = math.prod(1 if d is None else d for d in shape) \
            if is_tensor_shape(shape) else None
        if elements is None or elements > MAX_TENSOR_ELEMENTS or 0 in shape:
            raise bad_file(path, f"tensor '{name}' has shape {short_repr(shape)}")
        q = t.get("qparams")
        if not isinstance(q, dict):
            raise bad_file(path, f"tensor '{name}' has no quantization parameters")
        fields = {k: dec.value(v, f"tensor '{name}'") for k, v in q.items()}
        expected = {f.name for f in dataclasses.fields(QParams)}
        # files written before int16 hold no "bits": int8
        if set(fields) not in (expected, expected - {"bits"}):
            raise bad_file(path, f"tensor '{name}': quantization parameters {sorted(fields)}, "
                             f"expected {sorted(expected)}")
        bits = fields.get("bits", 8)
        if isinstance(bits, bool) or bits not in ACTIVATION_BITS:
            raise bad_file(path, f"tensor '{name}': bits {bits!r} is not 8 or 16")
        if budget is not None:
            budget.need(elements * bits // 8, f"tensor '{name}' (int{bits}, at batch 1)")
        scale, zp = fields.get("scale"), fields.get("zero_point")
        if not (isinstance(scale, (float, np.floating)) and math.isfinite(scale) and scale > 0):
            raise bad_file(path, f"tensor '{name}': scale {scale!r} is not a positive finite float")
        if not (isinstance(zp, (int, np.integer)) and not isinstance(zp, bool)
                and INT8_MIN <= zp <= INT8_MAX):
            raise bad_file(path, f"tensor '{name}': zero point {zp!r} is not an int8")
        if bits == 16 and zp != 0:
            raise bad_file(path, f"tensor '{name}': an int16 tensor's zero point is 0, not {zp!r}")
        length_of = t.get("length_of")
        if None in shape or length_of is not None:
            if not (isinstance(length_of, list) and len(length_of) == len(shape)
                    and all((k is None) != (d is None) for k, d in zip(length_of, shape))
                    and all(k is None or (isinstance(k, int) and not isinstance(k, bool)
                                          and 0 <= k < 8 * len(m["inputs"]))
                            for k in length_of)):
                raise bad_file(path, f"tensor '{name}': length_of {short_repr(length_of)} does not name "
                                 f"a length for each null of its shape {short_repr(shape)}")
            length_of = tuple(length_of)
        tensors[name] = TensorSpec(tuple(shape), QParams(**fields), length_of)
    return tensors


def _check_io(path, m, tensors):
    """The model's inputs and outputs name described tensors, each once."""
    for key in ("inputs", "outputs"):
        names = m[key]
        if not names or not all(isinstance(n, str) and n in tensors for n in names):
            raise bad_file(path, f"model {key} {short_repr(names)} name tensors the file does not describe")
        if len(set(names)) != len(names):
            raise bad_file(path, f"model {key} {short_repr(names)} repeat a tensor")


def _read_step(path, i, s, registry, dec, tensors, defined):
    """Step i of the manifest rebuilt from its class name (a fixnet step class only) and state,
    its tensors checked against those ``defined`` by earlier steps (it adds its outputs)."""
    where = f"step {i}"
    if not isinstance(s, dict) or not isinstance(s.get("class"), str) \
            or not isinstance(s.get("state"), dict):
        raise bad_file(path, f"{where} has no class or state")
    cls_name = s["class"]
    cls = registry.get(cls_name)
    if cls is None:
        raise bad_file(path, f"{where} is of step class {short_repr(cls_name)}, which is not a fixnet "
                         "step (unknown or from a newer fixnet); nothing was run")
    state = {}
    for k, v in s["state"].items():
        if not k.isidentifier() or k.startswith("__"):
            raise bad_file(path, f"{where} ({cls_name}): attribute name {short_repr(k)}")
        state[k] = dec.value(v, f"{where} ({cls_name}) attribute '{k}'")
    name = state.get("name")
    where = f"step {i} '{name}' ({cls_name})"
    for k in ("name", "layer"):
        if not isinstance(state.get(k), str):
            raise bad_file(path, f"{where}: '{k}' is missing or not a string")
    for k in ("inputs", "outputs"):
        v = state.get(k)
        if not isinstance(v, list) or not v or not all(isinstance(t, str) for t in v):
            raise bad_file(path, f"{where}: '{k}' is missing or not a list of tensor names")
    for t in state["inputs"]:
        if t not in tensors:
            raise bad_file(path, f"{where} reads tensor '{t}', which the file does not describe")
        if t not in defined:
            raise bad_file(path, f"{where} reads tensor '{t}' before any step writes it")
    for t in state["outputs"]:
        if t not in tensors:
            raise bad_file(path, f"{where} writes tensor '{t}', which the file does not describe")
        if t in defined:
            raise bad_file(path, f"{where} writes tensor '{t}', which is already written")
        defined.add(t)
    for k in WEIGHT_ATTRS:
        w = state.get(k)
        if isinstance(w, np.ndarray):
            if w.dtype != np.int8:
                raise bad_file(path, f"{where}: weights '{k}' are {w.dtype}, not int8")
            if w.size and int(w.min()) < -127:
                raise bad_file(path, f"{where}: weights '{k}' hold -128 (the numeric contract "
                                 "keeps int8 weights in [-127, 127])")
    bits = state.get("bits", 8)
    if isinstance(bits, bool) or bits not in ACTIVATION_BITS:
        raise bad_file(path, f"{where}: bits {short_repr(bits)} is not 8 or 16")
    # one activation type per step: its outputs (and, but for a convert, its inputs) are of it
    typed = state["outputs"] + ([] if cls_name == "RescaleStep" else state["inputs"])
    for t in typed:
        if tensors[t].qparams.bits != bits:
            raise bad_file(path, f"{where} runs int{bits} but tensor '{t}' is "
                                 f"{tensors[t].qparams.type_name}")
    step = cls.__new__(cls)
    setstate = getattr(cls, "__setstate__", None)
    if setstate is not None and setstate is not getattr(object, "__setstate__", None):
        step.__setstate__(state)
    else:
        step.__dict__.update(state)
    if not isinstance(step, Step):
        raise bad_file(path, f"{where} is not a step")
    return step


def check_model(parts, qm):
    """The model ``qm`` built from ``parts`` (fixnet.runtime.load_fxn) runs: every step binds
    to its buffers and runs once (check_plan), and a model saved with an overflow proof has
    one again. ModelFileError naming the file otherwise."""
    path = parts.source
    check_plan(path, qm)
    if parts.overflow_proven:
        try:
            proven = qm.overflow_report().proven
        except Exception as e:
            raise bad_file(path, f"the overflow proof cannot be rebuilt ({type(e).__name__}: {e})")
        if not proven:
            raise bad_file(path, "the saved model had an int32 overflow proof; the loaded one does not")


def _check_lengths(path, tensors, inputs):
    """The length symbols are the inputs' null dimensions, in order: each input's null
    dimension follows its own symbol, and every other tensor's a symbol that exists."""
    symbols = length_symbols(inputs, {t: tensors[t].shape for t in inputs})
    for k, (t, d) in enumerate(symbols):
        if tensors[t].length_of[d] != k:
            raise bad_file(path, f"input '{t}': dimension {d + 1} of any length follows length "
                             f"{tensors[t].length_of[d]}, not its own ({k})")
    for name, spec in tensors.items():
        if spec.length_of is not None and any(k is not None and k >= len(symbols)
                                              for k in spec.length_of):
            raise bad_file(path, f"tensor '{name}': length_of {list(spec.length_of)} names a length "
                             f"the inputs do not have ({len(symbols)} of any length)")


def check_plan(path, qm):
    """Bind every step to buffers for a batch of one (at length 1 for the dimensions of any
    length), run it on zero-point inputs and check its oracle gives the same outputs, naming
    the step whose arrays or shapes do not fit (kernel calls check dtypes and shapes, the
    oracle the shapes it computes). Nothing is kept: the model plans its own buffers at the
    first predict."""
    lengths = (1,) * len(qm.length_symbols)
    shapes = qm.shapes_for(lengths)
    try:
        steps = qm.steps_for(lengths)
    except Exception as e:     # a step between tensors of two different lengths
        raise bad_file(path, str(e)) from None
    bufs = {}
    for t in qm.inputs:
        qp = qm.tensors[t].qparams
        bufs[t] = np.full((1,) + shapes[t], qp.zero_point, qp.dtype)
    for i, s in enumerate(steps):
        try:
            if s.alias:
                src = bufs[s.inputs[0]]
                bufs[s.outputs[0]] = src.reshape((1,) + shapes[s.outputs[0]])
                continue
            for t in s.outputs:
                bufs[t] = np.zeros((1,) + shapes[t], qm.tensors[t].qparams.dtype)
            s.bind(bufs)()
            expected = s.oracle([bufs[t] for t in s.inputs])
        except MemoryError:
            raise
        except Exception as e:   # a kernel's own check, or NumPy refusing a shape: a bad file
            raise bad_file(path, f"step {i} '{s.name}' ({type(s).__name__}) does not fit its tensors "
                             f"({type(e).__name__}: {e})") from None
        # the kernel and the oracle agree on this input, as they do on every input of a model
        # fixnet wrote (the oracle's layout may differ, as predict_oracle reshapes it): a file
        # whose tensor shapes or arrays contradict its steps does not
        for t, o in zip(s.outputs, expected, strict=True):
            o = np.asarray(o)
            if o.size != bufs[t].size or not np.array_equal(o.reshape(bufs[t].shape), bufs[t]):
                raise bad_file(path, f"step {i} '{s.name}' ({type(s).__name__}): its kernel and "
                                     f"its oracle disagree on tensor '{t}' (shape "
                                     f"{bufs[t].shape[1:]} declared, the oracle gives "
                                     f"{o.shape[1:]}): the tensors do not fit the step")
