"""The inputs of a .tflite file given on --models (a user's own file, a benchmark's): what each
input takes (read from fixnet's loaded model), deterministic random inputs of each input's type
and shape, and TfliteFileInputs, the file's inputs at each batch size (the counterpart of
models.ModelInputs, which reads a fixture's .npz).

No TensorFlow here: whether TFLite can resize the file's batch dimension is decided by the
caller (runners/tflite_file.py) and passed in."""
import numpy as np

from .catalog import TFLITE_FILE_KIND, TFLITE_FILE_SEED


class InputSpec:
    """One input of a .tflite file: its tensor name, shape without the batch axis, dtype (the
    file's: int8 / uint8 / int16 codes, or float32), and for a float input the reals its first
    QUANTIZE maps onto the integer range, (low, high), or None."""

    def __init__(self, name, shape, dtype, float_range=None):
        self.name, self.shape, self.dtype = name, tuple(int(d) for d in shape), np.dtype(dtype)
        self.float_range = float_range

    def describe(self):
        return f"{self.dtype.name}[{'x'.join(str(d) for d in self.shape) or 'scalar'}]"

    def __repr__(self):
        return f"InputSpec({self.name!r}, {self.shape}, {self.dtype.name})"


def input_specs(qm):
    """The InputSpecs of a QuantizedModel loaded from a .tflite file, in its inputs' order
    (the order predict takes a list in): the file's own input types (qm.io_types); a float
    input's range is the one its quantization parameters cover."""
    specs = []
    for name, shape, qp in zip(qm.inputs, qm.input_shapes, qm.input_qparams):
        dtype = np.dtype(qm.io_types.get(name, "float32"))
        rng = None
        if dtype.kind == "f" and qp is not None:
            lo, hi = -(1 << (qp.bits - 1)), (1 << (qp.bits - 1)) - 1
            rng = ((lo - qp.zero_point) * float(qp.scale), (hi - qp.zero_point) * float(qp.scale))
        specs.append(InputSpec(name, shape, dtype, rng))
    return specs


def draw_inputs(specs, n, seed=TFLITE_FILE_SEED):
    """`n` random samples of each input of `specs` (a list of arrays of shape (n, *shape)),
    the same for the same seed: integer inputs uniform over every code of their type, float
    inputs uniform over their quantized range (a unit normal where it is unknown). Each input
    draws from its own stream, so the first k of n samples are the k samples drawn alone."""
    out = []
    for i, spec in enumerate(specs):
        rng = np.random.default_rng([seed, i])
        full = (n,) + spec.shape
        if spec.dtype.kind in "iu":
            info = np.iinfo(spec.dtype)
            x = rng.integers(info.min, int(info.max) + 1, size=full, dtype=np.int64)
        elif spec.float_range is not None:
            x = rng.uniform(*spec.float_range, size=full)
        else:
            x = rng.standard_normal(full)
        out.append(np.ascontiguousarray(x.astype(spec.dtype)))
    return out


class TfliteFileInputs:
    """A .tflite file's inputs at each batch size, drawn once (draw_inputs) and cut to size.

    ``batch_free``: whether TFLite resizes the file's batch axis (True), not (False: every
    batch size but 1 is dropped from the timed ones, and a call on several samples runs them
    one at a time), or unknown (None: no TFLite here; fixnet is timed at every size asked).
    ``timed``: the batch sizes timed; ``acc``: the number of samples the exactness check runs
    on, one more batch size every runner is built for (``batches``: all of them). ``x[n]``: a
    list with one array per input. Has the attributes of ModelInputs the timing code reads
    (name, kind, what, timed, batches, acc)."""

    def __init__(self, path, name, specs, batches, acc, batch_free, seed=TFLITE_FILE_SEED):
        self.path, self.tflite, self.name = path, path, name
        self.h5, self.kind, self.what = None, TFLITE_FILE_KIND, str(path)
        self.specs, self.batch_free, self.seed = specs, batch_free, seed
        asked = sorted(set(batches))
        self.timed = asked if batch_free is not False else [1]
        self.dropped = [n for n in asked if n not in self.timed]
        self.acc = acc
        self.batches = sorted(set(self.timed) | {acc})
        drawn = draw_inputs(specs, max(self.batches), seed)
        self.x = {n: [np.ascontiguousarray(x[:n]) for x in drawn] for n in self.batches}

    def batch_note(self):
        """What the file's batch axis allowed, for the report ('' when every size ran)."""
        if self.batch_free is False:
            return ("batch 1 only: TFLite cannot resize this file's batch axis"
                    + (f" (batch {', '.join(map(str, self.dropped))} not timed)"
                       if self.dropped else ""))
        if self.batch_free is None and self.timed != [1]:
            return "no TFLite here to say whether the file's batch axis resizes"
        return ""
