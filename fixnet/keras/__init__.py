"""Keras files -> float Graph, with h5py only. TensorFlow is never imported and no code stored in
a file is ever executed (Lambda and custom layers are refused).

Handles the generations of the format:
- Keras 2.0-2.2: ``class_name`` "Model"; a Sequential config may be a bare list of layers;
  inbound nodes as lists ``[[layer, node, tensor, kwargs], ...]``; ``batch_input_shape``.
- tf.keras 2.x: "Functional"/"Sequential"; weight names end in ":0"; BatchNorm axis as a list.
- Keras 3: inbound nodes as ``{"args": [...keras tensors...], "kwargs": {...}}``; dtype-policy
  objects; ``batch_shape``; single input/output refs not wrapped in a list.

The modules: ``files`` (the entry points: .h5, .keras, JSON + weights), ``weights`` (the weight
readers of the three generations), ``config`` (config normalisation and its problems),
``builder`` (config + weights -> Graph, masks), ``layers/`` (one handler per Keras layer
class, by family), ``arithmetic`` (whitelisted arithmetic on tensors: TFOpLambda, keras.ops).
"""
from .files import load_keras_archive, load_keras_h5, load_keras_json  # noqa: F401
