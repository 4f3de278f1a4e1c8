"""pytest-benchmark timings of fixnet's predict on the committed ``models/mlp_*.h5`` fixtures.

    python -m pytest bench/ --benchmark-only
    python -m pytest bench/ --benchmark-only --benchmark-group-by=group --benchmark-sort=mean

Three ways of running each model, at batch 1 and batch 256:

* ``float_reference``: ``fm.predict(x)``, the NumPy float reference executor;
* ``int8_float_io``:   ``qm.predict(x)``, float32 in -> int8 Cython kernels -> float32 out;
* ``int8_int8_io``:    ``qm.predict(x_q, output="int8")``, int8 in and out, no float at all.

Benchmarks are grouped by model and batch size, so each group compares the three. Speed is
reported, never asserted; the only checks are on output shapes and dtypes. For the same
models timed against TensorFlow Lite, Keras and ONNX Runtime in one run, see ``peers.py``.
"""
import pathlib

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

MODELS_DIR = pathlib.Path(__file__).resolve().parent.parent / "models"
MODEL_NAMES = sorted(p.stem for p in MODELS_DIR.glob("mlp_*.h5"))
BATCH_SIZES = (1, 256)

if not MODEL_NAMES:  # pragma: no cover - the fixtures are committed
    pytest.skip(f"no models/mlp_*.h5 fixtures in {MODELS_DIR}", allow_module_level=True)

models = pytest.mark.parametrize("model_name", MODEL_NAMES)
batches = pytest.mark.parametrize("batch", BATCH_SIZES, ids=lambda n: f"batch{n}")


def _label(benchmark, m, batch, mode):
    benchmark.group = f"{m.name} batch {batch}"
    benchmark.extra_info.update(model=m.name, batch=batch, mode=mode)


@models
@batches
def test_float_reference(benchmark, fixture_models, model_name, batch):
    m = fixture_models(model_name)
    _label(benchmark, m, batch, "float_reference")
    y = benchmark(m.float_model.predict, m.x_float[batch])
    assert y.shape == (batch, 10) and y.dtype == np.float32


@models
@batches
def test_int8_float_io(benchmark, fixture_models, model_name, batch):
    m = fixture_models(model_name)
    _label(benchmark, m, batch, "int8_float_io")
    y = benchmark(m.int8_model.predict, m.x_float[batch])
    assert y.shape == (batch, 10) and y.dtype == np.float32


@models
@batches
def test_int8_int8_io(benchmark, fixture_models, model_name, batch):
    m = fixture_models(model_name)
    _label(benchmark, m, batch, "int8_int8_io")
    y = benchmark(m.int8_model.predict, m.x_int8[batch], output="int8")
    assert y.shape == (batch, 10) and y.dtype == np.int8
