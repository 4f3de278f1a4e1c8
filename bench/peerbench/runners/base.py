"""What every runner module shares: the Runner, the Unavailable error, and TensorFlow (imported
on first use, with its thread pools sized before anything runs)."""
import sys

import numpy as np


class Unavailable(Exception):
    """A peer that cannot run here (not installed, conversion failed, ...)."""


class Runner:
    def __init__(self, key, label, calls, note="", out_q=None):
        self.key = key
        self.label = label
        self.calls = calls        # batch -> zero-argument callable returning an array (or list)
        self.note = note
        # (scale, zero_point) of int8 outputs, a list of them (or of None) for several outputs;
        # None: float outputs
        self.out_q = out_q

    def floats(self, y):
        """The output(s) of one call as float64: one array, or a list for several outputs."""
        if isinstance(y, (list, tuple)):
            qs = self.out_q if isinstance(self.out_q, list) else [self.out_q] * len(y)
            return [dequantize(o, q) for o, q in zip(y, qs)]
        return dequantize(y, self.out_q)


def dequantize(y, q):
    """`y` as float64: int8 codes with q = (scale, zero point), or floats as they are (q None)."""
    y = np.asarray(y).astype(np.float64)
    if q is None:
        return y
    scale, zp = q
    return (y - zp) * scale


def bind(f, *a, **kw):
    """f with its arguments, as a zero-argument callable."""
    return lambda: f(*a, **kw)


_TF = None


def import_tensorflow(threads):
    """TensorFlow for the peers, with its thread pools sized before anything runs."""
    global _TF
    if _TF is None:
        try:
            import tensorflow as tf
        except ImportError as e:
            raise Unavailable(f"tensorflow not installed ({e.name})") from None
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:      # already initialised by someone else: keep its settings
            pass
        _TF = tf
    return _TF


def module_version(module):
    """The version of an imported module's distribution ('?' when it does not say)."""
    v = getattr(sys.modules.get(module), "__version__", None)
    if v is None:
        try:
            from importlib import metadata
            v = metadata.version(module.replace("_", "-"))
        except Exception:  # noqa: BLE001 - a version is only shown
            v = "?"
    return v
