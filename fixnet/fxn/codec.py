"""Values of a step's state to and from the manifest's JSON (tagged arrays, tuples, dicts,
NumPy scalars, floats, bytes, QParams), the model's encoder, and the registry of step
classes a file may name."""
import base64
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import zipfile

import numpy as np

from .. import ops  # noqa: F401  (defines the step classes step_registry finds)
from .._version import __version__
from ..errors import ModelFileError
from ..fileio import write_atomically
from ..quant.qparams import QParams
from ..step import Step
from .container import (ARRAY_DTYPES, FORMAT_NAME, FORMAT_VERSION, HEADER, MAGIC, MANIFEST_NAME,
                        FxnWriteError, bad_file, short_repr, zip_write)
from .stored import BLOB_NAME, store_array

# Value types allowed inside a step's state as tagged dataclasses.
_DATACLASSES = {"QParams": QParams}



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
            enc.step_index, enc.attr = i, re.sub(r"[^A-Za-z0-9_]+", "_", k)[:60]
            encoded[k] = enc.value(v, f"{where_step} attribute '{k}'")
        steps.append({"class": cls.__name__, "module": cls.__module__, "state": encoded})
    specs, blob = _stored_arrays(enc.arrays)
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
        "arrays": specs,
        "overflow_proven": proven,
    }
    config = getattr(qm, "config", None)
    if config is not None:
        manifest["config"] = config.to_dict()
    if getattr(qm, "input_rounding", "fixnet") != "fixnet":
        manifest["input_rounding"] = str(qm.input_rounding)
    manifest_bytes = json.dumps(manifest, separators=(",", ":"), allow_nan=False).encode("utf-8")

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        zip_write(z, MANIFEST_NAME, manifest_bytes)
        if specs:
            zip_write(z, BLOB_NAME, blob)
    payload = buf.getvalue()
    header = HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest())
    return header + payload


def _stored_arrays(arrays):
    """The manifest's array specs and the bytes of BLOB_NAME: each array in its stored form
    (fixnet/fxn/stored.py), the arrays of one attribute (every step's "m0", every "bias", ...)
    next to each other, as they deflate better side by side."""
    specs, parts, offset = {}, [], 0
    for name, (attr, a) in sorted(arrays.items(), key=lambda kv: kv[1][0]):   # stable
        spec, data = store_array(a)
        specs[name] = dict(spec, offset=offset)
        parts.append(data)
        offset += len(data)
    return {name: specs[name] for name in arrays}, b"".join(parts)


class _Encoder:
    """Turns state values into JSON, collecting arrays (each object stored once)."""

    def __init__(self, where):
        self.where = where
        self.arrays = {}        # name -> (attribute, little-endian array)
        self._by_id = {}        # id(original array) -> (entry, original: kept alive)
        self.step_index, self.attr = 0, "x"

    def value(self, v, what):
        # exact types only: a subclass (np.float64 is a float, a namedtuple a tuple) would
        # come back as its base class
        t = type(v)
        if isinstance(v, np.generic):
            dt = v.dtype if v.dtype.byteorder == "|" else v.dtype.newbyteorder("<")
            if dt.str not in ARRAY_DTYPES:
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
        if dt.str not in ARRAY_DTYPES:
            raise self._error(what, f"an array of dtype {a.dtype}")
        le = a.astype(dt, copy=False)
        name = f"{len(self.arrays)}_{self.step_index}_{self.attr}"
        self.arrays[name] = (self.attr, le)
        self._by_id[id(a)] = (name, a)
        return name

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


class Decoder:
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
            raise bad_file(self.path, f"{what}: {short_repr(v)} is not an encoded value")
        if "$array" in v and len(v) == 1:
            entry = v["$array"]
            if not isinstance(entry, str) or entry not in self.arrays:
                raise bad_file(self.path, f"{what}: refers to array {short_repr(entry)}, which the file "
                                      "does not hold")
            self.used.add(entry)
            return self.arrays[entry]
        if "$tuple" in v and len(v) == 1 and isinstance(v["$tuple"], list):
            return tuple(self.value(e, what) for e in v["$tuple"])
        if "$dict" in v and len(v) == 1 and isinstance(v["$dict"], list):
            out = {}
            for pair in v["$dict"]:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise bad_file(self.path, f"{what}: a dict item {short_repr(pair)} is not a pair")
                key = self.value(pair[0], what)
                try:
                    out[key] = self.value(pair[1], what)
                except TypeError:
                    raise bad_file(self.path, f"{what}: dict key {short_repr(pair[0])} is not hashable")
            return out
        if "$float" in v and len(v) == 1 and v["$float"] in ("nan", "inf", "-inf"):
            return float(v["$float"])
        if "$np" in v and len(v) == 2 and "value" in v and v["$np"] in ARRAY_DTYPES:
            item = self.value(v["value"], what)
            if isinstance(item, (dict, list, tuple, str, type(None))):
                raise bad_file(self.path, f"{what}: NumPy scalar value {short_repr(v['value'])}")
            try:
                return np.dtype(v["$np"]).newbyteorder("=").type(item)
            except (OverflowError, ValueError, TypeError) as e:
                raise bad_file(self.path, f"{what}: NumPy scalar {short_repr(v)} ({e})")
        if "$bytes" in v and len(v) == 1 and isinstance(v["$bytes"], str):
            try:
                return base64.b64decode(v["$bytes"], validate=True)
            except ValueError:
                raise bad_file(self.path, f"{what}: bad base64 bytes")
        if ("$dataclass" in v and len(v) == 2 and v["$dataclass"] in _DATACLASSES
                and isinstance(v.get("fields"), dict)):
            cls = _DATACLASSES[v["$dataclass"]]
            fields = {k: self.value(e, what) for k, e in v["fields"].items()}
            if set(fields) != {f.name for f in dataclasses.fields(cls)}:
                raise bad_file(self.path, f"{what}: {cls.__name__} fields {sorted(fields)}")
            return cls(**fields)
        raise bad_file(self.path, f"{what}: {short_repr(v)} is not an encoded value")


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
