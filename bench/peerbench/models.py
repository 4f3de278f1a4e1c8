"""The models of a run: which files --models means (.h5 fixtures in models/, the bench model zoo
in bench/zoo/, paths to .h5 files; paths to .tflite files and folders of them), building missing
zoo models, and ModelInputs (a Keras model's inputs at each batch size, its calibration data and
Keras float outputs; a .tflite file's inputs are tflite_inputs.py's)."""
import fnmatch
import importlib.util
import os
import pathlib
import sys

import numpy as np

from .catalog import (CNN_FAMILIES, GROUPS, MLP_FAMILIES, MODELS_DIR, RNN_FAMILIES, ZOO_GROUP,
                      ZOO_KIND, ZOO_PY)


def model_dtype(x):
    """Integer inputs (token ids) stay integers (int32, as Keras and the peers take them)."""
    return np.int32 if np.issubdtype(np.asarray(x).dtype, np.integer) else np.float32


class ModelInputs:
    """One model's inputs at each batch size (test samples, cycled if needed), its calibration
    data, and the Keras float outputs of the accuracy samples.

    ``batches`` are the timed batch sizes; ``acc`` (the number of accuracy samples) is one more
    batch size every runner is built for, run once, untimed. ``keras_float``: one array, or a
    list with one per output. ``tflite_error``: why the fixture has no int8 .tflite (the
    converter's error, stored in the .npz), or None."""

    def __init__(self, name, h5, tflite, x_test, x_calib, keras_float, tflite_x, tflite_out_q,
                 batches, acc, kind, what="", tflite_error=None):
        self.name, self.h5, self.tflite, self.kind, self.what = name, h5, tflite, kind, what
        dtype = model_dtype(x_test)
        self.x_calib = np.ascontiguousarray(x_calib, dtype)
        self.acc = x_test.shape[0] if acc is None else min(acc, x_test.shape[0])
        self.timed = list(batches)
        self.batches = sorted(set(batches) | {self.acc})
        idx = {n: np.arange(n) % x_test.shape[0] for n in self.batches}
        self.x = {n: np.ascontiguousarray(x_test[i], dtype) for n, i in idx.items()}
        outs = keras_float if isinstance(keras_float, (list, tuple)) else [keras_float]
        self.keras_outs = [np.asarray(k[:self.acc], np.float64) for k in outs]
        self.tflite_x = ({n: np.ascontiguousarray(tflite_x[i]) for n, i in idx.items()}
                         if tflite_x is not None else None)
        self.tflite_out_q = tflite_out_q
        self.tflite_error = tflite_error

    @classmethod
    def fixture(cls, h5_path, batches, acc):
        """The model `h5_path` with the .npz next to it (models/README.md's layout)."""
        data = np.load(h5_path.with_suffix(".npz"))
        tfl_x = data["tflite_input_int8"] if "tflite_input_int8" in data else None
        out_q = ((float(data["tflite_output_scale"]), int(data["tflite_output_zero_point"]))
                 if "tflite_output_scale" in data else None)
        stem = h5_path.stem
        kind = ("mlp" if stem.startswith("mlp_") else "rnn" if stem.startswith("rnn_")
                else ZOO_KIND if stem.startswith("zoo_") else "cnn")
        what = str(data["zoo_stands_for"]) if "zoo_stands_for" in data else ""
        if "keras_float" in data:
            kf = data["keras_float"]
        else:                       # several outputs: keras_float_0, keras_float_1, ...
            n_out = sum(1 for k in data.files if k.startswith("keras_float_")
                        and k[len("keras_float_"):].isdigit())
            kf = [data[f"keras_float_{i}"] for i in range(n_out)]
        err = str(data["tflite_error"]) if "tflite_error" in data else None
        return cls(stem, h5_path, h5_path.with_suffix(".tflite"), data["x_test"],
                   data["x_calib"], kf, tfl_x, out_q, batches, acc, kind, what,
                   tflite_error=err)


def family_paths(fams):
    """The fixtures of model families (both writers: <family>_k3, <family>_tfk2) in models/."""
    return [p for f in fams for p in sorted(MODELS_DIR.glob(f"{f}_*.h5"))
            if p.stem in (f"{f}_k3", f"{f}_tfk2")]


MODEL_SUFFIXES = (".h5", ".tflite")


def tflite_folder(folder):
    """The .tflite files in `folder` (not its subfolders), sorted; exits if there is none."""
    found = sorted(q for q in folder.iterdir() if q.suffix == ".tflite" and q.is_file())
    if not found:
        sys.exit(f"peers.py: no .tflite file in the folder {folder}")
    return found


def model_paths(names):
    """The .h5 and .tflite files of --models `names` (None: every CNN and MLP fixture), in
    order, each once; exits naming what matches nothing, a missing file, or a file that is
    neither .h5 nor .tflite. A folder means each .tflite file in it. A name with a path
    separator is a path; a bare name is a fixture name, family, group, zoo name or pattern
    first, and a folder only if it is none of those."""
    if names == ["none"]:
        return []
    if not names:
        return family_paths(CNN_FAMILIES + MLP_FAMILIES)
    out = []
    for name in names:
        found = (file_paths(name) if pathlib.Path(name).suffix in MODEL_SUFFIXES
                 or os.sep in name or "/" in name else named_paths(name))
        out += [q for q in found if q not in out]
    return out


def file_paths(name):
    """The model files of a path on --models: a .h5 or .tflite file, or a folder's .tflite
    files; exits naming a path that is missing or is another kind of file."""
    p = pathlib.Path(name)
    if p.is_dir():
        return tflite_folder(p)
    if not p.exists():
        sys.exit(f"peers.py: no model file {p}" if p.suffix in MODEL_SUFFIXES
                 else f"peers.py: no such file or folder {p}")
    if p.suffix not in MODEL_SUFFIXES or not p.is_file():
        sys.exit(f"peers.py: {p} is not a .h5 or .tflite file (nor a folder of .tflite files)")
    return [p]


def named_paths(name):
    """The .h5 files a bare --models name means (family, group, zoo name, pattern over
    models/), else the .tflite files of a folder of that name; exits if it matches nothing."""
    fams = GROUPS.get(name, [name] if name in CNN_FAMILIES + MLP_FAMILIES + RNN_FAMILIES
                      else None)
    if fams is not None:
        return family_paths(fams)
    if name.startswith(ZOO_GROUP):
        zoo = zoo_module()
        found = zoo.resolve(name)
        if not found:
            sys.exit(f"peers.py: no zoo model matches {name!r} (bench/zoo.py list: "
                     f"{', '.join(zoo.ZOO)})")
        return [zoo.ZOO[n].h5 for n in found]
    matches = sorted(q for q in MODELS_DIR.glob("*.h5") if fnmatch.fnmatch(q.stem, name))
    if matches:
        return matches
    if pathlib.Path(name).exists():
        return file_paths(name)
    sys.exit(f"peers.py: no model in {MODELS_DIR} matches {name!r}")


_ZOO = None


def zoo_module():
    """bench/zoo.py (the zoo's names and builders; imports neither TensorFlow nor fixnet)."""
    global _ZOO
    if _ZOO is None:
        spec = importlib.util.spec_from_file_location("fixnet_bench_zoo", ZOO_PY)
        _ZOO = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_ZOO)
    return _ZOO


def ensure_zoo(paths, console):
    """Build the zoo models among `paths` that are not in bench/zoo/ yet (or were made by an
    older recipe), each in a child process of this Python (TensorFlow needed there); returns
    `paths` without the ones that could not be built, each named with the reason."""
    zoo = zoo_module()
    names = [p.stem for p in paths if p.stem in zoo.ZOO and p == zoo.ZOO[p.stem].h5]
    missing = [n for n in names if not zoo.ZOO[n].cached()]
    if not missing:
        return paths
    if importlib.util.find_spec("tensorflow") is None:
        failed = {n: "not built, and building needs TensorFlow (python bench/zoo.py build "
                     "zoo, with a Python that has it, then run this again)" for n in missing}
    else:
        failed = zoo.ensure(missing, log=lambda text: console.print(text, highlight=False))
    for n, why in failed.items():
        console.print(f"[bold]{n}[/bold]: skipped: {why}")
    return [p for p in paths if p.stem not in failed]
