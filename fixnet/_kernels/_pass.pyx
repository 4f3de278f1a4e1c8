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
has tasks (``n_tasks``, ``run_tasks``) and enough work (PARALLEL_MIN_SHARE) is cut into
4 * ``num_threads`` contiguous chunks of tasks, which the calling thread and ``num_threads``
- 1 workers take in turn, with a barrier at the end of the step; other steps run on the
calling thread. (Chunks rather than one range per thread: on a busy machine a worker the OS
runs late leaves its share to the others instead of stalling the step.) Tasks write disjoint
outputs and share no scratch, so results are the same bits for every ``num_threads`` and
whichever thread runs a chunk. A child process made by fork() starts with an empty pool
(pthread_atfork resets it), whatever the parent's threads were doing.

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
    typedef void (*fixnet_tasks_fn)(void*, Py_ssize_t, Py_ssize_t);
    #if defined(_WIN32)
    /* No pthreads: predict runs every step on the calling thread (num_threads is accepted
       and has no effect). */
    #define FIXNET_MAX_WORKERS 63
    static int fixnet_pool_acquire(void) { return 0; }
    static void fixnet_pool_release(void) {}
    static int fixnet_pool_grow(int want) { (void)want; return 0; }
    static void fixnet_pool_run(fixnet_tasks_fn fn, void* call, Py_ssize_t n_tasks,
                                int n_parts) { (void)n_parts; fn(call, 0, n_tasks); }
    #else
    #include <pthread.h>
    #include <signal.h>
    #include <stdint.h>
    #include <string.h>

    #define FIXNET_MAX_WORKERS 63

    #include <time.h>

    /* Before sleeping on a condition variable, a waiting thread polls for this long: the
       next parallel step of a pass often comes sooner, and waking a sleeping thread takes
       some tens of microseconds. Short, so that idle workers do not take cores from other
       processes for long. */
    #define FIXNET_SPIN_NS 20000
    #if defined(__x86_64__) || defined(__i386__)
    #define FIXNET_PAUSE() __builtin_ia32_pause()
    #elif defined(__aarch64__)
    #define FIXNET_PAUSE() __asm__ __volatile__("yield")
    #else
    #define FIXNET_PAUSE() ((void)0)
    #endif

    static int64_t fixnet_now_ns(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
    }

    /* Poll until (*value == ref) == until_equal, or FIXNET_SPIN_NS pass (then 0). */
    static int fixnet_spin(unsigned long* value, unsigned long ref, int until_equal) {
        int64_t start = fixnet_now_ns();
        for (;;) {
            int i;
            for (i = 0; i < 16; i++) {
                if ((__atomic_load_n(value, __ATOMIC_ACQUIRE) == ref) == until_equal)
                    return 1;
                FIXNET_PAUSE();
            }
            if (fixnet_now_ns() - start > FIXNET_SPIN_NS)
                return 0;
        }
    }

    /* The process's worker threads. `mu` guards the fields below it; `owner` is held by the
       pass that uses the workers (taken with trylock: a second pass never waits for it). */
    typedef struct {
        pthread_mutex_t owner;
        pthread_mutex_t mu;
        pthread_cond_t wake;          /* a new job (generation) for the workers */
        pthread_cond_t done;          /* the last chunk of a job is done */
        int n_workers;                /* started, ids 1..n_workers */
        unsigned long generation;     /* counts jobs */
        unsigned long seen[FIXNET_MAX_WORKERS + 1];   /* per worker: the last job it saw */
        fixnet_tasks_fn fn;           /* the job: tasks [0, n_tasks) of call, in n_chunks */
        void* call;
        Py_ssize_t n_tasks;
        int n_chunks;
        int next_chunk;               /* the first chunk nobody has taken yet */
        unsigned long running;        /* chunks taken by workers and not finished */
        int helpers;                  /* workers (ids 1..helpers) asked to help */
        int atfork_set;
    } fixnet_pool_t;

    static fixnet_pool_t fixnet_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                                        PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

    /* Chunks of one job per thread taking part: more than one, so that a thread the OS
       runs late (a busy machine) leaves its share to the others instead of stalling them. */
    #define FIXNET_CHUNKS_PER_THREAD 4

    /* With p->mu held: run chunks of the current job until none is left (unlocking around
       each). Chunk c is tasks [n_tasks c / n_chunks, n_tasks (c + 1) / n_chunks): which
       thread runs a chunk never changes what it computes. */
    static void fixnet_take_chunks(fixnet_pool_t* p, int worker) {
        while (p->next_chunk < p->n_chunks) {
            int c = p->next_chunk++;
            fixnet_tasks_fn fn = p->fn;
            void* call = p->call;
            Py_ssize_t first = p->n_tasks * c / p->n_chunks;
            Py_ssize_t last = p->n_tasks * (c + 1) / p->n_chunks;
            if (worker)
                __atomic_add_fetch(&p->running, 1, __ATOMIC_RELAXED);
            pthread_mutex_unlock(&p->mu);
            if (last > first)
                fn(call, first, last);
            pthread_mutex_lock(&p->mu);
            if (worker && __atomic_sub_fetch(&p->running, 1, __ATOMIC_RELEASE) == 0
                    && p->next_chunk >= p->n_chunks)
                pthread_cond_signal(&p->done);
        }
    }

    static void* fixnet_worker(void* arg) {
        fixnet_pool_t* p = &fixnet_pool;
        int id = (int)(intptr_t)arg;
        sigset_t all;
        sigfillset(&all);             /* signals are for the Python threads */
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        pthread_mutex_lock(&p->mu);
        for (;;) {
            if (p->generation == p->seen[id]) {
                unsigned long seen = p->seen[id];
                pthread_mutex_unlock(&p->mu);
                fixnet_spin(&p->generation, seen, 0);
                pthread_mutex_lock(&p->mu);
                while (p->generation == p->seen[id])
                    pthread_cond_wait(&p->wake, &p->mu);
            }
            p->seen[id] = p->generation;
            if (id <= p->helpers)
                fixnet_take_chunks(p, 1);
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
        p->n_chunks = p->next_chunk = p->running = p->helpers = 0;
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

    /* With the pool taken: tasks [0, n_tasks) of call, run by the calling thread and
       n_parts - 1 workers (n_parts - 1 <= workers), in chunks taken in turn; returns when
       every chunk is done (the barrier). */
    static void fixnet_pool_run(fixnet_tasks_fn fn, void* call, Py_ssize_t n_tasks,
                                int n_parts) {
        fixnet_pool_t* p = &fixnet_pool;
        Py_ssize_t chunks = (Py_ssize_t)n_parts * FIXNET_CHUNKS_PER_THREAD;
        pthread_mutex_lock(&p->mu);
        p->fn = fn;
        p->call = call;
        p->n_tasks = n_tasks;
        p->n_chunks = (int)(chunks < n_tasks ? chunks : n_tasks);
        p->next_chunk = 0;
        p->running = 0;
        p->helpers = n_parts - 1;
        __atomic_add_fetch(&p->generation, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&p->wake);
        fixnet_take_chunks(p, 0);
        if (__atomic_load_n(&p->running, __ATOMIC_ACQUIRE)) {
            pthread_mutex_unlock(&p->mu);
            fixnet_spin(&p->running, 0, 1);
            pthread_mutex_lock(&p->mu);
            while (p->running)
                pthread_cond_wait(&p->done, &p->mu);
        }
        pthread_mutex_unlock(&p->mu);
    }
    #endif
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
