"""Damaged and hostile model files for the fuzz test (tests/test_fuzz.py), and the worker
processes that run them.

A case is one integer seed. ``case_for_seed(seed)`` picks the mutation (cycling through all of
them, so any 200 consecutive seeds cover each several times), the fixture and format it applies
to, and every random choice the mutation makes, from that seed alone. ``run_case`` builds the
damaged file(s) in a work folder and runs the user's path on them: ``fixnet.load``,
``quantize`` (8 calibration samples of the fixture's ``x_calib``, nearest rounding, "minmax"
ranges; "auto" for one case in ten of the long campaign) and ``predict``. The outcome
must be either correct results (finite outputs of the declared shape) or a ``fixnet.FixnetError``
whose message names the file (and the layer, where the mutation targets one layer's weights).

The worker side: ``python tests/fuzzcases.py --worker DIR`` reads case seeds (one JSON line each)
on stdin and writes one JSON outcome line per case; ``WorkerPool`` in the test keeps a few such
workers alive, with an address-space limit (RLIMIT_AS) set in each, a time bound per case, and a
restart when one dies, the case in flight counting as a crash or a hang.

Reproduce a case: ``python tests/fuzzcases.py SEED`` (runs it in this process and prints the
outcome and traceback); add ``--keep DIR`` to keep the damaged files.
"""
import io
import json
import os
import random
import shutil
import struct
import sys
import time
import traceback
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")

# Memory the loader may plan for in a worker (FIXNET_MAX_MEMORY), and the address-space limit of
# a worker process. The budget keeps every model that loads small enough to quantize and predict
# well inside the limit; a model beyond it must be refused before anything is allocated.
WORKER_MAX_MEMORY = 48 << 20
WORKER_ADDRESS_SPACE = 3 << 30
CALIBRATION_SAMPLES = 8
PREDICT_SAMPLES = 3
# What "ok" means for a damaged file that loads (run_case, res["checked"]):
# - .fxn, damaged bytes (truncated, flipped, overwritten, header edits): its SHA-256 covers every
#   byte of the payload, so one that still loads must predict exactly as the undamaged file
#   (int8 codes and float outputs, bit for bit);
# - .fxn, crafted with a valid checksum (manifest or array edits): a different model may be
#   valid, so its kernels must give its own oracle's bits (fixnet.oracle), and finite outputs;
# - Keras files: the int8 outputs on the calibration samples (no clipping to blame) must be
#   within SQNR_BAR of the damaged model's own float path, so a weight or config that the
#   quantizer reads differently from the float path is caught. The suite's usual bar:
#   tests/test_model_fixtures.py FLOAT_SQNR_BAR (checked equal in tests/test_fuzz.py).
#   Except where a weight is beyond EXTREME_WEIGHT (a value of 1e30 or 3e38 written into one
#   element): no int8 tensor can share a scale between such a value and the ordinary ones, so
#   no quantizer meets the bar; fixnet's contract there is "quantize or refuse with a
#   FixnetError" (tests/test_dead_channels.py), and a model that quantizes must be
#   self-consistent: finite outputs, kernels bit-exact with the oracle.
SQNR_BAR = 20.0
EXTREME_WEIGHT = 1e20
FXN_CRAFTED = ("fxn_manifest", "fxn_array", "fxn_palette", "fxn_stored")

# (fixture, format). "h5": full-model HDF5; "keras": Keras 3 archive; "json": architecture JSON
# + weights file; "fxn": fixnet's own file, made at test time with qm.save from the fixture;
# "tflite": models/tflite/<fixture>.tflite, the TFLite converter's file (loaded, no quantize).
TARGETS = [
    ("mlp_seq_k3", "h5"), ("mlp_seq_tfk2", "h5"), ("mlp_func_k3", "h5"), ("mlp_func_tfk2", "h5"),
    ("cnn_digits_k3", "h5"), ("cnn_digits_tfk2", "h5"), ("layers_conv1d_tfk2", "h5"),
    ("layers_merge_k3", "h5"), ("layers_tensor_ops_tfk2", "h5"), ("multi_io_tfk2", "h5"),
    ("cnn_digits_k3", "keras"), ("multi_io_k3", "keras"), ("layers_tensor_ops_k3", "keras"),
    ("cnn_digits_k3", "json"), ("cnn_digits_tfk2", "json"),
    ("mlp_seq_k3", "fxn"), ("mlp_func_tfk2", "fxn"), ("cnn_digits_tfk2", "fxn"),
    ("cnn_digits_k3", "fxn"),
    # TFLite's converter's files of the fixtures (models/tflite/), loaded with fixnet.load
    ("mlp_seq_k3.int8io", "tflite"), ("cnn_digits_k3.uint8io", "tflite"),
    ("layers_merge_k3.int8io", "tflite"), ("kws_dscnn_k3.int8io", "tflite"),
    ("layers_tensor_ops_k3.int8io", "tflite"),
]
# .fxn targets quantized with codebook16 weights: their weight arrays are stored as tables of
# codes and 4-bit indices (fixnet/fxn/palette.py), which m_fxn_palette damages
CODEBOOK_FXN = {"cnn_digits_k3"}
# fixtures without weights (weight mutations skip them)
NO_WEIGHTS = {"layers_merge_k3"}
# fixtures cheap enough for the default run (most cases go to these)
SMALL = {"mlp_seq_k3", "mlp_seq_tfk2", "mlp_func_k3", "mlp_func_tfk2", "layers_merge_k3",
         "mlp_seq_k3.int8io", "layers_merge_k3.int8io", "layers_tensor_ops_k3.int8io",
         "layers_conv1d_tfk2", "multi_io_tfk2", "multi_io_k3", "layers_tensor_ops_tfk2",
         "layers_tensor_ops_k3"}


# ---------------------------------------------------------------------------------------------
# the mutations: each takes (rng, Files) and returns a short description of what it did
# ---------------------------------------------------------------------------------------------

class Files:
    """The case's copies of the fixture files and helpers to edit them."""

    def __init__(self, workdir, fixture, fmt):
        self.workdir, self.fixture, self.fmt = workdir, fixture, fmt
        self.expect = []              # extra strings one of which the error message must name
        if fmt == "h5":
            self.model = self._copy(fixture + ".h5")
            self.weights = None
        elif fmt == "keras":
            self.model = self._copy(fixture + ".keras")
            self.weights = None
        elif fmt == "json":
            self.model = self._copy(fixture + ".json")
            self.weights = self._copy(fixture + ".weights.h5")
        elif fmt == "fxn":
            self.model = os.path.join(workdir, fixture + ".fxn")
            shutil.copy(base_fxn(fixture), self.model)
            self.weights = None
        elif fmt == "tflite":
            self.model = self._copy(os.path.join("tflite", fixture + ".tflite"))
            self.weights = None
        else:
            raise ValueError(fmt)

    def _copy(self, name):
        dst = os.path.join(self.workdir, "case_" + os.path.basename(name))
        shutil.copy(os.path.join(MODELS, name), dst)
        return dst

    def names(self):
        """Base names of the files the case loads (the error message must name one)."""
        return [os.path.basename(p) for p in (self.model, self.weights) if p]

    # --- the HDF5 file holding the weights (for .keras: the archive's model.weights.h5) --------
    def edit_h5(self, fn):
        import h5py
        if self.fmt == "keras":
            tmp = os.path.join(self.workdir, "inner.weights.h5")
            with zipfile.ZipFile(self.model) as z, open(tmp, "wb") as out:
                out.write(z.read("model.weights.h5"))
            with h5py.File(tmp, "r+") as f:
                r = fn(f)
            self.replace_in_archive("model.weights.h5", open(tmp, "rb").read())
            return r
        with h5py.File(self.weights or self.model, "r+") as f:
            return fn(f)

    def replace_in_archive(self, entry, data):
        with zipfile.ZipFile(self.model) as z:
            items = [(i, z.read(i.filename)) for i in z.infolist()]
        with zipfile.ZipFile(self.model, "w") as z:
            for info, d in items:
                z.writestr(info, data if info.filename == entry else d)

    # --- the model config ------------------------------------------------------------------------
    def read_config_text(self):
        if self.fmt == "h5":
            import h5py
            with h5py.File(self.model, "r") as f:
                v = f.attrs["model_config"]
            return v.decode() if isinstance(v, bytes) else str(v)
        if self.fmt == "keras":
            with zipfile.ZipFile(self.model) as z:
                return z.read("config.json").decode()
        with open(self.model) as f:
            return f.read()

    def write_config_text(self, text):
        if self.fmt == "h5":
            import h5py
            with h5py.File(self.model, "r+") as f:
                f.attrs["model_config"] = text
        elif self.fmt == "keras":
            self.replace_in_archive("config.json", text.encode())
        else:
            with open(self.model, "w") as f:
                f.write(text)

    def edit_config(self, fn):
        cfg = json.loads(self.read_config_text())
        what = fn(cfg)
        self.write_config_text(json.dumps(cfg))
        return what


def _bytes_target(rng, files):
    """The file whose bytes a byte-level mutation damages: the model file, the weights file
    (JSON + weights), or the archive's inner HDF5 file (.keras)."""
    if files.fmt == "json":
        return rng.choice([files.model, files.weights]), None
    if files.fmt == "keras" and rng.random() < 0.5:
        return files.model, "model.weights.h5"
    return files.model, None


def _edit_bytes(rng, files, fn):
    path, entry = _bytes_target(rng, files)
    if entry is None:
        data = bytearray(open(path, "rb").read())
        what = fn(data)
        open(path, "wb").write(bytes(data))
        return f"{os.path.basename(path)}: {what}"
    with zipfile.ZipFile(path) as z:
        data = bytearray(z.read(entry))
    what = fn(data)
    files.replace_in_archive(entry, bytes(data))
    return f"{os.path.basename(path)}:{entry}: {what}"


def _offset(rng, n):
    """A byte offset, biased towards the start of the file where HDF5 and ZIP keep structure."""
    r = rng.random()
    if r < 0.4:
        return rng.randrange(min(n, 4096))
    if r < 0.5:
        return rng.randrange(max(n - 512, 0), n)
    return rng.randrange(n)


def m_truncate(rng, files):
    def fn(data):
        n = len(data)
        cut = rng.choice([0, 1, 7, 8, 50, 51, 100, 512, 2048, _offset(rng, n), _offset(rng, n),
                          n - 1, n // 2])
        cut = max(0, min(cut, n - 1))
        del data[cut:]
        return f"truncated to {cut} of {n} bytes"
    return _edit_bytes(rng, files, fn)


def m_flip_bits(rng, files):
    def fn(data):
        offs = sorted(_offset(rng, len(data)) for _ in range(rng.choice([1, 1, 2, 4, 16])))
        for o in offs:
            data[o] ^= 1 << rng.randrange(8)
        return f"bit flips at offsets {offs}"
    return _edit_bytes(rng, files, fn)


def m_overwrite(rng, files):
    def fn(data):
        o = _offset(rng, len(data))
        k = rng.choice([1, 4, 8, 16, 64])
        fill = rng.choice(["zero", "ff", "random"])
        for i in range(o, min(o + k, len(data))):
            data[i] = 0 if fill == "zero" else 0xFF if fill == "ff" else rng.randrange(256)
        return f"{k} bytes at offset {o} overwritten with {fill}"
    return _edit_bytes(rng, files, fn)


# --- config edits --------------------------------------------------------------------------------

def _layers(cfg):
    """Every layer dict in a model config (nested models included), with its container list."""
    out = []

    def walk(c):
        conf = c.get("config") if isinstance(c, dict) else None
        layers = conf if isinstance(conf, list) else conf.get("layers", []) if isinstance(conf, dict) else []
        for l in layers:
            if isinstance(l, dict):
                out.append(l)
                if l.get("class_name") in ("Sequential", "Functional", "Model"):
                    walk(l)
    walk(cfg)
    return out


def _lname(l):
    return l.get("name") or (l.get("config") or {}).get("name")


def _paths(obj, prefix=()):
    """(container, key, path) of every value in a JSON tree."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((obj, k, prefix + (k,)))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((obj, i, prefix + (i,)))
            out.extend(_paths(v, prefix + (i,)))
    return out


def _path_str(p):
    return "/".join(str(x) for x in p[-6:])


def _pick_in_layer_configs(rng, cfg):
    """A (container, key, path) inside some layer's config (where the handlers read)."""
    layers = [l for l in _layers(cfg) if isinstance(l.get("config"), dict)]
    l = rng.choice(layers)
    paths = _paths(l["config"], (_lname(l) or "?", "config"))
    return rng.choice(paths) if paths else (l, "config", (_lname(l), "config"))


WRONG_VALUES = [None, "x", "", [], {}, [1, 2, 3], {"a": 1}, -1, 0, 1, 2 ** 31, 2 ** 64, -2 ** 63,
                0.5, 1e308, True, False, "nan", [None], [[[]]], {"class_name": "__keras_tensor__"}]


def m_config_delete_key(rng, files):
    def fn(cfg):
        c, k, p = (rng.choice(_paths(cfg)) if rng.random() < 0.3 else _pick_in_layer_configs(rng, cfg))
        if isinstance(c, dict):
            del c[k]
        else:
            c.pop(k)
        return f"deleted {_path_str(p)}"
    return files.edit_config(fn)


def m_config_wrong_type(rng, files):
    def fn(cfg):
        c, k, p = (rng.choice(_paths(cfg)) if rng.random() < 0.3 else _pick_in_layer_configs(rng, cfg))
        v = rng.choice(WRONG_VALUES + [float("nan"), float("inf")])
        c[k] = v
        return f"{_path_str(p)} = {v!r}"
    return files.edit_config(fn)


NUMERIC_KEYS = ["units", "filters", "kernel_size", "strides", "pool_size", "size", "padding",
                "dilation_rate", "cropping", "target_shape", "axis", "depth_multiplier", "groups",
                "rate", "epsilon", "alpha", "max_value", "negative_slope", "threshold", "dims",
                "keepdims", "scale", "offset", "mean", "variance", "output_padding", "momentum"]
ABSURD = [-1, 0, -2 ** 31, 10 ** 6, 10 ** 12, 2 ** 63, 1.5, "3", [0, 0], [-1, -1], [10 ** 9, 10 ** 9],
          [1], [1, 2, 3, 4], [[1, 1], [-5, 2]], [2 ** 40, 1], None, float("inf"), float("nan"), 1e300]


def m_config_absurd_number(rng, files):
    def fn(cfg):
        layers = [l for l in _layers(cfg) if isinstance(l.get("config"), dict)]
        rng.shuffle(layers)
        for l in layers:
            keys = [k for k in NUMERIC_KEYS if k in l["config"]]
            if keys:
                k = rng.choice(keys)
                v = rng.choice(ABSURD)
                l["config"][k] = v
                return f"layer '{_lname(l)}' ({l.get('class_name')}): {k} = {v!r}"
        l = rng.choice(layers)
        k, v = rng.choice(NUMERIC_KEYS), rng.choice(ABSURD)
        l["config"][k] = v
        return f"layer '{_lname(l)}' ({l.get('class_name')}): added {k} = {v!r}"
    return files.edit_config(fn)


UNKNOWN_STRINGS = {"padding": ["full", "SAME ", "reflect", "", "valid\x00"],
                   "activation": ["relu7", "lambda x: x", "os.system", "", "softmax2"],
                   "interpolation": ["bicubic", "area", ""],
                   "data_format": ["channels_middle", "NCHW", ""],
                   "dtype": ["float8", "object", "complex64"]}


def m_config_unknown_string(rng, files):
    def fn(cfg):
        layers = [l for l in _layers(cfg) if isinstance(l.get("config"), dict)]
        rng.shuffle(layers)
        for l in layers:
            keys = [k for k in UNKNOWN_STRINGS if k in l["config"]]
            if keys:
                k = rng.choice(keys)
                v = rng.choice(UNKNOWN_STRINGS[k])
                l["config"][k] = v
                return f"layer '{_lname(l)}': {k} = {v!r}"
        l = rng.choice(layers)
        l["class_name"] = rng.choice(["Conv5D", "Lambda", "TFOpLambda", "", "Dense\x00"])
        return f"layer '{_lname(l)}': class_name = {l['class_name']!r}"
    return files.edit_config(fn)


def m_config_class_swap(rng, files):
    classes = ["Dense", "Conv2D", "Conv1D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D",
               "BatchNormalization", "Flatten", "Reshape", "Add", "Concatenate", "Softmax",
               "PReLU", "UpSampling2D", "Conv2DTranspose", "Normalization", "Rescaling",
               "ZeroPadding2D", "Cropping2D", "Permute", "GlobalAveragePooling2D", "InputLayer",
               "Sequential", "Functional", "Multiply", "Subtract", "TrueDivide", "Relu"]

    def fn(cfg):
        l = rng.choice(_layers(cfg))
        old, l["class_name"] = l.get("class_name"), rng.choice(classes)
        return f"layer '{_lname(l)}': class {old} -> {l['class_name']}"
    return files.edit_config(fn)


def m_config_input_shape(rng, files):
    def fn(cfg):
        for l in _layers(cfg):
            c = l.get("config") or {}
            for key in ("batch_shape", "batch_input_shape"):
                if isinstance(c.get(key), list):
                    shape = list(c[key])
                    choice = rng.randrange(6)
                    if choice == 0 and len(shape) > 1:
                        shape[rng.randrange(1, len(shape))] = rng.choice([0, -1, -7, None, 1.5, "8"])
                    elif choice == 1 and len(shape) > 1:
                        shape[rng.randrange(1, len(shape))] = rng.choice([10 ** 5, 10 ** 9, 2 ** 62])
                    elif choice == 2:
                        shape = shape + [rng.choice([1, 3])]
                    elif choice == 3:
                        shape = shape[:-1]
                    elif choice == 4:
                        shape = [None] + [rng.choice([64, 256, 1024])] * (len(shape) - 1)
                    else:
                        shape = rng.choice([[], None, "x", [None, [8]], {"a": 1}])
                    c[key] = shape
                    return f"input '{_lname(l)}': {key} = {shape!r}"
        l = rng.choice(_layers(cfg))
        l.setdefault("config", {})["batch_input_shape"] = [None, -1]
        return f"layer '{_lname(l)}': batch_input_shape = [None, -1]"
    return files.edit_config(fn)


def _functional(cfg):
    """The config as a functional one with inbound nodes (rewrites a Sequential in place)."""
    if cfg.get("class_name") != "Sequential":
        return cfg.get("config")
    conf = cfg["config"]
    layers = conf if isinstance(conf, list) else conf["layers"]
    prev = None
    new = []
    for l in layers:
        l = dict(l)
        l["name"] = _lname(l)
        if l.get("class_name") == "InputLayer":
            l["inbound_nodes"] = []
        else:
            if prev is None:
                inp = {"class_name": "InputLayer", "name": "fuzz_input",
                       "config": {"name": "fuzz_input",
                                  "batch_input_shape": (l.get("config") or {}).get("batch_input_shape")
                                  or [None] + list((conf.get("build_input_shape") or [None, 1])[1:])},
                       "inbound_nodes": []}
                new.append(inp)
                prev = "fuzz_input"
            l["inbound_nodes"] = [[[prev, 0, 0, {}]]]
        prev = l["name"]
        new.append(l)
    first = new[0]["name"]
    cfg["class_name"] = "Functional"
    cfg["config"] = {"name": "fuzz", "layers": new, "input_layers": [[first, 0, 0]],
                     "output_layers": [[prev, 0, 0]]}
    return cfg["config"]


def _refs(node):
    """The [layer, node, tensor] lists inside one inbound node (both encodings), to edit in place."""
    out = []

    def walk(o):
        if isinstance(o, dict):
            if o.get("class_name") == "__keras_tensor__":
                h = (o.get("config") or {}).get("keras_history")
                if isinstance(h, list) and len(h) == 3:
                    out.append(h)
                return
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            if len(o) >= 3 and isinstance(o[0], str) and isinstance(o[1], int):
                out.append(o)
                return
            for v in o:
                walk(v)
    walk(node)
    return out


def _all_refs(conf):
    refs = []
    for l in conf.get("layers", []):
        for node in l.get("inbound_nodes", []) or []:
            refs.extend((l, r) for r in _refs(node))
    return refs


def m_config_dangling_inbound(rng, files):
    def fn(cfg):
        conf = _functional(cfg)
        refs = _all_refs(conf)
        l, r = rng.choice(refs)
        kind = rng.randrange(3)
        if kind == 0:
            r[0] = rng.choice(["no_such_layer", "", _lname(l) + "_x"])
            return f"layer '{_lname(l)}' reads from missing layer {r[0]!r}"
        if kind == 1:
            r[1] = rng.choice([1, 5, -1, 2 ** 40])
            return f"layer '{_lname(l)}' reads node index {r[1]} of '{r[0]}'"
        r[2] = rng.choice([1, 7, -1, 2 ** 40])
        return f"layer '{_lname(l)}' reads tensor index {r[2]} of '{r[0]}'"
    return files.edit_config(fn)


def m_config_cycle(rng, files):
    def fn(cfg):
        conf = _functional(cfg)
        refs = _all_refs(conf)
        l, r = rng.choice(refs)
        users = {}
        for user, ref in refs:
            users.setdefault(ref[0], set()).add(_lname(user))
        downstream, todo = {_lname(l)}, [_lname(l)]     # l and every layer that reads from it
        while todo:
            for u in users.get(todo.pop(), ()):
                if u not in downstream:
                    downstream.add(u)
                    todo.append(u)
        r[0], r[1], r[2] = rng.choice(sorted(downstream)), 0, 0
        return f"layer '{_lname(l)}' reads from '{r[0]}' (a cycle)"
    return files.edit_config(fn)


def m_config_io_refs(rng, files):
    def fn(cfg):
        conf = _functional(cfg)
        key = rng.choice(["input_layers", "output_layers"])
        v = rng.choice([[], [["nope", 0, 0]], [[_lname(conf["layers"][-1]), 3, 0]], "x", None,
                        [[_lname(conf["layers"][0]), 0, 0]] * 2, [[1, 2, 3]], [["a"]],
                        {"x": ["nope", 0, 0]}])
        conf[key] = v
        return f"{key} = {v!r}"
    return files.edit_config(fn)


def m_config_duplicate_name(rng, files):
    def fn(cfg):
        conf = _functional(cfg)
        layers = conf["layers"]
        a, b = rng.sample(range(len(layers)), 2) if len(layers) > 1 else (0, 0)
        old = _lname(layers[b])
        layers[b]["name"] = _lname(layers[a])
        if isinstance(layers[b].get("config"), dict):
            layers[b]["config"]["name"] = _lname(layers[a])
        return f"layer '{old}' renamed to '{_lname(layers[a])}' (a duplicate)"
    return files.edit_config(fn)


def m_config_deep_nesting(rng, files):
    depth = rng.choice([200, 1000, 5000, 100000])
    kind = rng.randrange(3)
    if kind == 0:
        text = "[" * depth + "]" * depth
        files.write_config_text(text)
        return f"config is {depth} nested lists"

    def fn(cfg):
        if kind == 1:
            c, k, p = _pick_in_layer_configs(rng, cfg)
            v = 0
            for _ in range(min(depth, 900)):
                v = [v]
            c[k] = v
            return f"{_path_str(p)} nested {min(depth, 900)} lists deep"
        inner = dict(cfg)
        n = min(depth, 300)
        for i in range(n):       # a model in a model in a model ...
            inner = {"class_name": "Functional", "name": f"m{i}",
                     "config": {"name": f"m{i}", "layers": [
                         {"class_name": "InputLayer", "name": f"in{i}",
                          "config": {"name": f"in{i}", "batch_input_shape": [None, 4]},
                          "inbound_nodes": []},
                         dict(inner, name=f"m{i}_inner",
                              inbound_nodes=[[[f"in{i}", 0, 0, {}]]])],
                         "input_layers": [[f"in{i}", 0, 0]],
                         "output_layers": [[f"m{i}_inner", 0, 0]]}}
        cfg.clear()
        cfg.update(inner)
        return f"model nested {n} models deep"
    return files.edit_config(fn)


def m_config_not_json(rng, files):
    text = files.read_config_text()
    kind = rng.randrange(4)
    if kind == 0:
        cut = rng.randrange(len(text))
        files.write_config_text(text[:cut])
        return f"config cut at character {cut}"
    if kind == 1:
        v = rng.choice(["null", "3", '"a string"', "[]", "{}", '{"class_name": 5}',
                        '{"class_name": "Functional", "config": []}',
                        '{"class_name": "Sequential", "config": {"layers": [1, 2]}}'])
        files.write_config_text(v)
        return f"config = {v}"
    if kind == 2:
        i = rng.randrange(len(text))
        files.write_config_text(text[:i] + rng.choice(["\x01", "\x7f", "}", "NaN", "\\"]) + text[i + 1:])
        return f"character {i} replaced"
    if files.fmt == "h5":
        import h5py
        import numpy as np
        with h5py.File(files.model, "r+") as f:
            del f.attrs["model_config"]
            v = rng.choice([np.arange(5), np.zeros((2, 2)), b"\xff\xfe", np.array([b"{}", b"{}"])])
            f.attrs["model_config"] = v
        return f"model_config attribute = {v!r}"
    files.write_config_text("")
    return "config empty"


# --- weights ---------------------------------------------------------------------------------------

def _weight_datasets(f):
    """Paths of the datasets holding layer weights (the optimizer's are left alone)."""
    import h5py
    out = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and not name.startswith(("optimizer", "vars")):
            out.append(name)
    f.visititems(visit)
    return sorted(out)


def _layer_of(path):
    """The layer (or Keras 3 layer key) a weight dataset path belongs to."""
    parts = path.split("/")
    if parts[0] == "layers":
        return parts[-3]
    if parts[0] == "model_weights":
        return parts[1]
    return parts[0]


def _replace(f, path, data=None, **kw):
    del f[path]
    return f.create_dataset(path, data=data, **kw)


def m_weight_values(rng, files):
    import numpy as np

    def fn(f):
        path = rng.choice(_weight_datasets(f))
        a = np.array(f[path][()], dtype=np.float32)
        v = rng.choice([np.nan, np.inf, -np.inf, 1e38, -3e38, 1e-40, 0.0, 1e30])
        where = rng.choice(["one", "all"])
        if where == "all" or a.size == 0:
            a[...] = v
        else:
            a.flat[rng.randrange(a.size)] = v
        f[path][...] = a
        files.expect.append(_layer_of(path))
        return f"{path}: {where} = {v}"
    return files.edit_h5(fn)


def m_weight_shape(rng, files):
    import numpy as np

    def fn(f):
        path = rng.choice(_weight_datasets(f))
        a = np.array(f[path][()])
        kind = rng.randrange(5)
        if kind == 0 and a.ndim >= 2:
            b = a.T
        elif kind == 1:
            b = a.reshape(-1)[: max(a.size - 1, 0)]
        elif kind == 2:
            b = a[None]
        elif kind == 3:
            b = np.zeros((0,) + a.shape[1:], a.dtype)
        else:
            b = np.concatenate([a.reshape(-1), [1.0]]).astype(a.dtype)
        _replace(f, path, b)
        files.expect.append(_layer_of(path))
        return f"{path}: shape {a.shape} -> {b.shape}"
    return files.edit_h5(fn)


def m_weight_dtype(rng, files):
    import h5py
    import numpy as np

    def fn(f):
        path = rng.choice(_weight_datasets(f))
        a = np.array(f[path][()])
        kind = rng.choice(["int32", "int64", "uint8", "bool", "float16", "float64", "bytes",
                           "vlen_str", "complex64", "compound", "float16_big", "int64_big"])
        if kind in ("int32", "int64", "uint8", "bool", "float16", "float64", "complex64"):
            b = a.astype(kind)
        elif kind == "float16_big":
            b = (a.astype(np.float64) * 1e6).astype(np.float16)     # overflows to inf
        elif kind == "int64_big":
            b = np.full(a.shape, 2 ** 62, np.int64)
        elif kind == "bytes":
            b = np.full(a.shape, b"1.5", "S3")
        elif kind == "vlen_str":
            b = np.full(a.shape, "0.25", dtype=h5py.string_dtype())
        else:
            b = np.zeros(a.shape, dtype=[("re", "f4"), ("im", "f4")])
        _replace(f, path, b)
        files.expect.append(_layer_of(path))
        return f"{path}: dtype {a.dtype} -> {kind}"
    return files.edit_h5(fn)


def m_weight_missing_or_extra(rng, files):
    import numpy as np

    def fn(f):
        path = rng.choice(_weight_datasets(f))
        kind = rng.randrange(5)
        files.expect.append(_layer_of(path))
        parent = path.rsplit("/", 1)[0]
        if kind == 0:
            del f[path]
            return f"{path}: deleted"
        if kind == 1:
            del f[parent]
            return f"{parent}: group deleted"
        if kind == 2:
            f[parent + "/extra_weight"] = np.ones(3, np.float32)
            return f"{parent}: extra dataset"
        # edit the weight_names attribute of the layer's group (legacy layout)
        g = f[parent]
        while g.name != "/" and "weight_names" not in g.attrs:
            g = g.parent
        if "weight_names" not in g.attrs:
            f[parent + "/vars_extra"] = np.ones(2, np.float32)
            return f"{parent}: extra dataset (no weight_names)"
        names = [n if isinstance(n, bytes) else str(n).encode() for n in g.attrs["weight_names"]]
        if kind == 3:
            names = names + [b"dense/extra:0"] if names else [b"x"]
            g.attrs["weight_names"] = np.array(names)
            return f"{g.name}: weight_names with an extra entry"
        v = rng.choice([np.arange(3), np.array([b""]), np.array([b"../../" + (names[0] if names else b"x")]),
                        np.array([b"/model_weights"])])
        g.attrs["weight_names"] = v
        return f"{g.name}: weight_names = {v!r}"
    return files.edit_h5(fn)


def m_weight_declared_huge(rng, files):
    """A dataset whose declared shape is huge (nothing stored): must be refused before it is
    read."""
    import numpy as np

    def fn(f):
        path = rng.choice(_weight_datasets(f))
        a = f[path]
        shape = rng.choice([(1 << 20, 1 << 12), (1 << 31,), tuple(d * 4096 for d in a.shape) or (1 << 30,),
                            (1 << 16,) * 4])
        _replace(f, path, shape=shape, dtype=np.float32, chunks=tuple(min(d, 64) for d in shape),
                 fillvalue=0.5)
        files.expect.append(_layer_of(path))
        return f"{path}: declared shape {shape}, nothing stored"
    return files.edit_h5(fn)


# --- HDF5 features that reach outside the file ---------------------------------------------------

def _outside_file(files, data):
    import h5py
    p = os.path.join(files.workdir, "outside.h5")
    with h5py.File(p, "w") as g:
        g["w"] = data
    return p


def m_h5_external_link(rng, files):
    import h5py
    import numpy as np

    def fn(f):
        kind = rng.randrange(3)
        if kind == 0:
            path = rng.choice(_weight_datasets(f))
            outside = _outside_file(files, np.array(f[path][()]))
            del f[path]
            f[path] = h5py.ExternalLink(os.path.basename(outside) if rng.random() < 0.5 else outside, "/w")
            files.expect.append(_layer_of(path))
            return f"{path}: external link to {outside}:/w (same data)"
        if kind == 1:
            path = rng.choice(_weight_datasets(f))
            parent = path.rsplit("/", 1)[0]
            outside = os.path.join(files.workdir, "outside_group.h5")
            with h5py.File(outside, "w") as g:
                f.copy(f[parent], g, name="grp")
            del f[parent]
            f[parent] = h5py.ExternalLink(outside, "/grp")
            files.expect.append(_layer_of(path))
            return f"{parent}: external link to a group in {outside}"
        top = "model_weights" if "model_weights" in f else "layers" if "layers" in f else None
        if top is None:
            names = list(f.keys())
            top = names[0]
        outside = os.path.join(files.workdir, "outside_top.h5")
        with h5py.File(outside, "w") as g:
            f.copy(f[top], g, name="top")
        del f[top]
        f[top] = h5py.ExternalLink("/nonexistent/dir/none.h5" if rng.random() < 0.3 else outside, "/top")
        return f"/{top}: external link"
    return files.edit_h5(fn)


def m_h5_soft_link(rng, files):
    import h5py

    def fn(f):
        ds = _weight_datasets(f)
        path = rng.choice(ds)
        target = rng.choice(ds + ["/nowhere", "/" + path])
        del f[path]
        f[path] = h5py.SoftLink("/" + target.lstrip("/"))
        files.expect.append(_layer_of(path))
        return f"{path}: soft link to {target}"
    return files.edit_h5(fn)


def m_h5_external_storage(rng, files):
    import numpy as np

    def fn(f):
        path = rng.choice(_weight_datasets(f))
        a = np.array(f[path][()], dtype=np.float32)
        raw = os.path.join(files.workdir, "raw_weights.bin")
        with open(raw, "wb") as out:
            out.write(a.astype("<f4").tobytes())
        name = rng.choice([raw, "raw_weights.bin", "/etc/hostname"])
        _replace(f, path, shape=a.shape, dtype="<f4", external=[(name, 0, max(a.nbytes, 1))])
        files.expect.append(_layer_of(path))
        return f"{path}: external storage in {name}"
    return files.edit_h5(fn)


def m_h5_virtual(rng, files):
    import h5py
    import numpy as np

    def fn(f):
        path = rng.choice(_weight_datasets(f))
        a = np.array(f[path][()], dtype=np.float32)
        outside = _outside_file(files, a)
        layout = h5py.VirtualLayout(shape=a.shape, dtype=np.float32)
        # the source: another file, or "." (this file: a virtual dataset is refused wherever
        # its data lives)
        layout[...] = h5py.VirtualSource(outside if rng.random() < 0.5 else ".", "w", shape=a.shape)
        del f[path]
        f.create_virtual_dataset(path, layout, fillvalue=0)
        files.expect.append(_layer_of(path))
        return f"{path}: virtual dataset over {outside}:/w"
    return files.edit_h5(fn)


# --- .fxn ------------------------------------------------------------------------------------------

def _fxn_parts(path):
    data = open(path, "rb").read()
    head = data[:51]
    return head, data[51:]


def _fxn_version(path):
    return struct.unpack_from("<I", open(path, "rb").read(11), 7)[0]


def _fxn_write(path, version, payload, length=None, digest=None):
    import hashlib
    header = struct.pack("<7sIQ32s", b"FIXNET\x00", version,
                         len(payload) if length is None else length,
                         hashlib.sha256(payload).digest() if digest is None else digest)
    open(path, "wb").write(header + payload)


def _fxn_edit_archive(path, fn):
    """Unpack the payload, let fn edit {entry: bytes}, repack with a valid checksum (a crafted
    file: the checksum only proves it was not damaged by accident)."""
    version, payload = _fxn_version(path), _fxn_parts(path)[1]
    with zipfile.ZipFile(io.BytesIO(payload)) as z:
        entries = {i.filename: z.read(i.filename) for i in z.infolist()}
    what = fn(entries)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in entries.items():
            z.writestr(k, v)
    _fxn_write(path, version, buf.getvalue())
    return what


def _fxn_edit_arrays(path, fn):
    """As _fxn_edit_archive, fn editing (manifest, {array name: stored bytes}) of a format-2
    file (fixnet/fxn/stored.py); the offsets follow the manifest's order of the arrays."""
    import fxn_files

    def edit(entries):
        m, segs = fxn_files.segments(entries)
        what = fn(m, segs)
        fxn_files.pack_segments(entries, m, segs)
        return what
    return _fxn_edit_archive(path, edit)


def m_fxn_manifest(rng, files):
    def fn(entries):
        m = json.loads(entries["manifest.json"])
        kind = rng.randrange(6)
        if kind == 0:          # any value anywhere
            c, k, p = rng.choice(_paths(m))
            v = rng.choice(WRONG_VALUES + [float("nan")])
            c[k] = v
            what = f"manifest {_path_str(p)} = {v!r}"
        elif kind == 1:        # a tensor's shape
            t = rng.choice(m["tensors"])
            t["shape"] = rng.choice([[], [0], [-1], [2 ** 31 - 1] * 3, [10 ** 4, 10 ** 4],
                                     [d + 1 for d in t["shape"]], t["shape"][::-1], t["shape"] + [1]])
            what = f"tensor '{t['name']}' shape = {t['shape']}"
        elif kind == 2:        # an int in a step's state
            s = rng.choice(m["steps"])
            ints = [(c, k, p) for c, k, p in _paths(s["state"])
                    if isinstance(c[k], int) and not isinstance(c[k], bool)]
            if not ints:
                return "no int to edit"
            c, k, p = rng.choice(ints)
            c[k] = rng.choice([-1, 0, 1, 2, 31, 32, 63, 64, 127, 128, -128, 2 ** 31, 2 ** 31 - 1,
                               -2 ** 31, 2 ** 63, c[k] + 1, c[k] - 1, c[k] * 1000])
            what = f"step '{s['state'].get('name')}' {_path_str(p)} = {c[k]}"
        elif kind == 3:        # an array spec
            entry = rng.choice(sorted(m["arrays"]))
            spec = m["arrays"][entry]
            spec["shape"] = rng.choice([[], [1], spec["shape"][::-1], [d * 2 for d in spec["shape"]],
                                        [2 ** 30] * 3])
            what = f"array {entry} declared shape {spec['shape']}"
        elif kind == 4:        # step order / inputs
            s = rng.choice(m["steps"])
            st = s["state"]
            st["inputs"] = rng.choice([st["outputs"], [], ["nope"], st["inputs"] * 2, m["outputs"]])
            what = f"step '{st.get('name')}' inputs = {st['inputs']}"
        else:                  # a float in a step's state (multipliers, scales)
            floats = [(c, k, p) for c, k, p in _paths(m) if isinstance(c[k], float)]
            if not floats:
                return "no float to edit"
            c, k, p = rng.choice(floats)
            c[k] = rng.choice([0.0, -1.0, 1e300, 1e-300, float("nan"), float("inf")])
            what = f"manifest {_path_str(p)} = {c[k]}"
        entries["manifest.json"] = json.dumps(m).encode()
        return what
    return _fxn_edit_archive(files.model, fn)


def m_fxn_array(rng, files):
    import numpy as np
    import fxn_files

    def fn(m, segs):
        entry = rng.choice(sorted(segs))
        a = fxn_files.decode(m, segs, entry)
        kind = rng.randrange(5)
        if kind == 0:                    # random values, same dtype and shape
            if a.dtype.kind in "iu":
                info = np.iinfo(a.dtype)
                b = np.array([rng.randint(int(info.min), int(info.max)) for _ in range(a.size)],
                             a.dtype).reshape(a.shape)
            elif a.dtype.kind == "f":
                b = np.array([rng.choice([0.0, -1.0, 1e30, np.nan, np.inf, 1e-30, 3.0])
                              for _ in range(a.size)], a.dtype).reshape(a.shape)
            else:
                b = ~a if a.dtype == bool else a
            what = f"{entry}: random values"
        elif kind == 1:                  # other shape, manifest consistent
            b = a.reshape(-1)[: max(a.size // 2, 1)] if a.size else np.zeros(3, a.dtype)
            what = f"{entry}: shape {a.shape} -> {b.shape} (manifest updated)"
        elif kind == 2:                  # other dtype, manifest consistent
            b = a.astype(rng.choice([np.int8, np.int32, np.float32, np.int64, np.uint8]))
            what = f"{entry}: dtype {a.dtype} -> {b.dtype} (manifest updated)"
        elif kind == 3:                  # bytes that are not what the spec says
            segs[entry] = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 7, 64])))
            return f"{entry}: stored bytes replaced by {len(segs[entry])} random bytes, spec unchanged"
        else:                            # the bytes of another array, spec unchanged
            other = rng.choice(sorted(segs))
            segs[entry] = segs[other]
            return f"{entry}: stored bytes of {other}, spec unchanged"
        fxn_files.store(m, segs, entry, b)
        return what
    return _fxn_edit_arrays(files.model, fn)


def m_fxn_header(rng, files):
    version = _fxn_version(files.model)
    head, payload = _fxn_parts(files.model)
    kind = rng.randrange(4)
    if kind == 0:
        v = rng.choice([0, version - 1, version + 1, 2 ** 32 - 1])
        _fxn_write(files.model, v, payload)
        return f"header version {v}"
    if kind == 1:
        n = rng.choice([0, len(payload) - 1, len(payload) + 1, 2 ** 63, 2 ** 64 - 1])
        _fxn_write(files.model, version, payload, length=n)
        return f"header length {n} (payload {len(payload)})"
    if kind == 2:
        _fxn_write(files.model, version, payload + b"\x00" * rng.choice([1, 100]))
        return "bytes appended after the payload, header consistent"
    _fxn_write(files.model, version, b"")
    return "empty payload, header consistent"


def m_fxn_palette(rng, files):
    """Damage an array stored as tables of codes and 4-bit indices: its bytes (an index beyond
    its table, any nibble, the padding, a shorter array) or its spec (codes, axis, dtype, no
    palette, a narrower dtype or a fill besides), with a valid checksum."""
    import numpy as np

    def fn(m, segs):
        palettes = sorted(e for e, spec in m["arrays"].items() if "palette" in spec)
        if not palettes:
            return "no array stored with a palette"
        entry = rng.choice(palettes)
        spec = m["arrays"][entry]
        p = spec["palette"]
        stored = np.frombuffer(segs[entry], np.uint8).copy()
        rows = stored.reshape(1 if p["axis"] is None else spec["shape"][p["axis"]], -1)
        kind = rng.randrange(10)
        if kind == 0:                    # one code fewer in each table: an index beyond it
            stored = np.delete(rows, p["codes"] - 1, axis=1)
            p["codes"] -= 1
            what = f"{entry}: tables of {p['codes']} codes, indices unchanged"
        elif kind == 1:                  # any byte of a table or of the indices
            i = rng.randrange(stored.size)
            stored[i] = rng.randrange(256)
            what = f"{entry}: stored byte {i} = {stored[i]}"
        elif kind == 2:                  # the last byte: padding nibble of an odd row
            stored[-1] |= 0xF0
            what = f"{entry}: last byte's high nibble = 15"
        elif kind == 3:                  # shorter stored bytes
            stored = stored[:-rng.choice([1, 2, 17])].copy()
            what = f"{entry}: stored bytes shortened to {stored.size}"
        elif kind == 4:
            p["codes"] = rng.choice([0, 1, 15, 17, 255, -1, "16", None])
            what = f"{entry}: palette codes = {p['codes']!r}"
        elif kind == 5:
            p["axis"] = rng.choice([None, 0, 1, len(spec["shape"]) - 1, len(spec["shape"]), -1, "0"])
            what = f"{entry}: palette axis = {p['axis']!r}"
        elif kind == 6:
            spec["dtype"] = rng.choice(["|u1", "<i4", "<f4"])
            what = f"{entry}: palette array of dtype {spec['dtype']}"
        elif kind == 7:
            spec["as"] = rng.choice(["|u1", "|i1", "<i2"])
            what = f"{entry}: palette array stored as {spec['as']}"
        elif kind == 8:
            spec["fill"] = True
            what = f"{entry}: palette array marked as a fill"
        else:
            del spec["palette"]
            what = f"{entry}: palette removed from the spec"
        segs[entry] = np.ascontiguousarray(stored).tobytes()
        return what
    return _fxn_edit_arrays(files.model, fn)


def m_fxn_stored(rng, files):
    """Damage how format 2 lays out its arrays (fixnet/fxn/stored.py), with a valid checksum:
    an offset (a gap, an overlap, beyond the end, not an int), a narrower dtype ("as") that
    cannot hold or widen, a fill, the arrays.bin entry (shorter, longer, missing, another
    entry besides), keys the format does not know."""
    import fxn_files

    def fn(m, segs):
        entry = rng.choice(sorted(segs))
        spec = m["arrays"][entry]
        kind = rng.randrange(8)
        if kind == 0:                    # an offset elsewhere (written after pack_segments)
            delta = rng.choice([-1, 1, -8, 2 ** 20, 2 ** 62, "0", None, 0.5, True])
            return ("offset", entry, delta)
        if kind == 1:
            spec["as"] = rng.choice(["|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<f4",
                                     "|b1", "<f2", spec["dtype"], None, 8])
            return f"{entry}: stored as {spec['as']!r} (bytes unchanged)"
        if kind == 2:                    # a narrower dtype, the bytes narrowed to it (wrapping)
            import numpy as np
            from fixnet.fxn.stored import _planes
            a = fxn_files.decode(m, segs, entry)
            narrow = rng.choice(["|i1", "|u1", "<i2"])
            spec.pop("fill", None), spec.pop("palette", None)
            spec["as"] = narrow
            segs[entry] = _planes(a.reshape(-1).astype(np.dtype(narrow)))
            return f"{entry}: values wrapped into {narrow}"
        if kind == 3:
            spec["fill"] = rng.choice([True, False, 1, None, "true"])
            return f"{entry}: fill = {spec['fill']!r} (bytes unchanged)"
        if kind == 4:                    # a fill's one element, or one more element
            segs[entry] = segs[entry][:rng.choice([0, 1, 2, 4, 8])] + (b"\x01" * rng.choice([0, 1]))
            return f"{entry}: stored bytes cut to {len(segs[entry])}"
        if kind == 5:
            spec[rng.choice(["shuffle", "offsets", "codec"])] = rng.choice([True, 1, "zlib"])
            return f"{entry}: spec with a key the format does not know"
        if kind == 6:
            return ("blob", rng.choice(["short", "long", "missing", "extra"]), None)
        spec["shape"] = spec["shape"] + [1] if rng.random() < 0.5 else [0] + spec["shape"]
        return f"{entry}: shape {spec['shape']} (bytes unchanged)"

    def edit(entries):
        m, segs = fxn_files.segments(entries)
        what = fn(m, segs)
        fxn_files.pack_segments(entries, m, segs)
        if isinstance(what, tuple) and what[0] == "offset":
            _, entry, delta = what
            m["arrays"][entry]["offset"] = (m["arrays"][entry]["offset"] + delta
                                            if type(delta) is int else delta)
            entries["manifest.json"] = json.dumps(m).encode()
            return f"{entry}: offset {m['arrays'][entry]['offset']!r}"
        if isinstance(what, tuple):
            how = what[1]
            blob = entries[fxn_files.BLOB]
            if how == "short":
                entries[fxn_files.BLOB] = blob[:-rng.choice([1, 3, len(blob)])]
            elif how == "long":
                entries[fxn_files.BLOB] = blob + b"\x00" * rng.choice([1, 100])
            elif how == "missing":
                del entries[fxn_files.BLOB]
            else:
                entries["arrays/00000_w_q.npy"] = b"\x93NUMPY"
            return f"{fxn_files.BLOB}: {how}"
        return what
    return _fxn_edit_archive(files.model, edit)


def m_tflite_field(rng, files):
    """One of tests/tflite_edits.py's structured edits (an offset, buffer index, shape, type,
    vector length, operator tensor index... of the FlatBuffer), on a .tflite target."""
    import tflite_edits

    edit = rng.choice(tflite_edits.EDITS[3:])       # the byte-level ones are m_truncate & co
    with open(files.model, "rb") as f:
        data = bytearray(f.read())
    what = edit(rng, data, tflite_edits.tables(bytes(data)))
    with open(files.model, "wb") as f:
        f.write(data)
    return f"{edit.__name__[2:]}: {what}"


BYTE_MUTATIONS = [m_truncate, m_flip_bits, m_overwrite]
KERAS_MUTATIONS = [
    m_config_delete_key, m_config_wrong_type, m_config_absurd_number, m_config_unknown_string,
    m_config_class_swap, m_config_input_shape, m_config_dangling_inbound, m_config_cycle,
    m_config_io_refs, m_config_duplicate_name, m_config_deep_nesting, m_config_not_json,
    m_weight_values, m_weight_shape, m_weight_dtype, m_weight_missing_or_extra,
    m_weight_declared_huge, m_h5_external_link, m_h5_soft_link, m_h5_external_storage, m_h5_virtual,
]
FXN_MUTATIONS = [m_fxn_manifest, m_fxn_array, m_fxn_header, m_fxn_palette, m_fxn_stored]
TFLITE_MUTATIONS = [m_tflite_field]
MUTATIONS = BYTE_MUTATIONS + KERAS_MUTATIONS + FXN_MUTATIONS + TFLITE_MUTATIONS


def case_for_seed(seed, small_only=False):
    """(fixture, format, mutation name) of case ``seed``: the mutation cycles through all of them;
    the target is drawn from the seed among those the mutation applies to."""
    mutation = MUTATIONS[seed % len(MUTATIONS)]
    rng = random.Random(seed)
    if mutation in FXN_MUTATIONS:
        targets = [t for t in TARGETS if t[1] == "fxn"]
        if mutation is m_fxn_palette:
            targets = [t for t in targets if t[0] in CODEBOOK_FXN]
    elif mutation in TFLITE_MUTATIONS:
        targets = [t for t in TARGETS if t[1] == "tflite"]
    elif mutation in KERAS_MUTATIONS:
        targets = [t for t in TARGETS if t[1] not in ("fxn", "tflite")]
        if mutation.__name__.startswith(("m_weight", "m_h5")):
            targets = [t for t in targets if t[0] not in NO_WEIGHTS]
    else:
        targets = list(TARGETS)
    if small_only:
        small = [t for t in targets if t[0] in SMALL or t[1] == "fxn"]
        # one case in four may take a CNN
        targets = small if (rng.random() < 0.75 and small) else targets
    fixture, fmt = rng.choice(targets)
    return fixture, fmt, mutation.__name__[2:]


# ---------------------------------------------------------------------------------------------
# running one case
# ---------------------------------------------------------------------------------------------

_FXN_CACHE = {}
_FXN_DIR = None


def base_fxn(fixture):
    """The fixture quantized and saved with qm.save (made once per process)."""
    if fixture not in _FXN_CACHE:
        import fixnet
        d = fixture_inputs(fixture)
        fm = fixnet.load(os.path.join(MODELS, fixture + ".h5"))
        if fixture in CODEBOOK_FXN:
            qm = quantize_codebook16(fm, _one(d["x_calib"]))
        else:
            qm = fm.quantize(_one(d["x_calib"]), weight_rounding="nearest", progress=False)
        p = os.path.join(_FXN_DIR or ".", fixture + ".base.fxn")
        qm.save(p)
        _FXN_CACHE[fixture] = p
    return _FXN_CACHE[fixture]


def quantize_codebook16(fm, calibration):
    """``fm`` quantized with codebook16 weights (nearest rounding)."""
    return fm.quantize(calibration, weights="codebook16", weight_rounding="nearest", progress=False)


_BASE_OUT = {}


def base_fxn_outputs(fixture):
    """(int8 codes, float outputs) of the undamaged .fxn on the fixture's test inputs."""
    if fixture not in _BASE_OUT:
        import fixnet
        qm = fixnet.load(base_fxn(fixture))
        x = _one(fixture_inputs(fixture)["x_test"])
        _BASE_OUT[fixture] = (_list(qm.predict(x, output="int8")), _list(qm.predict(x)))
    return _BASE_OUT[fixture]


def _list(v):
    return v if isinstance(v, list) else [v]


def _sqnr_db(ref, test):
    import numpy as np
    ref = np.asarray(ref, np.float64)
    noise = np.sum((ref - np.asarray(test, np.float64)) ** 2)
    return float("inf") if noise == 0 else 10.0 * np.log10(np.sum(ref ** 2) / noise)


def check_outputs(qm, m, fixture, fmt, mname, outs):
    """What a damaged file that loaded must give (see SQNR_BAR above). Returns (passed, what
    was checked or what went wrong)."""
    import numpy as np
    want = [(PREDICT_SAMPLES,) + tuple(qm.tensors[t].shape) for t in qm.outputs]
    got = [tuple(o.shape) for o in outs]
    if got != want or not all(np.all(np.isfinite(o)) for o in outs):
        return False, (f"outputs of shapes {got} (declared {want}), "
                       f"finite: {[bool(np.all(np.isfinite(o))) for o in outs]}")
    x = _one(fixture_inputs(fixture)["x_test"])
    if fmt == "fxn" and mname not in FXN_CRAFTED:
        codes, floats = base_fxn_outputs(fixture)
        mine = _list(qm.predict(x, output="int8"))
        same = (len(mine) == len(codes) and len(outs) == len(floats)
                and all(a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
                        for a, b in zip(mine + outs, codes + floats)))
        if not same:
            return False, "a damaged .fxn loaded and predicts otherwise than the undamaged file"
        return True, "the same bits as the undamaged .fxn"
    if fmt in ("fxn", "tflite"):
        mine, oracle = _list(qm.predict(x, output="int8")), _list(qm.predict_oracle(x))
        if len(mine) != len(oracle) or not all(np.array_equal(a, b) for a, b in zip(mine, oracle)):
            return False, f"a damaged or crafted .{fmt}'s kernels disagree with its oracle"
        if fmt == "tflite":
            return True, "a .tflite that loaded: finite outputs, kernels bit-exact with the oracle"
        return True, "finite outputs, kernels bit-exact with the oracle"
    big = max((float(np.max(np.abs(w), initial=0.0)) for n in m.graph.nodes
               for w in n.weights.values() if np.issubdtype(np.asarray(w).dtype, np.floating)),
              default=0.0)
    if big > EXTREME_WEIGHT:
        mine, oracle = _list(qm.predict(x, output="int8")), _list(qm.predict_oracle(x))
        if len(mine) != len(oracle) or not all(np.array_equal(a, b) for a, b in zip(mine, oracle)):
            return False, "a model with extreme weights: its kernels disagree with its oracle"
        return True, (f"a weight of {big:.1e} (beyond {EXTREME_WEIGHT:.0e}, no SQNR bar): "
                      "finite outputs, kernels bit-exact with the oracle")
    xc = _one(fixture_inputs(fixture)["x_calib"])
    ref, q = _list(m.predict(xc)), _list(qm.predict(xc))
    if len(ref) != len(q):
        return False, f"{len(q)} int8 outputs, {len(ref)} float"
    sq = []
    for r, o in zip(ref, q):
        if not np.all(np.isfinite(r)):
            return False, "the float path is not finite on the calibration data, the int8 path is"
        sq.append(_sqnr_db(r, o) if np.any(r) else (float("inf") if not np.any(o) else -float("inf")))
    if min(sq) < SQNR_BAR:
        return False, (f"int8 SQNR against its own float path {', '.join(f'{v:.1f}' for v in sq)} dB "
                       f"on the calibration data, below {SQNR_BAR} dB")
    return True, f"int8 within {min(sq):.1f} dB SQNR of its own float path (bar {SQNR_BAR} dB)"


_DATA = {}


def fixture_inputs(fixture):
    """{"x_calib": [arrays], "x_test": [arrays]} of a fixture (one array per model input)."""
    if fixture not in _DATA:
        import numpy as np
        # a .tflite target (<fixture>.int8io) takes its Keras fixture's float inputs
        with np.load(os.path.join(MODELS, fixture.split(".")[0] + ".npz")) as d:
            out = {}
            for key, n in (("x_calib", CALIBRATION_SAMPLES), ("x_test", PREDICT_SAMPLES)):
                if key in d.files:
                    out[key] = [d[key][:n]]
                else:
                    out[key] = []
                    while f"{key}_{len(out[key])}" in d.files:
                        out[key].append(d[f"{key}_{len(out[key])}"][:n])
        _DATA[fixture] = out
    return _DATA[fixture]


def _one(xs):
    return xs[0] if len(xs) == 1 else xs


def _fixnet_frame(tb_text):
    """The innermost fixnet source line of a traceback (file:line function)."""
    import re
    last = None
    for m in re.finditer(r'File "([^"]*fixnet/[^"]*)", line (\d+), in (\S+)', tb_text):
        last = m
    if last is None:
        return ""
    return f"{last.group(1).split('fixnet/', 1)[1]}:{last.group(2)} {last.group(3)}"


def quantizer_internal(tb_text):
    """True when the failure comes from the quantizer or the parameters it made: raised through
    fixnet/quant/, an op's quantize(), the fixed-point multiplier, or a kernel call refusing its
    quantization parameters (reported apart: another change makes such models quantize)."""
    import re
    frames = re.findall(r'File "[^"]*fixnet/([^"]*)", line \d+, in (\S+)', tb_text)
    return any(f.startswith(("quant/", "_kernels/")) or fn in ("quantize", "quantize_multiplier")
               for f, fn in frames)


def run_case(seed, workdir, small_only=False):
    """Build case ``seed`` in ``workdir`` (emptied first) and run it. Returns a dict: outcome
    ("ok", "fixnet_error", "unnamed_error", "bad_output", "other", "memory", "harness"), the
    description, for "ok" what was checked (check_outputs), and for failures the exception and
    traceback."""
    import fixnet

    fixture, fmt, mname = case_for_seed(seed, small_only)
    res = {"seed": seed, "fixture": fixture, "format": fmt, "mutation": mname}
    if os.path.isdir(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir)
    rng = random.Random(seed * 7919 + 17)
    try:
        files = Files(workdir, fixture, fmt)
        res["what"] = globals()["m_" + mname](rng, files)
    except Exception:
        res.update(outcome="harness", error="the mutation itself failed",
                   traceback=traceback.format_exc())
        return res
    res["files"] = files.names()
    data = fixture_inputs(fixture)
    stage = "load"
    try:
        if fmt == "json":
            m = fixnet.load(files.model, weights=files.weights)
        else:
            m = fixnet.load(files.model)
        if fmt in ("fxn", "tflite"):
            qm = m
        else:
            stage = "quantize"
            # "minmax" ranges: the same quantizer path at a hundredth of the cost of "auto",
            # which the long campaign still takes for one case in ten
            method = "auto" if seed % 10 == 0 and not small_only else "minmax"
            res["quantize"] = f"method={method}, weight_rounding=nearest"
            qm = m.quantize(_one(data["x_calib"]), method=method, weight_rounding="nearest",
                            progress=False)
        stage = "predict"
        xs = data["x_test"]
        if len(xs) != len(qm.inputs):
            raise fixnet.InputShapeError("(harness) the damaged model has another number of inputs")
        outs = qm.predict(_one(xs))
        outs = outs if isinstance(outs, list) else [outs]
        stage = "check"
        passed, checked = check_outputs(qm, m, fixture, fmt, mname, outs)
        if passed:
            res.update(outcome="ok", checked=checked)
        else:
            res.update(outcome="bad_output", error=checked)
    except fixnet.FixnetError as e:
        msg = str(e)
        named = any(n in msg for n in files.names())
        if stage == "predict" and isinstance(e, fixnet.InputError):
            # the file's model takes other inputs than the fixture's data: the message names
            # the argument (the model input) at fault
            named = named or "input '" in msg
        layer_named = not files.expect or stage != "load" or any(x in msg for x in files.expect)
        res.update(outcome="fixnet_error" if named and layer_named else "unnamed_error",
                   error=f"{type(e).__name__}: {msg[:800]}", stage=stage)
        if not named:
            res["why"] = f"the message names none of {files.names()}"
        elif not layer_named:
            res["why"] = f"the message names none of the layers {files.expect}"
    except MemoryError:
        res.update(outcome="memory", error="MemoryError", stage=stage,
                   traceback=traceback.format_exc())
    except (RecursionError, Exception) as e:
        tb = traceback.format_exc()
        res.update(outcome="other", error=f"{type(e).__name__}: {str(e)[:800]}", stage=stage,
                   traceback=tb, frame=_fixnet_frame(tb), quantizer=quantizer_internal(tb))
    return res


# ---------------------------------------------------------------------------------------------
# the worker process
# ---------------------------------------------------------------------------------------------

def import_fixnet():
    """Import fixnet as the test run does: from PYTHONPATH or an installed package; failing
    that, from this checkout (built in place)."""
    try:
        import fixnet  # noqa: F401
    except ImportError:
        sys.path.insert(0, ROOT)
        import fixnet  # noqa: F401


def worker_main(workdir):
    """Read seeds as JSON lines on stdin, answer one JSON line per case on the original stdout.
    Anything fixnet prints goes to stderr (the parent keeps it in a log)."""
    import faulthandler
    import resource
    global _FXN_DIR
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    faulthandler.enable()
    import_fixnet()       # before the limit: imports map shared libraries
    _FXN_DIR = workdir
    os.makedirs(workdir, exist_ok=True)
    limit = int(os.environ.get("FIXNET_FUZZ_ADDRESS_SPACE", WORKER_ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        t = time.perf_counter()
        print(f"--- case {req['seed']}", file=sys.stderr, flush=True)
        if req.get("selftest") == "crash":
            import signal
            os.kill(os.getpid(), signal.SIGSEGV)
        elif req.get("selftest") == "hang":
            time.sleep(3600)
        res = run_case(req["seed"], os.path.join(workdir, "case"), req.get("small_only", False))
        res["seconds"] = round(time.perf_counter() - t, 3)
        out.write(json.dumps(res, default=str) + "\n")


def main(argv):
    if argv[:1] == ["--worker"]:
        worker_main(argv[1])
        return 0
    import tempfile
    keep = None
    if "--keep" in argv:
        keep = argv[argv.index("--keep") + 1]
        argv = [a for a in argv if a not in ("--keep", keep)]
    small = "--small" in argv
    argv = [a for a in argv if a != "--small"]
    import_fixnet()
    os.environ.setdefault("FIXNET_MAX_MEMORY", str(WORKER_MAX_MEMORY))     # as in a worker
    global _FXN_DIR
    for s in argv:
        wd = keep or tempfile.mkdtemp(prefix="fixnet-fuzz-")
        _FXN_DIR = wd
        res = run_case(int(s), os.path.join(wd, f"case{s}"), small)
        tb = res.pop("traceback", None)
        print(json.dumps(res, indent=1, default=str))
        if tb:
            print(tb)
        if not keep:
            shutil.rmtree(wd, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
