"""What a .tflite file holds, as plain Python values (fixnet.tflite.read_tflite makes them).

Nothing here runs a model or maps TFLite ops to fixnet's: these are the file's contents after
every index, size and quantization array was checked (see fixnet/tflite/reader.py). Arrays are
read-only numpy views into the file's bytes (or read-only copies where a view cannot be made).
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class OperatorCode:
    """One entry of the model's operator table.

    builtin: the BuiltinOperator name ("CONV_2D", "FULLY_CONNECTED", ..., "CUSTOM");
    custom_code: the custom op's name when builtin is "CUSTOM", else None;
    version: the op's version, as the converter wrote it (1 when absent)."""
    builtin: str
    custom_code: Optional[str]
    version: int


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: real = scale * (q - zero_point).

    scale: float32, shape (1,) per tensor or (shape[quantized_dimension],) per channel;
    zero_point: int64, the same shape as scale;
    quantized_dimension: the axis the per-channel arrays run along (0 when per tensor)."""
    scale: np.ndarray
    zero_point: np.ndarray
    quantized_dimension: int

    @property
    def per_channel(self):
        return self.scale.shape[0] > 1


@dataclass(frozen=True)
class Tensor:
    """One tensor of the graph.

    shape: the static shape (batch included, 1 where the signature has -1);
    shape_signature: the shape with -1 for dimensions unknown at conversion, or None if the
    file has none; type: the TensorType name ("INT8", "FLOAT32", ...); dtype: its numpy dtype
    (int8 for INT4, whose packed data is unpacked; None for STRING, RESOURCE, VARIANT and
    BFLOAT16); buffer: the index in the model's buffer table (0: no data); data: the constant
    value, read-only, of ``dtype`` and ``shape`` (raw uint8 bytes where dtype is None), or None
    for a tensor computed at run time; quantization: None for a tensor without a scale."""
    index: int
    name: str
    shape: Tuple[int, ...]
    shape_signature: Optional[Tuple[int, ...]]
    type: str
    dtype: Optional[np.dtype]
    buffer: int
    data: Optional[np.ndarray]
    quantization: Optional[Quantization]
    is_variable: bool = False


@dataclass(frozen=True)
class Operator:
    """One operator, in execution order.

    op: the builtin name of its operator code ("CONV_2D"; "CUSTOM" for a custom op, whose name
    is custom_code); inputs/outputs/intermediates: tensor indices, -1 for an optional input or
    output that is absent; options_type: the options table's name ("Conv2DOptions") or None;
    options: its fields by their schema names, enums as their names
    ({"padding": "SAME", "stride_w": 1, ..., "fused_activation_function": "RELU6"});
    custom_options: the custom op's option bytes, or None."""
    index: int
    opcode_index: int
    op: str
    custom_code: Optional[str]
    version: int
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    intermediates: Tuple[int, ...]
    options_type: Optional[str]
    options: Dict[str, object]
    custom_options: Optional[bytes] = None


@dataclass(frozen=True)
class SignatureDef:
    """A named entry point: its key ("serving_default") and its inputs and outputs by name
    (name -> tensor index)."""
    key: str
    subgraph_index: int
    inputs: Dict[str, int]
    outputs: Dict[str, int]


@dataclass(frozen=True)
class TfliteModel:
    """A .tflite file with one subgraph.

    source: the path read (or "<bytes>"); version: the schema version (3);
    description: the converter's note ("MLIR Converted."); operator_codes: the operator table;
    tensors, operators: the subgraph's, operators in execution order; inputs, outputs: the
    subgraph's input and output tensor indices; signature_defs: the named entry points;
    metadata: the metadata entries' bytes by name ("min_runtime_version", ...)."""
    source: str
    version: int
    description: Optional[str]
    subgraph_name: Optional[str]
    operator_codes: Tuple[OperatorCode, ...]
    tensors: Tuple[Tensor, ...]
    operators: Tuple[Operator, ...]
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    signature_defs: Tuple[SignatureDef, ...] = ()
    metadata: Dict[str, bytes] = field(default_factory=dict)

    def tensor(self, name):
        """The tensor named ``name`` (KeyError if there is none)."""
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)
