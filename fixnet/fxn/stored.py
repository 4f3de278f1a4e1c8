"""How format 2 stores each array: all of them in one archive entry (``arrays.bin``), each
array's bytes at the offset its spec names, in the smallest of a few exact forms.

An array spec (the manifest's "arrays": {name: spec}) is::

    {"dtype": its dtype (ARRAY_DTYPES), "shape": [int, ...], "offset": int,   # always
     "as": a narrower integer dtype,                                          # optional
     "fill": true,                                                            # optional
     "palette": {"axis": null or an axis, "codes": 1 to 16}}                  # optional

The stored dtype S is "as" if present, else "dtype". "as" is an integer dtype of fewer bytes
that the array's dtype holds every value of (an int32 array of shifts in [-13, -5] is stored
as int8); reading widens the values back to "dtype". The array's bytes, from "offset":

- "fill": one element of S: every element of the array has that value (its bytes);
- "palette" (an int8 array, without "as" or "fill"): tables of int8 codes and 4-bit indices,
  as fixnet/fxn/palette.py lays them out (stored_shape gives the uint8 array);
- otherwise the array's N elements in C order as S's byte planes: byte 0 (the least
  significant, little-endian) of every element, then byte 1 of every element, ... (for a
  one-byte S simply the elements). Planes deflate better than interleaved bytes: the high
  bytes of small integers and of multipliers in [2^30, 2^31) repeat.

The offsets tile ``arrays.bin`` exactly: sorted by offset, each array starts where the one
before it ends, the first at 0, and the last ends at the entry's end. Reading checks that,
each spec's keys, types and combinations, and that S can be widened to "dtype" exactly
before anything else looks at the array.
"""
import math

import numpy as np

from .palette import MAX_CODES, expand_palette, palette_form, stored_shape

BLOB_NAME = "arrays.bin"
SPEC_KEYS = {"dtype", "shape", "offset", "as", "fill", "palette"}
# the integer dtypes an array may be stored "as", narrowest first (within one size, signed
# first: most arrays of a size hold negative values)
NARROW_DTYPES = tuple(np.dtype(d) for d in ("|i1", "|u1", "<i2", "<u2", "<i4", "<u4"))


def store_array(a):
    """(spec without "offset", bytes) of little-endian array ``a`` in its stored form."""
    spec = {"dtype": a.dtype.str, "shape": list(a.shape)}
    flat = np.ascontiguousarray(a).reshape(-1)
    if flat.size > 1 and _all_equal(flat):
        flat = flat[:1]
        spec["fill"] = True
    elif a.dtype == np.int8:
        form = palette_form(a)
        if form is not None:
            axis, packed, codes = form
            spec["palette"] = {"axis": axis, "codes": codes}
            return spec, packed.tobytes()
    narrow = _narrowest(flat)
    if narrow != flat.dtype:
        spec["as"] = narrow.str
        flat = flat.astype(narrow)
    return spec, _planes(flat)


def _all_equal(flat):
    """Every element has the first one's bytes (so -0.0 is not 0.0, and a NaN equals itself)."""
    rows = flat.view(np.uint8).reshape(flat.size, flat.dtype.itemsize)
    return bool(np.all(rows == rows[0]))


def _narrowest(flat):
    """The narrowest dtype of NARROW_DTYPES that holds every value of integer array ``flat``
    and widens back to its dtype exactly; its own dtype if none is narrower."""
    if flat.dtype.kind not in "iu" or flat.size == 0:
        return flat.dtype
    lo, hi = int(flat.min()), int(flat.max())
    for d in NARROW_DTYPES:
        if (d.itemsize < flat.dtype.itemsize and np.can_cast(d, flat.dtype, "safe")
                and np.iinfo(d).min <= lo and hi <= np.iinfo(d).max):
            return d
    return flat.dtype


def _planes(flat):
    """The bytes of 1-D little-endian array ``flat`` as byte planes."""
    b = flat.view(np.uint8).reshape(flat.size, flat.dtype.itemsize)
    return np.ascontiguousarray(b.T).tobytes()


class StoredSpec:
    """One array spec of the manifest, checked: what the array is and where its bytes are."""

    def __init__(self, name, dtype, shape, offset, stored_dtype, fill, palette):
        self.name, self.dtype, self.shape, self.offset = name, dtype, shape, offset
        self.stored_dtype, self.fill, self.palette = stored_dtype, fill, palette
        if fill:
            self.nbytes = stored_dtype.itemsize
        elif palette is not None:
            self.nbytes = math.prod(stored_shape(shape, *palette))
        else:
            self.nbytes = stored_dtype.itemsize * math.prod(shape)

    def decode(self, blob):
        """The array (native byte order, C-contiguous, writable) from its bytes in ``blob``."""
        raw = np.frombuffer(blob, np.uint8, self.nbytes, self.offset)
        if self.stored_dtype.kind == "b" and raw.size and int(raw.max()) > 1:
            raise ValueError("a bool is stored as a byte other than 0 or 1")
        if self.palette is not None:
            return expand_palette(raw.reshape(stored_shape(self.shape, *self.palette)),
                                  *self.palette, self.shape)
        size = 1 if self.fill else math.prod(self.shape)
        s = self.stored_dtype
        values = np.ascontiguousarray(raw.reshape(s.itemsize, size).T).view(s).reshape(-1)
        native = self.dtype.newbyteorder("=")
        if self.fill:
            return np.full(self.shape, values[0], native)
        return values.astype(native).reshape(self.shape)


def stored_spec(name, spec, dtypes, is_shape):
    """StoredSpec of manifest array spec ``spec`` (``dtypes``: the dtype strings the format
    stores; ``is_shape``: the shape check). Raises ValueError saying what is wrong."""
    if not isinstance(spec, dict) or not set(spec) <= SPEC_KEYS:
        raise ValueError(f"spec {_short(spec)} is not one the format stores")
    if spec.get("dtype") not in dtypes or not is_shape(spec.get("shape")):
        raise ValueError(f"dtype/shape {_short(spec)} is not one the format stores")
    offset = spec.get("offset")
    if type(offset) is not int or offset < 0:
        raise ValueError(f"offset {_short(offset)} is not a non-negative int")
    dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
    stored = dtype
    if "as" in spec:
        stored = np.dtype(spec["as"]) if spec["as"] in dtypes else None
        if not (stored is not None and dtype.kind in "iu" and stored in NARROW_DTYPES
                and stored.itemsize < dtype.itemsize and np.can_cast(stored, dtype, "safe")):
            raise ValueError(f"a {dtype.str} array cannot be stored as {_short(spec['as'])} (a "
                             "narrower integer dtype whose every value it holds)")
    fill = "fill" in spec
    if fill and (spec["fill"] is not True or math.prod(shape) < 1):
        raise ValueError(f"fill {_short(spec['fill'])} of an array of shape {list(shape)}")
    palette = None
    if "palette" in spec:
        p = spec["palette"]
        ok = (dtype == np.int8 and stored == dtype and not fill and isinstance(p, dict)
              and set(p) == {"axis", "codes"})
        axis, codes = (p["axis"], p["codes"]) if ok else (None, None)
        if not (ok and (axis is None or (type(axis) is int and 0 <= axis < len(shape)))
                and type(codes) is int and 1 <= codes <= MAX_CODES):
            raise ValueError(f"palette {_short(p)} of a {spec['dtype']} array of shape "
                             f"{list(shape)}{' stored as ' + stored.str if stored != dtype else ''}"
                             f"{' (a fill)' if fill else ''} is not one the format stores")
        palette = (axis, codes)
    return StoredSpec(name, dtype, shape, offset, stored, fill, palette)


def check_tiling(specs, blob_size):
    """The arrays' bytes tile the blob of ``blob_size`` bytes exactly. Raises ValueError naming
    the array whose bytes do not fit."""
    position, before = 0, None
    for s in sorted(specs, key=lambda s: (s.offset, s.nbytes, s.name)):
        if s.offset != position:
            what = "the start" if before is None else f"the end of array {before.name}"
            raise ValueError(f"array {s.name} starts at byte {s.offset} of {BLOB_NAME}, not at "
                             f"{what} (byte {position})")
        position, before = s.offset + s.nbytes, s
    if position != blob_size:
        last = f"array {before.name}'s stored form ends" if before else "no array ends"
        raise ValueError(f"{BLOB_NAME} holds {blob_size} bytes, {last} at byte {position}")


def _short(v, n=80):
    r = repr(v)
    return r if len(r) <= n else r[:n - 3] + "..."

