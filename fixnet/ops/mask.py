"""Sequence masks: which time steps of a (T, ...) sequence are present (1.0) or padding (0.0),
as Keras computes them; the recurrent layers (fixnet/ops/recurrent.py) read them.

masking (Keras Masking): outputs [y, mask] with mask[t] = any(x[t, :] != mask_value) and
    y = x * mask[t] (padding steps become zeros, as Keras outputs them).
token_mask (Embedding(mask_zero=True)): mask[t] = ids[t] != 0, from the layer's input ids.

Masks are float arrays of 0.0/1.0 without a feature axis; an AND of two masks (a merge layer's
output mask) is a ``binary`` minimum.
"""
import numpy as np

from ..errors import UnsupportedLayerError
from . import Op, register


@register
class Masking(Op):
    name = "masking"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        if len(s) != 2:
            raise UnsupportedLayerError(f"{node.describe()}: input shape {tuple(s)}; fixnet masks "
                                        "(time steps, features) sequences only")
        return [tuple(s), (s[0],)]

    def run_float(self, node, inputs):
        x = np.asarray(inputs[0], np.float64)
        m = np.any(x != node.attrs["mask_value"], axis=-1).astype(np.float64)
        return [x * m[:, :, None], m]

    def int8_unsupported(self, node):
        return "int8 execution of Masking is not implemented yet (FloatModel.predict runs it)"


@register
class TokenMask(Op):
    name = "token_mask"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        if len(s) != 1:
            raise UnsupportedLayerError(f"{node.describe()}: mask_zero on ids of shape {tuple(s)}; "
                                        "only (time steps,) sequences of ids are supported")
        return [tuple(s)]

    def run_float(self, node, inputs):
        return [(np.trunc(np.asarray(inputs[0], np.float64)) != 0).astype(np.float64)]

    def int8_unsupported(self, node):
        return "int8 execution of sequence masks is not implemented yet"


@register
class MaskedMean(Op):
    """Keras GlobalAveragePooling1D of a masked sequence: inputs [x (T, C), mask (T,)],
    y = sum_t x[t] * mask[t] / sum_t mask[t] (NaN for a sequence with every step masked, as
    Keras gives); attrs: keepdims (output (1, C))."""
    name = "masked_mean"

    def infer_shapes(self, node, in_shapes):
        x, m = in_shapes
        if len(x) != 2 or tuple(m) != (x[0],):
            raise UnsupportedLayerError(f"{node.describe()}: a masked mean of shape {tuple(x)} "
                                        f"with a mask of shape {tuple(m)}")
        return [(1, x[1]) if node.attrs.get("keepdims") else (x[1],)]

    def run_float(self, node, inputs):
        x = np.asarray(inputs[0], np.float64)
        m = np.asarray(inputs[1], np.float64)[:, :, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            y = (x * m).sum(axis=1) / m.sum(axis=1)
        return [y[:, None, :] if node.attrs.get("keepdims") else y]

    def int8_unsupported(self, node):
        return "int8 execution of a masked GlobalAveragePooling1D is not implemented yet"
