"""How much memory a model file may ask for, checked before anything is allocated.

A damaged or hostile file can declare a weight of 2^40 elements or an input of 10^9 x 10^9
pixels. The loaders add up what the file declares (weights from the dataset shapes, before
reading them; activations from the inferred tensor shapes at batch 1) and refuse the model,
naming the file and the layer, once the sum passes the limit:

- ``fixnet.load(path, max_memory=...)``: bytes (an int), or a string such as "512M", "4G";
- else the environment variable ``FIXNET_MAX_MEMORY`` (same forms);
- else ``DEFAULT_MAX_MEMORY``, 4 GiB.
"""
import os
import re

from .errors import FixnetError, ModelFileError

DEFAULT_MAX_MEMORY = 4 << 30
ENV_VAR = "FIXNET_MAX_MEMORY"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value, what):
    """Bytes from an int or a string like "4G", "512M", "1048576", "1.5G"."""
    if isinstance(value, bool):
        raise FixnetError(f"{what}: {value!r} is not a size in bytes")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        n = int(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGT]?)(?:i?B)?\s*", value.upper())
        if m is None:
            raise FixnetError(f"{what}: {value!r} is not a size (bytes, or a number with K, M, G "
                              "or T, e.g. '4G')")
        n = int(float(m.group(1)) * _UNITS[m.group(2)])
    else:
        raise FixnetError(f"{what}: {value!r} is not a size in bytes")
    if n <= 0:
        raise FixnetError(f"{what}: {value!r} must be a positive number of bytes")
    return n


def max_memory_bytes(max_memory=None):
    """The limit in force: the argument, else $FIXNET_MAX_MEMORY, else 4 GiB."""
    if max_memory is not None:
        return parse_size(max_memory, "max_memory")
    env = os.environ.get(ENV_VAR)
    if env:
        return parse_size(env, f"environment variable {ENV_VAR}")
    return DEFAULT_MAX_MEMORY


def _human(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


class MemoryBudget:
    """A running total of the bytes a model file declares, against a limit."""

    def __init__(self, limit, path):
        self.limit, self.path = int(limit), path
        self.used = 0

    def need(self, nbytes, what):
        """Count ``nbytes`` for ``what`` (e.g. "layer 'dense' (Dense): weight 'kernel'"), or
        raise ModelFileError if the total would pass the limit."""
        nbytes = int(nbytes)
        if nbytes < 0 or self.used + nbytes > self.limit:
            where = what if str(what).startswith(str(self.path)) else f"{self.path}: {what}"
            raise ModelFileError(
                f"{where} needs {_human(nbytes)}, which brings the model past the memory "
                f"limit of {_human(self.limit)} ({_human(self.used)} already declared); the file is "
                f"damaged, or pass a larger max_memory= to fixnet.load (or set {ENV_VAR})")
        self.used += nbytes
