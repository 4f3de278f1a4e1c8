"""Data files the commands read: calibration, evaluation and input data.

DATA is one of
- ``x.npy``: one array (for a one-input model);
- ``x.npz``: the array named after the colon (``data.npz:x_calib``; for a model with several
  inputs, names separated by commas, in the inputs' order); without a name, the only array in
  the file, else the arrays named as the model's inputs;
- a folder of images (PNG, JPEG, BMP, GIF, TIFF, WebP; needs Pillow: ``pip install
  'fixnet[images]'``), read in file-name order, converted to grey or RGB as the model's input
  has 1 or 3 channels, resized to its height and width, and mapped from pixel values 0-255 to
  ``image_range`` (default 0-255: a model that starts with a Rescaling layer wants those).

Arrays are never unpickled (``allow_pickle=False``). Every problem is a DataFileError naming
the file.
"""
import os
import zipfile

import numpy as np

from ..errors import DataFileError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_data(spec, input_shapes, input_names=None, what="DATA", image_range=(0.0, 255.0),
              mmap=False):
    """The array (one-input model) or list of arrays (one per input) that ``spec`` names.

    input_shapes: the model's input shapes without the batch dimension; input_names: the
    model's input names (for .npz files of several-input models); what: the argument's name in
    messages (e.g. "--calib"); mmap: an .npy file is memory-mapped (read-only) instead of read
    whole, so that a caller going through it a batch at a time holds only that batch.
    """
    spec = os.fspath(spec)
    path, key = spec, None
    if not os.path.exists(spec) and ":" in spec:
        path, key = spec.rsplit(":", 1)
    if os.path.isdir(path):
        if len(input_shapes) != 1:
            raise DataFileError(f"{what} {path}: a folder of images feeds a one-input model; "
                                f"this model has {len(input_shapes)} inputs (give an .npz)")
        return read_images(path, input_shapes[0], what, image_range)
    if not os.path.exists(path):
        raise DataFileError(f"{what} {path}: no such file or folder")
    if path.lower().endswith(".npz") or zipfile.is_zipfile(path):
        arrays = _read_npz(path, key, input_shapes, input_names, what)
    else:
        if key is not None:
            raise DataFileError(f"{what} {spec}: only an .npz file has named arrays")
        arrays = [_read_npy(path, what, mmap)]
        if len(input_shapes) != 1:
            raise DataFileError(f"{what} {path}: one array for a model with "
                                f"{len(input_shapes)} inputs (give an .npz with one array per "
                                f"input: {', '.join(input_names or [])})")
    for a, shape, i in zip(arrays, input_shapes, range(len(arrays))):
        _check_array(a, shape, f"{what} {spec}" + (f" (input {i})" if len(arrays) > 1 else ""))
    return arrays[0] if len(arrays) == 1 else arrays


def _read_npy(path, what, mmap=False):
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataFileError(f"{what} {path}: not a readable .npy array ({_short(e)})") from None


def _read_npz(path, key, input_shapes, input_names, what):
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if key is not None:
                keys = key.split(",")
            elif len(names) == 1:
                keys = names
            elif input_names and all(n in names for n in input_names):
                keys = list(input_names)
            else:
                raise DataFileError(
                    f"{what} {path}: holds {len(names)} arrays ({', '.join(names[:12])}"
                    f"{', ...' if len(names) > 12 else ''}): name one, as {path}:{names[0]}")
            missing = [k for k in keys if k not in names]
            if missing:
                raise DataFileError(f"{what} {path}: no array named {missing[0]!r} (it holds "
                                    f"{', '.join(names[:12])})")
            if len(keys) != len(input_shapes):
                raise DataFileError(f"{what} {path}: {len(keys)} arrays named for a model with "
                                    f"{len(input_shapes)} inputs")
            return [z[k] for k in keys]
    except DataFileError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DataFileError(f"{what} {path}: not a readable .npz file ({_short(e)})") from None


def _check_array(a, shape, where):
    if a.dtype.kind not in "fiub":
        raise DataFileError(f"{where}: holds {a.dtype} values, not numbers")
    if a.ndim != len(shape) + 1 or any(w is not None and d != w       # None: any length
                                       for d, w in zip(a.shape[1:], shape)):
        if a.ndim == len(shape) and all(w is None or d == w for d, w in zip(a.shape, shape)):
            raise DataFileError(f"{where}: shape {a.shape} is one sample; the model wants a batch "
                                f"of shape (N,) + {tuple(shape)} (add a first dimension)")
        raise DataFileError(f"{where}: shape {a.shape}, the model wants (N,) + {tuple(shape)}")
    if a.shape[0] == 0:
        raise DataFileError(f"{where}: holds no samples")


def _short(e, n=120):
    s = " ".join(str(e).split()) or type(e).__name__
    return s if len(s) <= n else s[:n - 3] + "..."


def read_images(folder, shape, what="DATA", image_range=(0.0, 255.0)):
    """The images in ``folder`` as a float32 array of shape (N,) + shape."""
    try:
        from PIL import Image
    except ImportError:
        raise DataFileError(f"{what} {folder}: reading images needs Pillow: "
                            "pip install 'fixnet[images]'") from None
    if None in tuple(shape):
        raise DataFileError(f"{what} {folder}: the model's input {tuple(shape)} has a dimension of "
                            "any length; images are resized to a fixed size (pass .npy data)")
    shape = tuple(int(d) for d in shape)
    if len(shape) == 2:
        h, w, c = shape[0], shape[1], None
    elif len(shape) == 3 and shape[2] in (1, 3, 4):
        h, w, c = shape
    else:
        raise DataFileError(f"{what} {folder}: the model's input {shape} is not an image "
                            "(height, width[, 1, 3 or 4 channels])")
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(folder, f)))
    if not files:
        raise DataFileError(f"{what} {folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    mode = {None: "L", 1: "L", 3: "RGB", 4: "RGBA"}[c]
    lo, hi = (float(v) for v in image_range)
    out = np.empty((len(files),) + shape, np.float32)
    for i, f in enumerate(files):
        p = os.path.join(folder, f)
        try:
            with Image.open(p) as im:
                im = im.convert(mode).resize((w, h), Image.BILINEAR)
                a = np.asarray(im, np.float32)
        except Exception as e:        # Pillow raises many kinds for a damaged image
            raise DataFileError(f"{what} {p}: not a readable image ({_short(e)})") from None
        out[i] = a.reshape(shape)
    return out * np.float32((hi - lo) / 255.0) + np.float32(lo)
