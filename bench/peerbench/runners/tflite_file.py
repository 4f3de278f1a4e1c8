"""TensorFlow Lite on a .tflite file given on --models: the three interpreters of
catalog.TFLITE_KINDS on the file itself, fed the inputs of tflite_inputs.TfliteFileInputs
(several inputs and outputs, in fixnet's order, matched by tensor name), and whether TFLite can
resize the file's batch axis at all."""
import numpy as np

from ..catalog import TFLITE_KINDS
from ..text import first_line
from .base import Runner
from .tflite import tflite_interpreter_api

# the labels of the TFLite runners on a user's file (whose types may not be int8)
FILE_KINDS = [(key, label.replace("TFLite int8", "TFLite"), resolver, how)
              for key, label, resolver, how in TFLITE_KINDS]


def in_model_order(details, names):
    """TFLite's input or output details in the order of the tensor `names` (fixnet's order);
    in TFLite's own order where the names do not all match."""
    by_name = {d["name"]: d for d in details}
    if len(details) == len(names) and all(n in by_name for n in names):
        return [by_name[n] for n in names]
    return list(details)


def batch_resizable(path, specs, n, which, threads):
    """(whether TFLite's default interpreter runs `path` at batch `n` once every input's
    batch axis is resized with resize_tensor_input(strict=True), why not or ''): the file
    must mark its batch axis resizable (-1 in its shape signature), allocate and give
    outputs of batch `n`. Raises Unavailable where no TFLite is installed."""
    Interpreter, _, _ = tflite_interpreter_api(which, threads)
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads)
        ins = in_model_order(interp.get_input_details(), [s.name for s in specs])
        for d, s in zip(ins, specs):
            interp.resize_tensor_input(d["index"], [n] + list(s.shape), strict=True)
        interp.allocate_tensors()
        for d, s in zip(ins, specs):
            interp.set_tensor(d["index"], np.zeros((n,) + s.shape, s.dtype))
        interp.invoke()
        shapes = [tuple(interp.get_tensor(d["index"]).shape) for d in interp.get_output_details()]
    except Exception as e:  # noqa: BLE001 - a file whose batch axis is fixed
        return False, f"{type(e).__name__}: {first_line(str(e), 200)}"
    bad = [s for s in shapes if not s or s[0] != n]
    if bad:
        return False, f"outputs of shape {bad[0]} at batch {n}"
    return True, ""


def tflite_file_runners(m, want, which, threads, output_names):
    """The TFLite runners of catalog.TFLITE_KINDS in `want` on the file of `m`
    (TfliteFileInputs), outputs in the order of `output_names` (fixnet's). Returns (made,
    failed) as runners.tflite.tflite_runners: failed = [(key, label, why)] for a kind that
    does not build or run; a missing interpreter raises Unavailable."""
    Interpreter, OpResolverType, source = tflite_interpreter_api(which, threads)
    made, failed = [], []
    for key, label, resolver, how in FILE_KINDS:
        if key not in want:
            continue
        kw = {} if resolver is None else {
            "experimental_op_resolver_type": getattr(OpResolverType, resolver)}
        try:
            calls, out_q = file_calls(m, output_names, lambda: Interpreter(
                model_path=str(m.path), num_threads=threads, **kw))
        except Exception as e:  # noqa: BLE001 - a kind that cannot run is reported
            failed.append((key, label, f"failed: {type(e).__name__}: {first_line(str(e))}"))
            continue
        how_call = ("set_tensor + invoke + get_tensor" if m.batch_free is not False else
                    "batch-1 interpreter, set_tensor + invoke + get_tensor per sample")
        made.append(Runner(key, label, calls, f"{source}, {how}; {how_call}", out_q))
    return made, failed


def file_calls(m, output_names, make_interpreter):
    """One interpreter per batch size of `m`, fed m.x[batch]: (batch -> call, the outputs'
    (scale, zero point) or None for float, a list for several outputs). A batch size above 1
    of a file whose batch axis does not resize runs its samples one by one on a batch-1
    interpreter. The timed calls are run once here (a kernel missing from a resolver fails
    here, not in the timing loop); the exactness check runs the one on m.acc samples."""
    calls, out_q = {}, None
    for n in m.batches:
        interp = make_interpreter()
        ins = in_model_order(interp.get_input_details(), [s.name for s in m.specs])
        outs = in_model_order(interp.get_output_details(), output_names)
        per_sample = n > 1 and m.batch_free is False
        if n > 1 and not per_sample:
            for d, s in zip(ins, m.specs):
                interp.resize_tensor_input(d["index"], [n] + list(s.shape), strict=True)
        interp.allocate_tensors()
        call = _call(interp, [d["index"] for d in ins], [d["index"] for d in outs])
        calls[n] = _per_sample(call, m.x[n]) if per_sample else _bound(call, m.x[n])
        if n in m.timed:
            calls[n]()
        qs = [(float(d["quantization"][0]), int(d["quantization"][1]))
              if d["quantization"][0] else None for d in outs]
        out_q = qs[0] if len(qs) == 1 else qs
    return calls, out_q


def _call(interp, in_indices, out_indices):
    """set every input, invoke, get every output (one array, or a list for several)."""
    set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor
    pairs = list(in_indices)
    one = len(out_indices) == 1

    def call(xs):
        for i, x in zip(pairs, xs):
            set_tensor(i, x)
        invoke()
        if one:
            return get_tensor(out_indices[0])
        return [get_tensor(j) for j in out_indices]
    return call


def _bound(call, xs):
    return lambda: call(xs)


def _per_sample(call, xs):
    """The call on every sample of `xs` in turn (batch-1 slices), outputs concatenated."""
    samples = [[np.ascontiguousarray(x[i:i + 1]) for x in xs] for i in range(xs[0].shape[0])]

    def run():
        ys = [call(s) for s in samples]
        if isinstance(ys[0], list):
            return [np.concatenate([y[j] for y in ys]) for j in range(len(ys[0]))]
        return np.concatenate(ys)
    return run
