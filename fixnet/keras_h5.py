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
import math
import os
import re
import zipfile
import zlib

import numpy as np

from .errors import FixnetError, MissingWeightError, ModelFileError, UnsupportedLayerError
from .graph import Graph, Node
from . import h5safe, keras_ops
from .limits import MemoryBudget, max_memory_bytes
from .keras_layers import (CODE_LAYERS, KERAS_LAYERS, MASK_ARGUMENT, MASK_KEEPERS, MASK_USERS,
                           MERGES, KerasLayer, Unsupported)

MERGE_CLASSES = set(MERGES) | {"Concatenate"}

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MODEL_CLASSES = {"Sequential", "Functional", "Model"}
MAX_NESTING = 32                  # models inside models
MAX_CONFIG_BYTES = 64 << 20       # a model config (JSON) larger than this is not a real one


def _text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


class LayerWeights:
    """The weights stored for one layer, in file order, with short names (kernel, bias, ...)."""

    def __init__(self, path, layer, class_name, items, where=""):
        self.path, self.layer, self.class_name = path, layer, class_name
        self.items = [(short, arr) for short, arr, _ in items]     # [(short_name, array)]
        self.sources = [src for _, _, src in items]               # HDF5 path of each
        self.where = where                    # the HDF5 group the weights were looked up in
        self.taken = {}                       # name -> HDF5 path, of the weights take() gave

    # names some writers use for a weight that other writers call differently
    ALIASES = {"depthwise_kernel": ("kernel",)}

    def take(self, names):
        """Return {name: float32 array} for the weights a handler needs, by name, falling back
        to file order when the names differ (older writers)."""
        by_name = {}
        for short, arr in self.items:
            by_name.setdefault(short, arr)
        for name in names:
            for alt in self.ALIASES.get(name, ()):
                if name not in by_name and alt in by_name and alt not in names:
                    by_name[name] = by_name.pop(alt)
        src = {}
        for (short, arr), path in zip(self.items, self.sources):
            src.setdefault(id(arr), path)
        if all(n in by_name for n in names):
            out = {n: by_name[n] for n in names}
        elif len(self.items) == len(names) and not any(n in by_name for n in names):
            out = {n: arr for n, (_, arr) in zip(names, self.items)}
        else:
            have = [s for s, _ in self.items]
            missing = [n for n in names if n not in by_name]
            looked = f" in '{self.where}'" if self.where else ""
            raise MissingWeightError(
                f"{self.path}: layer '{self.layer}' ({self.class_name}) needs weights "
                f"{', '.join(names)}; the file is missing {', '.join(missing)} "
                f"(it holds{looked}: {', '.join(have) or 'none'})")
        self.taken = {n: src.get(id(a), "") for n, a in out.items()}
        return out

    def part(self, prefix, others=False):
        """The weights of one part of a wrapper layer (a Bidirectional's forward layer): those
        whose path, below what all of the layer's weights share, starts with ``prefix``
        (forward_lstm/... in .h5 files, forward_layer/... in Keras 3's native layout); with
        ``others``, the rest (its backward layer, which keeps its own name in .h5 files when
        the model gave one)."""
        paths = [[c for c in src.split("/") if c] for src in self.sources]
        common = 0
        while paths and all(len(p) > common + 1 for p in paths) and \
                len({p[common] for p in paths}) == 1:
            common += 1
        mine = [(short, arr, src) for (short, arr), src, p in zip(self.items, self.sources, paths)
                if (len(p) > common and p[common].startswith(prefix)) != others]
        part = f"not {prefix}" if others else prefix
        return LayerWeights(self.path, self.layer, self.class_name, mine,
                            where=f"{self.where} ({part} layer)" if self.where else part)

    def misshapen(self, name, got, want):
        where = f" ('{self.taken[name]}')" if self.taken.get(name) else ""
        raise MissingWeightError(
            f"{self.path}: layer '{self.layer}' ({self.class_name}): weight '{name}'{where} has "
            f"shape {tuple(got)}, expected {tuple(want)}")


class LegacyWeights:
    """Weights laid out as Keras 2 and Keras 3's ``.h5`` writers do: one group per layer under
    the root (``model_weights`` in a full-model file, the file root after save_weights), with a
    ``weight_names`` attribute listing dataset paths relative to that group, in order."""

    def __init__(self, root, path, budget):
        self.root, self.path, self.budget = root, path, budget

    def _where(self, layer, class_name):
        return f"{self.path}: layer '{layer}' ({class_name})"

    def _weight_names(self, g, where):
        with h5safe.reading(where):
            names = g.attrs.get("weight_names", [])
            names = [_text(n) for n in np.asarray(names).reshape(-1)]
        return names

    def layer(self, name, class_name):
        where = self._where(name, class_name)
        g = h5safe.child(self.root, name, where)
        if g is None:
            return LayerWeights(self.path, name, class_name, [], where=f"{self._root_name()}/{name}")
        return LayerWeights(self.path, name, class_name,
                            self._items(g, self._weight_names(g, where), name, class_name),
                            where=g.name)

    def _root_name(self):
        return self.root.name.rstrip("/") if self.root is not None else ""

    def _items(self, g, names, layer, class_name):
        items = []
        for wn in names:
            where = f"{self._where(layer, class_name)}: weight '{wn}'"
            ds = h5safe.child(g, wn, where)
            if ds is None:
                raise MissingWeightError(f"{self.path}: layer '{layer}' ({class_name}) lists weight "
                                         f"'{wn}' but the file does not hold it (in '{g.name}')")
            short = wn.rsplit("/", 1)[-1].split(":", 1)[0]
            items.append((short, h5safe.read_weight(ds, where, self.budget), ds.name))
        return items

    def bind(self, layers):
        return self

    def nested(self, name):
        """The weights of a model used as a layer: all in the group named after it, each weight
        path ending in <inner layer>/<weight>."""
        g = h5safe.child(self.root, name, f"{self.path}: model '{name}'")
        return _NestedLegacyWeights(g, self.path, self)


class _NestedLegacyWeights(LegacyWeights):
    def __init__(self, group, path, parent):
        super().__init__(group, path, parent.budget)
        self.names = (self._weight_names(group, f"{path}: model '{group.name}'")
                      if group is not None else [])

    def layer(self, name, class_name):
        mine = [n for n in self.names if len(n.split("/")) >= 2 and n.split("/")[-2] == name]
        if self.root is None:
            return LayerWeights(self.path, name, class_name, [])
        return LayerWeights(self.path, name, class_name, self._items(self.root, mine, name, class_name),
                            where=self.root.name)

    def nested(self, name):
        return self          # deeper nesting: the same flat list, filtered by inner layer name


def _snake_case(name):
    """Keras 3's name for an object of a class, as its native weights file uses it."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class KerasV3Weights:
    """Weights as Keras 3's native writer lays them out (``.keras`` archives and
    ``.weights.h5``): ``layers/<key>/vars/<i>``, nested models under ``layers/<key>/layers``.
    The key is not the layer's name but its class in snake case, numbered in layer order
    (dense, dense_1, ...): ``bind`` learns the order from the model config."""

    def __init__(self, root, path, budget):
        self.root, self.path, self.budget = root, path, budget
        self.keys = {}

    def bind(self, layers):
        """``layers``: (name, class_name) of the model's layers in order (what model.layers
        lists: a Sequential's InputLayer is not one of them)."""
        counts = {}
        for name, cls in layers:
            base = _snake_case(cls)
            k = counts.get(base, 0)
            counts[base] = k + 1
            self.keys[name] = base if k == 0 else f"{base}_{k}"
        return self

    def _group(self, name):
        where = f"{self.path}: layer '{name}'"
        layers = h5safe.child(self.root, "layers", where)
        return h5safe.child(layers, self.keys.get(name, name), where)

    # groups under a layer's that hold the variables of a layer it wraps: a recurrent layer's
    # cell, a Bidirectional's two layers, a TimeDistributed's layer
    WRAPPED = ("cell", "forward_layer", "backward_layer", "layer")

    def _vars(self, g, where, items, searched, depth=0):
        """Append the variables under group ``g`` (and the layers it wraps) to ``items``, and
        (path, present) of each ``vars`` group looked for to ``searched``."""
        vars_ = h5safe.child(g, "vars", where)
        if g is not None:
            searched.append((f"{g.name}/vars", vars_ is not None))
        if vars_ is not None:
            order = sorted(h5safe.keys(vars_, where),
                           key=lambda v: (0, int(v), "") if v.isdigit() else (1, 0, v))
            for k in order:
                ds = h5safe.child(vars_, k, where)
                items.append((f"#{k}", h5safe.read_weight(ds, f"{where}: weight #{k}", self.budget),
                              ds.name))
        if g is not None and depth < 4:
            for sub in self.WRAPPED:
                inner = h5safe.child(g, sub, where)
                if inner is not None:
                    self._vars(inner, where, items, searched, depth + 1)

    def layer(self, name, class_name):
        where = f"{self.path}: layer '{name}' ({class_name})"
        g = self._group(name)
        items, searched = [], []
        self._vars(g, where, items, searched)
        found = [p for p, there in searched if there or not items]
        looked = (", ".join(found)
                  or f"layers/{self.keys.get(name, name)}/vars")
        return LayerWeights(self.path, name, class_name, items, where=looked)

    def nested(self, name):
        return KerasV3Weights(self._group(name), self.path, self.budget)


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


CONSTANT_VALUE = "_CONSTANT_VALUE"      # tf.keras 2: a non-tensor first argument of a TFOpLambda


def _is_ref(v):
    """A tf.keras 2 tensor reference [layer, node, tensor] (as kwargs of TFOpLambda hold them)."""
    return (isinstance(v, (list, tuple)) and len(v) == 3 and isinstance(v[0], str)
            and all(isinstance(i, int) and not isinstance(i, bool) for i in v[1:]))


def _op_call(node):
    """(args, kwargs, refs) of one call of a TFOpLambda or Keras 3 operation, every tensor replaced
    by ``keras_ops.TensorArg(i)`` where refs[i] is its (layer, node, tensor). The refs come in the
    order _inbound_refs lists them."""
    refs = []

    def tensor(r):
        refs.append((r[0], int(r[1]), int(r[2])))
        return keras_ops.TensorArg(len(refs) - 1)

    if isinstance(node, dict):                                   # Keras 3
        def walk(o):
            if isinstance(o, dict):
                if o.get("class_name") == "__keras_tensor__":
                    return tensor(o["config"]["keras_history"])
                return {k: walk(v) for k, v in o.items()}
            if isinstance(o, (list, tuple)):
                return [walk(v) for v in o]
            return o
        return walk(list(node.get("args", []))), walk(dict(node.get("kwargs", {}))), refs

    def walk2(o):
        if _is_ref(o):
            return tensor(o)
        if isinstance(o, dict):
            return {k: walk2(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk2(v) for v in o]
        return o

    if node and isinstance(node[0], str):          # [layer | _CONSTANT_VALUE, node, tensor | value, kwargs]
        first = node[2] if node[0] == CONSTANT_VALUE else tensor(node[:3])
        kwargs = node[3] if len(node) > 3 and isinstance(node[3], dict) else {}
        return [first], walk2(kwargs), refs
    first, kwargs = [], {}                         # the first argument is a list: one entry per element
    for entry in node:
        first.append(entry[2] if entry[0] == CONSTANT_VALUE else tensor(entry[:3]))
        if len(entry) > 3 and isinstance(entry[3], dict):
            kwargs = entry[3]
    return [first], kwargs, refs


def _inbound_refs(node):
    """Input tensor refs of one inbound node, in either generation's encoding. A Keras 3
    call's ``mask`` argument is not among them (see _mask_refs)."""
    if isinstance(node, dict):                                   # Keras 3
        kwargs = {k: v for k, v in (node.get("kwargs") or {}).items() if k != "mask"}
        return _refs_in(node.get("args", [])) + _refs_in(kwargs)
    if node and isinstance(node[0], str):                        # tf.keras 2 TFOpLambda, flat
        return _op_call(node)[2]
    refs = []
    for entry in node:                                           # Keras 2: [[name, n, t, kw], ...]
        if isinstance(entry, (list, tuple)) and entry and entry[0] == CONSTANT_VALUE:
            continue
        if isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str):
            refs.append((entry[0], int(entry[1]), int(entry[2]) if len(entry) > 2 else 0))
        else:
            raise ValueError(f"inbound node entry {entry!r} is not understood")
    return refs


def _mask_refs(node):
    """The refs of a Keras 3 call's ``mask`` argument: Keras 3 writes the masks Keras
    propagates (Masking, Embedding(mask_zero=True)) into the graph as the operations that
    compute them (NotEqual, Any, ...) feeding ``mask=`` arguments. fixnet propagates the
    masks itself (keras_h5._Builder.propagate_mask) and checks the two agree."""
    if isinstance(node, dict):
        return _refs_in((node.get("kwargs") or {}).get("mask"))
    return []


def _mask_only_layers(layers):
    """Names of the Keras 3 operations whose results only ever reach ``mask=`` arguments
    (directly or through other such operations): the mask computations of _mask_refs."""
    data_uses, mask_uses = {}, {}
    for l in layers:
        for node in l.get("inbound_nodes", []) or []:
            for r in _inbound_refs(node):
                data_uses.setdefault(r[0], set()).add(_layer_name(l))
            for r in _mask_refs(node):
                mask_uses.setdefault(r[0], set()).add(_layer_name(l))
    def operation(l):       # a Keras 3 operation (in .h5 files some, e.g. ZerosLike(dtype="bool"),
        cfg = l.get("config")   # look like layers to _tensor_op; none has "trainable")
        return _tensor_op(l) is not None or (
            isinstance(cfg, dict) and "trainable" not in cfg and l.get("class_name") != "InputLayer"
            and all(isinstance(n, dict) for n in l.get("inbound_nodes") or [None]))
    cand = {_layer_name(l) for l in layers if operation(l)}
    changed = True
    while changed:
        changed = False
        for name in list(cand):
            users = data_uses.get(name, set())
            if any(u not in cand for u in users) or not (users or mask_uses.get(name)):
                cand.discard(name)
                changed = True
    return cand


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
            if not isinstance(cfg[key], (list, tuple)) or not cfg[key]:
                raise ValueError(f"{key} {cfg[key]!r} is not a shape")
            return tuple(cfg[key][1:])
    if cfg.get("input_shape") is not None:
        if not isinstance(cfg["input_shape"], (list, tuple)):
            raise ValueError(f"input_shape {cfg['input_shape']!r} is not a shape")
        return tuple(cfg["input_shape"])
    return None


def _is_dim(d):
    return isinstance(d, int) and not isinstance(d, bool) and d >= 1


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


def _tensor_op(layer):
    """("tf", function) for a tf.keras 2 TFOpLambda, ("keras", class) for a Keras 3 operation on
    tensors (some share a merge or Softmax layer's class name: told apart by their module, or in
    ``.h5`` files where that is null, by a config without the ``trainable`` and ``dtype`` layers
    have), or None for a layer."""
    cls = layer.get("class_name")
    cfg = layer.get("config")
    if cls == "TFOpLambda":
        return "tf", str((cfg or {}).get("function", "?"))
    if cls in ("InputLayer",) or cls in MODEL_CLASSES or not isinstance(cfg, dict):
        return None
    module = layer.get("module")
    if isinstance(module, str):
        return ("keras", cls) if module.startswith(("keras.src.ops", "keras.ops")) else None
    nodes = layer.get("inbound_nodes") or []
    if not nodes or not all(isinstance(n, dict) for n in nodes) or "trainable" in cfg:
        return None
    # every Keras 3 layer's config has "dtype" (a few, e.g. SpatialDropout2D, drop "trainable")
    if "dtype" not in cfg or (cls in keras_ops.KERAS_OPS and cls not in KERAS_LAYERS):
        return "keras", cls
    return None


def _layer_problem(layer):
    """Why a layer class cannot be handled at all, or None."""
    cls = layer.get("class_name", "?")
    op = _tensor_op(layer)
    if op is not None:
        return keras_ops.problem(*op)
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


def _layer_name(layer):
    return layer.get("name") or layer.get("config", {}).get("name", "?")


def _check_layers(layers, path, model):
    """Every entry of a model's layer list is a layer: a dict with a class name and a name,
    names unique."""
    if not isinstance(layers, list):
        raise ModelFileError(f"{path}: model '{model}': its layers are {type(layers).__name__}, "
                             "not a list")
    seen = set()
    for i, l in enumerate(layers):
        if not isinstance(l, dict) or not isinstance(l.get("class_name"), str):
            raise ModelFileError(f"{path}: model '{model}': layer {i} is not a layer config "
                                 "(no class_name)")
        cfg = l.get("config")
        if cfg is not None and not isinstance(cfg, (dict, list)):
            raise ModelFileError(f"{path}: model '{model}': layer {i}'s config is not an object")
        name = l.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)
        if not isinstance(name, str) or not name:
            raise ModelFileError(f"{path}: model '{model}': layer {i} ({l['class_name']}) has no "
                                 "name")
        if name in seen:
            raise ModelFileError(f"{path}: model '{model}': two layers are named '{name}'")
        seen.add(name)


def _as_functional(model_cfg, path):
    """(class_name, functional config) of a model config; Sequential is rewritten."""
    if not isinstance(model_cfg, dict):
        raise ModelFileError(f"{path}: the model config is a {type(model_cfg).__name__}, not a "
                             "Keras model")
    cls = model_cfg.get("class_name")
    config = model_cfg.get("config")
    name = model_cfg.get("name") or (config.get("name") if isinstance(config, dict) else None)
    if cls == "Sequential":
        layers = config if isinstance(config, list) else \
            config.get("layers", []) if isinstance(config, dict) else None
        _check_layers(layers, path, name)
        return cls, _sequential_as_functional(config, path)
    if cls not in MODEL_CLASSES or not isinstance(config, dict):
        raise ModelFileError(f"{path}: top-level class '{cls}' is not a Keras model")
    _check_layers(config.get("layers", []), path, name)
    return cls, config


def _problems(config, path, prefix="", depth=0):
    """(layer, class, reason) for every layer, nested models included, fixnet cannot handle."""
    if depth > MAX_NESTING:
        raise ModelFileError(f"{path}: models nested more than {MAX_NESTING} deep "
                             f"('{prefix.rstrip('/')}')")
    out = []
    mask_only = _mask_only_layers(config.get("layers", []))
    for l in config.get("layers", []):
        cls = l.get("class_name", "?")
        if cls == "InputLayer" or _layer_name(l) in mask_only:
            continue
        if cls in MODEL_CLASSES:
            try:
                _, inner = _as_functional(l, path)
            except ModelFileError as e:
                out.append((prefix + _layer_name(l), cls, str(e)))
                continue
            out.extend(_problems(inner, path, prefix + _layer_name(l) + "/", depth + 1))
            continue
        reason = _layer_problem(l)
        if reason:
            out.append((prefix + _layer_name(l), cls, reason))
    return out


def _node_index_remap(layers, config):
    """{(layer, node index as referenced): index into the layer's inbound_nodes}.

    Files normally number a layer's calls 0, 1, ... as listed in its inbound_nodes, but
    tf.keras 2 writes references to a nested model with the model's own numbering, in which
    call 0 is the model's construction (``["feature_mlp", 1, 0]`` for its first call in the
    outer graph). Where a layer is referenced with indices beyond its inbound nodes, the
    referenced indices are mapped onto its calls in order."""
    counts = {_layer_name(l): len(l.get("inbound_nodes", [])) for l in layers}
    referenced = {}
    for l in layers:
        for node in l.get("inbound_nodes", []):
            for name, n, _ in _inbound_refs(node):
                referenced.setdefault(name, set()).add(n)
    for name, n, _ in _io_refs(config.get("output_layers", [])):
        referenced.setdefault(name, set()).add(n)
    remap = {}
    for name, idx in referenced.items():
        n_calls = counts.get(name, 0)
        if n_calls and max(idx) >= n_calls and len(idx) <= n_calls:
            remap.update({(name, k): i for i, k in enumerate(sorted(idx))})
    return remap


def _window_bytes(node, in_shapes):
    """Bytes a window op's float reference gathers at batch 1 beyond its input and output: the
    zero-padded input and the [OH, OW, KH, KW, C] windows, in float64 (0 for other ops)."""
    from .ops.spatial import geometry
    a = node.attrs
    if "kernel_size" not in a or not in_shapes or len(in_shapes[0]) < 2:
        return 0
    s = in_shapes[0]
    hw = (1, s[0]) if len(s) == 2 else (s[0], s[1])
    k, st = a["kernel_size"], a.get("strides", (1, 1))
    d = a.get("dilation", (1, 1))
    oh, ow, (top, bottom), (left, right) = geometry(hw, k, st, d, a.get("padding", "valid"))
    c = s[-1]
    return 8 * c * ((hw[0] + top + bottom) * (hw[1] + left + right) + oh * ow * k[0] * k[1])


class _Builder:
    """Turns a (functional-form) model config into IR nodes, recursing into nested models."""

    def __init__(self, path, weights, keras_version, budget):
        self.path = path
        self.weights = weights
        self.budget = budget        # the memory the model declares (fixnet.limits)
        self.keras_version = keras_version
        self.nodes = []
        self.shapes = {}
        self.alias = {}             # tensor name -> the tensor it is another name for
        self.problems = []          # (layer, class, reason)
        self.names = set()
        self.graph_inputs = []
        self.layer_weights = {}     # (weights source id, layer) -> (source, LayerWeights)
        self.masks = {}             # tensor -> its sequence mask tensor (fixnet/ops/mask.py)

    def resolve(self, t):
        seen = set()
        while t in self.alias:
            if t in seen:
                raise ModelFileError(f"{self.path}: tensor '{t}' is defined in terms of itself")
            seen.add(t)
            t = self.alias[t]
        return t

    def add_tensor(self, t, shape, what):
        """Record a tensor's shape (no batch) after checking it, and count its memory at
        batch 1 in the budget."""
        if not isinstance(shape, tuple) or not all(_is_dim(d) or d is None for d in shape):
            raise ModelFileError(f"{self.path}: {what}: tensor shape {shape!r} is not a list of "
                                 "positive sizes")
        # a None dimension (a sequence of any length) counts as 1: what batch 1 needs at least
        self.budget.need(4 * math.prod(1 if d is None else d for d in shape),
                         f"{what}: tensor of shape {shape}")
        self.shapes[t] = shape

    def emit_for(self, node_base, layer_name, class_name):
        def emit(op, inputs, outputs, attrs, weights, suffix):
            from .ops import op_for
            base = f"{node_base}/{suffix}" if suffix else node_base
            name, k = base, 1
            while name in self.names:        # a layer called twice, or split into several nodes
                k += 1
                name = f"{base}#{k}"
            self.names.add(name)
            node = Node(name, op, list(inputs), list(outputs), attrs, weights, layer_name, class_name)
            what = f"layer '{layer_name}' ({class_name})"
            for k, w in weights.items():       # file weights are checked when read; these
                w = np.asarray(w)              # may also come from the config or be derived
                if w.dtype.kind not in "fiub" or (w.size and not np.all(np.isfinite(w))):
                    raise ModelFileError(f"{self.path}: {what}: its '{k}' values (from its weights "
                                         "and config) are not all finite numbers")
            in_shapes = [self.shapes[t] for t in node.inputs]
            variable = any(d is None for s in in_shapes for d in s)
            try:
                shapes = op_for(node).infer_shapes(node, in_shapes)
                shapes = [tuple(s) for s in shapes]
            except FixnetError:
                raise
            except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError,
                    OverflowError, AttributeError) as e:
                if variable:
                    raise Unsupported(f"its input has a dimension of any size (None: "
                                      f"{', '.join(str(s) for s in in_shapes)}), which fixnet's "
                                      f"'{op}' op needs fixed; give the model's input a fixed "
                                      "length") from None
                raise ModelFileError(f"{self.path}: {what}: its configuration gives no valid "
                                     f"output shape ({type(e).__name__}: {e})") from None
            if len(shapes) != len(node.outputs):
                raise ModelFileError(f"{self.path}: {what}: {len(shapes)} output shapes for "
                                     f"{len(node.outputs)} outputs")
            for t, s in zip(node.outputs, shapes):
                if not all((isinstance(d, (int, np.integer)) and not isinstance(d, bool))
                           or (d is None and variable) for d in s):
                    raise ModelFileError(f"{self.path}: {what}: output shape {s} is not integral")
                self.add_tensor(t, tuple(None if d is None else int(d) for d in s), what)
            if not variable:
                self.budget.need(_window_bytes(node, in_shapes),
                                 f"{what}: its padded input and windows (float reference)")
            self.budget.need(op_for(node).reference_bytes(node, in_shapes),
                             f"{what}: the float reference's working arrays")
            self.nodes.append(node)
        return emit

    def build(self, model_cfg):
        cls, config = _as_functional(model_cfg, self.path)
        problems = _problems(config, self.path)
        if problems:
            raise _unsupported(self.path, problems)
        outputs = self.expand(config, "", self.weights, None, cls)
        if self.problems:
            raise _unsupported(self.path, self.problems)
        if not self.graph_inputs or not outputs:
            raise ModelFileError(f"{self.path}: the model has {len(self.graph_inputs)} inputs and "
                                 f"{len(outputs)} outputs; it needs at least one of each")
        return Graph(self.graph_inputs, outputs, self.nodes, dict(self.shapes),
                     config.get("name", "model"), self.path)

    def expand(self, config, prefix, weights, bound_inputs, model_class="Functional"):
        """Emit the nodes of one (possibly nested) functional config. ``bound_inputs``: the
        outer tensors a nested model is called on (None at the top level). Returns the names of
        the tensors its outputs are."""
        layers = config.get("layers", [])
        weights = weights.bind([(_layer_name(l), l.get("class_name", "")) for l in layers
                                if not (model_class == "Sequential" and l.get("class_name") == "InputLayer")
                                and _tensor_op(l) is None])
        input_refs = _io_refs(config.get("input_layers", []))
        if bound_inputs is not None and len(bound_inputs) != len(input_refs):
            raise ModelFileError(f"{self.path}: nested model '{prefix.rstrip('/')}' takes "
                                 f"{len(input_refs)} inputs but is called on {len(bound_inputs)}")
        remap = _node_index_remap(layers, config)
        tname = lambda lname, n, t: _tensor_name(prefix + lname, remap.get((lname, n), n), t)
        pending = []
        mask_only = _mask_only_layers(layers)
        for layer in layers:
            lname = _layer_name(layer)
            if layer.get("class_name") == "InputLayer":
                t = tname(lname, 0, 0)
                refs = [r[0] for r in input_refs]
                if bound_inputs is not None and lname in refs:
                    self.alias[t] = bound_inputs[refs.index(lname)]
                    continue
                try:
                    shape = _input_shape(layer.get("config", {}))
                except ValueError as e:
                    raise ModelFileError(f"{self.path}: input '{lname}': {e}") from None
                if shape is None or not shape or any(d is None for d in shape[1:]):
                    raise UnsupportedLayerError(
                        f"{self.path}: input '{lname}' has shape {shape}; fixnet needs every "
                        "dimension but the batch and the first (time steps) to be fixed")
                if t in self.shapes:
                    raise ModelFileError(f"{self.path}: input '{lname}' is defined twice")
                self.add_tensor(t, shape, f"input '{lname}'")
                self.graph_inputs.append(t)
                continue
            if lname in mask_only:
                continue
            for i, node in enumerate(layer.get("inbound_nodes", [])):
                pending.append((layer, i, _inbound_refs(node)))
        unknown = set()       # tensors of layers that failed: their consumers are skipped
        while pending:
            progressed = False
            for item in list(pending):
                layer, i, refs = item
                names = [self.resolve(tname(*r)) for r in refs]
                if any(n in unknown for n in names):
                    unknown.add(tname(_layer_name(layer), i, 0))
                elif all(n in self.shapes for n in names):
                    self._call(layer, i, names, unknown, prefix, weights)
                else:
                    continue
                pending.remove(item)
                progressed = True
            if not progressed and self.problems:
                break                # layers waiting on a refused layer's other outputs
            if not progressed:
                missing = sorted({self.resolve(tname(*r)) for _, _, refs in pending for r in refs}
                                 - set(self.shapes))
                waiting = {self.resolve(tname(_layer_name(l), i, 0)) for l, i, _ in pending}
                cycle = [t for t in missing if t in waiting]
                if cycle:
                    raise ModelFileError(f"{self.path}: layers of the model depend on each other "
                                         f"in a cycle (or on tensors no layer produces): "
                                         f"{', '.join(cycle)}")
                raise ModelFileError(f"{self.path}: the model config refers to tensors no layer "
                                     f"produces: {', '.join(missing)}")
        outputs = [self.resolve(tname(*r)) for r in _io_refs(config.get("output_layers", []))]
        if not self.problems:
            for t in outputs:
                if t not in self.shapes:
                    raise ModelFileError(f"{self.path}: model output '{t}' is never produced")
        return outputs

    def _call(self, layer, node_index, inputs, unknown, prefix, weights):
        lname = _layer_name(layer)
        cls = layer["class_name"]
        key = (id(weights), lname)
        if key not in self.layer_weights:          # a layer called twice shares its weights
            self.layer_weights[key] = (weights, weights.layer(lname, cls) if cls not in MODEL_CLASSES else None)
        out = _tensor_name(prefix + lname, node_index, 0)
        if cls in MODEL_CLASSES:
            inner_cls, inner = _as_functional(layer, self.path)
            inner_prefix = prefix + lname + (f"#{node_index}" if node_index else "") + "/"
            outs = self.expand(inner, inner_prefix, weights.nested(lname), inputs, inner_cls)
            for k, t in enumerate(outs):
                self.alias[_tensor_name(prefix + lname, node_index, k)] = t
            return
        kl = KerasLayer(lname, cls, layer.get("config", {}), self.layer_weights[key][1], inputs,
                        [self.shapes[t] for t in inputs], [out],
                        self.emit_for(prefix + lname, lname, cls), self.keras_version,
                        output_name=lambda k: _tensor_name(prefix + lname, node_index, k),
                        input_masks=[self.masks.get(t) for t in inputs])
        op = _tensor_op(layer)
        try:
            if op is not None:
                self._op(kl, op, layer, node_index, inputs)
            else:
                KERAS_LAYERS[cls](kl)
            if op is None:                   # operations on tensors drop masks
                self.check_mask(kl, layer["inbound_nodes"][node_index])
                self.propagate_mask(kl)
        except (Unsupported, UnsupportedLayerError) as e:
            self.problems.append((prefix + lname, cls, str(e)))
            unknown.add(out)
        except FixnetError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
                ZeroDivisionError, RecursionError) as e:
            raise ModelFileError(f"{self.path}: layer '{prefix + lname}' ({cls}): its config is "
                                 f"damaged or not understood ({type(e).__name__}: {e})") from None

    def check_mask(self, kl, node):
        """A Keras 3 call names the mask it was given (see _mask_refs): fixnet's propagation
        must agree on whether there is one, else the layer is refused rather than run with
        another mask than Keras's."""
        if not isinstance(node, dict) or kl.class_name not in MASK_ARGUMENT:
            return
        ours, theirs = any(m is not None for m in kl.input_masks), bool(_mask_refs(node))
        if ours != theirs:
            raise Unsupported("the file gives it " + ("a" if theirs else "no") + " sequence mask "
                              "and fixnet's mask propagation " + ("none" if theirs else "one"))

    def propagate_mask(self, kl):
        """Record the sequence masks of a call's outputs, as Keras propagates them: handlers of
        mask-aware layers (Masking, Embedding, the recurrent ones) set them; layers that support
        masking keep their input's; a merge layer combines its inputs' (a binary minimum or
        maximum of 0/1 masks, as each writer does);
        any other layer drops it (Keras 3 does so, with a warning; tf.keras 2 refuses to build
        such a model), except the layers whose results a mask would change: refused."""
        if kl.output_masks is not None:
            self.masks.update({t: m for t, m in kl.output_masks.items() if m is not None})
            return
        masks = [m for m in kl.input_masks if m is not None]
        if not masks:
            return
        out = kl.outputs[0]
        if kl.class_name in MASK_KEEPERS and len(kl.inputs) == 1:
            self.masks[out] = masks[0]
        elif kl.class_name in MASK_USERS:
            raise Unsupported("its input carries a sequence mask (from Masking or "
                              "Embedding(mask_zero=True)), which changes its results in Keras, "
                              "and fixnet does not apply masks in this layer")
        elif kl.class_name in MERGE_CLASSES:
            # tf.keras 2: the AND of the inputs' masks; Keras 3: their OR, and no mask when an
            # input has none (Concatenate: an all-true one)
            if kl.class_name == "Concatenate" and kl.config.get("axis", -1) not in (-1, len(self.shapes[out])):
                raise Unsupported("concatenates masked sequences along an axis but the last")
            if kl.keras3 and len(masks) < len(kl.input_masks):
                return
            kind = "maximum" if kl.keras3 else "minimum"
            acc = masks[0]
            for i, m in enumerate(masks[1:], 1):
                if m == acc:
                    continue
                t = kl.tensor(f"mask_{kind}{i}")
                kl.emit("binary", [acc, m], [t], {"kind": kind}, suffix=f"mask_{kind}{i}")
                acc = t
            self.masks[out] = acc

    def _op(self, kl, op, layer, node_index, inputs):
        kind, function = op
        args, kwargs = _op_args(kind, layer, node_index, inputs, self.shapes)
        keras_ops.handle(kl, kind, function, args, kwargs)


def _op_args(kind, layer, node_index, inputs, shapes):
    """The arguments of one TFOpLambda / Keras 3 operation call, tensors as TensorArg with their
    IR names and shapes; a Keras 3 operation's constructor arguments (its config but the name)
    join the keyword arguments."""
    args, kwargs, refs = _op_call(layer["inbound_nodes"][node_index])
    if len(refs) != len(inputs):
        raise ValueError(f"layer '{_layer_name(layer)}': inbound node not understood")

    def bind(o):
        if isinstance(o, keras_ops.TensorArg):
            name = inputs[o.index]
            return keras_ops.TensorArg(o.index, name, shapes[name])
        if isinstance(o, dict):
            return {k: bind(v) for k, v in o.items()}
        if isinstance(o, list):
            return [bind(v) for v in o]
        return o
    args, kwargs = bind(args), bind(kwargs)
    if kind == "keras":
        for k, v in layer.get("config", {}).items():
            if k == "name":
                continue
            if k in kwargs:
                raise Unsupported(f"argument '{k}' given both in the config and the call")
            kwargs[k] = v
    return args, kwargs


def _unsupported(path, problems):
    lines = "\n".join(f"  - '{n}' ({c}): {r}" for n, c, r in problems)
    return UnsupportedLayerError(
        f"{path}: {len(problems)} layer(s) fixnet cannot run:\n{lines}", problems)


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
        return json.loads(_text(text))
    except (ValueError, RecursionError) as e:       # RecursionError: absurdly deep nesting
        raise ModelFileError(f"{path}: {what} is not valid JSON ({type(e).__name__}: {e})") from None


def weights_source(f, path, budget):
    """The right reader for the weights in an open HDF5 file (full model or weights only)."""
    mw = h5safe.child(f, "model_weights", path)
    if mw is not None:
        return LegacyWeights(mw, path, budget)
    if "layer_names" in f.attrs:
        return LegacyWeights(f, path, budget)
    if h5safe.child(f, "layers", path) is not None:
        return KerasV3Weights(f, path, budget)
    raise ModelFileError(f"{path}: no Keras weights found (neither a model_weights group, "
                         "layer_names, nor a Keras 3 'layers' group)")


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
                version = _text(f.attrs.get("keras_version", "2"))
            return _Builder(path, weights_source(f, path, budget), version, budget).build(model_cfg)
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
            return _Builder(path, KerasV3Weights(f, f"{path}:{wname}", budget), version,
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
            version = str(cfg.get("keras_version") or _text(f.attrs.get("keras_version", "3")))
            return _Builder(path, weights_source(f, weights, budget), version, budget).build(cfg)
    return _guarded(weights, read)
