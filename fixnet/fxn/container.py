"""The .fxn container: the header (magic, version, length, SHA-256), the ZIP payload, the
manifest and the arrays, read with every size, type and index checked; the errors of a
damaged or inconsistent file."""
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

from ..errors import ModelFileError
from .palette import MAX_CODES, expand_palette, stored_shape
from .stored import BLOB_NAME, check_tiling, stored_spec

MAGIC = b"FIXNET\x00"
FORMAT_VERSION = 2                  # what save_model writes
READABLE_VERSIONS = (1, 2)          # what read_model_parts reads
# 1: one .npy entry per array; 2: every array in one entry (fixnet/fxn/stored.py)
FORMAT_NAME = "fixnet-int8-model"
HEADER = struct.Struct("<7sIQ32s")
HEADER_SIZE = HEADER.size          # 51 bytes
MANIFEST_NAME = "manifest.json"

# Sanity limits for hostile files (a file whose checksum matches may still be crafted).
MAX_MANIFEST_BYTES = 64 << 20
MAX_TENSOR_ELEMENTS = 1 << 28       # per tensor, without batch
# Array dtypes the format stores (little-endian on disk, native in memory); no objects.
ARRAY_DTYPES = ("|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8",
                 "<f2", "<f4", "<f8")


class FxnVersionError(ModelFileError):
    """The .fxn file was written by a newer fixnet (a format version this fixnet cannot read)."""


class FxnWriteError(ModelFileError, OSError):
    """The .fxn file could not be written; the target path was left as it was."""




def zip_write(z, name, data):
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))   # same model, same bytes
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    z.writestr(info, data, compresslevel=9)


def read_manifest(path):
    """The manifest of a .fxn file (a dict, see the module docstring), after the header,
    version and checksum checks; the arrays are not read."""
    path = os.fspath(path)
    manifest, _ = read_container(path, with_arrays=False)
    return manifest


def is_fxn_file(path):
    """True if ``path`` starts with the .fxn magic (nothing else is checked)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_container(path, with_arrays, budget=None):
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
    return parse_container(path, data, with_arrays, budget)


def parse_container(path, data, with_arrays, budget=None):
    """The manifest and (``with_arrays``) the arrays of the .fxn bytes ``data``; ``path``
    names them in errors."""
    version = _check_magic_and_version(path, data[:HEADER_SIZE])
    payload = _check_length_and_checksum(path, data)
    try:
        z = zipfile.ZipFile(io.BytesIO(payload))
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise damaged_file(path, f"the payload is not a valid archive ({e})")
    with z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise damaged_file(path, "the archive holds duplicate entries")
        if MANIFEST_NAME not in names:
            raise damaged_file(path, f"the archive has no {MANIFEST_NAME}")
        manifest = _parse_manifest(path, _read_entry(path, z, z.getinfo(MANIFEST_NAME),
                                                     MAX_MANIFEST_BYTES), version)
        if version >= 2:
            return manifest, _read_stored_arrays(path, z, names, manifest, with_arrays, budget)
        specs = _array_specs(path, manifest)
        extra = set(names) - set(specs) - {MANIFEST_NAME}
        if extra:
            raise damaged_file(path, f"the archive holds entries the manifest does not list: "
                                 f"{sorted(extra)[:5]}")
        missing = set(specs) - set(names)
        if missing:
            raise damaged_file(path, f"array(s) listed in the manifest are missing: {sorted(missing)[:5]}")
        arrays = {}
        if with_arrays:
            for entry, (dtype, shape, palette) in specs.items():
                if budget is not None:
                    budget.need(dtype.itemsize * math.prod(shape), f"array {entry}")
            for entry, (dtype, shape, palette) in specs.items():
                if palette is None:
                    arrays[entry] = _read_array(path, z, z.getinfo(entry), dtype, shape)
                else:
                    arrays[entry] = _read_palette_array(path, z, entry, shape, *palette)
    return manifest, arrays


def _read_stored_arrays(path, z, names, m, with_arrays, budget):
    """{name: array} of a format-2 archive (``with_arrays``; else {} once the specs are
    checked): every array's bytes in its BLOB_NAME entry, as fixnet/fxn/stored.py lays out."""
    specs = []
    for name, spec in m["arrays"].items():
        if not _ARRAY_NAME.fullmatch(name):
            raise bad_file(path, f"array name {short_repr(name)} is not one the format stores")
        try:
            specs.append(stored_spec(name, spec, ARRAY_DTYPES, _is_shape))
        except ValueError as e:
            raise bad_file(path, f"array {name}: {e}")
    expected = {MANIFEST_NAME, BLOB_NAME} if specs else {MANIFEST_NAME}
    if set(names) != expected:
        extra, missing = set(names) - expected, expected - set(names)
        raise damaged_file(path, f"the archive holds {sorted(names)[:5]}, not {sorted(expected)}"
                           + (f": {sorted(missing)} missing" if missing else "")
                           + (f": {sorted(extra)[:5]} unexpected" if extra else ""))
    if not specs:
        return {}
    blob_size = sum(s.nbytes for s in specs)
    try:
        check_tiling(specs, z.getinfo(BLOB_NAME).file_size)
    except ValueError as e:
        raise bad_file(path, str(e))
    if not with_arrays:
        return {}
    if budget is not None:
        for s in specs:
            budget.need(s.dtype.itemsize * math.prod(s.shape), f"array {s.name}")
    blob = _read_entry(path, z, z.getinfo(BLOB_NAME), blob_size)
    if len(blob) != blob_size:
        raise damaged_file(path, f"entry {BLOB_NAME} holds {len(blob)} bytes, the arrays "
                                 f"{blob_size}")
    arrays = {}
    for s in specs:
        try:
            arrays[s.name] = s.decode(blob)
        except ValueError as e:
            raise bad_file(path, f"array {s.name}: its stored form does not hold together: {e}")
    return arrays


_ARRAY_NAME = re.compile(r"[A-Za-z0-9_.]{1,120}")


def _check_magic_and_version(path, data):
    """The format version from the first bytes of the file (the magic and the version sit at
    the same place in every format version)."""
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        if MAGIC.startswith(data):
            raise damaged_file(path, f"the file is truncated ({len(data)} bytes)")
        hint = ""
        if data[:8] == b"\x89HDF\r\n\x1a\n":
            hint = " (it is an HDF5 file: a Keras model, to load with fixnet.load and quantize)"
        elif data[:4] == b"PK\x03\x04":
            hint = " (it is a ZIP archive, e.g. a Keras .keras file)"
        raise ModelFileError(f"{path}: not a fixnet .fxn model file: it does not start with the "
                             f"fixnet magic bytes{hint}")
    if len(data) < len(MAGIC) + 4:
        raise damaged_file(path, f"the file is truncated in its header ({len(data)} bytes)")
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
        raise damaged_file(path, f"the file is truncated in its header ({len(data)} bytes)")
    _, _, length, digest = HEADER.unpack_from(data, 0)
    payload = data[HEADER_SIZE:]
    if len(payload) < length:
        raise damaged_file(path, f"the file is truncated: {HEADER_SIZE + length} bytes expected, "
                             f"{len(data)} found")
    if len(payload) > length:
        raise damaged_file(path, f"{len(payload) - length} unexpected byte(s) after the end of the "
                             "model data")
    if hashlib.sha256(payload).digest() != digest:
        raise damaged_file(path, "checksum mismatch (SHA-256 of the content does not match the header)")
    return payload


def damaged_file(path, why):
    return ModelFileError(f"{path}: damaged fixnet model file: {why}")


def bad_file(path, why):
    return ModelFileError(f"{path}: inconsistent fixnet model file: {why}")


def _read_entry(path, z, info, limit):
    if info.file_size > limit:
        raise damaged_file(path, f"entry {info.filename} is larger ({info.file_size} bytes) than "
                             f"expected (at most {limit})")
    try:
        with z.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as e:
        raise damaged_file(path, f"entry {info.filename} cannot be read ({e})")
    if len(data) > limit:
        raise damaged_file(path, f"entry {info.filename} is larger than expected")
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
        raise damaged_file(path, f"the manifest is not valid JSON ({e})")
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise bad_file(path, "the manifest does not describe a fixnet int8 model")
    if m.get("format_version") != version or isinstance(m.get("format_version"), bool):
        raise bad_file(path, f"the manifest's format version {m.get('format_version')!r} differs from "
                         f"the header's ({version})")
    for key, kind in (("name", str), ("inputs", list), ("outputs", list), ("tensors", list),
                      ("steps", list), ("arrays", dict)):
        if not isinstance(m.get(key), kind):
            raise bad_file(path, f"the manifest's '{key}' is missing or not a {kind.__name__}")
    return m


def _array_specs(path, m):
    """{entry: (dtype, shape, palette)}: palette None (a plain .npy) or (axis, codes) for an
    int8 array stored as 4-bit indices into tables of ``codes`` codes (fixnet/fxn/palette.py)."""
    specs = {}
    for entry, spec in m["arrays"].items():
        if not (entry.startswith("arrays/") and entry.endswith(".npy")):
            raise bad_file(path, f"array entry name {entry!r} is not under arrays/")
        if (not isinstance(spec, dict) or spec.get("dtype") not in ARRAY_DTYPES
                or not _is_shape(spec.get("shape")) or not set(spec) <= {"dtype", "shape", "palette"}):
            raise bad_file(path, f"array {entry}: dtype/shape {short_repr(spec)} is not one the "
                                 "format stores")
        shape = tuple(spec["shape"])
        palette = _palette_spec(path, entry, spec, shape) if "palette" in spec else None
        specs[entry] = (np.dtype(spec["dtype"]), shape, palette)
    return specs


def _palette_spec(path, entry, spec, shape):
    """(axis, codes) of an array spec's "palette": {"axis": null or an axis of the array,
    "codes": the codes per table, 1 to 16}; only an int8 array has one."""
    p = spec["palette"]
    ok = spec["dtype"] == "|i1" and isinstance(p, dict) and set(p) == {"axis", "codes"}
    axis, codes = (p["axis"], p["codes"]) if ok else (None, None)
    if not (ok and (axis is None or (type(axis) is int and 0 <= axis < len(shape)))
            and type(codes) is int and 1 <= codes <= MAX_CODES):
        raise bad_file(path, f"array {entry}: palette {short_repr(p)} of a {spec['dtype']} array "
                             f"of shape {list(shape)} is not one the format stores")
    return axis, codes


def _read_palette_array(path, z, entry, shape, axis, codes):
    """The int8 array ``entry`` stored as tables of codes and 4-bit indices."""
    stored = _read_array(path, z, z.getinfo(entry), np.dtype("|u1"),
                         stored_shape(shape, axis, codes), "its palette form needs")
    try:
        return expand_palette(stored, axis, codes, shape)
    except ValueError as e:
        raise bad_file(path, f"array {entry}: its palette does not hold together: {e}")


def _is_shape(s):
    return (isinstance(s, list) and len(s) <= 8
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 31 for d in s))


def is_tensor_shape(s):
    """A tensor's shape: as _is_shape, and null for a dimension of any length."""
    return (isinstance(s, list) and len(s) <= 8
            and _is_shape([d for d in s if d is not None]))


def _read_array(path, z, info, dtype, shape, expected="the manifest says"):
    nbytes = dtype.itemsize * math.prod(shape)
    raw = _read_entry(path, z, info, nbytes + 4096)        # the .npy header is < 4 KiB
    try:
        a = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError) as e:
        raise damaged_file(path, f"array {info.filename} cannot be read ({e})")
    if a.dtype.str != dtype.str or a.shape != shape:
        raise bad_file(path, f"array {info.filename} is {a.dtype.str} {a.shape}, {expected} "
                         f"{dtype.str} {shape}")
    if a.dtype.str[0] == "<" and sys.byteorder != "little":
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def short_repr(v, n=80):
    r = repr(v)
    return r if len(r) <= n else r[:n - 3] + "..."
