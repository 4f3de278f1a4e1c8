"""A flatbuffers ``Table`` that never reads outside its buffer.

The flatbuffers Python runtime trusts the file: an offset past the end raises struct.error,
one that wraps below zero may read from the end of the buffer instead (Python's negative
indexing), and a string or vector longer than what is left is cut short without a word. The
classes generated from TFLite's schema (the ``tflite`` package) do every read through their
table's methods, so a generated object whose ``_tab`` is a CheckedTable reads only inside the
file: each method below checks the span it is about to read and raises OutOfBounds otherwise.
Imported only once ``flatbuffers`` is known to be installed.
"""
import struct

import numpy as np
from flatbuffers import number_types as N
from flatbuffers.table import Table

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")


class OutOfBounds(Exception):
    """A read outside the file, or a table whose vtable cannot be right."""


class CheckedTable(Table):
    """flatbuffers.table.Table with every read checked against the buffer's length."""

    __slots__ = ()

    def _span(self, off, size, what):
        n = len(self.Bytes)
        if not 0 <= off <= n - size:
            raise OutOfBounds(f"{what} at byte {off} ({size} bytes) lies outside the "
                              f"{n}-byte file")

    def Get(self, flags, off):
        self._span(off, flags.bytewidth, "a value")
        return flags.py_type(flags.packer_type.unpack_from(self.Bytes, off)[0])

    def Offset(self, vtableOffset):
        """The offset of a field from the table's start (0: the field is absent), after
        checking the table's vtable: inside the file, of an even size of at least 4 bytes,
        and the field inside the table's declared size."""
        buf, pos = self.Bytes, self.Pos
        self._span(pos, 4, "a table")
        vtable = pos - _I32.unpack_from(buf, pos)[0]
        self._span(vtable, 4, "a table's vtable")
        vt_size, table_size = struct.unpack_from("<HH", buf, vtable)
        if vt_size < 4 or vt_size % 2:
            raise OutOfBounds(f"the vtable at byte {vtable} declares {vt_size} bytes")
        self._span(vtable, vt_size, "a table's vtable")
        self._span(pos, max(table_size, 4), "a table")
        if vtableOffset + 2 > vt_size:
            return 0
        off = _U16.unpack_from(buf, vtable + vtableOffset)[0]
        if off and not 4 <= off < table_size:
            raise OutOfBounds(f"a field of the table at byte {pos} lies at {off}, beyond the "
                              f"table's {table_size} bytes")
        return off

    def Indirect(self, off):
        self._span(off, 4, "an offset")
        return off + _U32.unpack_from(self.Bytes, off)[0]

    def String(self, off):
        start = self.Indirect(off)
        self._span(start, 4, "a string's length")
        n = _U32.unpack_from(self.Bytes, start)[0]
        self._span(start + 4, n, f"a string of {n} bytes")
        return bytes(self.Bytes[start + 4:start + 4 + n])

    def _vector(self, off):
        vec = self.Indirect(self.Pos + off)
        self._span(vec, 4, "a vector's length")
        return vec + 4, _U32.unpack_from(self.Bytes, vec)[0]

    def VectorLen(self, off):
        start, n = self._vector(off)
        # every element takes at least one byte: a length beyond the file is damage, and
        # bounds how long a loop over the elements can run
        self._span(start, n, f"a vector of {n} elements")
        return n

    def Vector(self, off):
        return self._vector(off)[0]

    def Union(self, t2, off):
        t2.Bytes = self.Bytes
        t2.Pos = self.Indirect(self.Pos + off)

    def GetVectorAsNumpy(self, flags, off):
        start, n = self._vector(off)
        dtype = np.dtype(N.to_numpy_type(flags))
        self._span(start, n * dtype.itemsize, f"a vector of {n} {dtype} values")
        return np.frombuffer(self.Bytes, dtype, n, start)

    def GetArrayAsNumpy(self, flags, off, length):
        dtype = np.dtype(N.to_numpy_type(flags))
        self._span(off, length * dtype.itemsize, f"an array of {length} {dtype} values")
        return np.frombuffer(self.Bytes, dtype, length, off)


def checked(obj):
    """A generated tflite object (or None) with its table replaced by a CheckedTable; the
    generated accessors that return a nested table make it with a plain Table."""
    if obj is not None:
        obj._tab = CheckedTable(obj._tab.Bytes, obj._tab.Pos)
    return obj


def root(cls, buf):
    """The root table of the flatbuffer ``buf`` as a checked ``cls`` object."""
    obj = cls()
    obj._tab = CheckedTable(buf, 0)
    obj._tab.Pos = obj._tab.Indirect(0)
    return obj
