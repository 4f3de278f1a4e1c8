# cython: language_level=3
"""The protocol between the kernel Call objects and the pass (fixnet/_kernels/_pass.pyx).

A planned model is a list of Call objects (DenseCall, Conv2dCall, ...), each bound to its
buffers. Calling one from Python runs it; the pass runs them all in one C loop instead, with
no Python between layers and the GIL released once. For that every Call class has a method

    def step_entry(self):
        return step_entry(_run_dense, _run_dense_tasks, self.n_tasks, work_share)

giving the pass, as integers (the pass keeps the object alive as long as it uses them):

* ``run``: ``void run(void* call) noexcept nogil``, the module-level C function that runs
  the whole call: ``call`` is the Call object itself (a borrowed ``PyObject*``), cast back
  to its class inside, so the function comes from the instance's own module (each ISA build
  has its own copy of the module and of its classes).
* ``run_tasks`` (or NULL): ``void run_tasks(void* call, Py_ssize_t first, Py_ssize_t last)
  noexcept nogil`` computing only tasks [first, last) of the ``n_tasks`` the call splits
  into (blocks of output channels or rows). Task ranges touch disjoint parts of the output
  and no shared mutable scratch, so ranges may run on different threads at once, and the
  result is the same bits for any split.
* ``n_tasks``: how many tasks (0 or 1: the call is not split).
* ``share``: the call's work as a fraction of the work at which releasing the GIL pays
  (each module's NOGIL_MIN_* threshold): the pass sums it over its steps to decide once.

Both functions take no lock and touch no Python object, so they run without the GIL.
"""

ctypedef void (*step_run_t)(void* call) noexcept nogil
ctypedef void (*step_tasks_t)(void* call, Py_ssize_t first, Py_ssize_t last) noexcept nogil


cdef inline tuple step_entry(step_run_t run, step_tasks_t run_tasks, Py_ssize_t n_tasks,
                             double share):
    """(run address, run_tasks address or 0, n_tasks, share): see the module docstring."""
    return (<size_t><void*>run, <size_t><void*>run_tasks if run_tasks != NULL else 0,
            n_tasks if run_tasks != NULL else 0, share)
