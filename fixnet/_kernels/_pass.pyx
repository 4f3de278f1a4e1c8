# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""One pass of a QuantizedModel over an arena, predict's fast path, and the threads that split
large layers, in C. Private: fixnet.runtime plans the arenas and pools them.

An ``Arena`` is everything planned for one batch size: the int8 buffers (views into one
block, laid out by fixnet/memory_plan.py), the kernel Call objects bound to them (each owns
the scratch space it needs), and the float boundaries (an InputStage per input, an
OutputStage per output and dtype). An arena is used by one pass at a time; concurrent passes
take different arenas from the pool of their batch size.

The pass (``Arena.run``) is one C loop over a flat array of step records, one per Call: the
C entry of the Call's own module and the object (see step.pxd), no Python between layers and
no allocation. The GIL is released once for the whole loop when the plan's work is worth it
(the sum of the calls' work shares, each the call's work over its module's threshold, is at
least 1), else the loop runs holding it: a small MLP at batch 1 pays no GIL round trip per
layer. A step whose call is Python only (a NumPy copy) splits the loop into C segments; each
segment decides for itself.

Threads inside one pass (``num_threads`` > 1): a small pool of native threads (pthreads),
started on first use, shared by the process. A pass that wants them takes the pool (if
another pass holds it, this one runs on its own thread: never a wait); each step whose call
has tasks (``n_tasks``, ``run_tasks``) and enough work (PARALLEL_MIN_SHARE) is split into
``num_threads`` contiguous task ranges, the calling thread running the first, with a barrier
at the end of the step; other steps run on the calling thread. Task ranges write disjoint
outputs and share no scratch, so results are the same bits for every ``num_threads``. A
child process made by fork() starts with an empty pool (pthread_atfork resets it), whatever
the parent's threads were doing.

``FastPlan(free, keep, as_float)(x, num_threads)`` is predict's fast path for one (output,
input shape) of a one-input model: it takes a free arena from ``free`` (the pool's list),
puts x into it, runs the pass, makes the result arrays and gives the arena back (kept only
while ``free`` holds fewer than ``keep``). It returns None, touching nothing, when it does not
apply (no free arena: every one is in use by another thread; x not a C-contiguous
float32/int8 array of the shape; NaN or inf in x): the caller then takes the general path.
Written in Cython rather than Python to keep the batch-1 call of a small model at about a
microsecond: list.pop/append are atomic under the GIL, so no lock is taken.
"""
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc

from fixnet._kernels.step cimport step_run_t, step_tasks_t

cdef extern from *:
    """
    #include <pthread.h>
    #include <signal.h>
    #include <stdint.h>
    #include <string.h>

    typedef void (*fixnet_tasks_fn)(void*, Py_ssize_t, Py_ssize_t);
    #define FIXNET_MAX_WORKERS 63

    /* The process's worker threads. `mu` guards the fields below it; `owner` is held by the
       pass that uses the workers (taken with trylock: a second pass never waits for it). */
    typedef struct {
        pthread_mutex_t owner;
        pthread_mutex_t mu;
        pthread_cond_t wake;          /* a new job (generation) for the workers */
        pthread_cond_t done;          /* the last worker's part of the job is done */
        int n_workers;                /* started, ids 1..n_workers */
        unsigned long generation;     /* counts jobs */
        unsigned long seen[FIXNET_MAX_WORKERS + 1];   /* per worker: the last job it saw */
        fixnet_tasks_fn fn;           /* the job: tasks [0, n_tasks) of call, in n_parts */
        void* call;
        Py_ssize_t n_tasks;
        int n_parts;
        int pending;                  /* workers' parts not finished yet */
        int atfork_set;
    } fixnet_pool_t;

    static fixnet_pool_t fixnet_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                                        PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

    /* Part `part` of n_parts of tasks [0, n_tasks): a static, contiguous split. */
    static void fixnet_part(Py_ssize_t n_tasks, int n_parts, int part, Py_ssize_t* first,
                            Py_ssize_t* last) {
        *first = n_tasks * part / n_parts;
        *last = n_tasks * (part + 1) / n_parts;
    }

    static void* fixnet_worker(void* arg) {
        fixnet_pool_t* p = &fixnet_pool;
        int id = (int)(intptr_t)arg;
        sigset_t all;
        sigfillset(&all);             /* signals are for the Python threads */
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        pthread_mutex_lock(&p->mu);
        for (;;) {
            while (p->generation == p->seen[id])
                pthread_cond_wait(&p->wake, &p->mu);
            p->seen[id] = p->generation;
            if (id < p->n_parts) {
                fixnet_tasks_fn fn = p->fn;
                void* call = p->call;
                Py_ssize_t first, last;
                fixnet_part(p->n_tasks, p->n_parts, id, &first, &last);
                pthread_mutex_unlock(&p->mu);
                if (last > first)
                    fn(call, first, last);
                pthread_mutex_lock(&p->mu);
                if (--p->pending == 0)
                    pthread_cond_signal(&p->done);
            }
        }
        return NULL;
    }

    /* In a child made by fork(): no worker exists there, and the locks may have been held
       by parent threads that do not exist either. Start from an empty pool. */
    static void fixnet_pool_atfork_child(void) {
        fixnet_pool_t* p = &fixnet_pool;
        pthread_mutex_init(&p->owner, NULL);
        pthread_mutex_init(&p->mu, NULL);
        pthread_cond_init(&p->wake, NULL);
        pthread_cond_init(&p->done, NULL);
        p->n_workers = 0;
        p->n_parts = 0;
        p->pending = 0;
    }

    /* Take the pool for one pass: 1 if taken (release with fixnet_pool_release), 0 if
       another pass holds it. */
    static int fixnet_pool_acquire(void) {
        return pthread_mutex_trylock(&fixnet_pool.owner) == 0;
    }

    static void fixnet_pool_release(void) {
        pthread_mutex_unlock(&fixnet_pool.owner);
    }

    /* With the pool taken: start workers until there are `want` (at most
       FIXNET_MAX_WORKERS); returns how many there are (fewer if a thread cannot start). */
    static int fixnet_pool_grow(int want) {
        fixnet_pool_t* p = &fixnet_pool;
        if (!p->atfork_set) {
            if (pthread_atfork(NULL, NULL, fixnet_pool_atfork_child) != 0)
                return 0;             /* no fork safety: no threads */
            p->atfork_set = 1;
        }
        if (want > FIXNET_MAX_WORKERS)
            want = FIXNET_MAX_WORKERS;
        while (p->n_workers < want) {
            pthread_t thread;
            pthread_attr_t attr;
            int id = p->n_workers + 1, failed;
            pthread_mutex_lock(&p->mu);
            p->seen[id] = p->generation;
            pthread_mutex_unlock(&p->mu);
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            failed = pthread_create(&thread, &attr, fixnet_worker, (void*)(intptr_t)id);
            pthread_attr_destroy(&attr);
            if (failed)
                break;
            p->n_workers = id;
        }
        return p->n_workers;
    }

    /* With the pool taken: tasks [0, n_tasks) of call split into n_parts contiguous ranges
       (n_parts - 1 <= workers), the calling thread running the first; returns when all are
       done (the barrier). */
    static void fixnet_pool_run(fixnet_tasks_fn fn, void* call, Py_ssize_t n_tasks,
                                int n_parts) {
        fixnet_pool_t* p = &fixnet_pool;
        Py_ssize_t first, last;
        pthread_mutex_lock(&p->mu);
        p->fn = fn;
        p->call = call;
        p->n_tasks = n_tasks;
        p->n_parts = n_parts;
        p->pending = n_parts - 1;
        p->generation++;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
        fixnet_part(n_tasks, n_parts, 0, &first, &last);
        if (last > first)
            fn(call, first, last);
        pthread_mutex_lock(&p->mu);
        while (p->pending)
            pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    """
    int MAX_WORKERS "FIXNET_MAX_WORKERS"
    bint pool_acquire "fixnet_pool_acquire"() noexcept nogil
    void pool_release "fixnet_pool_release"() noexcept nogil
    int pool_grow "fixnet_pool_grow"(int want) noexcept nogil
    void pool_run "fixnet_pool_run"(step_tasks_t fn, void* call, Py_ssize_t n_tasks,
                                    int n_parts) noexcept nogil

# The most threads one pass may use (predict checks num_threads against it).
MAX_THREADS = MAX_WORKERS + 1

cdef enum:
    # A step is split over threads only when its work share (step.pxd) is at least this:
    # about 8 times the work at which releasing the GIL pays, so that waking the workers and
    # the barrier (some microseconds) stay small next to it.
    PARALLEL_MIN_SHARE = 8


ctypedef struct StepRecord:
    step_run_t run            # NULL: a Python call (calls[i]())
    step_tasks_t run_tasks    # NULL: no tasks
    void* call                # the Call object (kept alive by Arena.calls)
    Py_ssize_t n_tasks
    double share

ctypedef struct Segment:      # calls [start, stop): C records only
    Py_ssize_t start, stop
    bint release_gil          # its work is worth releasing the GIL for
    bint parallel             # it has a step worth splitting over threads


cdef void run_records(const StepRecord* records, Py_ssize_t start, Py_ssize_t stop,
                      int threads) noexcept nogil:
    cdef Py_ssize_t i
    cdef const StepRecord* r
    cdef Py_ssize_t parts
    for i in range(start, stop):
        r = &records[i]
        if threads > 1 and r.n_tasks > 1 and r.share >= PARALLEL_MIN_SHARE:
            parts = r.n_tasks if r.n_tasks < threads else threads
            pool_run(r.run_tasks, r.call, r.n_tasks, <int>parts)
        else:
            r.run(r.call)


@cython.final
@cython.auto_pickle(False)
cdef class Arena:
    """Buffers, kernel calls and float boundaries planned for one batch size (see above).

    bufs: tensor name -> int8 array (views into one block); calls: the kernel Call objects
    (or zero-argument Python callables), in order; loads: an InputStage per model input;
    float_stores, int8_stores: an OutputStage per output; nbytes: bytes of the block."""
    cdef readonly dict bufs
    cdef readonly tuple calls, loads, float_stores, int8_stores
    cdef readonly object load           # loads[0] if the model has one input, else None
    cdef readonly Py_ssize_t nbytes     # bytes of the buffers' memory
    cdef StepRecord* records
    cdef Segment* segments
    cdef Py_ssize_t n_calls, n_segments
    cdef bint parallel                  # some step is worth splitting over threads

    def __init__(self, dict bufs not None, calls, loads, float_stores, int8_stores,
                 Py_ssize_t nbytes):
        cdef Py_ssize_t i, n
        cdef StepRecord* r
        cdef Segment* seg
        self.bufs = bufs
        self.calls = tuple(calls)
        self.loads = tuple(loads)
        self.load = self.loads[0] if len(self.loads) == 1 else None
        self.float_stores = tuple(float_stores)
        self.int8_stores = tuple(int8_stores)
        self.nbytes = nbytes
        n = len(self.calls)
        PyMem_Free(self.records)
        PyMem_Free(self.segments)
        self.records = <StepRecord*>PyMem_Malloc(max(n, 1) * sizeof(StepRecord))
        self.segments = <Segment*>PyMem_Malloc(max(n, 1) * sizeof(Segment))
        if self.records == NULL or self.segments == NULL:
            raise MemoryError()
        self.n_calls = n
        self.n_segments = 0
        self.parallel = False
        seg = NULL
        for i, call in enumerate(self.calls):
            r = &self.records[i]
            entry = getattr(call, "step_entry", None)
            if entry is None:
                r.run = NULL
                r.run_tasks = NULL
                r.call = NULL
                r.n_tasks = 0
                r.share = 0
                seg = NULL
                continue
            run, run_tasks, n_tasks, share = entry()
            r.run = <step_run_t><void*><size_t>run
            r.run_tasks = <step_tasks_t><void*><size_t>run_tasks
            r.call = <void*>call
            r.n_tasks = n_tasks if run_tasks else 0
            r.share = share
            if seg == NULL:
                seg = &self.segments[self.n_segments]
                self.n_segments += 1
                seg.start, seg.stop, seg.release_gil, seg.parallel = i, i, False, False
            seg.stop = i + 1
            if r.n_tasks > 1 and r.share >= PARALLEL_MIN_SHARE:
                seg.parallel = True
                self.parallel = True
        for i in range(self.n_segments):    # (the shares summed per segment)
            seg = &self.segments[i]
            seg.release_gil = sum_shares(self.records, seg.start, seg.stop) >= 1.0

    def __dealloc__(self):
        PyMem_Free(self.records)
        PyMem_Free(self.segments)

    def stores(self, bint as_float):
        return self.float_stores if as_float else self.int8_stores

    @property
    def segment_count(self):
        """C segments of the pass (Python-only calls split it; for tests)."""
        return self.n_segments

    @property
    def parallel_calls(self):
        """Indices into calls of the steps split over threads when num_threads > 1."""
        return [i for i in range(self.n_calls)
                if self.records[i].n_tasks > 1 and self.records[i].share >= PARALLEL_MIN_SHARE]

    def run(self, Py_ssize_t num_threads=1):
        """Run every kernel call on what the input buffers hold now (one pass, see above)."""
        self.run_pass(num_threads)

    cdef int run_pass(self, Py_ssize_t num_threads) except -1:
        cdef int threads = 1
        cdef bint owner = False
        if num_threads > 1 and self.parallel and pool_acquire():
            owner = True
            threads = 1 + pool_grow(<int>(num_threads if num_threads <= MAX_WORKERS else MAX_WORKERS + 1) - 1)
        try:
            self.run_segments(threads)
        finally:
            if owner:
                pool_release()
        return 0

    cdef int run_segments(self, int threads) except -1:
        cdef Py_ssize_t s, i = 0
        cdef const Segment* seg
        for s in range(self.n_segments):
            seg = &self.segments[s]
            while i < seg.start:
                self.calls[i]()
                i += 1
            if seg.release_gil or (threads > 1 and seg.parallel):
                with nogil:
                    run_records(self.records, seg.start, seg.stop, threads)
            else:
                run_records(self.records, seg.start, seg.stop, threads)
            i = seg.stop
        while i < self.n_calls:
            self.calls[i]()
            i += 1
        return 0


cdef double sum_shares(const StepRecord* records, Py_ssize_t start, Py_ssize_t stop) noexcept:
    cdef double total = 0
    cdef Py_ssize_t i
    for i in range(start, stop):
        total += records[i].share
    return total


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

    def __call__(self, x, Py_ssize_t num_threads=1):
        cdef Arena arena
        cdef tuple stores
        try:
            arena = <Arena?>self.free.pop()
        except IndexError:
            return None
        if arena.load(x):       # -1: not a dtype/layout the stage takes; > 0: NaN or inf
            self.free.append(arena)
            return None
        arena.run_pass(num_threads)
        stores = arena.float_stores if self.as_float else arena.int8_stores
        if len(stores) == 1:
            result = stores[0]()
        else:
            result = [store() for store in stores]
        if len(self.free) < self.keep:
            self.free.append(arena)
        return result
