"""Reading a .tflite file into plain, checked Python values (fixnet.tflite.model), without
trusting anything it declares.

A .tflite file is a FlatBuffer (TFLite's schema, identifier "TFL3"); the ``tflite`` package's
generated classes read it, each through a CheckedTable (fixnet/tflite/_checked.py) so that no
read leaves the file. On top of that, what the schema cannot say is checked here:

- the file: at most the memory limit (fixnet.limits: max_memory=, $FIXNET_MAX_MEMORY, 4 GiB),
  at least a FlatBuffer header, identifier "TFL3", schema version 3, exactly one subgraph;
- each tensor: a known type; a shape of at most MAX_RANK non-negative dimensions whose size
  in bytes stays within the memory limit (refused before anything is allocated); a shape
  signature of the same rank, each dimension -1 or more; a buffer index inside the buffer
  table; its data, if any, exactly ``prod(shape) * itemsize`` bytes, stored either inside the
  FlatBuffer or (files over 2 GB) at an offset/size past it, inside the file; no sparse
  storage; quantization with as many zero points as scales, one scale or one per index of an
  existing quantized dimension, scales finite and positive, zero points inside the type's range;
- each operator: its operator-code index inside the table, a known builtin op, tensor indices
  inside the tensor table (-1 for an absent optional input or output), options of a known table
  with known enum values; the subgraph's inputs and outputs and the signatures' tensors inside
  the tensor table.

Any failure, including whatever the generated accessors raise on a damaged file, is a
TfliteFileError naming the file, and the tensor or operator (index and name) being read.
"""
import contextlib
import math
import os
import struct

import numpy as np

from ..errors import ArgumentError, FixnetError, ModelFileError
from ..limits import ENV_VAR, _human, max_memory_bytes
from .model import Operator, OperatorCode, Quantization, SignatureDef, Tensor, TfliteModel

IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
MAX_RANK = 16
# TensorType name -> (numpy dtype name or None, bits per element or None when variable);
# INT4 data is stored two values per byte (low nibble first) and unpacked to int8
TENSOR_TYPES = {
    "FLOAT32": ("float32", 32), "FLOAT16": ("float16", 16), "FLOAT64": ("float64", 64),
    "INT8": ("int8", 8), "UINT8": ("uint8", 8), "INT16": ("int16", 16), "UINT16": ("uint16", 16),
    "INT32": ("int32", 32), "UINT32": ("uint32", 32), "INT64": ("int64", 64),
    "UINT64": ("uint64", 64), "BOOL": ("bool", 8), "COMPLEX64": ("complex64", 64),
    "COMPLEX128": ("complex128", 128), "INT4": ("int8", 4), "BFLOAT16": (None, 16),
    "STRING": (None, None), "RESOURCE": (None, None), "VARIANT": (None, None),
}
# integer types whose quantized values (and so zero points) have a range
ZERO_POINT_RANGE = {"INT4": (-8, 7), "INT8": (-128, 127), "UINT8": (0, 255),
                    "INT16": (-32768, 32767), "UINT16": (0, 65535)}


class TfliteFileError(ModelFileError):
    """The .tflite file cannot be read: not a TFLite model, truncated, damaged, or outside what
    fixnet reads (several subgraphs, sparse tensors); names the file, tensor or operator."""


class TfliteDependencyError(FixnetError, ImportError):
    """Reading .tflite files needs the optional packages ``tflite`` and ``flatbuffers``."""


def _require_parser():
    try:
        import flatbuffers  # noqa: F401
        import tflite  # noqa: F401
    except ImportError as e:
        raise TfliteDependencyError(
            f"reading a .tflite file needs the 'tflite' and 'flatbuffers' packages ({e}): "
            "pip install 'fixnet[tflite]'") from None


def is_tflite_file(path):
    """True for a path ending in .tflite (whose reader then says what is wrong with it), or a
    file whose FlatBuffer identifier (bytes 4..8) is IDENTIFIER; nothing else is checked."""
    if os.fspath(path).lower().endswith(".tflite"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == IDENTIFIER
    except (OSError, TypeError):
        return False


def read_tflite(source, *, max_memory=None):
    """The model in the .tflite file ``source`` (a path, or the file's bytes) as a
    fixnet.tflite.TfliteModel, after the checks in this module's docstring.

    max_memory: the most bytes the file, and any one tensor it declares, may take (bytes or a
    string such as "512M"; default $FIXNET_MAX_MEMORY, else 4 GiB).
    Raises TfliteFileError (a fixnet.ModelFileError) naming the file, and TfliteDependencyError
    when the optional parser packages are not installed."""
    _require_parser()
    limit = max_memory_bytes(max_memory)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label, data = "<bytes>", bytes(source)
        if len(data) > limit:
            raise TfliteFileError(f"{label}: {_human(len(data))} is past the memory limit of "
                                  f"{_human(limit)}")
    else:
        try:
            label = os.fspath(source)
        except TypeError:
            raise ArgumentError(f"read_tflite: source must be a path or the file's bytes, not "
                                f"{type(source).__name__}") from None
        data = _read_file(label, limit)
    return _Reader(label, data, limit).model()


def _read_file(path, limit):
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise TfliteFileError(
                    f"{path}: the file's {_human(size)} are past the memory limit of "
                    f"{_human(limit)}; pass a larger max_memory= (or set {ENV_VAR})")
            # at most the file's size and one byte more (a file that grew is still caught):
            # read(limit + 1) would reserve the whole limit, gigabytes, for a small file
            data = f.read(size + 1)
            if len(data) > limit:
                raise TfliteFileError(f"{path}: the file grew past the memory limit of "
                                      f"{_human(limit)} while it was read")
            return data
    except OSError as e:
        raise TfliteFileError(f"{path}: cannot read the model file: {e.strerror or e}") from e


def _check_header(label, data):
    if len(data) >= 8 and data[4:8] == IDENTIFIER:
        return
    if len(data) < 8:
        raise TfliteFileError(f"{label}: not a TFLite model: {len(data)} bytes, too short for a "
                              "FlatBuffer header (truncated?)")
    hint = ""
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        hint = " (it is an HDF5 file: a Keras model, to load with fixnet.load)"
    elif data[:7] == b"FIXNET\x00":
        hint = " (it is a fixnet .fxn model, to load with fixnet.load)"
    elif data[:4] == b"PK\x03\x04":
        hint = " (it is a ZIP archive, e.g. a Keras .keras file)"
    raise TfliteFileError(f"{label}: not a TFLite model: the FlatBuffer identifier is "
                          f"{bytes(data[4:8])!r}, not {IDENTIFIER!r}{hint}")


def _ints(arr):
    """A generated ``XAsNumpy()`` result (0 when the vector is absent) as a tuple of ints."""
    if isinstance(arr, int):
        return ()
    return tuple(int(v) for v in arr)


class _Reader:
    def __init__(self, label, data, limit):
        from ._checked import OutOfBounds
        from .options import OptionsError
        self.label, self.data, self.limit = label, data, limit
        # what a damaged file makes the generated accessors (and the checks around them) raise
        self.damage = (OutOfBounds, OptionsError, struct.error, IndexError, ValueError,
                       TypeError, UnicodeDecodeError, OverflowError, AttributeError, KeyError)
        self.buffers_cache = {}

    def fail(self, where, what):
        raise TfliteFileError(f"{self.label}: {where}: {what}")

    @contextlib.contextmanager
    def reading(self, where):
        """Turn a failure of the accessors inside the block into a TfliteFileError naming
        ``where`` (e.g. "tensor 5 'conv/weights'")."""
        try:
            yield
        except TfliteFileError:
            raise
        except self.damage as e:
            raise TfliteFileError(f"{self.label}: {where}: the file is damaged "
                                  f"({type(e).__name__}: {e})") from None

    # --- the model -------------------------------------------------------------------------------
    def model(self):
        import tflite
        from ._checked import checked, root
        from .options import enum_names
        _check_header(self.label, self.data)
        self.op_names = enum_names("BuiltinOperator")
        self.type_names = enum_names("TensorType")
        with self.reading("the model table"):
            m = root(tflite.Model, self.data)
            version = m.Version()
            if version != SCHEMA_VERSION:
                self.fail("the model table", f"schema version {version}; fixnet reads TFLite "
                          f"schema version {SCHEMA_VERSION}")
            description = m.Description()
            description = None if description is None else description.decode("utf-8")
            n_subgraphs = m.SubgraphsLength()
            if n_subgraphs != 1:
                self.fail("the model table", f"{n_subgraphs} subgraphs; fixnet reads models "
                          "with exactly one (no control flow: WHILE, IF, CALL_ONCE)")
            self.n_buffers = m.BuffersLength()
            self.m = m
            g = checked(m.Subgraphs(0))
        codes = tuple(self.operator_code(j) for j in range(self._length(m, "OperatorCodes",
                                                                        "the operator table")))
        with self.reading("the subgraph"):
            name = g.Name()
            name = None if name is None else name.decode("utf-8")
            n_tensors = g.TensorsLength()
            n_ops = g.OperatorsLength()
        tensors = tuple(self.tensor(g, i) for i in range(n_tensors))
        operators = tuple(self.operator(g, i, codes, tensors) for i in range(n_ops))
        with self.reading("the subgraph's inputs and outputs"):
            inputs, outputs = _ints(g.InputsAsNumpy()), _ints(g.OutputsAsNumpy())
        for kind, idx in (("input", inputs), ("output", outputs)):
            for t in idx:
                if not 0 <= t < n_tensors:
                    self.fail("the subgraph", f"{kind} tensor index {t} is outside the "
                              f"{n_tensors} tensors")
        return TfliteModel(
            source=self.label, version=version, description=description, subgraph_name=name,
            operator_codes=codes, tensors=tensors, operators=operators, inputs=inputs,
            outputs=outputs, signature_defs=self.signature_defs(n_tensors),
            metadata=self.metadata())

    def _length(self, obj, field, where):
        with self.reading(where):
            return getattr(obj, field + "Length")()

    def operator_code(self, j):
        from ._checked import checked
        where = f"operator code {j}"
        with self.reading(where):
            oc = checked(self.m.OperatorCodes(j))
            # builtin_code replaced the int8 deprecated_builtin_code once ops passed 127; a
            # file sets one or both, and the larger is the op (as TFLite reads it)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            custom = oc.CustomCode()
            custom = None if custom is None else custom.decode("utf-8")
            version = oc.Version()
        if code not in self.op_names:
            self.fail(where, f"builtin operator {code} is not one the TFLite schema of the "
                      "installed 'tflite' package knows")
        if self.op_names[code] == "CUSTOM" and not custom:
            self.fail(where, "a CUSTOM operator without a custom code")
        return OperatorCode(builtin=self.op_names[code], custom_code=custom, version=version)

    # --- tensors ---------------------------------------------------------------------------------
    def tensor(self, g, i):
        from ._checked import checked
        where = f"tensor {i}"
        with self.reading(where):
            t = checked(g.Tensors(i))
            name = t.Name()
            name = "" if name is None else name.decode("utf-8")
        where = f"tensor {i} '{name}'"
        with self.reading(where):
            shape = _ints(t.ShapeAsNumpy())
            signature = None if t.ShapeSignatureIsNone() else _ints(t.ShapeSignatureAsNumpy())
            code = t.Type()
            buffer = t.Buffer()
            is_variable = bool(t.IsVariable())
            sparse = t.Sparsity() is not None
            q = checked(t.Quantization())
        type_name = self.type_names.get(code)
        if type_name is None:
            self.fail(where, f"tensor type {code} is not a TFLite TensorType")
        dtype_name, bits = TENSOR_TYPES.get(type_name, (None, None))
        dtype = None if dtype_name is None else np.dtype(dtype_name)
        self.check_shape(where, shape, signature, bits)
        if sparse:
            self.fail(where, "a sparse tensor (its data is stored compressed); fixnet reads "
                      "dense tensors only")
        if not 0 <= buffer < self.n_buffers:
            self.fail(where, f"buffer index {buffer} is outside the {self.n_buffers} buffers")
        data = self.tensor_data(where, buffer, shape, dtype, bits)
        quant = None if q is None else self.quantization(where, q, shape, type_name)
        return Tensor(index=i, name=name, shape=shape, shape_signature=signature,
                      type=type_name, dtype=dtype, buffer=buffer, data=data,
                      quantization=quant, is_variable=is_variable)

    def check_shape(self, where, shape, signature, bits):
        if len(shape) > MAX_RANK:
            self.fail(where, f"rank {len(shape)} is above {MAX_RANK}")
        if any(d < 0 for d in shape):
            self.fail(where, f"shape {shape} has a negative dimension")
        if signature is not None:
            if len(signature) != len(shape):
                self.fail(where, f"shape signature {signature} is not of the rank of shape {shape}")
            if any(d < -1 for d in signature):
                self.fail(where, f"shape signature {signature} has a dimension below -1")
        nbytes = math.prod(shape) * (bits or 8) // 8
        if nbytes > self.limit:
            self.fail(where, f"shape {shape} needs {_human(nbytes)}, past the memory limit of "
                      f"{_human(self.limit)}; the file is damaged, or pass a larger max_memory= "
                      f"(or set {ENV_VAR})")

    def buffer_bytes(self, j):
        """Buffer ``j``'s data (a read-only uint8 array): its data vector inside the
        FlatBuffer, or its offset/size block past it (files over 2 GB); cached."""
        from ._checked import checked
        if j not in self.buffers_cache:
            with self.reading(f"buffer {j}"):
                b = checked(self.m.Buffers(j))
                inline, offset, size = b.DataAsNumpy(), b.Offset(), b.Size()
            self.buffers_cache[j] = self._bytes(f"buffer {j}", inline, offset, size)
        return self.buffers_cache[j]

    def _bytes(self, where, inline, offset, size):
        """The bytes of an inline vector (a uint8 array, or 0 when absent) or of an outside
        block (offset, size): offsets 0 and 1 mean "not used" (the converter writes 1 as a
        placeholder)."""
        inline = np.zeros(0, np.uint8) if isinstance(inline, int) else inline
        if offset > 1:
            if inline.size:
                self.fail(where, "holds data both inside the FlatBuffer and at an offset")
            if offset + size > len(self.data):
                self.fail(where, f"{size} bytes at offset {offset} lie past the end of the "
                          f"{len(self.data)}-byte file")
            return np.frombuffer(self.data, np.uint8, size, offset)
        if size:
            self.fail(where, f"declares a size of {size} bytes without an offset")
        return inline

    def tensor_data(self, where, buffer, shape, dtype, bits):
        raw = self.buffer_bytes(buffer)
        if raw.size == 0:
            return None
        if bits is None:                        # strings, resources: raw bytes, any size
            return raw
        count = math.prod(shape)
        want = (count * bits + 7) // 8
        if raw.size != want:
            self.fail(where, f"buffer {buffer} holds {raw.size} bytes; shape {shape} of "
                      f"{bits}-bit values needs {want}")
        if dtype is None:                       # BFLOAT16: no numpy type, the raw bytes
            return raw
        if bits == 4:
            return _unpack_int4(raw, count).reshape(shape)
        return _typed(raw, dtype).reshape(shape)

    def quantization(self, where, q, shape, type_name):
        with self.reading(where + ": quantization"):
            scale = q.ScaleAsNumpy()
            zero_point = q.ZeroPointAsNumpy()
            qdim = q.QuantizedDimension()
            details = q.DetailsType()
        scale = np.zeros(0, np.float32) if isinstance(scale, int) else scale
        zero_point = np.zeros(0, np.int64) if isinstance(zero_point, int) else zero_point
        if scale.size == 0:
            if zero_point.size:
                self.fail(where, f"quantization has {zero_point.size} zero point(s) and no scale")
            return None                           # min/max only, or an empty table
        if details:
            self.fail(where, f"custom quantization (details type {details}) is not read by fixnet")
        if zero_point.size != scale.size:
            self.fail(where, f"quantization has {scale.size} scale(s) and {zero_point.size} "
                      "zero point(s)")
        if scale.size > 1:
            if not 0 <= qdim < len(shape):
                self.fail(where, f"per-channel quantization along dimension {qdim} of a tensor "
                          f"of shape {shape}")
            if shape[qdim] != scale.size:
                self.fail(where, f"{scale.size} scales along dimension {qdim} of size "
                          f"{shape[qdim]} (shape {shape})")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            bad = np.flatnonzero(~np.isfinite(scale) | (scale <= 0))
            self.fail(where, f"quantization scale {float(scale[bad[0]])!r} (index {int(bad[0])}) is not "
                      "a finite positive number")
        if type_name in ZERO_POINT_RANGE:
            lo, hi = ZERO_POINT_RANGE[type_name]
            bad = np.flatnonzero((zero_point < lo) | (zero_point > hi))
            if bad.size:
                self.fail(where, f"zero point {int(zero_point[bad[0]])} (index {int(bad[0])}) is "
                          f"outside the {type_name} range [{lo}, {hi}]")
        scale = np.array(scale, np.float32)
        zero_point = np.array(zero_point, np.int64)
        scale.flags.writeable = zero_point.flags.writeable = False
        return Quantization(scale=scale, zero_point=zero_point, quantized_dimension=int(qdim))

    # --- operators -------------------------------------------------------------------------------
    def operator(self, g, i, codes, tensors):
        from ._checked import checked
        where = f"operator {i}"
        with self.reading(where):
            o = checked(g.Operators(i))
            opcode_index = o.OpcodeIndex()
        if not 0 <= opcode_index < len(codes):
            self.fail(where, f"operator code index {opcode_index} is outside the {len(codes)} "
                      "operator codes")
        code = codes[opcode_index]
        where = f"operator {i} ({code.custom_code or code.builtin})"
        with self.reading(where):
            inputs, outputs = _ints(o.InputsAsNumpy()), _ints(o.OutputsAsNumpy())
            intermediates = _ints(o.IntermediatesAsNumpy())
        n = len(tensors)
        for kind, idx, optional in (("input", inputs, True), ("output", outputs, True),
                                    ("intermediate", intermediates, False)):
            for t in idx:
                if not (0 <= t < n or (optional and t == -1)):
                    self.fail(where, f"{kind} tensor index {t} is outside the {n} tensors")
        if outputs:
            out = tensors[outputs[0]] if outputs[0] >= 0 else None
            if out is not None:
                where = f"operator {i} ({code.custom_code or code.builtin}, output '{out.name}')"
        options_type, options = self.options(where, o)
        return Operator(index=i, opcode_index=opcode_index, op=code.builtin,
                        custom_code=code.custom_code, version=code.version, inputs=inputs,
                        outputs=outputs, intermediates=intermediates, options_type=options_type,
                        options=options, custom_options=self.custom_options(where, o))

    def options(self, where, o):
        import flatbuffers
        from .options import options_class, read_options
        found = []
        with self.reading(where + ": options"):
            for union, type_of, table_of in (("BuiltinOptions", o.BuiltinOptionsType, o.BuiltinOptions),
                                             ("BuiltinOptions2", o.BuiltinOptions2Type, o.BuiltinOptions2)):
                code = type_of()
                if code == 0:
                    continue
                cls = options_class(union, code)
                if cls is None:
                    self.fail(where, f"options of type {code} ({union}) are not a table the "
                              "TFLite schema of the installed 'tflite' package knows")
                name, cls = cls
                table = table_of()
                if not isinstance(table, flatbuffers.table.Table):
                    self.fail(where, f"options of type {name} without their table")
                found.append((name, read_options(cls, table)))
        if len(found) > 1:
            self.fail(where, f"two options tables ({found[0][0]}, {found[1][0]})")
        return found[0] if found else (None, {})

    def custom_options(self, where, o):
        with self.reading(where + ": custom options"):
            inline = o.CustomOptionsAsNumpy()
            offset, size = o.LargeCustomOptionsOffset(), o.LargeCustomOptionsSize()
        raw = self._bytes(where + ": custom options", inline, offset, size)
        return raw.tobytes() if raw.size else None

    # --- signatures, metadata --------------------------------------------------------------------
    def signature_defs(self, n_tensors):
        from ._checked import checked
        out = []
        for j in range(self._length(self.m, "SignatureDefs", "the signature defs")):
            where = f"signature def {j}"
            with self.reading(where):
                s = checked(self.m.SignatureDefs(j))
                key = s.SignatureKey()
                key = "" if key is None else key.decode("utf-8")
                subgraph = s.SubgraphIndex()
                maps = {}
                for kind in ("Inputs", "Outputs"):
                    maps[kind] = {}
                    for k in range(getattr(s, kind + "Length")()):
                        tm = checked(getattr(s, kind)(k))
                        name, index = tm.Name(), tm.TensorIndex()
                        name = "" if name is None else name.decode("utf-8")
                        if not 0 <= index < n_tensors:
                            self.fail(f"{where} '{key}'", f"{kind.lower()[:-1]} '{name}' names "
                                      f"tensor {index}, outside the {n_tensors} tensors")
                        maps[kind][name] = index
            if subgraph != 0:
                self.fail(f"{where} '{key}'", f"subgraph index {subgraph}; the model has one "
                          "subgraph")
            out.append(SignatureDef(key=key, subgraph_index=subgraph, inputs=maps["Inputs"],
                                    outputs=maps["Outputs"]))
        return tuple(out)

    def metadata(self):
        from ._checked import checked
        out = {}
        for j in range(self._length(self.m, "Metadata", "the metadata")):
            where = f"metadata {j}"
            with self.reading(where):
                md = checked(self.m.Metadata(j))
                name = md.Name()
                name = "" if name is None else name.decode("utf-8")
                buffer = md.Buffer()
            if not 0 <= buffer < self.n_buffers:
                self.fail(f"{where} '{name}'", f"buffer index {buffer} is outside the "
                          f"{self.n_buffers} buffers")
            out[name] = self.buffer_bytes(buffer).tobytes()
        return out


def _typed(raw, dtype):
    """The little-endian ``dtype`` values in the uint8 array ``raw`` (a view into the file),
    read-only: a view where it is aligned and native, else a copy."""
    a = raw.view(dtype.newbyteorder("<"))
    if a.dtype.isnative:
        a = a.view(dtype)
    if not a.flags.aligned or not a.dtype.isnative:
        a = a.astype(dtype.newbyteorder("="))
        a.flags.writeable = False
    return a


def _unpack_int4(packed, count):
    """``count`` int8 values from INT4 data packed two per byte, the low nibble first."""
    low = (packed.astype(np.int8) << 4) >> 4
    high = packed.astype(np.int8) >> 4
    out = np.empty(2 * packed.size, np.int8)
    out[0::2], out[1::2] = low, high
    out = out[:count]
    out.flags.writeable = False
    return out
