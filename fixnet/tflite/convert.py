"""An int8 .tflite model as fixnet steps: each TFLite operator becomes the fixnet step that
computes the same integers, with TFLite's own scales, zero points and weights, and its
multipliers derived as TFLite's kernels derive them (Prepare), so that the int8 outputs are
TFLite's reference kernels' (``OpResolverType.BUILTIN_REF``) bit for bit.

``convert(model)`` takes what fixnet.tflite.read_tflite read and returns the parts of a
QuantizedModel (fixnet.api.load builds it); anything it cannot run is refused with one
UnsupportedTfliteError that lists every operator at fault and why.

What maps where (TFLite op -> fixnet step):

* FULLY_CONNECTED -> dense (DenseStep); CONV_2D -> conv2d (ConvStep); DEPTHWISE_CONV_2D ->
  depthwise_conv2d (DepthwiseStep). The input zero point is folded into the bias
  (bias - x_zp * sum(w)), which is the same integer sum as TFLite's sum of (x - x_zp) * w;
  padded taps read the zero point, as TFLite's skip them. The real multiplier is
  double(input_scale) * double(filter_scale) / double(output_scale), split by the same rule
  as TFLite's QuantizeMultiplier, and applied with the same two roundings.
* MAX_POOL_2D, AVERAGE_POOL_2D -> max/avg pool (in and out share scale and zero point;
  average rounds half away from zero over the in-bounds taps, TFLite's reference rule).
* ADD, SUB -> add/subtract with TFLite's left shift 20 and per-input multipliers; MUL ->
  multiply; MAXIMUM, MINIMUM (one quantization for all three: a max of codes) -> maximum,
  minimum. An operand that is a constant of the file broadcasting to the other's shape (a
  per-channel bias, a scalar) -> TfliteConstantBinaryStep, the same kernels.
* SPACE_TO_BATCH_ND -> [EXPAND_DIMS] -> CONV_2D | DEPTHWISE_CONV_2D -> [RESHAPE | SQUEEZE] ->
  BATCH_TO_SPACE_ND (the converter's dilated convolution) -> one dilated conv2d /
  depthwise_conv2d step.
* REDUCE_MAX over H and W (or L) -> a max pool over the whole window; MEAN likewise ->
  global average pooling; TRANSPOSE keeping the batch axis first -> transpose.
* Rank-3 tensors [N, L, C] (Conv1D models) are held as (L, 1, C) by PAD, MEAN, REDUCE_MAX,
  STRIDED_SLICE.
* TRANSPOSE_CONV -> zero_insert + a stride-1 conv2d with the kernel flipped (its output-shape
  operand, and the SHAPE / PACK ops computing it, are constants of the file); STRIDED_SLICE
  cropping H and W -> crop; TILE -> tile; RESIZE_NEAREST_NEIGHBOR by whole factors ->
  upsample_nearest; RESIZE_BILINEAR -> TfliteResizeBilinearStep (TFLite's integer rule).
* DEQUANTIZE -> float NEG (and views) -> QUANTIZE inside the model -> one lookup table.
* SLICE, STRIDED_SLICE that is not a crop, SPLIT, SPLIT_V, UNPACK, GATHER with constant
  indices, DEPTH_TO_SPACE, SPACE_TO_DEPTH, REVERSE_V2 -> one TfliteGatherStep per output (a
  static index map of one sample's codes; fixnet/tflite/op_rules_gather.py).
* UNIDIRECTIONAL_SEQUENCE_LSTM (int8, 8x8_16) -> TfliteLstmStep (fixnet/tflite/lstm.py);
  STRIDED_SLICE taking one time step of [N, T, C] -> crop.
* RESHAPE, SQUEEZE, EXPAND_DIMS -> a view (the shape operands, and SHAPE / STRIDED_SLICE /
  PACK / ... ops that only compute them, are constants of the file's static shapes).
* PAD -> pad with the zero point; CONCATENATION -> concat (inputs requantized to the
  output's scale where they differ).
* QUANTIZE between int8 and uint8 at the model's input or output -> the model's int8 tensor
  (uint8 codes are the int8 codes + 128: predict takes and gives them); DEQUANTIZE at an
  output -> the int8 output (predict dequantizes it).
* A 16x8 file (int16 activations, int64 biases) goes to the op16_* rules of
  fixnet/tflite/int16.py instead (its docstring: TFLite's 16x8 rule per op).
"""
from dataclasses import dataclass, field

import numpy as np

from ..errors import UnsupportedLayerError
from ..limits import max_memory_bytes
from ..quant.qparams import QParams
from ..step import TensorSpec
from .op_rules import OpRules, _f32, _fault, _Fault
from .lstm import LstmRules
from .op_rules_gather import GatherRules
from .op_rules_layout import LayoutRules
from .int16 import Int16Rules

# ops that compute only shapes (int32 tensors feeding RESHAPE's shape operand): constants here
SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "GATHER", "CAST", "SLICE"}


class UnsupportedTfliteError(UnsupportedLayerError):
    """A .tflite model fixnet cannot run: every operator at fault, each with the reason."""


@dataclass
class TfliteParts:
    """What convert() makes: the QuantizedModel's constructor arguments, and where each model
    input and output came from (the uint8 I/O of a converter's inference_input_type)."""
    source: str
    name: str
    steps: list
    tensors: dict
    inputs: list
    outputs: list
    io_types: dict = field(default_factory=dict)    # fixnet tensor -> "int8" | "uint8" | "float32"


class Converter(OpRules, GatherRules, LstmRules, LayoutRules, Int16Rules):
    def __init__(self, model, max_memory=None):
        self.m = model
        self.max_memory = max_memory_bytes(max_memory)
        self.steps = []
        self.specs = {}             # fixnet tensor name -> TensorSpec
        self.alias = {}             # tflite tensor index -> fixnet tensor name it equals
        self.names = {}
        self.io_types = {}
        self.skip = set()           # operators folded into an earlier one's step
        # a 16x8 file (int16 activations, none int8): its ops go to Int16Rules' op16_*
        # handlers; a file mixing int8 and int16 activations stays an int8 one (its int16
        # tensors refused, as before)
        computed = {t.type for t in model.tensors if t.data is None}
        self.int16 = "INT16" in computed and not computed & {"INT8", "UINT8"}
        self.act_types = ("INT16",) if self.int16 else ("INT8", "UINT8")
        used = {}
        for t in model.tensors:     # unique, readable names
            base = t.name or f"tensor_{t.index}"
            n = used.get(base, 0)
            used[base] = n + 1
            self.names[t.index] = base if n == 0 else f"{base}#{t.index}"

    # -- tensors ---------------------------------------------------------------------------
    def tensor(self, i):
        return self.m.tensors[i]

    def qparams(self, i):
        t = self.tensor(i)
        q = t.quantization
        if t.type not in self.act_types:
            _fault(f"tensor '{t.name}' is {t.type}: only int8 (and uint8) activations, or int16 "
                   "ones in a 16x8 file, run here")
        if q is None or q.scale.shape[0] != 1:
            _fault(f"tensor '{t.name}' has no per-tensor scale and zero point")
        if t.type == "INT16":
            if int(q.zero_point[0]) != 0:
                _fault(f"int16 tensor '{t.name}' has zero point {int(q.zero_point[0])} (16x8 "
                       "files are symmetric)")
            return QParams(_f32(q.scale[0]), 0, 16)
        # a uint8 tensor is held as int8 codes u - 128 at zero point zp - 128: the same reals
        # (predict takes and gives uint8 codes as int8 codes + 128)
        shift = 128 if t.type == "UINT8" else 0
        return QParams(_f32(q.scale[0]), int(q.zero_point[0]) - shift)

    def layer_name(self, i):
        """The name reports give the step writing tensor ``i``: the converter's tensor name up
        to its first ';' (it joins the names of the fused Keras ops: "model/re_lu/Relu;...")."""
        return (self.tensor(i).name or self.names[i]).split(";")[0]

    def name_of(self, i):
        return self.alias.get(i, self.names[i])

    def sample_shape(self, i):
        """The shape without the batch axis (TFLite's first dimension)."""
        shape = self.tensor(i).shape
        if len(shape) == 0:
            _fault(f"tensor '{self.tensor(i).name}' is a scalar: no batch axis")
        return tuple(int(d) for d in shape[1:])

    def define(self, i):
        """The fixnet tensor of TFLite tensor ``i`` (an activation computed by a step)."""
        name = self.name_of(i)
        if name not in self.specs:
            self.specs[name] = TensorSpec(self.sample_shape(i), self.qparams(i))
        return name

    def constant(self, i, what):
        t = self.tensor(i)
        if t.data is None:
            _fault(f"its {what} '{t.name}' is computed at run time; fixnet needs it constant")
        return np.asarray(t.data)

    # -- the graph -------------------------------------------------------------------------
    def convert(self):
        m = self.m
        consumers = {}
        for op in m.operators:
            for i in op.inputs:
                if i >= 0:
                    consumers.setdefault(i, []).append(op)
        self.consumers = consumers
        shape_only = self.shape_only = self.shape_only_tensors()
        inputs, faults, done = [], [], set()
        ops = list(m.operators)
        for i in m.inputs:
            t = self.tensor(i)
            if t.type in self.act_types:
                inputs.append(i)
                self.io_types[self.names[i]] = t.type.lower()
                continue
            # a float input quantized by the model's first op: predict quantizes it
            first = [op for op in self.consumers.get(i, []) if op.op == "QUANTIZE"]
            if t.type == "FLOAT32" and len(first) == len(self.consumers.get(i, [])) == 1:
                inputs.append(first[0].outputs[0])
                self.io_types[self.names[first[0].outputs[0]]] = "float32"
                done.add(first[0].index)
            else:
                faults.append(f"model input '{t.name}' is {t.type}: only int8, uint8, or float32 "
                              "quantized at once, are inputs fixnet takes")
        for i in inputs:
            try:
                self.define(i)
            except _Fault as e:
                faults.append(f"model input '{self.tensor(i).name}': {e}")
        out_source = {}
        for op in ops:
            if op.op == "DEQUANTIZE" and op.outputs[0] in m.outputs:
                out_source[op.outputs[0]] = op.inputs[0]
                self.io_types[self.names[op.inputs[0]]] = "float32"
                done.add(op.index)
        for op in ops:
            if op.index in done or op.index in self.skip:
                continue
            if all(o in shape_only for o in op.outputs if o >= 0):
                continue                # computes a shape operand: a constant of the file
            try:
                self.operator(op)
            except _Fault as e:
                faults.append(self.describe(op, e))
        outputs = []
        for i in m.outputs:
            src = out_source.get(i, i)
            if self.tensor(src).type not in self.act_types:
                if not any(str(f).find(self.tensor(src).name) >= 0 for f in faults):
                    faults.append(f"model output '{self.tensor(i).name}' is {self.tensor(i).type}")
                continue
            outputs.append(self.name_of(src))
            self.io_types.setdefault(self.name_of(src), self.tensor(src).type.lower())
        if faults:
            raise UnsupportedTfliteError(
                f"{m.source}: fixnet cannot run {len(faults)} operator(s) of this model:\n  "
                + "\n  ".join(faults))
        missing = [t for t in outputs if t not in self.specs]
        if missing:
            raise UnsupportedTfliteError(f"{m.source}: outputs {missing} are computed by no operator")
        name = m.signature_defs[0].key if m.signature_defs else "tflite_model"
        return TfliteParts(m.source, name, self.steps, self.specs,
                           [self.name_of(i) for i in inputs], outputs, self.io_types)

    def describe(self, op, e):
        outs = ", ".join(f"'{self.tensor(o).name}'" for o in op.outputs if o >= 0)
        return f"operator {op.index} {op.op} (output {outs}): {e}"

    def shape_only_tensors(self):
        """Tensors that only feed a shape operand (RESHAPE's new shape, TRANSPOSE_CONV's
        output shape), directly or through SHAPE_OPS and RESHAPEs of int32 tensors."""
        m = self.m
        shape_only = set()
        for op in m.operators:
            if op.op == "RESHAPE" and len(op.inputs) > 1 and op.inputs[1] >= 0:
                shape_only.add(op.inputs[1])
            if op.op == "TRANSPOSE_CONV" and op.inputs and op.inputs[0] >= 0:
                shape_only.add(op.inputs[0])        # its output shape: the file's static one

        def computes_shape(op):
            return op.op in SHAPE_OPS or (op.op == "RESHAPE" and op.outputs
                                          and self.tensor(op.outputs[0]).type == "INT32")

        def feeds_shape(c, i):
            return computes_shape(c) or (c.op == "RESHAPE" and c.inputs[1] == i) \
                or (c.op == "TRANSPOSE_CONV" and c.inputs[0] == i)
        changed = True
        while changed:
            changed = False
            for op in m.operators:
                if computes_shape(op) and op.outputs and all(o in shape_only for o in op.outputs):
                    for i in op.inputs:
                        t = self.tensor(i) if i >= 0 else None
                        if t is not None and t.type == "INT32" and i not in shape_only \
                                and all(feeds_shape(c, i) for c in self.consumers.get(i, [])):
                            shape_only.add(i)
                            changed = True
        return shape_only


def convert(model, max_memory=None):
    """TfliteParts of a TfliteModel (fixnet.tflite.read_tflite); UnsupportedTfliteError
    listing every operator that cannot run. ``max_memory``: the limit fixnet.load was given
    (None: FIXNET_MAX_MEMORY or the default), which the operators' work must stay under."""
    return Converter(model, max_memory).convert()
