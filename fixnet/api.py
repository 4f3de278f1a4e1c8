"""The public entry points: ``load`` and the float model it returns."""
import contextlib
import os

import numpy as np

from . import reference
from .errors import FixnetError
from .step import check_inputs


def load(path, weights=None, *, max_memory=None):
    """Read a Keras model into a FloatModel. Never imports TensorFlow, never runs code stored
    in a file, never follows a link out of it.

    path: a full-model HDF5 file (``model.save("x.h5")``, any Keras from 2.0 to 3), a Keras 3
        ``.keras`` archive, or an architecture JSON (``model.to_json()``) with ``weights``;
        or a fixnet ``.fxn`` file, which gives back the QuantizedModel it holds; or an int8
        TensorFlow Lite ``.tflite`` file (the optional extra ``fixnet[tflite]``), which gives
        a QuantizedModel computing TFLite's reference kernels' integers (fixnet.tflite.convert
        says which ops run).
    weights: with a JSON architecture, the weights file (``save_weights``: ``.h5`` or
        ``.weights.h5``).
    max_memory: the most memory, in bytes (or a string such as "512M", "4G"), the model's
        declared weights and activations (at batch 1) may need; a file declaring more is
        refused with a ModelFileError before anything is allocated. Default: the environment
        variable FIXNET_MAX_MEMORY, else 4 GiB.

    Raises a ModelFileError (a FixnetError) naming the file, and the layer where one is at
    fault, for a file that is damaged, inconsistent or hostile.
    """
    from .fxn import is_fxn_file
    from .limits import max_memory_bytes
    from .tflite import is_tflite_file
    from .runtime import load_fxn
    limit = max_memory_bytes(max_memory)
    if weights is None and is_fxn_file(path):
        return load_fxn(path, max_memory=limit)      # NumPy only: h5py is not imported
    if weights is None and is_tflite_file(path):
        return load_tflite(path, max_memory=limit)
    from .keras import load_keras_h5, load_keras_json
    if weights is not None:
        return FloatModel(load_keras_json(path, weights, max_memory=limit))
    if os.fspath(path).lower().endswith(".json"):
        raise FixnetError(f"{path}: an architecture JSON needs its weights: "
                          "fixnet.load(path, weights='model.weights.h5')")
    return FloatModel(load_keras_h5(path, max_memory=limit))


@contextlib.contextmanager
def _naming_the_file(source):
    """A FixnetError raised inside the block names the model file it concerns (prefixed to its
    message, type and attributes kept)."""
    try:
        yield
    except FixnetError as e:
        name = os.fspath(source) if source else ""
        if name and e.args and isinstance(e.args[0], str) and name not in e.args[0]:
            e.args = (f"{name}: {e.args[0]}",) + e.args[1:]
        raise


def load_tflite(path, max_memory=None):
    """The QuantizedModel of the int8 .tflite file ``path`` (or its bytes; ``fixnet.load``
    calls this for a .tflite file): read and checked by fixnet.tflite (ModelFileError naming
    the file; the parser is the optional extra fixnet[tflite]), converted op by op to fixnet's
    steps with TFLite's own scales, zero points and multiplier rules (UnsupportedTfliteError
    listing every operator it cannot run), and run once on zero-point inputs before it is
    returned. Its float inputs are quantized as TFLite's QUANTIZE does (input_rounding)."""
    from . import fxn
    from .runtime import QuantizedModel
    from .tflite import read_tflite
    from .tflite.convert import convert
    parts = convert(read_tflite(path, max_memory=max_memory), max_memory)
    qm = QuantizedModel(parts.steps, parts.tensors, parts.inputs, parts.outputs,
                        name=parts.name, source=parts.source)
    qm.config = None
    qm.io_types = parts.io_types
    qm.input_rounding = "tflite"
    fxn.check_plan(parts.source, qm)
    return qm


class FloatModel:
    """A Keras model as a float graph: ``predict`` runs the NumPy float reference,
    ``quantize`` makes the int8 QuantizedModel."""

    def __init__(self, graph):
        self.graph = graph

    @property
    def name(self):
        return self.graph.name

    @property
    def input_shapes(self):
        return [self.graph.shapes[t] for t in self.graph.inputs]

    @property
    def output_shapes(self):
        return [self.graph.shapes[t] for t in self.graph.outputs]

    def __repr__(self):
        return (f"<FloatModel '{self.name}' from {os.path.basename(self.graph.source)}: "
                f"{len(self.graph.nodes)} nodes, inputs {self.input_shapes}, "
                f"outputs {self.output_shapes}>")

    def predict(self, x, batch_size=1024):
        """Float32 outputs of the model, as Keras computes them (within float rounding).

        x: an array of shape (batch,) + input shape (any float or integer dtype: the values
           are used as real numbers; any layout), or anything np.asarray makes one of (a
           nested list of samples); a list or tuple with one array per input for a model with
           several inputs. NaN and infinities are computed with, as Keras does.
        batch_size: samples per pass of the NumPy reference (a positive int).
        Returns one float32 array, or a list for a model with several outputs; an empty batch
        gives empty outputs. Raises InputShapeError / InputDtypeError naming the input.
        """
        if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                or batch_size < 1):
            raise FixnetError(f"predict: batch_size must be a positive int, not {batch_size!r}")
        checked = [np.ascontiguousarray(xi) for xi in check_inputs(
            x, self.graph.inputs, [self.graph.shapes[t] for t in self.graph.inputs],
            allow_int8=False)]
        n = checked[0].shape[0]
        if n == 0:
            shapes = self.graph.shapes
            if any(d is None for t in self.graph.inputs for d in shapes[t]):   # any length
                shapes = self.graph.shapes_for([c.shape[1:] for c in checked])
            res = [np.empty((0,) + tuple(shapes[t]), np.float32) for t in self.graph.outputs]
            return res[0] if len(res) == 1 else res
        parts = []
        for i in range(0, n, batch_size):
            outs = reference.run(self.graph, [c[i:i + batch_size] for c in checked])
            parts.append([o.astype(np.float32) for o in outs])
        res = [np.concatenate([p[k] for p in parts]) for k in range(len(self.graph.outputs))]
        return res[0] if len(res) == 1 else res

    def statistics(self, x):
        """Statistics of every weight and every activation tensor, the first step of the
        quantization workflow: a Statistics table (``print`` it; ``.records`` for dicts) with
        per weight array and per tensor of the optimized float graph (the one quantize uses:
        BatchNorm folded, activations fused) its min, max, mean and standard deviation, the
        activations measured on inputs ``x`` (as predict takes them)."""
        from .passes import optimize
        from .tables import Statistics
        g = optimize(self.graph)
        checked = check_inputs(x, g.inputs, [g.shapes[t] for t in g.inputs], allow_int8=False)
        records = []

        def add(kind, layer, name, v):
            v = np.asarray(v, np.float64)
            records.append({"kind": kind, "layer": layer, "name": name, "shape": v.shape,
                            "min": float(v.min()), "max": float(v.max()),
                            "mean": float(v.mean()), "std": float(v.std())})

        for n in g.nodes:
            for k, w in n.weights.items():
                add("weight", n.layer or n.name, k, w)
        producer = g.producers()
        reference.run(g, [np.asarray(c, np.float64) for c in checked], observe=lambda t, v: add(
            "activation", producer[t].layer if t in producer else "input", t, v))
        return Statistics(f"statistics of '{self.name}' ({checked[0].shape[0]} samples)", records)

    def quantize(self, calibration=None, config=None, *, validation=None, input_range=None,
                 batch_size=128, progress="auto", **settings):
        """Convert to integers (int8, or int16 activations where asked). Returns a
        QuantizedModel; ``qm.config`` is the QuantConfig it was made with (the .fxn records it).

        calibration: representative inputs the activation ranges are measured on (a few hundred
            is plenty): an array (one-input models), a list with one array per input, or any
            iterable of batches, e.g. a generator (read once; batches are arrays, or lists of
            arrays for several inputs). Only fixed-size histograms are kept, whatever its size.
            None: data-free quantization (ranges from the model's BatchNormalization statistics
            and a propagated input range; warns that calibration data usually does better).
        config: a fixnet.QuantConfig (or a mapping of its settings, or a range method name);
            the keyword settings below are shorthands that replace its fields.
        validation: inputs the accuracy target (target_sqnr, target_agreement) is measured on;
            default the calibration data.
        input_range: (lo, hi) of the model's input values in real units (a pair per input for
            several inputs), for data-free quantization when the model does not start with a
            Rescaling or Normalization layer.
        batch_size: samples per pass of the float reference during calibration.
        progress: a progress bar during calibration: "auto" (on a terminal, for runs longer
            than a second), True or False.

        Settings (QuantConfig's fields):
        method: how each activation tensor's range is chosen from its histogram (see
            fixnet.quant.ranges): "minmax" (nothing clipped), "percentile" (clips
            100 - ``percentile`` % on each side), "mse" (least expected squared quantization
            error: clipping + rounding), "entropy" (TensorRT's KL divergence), or "auto" (per
            tensor, the widest of those four ranges whose expected error is within 10% of the
            smallest). Model inputs keep their min/max, or (except with "minmax"), when every
            calibration value lies on a grid with 0 on it (pixels k/255, k/16, integers), the
            range whose codes hold each grid point exactly; a softmax's input (except with
            "minmax") gets the range that can change its int8 probabilities.
        percentile: for method="percentile", in (50, 100].
        per_channel: one weight scale per output channel (True) or per tensor.
        weight_clipping: None (weights scaled to their largest |w|) or "mse" (per channel, the
            clipping threshold of least squared weight error).
        weight_rounding: "adaptive" (each layer's int8 weights rounded to minimise its output
            error on the calibration data, see fixnet.quant.rounding) or "nearest".
        bias_correction: subtract from each dense/conv layer's int32 bias the mean output shift
            its weight rounding causes on the calibration data (data-free: on the propagated
            mean input).
        softmax_levels: softmax outputs are int8 with scale 1/softmax_levels, zero point -128:
            255 (default: 0.0 and 1.0 both exact) or 256 (TFLite's scale; 1.0 becomes 255/256).
        on_overflow_risk: "error" raises OverflowRiskError naming the layer when no proof exists
            that its int32 accumulator cannot wrap; "warn" only warns.
        activations: "int8" (default) or "int16" (symmetric, zero point 0, with int8 weights:
            TFLite's 16x8 mode) for every layer whose op has int16 kernels.
        weights: "int8" (default); "codebook16" (one table of 16 k-means levels per layer, in
            units of each channel's scale: the .fxn stores 4-bit indices), "codebook16-channel"
            (a table per output channel) or "int4" (15 uniform levels per channel); the kernels
            see int8 codes either way.
        overrides: {layer name or fnmatch pattern: {"activations", "method", "per_channel",
            "weights"}}: per-layer settings; a pattern matching no layer is an error that lists
            the layers.
        target_sqnr: dB of output SQNR against the float model to reach (on ``validation``):
            starting from the settings above, the layers that cost the most move to int16
            until it is met (see fixnet.quant.adjust); ``qm.adjustment`` says what changed.
        target_agreement: the same with top-1 agreement with the float model, in (0, 1].
        """
        from .passes import optimize
        from .quant.quantizer import quantize_graph
        with _naming_the_file(self.graph.source):
            qm = quantize_graph(self.graph, calibration, config, validation=validation,
                                input_range=input_range, batch_size=batch_size,
                                progress=progress, **settings)
        if getattr(qm, "float_graph", None) is None:
            qm.float_graph = optimize(self.graph)     # for qm.report(x); never saved to .fxn
        return qm
