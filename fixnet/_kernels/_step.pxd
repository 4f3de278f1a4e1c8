# cython: language_level=3
"""The one protocol between a kernel's Call object and whoever runs it (see _step.pyx)."""


cdef class KernelCall:
    # Tasks [0, n_tasks) make the whole call (1 for a call that is not split; 0 for an
    # empty one). splittable: disjoint ranges of tasks may run on different threads at once.
    cdef readonly Py_ssize_t n_tasks
    cdef readonly bint splittable
    # The call's work over the work at which releasing the GIL pays (each module's
    # NOGIL_MIN_* threshold): at >= 1 a call releases it; the pass sums it over its steps.
    cdef readonly double work_share

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil
