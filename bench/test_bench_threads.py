"""pytest-benchmark: one QuantizedModel shared by 1 and by 2 Python threads, batch 1.

    python -m pytest bench/test_bench_threads.py --benchmark-only
    python bench/threads.py            # the same workload, rounds interleaved, prints the ratio

Each benchmark round runs the same workload (CALLS batch-1 ``predict`` calls on a convnet
fixture) on 1 thread or split between 2 threads started together; both are in one group, so
the ratio of their times is the 2-thread throughput gain (about 2 on 2 free cores if the
kernels release the GIL, at most 1 if they did not). Speed is reported, never asserted.
"""
import pathlib
import sys

import pytest

pytest.importorskip("pytest_benchmark")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import threads as workload  # noqa: E402  (bench/threads.py)

MODELS = ("resnet_small_k3", "cnn_digits_k3")
CALLS = 200


@pytest.fixture(scope="module")
def loaded():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = workload.load_model(name)
        return cache[name]

    return get


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("output", ["float32", "int8"])
@pytest.mark.parametrize("n_threads", [1, 2], ids=lambda n: f"{n}thread")
def test_batch1_throughput(benchmark, loaded, model_name, output, n_threads):
    qm, xs = loaded(model_name)
    workload.run_calls(qm, xs[output], output, CALLS // 4, 2)     # arenas for both threads
    benchmark.group = f"{model_name} batch 1 {output} in/out, {CALLS} calls: 1 vs 2 threads"
    benchmark.extra_info.update(model=model_name, threads=n_threads, calls=CALLS, output=output)
    seconds = benchmark.pedantic(workload.run_calls,
                                 args=(qm, xs[output], output, CALLS, n_threads),
                                 rounds=10, warmup_rounds=1, iterations=1)
    assert seconds > 0
