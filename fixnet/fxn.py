"""The portable int8 model file (``.fxn``): one file holding everything a QuantizedModel runs
with (int8 weights, int32 biases, fixed-point multipliers and shifts, lookup tables, the step
graph, tensor shapes and quantization parameters) and nothing else: no float weights, no
calibration data, no code.

    qm.save("model.fxn")                  # fixnet.fxn.save_model(qm, "model.fxn")
    qm = fixnet.load("model.fxn")         # fixnet.runtime.load_fxn("model.fxn")

This module is the codec, below the runtime: reading gives the parts of a model (ModelParts:
its steps, tensors, inputs and outputs, checked as they are read); fixnet.runtime builds the
QuantizedModel from them and has ``check_model`` bind and run it once before handing it out.

Layout (all integers little-endian)::

    offset  size  field
         0     7  magic b"FIXNET\\x00"
         7     4  uint32 format version (FORMAT_VERSION)
        11     8  uint64 payload length in bytes
        19    32  SHA-256 of the payload
        51     -  payload: a ZIP archive (deflate) holding
                    manifest.json          the graph, every non-array value, array dtypes/shapes
                    arrays/NNNNN_attr.npy  one .npy per array (NumPy format, no pickles)

The magic and the version come first and stay where they are in every future version, so any
fixnet can tell "not an .fxn file" from "an .fxn file from a newer fixnet" before anything else.

manifest.json (format version 1)::

    {"format": "fixnet-int8-model", "format_version": 1, "fixnet_version": "0.1.0",
     "name": str, "converted_from": str (basename of the source model file),
     "inputs": [tensor name, ...], "outputs": [tensor name, ...],
     "tensors": [{"name": str, "shape": [int or null, ...], "qparams": {"scale": float,
                  "zero_point": int}, "length_of": [int or null, ...]}, ...],  # model order
     "steps": [{"class": "DenseStep", "module": "fixnet.ops.dense", "state": {attr: value}}],
     "arrays": {"arrays/00000_w_q.npy": {"dtype": "|i1", "shape": [int, ...]}, ...},
     "overflow_proven": bool or null}

A null in a tensor's shape is a dimension of any length (fixnet/lengths.py): a model input's
null dimensions are the length symbols 0, 1, ... (in input order, then dimension order), and
``length_of`` (present exactly when the shape has a null) names, per dimension, the symbol a
null follows (null where the dimension is fixed). Steps keep null in the shapes they baked;
the runtime replaces it by the call's length. (A fixnet that predates this refuses such a file,
naming the tensor's shape: nothing is misread, so the format version stays 1.)

A step is stored as its class name and its state (``__getstate__()``, i.e. its ``__dict__``).
State values are JSON, with these tagged objects for what JSON lacks:
``{"$array": entry}`` (a stored array; one object stored once however often it is referenced),
``{"$tuple": [...]}``, ``{"$dict": [[key, value], ...]}`` (any keys, order kept),
``{"$np": dtype, "value": v}`` (a NumPy scalar), ``{"$float": "nan" | "inf" | "-inf"}``,
``{"$bytes": base64}``, ``{"$dataclass": "QParams", "fields": {...}}``.
Floats are written with Python's shortest round-trip repr, so they come back bit for bit.

Loading rebuilds each step from a registry of the Step subclasses defined in the fixnet package
(by class name); it never imports or calls anything the file names and never unpickles.
"""
import base64
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import struct
import sys
import zipfile
import zlib

import numpy as np

from . import ops  # noqa: F401  (defines the step classes step_registry finds)
from ._version import __version__
from .errors import ModelFileError
from .fileio import write_atomically
from .lengths import length_symbols
from .limits import MemoryBudget, max_memory_bytes
from .quant.qparams import INT8_MAX, INT8_MIN, QParams
from .step import Step, TensorSpec

MAGIC = b"FIXNET\x00"
FORMAT_VERSION = 1                  # what save_model writes
READABLE_VERSIONS = (1,)            # what read_model_parts reads
FORMAT_NAME = "fixnet-int8-model"
_HEADER = struct.Struct("<7sIQ32s")
HEADER_SIZE = _HEADER.size          # 51 bytes
MANIFEST_NAME = "manifest.json"

# Sanity limits for hostile files (a file whose checksum matches may still be crafted).
MAX_MANIFEST_BYTES = 64 << 20
MAX_TENSOR_ELEMENTS = 1 << 28       # per tensor, without batch
# Array dtypes the format stores (little-endian on disk, native in memory); no objects.
_ARRAY_DTYPES = ("|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8",
                 "<f2", "<f4", "<f8")
# Value types allowed inside a step's state as tagged dataclasses.
_DATACLASSES = {"QParams": QParams}
# Cheap semantic checks on well-known step attributes: int8 weights never use -128 (DESIGN).
_WEIGHT_ATTRS = ("w_q", "alpha_q")


class FxnVersionError(ModelFileError):
    """The .fxn file was written by a newer fixnet (a format version this fixnet cannot read)."""


class FxnWriteError(ModelFileError, OSError):
    """The .fxn file could not be written; the target path was left as it was."""


# ----------------------------------------------------------------------------------------
# save
# ----------------------------------------------------------------------------------------

def save_model(qm, path):
    """Write QuantizedModel ``qm`` to ``path`` as one .fxn file, atomically: the bytes are
    built in memory, written to a temporary file next to ``path`` and renamed over it, so a
    failed save never leaves a partial or corrupt file (an existing file stays as it was).

    Raises ModelFileError if a step holds a value the format cannot store, FxnWriteError
    (also an OSError) if the file cannot be written.
    """
    path = os.fspath(path)
    write_atomically(path, encode_model(qm, path), FxnWriteError, "save the model")


def encode_model(qm, where="<model>"):
    """The bytes of the .fxn file for ``qm`` (header + payload)."""
    enc = _Encoder(where)
    tensors = []
    for name, spec in qm.tensors.items():
        entry = {"name": _check_str(name, where, "tensor name"),
                 "shape": [None if d is None else int(d) for d in spec.shape],
                 "qparams": {k: enc.value(v, f"tensor '{name}'")
                             for k, v in _dataclass_fields(spec.qparams).items()}}
        if None in spec.shape:
            entry["length_of"] = [None if k is None else int(k) for k in spec.length_of]
        tensors.append(entry)
    steps = []
    for i, step in enumerate(qm.steps):
        cls = type(step)
        state = _step_state(step, where)
        where_step = f"step {i} '{getattr(step, 'name', '?')}' ({cls.__name__})"
        encoded = {}
        for k, v in state.items():
            enc.array_hint = f"{i:04d}_{re.sub(r'[^A-Za-z0-9_]+', '_', k)}"
            encoded[k] = enc.value(v, f"{where_step} attribute '{k}'")
        steps.append({"class": cls.__name__, "module": cls.__module__, "state": encoded})
    try:
        proven = bool(qm.overflow_report().proven)
    except Exception:   # the proof is a cross-check on load, not a requirement to save
        proven = None
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "fixnet_version": __version__,
        "name": str(qm.name),
        "converted_from": os.path.basename(str(getattr(qm, "source", "") or "")),
        "inputs": [str(t) for t in qm.inputs],
        "outputs": [str(t) for t in qm.outputs],
        "tensors": tensors,
        "steps": steps,
        "arrays": {entry: {"dtype": a.dtype.str, "shape": list(a.shape)}
                   for entry, a in enc.arrays.items()},
        "overflow_proven": proven,
    }
    manifest_bytes = json.dumps(manifest, indent=1, allow_nan=False).encode("utf-8")

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        _zip_write(z, MANIFEST_NAME, manifest_bytes)
        for entry, a in enc.arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, a, allow_pickle=False)
            _zip_write(z, entry, npy.getvalue())
    payload = buf.getvalue()
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest())
    return header + payload


class _Encoder:
    """Turns state values into JSON, collecting arrays (each object stored once)."""

    def __init__(self, where):
        self.where = where
        self.arrays = {}        # zip entry -> little-endian array
        self._by_id = {}        # id(original array) -> (entry, original: kept alive)
        self.array_hint = "x"

    def value(self, v, what):
        # exact types only: a subclass (np.float64 is a float, a namedtuple a tuple) would
        # come back as its base class
        t = type(v)
        if isinstance(v, np.generic):
            dt = v.dtype if v.dtype.byteorder == "|" else v.dtype.newbyteorder("<")
            if dt.str not in _ARRAY_DTYPES:
                raise self._error(what, f"a NumPy {v.dtype} scalar")
            return {"$np": dt.str, "value": self.value(v.item(), what)}
        if v is None or t in (bool, str):
            return v
        if t is int:
            return v
        if t is float:
            return v if math.isfinite(v) else {"$float": repr(v)}
        if t is np.ndarray:
            return {"$array": self._array(v, what)}
        if t is tuple:
            return {"$tuple": [self.value(e, what) for e in v]}
        if t is list:
            return [self.value(e, what) for e in v]
        if t is dict:
            return {"$dict": [[self.value(k, what), self.value(e, what)] for k, e in v.items()]}
        if t is bytes:
            return {"$bytes": base64.b64encode(v).decode("ascii")}
        if type(v).__name__ in _DATACLASSES and type(v) is _DATACLASSES[type(v).__name__]:
            return {"$dataclass": type(v).__name__,
                    "fields": {k: self.value(e, what) for k, e in _dataclass_fields(v).items()}}
        raise self._error(what, f"a {type(v).__module__}.{type(v).__qualname__}")

    def _array(self, a, what):
        known = self._by_id.get(id(a))
        if known is not None:
            return known[0]
        dt = a.dtype if a.dtype.byteorder == "|" else a.dtype.newbyteorder("<")
        if dt.str not in _ARRAY_DTYPES:
            raise self._error(what, f"an array of dtype {a.dtype}")
        le = a.astype(dt, copy=False)
        entry = f"arrays/{len(self.arrays):05d}_{self.array_hint}.npy"
        self.arrays[entry] = le
        self._by_id[id(a)] = (entry, a)
        return entry

    def _error(self, what, kind):
        return ModelFileError(f"{self.where}: cannot save {what}: it holds {kind}, which the .fxn "
                              "format does not store (give the step a __getstate__ that leaves "
                              "derived objects out, as DenseStep does for its packed weights)")


def _step_state(step, where):
    getstate = getattr(step, "__getstate__", None)
    state = getstate() if getstate is not None else step.__dict__
    if state is None:
        state = {}
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ModelFileError(f"{where}: cannot save step '{getattr(step, 'name', '?')}' "
                             f"({type(step).__name__}): its state is not a dict of attributes")
    return state


def _dataclass_fields(obj):
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _check_str(v, where, what):
    if not isinstance(v, str):
        raise ModelFileError(f"{where}: cannot save: {what} {v!r} is not a string")
    return v


def _zip_write(z, name, data):
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))   # same model, same bytes
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    z.writestr(info, data)




# ----------------------------------------------------------------------------------------
# load
# ----------------------------------------------------------------------------------------

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
    manifest, arrays = _read_container(path, with_arrays=True, budget=budget)
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
    manifest, arrays = _parse_container(name, data, with_arrays=True, budget=budget)
    return _model_parts(name, manifest, arrays, budget)


def read_manifest(path):
    """The manifest of a .fxn file (a dict, see the module docstring), after the header,
    version and checksum checks; the arrays are not read."""
    path = os.fspath(path)
    manifest, _ = _read_container(path, with_arrays=False)
    return manifest


def is_fxn_file(path):
    """True if ``path`` starts with the .fxn magic (nothing else is checked)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _read_container(path, with_arrays, budget=None):
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_SIZE)
            _check_magic_and_version(path, head)              # before reading a foreign file
            if budget is not None:                            # the whole file is read at once
                budget.need(max(os.fstat(f.fileno()).st_size - HEADER_SIZE, 0), "the file's content")
                budget.used = 0                               # counted again as arrays below
            data = head + f.read()
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read the model file: {e.strerror or e}") from e
    return _parse_container(path, data, with_arrays, budget)


def _parse_container(path, data, with_arrays, budget=None):
    """The manifest and (``with_arrays``) the arrays of the .fxn bytes ``data``; ``path``
    names them in errors."""
    version = _check_magic_and_version(path, data[:HEADER_SIZE])
    payload = _check_length_and_checksum(path, data)
    try:
        z = zipfile.ZipFile(io.BytesIO(payload))
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise _damaged(path, f"the payload is not a valid archive ({e})")
    with z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise _damaged(path, "the archive holds duplicate entries")
        if MANIFEST_NAME not in names:
            raise _damaged(path, f"the archive has no {MANIFEST_NAME}")
        manifest = _parse_manifest(path, _read_entry(path, z, z.getinfo(MANIFEST_NAME),
                                                     MAX_MANIFEST_BYTES), version)
        specs = _array_specs(path, manifest)
        extra = set(names) - set(specs) - {MANIFEST_NAME}
        if extra:
            raise _damaged(path, f"the archive holds entries the manifest does not list: "
                                 f"{sorted(extra)[:5]}")
        missing = set(specs) - set(names)
        if missing:
            raise _damaged(path, f"array(s) listed in the manifest are missing: {sorted(missing)[:5]}")
        arrays = {}
        if with_arrays:
            for entry, (dtype, shape) in specs.items():
                if budget is not None:
                    budget.need(dtype.itemsize * math.prod(shape), f"array {entry}")
            for entry, (dtype, shape) in specs.items():
                arrays[entry] = _read_array(path, z, z.getinfo(entry), dtype, shape)
    return manifest, arrays


def _check_magic_and_version(path, data):
    """The format version from the first bytes of the file (the magic and the version sit at
    the same place in every format version)."""
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        if MAGIC.startswith(data):
            raise _damaged(path, f"the file is truncated ({len(data)} bytes)")
        hint = ""
        if data[:8] == b"\x89HDF\r\n\x1a\n":
            hint = " (it is an HDF5 file: a Keras model, to load with fixnet.load and quantize)"
        elif data[:4] == b"PK\x03\x04":
            hint = " (it is a ZIP archive, e.g. a Keras .keras file)"
        raise ModelFileError(f"{path}: not a fixnet .fxn model file: it does not start with the "
                             f"fixnet magic bytes{hint}")
    if len(data) < len(MAGIC) + 4:
        raise _damaged(path, f"the file is truncated in its header ({len(data)} bytes)")
    (version,) = struct.unpack_from("<I", data, len(MAGIC))
    if version > max(READABLE_VERSIONS):
        raise FxnVersionError(f"{path}: written by a newer fixnet: format version {version}, this "
                              f"fixnet reads up to {max(READABLE_VERSIONS)}; upgrade fixnet")
    if version not in READABLE_VERSIONS:
        raise ModelFileError(f"{path}: format version {version} is not one this fixnet reads "
                             f"({', '.join(map(str, READABLE_VERSIONS))}); the file is damaged")
    return version


def _check_length_and_checksum(path, data):
    """The payload of a version-1 file, once its length and SHA-256 match the header."""
    if len(data) < HEADER_SIZE:
        raise _damaged(path, f"the file is truncated in its header ({len(data)} bytes)")
    _, _, length, digest = _HEADER.unpack_from(data, 0)
    payload = data[HEADER_SIZE:]
    if len(payload) < length:
        raise _damaged(path, f"the file is truncated: {HEADER_SIZE + length} bytes expected, "
                             f"{len(data)} found")
    if len(payload) > length:
        raise _damaged(path, f"{len(payload) - length} unexpected byte(s) after the end of the "
                             "model data")
    if hashlib.sha256(payload).digest() != digest:
        raise _damaged(path, "checksum mismatch (SHA-256 of the content does not match the header)")
    return payload


def _damaged(path, why):
    return ModelFileError(f"{path}: damaged fixnet model file: {why}")


def _bad(path, why):
    return ModelFileError(f"{path}: inconsistent fixnet model file: {why}")


def _read_entry(path, z, info, limit):
    if info.file_size > limit:
        raise _damaged(path, f"entry {info.filename} is larger ({info.file_size} bytes) than "
                             f"expected (at most {limit})")
    try:
        with z.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as e:
        raise _damaged(path, f"entry {info.filename} cannot be read ({e})")
    if len(data) > limit:
        raise _damaged(path, f"entry {info.filename} is larger than expected")
    return data


def _parse_manifest(path, raw, version):
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate key(s) in an object: {keys}")
        return dict(pairs)

    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    try:
        m = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates,
                       parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _damaged(path, f"the manifest is not valid JSON ({e})")
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise _bad(path, "the manifest does not describe a fixnet int8 model")
    if m.get("format_version") != version or isinstance(m.get("format_version"), bool):
        raise _bad(path, f"the manifest's format version {m.get('format_version')!r} differs from "
                         f"the header's ({version})")
    for key, kind in (("name", str), ("inputs", list), ("outputs", list), ("tensors", list),
                      ("steps", list), ("arrays", dict)):
        if not isinstance(m.get(key), kind):
            raise _bad(path, f"the manifest's '{key}' is missing or not a {kind.__name__}")
    return m


def _array_specs(path, m):
    specs = {}
    for entry, spec in m["arrays"].items():
        if not (entry.startswith("arrays/") and entry.endswith(".npy")):
            raise _bad(path, f"array entry name {entry!r} is not under arrays/")
        if (not isinstance(spec, dict) or spec.get("dtype") not in _ARRAY_DTYPES
                or not _is_shape(spec.get("shape"))):
            raise _bad(path, f"array {entry}: dtype/shape {spec!r} is not one the format stores")
        specs[entry] = (np.dtype(spec["dtype"]), tuple(spec["shape"]))
    return specs


def _is_shape(s):
    return (isinstance(s, list) and len(s) <= 8
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 31 for d in s))


def _is_tensor_shape(s):
    """A tensor's shape: as _is_shape, and null for a dimension of any length."""
    return (isinstance(s, list) and len(s) <= 8
            and _is_shape([d for d in s if d is not None]))


def _read_array(path, z, info, dtype, shape):
    nbytes = dtype.itemsize * math.prod(shape)
    raw = _read_entry(path, z, info, nbytes + 4096)        # the .npy header is < 4 KiB
    try:
        a = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError) as e:
        raise _damaged(path, f"array {info.filename} cannot be read ({e})")
    if a.dtype.str != dtype.str or a.shape != shape:
        raise _bad(path, f"array {info.filename} is {a.dtype.str} {a.shape}, the manifest says "
                         f"{dtype.str} {shape}")
    if a.dtype.str[0] == "<" and sys.byteorder != "little":
        a = a.astype(a.dtype.newbyteorder("="))
    return a


class _Decoder:
    """JSON values back into Python/NumPy values, resolving array references."""

    def __init__(self, path, arrays):
        self.path = path
        self.arrays = arrays
        self.used = set()

    def value(self, v, what):
        if v is None or isinstance(v, (bool, str, int, float)):
            return v
        if isinstance(v, list):
            return [self.value(e, what) for e in v]
        if not isinstance(v, dict) or len(v) not in (1, 2):
            raise _bad(self.path, f"{what}: {_short(v)} is not an encoded value")
        if "$array" in v and len(v) == 1:
            entry = v["$array"]
            if not isinstance(entry, str) or entry not in self.arrays:
                raise _bad(self.path, f"{what}: refers to array {_short(entry)}, which the file "
                                      "does not hold")
            self.used.add(entry)
            return self.arrays[entry]
        if "$tuple" in v and len(v) == 1 and isinstance(v["$tuple"], list):
            return tuple(self.value(e, what) for e in v["$tuple"])
        if "$dict" in v and len(v) == 1 and isinstance(v["$dict"], list):
            out = {}
            for pair in v["$dict"]:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise _bad(self.path, f"{what}: a dict item {_short(pair)} is not a pair")
                key = self.value(pair[0], what)
                try:
                    out[key] = self.value(pair[1], what)
                except TypeError:
                    raise _bad(self.path, f"{what}: dict key {_short(pair[0])} is not hashable")
            return out
        if "$float" in v and len(v) == 1 and v["$float"] in ("nan", "inf", "-inf"):
            return float(v["$float"])
        if "$np" in v and len(v) == 2 and "value" in v and v["$np"] in _ARRAY_DTYPES:
            item = self.value(v["value"], what)
            if isinstance(item, (dict, list, tuple, str, type(None))):
                raise _bad(self.path, f"{what}: NumPy scalar value {_short(v['value'])}")
            try:
                return np.dtype(v["$np"]).newbyteorder("=").type(item)
            except (OverflowError, ValueError, TypeError) as e:
                raise _bad(self.path, f"{what}: NumPy scalar {_short(v)} ({e})")
        if "$bytes" in v and len(v) == 1 and isinstance(v["$bytes"], str):
            try:
                return base64.b64decode(v["$bytes"], validate=True)
            except ValueError:
                raise _bad(self.path, f"{what}: bad base64 bytes")
        if ("$dataclass" in v and len(v) == 2 and v["$dataclass"] in _DATACLASSES
                and isinstance(v.get("fields"), dict)):
            cls = _DATACLASSES[v["$dataclass"]]
            fields = {k: self.value(e, what) for k, e in v["fields"].items()}
            if set(fields) != {f.name for f in dataclasses.fields(cls)}:
                raise _bad(self.path, f"{what}: {cls.__name__} fields {sorted(fields)}")
            return cls(**fields)
        raise _bad(self.path, f"{what}: {_short(v)} is not an encoded value")


def _short(v, n=80):
    r = repr(v)
    return r if len(r) <= n else r[:n - 3] + "..."


def step_registry():
    """{class name: class} of every concrete Step subclass defined in the fixnet package."""
    found = {}
    ambiguous = set()
    todo = list(Step.__subclasses__())
    seen = set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        if not (cls.__module__ == "fixnet" or cls.__module__.startswith("fixnet.")):
            continue
        if cls.__name__.startswith("_"):
            continue
        if cls.__name__ in found and found[cls.__name__] is not cls:
            ambiguous.add(cls.__name__)
        found[cls.__name__] = cls
    for name in ambiguous:      # two fixnet classes of one name: refuse both rather than guess
        del found[name]
    return found


def _model_parts(path, m, arrays, budget=None):
    dec = _Decoder(path, arrays)

    # tensors
    tensors = {}
    for i, t in enumerate(m["tensors"]):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise _bad(path, f"tensor {i} has no name")
        name = t["name"]
        if name in tensors:
            raise _bad(path, f"tensor '{name}' is listed twice")
        shape = t.get("shape")
        # a dimension of any length (null) counts as 1, as fixnet/limits.py does for the float
        # graph: the limits are per step of the sequence
        elements = math.prod(1 if d is None else d for d in shape) \
            if _is_tensor_shape(shape) else None
        if elements is None or elements > MAX_TENSOR_ELEMENTS or 0 in shape:
            raise _bad(path, f"tensor '{name}' has shape {_short(shape)}")
        if budget is not None:
            budget.need(elements, f"tensor '{name}' (int8, at batch 1)")
        q = t.get("qparams")
        if not isinstance(q, dict):
            raise _bad(path, f"tensor '{name}' has no quantization parameters")
        fields = {k: dec.value(v, f"tensor '{name}'") for k, v in q.items()}
        if set(fields) != {f.name for f in dataclasses.fields(QParams)}:
            raise _bad(path, f"tensor '{name}': quantization parameters {sorted(fields)}, "
                             f"expected {sorted(f.name for f in dataclasses.fields(QParams))}")
        scale, zp = fields.get("scale"), fields.get("zero_point")
        if not (isinstance(scale, (float, np.floating)) and math.isfinite(scale) and scale > 0):
            raise _bad(path, f"tensor '{name}': scale {scale!r} is not a positive finite float")
        if not (isinstance(zp, (int, np.integer)) and not isinstance(zp, bool)
                and INT8_MIN <= zp <= INT8_MAX):
            raise _bad(path, f"tensor '{name}': zero point {zp!r} is not an int8")
        length_of = t.get("length_of")
        if None in shape or length_of is not None:
            if not (isinstance(length_of, list) and len(length_of) == len(shape)
                    and all((k is None) != (d is None) for k, d in zip(length_of, shape))
                    and all(k is None or (isinstance(k, int) and not isinstance(k, bool)
                                          and 0 <= k < 8 * len(m["inputs"]))
                            for k in length_of)):
                raise _bad(path, f"tensor '{name}': length_of {_short(length_of)} does not name "
                                 f"a length for each null of its shape {_short(shape)}")
            length_of = tuple(length_of)
        tensors[name] = TensorSpec(tuple(shape), QParams(**fields), length_of)

    # model inputs and outputs
    for key in ("inputs", "outputs"):
        names = m[key]
        if not names or not all(isinstance(n, str) and n in tensors for n in names):
            raise _bad(path, f"model {key} {_short(names)} name tensors the file does not describe")
        if len(set(names)) != len(names):
            raise _bad(path, f"model {key} {_short(names)} repeat a tensor")

    # steps
    registry = step_registry()
    defined = set(m["inputs"])
    steps = []
    for i, s in enumerate(m["steps"]):
        where = f"step {i}"
        if not isinstance(s, dict) or not isinstance(s.get("class"), str) \
                or not isinstance(s.get("state"), dict):
            raise _bad(path, f"{where} has no class or state")
        cls_name = s["class"]
        cls = registry.get(cls_name)
        if cls is None:
            raise _bad(path, f"{where} is of step class {_short(cls_name)}, which is not a fixnet "
                             "step (unknown or from a newer fixnet); nothing was run")
        state = {}
        for k, v in s["state"].items():
            if not k.isidentifier() or k.startswith("__"):
                raise _bad(path, f"{where} ({cls_name}): attribute name {_short(k)}")
            state[k] = dec.value(v, f"{where} ({cls_name}) attribute '{k}'")
        name = state.get("name")
        where = f"step {i} '{name}' ({cls_name})"
        for k in ("name", "layer"):
            if not isinstance(state.get(k), str):
                raise _bad(path, f"{where}: '{k}' is missing or not a string")
        for k in ("inputs", "outputs"):
            v = state.get(k)
            if not isinstance(v, list) or not v or not all(isinstance(t, str) for t in v):
                raise _bad(path, f"{where}: '{k}' is missing or not a list of tensor names")
        for t in state["inputs"]:
            if t not in tensors:
                raise _bad(path, f"{where} reads tensor '{t}', which the file does not describe")
            if t not in defined:
                raise _bad(path, f"{where} reads tensor '{t}' before any step writes it")
        for t in state["outputs"]:
            if t not in tensors:
                raise _bad(path, f"{where} writes tensor '{t}', which the file does not describe")
            if t in defined:
                raise _bad(path, f"{where} writes tensor '{t}', which is already written")
            defined.add(t)
        for k in _WEIGHT_ATTRS:
            w = state.get(k)
            if isinstance(w, np.ndarray):
                if w.dtype != np.int8:
                    raise _bad(path, f"{where}: weights '{k}' are {w.dtype}, not int8")
                if w.size and int(w.min()) < -127:
                    raise _bad(path, f"{where}: weights '{k}' hold -128 (the numeric contract "
                                     "keeps int8 weights in [-127, 127])")
        step = cls.__new__(cls)
        setstate = getattr(cls, "__setstate__", None)
        if setstate is not None and setstate is not getattr(object, "__setstate__", None):
            step.__setstate__(state)
        else:
            step.__dict__.update(state)
        if not isinstance(step, Step):
            raise _bad(path, f"{where} is not a step")
        steps.append(step)
    for t in m["outputs"]:
        if t not in defined:
            raise _bad(path, f"model output '{t}' is written by no step")
    unused = set(arrays) - dec.used
    if unused:
        raise _bad(path, f"array(s) {sorted(unused)[:5]} are referred to by no step")

    _check_lengths(path, tensors, m["inputs"])
    return ModelParts(path, m["name"], steps, tensors, m["inputs"], m["outputs"],
                      m.get("overflow_proven") is True)


def check_model(parts, qm):
    """The model ``qm`` built from ``parts`` (fixnet.runtime.load_fxn) runs: every step binds
    to its buffers and runs once (_check_plan), and a model saved with an overflow proof has
    one again. ModelFileError naming the file otherwise."""
    path = parts.source
    _check_plan(path, qm)
    if parts.overflow_proven:
        try:
            proven = qm.overflow_report().proven
        except Exception as e:
            raise _bad(path, f"the overflow proof cannot be rebuilt ({type(e).__name__}: {e})")
        if not proven:
            raise _bad(path, "the saved model had an int32 overflow proof; the loaded one does not")


def _check_lengths(path, tensors, inputs):
    """The length symbols are the inputs' null dimensions, in order: each input's null
    dimension follows its own symbol, and every other tensor's a symbol that exists."""
    symbols = length_symbols(inputs, {t: tensors[t].shape for t in inputs})
    for k, (t, d) in enumerate(symbols):
        if tensors[t].length_of[d] != k:
            raise _bad(path, f"input '{t}': dimension {d + 1} of any length follows length "
                             f"{tensors[t].length_of[d]}, not its own ({k})")
    for name, spec in tensors.items():
        if spec.length_of is not None and any(k is not None and k >= len(symbols)
                                              for k in spec.length_of):
            raise _bad(path, f"tensor '{name}': length_of {list(spec.length_of)} names a length "
                             f"the inputs do not have ({len(symbols)} of any length)")


def _check_plan(path, qm):
    """Bind every step to buffers for a batch of one (at length 1 for the dimensions of any
    length) and run it on zero-point inputs, naming the step whose arrays or shapes do not
    fit (kernel calls check dtypes and shapes). Nothing is kept: the model plans its own
    buffers at the first predict."""
    lengths = (1,) * len(qm.length_symbols)
    shapes = qm.shapes_for(lengths)
    try:
        steps = qm.steps_for(lengths)
    except Exception as e:     # a step between tensors of two different lengths
        raise _bad(path, str(e)) from None
    bufs = {}
    for t in qm.inputs:
        bufs[t] = np.full((1,) + shapes[t], qm.tensors[t].qparams.zero_point, np.int8)
    for i, s in enumerate(steps):
        try:
            if s.alias:
                src = bufs[s.inputs[0]]
                bufs[s.outputs[0]] = src.reshape((1,) + shapes[s.outputs[0]])
                continue
            for t in s.outputs:
                bufs[t] = np.zeros((1,) + shapes[t], np.int8)
            s.bind(bufs)()
        except MemoryError:
            raise
        except Exception as e:   # a kernel's own check, or NumPy refusing a shape: a bad file
            raise _bad(path, f"step {i} '{s.name}' ({type(s).__name__}) does not fit its tensors "
                             f"({type(e).__name__}: {e})") from None
