"""Keras float: the model file in the Keras that wrote it, timed in the fastest of three call
styles; and the Keras model as a tf.function (what the TFLite and ONNX converters take)."""
import statistics
import warnings

import numpy as np

from fixnet.cli.measure import seconds_per_call

from .base import Runner, Unavailable, import_tensorflow

# the call styles tried per batch size; the fastest is timed
CALL_STYLES = ("model(x, training=False)", "predict_on_batch(x)", "tf.function(model)")


def load_keras_model(m, threads):
    """The .h5 in the Keras that wrote it (keras 3 for *_k3, tf_keras for *_tfk2), or the
    other one if that is missing or cannot read it, or last the .keras file next to it (Keras 3
    cannot read back the .h5 it wrote of rnn_variants_k3). Returns (model, 'keras x.y.z')."""
    if getattr(m, "keras_model", None) is not None:      # a layer bench, built here
        return m.keras_model, m.keras_which
    import_tensorflow(threads)
    prefer = ["tf_keras", "keras"] if m.name.endswith("_tfk2") else ["keras", "tf_keras"]
    tries = [(modname, m.h5) for modname in prefer]
    if m.h5.with_suffix(".keras").exists():
        tries.append(("keras", m.h5.with_suffix(".keras")))
    errors = []
    for modname, path in tries:
        try:
            lib = __import__(modname)
        except ImportError:
            errors.append(f"{modname} not installed")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = lib.models.load_model(str(path), compile=False)
            which = f"{modname} {lib.__version__}"
            return model, which + (f" (from {path.name})" if path != m.h5 else "")
        except Exception as e:  # noqa: BLE001 - any loader failure means "try the other"
            first_line = (str(e).splitlines() or [""])[0][:80]
            errors.append(f"{modname} ({path.name}): {type(e).__name__}: {first_line}"
                          if path != m.h5 else f"{modname}: {type(e).__name__}: {first_line}")
    raise Unavailable("; ".join(errors))


def serving_fn(tf, model, shape, dtype):
    """tf.function of the Keras model on one input signature named x; outputs keyed out_00,
    out_01, ... in the model's output order (as models/make_recurrent_models.py makes them)."""
    @tf.function(input_signature=[tf.TensorSpec(shape, dtype, name="x")])
    def fn(x):
        ys = model(x, training=False)
        ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
        return {f"out_{i:02d}": y for i, y in enumerate(ys)}
    return fn


def to_numpy(y):
    """A Keras / TensorFlow output as NumPy: one array, or a list for several outputs."""
    if isinstance(y, (list, tuple)):
        return [np.asarray(o) for o in y]
    return np.asarray(y)


def keras_runner(m, threads, warmup):
    """Keras float at each timed batch size in the fastest of CALL_STYLES (each warmed up,
    then 15 single calls timed; the median decides); the accuracy batch runs tf.function."""
    tf = import_tensorflow(threads)
    model, which = load_keras_model(m, threads)
    x0 = m.x[m.batches[0]]
    spec = tf.TensorSpec((None,) + tuple(x0.shape[1:]), tf.as_dtype(x0.dtype))
    graph_fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    candidates = dict(zip(CALL_STYLES, (
        lambda x: to_numpy(model(x, training=False)),
        lambda x: to_numpy(model.predict_on_batch(x)),
        lambda x: to_numpy(graph_fn(x)))))
    calls, chosen, trials = {}, {}, {}
    for n in m.batches:
        x = m.x[n]
        if n not in m.timed:           # the accuracy batch: run once, untimed
            calls[n] = (lambda x: lambda: candidates["tf.function(model)"](x))(x)
            continue
        best = None
        for name, f in candidates.items():
            call = (lambda f, x: lambda: f(x))(f, x)
            for _ in range(max(3, warmup // 4)):
                call()
            trials[(n, name)] = statistics.median(seconds_per_call(call, 1) for _ in range(15))
            if best is None or trials[(n, name)] < trials[(n, best[0])]:
                best = (name, call)
        chosen[n] = best[0]
        calls[n] = best[1]
    note = which + "; fastest of: " + "; ".join(
        f"b{n}: " + ", ".join(f"{name} {trials[(n, name)] * 1e6:.0f} us" for name in candidates)
        for n in m.timed)
    label = "Keras float, " + ", ".join(f"b{n}: {chosen[n]}" for n in m.timed)
    r = Runner("keras", label, calls, note)
    r.chosen = chosen
    return r
