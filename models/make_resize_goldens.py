#!/usr/bin/env python
"""Write models/resize_bilinear_goldens.npz: TensorFlow's own bilinear up-sampling on small
random inputs, so the tests can check fixnet's bilinear taps, float reference and integer
oracle against TensorFlow without importing it.

Run by hand, never in CI, with a Python that has real TensorFlow (the same venv as the other
scripts here)::

    /path/to/venv-with-tf/bin/python models/make_resize_goldens.py

For each case ``i`` (input shape (n, h, w, c), integer factors (sh, sw)) the file holds

* ``x_<i>`` float32 [n, h, w, c], N(0, 1); ``codes_<i>`` float32, the same shape: int8 codes
  -128..127 stored as float (what the integer oracle interpolates);
* ``size_<i>`` int64 (sh, sw);
* ``resize_<i>`` / ``resize_codes_<i>``: ``tf.image.resize(v, (h * sh, w * sw),
  method="bilinear", antialias=False)`` (half-pixel centres, TF 2's default) of each;
* ``keras_<i>``: Keras 3's ``UpSampling2D(size=(sh, sw), interpolation="bilinear")`` of ``x_<i>``
  (the layer fixnet reads from .h5 files);
* ``tf_version``, ``keras_version``.
Seeded; a run takes a few seconds.
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "resize_bilinear_goldens.npz")
SEED = 20261129

# (n, h, w, c, sh, sw): edges (1-pixel axes), factor 1, odd and even factors, non-square
CASES = [
    (2, 1, 1, 1, 2, 2),
    (1, 1, 5, 2, 3, 1),
    (2, 2, 2, 1, 2, 2),
    (1, 3, 4, 3, 2, 3),
    (2, 5, 3, 2, 4, 2),
    (1, 4, 7, 1, 5, 4),
    (3, 6, 6, 2, 3, 3),
    (1, 7, 2, 4, 1, 5),
]


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(SEED)
    out = {"tf_version": np.str_(tf.__version__), "keras_version": np.str_(keras.__version__)}
    for i, (n, h, w, c, sh, sw) in enumerate(CASES):
        x = rng.standard_normal((n, h, w, c)).astype(np.float32)
        codes = rng.integers(-128, 128, (n, h, w, c)).astype(np.float32)
        size = (h * sh, w * sw)
        out[f"x_{i}"] = x
        out[f"codes_{i}"] = codes
        out[f"size_{i}"] = np.array([sh, sw], np.int64)
        out[f"resize_{i}"] = tf.image.resize(x, size, method="bilinear").numpy()
        out[f"resize_codes_{i}"] = tf.image.resize(codes, size, method="bilinear").numpy()
        layer = keras.layers.UpSampling2D(size=(sh, sw), interpolation="bilinear")
        out[f"keras_{i}"] = np.asarray(layer(x))
        assert out[f"resize_{i}"].shape == (n,) + size + (c,)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}: {len(CASES)} cases, TensorFlow {tf.__version__}, Keras {keras.__version__}")


if __name__ == "__main__":
    main()
