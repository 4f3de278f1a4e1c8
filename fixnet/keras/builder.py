"""The graph builder: a normalised config and its weights -> the float Graph, layer by layer
through the handlers of fixnet/keras/layers/ (masks, nested models, TFOpLambda arithmetic)."""
import math

import numpy as np

from ..errors import FixnetError, ModelFileError, UnsupportedLayerError
from ..graph import Graph, Node
from .arithmetic import TensorArg, handle as handle_arithmetic
from .config import (MERGE_CLASSES, MODEL_CLASSES, as_functional, config_input_shape, config_problems,
                     inbound_refs, io_refs, is_dim, mask_only_layers, mask_refs, name_of_layer,
                     node_index_remap, op_call, tensor_name, tensor_op, unsupported_error)
from .layers import KERAS_LAYERS, MASK_ARGUMENT, MASK_KEEPERS, MASK_USERS, KerasLayer, Unsupported


def _window_bytes(node, in_shapes):
    """Bytes a window op's float reference gathers at batch 1 beyond its input and output: the
    zero-padded input and the [OH, OW, KH, KW, C] windows, in float64 (0 for other ops)."""
    from ..ops.spatial import geometry
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


class GraphBuilder:
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
        if not isinstance(shape, tuple) or not all(is_dim(d) or d is None for d in shape):
            raise ModelFileError(f"{self.path}: {what}: tensor shape {shape!r} is not a list of "
                                 "positive sizes")
        # a None dimension (a sequence of any length) counts as 1: what batch 1 needs at least
        self.budget.need(4 * math.prod(1 if d is None else d for d in shape),
                         f"{what}: tensor of shape {shape}")
        self.shapes[t] = shape

    def emit_for(self, node_base, layer_name, class_name):
        def emit(op, inputs, outputs, attrs, weights, suffix):
            from ..ops import op_for
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
        cls, config = as_functional(model_cfg, self.path)
        problems = config_problems(config, self.path)
        if problems:
            raise unsupported_error(self.path, problems)
        outputs = self.expand(config, "", self.weights, None, cls)
        if self.problems:
            raise unsupported_error(self.path, self.problems)
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
        weights = weights.bind([(name_of_layer(l), l.get("class_name", "")) for l in layers
                                if not (model_class == "Sequential" and l.get("class_name") == "InputLayer")
                                and tensor_op(l) is None])
        input_refs = io_refs(config.get("input_layers", []))
        if bound_inputs is not None and len(bound_inputs) != len(input_refs):
            raise ModelFileError(f"{self.path}: nested model '{prefix.rstrip('/')}' takes "
                                 f"{len(input_refs)} inputs but is called on {len(bound_inputs)}")
        remap = node_index_remap(layers, config)
        tname = lambda lname, n, t: tensor_name(prefix + lname, remap.get((lname, n), n), t)
        pending = []
        mask_only = mask_only_layers(layers)
        for layer in layers:
            lname = name_of_layer(layer)
            if layer.get("class_name") == "InputLayer":
                t = tname(lname, 0, 0)
                refs = [r[0] for r in input_refs]
                if bound_inputs is not None and lname in refs:
                    self.alias[t] = bound_inputs[refs.index(lname)]
                    continue
                try:
                    shape = config_input_shape(layer.get("config", {}))
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
                pending.append((layer, i, inbound_refs(node)))
        unknown = set()       # tensors of layers that failed: their consumers are skipped
        while pending:
            progressed = False
            for item in list(pending):
                layer, i, refs = item
                names = [self.resolve(tname(*r)) for r in refs]
                if any(n in unknown for n in names):
                    unknown.add(tname(name_of_layer(layer), i, 0))
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
                waiting = {self.resolve(tname(name_of_layer(l), i, 0)) for l, i, _ in pending}
                cycle = [t for t in missing if t in waiting]
                if cycle:
                    raise ModelFileError(f"{self.path}: layers of the model depend on each other "
                                         f"in a cycle (or on tensors no layer produces): "
                                         f"{', '.join(cycle)}")
                raise ModelFileError(f"{self.path}: the model config refers to tensors no layer "
                                     f"produces: {', '.join(missing)}")
        outputs = [self.resolve(tname(*r)) for r in io_refs(config.get("output_layers", []))]
        if not self.problems:
            for t in outputs:
                if t not in self.shapes:
                    raise ModelFileError(f"{self.path}: model output '{t}' is never produced")
        return outputs

    def _call(self, layer, node_index, inputs, unknown, prefix, weights):
        lname = name_of_layer(layer)
        cls = layer["class_name"]
        key = (id(weights), lname)
        if key not in self.layer_weights:          # a layer called twice shares its weights
            self.layer_weights[key] = (weights, weights.layer(lname, cls) if cls not in MODEL_CLASSES else None)
        out = tensor_name(prefix + lname, node_index, 0)
        if cls in MODEL_CLASSES:
            inner_cls, inner = as_functional(layer, self.path)
            inner_prefix = prefix + lname + (f"#{node_index}" if node_index else "") + "/"
            outs = self.expand(inner, inner_prefix, weights.nested(lname), inputs, inner_cls)
            for k, t in enumerate(outs):
                self.alias[tensor_name(prefix + lname, node_index, k)] = t
            return
        kl = KerasLayer(lname, cls, layer.get("config", {}), self.layer_weights[key][1], inputs,
                        [self.shapes[t] for t in inputs], [out],
                        self.emit_for(prefix + lname, lname, cls), self.keras_version,
                        output_name=lambda k: tensor_name(prefix + lname, node_index, k),
                        input_masks=[self.masks.get(t) for t in inputs])
        op = tensor_op(layer)
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
        """A Keras 3 call names the mask it was given (see mask_refs): fixnet's propagation
        must agree on whether there is one, else the layer is refused rather than run with
        another mask than Keras's."""
        if not isinstance(node, dict) or kl.class_name not in MASK_ARGUMENT:
            return
        ours, theirs = any(m is not None for m in kl.input_masks), bool(mask_refs(node))
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
        handle_arithmetic(kl, kind, function, args, kwargs)


def _op_args(kind, layer, node_index, inputs, shapes):
    """The arguments of one TFOpLambda / Keras 3 operation call, tensors as TensorArg with their
    IR names and shapes; a Keras 3 operation's constructor arguments (its config but the name)
    join the keyword arguments."""
    args, kwargs, refs = op_call(layer["inbound_nodes"][node_index])
    if len(refs) != len(inputs):
        raise ValueError(f"layer '{name_of_layer(layer)}': inbound node not understood")

    def bind(o):
        if isinstance(o, TensorArg):
            name = inputs[o.index]
            return TensorArg(o.index, name, shapes[name])
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
