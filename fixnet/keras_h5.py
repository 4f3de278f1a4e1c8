"""Keras HDF5 model file -> float Graph, with h5py only. TensorFlow is never imported and no
code stored in the file is ever executed (Lambda and custom layers are refused).

Handles the generations of the format:
- Keras 2.0-2.2: ``class_name`` "Model"; a Sequential config may be a bare list of layers;
  inbound nodes as lists ``[[layer, node, tensor, kwargs], ...]``; ``batch_input_shape``.
- tf.keras 2.x: "Functional"/"Sequential"; weight names end in ":0"; BatchNorm axis as a list.
- Keras 3: inbound nodes as ``{"args": [...keras tensors...], "kwargs": {...}}``; dtype-policy
  objects; ``batch_shape``; single input/output refs not wrapped in a list.
Per-layer parsing lives in fixnet.keras_layers.
"""
import json
import os

import numpy as np

from .errors import FixnetError, MissingWeightError, ModelFileError, UnsupportedLayerError
from .graph import Graph, Node
from .keras_layers import CODE_LAYERS, KERAS_LAYERS, KerasLayer, Unsupported

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MODEL_CLASSES = {"Sequential", "Functional", "Model"}


def _text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


class LayerWeights:
    """The weights stored for one layer, in file order, with short names (kernel, bias, ...)."""

    def __init__(self, path, layer, class_name, items):
        self.path, self.layer, self.class_name = path, layer, class_name
        self.items = items                    # [(short_name, array)]

    def take(self, names):
        """Return {name: float32 array} for the weights a handler needs, by name, falling back
        to file order when the names differ (older writers)."""
        by_name = {}
        for short, arr in self.items:
            by_name.setdefault(short, arr)
        if all(n in by_name for n in names):
            return {n: by_name[n] for n in names}
        if len(self.items) == len(names) and not any(n in by_name for n in names):
            return {n: arr for n, (_, arr) in zip(names, self.items)}
        have = [s for s, _ in self.items]
        missing = [n for n in names if n not in by_name]
        raise MissingWeightError(
            f"{self.path}: layer '{self.layer}' ({self.class_name}) needs weights "
            f"{', '.join(names)}; the file is missing {', '.join(missing)} "
            f"(it holds: {', '.join(have) or 'none'})")

    def misshapen(self, name, got, want):
        raise MissingWeightError(
            f"{self.path}: layer '{self.layer}' ({self.class_name}): weight '{name}' has shape "
            f"{tuple(got)}, expected {tuple(want)}")


def _read_layer_weights(root, path, layer, class_name):
    if root is None or layer not in root:
        return LayerWeights(path, layer, class_name, [])
    g = root[layer]
    names = [_text(n) for n in g.attrs.get("weight_names", [])]
    items = []
    for wn in names:
        if wn not in g:
            raise MissingWeightError(f"{path}: layer '{layer}' ({class_name}) lists weight "
                                     f"'{wn}' but the file does not hold it")
        short = wn.rsplit("/", 1)[-1].split(":", 1)[0]
        items.append((short, np.asarray(g[wn][()], dtype=np.float32)))
    return LayerWeights(path, layer, class_name, items)


def _tensor_name(layer, node_index, tensor_index):
    if node_index == 0 and tensor_index == 0:
        return layer
    return f"{layer}:{node_index}:{tensor_index}"


def _refs_in(obj):
    """(layer, node_index, tensor_index) of every Keras 3 tensor in a nested args structure."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            h = obj["config"]["keras_history"]
            return [(h[0], int(h[1]), int(h[2]))]
        return [r for v in obj.values() for r in _refs_in(v)]
    if isinstance(obj, (list, tuple)):
        return [r for v in obj for r in _refs_in(v)]
    return []


def _inbound_refs(node):
    """Input tensor refs of one inbound node, in either generation's encoding."""
    if isinstance(node, dict):                                   # Keras 3
        return _refs_in(node.get("args", [])) + _refs_in(node.get("kwargs", {}))
    refs = []
    for entry in node:                                           # Keras 2: [[name, n, t, kw], ...]
        if isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str):
            refs.append((entry[0], int(entry[1]), int(entry[2]) if len(entry) > 2 else 0))
        else:
            raise ModelFileError(f"inbound node entry {entry!r} is not understood")
    return refs


def _io_refs(spec):
    """Normalise input_layers/output_layers: Keras 3 writes a lone ref unwrapped."""
    if isinstance(spec, dict):
        spec = list(spec.values())
    if spec and isinstance(spec[0], str):
        spec = [spec]
    return [(r[0], int(r[1]), int(r[2])) for r in spec]


def _input_shape(cfg):
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key) is not None:
            return tuple(cfg[key][1:])
    if cfg.get("input_shape") is not None:
        return tuple(cfg["input_shape"])
    return None


def _sequential_as_functional(config, path):
    """Rewrite a Sequential config as a Functional one (layers with inbound nodes)."""
    layers = config if isinstance(config, list) else config.get("layers", [])
    name = "sequential" if isinstance(config, list) else config.get("name", "sequential")
    if not layers:
        raise ModelFileError(f"{path}: the Sequential model has no layers")
    out = []
    first = layers[0]
    if first.get("class_name") == "InputLayer":
        inp = dict(first, name=first["config"].get("name", f"{name}_input"), inbound_nodes=[])
        layers = layers[1:]
    else:
        shape = _input_shape(first.get("config", {}))
        if shape is None and isinstance(config, dict) and config.get("build_input_shape"):
            shape = tuple(config["build_input_shape"][1:])
        if shape is None:
            raise ModelFileError(f"{path}: the Sequential model has no input shape (it was saved "
                                 "before it was built); fixnet cannot infer one")
        inp = {"class_name": "InputLayer", "name": f"{name}_input",
               "config": {"batch_input_shape": [None, *shape], "name": f"{name}_input"},
               "inbound_nodes": []}
    out.append(inp)
    prev = inp["name"]
    for layer in layers:
        lname = layer.get("name") or layer.get("config", {}).get("name")
        out.append(dict(layer, name=lname, inbound_nodes=[[[prev, 0, 0, {}]]]))
        prev = lname
    return {"name": name, "layers": out, "input_layers": [[inp["name"], 0, 0]],
            "output_layers": [[prev, 0, 0]]}


def _layer_problem(layer):
    """Why a layer class cannot be handled at all, or None."""
    cls = layer.get("class_name", "?")
    if cls in CODE_LAYERS:
        return ("it runs Python code stored in the file, and fixnet never executes code from a "
                "file; rewrite it as built-in layers")
    reg = layer.get("registered_name")
    module = layer.get("module")
    custom = (isinstance(reg, str) and ">" in reg) or (
        isinstance(module, str) and not module.startswith(("keras", "tf_keras", "tensorflow")))
    if cls in KERAS_LAYERS and not custom:
        return None
    if custom:
        return "a custom layer class; fixnet only runs built-in Keras layers"
    if cls in MODEL_CLASSES:
        return "a model nested inside the model is not supported yet"
    return "no fixnet handler for this layer class yet"


class _Builder:
    def __init__(self, path, weights_root):
        self.path = path
        self.root = weights_root
        self.nodes = []
        self.shapes = {}
        self.problems = []          # (layer, class, reason)
        self.names = set()

    def emit_for(self, layer_name, class_name):
        def emit(op, inputs, outputs, attrs, weights, suffix):
            from .ops import op_for
            base = f"{layer_name}/{suffix}" if suffix else layer_name
            name, k = base, 1
            while name in self.names:        # a layer called twice, or split into several nodes
                k += 1
                name = f"{base}#{k}"
            self.names.add(name)
            node = Node(name, op, list(inputs), list(outputs), attrs, weights, layer_name, class_name)
            shapes = op_for(node).infer_shapes(node, [self.shapes[t] for t in node.inputs])
            for t, s in zip(node.outputs, shapes):
                self.shapes[t] = tuple(int(d) for d in s)
            self.nodes.append(node)
        return emit

    def build(self, model_cfg):
        cls = model_cfg.get("class_name")
        config = model_cfg.get("config")
        if cls == "Sequential":
            config = _sequential_as_functional(config, self.path)
        elif cls not in MODEL_CLASSES:
            raise ModelFileError(f"{self.path}: top-level class '{cls}' is not a Keras model")
        layers = config.get("layers", [])
        problems = [(l.get("name") or l.get("config", {}).get("name", "?"), l.get("class_name", "?"), r)
                    for l in layers if l.get("class_name") != "InputLayer"
                    for r in [_layer_problem(l)] if r]
        if problems:
            raise _unsupported(self.path, problems)

        inputs = []
        for ref in _io_refs(config.get("input_layers", [])):
            inputs.append(_tensor_name(*ref))
        # every call of every layer, processed once all its inputs exist
        pending = []
        for layer in layers:
            lname = layer.get("name") or layer["config"]["name"]
            if layer.get("class_name") == "InputLayer":
                shape = _input_shape(layer.get("config", {}))
                if shape is None or any(d is None for d in shape):
                    raise UnsupportedLayerError(
                        f"{self.path}: input '{lname}' has shape {shape}; fixnet needs every "
                        "dimension but the batch to be fixed")
                self.shapes[_tensor_name(lname, 0, 0)] = shape
                continue
            for i, node in enumerate(layer.get("inbound_nodes", [])):
                pending.append((layer, i, _inbound_refs(node)))
        unknown = set()       # tensors of layers that failed: their consumers are skipped
        while pending:
            progressed = False
            for item in list(pending):
                layer, i, refs = item
                names = [_tensor_name(*r) for r in refs]
                if any(n in unknown for n in names):
                    unknown.add(_tensor_name(layer.get("name"), i, 0))
                    pending.remove(item)
                    progressed = True
                    continue
                if all(n in self.shapes for n in names):
                    self._call(layer, i, names, unknown)
                    pending.remove(item)
                    progressed = True
            if not progressed:
                missing = sorted({n for _, _, refs in pending for n in (_tensor_name(*r) for r in refs)
                                  if n not in self.shapes})
                raise ModelFileError(f"{self.path}: the model config refers to tensors no layer "
                                     f"produces: {', '.join(missing)}")
        if self.problems:
            raise _unsupported(self.path, self.problems)
        outputs = [_tensor_name(*r) for r in _io_refs(config.get("output_layers", []))]
        for t in outputs:
            if t not in self.shapes:
                raise ModelFileError(f"{self.path}: model output '{t}' is never produced")
        return Graph(inputs, outputs, self.nodes, dict(self.shapes), config.get("name", "model"),
                     self.path)

    def _call(self, layer, node_index, inputs, unknown):
        lname = layer.get("name") or layer["config"]["name"]
        cls = layer["class_name"]
        out = _tensor_name(lname, node_index, 0)
        weights = _read_layer_weights(self.root, self.path, lname, cls)
        kl = KerasLayer(lname, cls, layer.get("config", {}), weights, inputs,
                        [self.shapes[t] for t in inputs], [out], self.emit_for(lname, cls))
        try:
            KERAS_LAYERS[cls](kl)
        except Unsupported as e:
            self.problems.append((lname, cls, str(e)))
            unknown.add(out)
        except UnsupportedLayerError as e:
            self.problems.append((lname, cls, str(e)))
            unknown.add(out)


def _unsupported(path, problems):
    lines = "\n".join(f"  - '{n}' ({c}): {r}" for n, c, r in problems)
    return UnsupportedLayerError(
        f"{path}: {len(problems)} layer(s) fixnet cannot run:\n{lines}", problems)


def load_keras_h5(path):
    """Read a Keras full-model HDF5 file (``model.save("x.h5")``) into a float Graph."""
    import h5py

    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot open ({e.strerror or e})") from None
    if magic[:4] == b"PK\x03\x04":
        raise ModelFileError(f"{path}: this is a zip archive (a Keras 3 .keras file?); fixnet reads "
                             "Keras HDF5 files (.h5) so far")
    if magic != HDF5_MAGIC:
        raise ModelFileError(f"{path}: not an HDF5 file (a Keras model saved with model.save('x.h5') "
                             "starts with the HDF5 signature)")
    try:
        f = h5py.File(path, "r")
    except Exception as e:
        raise ModelFileError(f"{path}: the HDF5 file cannot be read; it may be truncated or "
                             f"damaged ({e})") from None
    try:
        with f:
            raw = f.attrs.get("model_config")
            if raw is None:
                if "layer_names" in f.attrs:
                    raise ModelFileError(f"{path}: holds weights only (save_weights); fixnet needs "
                                         "the model saved with model.save('x.h5')")
                raise ModelFileError(f"{path}: an HDF5 file, but not a Keras model (no model_config)")
            try:
                model_cfg = json.loads(_text(raw))
            except ValueError as e:
                raise ModelFileError(f"{path}: model_config is not valid JSON ({e})") from None
            root = f["model_weights"] if "model_weights" in f else f
            return _Builder(path, root).build(model_cfg)
    except FixnetError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ModelFileError(f"{path}: damaged or unexpected Keras file structure "
                             f"({type(e).__name__}: {e})") from None
