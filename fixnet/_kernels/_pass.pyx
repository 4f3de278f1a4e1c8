# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""One pass of a QuantizedModel over an arena, predict's fast path, and the threads that split
large layers, in C. Private: fixnet.runtime plans the arenas and pools them.

An ``Arena`` is everything planned for one batch size: the int8 buffers (views into one
block, laid out by fixnet/memory_plan.py), the kernel Call objects bound to them (each owns
the scratch space it needs), and the float boundaries (an InputStage per input, an
OutputStage per output and dtype). An arena is used by one pass at a time; concurrent passes
take different arenas from the pool of their batch size.

The pass (``Arena.run``) is one C loop over a flat array of step records, one per Call: the
Call object, whose ``run_range`` the loop calls (see _step.pyx), no Python between layers and
no allocation. The GIL is released once for the whole loop when the plan's work is worth it
(the sum of the calls' work shares, each the call's work over its module's threshold, is at
least 1), else the loop runs holding it: a small MLP at batch 1 pays no GIL round trip per
layer. A step whose call is Python only (a NumPy copy) splits the loop into C segments; each
segment decides for itself.

Threads inside one pass (``num_threads`` > 1): a small pool of native threads (pthreads),
started on first use, shared by the process. A pass that wants them takes the pool (if
another pass holds it, this one runs on its own thread: never a wait); a step whose call has
tasks (``n_tasks``, ``splittable``) is split into p parts only when the thread policy says
its multiply-adds pay for waking p - 1 workers (see "the thread policy" below and
fixnet/thread_policy.py, which measures it at the first pass that wants threads). A split
step is cut into 4 * p contiguous chunks of tasks, which the calling thread and p - 1
workers take in turn, with a barrier at the end of the step; other steps run on the calling
thread. (Chunks rather than one range per thread: on a busy machine a worker the OS runs
late leaves its share to the others instead of stalling the step.) Tasks write disjoint
outputs and share no scratch, so results are the same bits for every ``num_threads`` and
whichever thread runs a chunk. A child process made by fork() starts with an empty pool
(pthread_atfork resets it), whatever the parent's threads were doing.

The profile (``Arena.time_steps``, for fixnet/profile.py) times each call alone with a
monotonic clock, in C, and then the whole pass, round after round.

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

from fixnet._kernels._step cimport KernelCall

ctypedef void (*tasks_fn)(void* call, Py_ssize_t first, Py_ssize_t last) noexcept nogil

cdef extern from *:
    """
    #if defined(_WIN32)
    #include <windows.h>
    /* A monotonic clock in nanoseconds (the profile's timer). */
    static long long fixnet_clock_ns(void) {
        LARGE_INTEGER t, f;
        QueryPerformanceCounter(&t);
        QueryPerformanceFrequency(&f);
        return (long long)((double)t.QuadPart * 1e9 / (double)f.QuadPart);
    }
    #else
    #include <time.h>
    static long long fixnet_clock_ns(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (long long)t.tv_sec * 1000000000 + t.tv_nsec;
    }
    #endif
    """
    long long clock_ns "fixnet_clock_ns"() noexcept nogil

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
    static long long fixnet_pool_probe(int n_parts, int cold) {
        (void)n_parts; (void)cold; return 0;
    }
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

    /* The calibration's probe job: each task notes its arrival, then waits until `want`
       tasks have arrived (or `limit_ns` have passed), so that every task of the job is run
       by a different thread and the job ends when the last thread has joined in. */
    typedef struct { int arrived; int want; int64_t limit_ns; } fixnet_probe_t;

    static void fixnet_probe_task(void* arg, Py_ssize_t first, Py_ssize_t last) {
        fixnet_probe_t* probe = (fixnet_probe_t*)arg;
        int64_t start = fixnet_now_ns();
        __atomic_add_fetch(&probe->arrived, (int)(last - first), __ATOMIC_ACQ_REL);
        while (__atomic_load_n(&probe->arrived, __ATOMIC_ACQUIRE) < probe->want
               && fixnet_now_ns() - start < probe->limit_ns)
            FIXNET_PAUSE();
    }

    /* With the pool taken and at least n_parts - 1 workers: nanoseconds of one job on
       n_parts threads that does nothing but wait for every thread to join in, i.e. what
       waking the workers and the barrier cost a split step. cold: first sleep long enough
       for the workers to stop polling and sleep (the first split step of a pass finds them
       so); else they are still polling after the previous job. */
    static long long fixnet_pool_probe(int n_parts, int cold) {
        fixnet_probe_t probe = {0, n_parts, 2000000};
        int64_t start;
        if (cold) {
            struct timespec nap = {0, 4 * FIXNET_SPIN_NS};
            nanosleep(&nap, NULL);
        }
        start = fixnet_now_ns();
        fixnet_pool_run(fixnet_probe_task, &probe, n_parts, n_parts);
        return (long long)(fixnet_now_ns() - start);
    }
    #endif
    """
    int MAX_WORKERS "FIXNET_MAX_WORKERS"
    long long pool_probe "fixnet_pool_probe"(int n_parts, int cold) noexcept nogil
    bint pool_acquire "fixnet_pool_acquire"() noexcept nogil
    void pool_release "fixnet_pool_release"() noexcept nogil
    int pool_grow "fixnet_pool_grow"(int want) noexcept nogil
    void pool_run "fixnet_pool_run"(tasks_fn fn, void* call, Py_ssize_t n_tasks,
                                    int n_parts) noexcept nogil

# The most threads one pass may use (predict checks num_threads against it).
MAX_THREADS = MAX_WORKERS + 1


# -- when a step is split: the thread policy ---------------------------------------------------
#
# A step is split into p parts only when each part has at least min_part_macs[p]
# multiply-adds: the work the fastest kernel does in the time p - 1 sleeping workers take to
# wake and join a step and pass its barrier (fixnet/thread_policy.py measures both at the
# first use of threads, with pool_wake_cost). Each thread then computes for at least as long as waking the
# workers costs. p * min_part_macs[p] never decreases with p, so a step worth p parts is worth
# fewer too: a record's max_parts is the most it takes, and a pass on t threads splits it into
# min(t, max_parts). Steps without multiply-adds (their Call's MACs are 0) are never split.
# Until a policy is set (policy_threads = 0), a pass asks the calibrator for one (with the
# GIL, before taking the pool) and runs on the calling thread alone if there is none; it asks
# again when the policy is older than its max_age, or covers fewer threads than it wants
# while the process has more CPUs.

cdef int policy_threads = 0                 # 0: no policy yet; else the most parts of a step
cdef int policy_cpus = 0                    # the CPUs the process may use (when it was set)
cdef long long policy_expires_ns = 0        # clock_ns() after which a pass asks again
cdef unsigned int policy_passes = 0         # passes that wanted threads (the clock is read
                                            # every 64th: a small model's pass is a microsecond)
cdef enum:
    POLICY_SLOTS = 66                       # >= MAX_WORKERS + 2 (checked at import)
cdef double min_part_macs[POLICY_SLOTS]     # [p]: the least multiply-adds of each of p parts
if MAX_WORKERS + 2 > POLICY_SLOTS:
    raise ImportError("fixnet._kernels._pass: POLICY_SLOTS is smaller than MAX_WORKERS + 2")
cdef unsigned long policy_version = 0       # changes with the policy (arenas recompute parts)
cdef object policy_calibrator = None        # runtime's f(num_threads): sets a policy, or not


def set_thread_policy(int threads, min_macs_per_part, int cpus=0, double max_age=float("inf")):
    """Set the policy (see above): ``threads`` >= 1, the most parts a step may be split into;
    ``min_macs_per_part[p]`` for p in 2..threads (a sequence indexed by p; entries 0 and 1
    are ignored): the least multiply-adds of each part of a step split into p parts; ``cpus``:
    the CPUs this process may use (0: ``threads``). A pass that wants more threads than
    ``threads`` asks the calibrator again only while ``threads`` < ``cpus``. ``max_age``:
    seconds after which the next pass that wants threads asks the calibrator again (the
    machine's load changes)."""
    global policy_threads, policy_version, policy_cpus, policy_expires_ns
    cdef int p
    cdef double least = 0
    if not 1 <= threads <= MAX_WORKERS + 1:
        raise ValueError(f"set_thread_policy: threads = {threads}, not in [1, {MAX_WORKERS + 1}]")
    if threads > 1 and len(min_macs_per_part) < threads + 1:
        raise ValueError(f"set_thread_policy: min_macs_per_part needs entries up to {threads}")
    values = [float(min_macs_per_part[p]) for p in range(2, threads + 1)]
    for p, v in enumerate(values, 2):
        if not v >= 0:
            raise ValueError(f"set_thread_policy: min_macs_per_part[{p}] is "
                             f"{min_macs_per_part[p]!r}, not a number >= 0")
    for p in range(POLICY_SLOTS):
        min_part_macs[p] = float("inf")
    for p, v in enumerate(values, 2):
        least = max(least, p * v)   # p * m[p] non-decreasing: a step worth p parts is worth fewer
        min_part_macs[p] = least / p
    policy_threads = threads
    policy_cpus = cpus if cpus > threads else threads
    policy_expires_ns = (clock_ns() + <long long>(max_age * 1e9) if max_age < 1e9
                         else 0x7fffffffffffffff)
    policy_version += 1


def thread_policy():
    """(threads, [min_macs_per_part[p] for p in 0..threads]) of the policy in use, or None
    before one is set."""
    if policy_threads == 0:
        return None
    return policy_threads, [float(min_part_macs[p]) if p >= 2 else float("inf")
                            for p in range(policy_threads + 1)]


def clear_thread_policy():
    """Forget the policy: the next pass that wants threads asks the calibrator again."""
    global policy_threads, policy_version
    policy_threads = 0
    policy_version += 1


def set_thread_calibrator(calibrator):
    """``calibrator(num_threads)``: called (with the GIL) by a pass that wants threads while
    no policy is set, or one set for fewer threads than it wants while more CPUs may be
    usable; it sets a policy with set_thread_policy, or leaves it (that pass then runs on
    its calling thread). None: no calibrator."""
    global policy_calibrator
    policy_calibrator = calibrator


def pool_wake_cost(int n_parts, int trials, bint cold):
    """Nanoseconds of ``trials`` probe jobs on ``n_parts`` threads (see fixnet_pool_probe),
    or [] if the pool is in use by a pass or cannot start the workers."""
    cdef list out = []
    cdef int i
    cdef long long ns
    if n_parts < 2 or not pool_acquire():
        return out
    try:
        if pool_grow(n_parts - 1) >= n_parts - 1:
            for i in range(trials):
                with nogil:
                    ns = pool_probe(n_parts, cold)
                out.append(ns)
    finally:
        pool_release()
    return out


ctypedef struct StepRecord:
    void* call                # the KernelCall (kept alive by Arena.calls); NULL: a Python
                              # call (calls[i]())
    Py_ssize_t n_tasks
    bint splittable
    double share
    double macs               # multiply-adds of the call (0: never split)
    int max_parts             # the most parts the policy splits it into (1: never split)

ctypedef struct Segment:      # calls [start, stop): C records only
    Py_ssize_t start, stop
    bint release_gil          # its work is worth releasing the GIL for
    bint parallel             # it has a step worth splitting over threads


cdef inline int step_parts(const StepRecord* r, int threads) noexcept nogil:
    """How many parts a pass on ``threads`` threads splits the step into (1: not split)."""
    return threads if threads < r.max_parts else r.max_parts


cdef int policy_parts(const StepRecord* r) noexcept nogil:
    """The most parts the policy splits the step into (1: never split)."""
    cdef Py_ssize_t p
    if r.call == NULL or not r.splittable or r.n_tasks < 2 or not r.macs > 0:
        return 1
    p = r.n_tasks if r.n_tasks < policy_threads else policy_threads
    while p > 1 and r.macs < p * min_part_macs[p]:
        p -= 1
    return <int>p if p > 1 else 1


cdef void run_call_range(void* call, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    """What a pool thread runs: tasks [first, last) of a KernelCall."""
    (<KernelCall>call).run_range(first, last)


cdef void run_records(const StepRecord* records, Py_ssize_t start, Py_ssize_t stop,
                      int threads) noexcept nogil:
    cdef Py_ssize_t i
    cdef const StepRecord* r
    cdef int parts
    for i in range(start, stop):
        r = &records[i]
        parts = step_parts(r, threads)
        if parts > 1:
            pool_run(run_call_range, r.call, r.n_tasks, parts)
        else:
            (<KernelCall>r.call).run_range(0, r.n_tasks)


@cython.final
@cython.auto_pickle(False)
cdef class Arena:
    """Buffers, kernel calls and float boundaries planned for one batch size (see above).

    bufs: tensor name -> int8 array (views into one block); calls: the kernel Call objects
    (or zero-argument Python callables), in order; loads: an InputStage per model input;
    float_stores, int8_stores: an OutputStage per output; nbytes: bytes of the block;
    macs: per call, its multiply-adds (fixnet.cost, the whole batch; None: all 0, so no
    step is ever split over threads)."""
    cdef readonly dict bufs
    cdef readonly tuple calls, loads, float_stores, int8_stores
    cdef readonly object load           # loads[0] if the model has one input, else None
    cdef readonly Py_ssize_t nbytes     # bytes of the buffers' memory
    cdef StepRecord* records
    cdef Segment* segments
    cdef Py_ssize_t n_calls, n_segments
    cdef bint splittable                # some step has tasks and multiply-adds
    cdef bint parallel                  # some step is split under the policy in use
    cdef unsigned long version          # the policy_version max_parts were computed for

    def __init__(self, dict bufs not None, calls, loads, float_stores, int8_stores,
                 Py_ssize_t nbytes, macs=None):
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
        macs = [0] * n if macs is None else list(macs)
        if len(macs) != n:
            raise ValueError(f"Arena: {len(macs)} MAC counts for {n} calls")
        PyMem_Free(self.records)
        PyMem_Free(self.segments)
        self.records = <StepRecord*>PyMem_Malloc(max(n, 1) * sizeof(StepRecord))
        self.segments = <Segment*>PyMem_Malloc(max(n, 1) * sizeof(Segment))
        if self.records == NULL or self.segments == NULL:
            raise MemoryError()
        self.n_calls = n
        self.n_segments = 0
        self.splittable = False
        seg = NULL
        for i, call in enumerate(self.calls):
            r = &self.records[i]
            r.macs = float(macs[i])
            r.max_parts = 1
            if not isinstance(call, KernelCall):
                r.call = NULL
                r.n_tasks = 0
                r.splittable = False
                r.share = 0
                seg = NULL
                continue
            r.call = <void*>call
            r.n_tasks = (<KernelCall>call).n_tasks
            r.splittable = (<KernelCall>call).splittable
            r.share = (<KernelCall>call).work_share
            if seg == NULL:
                seg = &self.segments[self.n_segments]
                self.n_segments += 1
                seg.start, seg.stop, seg.release_gil, seg.parallel = i, i, False, False
            seg.stop = i + 1
            if r.splittable and r.n_tasks > 1 and r.macs > 0:
                self.splittable = True
        for i in range(self.n_segments):    # (the shares summed per segment)
            seg = &self.segments[i]
            seg.release_gil = sum_shares(self.records, seg.start, seg.stop) >= 1.0
        self.update_parts()

    def __dealloc__(self):
        PyMem_Free(self.records)
        PyMem_Free(self.segments)

    cdef void update_parts(self) noexcept:
        """Each record's max_parts, and the segments' parallel flags, under the policy in use."""
        cdef Py_ssize_t i, s
        cdef Segment* seg
        self.parallel = False
        for i in range(self.n_calls):
            self.records[i].max_parts = policy_parts(&self.records[i]) if policy_threads else 1
            if self.records[i].max_parts > 1:
                self.parallel = True
        for s in range(self.n_segments):
            seg = &self.segments[s]
            seg.parallel = False
            for i in range(seg.start, seg.stop):
                if self.records[i].max_parts > 1:
                    seg.parallel = True
        self.version = policy_version

    def stores(self, bint as_float):
        return self.float_stores if as_float else self.int8_stores

    @property
    def segment_count(self):
        """C segments of the pass (Python-only calls split it; for tests)."""
        return self.n_segments

    @property
    def parallel_calls(self):
        """Indices into calls of the steps split over threads when num_threads > 1, under
        the thread policy in use (none before a policy is set)."""
        if self.version != policy_version:
            self.update_parts()
        return [i for i in range(self.n_calls) if self.records[i].max_parts > 1]

    def parts(self, Py_ssize_t num_threads):
        """Per call, how many parts a pass with ``num_threads`` splits it into over threads
        under the thread policy in use (1: run whole on the calling thread)."""
        cdef int threads = <int>(num_threads if num_threads <= MAX_WORKERS + 1 else MAX_WORKERS + 1)
        if self.version != policy_version:
            self.update_parts()
        return [step_parts(&self.records[i], threads) for i in range(self.n_calls)]

    @property
    def call_macs(self):
        """Per call, the multiply-adds the split decisions count (the ``macs`` given)."""
        return [self.records[i].macs for i in range(self.n_calls)]

    def run(self, Py_ssize_t num_threads=1):
        """Run every kernel call on what the input buffers hold now (one pass, see above)."""
        self.run_pass(num_threads)

    cdef int run_pass(self, Py_ssize_t num_threads) except -1:
        cdef int threads = self.take_threads(num_threads)
        try:
            self.run_segments(threads)
        finally:
            if threads > 1:
                pool_release()
        return 0

    cdef int take_threads(self, Py_ssize_t num_threads) except -1:
        """The threads a pass of this arena runs on: 1, or (the pool taken: release it after
        the pass) 1 + the pool's workers, at most num_threads and the policy's threads."""
        global policy_passes
        cdef int threads
        if num_threads < 2 or not self.splittable:
            return 1
        policy_passes += 1
        if (policy_calibrator is not None
                and (policy_threads == 0
                     or (policy_threads < num_threads and policy_threads < policy_cpus)
                     or (policy_passes % 64 == 0 and clock_ns() > policy_expires_ns))):
            policy_calibrator(num_threads)
        if self.version != policy_version:
            self.update_parts()
        if not self.parallel:
            return 1
        if num_threads > policy_threads:
            num_threads = policy_threads
        if pool_acquire():
            threads = 1 + pool_grow(<int>num_threads - 1)
            if threads > 1:
                return threads
            pool_release()
        return 1

    def time_steps(self, long long[:, ::1] out not None, Py_ssize_t num_threads=1):
        """The profile's clock (fixnet/profile.py): for each round r (a row of ``out``, int64
        [rounds, len(calls) + 1]), out[r, i] = nanoseconds of call i run alone, on whatever
        its buffers hold, as the pass runs it (split over threads as a pass with
        ``num_threads`` would split it); then out[r, len(calls)] = nanoseconds of a whole
        pass. Rounds interleave the calls, so drift of the machine hits every call alike.
        The GIL is released around each kernel call (outside the timed span)."""
        cdef Py_ssize_t r, i, n = self.n_calls
        cdef long long t0
        cdef int threads
        if out.shape[1] != n + 1:
            raise ValueError(f"time_steps: out has {out.shape[1]} columns, not {n + 1}")
        for r in range(out.shape[0]):
            threads = self.take_threads(num_threads)
            try:
                for i in range(n):
                    if self.records[i].call == NULL:
                        call = self.calls[i]
                        t0 = clock_ns()
                        call()
                        out[r, i] = clock_ns() - t0
                    else:
                        with nogil:
                            t0 = clock_ns()
                            run_records(self.records, i, i + 1, threads)
                            out[r, i] = clock_ns() - t0
            finally:
                if threads > 1:
                    pool_release()
            t0 = clock_ns()
            self.run_pass(num_threads)
            out[r, n] = clock_ns() - t0

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
