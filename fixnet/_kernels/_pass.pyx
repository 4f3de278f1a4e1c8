# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""One pass of a QuantizedModel over an arena, and predict's fast path, in C. Private:
fixnet.runtime plans the arenas and pools them.

An ``Arena`` is everything planned for one batch size: the int8 buffers, the kernel Call
objects bound to them (each owns the scratch space it needs), and the float boundaries (an
InputStage per input, an OutputStage per output and dtype). An arena is used by one pass at a
time; concurrent passes take different arenas from the pool of their batch size.

``FastPlan(free, keep, as_float)(x)`` is predict's fast path for one (output, input shape) of
a one-input model: it takes a free arena from ``free`` (the pool's list), puts x into it,
runs the kernel calls, makes the result arrays and gives the arena back (kept only while
``free`` holds fewer than ``keep``). It returns None, touching nothing, when it does not apply
(no free arena: every one is in use by another thread; x not a C-contiguous float32/int8
array of the shape; NaN or inf in x): the caller then takes the general path. Written in
Cython rather than Python only to keep the batch-1 call of a small model at about a
microsecond: list.pop/append are atomic under the GIL, so no lock is taken.
"""
cimport cython


@cython.final
@cython.auto_pickle(False)
cdef class Arena:
    """Buffers, kernel calls and float boundaries planned for one batch size (see above).

    bufs: tensor name -> int8 array; calls: zero-argument kernel callables, in order; loads:
    an InputStage per model input; float_stores, int8_stores: an OutputStage per output."""
    cdef readonly dict bufs
    cdef readonly tuple calls, loads, float_stores, int8_stores
    cdef readonly object load           # loads[0] if the model has one input, else None
    cdef readonly Py_ssize_t nbytes     # bytes of the buffers (views not counted)

    def __init__(self, dict bufs not None, calls, loads, float_stores, int8_stores):
        self.bufs = bufs
        self.calls = tuple(calls)
        self.loads = tuple(loads)
        self.load = self.loads[0] if len(self.loads) == 1 else None
        self.float_stores = tuple(float_stores)
        self.int8_stores = tuple(int8_stores)
        self.nbytes = sum(b.nbytes for b in bufs.values() if b.base is None)

    def stores(self, bint as_float):
        return self.float_stores if as_float else self.int8_stores

    def run_calls(self):
        """Run every kernel call on what the input buffers hold now."""
        for call in self.calls:
            call()


@cython.final
@cython.auto_pickle(False)
cdef class FastPlan:
    """predict's fast path for one (output, input shape): see the module docstring."""
    cdef readonly object pool           # the runtime's pool (identity, for its bookkeeping)
    cdef readonly list free             # the pool's free arenas
    cdef readonly Py_ssize_t keep
    cdef readonly bint as_float

    def __init__(self, pool, list free not None, Py_ssize_t keep, bint as_float):
        self.pool, self.free, self.keep, self.as_float = pool, free, keep, as_float

    def __call__(self, x):
        cdef Arena arena
        cdef tuple stores
        try:
            arena = <Arena?>self.free.pop()
        except IndexError:
            return None
        if arena.load(x):       # -1: not a dtype/layout the stage takes; > 0: NaN or inf
            self.free.append(arena)
            return None
        for call in arena.calls:
            call()
        stores = arena.float_stores if self.as_float else arena.int8_stores
        if len(stores) == 1:
            result = stores[0]()
        else:
            result = [store() for store in stores]
        if len(self.free) < self.keep:
            self.free.append(arena)
        return result
