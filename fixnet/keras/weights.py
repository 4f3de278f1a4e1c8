"""The weights of a Keras file, three generations: HDF5 `model_weights` groups (Keras 2.0 to
tf.keras 2.15, ``LegacyWeights``) and Keras 3 (``KerasV3Weights``: `.weights.h5` / `.keras`
archives), read layer by layer with h5py only."""
import re

import numpy as np

from .. import h5safe
from ..errors import MissingWeightError, ModelFileError


def as_text(v):
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
            names = [as_text(n) for n in np.asarray(names).reshape(-1)]
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
