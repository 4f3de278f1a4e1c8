"""QuantizedModel: a flat list of integer kernel steps over buffers planned once per run key
(the batch size, and the lengths of inputs of any length).

Float appears only at the two boundaries of predict: quantizing a float input and dequantizing
the outputs. Everything between is int8 tensors and integer kernels.

Per run key, once: a memory plan (fixnet/memory_plan.py: every int8 tensor at an offset in
one block, tensors whose lifetimes do not overlap sharing memory), then arenas: the block, the
kernel Call objects bound to views into it, and the float boundaries. A pass
(fixnet/_kernels/_pass.pyx) runs an arena's calls as one C loop, the GIL released once when
the work is worth it, large layers split over native threads when ``num_threads`` > 1.
"""
import threading
from collections import OrderedDict
from typing import List

import numpy as np

from . import fxn
from . import thread_policy  # noqa: F401  (gives the pass its calibrator: when to split)
from ._kernels import _elementwise
from ._kernels._pass import MAX_THREADS, Arena, FastPlan
from .cost import step_macs
from .errors import ArgumentError, FixnetError, InputShapeError
from .lengths import length_symbols, resolve_shape, substitute
from .memory_plan import ALIGN, MemoryPlan, TensorPlacement, allocate, plan_memory
from .step import (Step, check_inputs, check_nonfinite_policy, check_num_threads,
                   check_output_codes, check_runs, clip_nonfinite, input_codes,
                   nonfinite_input_error, output_is_float, require_finite)

MAX_ROWS_PER_PASS = 256      # larger batches run in chunks, so the arena stays small
BATCH_SIZES_KEPT = 4         # arena pools kept for this many run keys (batch size, lengths)
ARENAS_PER_BATCH_SIZE = 8    # free arenas kept per run key (for that many threads at once)
ARENA_BYTES_KEPT = 64 << 20  # ... unless they take more bytes than this (one is always kept)
PROFILE_SECONDS = 1.0        # profile(runs=None): rounds that take about this long ...
PROFILE_MIN_RUNS = 10        # ... but at least this many
PROFILE_MAX_RUNS = 2000      # ... and at most this many


class _ArenaPool:
    """The arenas of one run key: a batch size and, for a model with inputs of any length,
    the lengths of the call (``lengths``, one per length symbol; () for fixed shapes). A pass
    takes a free arena (or, when every one is in use by another thread, has a new one
    planned) and gives it back when its results are made; at most ``keep`` free arenas are
    kept, so a burst of threads does not leave memory behind.

    An arena (fixnet/_kernels/_pass.pyx) holds the buffers and kernel calls of one pass, so
    two passes never share buffers or kernel scratch. ``free.pop()`` and ``free.append()``
    are atomic under the GIL: the fast path (FastPlan) takes and returns arenas without a
    lock; creating pools and fast-path entries takes QuantizedModel._plan_lock."""
    __slots__ = ("n", "lengths", "free", "keep", "planned", "memory")

    def __init__(self, n, lengths=()):
        self.n = n
        self.lengths = lengths
        self.free = []
        self.keep = ARENAS_PER_BATCH_SIZE
        self.planned = 0          # arenas planned for this key so far (for tests)
        self.memory = None        # the MemoryPlan of this key (made with the first arena)

    def give(self, arena):
        if len(self.free) < self.keep:
            self.free.append(arena)


class QuantizedModel:
    """An int8 network ready to run. Build one with ``fixnet.load(path).quantize(data)``."""

    config = None       # the QuantConfig it was made with (None: unknown, a file from before)
    input_rounding = "fixnet"   # "tflite": float inputs as TFLite's QUANTIZE (step.input_codes)

    def __init__(self, steps: List[Step], tensors, inputs, outputs, name="model", source=""):
        self.steps = steps
        self.tensors = tensors        # name -> TensorSpec
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.name = name
        self.source = source
        # inputs of any length: the None dimensions of the inputs (fixnet/lengths.py)
        self.length_symbols = length_symbols(self.inputs, {t: s.shape for t, s in tensors.items()})
        for t, spec in tensors.items():
            if spec.length_of is None:
                spec.length_of = _default_length_of(t, spec.shape, self.length_symbols)
        self._init_run_state()

    def _init_run_state(self):
        self._pools = OrderedDict()   # (batch size, lengths) -> _ArenaPool, most recent last
        self._fast = {}               # (output, input shape) -> FastPlan (one-input models)
        self._plan_lock = threading.Lock()   # guards _pools and _fast changes (not the runs)
        self._local = threading.local()      # per-thread state: the last CheckReport

    def __reduce__(self):
        """Pickling (multiprocessing, Dask, joblib...) ships the model as its .fxn bytes and
        nothing else: unpickling calls fixnet.runtime.model_from_bytes on them, which checks them
        as it checks a file and executes nothing they name. Predictions are bit-identical; what
        a .fxn does not hold (the float graph ``qm.report`` compares with) is not carried."""
        where = self.source or f"QuantizedModel '{self.name}'"
        return model_from_bytes, (fxn.encode_model(self, where), where)

    # -- properties users look at -------------------------------------------------------
    @property
    def input_shapes(self):
        return [self.tensors[t].shape for t in self.inputs]

    @property
    def input_qparams(self):
        return [self.tensors[t].qparams for t in self.inputs]

    @property
    def output_qparams(self):
        return [self.tensors[t].qparams for t in self.outputs]

    @property
    def last_check(self):
        """The CheckReport of this thread's last ``predict(..., check_overflow=True)`` (None
        before the first one). Per thread: checked runs in other threads never replace it."""
        return getattr(self._local, "check", None)

    def __repr__(self):
        types = "/".join(sorted({s.qparams.type_name for s in self.tensors.values()}))
        return (f"<QuantizedModel '{self.name}': {len(self.steps)} {types} steps, "
                f"inputs {self.input_shapes}, outputs {[self.tensors[t].shape for t in self.outputs]}>")

    # -- running --------------------------------------------------------------------------
    def predict(self, x, output="float32", check_overflow=False, nonfinite="error",
                num_threads=1):
        """Run the int8 network.

        x: float32/float64 array (quantized at the input with the input's scale and zero
           point), or int8 (taken as already quantized); shape (batch,) + input shape. A list
           of arrays for a model with several inputs. Any layout (strided, Fortran-order,
           read-only arrays are copied into the model's buffers); an empty batch gives empty
           outputs; batches above MAX_ROWS_PER_PASS rows run in chunks of that many rows.
        x may also be uint8: the int8 codes + 128 (zero point + 128), like TFLite's uint8
           input type (camera pixels, for a model whose input range is [0, 255]). Wider
           integers (int16/32/64, uint16/...: token ids) are real values, quantized as floats.
        A model whose input has a dimension of any length (None, e.g. (None, 8): sequences of
           any number of steps) takes any length >= 1 there, one length per call (the
           results are those of a call with that length alone); buffers are planned per
           (batch size, lengths), as ``memory_plan(batch, length=...)`` shows.
        output: "float32" (dequantized, the default), "int8" (raw codes; see output_qparams)
           or "uint8" (the codes + 128).
        check_overflow: run through the NumPy oracle with int64 accumulators instead, raising
           fixnet.AccumulatorOverflowError naming the layer if any int32 accumulator would
           wrap (same results, much slower); ``last_check`` then holds per-layer counts (per
           thread).
        nonfinite: what NaN and infinite float inputs do. "error" (default): raise
           fixnet.NonFiniteInputError naming the input. "clip": +inf becomes the largest int8
           code (127), -inf the smallest (-128), NaN the zero point (real 0.0), as a finite
           value beyond the input's range or 0.0 would.
        num_threads: native threads this call may use (default 1; an int from 1 to
           MAX_THREADS; at most the CPUs the process may use are used): large layers (a
           dense layer or convolution with enough work) are split over blocks of output
           channels or rows, each thread computing its own block, the same bits for every
           num_threads. A layer is split into p parts only if each part has the
           multiply-adds the fastest kernel does while p - 1 workers wake up, measured on
           this machine at the first call that wants threads (fixnet/thread_policy.py; on a machine whose
           cores are busy, nothing is split). Smaller layers, and layers whose kernel cannot
           be split, run on the calling thread. The threads are started on first use and
           shared by the process; if another predict is using them at that moment, this one
           runs on its calling thread alone (never waits).
        Returns one array, or a list for a model with several outputs; new arrays every call
        (never views of the model's internal buffers).

        How it runs: one C loop over the kernel calls planned for the batch size (no Python
        between layers, nothing allocated but the results), the GIL released once for the
        whole loop when the work is worth it; the int8 tensors share one block of memory
        where their lifetimes allow (``memory_plan``).

        Thread-safe: one model may run in many threads at once, each call giving the same
        bits as a serial call. Each pass takes an arena (buffers and kernel calls planned for
        its batch size) that no other pass uses meanwhile; the pass releases the GIL, so
        threads run on several cores.
        """
        if num_threads.__class__ is not int or not 0 < num_threads <= MAX_THREADS:
            num_threads = check_num_threads(num_threads)
        if self.input_rounding != "fixnet" and (x.__class__ is not np.ndarray
                                                 or x.dtype.kind == "f"):
            x = self.input_codes(x)
        if check_overflow or nonfinite != "error":
            return self._predict(x, output, check_overflow, nonfinite, num_threads)
        # Fast path: one C-contiguous float32/int8 array of a shape seen before (so its arena
        # pool exists and the checks of every argument are done): a dict lookup, then in C
        # (_kernels/_pass.pyx) a free arena from the pool, the input stage (a dtype/shape
        # check, then copy or quantize into the arena), the kernel calls, the output stage
        # (new arrays) and the arena back to the pool. Anything else goes through _predict.
        try:
            plan = self._fast[output, x.shape]
        except (AttributeError, KeyError, TypeError):
            return self._predict(x, output, num_threads=num_threads)
        result = plan(x, num_threads)   # None: no free arena, or x is not what the stage takes
        if result is None:
            return self._predict(x, output, num_threads=num_threads)
        return result

    def _predict(self, x, output, check_overflow=False, nonfinite="error", num_threads=1):
        """predict for any input: checks (with the error messages), conversions, chunks of
        MAX_ROWS_PER_PASS rows; registers the fast path for the shape when it applies."""
        as_float = output_is_float(output)
        if not as_float:
            check_output_codes(output, self.outputs, [self.tensors[t] for t in self.outputs])
        check_nonfinite_policy(nonfinite, "predict")
        if check_overflow:
            return self._predict_checked(x, output, nonfinite)
        if output == "uint8":
            # the int8 fast path, then + 128
            return _as_uint8(self.predict(x, "int8", nonfinite=nonfinite,
                                          num_threads=num_threads))
        xs = self._check_inputs(x, nonfinite)
        n = xs[0].shape[0]
        lengths = self.lengths_of(xs)
        if 0 < n <= MAX_ROWS_PER_PASS:
            pool = self._pool(n, lengths)
            arena = self._take(pool)
            self._run_pass(arena, xs, num_threads)
            results = [store() for store in arena.stores(as_float)]
            pool.give(arena)
            if len(self.inputs) == 1 and isinstance(x, np.ndarray) and nonfinite == "error":
                self._register_fast(output, x.shape, pool, as_float)
            return results[0] if len(results) == 1 else results
        # An empty batch, or chunks of MAX_ROWS_PER_PASS rows: only the results are
        # allocated at full size; each chunk runs in one arena of the pool of its size.
        shapes = self.shapes_for(lengths)
        results = [np.empty((n,) + shapes[t], np.float32 if as_float else self.tensors[t].qparams.dtype)
                   for t in self.outputs]
        for start in range(0, n, MAX_ROWS_PER_PASS):
            stop = min(n, start + MAX_ROWS_PER_PASS)
            pool = self._pool(stop - start, lengths)
            arena = self._take(pool)
            self._run_pass(arena, [xi[start:stop] for xi in xs], num_threads)
            for t, res in zip(self.outputs, results):
                _store_into(res[start:stop], arena.bufs[t], self.tensors[t].qparams)
            pool.give(arena)
        return results[0] if len(results) == 1 else results

    def _run_pass(self, arena, xs, num_threads=1):
        for name, stage, xi in zip(self.inputs, arena.loads, xs):
            bad = stage(np.ascontiguousarray(xi))
            if bad:
                raise nonfinite_input_error(name, bad)
        arena.run(num_threads)

    def _predict_checked(self, x, output, nonfinite):
        from .checked import run_checked
        outs, self._local.check = run_checked(self, x, nonfinite)
        if output == "uint8":
            return _as_uint8(outs[0] if len(outs) == 1 else outs)
        if output == "float32":
            outs = [self.tensors[t].qparams.dequantize(o) for t, o in zip(self.outputs, outs)]
        return outs[0] if len(outs) == 1 else outs

    def input_codes(self, x):
        """``x`` with its float arrays made codes by the model's input_rounding (step.py)."""
        return input_codes(x, [self.tensors[t] for t in self.inputs], self.input_rounding)

    def predict_oracle(self, x, nonfinite="error"):
        """The same network run step by step with the pure-NumPy oracle (int8 outputs).
        Slow; it is the ground truth the Cython kernels are checked against. ``nonfinite``
        as for predict."""
        check_nonfinite_policy(nonfinite, "predict_oracle")
        xs = self._check_inputs(x, nonfinite)
        lengths = self.lengths_of(xs)
        shapes = self.shapes_for(lengths)
        vals = {}
        for t, xi in zip(self.inputs, xs):
            vals[t] = xi if xi.dtype.kind == "i" else self.tensors[t].qparams.quantize(
                require_finite(xi, t))
        for s in self.steps_for(lengths):
            outs = s.oracle([vals[t] for t in s.inputs])
            for t, o in zip(s.outputs, outs):
                vals[t] = o.reshape((o.shape[0],) + shapes[t])
        res = [vals[t] for t in self.outputs]
        return res[0] if len(res) == 1 else res

    def profile(self, x, runs=None, num_threads=1):
        """Where the time of one pass on ``x`` goes, step by step: each kernel call's median
        time (microseconds) and share of the total, its MACs (fixnet.cost) and GMAC/s, and
        the whole pass's time. Returns a fixnet.profile.Profile: ``print(profile)`` for the
        table, ``profile.steps`` for the records, ``profile.to_dict()`` for JSON.

        x: inputs as predict takes them (float, int8 or uint8 codes), one batch of 1 to
           MAX_ROWS_PER_PASS rows (the size of one pass); the pass runs once on it, so every
           buffer holds real data, then each call is timed alone on that data.
        runs: timed rounds (an int >= 1); each round times every call once, then the whole
           pass. None (default): as many rounds as fill about PROFILE_SECONDS, at least
           PROFILE_MIN_RUNS, at most PROFILE_MAX_RUNS.
        num_threads: as for predict; the calls are split over threads as predict splits
           them (the table then says into how many parts).
        The steps run in an arena of their own in which no tensor shares memory with another
        (predict's arenas share it), so that each call's input still holds what the pass
        gave it; see fixnet/profile.py for the method."""
        from ._kernels import ISA
        from .profile import make_profile

        num_threads = check_num_threads(num_threads, "profile")
        runs = check_runs(runs, "profile")
        xs = self._check_inputs(x)
        n = xs[0].shape[0]
        if not 0 < n <= MAX_ROWS_PER_PASS:
            raise InputShapeError(f"profile: x has {n} rows; one pass runs 1 to "
                                  f"{MAX_ROWS_PER_PASS} (predict runs more in chunks of "
                                  f"{MAX_ROWS_PER_PASS}): profile x[:{MAX_ROWS_PER_PASS}]")
        lengths = self.lengths_of(xs)
        memory = separate_tensors(self._memory_plan(n, lengths))
        arena = self._plan_arena(n, lengths, memory)
        self._run_pass(arena, xs, num_threads)      # every buffer: what the pass computes
        columns = len(arena.calls) + 1
        warm = np.empty((1, columns), np.int64)
        arena.time_steps(warm, num_threads)
        if runs is None:
            round_s = max(float(warm.sum()) * 1e-9, 1e-9)
            runs = int(min(PROFILE_MAX_RUNS, max(PROFILE_MIN_RUNS, PROFILE_SECONDS / round_s)))
        ns = np.empty((runs, columns), np.int64)
        arena.time_steps(ns, num_threads)
        return make_profile(self.name, self.steps_for(lengths), self.shapes_for(lengths), n, ns,
                            arena.parts(num_threads), num_threads, lengths, ISA)

    def _check_inputs(self, x, nonfinite="error"):
        """The inputs as a list of checked arrays (float32 or int8, the model's shapes, one
        batch size); with nonfinite="clip", float inputs with their non-finite values
        replaced (see predict). Raises InputShapeError / InputDtypeError naming the input.
        Float inputs of a .tflite model become its codes here (input_codes), so every path
        (the oracle, checked runs, reports) quantizes them as predict does."""
        xs = check_inputs(self.input_codes(x), self.inputs, [self.tensors[t].shape for t in self.inputs],
                          allow_int8=True,
                          code_dtypes=[self.tensors[t].qparams.dtype for t in self.inputs])
        if nonfinite == "clip":
            xs = [xi if xi.dtype.kind == "i" else clip_nonfinite(xi) for xi in xs]
        for t, d in self.length_symbols:
            xi = xs[self.inputs.index(t)]
            if xi.shape[1 + d] == 0:
                raise InputShapeError(
                    f"input '{t}': dimension {d + 1} (of any length) is 0 in shape {xi.shape}; "
                    "the int8 network needs at least one step")
        return xs

    # -- inputs of any length (fixnet/lengths.py) ----------------------------------------------
    def lengths_of(self, xs):
        """The length of every length symbol in the checked inputs ``xs``: () for a model
        with fixed input shapes."""
        return tuple(xs[self.inputs.index(t)].shape[1 + d] for t, d in self.length_symbols)

    def shapes_for(self, lengths=()):
        """{tensor: shape without batch} of a run at ``lengths`` (one per length symbol)."""
        if not lengths:
            return {t: tuple(s.shape) for t, s in self.tensors.items()}
        return {t: resolve_shape(s.shape, s.length_of, lengths) for t, s in self.tensors.items()}

    def steps_for(self, lengths=()):
        """The steps of a run at ``lengths``: each step whose tensors follow a length symbol
        is a shallow copy with the None dimensions it baked at quantize time (the shapes it
        reshapes its buffers to, a global pool's window) replaced by the length; its arrays
        (weights, packed weights) are shared. Steps never see a None dimension at run time:
        bind(bufs) receives buffers of the run's shapes."""
        if not lengths:
            return self.steps
        steps = []
        for s in self.steps:
            k = self._step_symbol(s)
            if k is None:
                steps.append(s)
                continue
            pack = getattr(s, "packed_weights", None)
            if callable(pack):
                pack()          # packed once on the step itself, so that every copy shares it
            copy = object.__new__(type(s))
            copy.__dict__.update({a: substitute(v, lengths[k]) for a, v in s.__dict__.items()})
            steps.append(copy)
        return steps

    def _step_symbol(self, step):
        """The one length symbol the tensors of ``step`` follow, or None."""
        found = {k for t in list(step.inputs) + list(step.outputs)
                 for k in self.tensors[t].length_of if k is not None}
        if len(found) > 1:
            raise FixnetError(f"step '{step.name}' (layer '{step.layer}') mixes the lengths of "
                              f"several inputs ({sorted(found)}); int8 cannot run it")
        return found.pop() if found else None

    def _check_length_argument(self, length, where):
        """memory_plan's ``length`` as a tuple with one length per symbol."""
        if not self.length_symbols:
            if length is not None:
                raise ArgumentError(f"{where}: length is only for models with an input of any "
                                    "length; this one has fixed input shapes")
            return ()
        dims = ", ".join(f"input '{t}' dimension {d + 1}" for t, d in self.length_symbols)
        if length is None:
            raise ArgumentError(f"{where}: this model runs at any length ({dims}): pass "
                                f"length=... (the number of steps"
                                + (")" if len(self.length_symbols) == 1 else ", one per dimension)"))
        values = list(length) if isinstance(length, (list, tuple)) else [length]
        if len(values) == 1 and len(self.length_symbols) > 1:
            values = values * len(self.length_symbols)
        if (len(values) != len(self.length_symbols)
                or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                       for v in values)):
            raise ArgumentError(f"{where}: length must be an integer >= 1 (or one per "
                                f"dimension of any length: {dims}), not {length!r}")
        return tuple(int(v) for v in values)

    # -- arenas: planned per batch size, pooled so that concurrent passes never share one ----
    def _pool(self, n, lengths=()):
        """The arena pool of batch size n at ``lengths`` (created empty on first use); the
        least recently used pools beyond BATCH_SIZES_KEPT are dropped, with their fast-path
        entries."""
        pools = self._pools
        key = (n, lengths)
        pool = pools.get(key)
        if pool is not None:
            try:
                pools.move_to_end(key)
            except KeyError:      # dropped meanwhile by another thread: still usable
                pass
            return pool
        with self._plan_lock:
            pool = pools.get(key)
            if pool is None:
                pool = pools[key] = _ArenaPool(n, lengths)
                while len(pools) > BATCH_SIZES_KEPT:
                    _, old = pools.popitem(last=False)
                    self._fast = {k: p for k, p in self._fast.items() if p.pool is not old}
            return pool

    def _take(self, pool):
        """A free arena of ``pool``, or a newly planned one if every arena is in use."""
        try:
            return pool.free.pop()
        except IndexError:
            pass
        if pool.memory is None:
            pool.memory = self._memory_plan(pool.n, pool.lengths)
        arena = self._plan_arena(pool.n, pool.lengths, pool.memory)
        if pool.planned == 0:
            pool.keep = max(1, min(ARENAS_PER_BATCH_SIZE, ARENA_BYTES_KEPT // max(arena.nbytes, 1)))
        pool.planned += 1
        return arena

    def _register_fast(self, output, shape, pool, as_float):
        key = (output, shape)
        plan = self._fast.get(key)
        if plan is not None and plan.pool is pool:
            return
        with self._plan_lock:
            if self._pools.get((pool.n, pool.lengths)) is pool:   # not dropped meanwhile
                fast = dict(self._fast)
                fast[key] = FastPlan(pool, pool.free, pool.keep, as_float)
                self._fast = fast

    def arena_stats(self):
        """{batch size: (arenas planned so far, free arenas kept, bytes of one arena)} of the
        pools kept now: what predict holds in memory between calls. For a model with inputs
        of any length the keys are (batch size, lengths)."""
        return {(k if k[1] else k[0]): (p.planned, len(p.free), p.free[0].nbytes if p.free else 0)
                for k, p in list(self._pools.items())}

    def memory_plan(self, batch=1, length=None) -> MemoryPlan:
        """Where predict keeps the int8 tensors of one pass at ``batch`` rows: one block of
        ``peak_bytes``, each tensor at an offset, tensors whose lifetimes do not overlap
        sharing memory (see fixnet/memory_plan.py); ``total_bytes`` is what one buffer per
        tensor would take. ``print(plan)`` for a table. (Batches above MAX_ROWS_PER_PASS
        run in chunks of that many rows, so their plan is that of the chunks.)

        length: for a model with an input of any length (a None dimension), the number of
        steps to plan for (an int; for several such dimensions, one per dimension in
        ``length_symbols`` order, or one int for all); required there, refused otherwise."""
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ArgumentError(f"memory_plan: batch must be an integer >= 1, not {batch!r}")
        return self._memory_plan(int(batch), self._check_length_argument(length, "memory_plan"))

    def _memory_plan(self, n, lengths=()):
        return plan_memory(self.steps, self.shapes_for(lengths), self.inputs, self.outputs, n,
                           {t: s.qparams.dtype.itemsize for t, s in self.tensors.items()})

    def _plan_arena(self, n, lengths=(), memory=None):
        """Buffers for batch size n at ``lengths`` (laid out by the memory plan ``memory``)
        and the kernel calls bound to them."""
        if memory is None:
            memory = self._memory_plan(n, lengths)
        shapes = self.shapes_for(lengths)
        block, bufs = allocate(memory, shapes, {t: s.qparams.dtype for t, s in self.tensors.items()})
        steps = [s for s in self.steps_for(lengths) if not s.alias]
        calls = [s.bind(bufs) for s in steps]
        # multiply-adds per call (the whole batch): whether a step is worth splitting over
        # threads (fixnet/thread_policy.py)
        macs = [n * step_macs(s, shapes[s.outputs[0]], shapes[s.inputs[0]] if s.inputs else None)
                for s in steps]
        return Arena(bufs, calls,
                     [_elementwise.InputStage(bufs[t], self.tensors[t].qparams.scale,
                                              self.tensors[t].qparams.zero_point)
                      for t in self.inputs],
                     [self._output_stage(bufs[t], t, True) for t in self.outputs],
                     [self._output_stage(bufs[t], t, False) for t in self.outputs],
                     memory.peak_bytes, macs)

    def _output_stage(self, buf, name, as_float):
        qp = self.tensors[name].qparams
        return _elementwise.OutputStage(buf, qp.scale, qp.zero_point, as_float)

    # -- the overflow proof --------------------------------------------------------------
    def overflow_bounds(self):
        return [b for b in (s.overflow_bound() for s in self.steps) if b is not None]

    def overflow_report(self):
        """Per-layer static bound on every int32 accumulator, with headroom in bits."""
        from .report import OverflowReport
        return OverflowReport(self.overflow_bounds())

    def report(self, x):
        """Where the quantization error comes from, layer by layer, on inputs ``x``: SQNR of
        each int8 tensor against the float network, share of values clipped by each range,
        int8 saturation counts, accumulator headroom and weight range use. Returns an
        ErrorReport: ``print(report)`` for a table, ``report.to_dict()`` for records. (A model
        read from a .fxn file has no float network: SQNR and clipping are then left empty.)"""
        from .report import error_report
        return error_report(self, getattr(self, "float_graph", None), x)

    def dequantized_weights(self):
        """The float weights this int8 network really computes with, reconstructed from its
        integers: {step name: {"kernel": ..., "bias": ...}} in Keras's layouts (Dense [in, out],
        Conv [KH, KW, in, out], Depthwise [KH, KW, C, multiplier]), with any BatchNorm folded in.
        See fixnet/dequantize.py."""
        from .dequantize import dequantized_weights
        return dequantized_weights(self)

    # -- the portable file -----------------------------------------------------------------
    def save(self, path):
        """Write the int8 network to one versioned ``.fxn`` file (see fixnet/fxn/): int8
        weights, int32 biases, multipliers, tables and the graph; no float weights.
        ``fixnet.load(path)`` reads it back with bit-identical predictions."""
        fxn.save_model(self, path)


def load_fxn(path, max_memory=None):
    """The QuantizedModel saved in the .fxn file ``path`` (``fixnet.load`` calls this for a
    .fxn file): read and checked by fixnet.fxn (ModelFileError naming the file), built, and run
    once on zero-point inputs before it is returned."""
    return _model_from_parts(fxn.read_model_parts(path, max_memory))


def model_from_bytes(data, name="<fxn bytes>", max_memory=None):
    """The QuantizedModel whose .fxn file content is ``data`` (bytes, as fixnet.fxn.encode_model
    makes them; checked exactly as a file is). ``name`` names the data in errors. This is
    what unpickling a QuantizedModel calls: a pickle of one holds only these bytes."""
    return _model_from_parts(fxn.model_parts_from_bytes(data, name, max_memory))


def _model_from_parts(parts):
    qm = QuantizedModel(parts.steps, parts.tensors, parts.inputs, parts.outputs,
                        name=parts.name, source=parts.source)
    qm.config = parts.config
    qm.input_rounding = parts.input_rounding
    fxn.check_model(parts, qm)
    return qm


def _default_length_of(name, shape, symbols):
    """TensorSpec.length_of of a tensor built without one: every None dimension follows the
    model's one length symbol (a model with several must say which)."""
    if None not in shape:
        return (None,) * len(shape)
    if len(symbols) != 1:
        raise FixnetError(f"tensor '{name}' has shape {tuple(shape)} with a dimension of any "
                          f"length, and the model has {len(symbols)} input dimensions of any "
                          "length: its TensorSpec must say which one it follows (length_of)")
    return tuple(0 if d is None else None for d in shape)


def separate_tensors(plan: MemoryPlan) -> MemoryPlan:
    """``plan`` with every tensor (alias group) at its own offset, none sharing memory: after
    one pass each buffer still holds what the pass wrote there (the profile's arena)."""
    placements, offset = [], 0
    for t in plan.tensors:
        placements.append(TensorPlacement(list(t.names), offset, t.nbytes, t.first, t.last))
        offset += -(-max(t.nbytes, 1) // ALIGN) * ALIGN
    return MemoryPlan(plan.batch, offset, plan.total_bytes, placements)


def _store_into(out, buf, qparams):
    """Write the codes ``buf`` into ``out``, a C-contiguous float32 (dequantized) or code
    array (int8, int16) of its shape: a chunk's rows of predict's result, without a temporary."""
    if out.dtype.kind == "i":
        np.copyto(out, buf)
    else:
        _elementwise.dequantize(buf.reshape(-1), qparams.scale, qparams.zero_point, out.reshape(-1))


def _as_uint8(out):
    """int8 codes q -> uint8 codes q + 128 (same scale, zero point + 128)."""
    if isinstance(out, list):
        return [_as_uint8(o) for o in out]
    return np.bitwise_xor(out, np.int8(-128)).view(np.uint8)
