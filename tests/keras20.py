"""Rewrite a real tf.keras 2 file the way Keras 2.0.x (2017) wrote the same model, so the loader
is checked on that generation's layout with real trained weights and real Keras outputs:

- root attrs keras_version '2.0.8', backend 'tensorflow'; a functional model's class_name is
  'Model'; a Sequential config is a bare list of layer configs whose first layer carries
  batch_input_shape (there was no InputLayer entry);
- layers are named the 2.0 way (dense_1, dense_2, ... counting from 1) in the config, in
  layer_names and in the weight groups and weight names ('dense_1/kernel:0'; a wrapper's
  'bidirectional_1/forward_lstm/kernel:0', a recurrent layer's without its cell);
- layer classes that 2.0 did not have become what people wrote then: ReLU -> Activation('relu'),
  Softmax -> Activation('softmax');
- config keys that 2.0 did not write (dtype on non-input layers, registered_name, ...) removed.
"""
import json
import re

import h5py
import numpy as np

NEW_KEYS = {"dtype", "registered_name", "module", "synchronized", "renorm", "renorm_clipping",
            "renorm_momentum", "optional", "ragged", "quantization_config", "activity_regularizer"}


def _rename(name):
    # Keras 2.0 counted from 1: dense, dense_1 -> dense_1, dense_2
    m = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    base, k = m.group(1), m.group(2)
    return f"{base}_{int(k) + 2 if k else 1}"


def _old_layer_config(layer, names):
    cls = layer["class_name"]
    cfg = {k: v for k, v in layer["config"].items() if k not in NEW_KEYS}
    cfg["name"] = names[layer["config"]["name"]]
    if cls == "ReLU":
        cls, cfg = "Activation", {"name": cfg["name"], "trainable": True, "activation": "relu"}
    if cls == "Softmax":
        cls, cfg = "Activation", {"name": cfg["name"], "trainable": True, "activation": "softmax"}
    if cls == "BatchNormalization" and isinstance(cfg.get("axis"), list):
        cfg["axis"] = -1
    return cls, cfg


def to_keras20(src, dst):
    with h5py.File(src, "r") as f:
        cfg = json.loads(f.attrs["model_config"])
        layer_names = [n for n in f["model_weights"].attrs["layer_names"]]
        weights = {}
        for ln in layer_names:
            g = f["model_weights"][ln]
            weights[ln] = [(wn, np.array(g[wn])) for wn in g.attrs["weight_names"]]
    layers = cfg["config"]["layers"]
    names = {l["config"]["name"]: _rename(l["config"]["name"]) for l in layers}
    if cfg["class_name"] == "Sequential":
        first = layers[0]
        assert first["class_name"] == "InputLayer"
        shape = first["config"]["batch_input_shape"]
        new_layers = []
        for l in layers[1:]:
            cls, c = _old_layer_config(l, names)
            new_layers.append({"class_name": cls, "config": c})
        new_layers[0]["config"]["batch_input_shape"] = shape
        new_layers[0]["config"]["dtype"] = "float32"
        new_cfg = {"class_name": "Sequential", "config": new_layers}
    else:
        new_layers = []
        for l in layers:
            cls, c = _old_layer_config(l, names)
            if cls == "InputLayer":
                c["dtype"] = "float32"
            inbound = [[[names[r[0]], r[1], r[2], {}] for r in node] for node in l["inbound_nodes"]]
            new_layers.append({"name": c["name"], "class_name": cls, "config": c,
                               "inbound_nodes": inbound})
        io = lambda refs: [[names[r[0]], r[1], r[2]] for r in refs]
        new_cfg = {"class_name": "Model", "config": {
            "name": "model_1", "layers": new_layers,
            "input_layers": io(cfg["config"]["input_layers"]),
            "output_layers": io(cfg["config"]["output_layers"])}}
    with h5py.File(dst, "w") as f:
        f.attrs["keras_version"] = b"2.0.8"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(new_cfg).encode("utf-8")
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([names[n].encode() for n in layer_names])
        for ln, items in weights.items():
            g = mw.create_group(names[ln])
            new_names = []
            for wn, arr in items:
                # 2.0 named a wrapped layer's weights after it (bidirectional_1/forward_lstm_1/
                # kernel:0), a recurrent layer's without its cell (lstm_1/kernel:0)
                parts = wn.split("/")
                inner = [p for p in parts[1:-1] if not p.endswith("_cell")]
                new = "/".join([names[ln]] + inner + [parts[-1]])
                g[new] = arr
                new_names.append(new.encode())
            g.attrs["weight_names"] = np.array(new_names, dtype="S") if new_names else np.array([], "S1")
    return dst
