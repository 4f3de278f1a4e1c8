"""Where each Keras layer class becomes IR nodes: one handler per class, in one registry
(``KERAS_LAYERS``), grouped by family in this package: ``core`` (Dense, normalisation,
activations, shapes), ``conv`` (convolutions, padding, resizing), ``pooling``, ``merge``,
``recurrent`` (RNNs, wrappers, embeddings, masks); ``base`` holds what they share.

A handler receives a ``KerasLayer`` (its config, its weights, the names and shapes of its input
tensors, the names of its outputs) and calls ``layer.emit(...)`` for each IR node it produces.
It raises ``Unsupported(reason)`` for a configuration fixnet cannot run; the loader collects
these over the whole model and reports them together.
"""
from .base import (CODE_LAYERS, KERAS_LAYERS, MAX_ACTIVATION_PARAM, KerasLayer,  # noqa: F401
                   Unsupported, config_float)
from . import core, conv, pooling, merge, recurrent  # noqa: F401  (fill KERAS_LAYERS)
from .merge import MERGES, broadcast_inputs  # noqa: F401
from .recurrent import MASK_ARGUMENT, MASK_KEEPERS, MASK_USERS  # noqa: F401
