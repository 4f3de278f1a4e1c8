"""Does a call release the GIL? Measured with a second Python thread (the probe).

While the call runs, the interpreter's switch interval is set to 1000 s, so no thread is ever
forced to give up the GIL: the probe thread can run Python code only when the calling thread
releases the GIL itself (a kernel's ``with nogil``, or a blocking call). The probe sleeps 0.5 ms
between steps (so the caller always gets the GIL back when it wants it) and counts the steps
it makes while the call runs.

So if the call holds the GIL from start to end, the probe makes exactly 0 steps, whatever the
load of the machine; if the call releases it, the probe steps whenever the OS gives it a core.
"""
import sys
import threading
import time

PROBE_SLEEP = 0.0005
NO_SWITCH = 1000.0


def steps_while(fn):
    """Steps the probe thread made while ``fn()`` ran (see the module docstring)."""
    state = {"inside": False, "stop": False, "steps": 0}

    def probe():
        while not state["stop"]:
            if state["inside"]:
                state["steps"] += 1
            time.sleep(PROBE_SLEEP)   # releases the GIL

    thread = threading.Thread(target=probe, name="gil-probe", daemon=True)
    old = sys.getswitchinterval()
    sys.setswitchinterval(NO_SWITCH)
    try:
        thread.start()
        time.sleep(0.005)             # the probe is in its loop
        state["inside"] = True        # from here to "inside = False" this thread keeps the
        fn()                          # GIL unless fn releases it
        state["inside"] = False
        steps = state["steps"]
    finally:
        state["stop"] = True
        sys.setswitchinterval(old)
        thread.join()
    return steps


def gil_released_by(fn, attempts=3):
    """The most steps the probe made while ``fn()`` ran, over up to ``attempts`` runs (stopping
    at the first with steps): > 0 only if fn released the GIL. A run can show 0 on a
    heavily loaded machine only if the probe never got a core while fn ran, hence retries."""
    best = 0
    for _ in range(attempts):
        best = max(best, steps_while(fn))
        if best:
            break
    return best


def hold_the_gil(seconds):
    """Pure Python busy work (holds the GIL; for the probe's own test)."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n
