"""Depthwise 3x3 micro-benchmark: one DepthwiseConv2dCall, 48x48x96, 'same' padding,
batch 1, stride 1 and 2, per kernel build this CPU runs (and the scalar twin), in GMAC/s
(multiply-adds = OH * OW * C * 9 per image), ``--rounds`` timings of ``--repeat`` calls each.

    python bench/depthwise.py                       # every build, stride 1 and 2
    python bench/depthwise.py --builds avx2 --rounds 21 --scalar
    /work/tfenv/bin/python bench/depthwise.py --tflite   # and the same layer in TFLite
                                                         # (XNNPACK, builtin), int8 in/out

--tflite needs TensorFlow (never imported otherwise): it converts a one-layer Keras
DepthwiseConv2D to int8 TFLite with a representative dataset and times invoke() with one
thread. Rounds are interleaved (every contender once per round); median and best round.
"""
import argparse
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # this checkout

H = W = 48
C = 96
K = 3


def gmacs(seconds, stride):
    out = -(-H // stride)
    return out * out * C * K * K / seconds / 1e9


def time_once(fn, repeat):
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def fixnet_calls(conv, stride, scalar):
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1, H, W, C), dtype=np.int8)
    w = rng.integers(-127, 128, (K, K, C), dtype=np.int8)
    bias = rng.integers(-2 ** 14, 2 ** 14, C).astype(np.int32)
    m0 = np.full(C, 1 << 30, np.int32)
    shift = np.full(C, -9, np.int32)
    out_hw = -(-H // stride)
    pad = max((out_hw - 1) * stride + K - H, 0) // 2
    out = np.empty((1, out_hw, out_hw, C), np.int8)
    kwargs = {"scalar": True} if scalar else {}
    params = dict(stride_h=stride, stride_w=stride, dilation_h=1, dilation_w=1, pad_top=pad,
                  pad_left=pad, depth_multiplier=1, pad_value=-3, out_zp=5, act_min=-128,
                  act_max=127)
    return conv.DepthwiseConv2dCall(x, w, bias, m0, shift, params, out, **kwargs)


def fixnet_contenders(args):
    import fixnet._kernels as kernels
    for name in args.builds or kernels.available_builds():
        conv = kernels.load_build(name)._conv
        isa = getattr(conv, "DEPTHWISE_ISA", "?")
        for scalar in ((False, True) if args.scalar else (False,)):
            for stride in (1, 2):
                label = f"fixnet {name} ({'scalar twin' if scalar else isa})"
                yield label, stride, fixnet_calls(conv, stride, scalar)


def tflite_contenders():
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    from tensorflow.lite.python.interpreter import OpResolverType
    rng = np.random.default_rng(0)
    for stride in (1, 2):
        inp = tf.keras.Input((H, W, C), batch_size=1)
        y = tf.keras.layers.DepthwiseConv2D(K, strides=stride, padding="same")(inp)
        model = tf.keras.Model(inp, y)
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: (
            [rng.standard_normal((1, H, W, C)).astype(np.float32)] for _ in range(20))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
        blob = conv.convert()
        for label, resolver in (("XNNPACK", OpResolverType.AUTO),
                                ("builtin", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)):
            it = tf.lite.Interpreter(model_content=blob, num_threads=1,
                                     experimental_op_resolver_type=resolver)
            it.allocate_tensors()
            d = it.get_input_details()[0]
            it.set_tensor(d["index"], rng.integers(-128, 128, d["shape"], dtype=np.int8))
            yield f"TFLite {label}", stride, it.invoke


def run(contenders, args):
    """Interleaved rounds: every contender once per round, so load changes hit all alike."""
    for _, _, fn in contenders:
        fn()
    samples = [[] for _ in contenders]
    for _ in range(args.rounds):
        for i, (_, _, fn) in enumerate(contenders):
            samples[i].append(time_once(fn, args.repeat))
    for (label, stride, _), ts in zip(contenders, samples):
        t, best = statistics.median(ts), min(ts)
        print(f"{label:30s} stride {stride}: median {t * 1e6:8.1f} us {gmacs(t, stride):6.2f} "
              f"GMAC/s   best {gmacs(best, stride):6.2f} GMAC/s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--builds", nargs="*", help="kernel builds (default: every one this CPU runs)")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--scalar", action="store_true", help="also time the scalar twin")
    p.add_argument("--tflite", action="store_true",
                   help="also time TFLite XNNPACK and builtin (needs TensorFlow)")
    args = p.parse_args()
    contenders = list(fixnet_contenders(args))
    if args.tflite:
        contenders += list(tflite_contenders())
    run(sorted(contenders, key=lambda c: c[1]), args)


if __name__ == "__main__":
    main()
