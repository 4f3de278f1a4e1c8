"""The inside of .fxn files, for tests that craft them: the payload's archive entries, and in
format 2 each array's stored bytes (fixnet/fxn/stored.py). Rewritten files get a valid header
and checksum: what a crafted file is (the checksum only proves no accidental damage)."""
import hashlib
import io
import json
import struct
import zipfile

HEADER = struct.Struct("<7sIQ32s")
BLOB = "arrays.bin"


def split(data):
    """(format version, {entry: bytes}) of the .fxn bytes ``data``."""
    version = struct.unpack_from("<I", data, 7)[0]
    with zipfile.ZipFile(io.BytesIO(data[HEADER.size:])) as z:
        return version, {i.filename: z.read(i.filename) for i in z.infolist()}


def join(version, entries):
    """The .fxn bytes of archive ``entries`` under a header of ``version``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    payload = buf.getvalue()
    return HEADER.pack(b"FIXNET\x00", version, len(payload),
                       hashlib.sha256(payload).digest()) + payload


def segments(entries):
    """(manifest, {array name: its stored bytes}) of format-2 archive ``entries``."""
    from fixnet.fxn.container import ARRAY_DTYPES, _is_shape
    from fixnet.fxn.stored import stored_spec
    m = json.loads(entries["manifest.json"])
    blob = entries.get(BLOB, b"")
    out = {}
    for name, spec in m["arrays"].items():
        s = stored_spec(name, spec, ARRAY_DTYPES, _is_shape)
        out[name] = blob[s.offset:s.offset + s.nbytes]
    return m, out


def pack_segments(entries, m, segs):
    """Write manifest ``m`` and the stored bytes ``segs`` into ``entries``, the arrays one
    after another in the manifest's order (each spec's offset set to where its bytes go)."""
    offset, parts = 0, []
    for name, spec in m["arrays"].items():
        if isinstance(spec, dict):
            spec["offset"] = offset
        data = segs.get(name, b"")
        parts.append(data)
        offset += len(data)
    entries["manifest.json"] = json.dumps(m).encode()
    entries[BLOB] = b"".join(parts)


def decode(m, segs, name):
    """Array ``name`` as its spec and stored bytes give it."""
    from fixnet.fxn.container import ARRAY_DTYPES, _is_shape
    from fixnet.fxn.stored import stored_spec
    spec = dict(m["arrays"][name], offset=0)
    return stored_spec(name, spec, ARRAY_DTYPES, _is_shape).decode(segs[name])


def store(m, segs, name, a):
    """Array ``name`` replaced by ``a`` (its spec and bytes as the writer would store it)."""
    from fixnet.fxn.stored import store_array
    spec, data = store_array(a.astype(a.dtype.newbyteorder("<")) if a.dtype.itemsize > 1 else a)
    m["arrays"][name] = spec
    segs[name] = data


def edit_arrays(data, fn):
    """The .fxn bytes ``data`` (format 2) with ``fn(manifest, segments)`` applied."""
    version, entries = split(data)
    m, segs = segments(entries)
    fn(m, segs)
    pack_segments(entries, m, segs)
    return join(version, entries)
