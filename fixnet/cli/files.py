"""Model and output files of the commands: opening MODEL [--weights W] (a Keras file or a
fixnet .fxn), checking that an output path will not overwrite one of the inputs, and writing
arrays (.npy / .npz) atomically."""
import io
import os
import zipfile

import numpy as np

from ..errors import FixnetError
from ..fileio import write_atomically
from . import UsageError

def open_model(path, weights=None, what="MODEL"):
    """fixnet.load(path, weights) with the command line's wording for arguments that do not
    go together: a FloatModel (Keras .h5/.keras; with ``weights``, ``path`` is an architecture
    JSON whatever its name, as for fixnet.load) or a QuantizedModel (.fxn). A file that cannot
    be read raises ModelFileError naming it."""
    import fixnet
    from ..fxn import is_fxn_file

    if weights is not None and is_fxn_file(path):
        raise UsageError(f"--weights {weights}: goes with a Keras .json architecture; "
                         f"{what} {path} is a fixnet .fxn model")
    if weights is None and os.fspath(path).lower().endswith(".json") and not is_fxn_file(path):
        raise UsageError(f"{what} {path}: an architecture JSON needs its weights: "
                         "--weights model.weights.h5")
    return fixnet.load(path, weights)


def is_quantized(model):
    from ..runtime import QuantizedModel
    return isinstance(model, QuantizedModel)


def data_path(spec):
    """The file or folder a DATA argument names (``data.npz:name`` -> ``data.npz``)."""
    spec = os.fspath(spec)
    if not os.path.exists(spec) and ":" in spec:
        return spec.rsplit(":", 1)[0]
    return spec


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output_path(out, what, inputs):
    """Refuse (UsageError, before any work is done) an output path ``out`` (the option
    ``what``) that is a folder, is in a folder that does not exist, or is one of ``inputs``
    ({argument name: path}, e.g. the model file): the command would overwrite its own input."""
    out = os.fspath(out)
    if os.path.isdir(out):
        raise UsageError(f"{what} {out}: is a folder; give a file name")
    directory = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(directory):
        raise UsageError(f"{what} {out}: the folder {directory} does not exist")
    for name, path in inputs.items():
        if path is not None and os.path.exists(path) and not os.path.isdir(path) \
                and _same_file(out, path):
            raise UsageError(f"{what} {out}: is the {name} file; writing there would "
                             "overwrite it (give another output file)")


def save_arrays(path, arrays):
    """Write ``arrays`` ({name: array}) to ``path``: an .npy file for one array, an .npz
    (uncompressed, names kept) for any number; atomically (fixnet.fileio.write_atomically)."""
    buf = io.BytesIO()
    if os.fspath(path).lower().endswith(".npy"):
        if len(arrays) != 1:
            raise FixnetError(f"{path}: an .npy file holds one array, not {len(arrays)}")
        np.save(buf, next(iter(arrays.values())), allow_pickle=False)
    else:       # as np.savez writes it, for any names (np.savez's own keywords included)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for name, a in arrays.items():
                with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
    write_atomically(path, buf.getvalue())
