"""Shared fixtures for the fixnet benchmarks (not part of the default test run).

Run with ``python -m pytest bench/ --benchmark-only`` (needs pytest-benchmark:
``pip install '.[bench]'``). Each ``models/mlp_*.h5`` fixture is loaded and quantized once
per session; the benchmarks then time only ``predict``.

NumPy's BLAS (used by the float reference) is limited to FIXNET_BENCH_THREADS threads,
default 1, like every runtime in peers.py: fixnet's int8 kernels are single-threaded, and a
2-thread OpenBLAS on a shared 2-core machine turned batch-256 float timings bimodal
(0.12 ms or 8 ms per call).
"""
import os
import pathlib
import sys

BENCH_THREADS = os.environ.get("FIXNET_BENCH_THREADS", "1")
if "numpy" not in sys.modules:  # BLAS reads these once, when NumPy is first imported
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, BENCH_THREADS)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

MODELS_DIR = pathlib.Path(__file__).resolve().parent.parent / "models"
BATCH_SIZES = (1, 256)


def _use_installed_fixnet_unless_built_in_place():
    """``python -m pytest`` puts the checkout first on sys.path, and its ``fixnet/`` has no
    compiled kernels after a plain ``pip install '.[bench]'`` (they are in site-packages).
    Then drop the checkout from sys.path so the installed fixnet is imported. An in-place
    build (``pip install -e .``, ``python setup.py build_ext --inplace``) is used as is."""
    from importlib.machinery import EXTENSION_SUFFIXES

    repo = MODELS_DIR.parent
    kernels = repo / "fixnet" / "_kernels"
    built = any((kernels / (pyx.stem + suffix)).exists()
                for pyx in kernels.glob("_*.pyx") for suffix in EXTENSION_SUFFIXES)
    if not built and "fixnet" not in sys.modules:
        sys.path[:] = [p for p in sys.path if pathlib.Path(p or os.curdir).resolve() != repo]


_use_installed_fixnet_unless_built_in_place()


class LoadedModel:
    """One fixture model: float model, int8 model, and inputs cut to each batch size."""

    def __init__(self, name):
        import fixnet

        data = np.load(MODELS_DIR / f"{name}.npz")
        self.name = name
        self.float_model = fixnet.load(str(MODELS_DIR / f"{name}.h5"))
        self.int8_model = self.float_model.quantize(data["x_calib"])
        x_test = np.ascontiguousarray(data["x_test"], np.float32)
        in_qp = self.int8_model.input_qparams[0]
        self.x_float = {}   # batch size -> float32 (batch,) + input shape
        self.x_int8 = {}    # batch size -> the same, quantized with the model's input qparams
        for n in BATCH_SIZES:
            x = _take_rows(x_test, n)
            self.x_float[n] = x
            self.x_int8[n] = np.ascontiguousarray(in_qp.quantize(x))


def _take_rows(x, n):
    """The first n test samples (cycled if the test set is smaller than n)."""
    reps = -(-n // x.shape[0])
    return np.ascontiguousarray(np.concatenate([x] * reps)[:n])


@pytest.fixture(scope="session", autouse=True)
def _limit_blas_threads():
    """The same limit when NumPy was imported before this file (needs threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=int(BENCH_THREADS), user_api="blas"):
        yield


@pytest.fixture(scope="session")
def fixture_models():
    """name -> LoadedModel, built on first use (loading and quantizing are not timed)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = LoadedModel(name)
        return cache[name]

    return get
