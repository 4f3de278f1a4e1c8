"""The file entry points: a full-model `.h5`, a Keras 3 `.keras` archive, an architecture JSON
with its weights file. TensorFlow is never imported and no code stored in a file is ever
executed."""
import json
import os
import zipfile
import zlib

from .. import h5safe
from ..errors import FixnetError, ModelFileError
from ..limits import MemoryBudget, max_memory_bytes
from .builder import GraphBuilder
from .config import HDF5_MAGIC, MAX_CONFIG_BYTES
from .weights import KerasV3Weights, as_text, weights_source


def _guarded(path, fn):
    """Run a reader, turning any low-level failure into a ModelFileError naming the file."""
    try:
        return fn()
    except FixnetError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError, RuntimeError,
            OverflowError, ZeroDivisionError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        # RuntimeError: what HDF5 raises for some damaged structures (and RecursionError)
        raise ModelFileError(f"{path}: damaged or unexpected Keras file structure "
                             f"({type(e).__name__}: {e})") from None


def _open_h5(path, what="model"):
    import h5py
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot open ({e.strerror or e})") from None
    if magic != HDF5_MAGIC:
        raise ModelFileError(f"{path}: not an HDF5 file (a Keras {what} saved as .h5 starts with "
                             "the HDF5 signature)")
    try:
        return h5py.File(path, "r")
    except Exception as e:
        raise ModelFileError(f"{path}: the HDF5 file cannot be read; it may be truncated or "
                             f"damaged ({e})") from None


def _json(text, path, what):
    try:
        if len(text) > MAX_CONFIG_BYTES:
            raise ValueError(f"{len(text)} bytes, more than a model config ever holds")
        return json.loads(as_text(text))
    except (ValueError, RecursionError) as e:       # RecursionError: absurdly deep nesting
        raise ModelFileError(f"{path}: {what} is not valid JSON ({type(e).__name__}: {e})") from None


def load_keras_h5(path, max_memory=None):
    """Read a Keras full-model HDF5 file (``model.save("x.h5")``) into a float Graph.
    ``max_memory``: see fixnet.limits."""
    path = os.fspath(path)
    budget = MemoryBudget(max_memory_bytes(max_memory), path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot open ({e.strerror or e})") from None
    if magic == b"PK\x03\x04":
        return load_keras_archive(path, max_memory)
    f = _open_h5(path)

    def read():
        with f:
            with h5safe.reading(path):
                raw = f.attrs.get("model_config")
            if raw is None:
                if "layer_names" in f.attrs or h5safe.child(f, "layers", path) is not None:
                    raise ModelFileError(
                        f"{path}: holds weights only (save_weights); load it together with the "
                        "architecture: fixnet.load('model.json', weights=path)")
                raise ModelFileError(f"{path}: an HDF5 file, but not a Keras model (no model_config)")
            if not isinstance(raw, (str, bytes)):
                raise ModelFileError(f"{path}: the model_config attribute is not text")
            model_cfg = _json(raw, path, "model_config")
            with h5safe.reading(path):
                version = as_text(f.attrs.get("keras_version", "2"))
            return GraphBuilder(path, weights_source(f, path, budget), version, budget).build(model_cfg)
    return _guarded(path, read)


def load_keras_archive(path, max_memory=None):
    """Read a Keras 3 ``.keras`` archive: a zip of config.json, metadata.json and
    model.weights.h5. Nothing in it is executed."""
    import io

    import h5py
    path = os.fspath(path)
    budget = MemoryBudget(max_memory_bytes(max_memory), path)

    def entry(z, name, limit):
        info = z.getinfo(name)
        if info.file_size > limit:
            raise ModelFileError(f"{path}: {name} in the archive declares {info.file_size} bytes, "
                                 f"more than allowed ({limit})")
        try:
            return z.read(name)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
                NotImplementedError) as e:
            raise ModelFileError(f"{path}: {name} in the archive is damaged ({e})") from None

    def read():
        try:
            z = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise ModelFileError(f"{path}: a damaged zip archive ({e})") from None
        with z:
            names = set(z.namelist())
            if "config.json" not in names:
                raise ModelFileError(f"{path}: a zip archive without config.json: not a Keras "
                                     ".keras model file")
            cfg = _json(entry(z, "config.json", MAX_CONFIG_BYTES), path, "config.json")
            meta = _json(entry(z, "metadata.json", MAX_CONFIG_BYTES), path, "metadata.json") \
                if "metadata.json" in names else {}
            if not isinstance(meta, dict):
                raise ModelFileError(f"{path}: metadata.json is not a JSON object")
            wname = "model.weights.h5"
            if wname not in names:
                raise ModelFileError(f"{path}: the archive holds no {wname}")
            data = entry(z, wname, budget.limit)
            if data[:8] != HDF5_MAGIC:
                raise ModelFileError(f"{path}: {wname} in the archive is not an HDF5 file")
            try:
                f = h5py.File(io.BytesIO(data), "r")
            except Exception as e:
                raise ModelFileError(f"{path}: {wname} inside the archive cannot be read ({e})") from None
        with f:
            version = str(meta.get("keras_version", "3"))
            return GraphBuilder(path, KerasV3Weights(f, f"{path}:{wname}", budget), version,
                            budget).build(cfg)
    return _guarded(path, read)


def load_keras_json(path, weights, max_memory=None):
    """Read an architecture JSON (``model.to_json()``) and a weights file (``save_weights``:
    Keras 2 ``.h5`` or Keras 3 ``.weights.h5``, or a full-model ``.h5``)."""
    path, weights = os.fspath(path), os.fspath(weights)
    budget = MemoryBudget(max_memory_bytes(max_memory), path)
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot open ({e.strerror or e})") from None
    cfg = _json(text, path, "the architecture file")
    if not isinstance(cfg, dict) or "class_name" not in cfg:
        raise ModelFileError(f"{path}: JSON, but not a Keras model architecture (no class_name)")
    f = _open_h5(weights, "weights file")

    def read():
        with f:
            version = str(cfg.get("keras_version") or as_text(f.attrs.get("keras_version", "3")))
            return GraphBuilder(path, weights_source(f, weights, budget), version, budget).build(cfg)
    return _guarded(weights, read)
