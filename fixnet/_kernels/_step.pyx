# cython: language_level=3
"""KernelCall: the base of every kernel's Call object (DenseCall, Conv2dCall, AddCall, ...).

A Call is one kernel bound to its buffers, with its arguments checked and its constants made
once, at plan time. Every Call is run the same way, through one virtual C method:

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil

computes tasks [first, last) of the ``n_tasks`` the call is cut into (tiles of output pixels,
bands of rows, blocks of channels; a call that is not split has one task). It takes no lock
and touches no Python object, so it runs without the GIL. Where ``splittable`` is true, task
ranges touch disjoint parts of the output and no shared mutable scratch: ranges may run on
different threads at once and give the same bits for any split.

* From Python, ``call()`` runs every task (releasing the GIL when ``work_share >= 1``) and
  ``call.run_tasks(first, last)`` runs a range (tests; it checks the range).
* The pass (fixnet/_kernels/_pass.pyx) keeps each Call's address and calls ``run_range``
  from its C loop, or hands ranges of a splittable call to its threads; no Python between
  layers. There is no per-kernel glue: a subclass defines ``run_range`` and sets the three
  fields in its ``__init__``.

Each ISA build of a kernel module (fixnet/_kernels/isa_*/) subclasses this one base, so the
method the pass calls is always the build the Call was made from.
"""
cimport cython


@cython.auto_pickle(False)
cdef class KernelCall:
    """Base of the kernel Call objects: see the module docstring. Not used alone."""

    def __cinit__(self, *args, **kwargs):
        if type(self) is KernelCall:
            raise TypeError("KernelCall is the base of the kernel Call objects; make one of "
                            "those (DenseCall, Conv2dCall, ...)")

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        pass

    def __call__(self):
        """Run the whole call on what its input buffers hold now; writes all of its output."""
        # (Cython's `with nogil(condition)` takes compile-time conditions only.)
        if self.work_share >= 1.0:
            with nogil:
                self.run_range(0, self.n_tasks)
        else:
            self.run_range(0, self.n_tasks)

    def run_tasks(self, Py_ssize_t first, Py_ssize_t last):
        """Run tasks [first, last) of n_tasks, without the GIL (for tests: any split, in any
        order or from several threads at once, must give the bits of one call)."""
        if not 0 <= first <= last <= self.n_tasks:
            raise ValueError(f"{type(self).__name__}: task range [{first}, {last}) is not "
                             f"within [0, n_tasks = {self.n_tasks}]")
        if first < last:
            with nogil:
                self.run_range(first, last)
