"""Layer benches: one-layer Keras models made at run time (catalog.MICRO), with their int8
.tflite and an .h5 for fixnet, in a temporary folder. TensorFlow and Keras 3 needed."""
import pathlib
import sys
import warnings

import numpy as np

from .catalog import MICRO, MICRO_SAMPLES, MODELS_DIR
from .models import ModelInputs
from .runners.base import Unavailable, import_tensorflow


def build_micro(name, batches, acc, threads, tmpdir, seed=0):
    """A ModelInputs for the layer bench `name`: Keras 3 model, its .h5 (for fixnet) and its
    int8 .tflite (TFLiteConverter with a representative dataset: the calibration inputs)."""
    tf = import_tensorflow(threads)
    try:
        import keras
    except ImportError as e:
        raise Unavailable(f"keras not installed ({e.name})") from None

    what, shape, (cls, kw) = MICRO[name]
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape)
    model = keras.Model(inp, getattr(keras.layers, cls)(**kw, name=name)(inp), name=name)
    rng = np.random.default_rng(seed)
    x_calib = rng.standard_normal((32,) + shape).astype(np.float32)
    x_test = rng.standard_normal((acc or MICRO_SAMPLES,) + shape).astype(np.float32)
    keras_float = np.asarray(model.predict(x_test, verbose=0))
    h5 = pathlib.Path(tmpdir) / f"{name}.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # keras 3 calls .h5 legacy; fixnet reads it
        model.save(str(h5))
    sys.path.insert(0, str(MODELS_DIR))
    try:
        from fixture_common import convert_tflite   # the fixtures' int8 conversion, same flags
    finally:
        sys.path.remove(str(MODELS_DIR))
    tfl_bytes, how = convert_tflite(tf, model, "keras3", [x_calib], [inp.name])
    tfl = h5.with_suffix(".tflite")
    tfl.write_bytes(tfl_bytes)
    interp = tf.lite.Interpreter(model_path=str(tfl))
    (in_s, in_zp), (out_s, out_zp) = (interp.get_input_details()[0]["quantization"],
                                      interp.get_output_details()[0]["quantization"])
    tfl_x = np.clip(np.round(x_test / in_s) + in_zp, -128, 127).astype(np.int8)
    m = ModelInputs(name, h5, tfl, x_test, x_calib, keras_float, tfl_x,
                    (float(out_s), int(out_zp)), batches, acc, "micro", what)
    m.keras_model, m.keras_which = model, f"keras {keras.__version__}"
    m.tflite_how = how
    return m
