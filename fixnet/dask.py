"""Scoring a Dask array with an int8 model, on however many machines a Dask cluster has.

    import dask.array as da
    import fixnet, fixnet.dask
    qm = fixnet.load("model.fxn")
    x = da.from_zarr("samples.zarr")                  # (N,) + the model's input shape
    probs = fixnet.dask.predict(qm, x).compute()      # the same bits as qm.predict(x)

Each block of rows is run by ``qm.predict`` on a worker. The model reaches the workers once, as
its .fxn bytes (pickling a QuantizedModel ships nothing else, and unpickling checks them as a
file is checked and executes nothing they name); the kernels are integer-only, so every worker,
whatever its CPU and kernel build, computes the bits one machine would.

Needs the optional extra: ``pip install 'fixnet[dask]'``.
"""
import uuid

import numpy as np

from .errors import ArgumentError, FixnetError, InputShapeError

DEFAULT_BLOCK_ROWS = 4096


def _import_dask():
    try:
        import dask
        import dask.array as da
    except ImportError:
        raise FixnetError("fixnet.dask needs Dask: pip install 'fixnet[dask]'") from None
    return dask, da


def predict(qm, x, output="float32", num_threads=1, block_rows=DEFAULT_BLOCK_ROWS):
    """``qm.predict`` mapped over the row blocks of ``x``, lazily: returns a Dask array (a list
    of them for a model with several outputs) to ``.compute()``, store or reduce.

    qm: a QuantizedModel. x: a Dask array of shape (N,) + the model's input shape (float, or
    int8 already quantized), or a list with one per input (their row chunks are aligned to the
    first one's); a NumPy array is split into blocks of ``block_rows`` rows. Blocks split along
    other axes are joined (each task needs whole samples). output, num_threads: as for
    ``qm.predict`` (num_threads per task: keep 1 when each worker runs a task per core).
    """
    from .runtime import QuantizedModel
    from .step import check_num_threads, output_is_float
    dask, da = _import_dask()
    if not isinstance(qm, QuantizedModel):
        raise ArgumentError(f"fixnet.dask.predict: qm must be a QuantizedModel, not "
                            f"{type(qm).__name__} (quantize the model first, or load a .fxn)")
    if (isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer))
            or block_rows < 1):
        raise ArgumentError(f"fixnet.dask.predict: block_rows must be a positive int, not "
                            f"{block_rows!r}")
    output_is_float(output)
    check_num_threads(num_threads)
    several = isinstance(x, (list, tuple))
    xs = list(x) if several else [x]
    if len(xs) != len(qm.inputs):
        raise InputShapeError(f"fixnet.dask.predict: {len(xs)} input array(s) for a model with "
                              f"{len(qm.inputs)} inputs ({', '.join(qm.inputs)})")
    arrays = []
    for name, shape, a in zip(qm.inputs, qm.input_shapes, xs):
        if not isinstance(a, da.Array):
            a = np.asarray(a)
            a = da.from_array(a, chunks=(min(block_rows, max(len(a), 1)),) + a.shape[1:])
        if a.ndim != len(shape) + 1 or any(w is not None and d != w     # None: any length
                                           for d, w in zip(a.shape[1:], shape)):
            raise InputShapeError(f"fixnet.dask.predict: input '{name}' has shape {a.shape}; "
                                  f"the model wants (N,) + {tuple(shape)}")
        arrays.append(a)
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise InputShapeError("fixnet.dask.predict: the input arrays hold different numbers of "
                              f"samples: {[a.shape[0] for a in arrays]}")
    rows = arrays[0].chunks[0]
    arrays = [a.rechunk((rows,) + a.shape[1:]) for a in arrays]
    blocks = [a.to_delayed().reshape(-1) for a in arrays]

    # the model is one node of the graph: sent to each worker once, not once per block
    model = dask.delayed(qm, name=f"fixnet-model-{uuid.uuid4().hex}", traverse=False)
    run = dask.delayed(_predict_block, pure=True, nout=len(qm.outputs))
    dtype = {"int8": np.int8, "uint8": np.uint8}.get(output, np.float32)
    shapes = qm.shapes_for(qm.lengths_of(arrays))     # inputs of any length: these arrays'
    out_shapes = [tuple(shapes[t]) for t in qm.outputs]
    per_output = [[] for _ in qm.outputs]
    for i, count in enumerate(rows):
        res = run(model, *[b[i] for b in blocks], output=output, num_threads=num_threads)
        parts = [res] if len(qm.outputs) == 1 else list(res)
        for k, part in enumerate(parts):
            per_output[k].append(da.from_delayed(part, shape=(count,) + out_shapes[k],
                                                 dtype=dtype))
    results = [da.concatenate(p, axis=0) if p else da.empty((0,) + s, dtype=dtype)
               for p, s in zip(per_output, out_shapes)]
    return results if len(results) > 1 else results[0]


def _predict_block(qm, *xs, output, num_threads):
    out = qm.predict(list(xs) if len(xs) > 1 else xs[0], output=output, num_threads=num_threads)
    return tuple(out) if isinstance(out, list) else out
