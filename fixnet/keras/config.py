"""A model config (JSON) made into one form: Keras 2.0 Sequential lists, tf.keras 2 and Keras 3
inbound nodes, nested models, masks; and the problems of a config listed together."""
from ..errors import ModelFileError, UnsupportedLayerError
from .arithmetic import KERAS_OPS, TensorArg, problem as arithmetic_problem
from .layers import CODE_LAYERS, KERAS_LAYERS, MERGES


MERGE_CLASSES = set(MERGES) | {"Concatenate"}

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MODEL_CLASSES = {"Sequential", "Functional", "Model"}
MAX_NESTING = 32                  # models inside models
MAX_CONFIG_BYTES = 64 << 20       # a model config (JSON) larger than this is not a real one


def tensor_name(layer, node_index, tensor_index):
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


def op_call(node):
    """(args, kwargs, refs) of one call of a TFOpLambda or Keras 3 operation, every tensor replaced
    by ``TensorArg(i)`` where refs[i] is its (layer, node, tensor). The refs come in the
    order inbound_refs lists them."""
    refs = []

    def tensor(r):
        refs.append((r[0], int(r[1]), int(r[2])))
        return TensorArg(len(refs) - 1)

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


def inbound_refs(node):
    """Input tensor refs of one inbound node, in either generation's encoding. A Keras 3
    call's ``mask`` argument is not among them (see mask_refs)."""
    if isinstance(node, dict):                                   # Keras 3
        kwargs = {k: v for k, v in (node.get("kwargs") or {}).items() if k != "mask"}
        return _refs_in(node.get("args", [])) + _refs_in(kwargs)
    if node and isinstance(node[0], str):                        # tf.keras 2 TFOpLambda, flat
        return op_call(node)[2]
    refs = []
    for entry in node:                                           # Keras 2: [[name, n, t, kw], ...]
        if isinstance(entry, (list, tuple)) and entry and entry[0] == CONSTANT_VALUE:
            continue
        if isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str):
            refs.append((entry[0], int(entry[1]), int(entry[2]) if len(entry) > 2 else 0))
        else:
            raise ValueError(f"inbound node entry {entry!r} is not understood")
    return refs


def mask_refs(node):
    """The refs of a Keras 3 call's ``mask`` argument: Keras 3 writes the masks Keras
    propagates (Masking, Embedding(mask_zero=True)) into the graph as the operations that
    compute them (NotEqual, Any, ...) feeding ``mask=`` arguments. fixnet propagates the
    masks itself (fixnet/keras/builder.py, GraphBuilder.propagate_mask) and checks the two agree."""
    if isinstance(node, dict):
        return _refs_in((node.get("kwargs") or {}).get("mask"))
    return []


def mask_only_layers(layers):
    """Names of the Keras 3 operations whose results only ever reach ``mask=`` arguments
    (directly or through other such operations): the mask computations of mask_refs."""
    data_uses, mask_uses = {}, {}
    for l in layers:
        for node in l.get("inbound_nodes", []) or []:
            for r in inbound_refs(node):
                data_uses.setdefault(r[0], set()).add(name_of_layer(l))
            for r in mask_refs(node):
                mask_uses.setdefault(r[0], set()).add(name_of_layer(l))
    def operation(l):       # a Keras 3 operation (in .h5 files some, e.g. ZerosLike(dtype="bool"),
        cfg = l.get("config")   # look like layers to tensor_op; none has "trainable")
        return tensor_op(l) is not None or (
            isinstance(cfg, dict) and "trainable" not in cfg and l.get("class_name") != "InputLayer"
            and all(isinstance(n, dict) for n in l.get("inbound_nodes") or [None]))
    cand = {name_of_layer(l) for l in layers if operation(l)}
    changed = True
    while changed:
        changed = False
        for name in list(cand):
            users = data_uses.get(name, set())
            if any(u not in cand for u in users) or not (users or mask_uses.get(name)):
                cand.discard(name)
                changed = True
    return cand


def io_refs(spec):
    """Normalise input_layers/output_layers: Keras 3 writes a lone ref unwrapped."""
    if isinstance(spec, dict):
        spec = list(spec.values())
    if spec and isinstance(spec[0], str):
        spec = [spec]
    return [(r[0], int(r[1]), int(r[2])) for r in spec]


def config_input_shape(cfg):
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


def is_dim(d):
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
        shape = config_input_shape(first.get("config", {}))
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


def tensor_op(layer):
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
    if "dtype" not in cfg or (cls in KERAS_OPS and cls not in KERAS_LAYERS):
        return "keras", cls
    return None


def _layer_problem(layer):
    """Why a layer class cannot be handled at all, or None."""
    cls = layer.get("class_name", "?")
    op = tensor_op(layer)
    if op is not None:
        return arithmetic_problem(*op)
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


def name_of_layer(layer):
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


def as_functional(model_cfg, path):
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


def config_problems(config, path, prefix="", depth=0):
    """(layer, class, reason) for every layer, nested models included, fixnet cannot handle."""
    if depth > MAX_NESTING:
        raise ModelFileError(f"{path}: models nested more than {MAX_NESTING} deep "
                             f"('{prefix.rstrip('/')}')")
    out = []
    mask_only = mask_only_layers(config.get("layers", []))
    for l in config.get("layers", []):
        cls = l.get("class_name", "?")
        if cls == "InputLayer" or name_of_layer(l) in mask_only:
            continue
        if cls in MODEL_CLASSES:
            try:
                _, inner = as_functional(l, path)
            except ModelFileError as e:
                out.append((prefix + name_of_layer(l), cls, str(e)))
                continue
            out.extend(config_problems(inner, path, prefix + name_of_layer(l) + "/", depth + 1))
            continue
        reason = _layer_problem(l)
        if reason:
            out.append((prefix + name_of_layer(l), cls, reason))
    return out


def node_index_remap(layers, config):
    """{(layer, node index as referenced): index into the layer's inbound_nodes}.

    Files normally number a layer's calls 0, 1, ... as listed in its inbound_nodes, but
    tf.keras 2 writes references to a nested model with the model's own numbering, in which
    call 0 is the model's construction (``["feature_mlp", 1, 0]`` for its first call in the
    outer graph). Where a layer is referenced with indices beyond its inbound nodes, the
    referenced indices are mapped onto its calls in order."""
    counts = {name_of_layer(l): len(l.get("inbound_nodes", [])) for l in layers}
    referenced = {}
    for l in layers:
        for node in l.get("inbound_nodes", []):
            for name, n, _ in inbound_refs(node):
                referenced.setdefault(name, set()).add(n)
    for name, n, _ in io_refs(config.get("output_layers", [])):
        referenced.setdefault(name, set()).add(n)
    remap = {}
    for name, idx in referenced.items():
        n_calls = counts.get(name, 0)
        if n_calls and max(idx) >= n_calls and len(idx) <= n_calls:
            remap.update({(name, k): i for i, k in enumerate(sorted(idx))})
    return remap


def unsupported_error(path, problems):
    lines = "\n".join(f"  - '{n}' ({c}): {r}" for n, c, r in problems)
    return UnsupportedLayerError(
        f"{path}: {len(problems)} layer(s) fixnet cannot run:\n{lines}", problems)
