"""Reading a model's HDF5 file without ever leaving it, and without trusting what it declares.

- Only hard links are followed: an external link would open another file, a soft link can point
  anywhere in this one; Keras writes neither. Each path component is checked before it is
  opened (h5py's ``name in group`` would already follow an external link).
- A dataset is read only if its data lives in the file: virtual datasets (data in other files)
  and external storage (raw data in other files) are refused, and so are filters other than the
  ones HDF5 and h5py build in (an unknown filter makes HDF5 look for a plugin to load).
- Its declared shape is counted against the memory budget before it is read, and it must hold
  real numbers: float16/32/64 and integers are converted to float32; strings, compounds,
  complex numbers and the like are refused. NaN, infinity and values beyond float32 are refused.
- Every h5py/HDF5 failure becomes a ModelFileError naming the file and what was being read.
"""
import contextlib
import math

import numpy as np

from .errors import ModelFileError

# HDF5's own filters and h5py's LZF: nothing is loaded from outside to decode them
BUILTIN_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit",
                   6: "scaleoffset", 32000: "lzf"}
MAX_RANK = 8
# what h5py or HDF5 raise on a damaged file (HDF5 errors arrive as OSError, KeyError,
# RuntimeError or ValueError depending on the call)
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError,
             SystemError, OverflowError)


@contextlib.contextmanager
def reading(where):
    """Turn an h5py/HDF5 failure inside the block into a ModelFileError naming ``where``."""
    try:
        yield
    except ModelFileError:
        raise
    except H5_ERRORS as e:
        raise ModelFileError(f"{where}: the HDF5 file is damaged ({type(e).__name__}: {e})") from None


def _link_kind(group, name, where):
    with reading(where):
        key = name.encode("utf-8")
        if not group.id.links.exists(key):
            return None
        return group.id.links.get_info(key).type


def child(group, path, where):
    """``group[path]`` following hard links only, or None if a component does not exist.
    ``where`` names the file (and layer) for messages."""
    import h5py
    if group is None:
        return None
    obj = group
    for comp in str(path).split("/"):
        if comp in ("", "."):
            continue
        if comp == ".." or not isinstance(obj, h5py.Group):
            raise ModelFileError(f"{where}: weight path '{path}' does not name an object inside "
                                 "the file")
        kind = _link_kind(obj, comp, where)
        if kind is None:
            return None
        if kind != h5py.h5l.TYPE_HARD:
            what = {h5py.h5l.TYPE_SOFT: "a soft link",
                    h5py.h5l.TYPE_EXTERNAL: "an external link (to another file)"}.get(kind, "a user-defined link")
            raise ModelFileError(f"{where}: '{obj.name.rstrip('/')}/{comp}' is {what}; fixnet reads "
                                 "only objects stored in the model file itself and follows no links")
        with reading(where):
            obj = obj[comp]
    return obj


def keys(group, where):
    """Member names of a group (listing them follows no link)."""
    if group is None:
        return []
    with reading(where):
        return [str(k) for k in group.keys()]


def check_dataset(ds, where):
    """Refuse a dataset whose data would come from outside the file or needs a plugin; return
    its shape."""
    import h5py
    if not isinstance(ds, h5py.Dataset):
        raise ModelFileError(f"{where}: '{ds.name}' is a group, not a dataset of weights")
    with reading(where):
        if ds.is_virtual:
            raise ModelFileError(f"{where}: '{ds.name}' is a virtual dataset (its data lives in "
                                 "other files); fixnet reads only data stored in the model file")
        if ds.external:
            raise ModelFileError(f"{where}: '{ds.name}' keeps its data in external file(s) "
                                 f"{[e[0] for e in ds.external]}; fixnet reads only data stored "
                                 "in the model file")
        plist = ds.id.get_create_plist()
        for i in range(plist.get_nfilters()):
            code = plist.get_filter(i)[0]
            if code not in BUILTIN_FILTERS:
                raise ModelFileError(f"{where}: '{ds.name}' is compressed with HDF5 filter {code}, "
                                     "which is not built into HDF5; fixnet loads no filter plugins")
        shape = ds.shape
    if shape is None or len(shape) > MAX_RANK:
        raise ModelFileError(f"{where}: '{ds.name}' has no shape or rank above {MAX_RANK}")
    return tuple(int(d) for d in shape)


def read_weight(ds, where, budget):
    """The dataset as a finite float32 array, after the checks above; its declared size is
    counted in ``budget`` (a fixnet.limits.MemoryBudget) before anything is read."""
    shape = check_dataset(ds, where)
    n = math.prod(shape)
    with reading(where):
        dt = ds.dtype
    if dt.kind not in "fiub" or dt.fields is not None or dt.subdtype is not None \
            or (dt.kind == "f" and dt.itemsize not in (2, 4, 8)):
        raise ModelFileError(f"{where}: '{ds.name}' holds {dt} values, not real numbers")
    budget.need(n * max(4, dt.itemsize), f"{where} ('{ds.name}', declared shape {shape})")
    with reading(where):
        raw = ds[()]
    raw = np.asarray(raw)
    if raw.shape != shape:
        raise ModelFileError(f"{where}: '{ds.name}' read as shape {raw.shape}, declared {shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        a = raw.astype(np.float32)
    if a.size and not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a))
        raise ModelFileError(
            f"{where}: '{ds.name}' holds {bad.size} value(s) that are NaN, infinite or beyond "
            f"float32 (the first at flat index {int(bad[0])}: {raw.reshape(-1)[bad[0]]!r})")
    return a
