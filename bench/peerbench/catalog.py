"""The names a run is made of: runner keys and their labels, the fixture families and groups
--models takes, the layer benches, the bars' constants and the paths of the checkout.

Standard library only (the command line reads these before NumPy starts); the paths are
computed from this file's name, without looking at the disk."""
import os
import pathlib

BENCH_DIR = pathlib.Path(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO = BENCH_DIR.parent
MODELS_DIR = REPO / "models"
ZOO_PY = BENCH_DIR / "zoo.py"               # the bench model zoo (issue 17)
LAUNCHER = BENCH_DIR / "peers.py"           # what the child processes run

BASELINE = "fixnet_int8"
INT8_KEYS = ["fixnet_int8", "fixnet_tflite", "tflite_xnnpack", "tflite_builtin", "tflite_ref",
             "ort_int8"]
# TFLite float, converted here from the Keras model: only for a recurrent fixture whose int8
# .tflite could not be made (its .npz holds `tflite_error`); never a deployment peer.
TFLITE_FLOAT_KEYS = ["tflite_f32_xnnpack", "tflite_f32_builtin", "tflite_f32_ref"]
FLOAT_KEYS = ["fixnet_int8_float_io", "fixnet_float", "keras", "ort_float"]
# int16 activations with int8 weights (issue 19): fixnet's all-int16 model and TFLite's 16x8
# mode, int16 codes in and out; with --int16 (or named in --only). Not deployment peers of the
# int8 bars: their own side-by-side table compares them with fixnet int8 and XNNPACK int8.
INT16_KEYS = ["fixnet_int16", "tflite_16x8"]
RUNNER_KEYS = INT8_KEYS + INT16_KEYS + TFLITE_FLOAT_KEYS + FLOAT_KEYS
# The runtimes someone deploys: the accuracy rule and the bars are taken against these.
DEPLOY_PEERS = ["tflite_xnnpack", "tflite_builtin", "ort_int8"]
COUNTS_WITHIN_DB = 1.0
SHORT = {"fixnet_int8": "fixnet", "fixnet_tflite": "fixnet .tflite", "tflite_xnnpack": "XNNPACK", "tflite_builtin": "TFLite builtin",
         "tflite_ref": "TFLite ref", "ort_int8": "ORT int8",
         "tflite_f32_xnnpack": "TFLite FLOAT XNNPACK", "tflite_f32_builtin": "TFLite FLOAT builtin",
         "tflite_f32_ref": "TFLite FLOAT ref",
         "fixnet_int16": "fixnet int16", "tflite_16x8": "TFLite 16x8",
         "fixnet_int8_float_io": "fixnet f32 io",
         "fixnet_float": "fixnet float ref", "keras": "Keras float", "ort_float": "ORT float"}

# The three TFLite interpreters: (key, label, OpResolverType member or None, how it is made)
TFLITE_KINDS = [
    ("tflite_xnnpack", "TFLite int8, XNNPACK (default)", None, "default interpreter"),
    ("tflite_builtin", "TFLite int8, builtin kernels", "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
     "OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES"),
    ("tflite_ref", "TFLite int8, reference kernels (not a deployment peer)", "BUILTIN_REF",
     "OpResolverType.BUILTIN_REF"),
]
# the same three, on a FLOAT .tflite converted here (recurrent fixtures without an int8 one)
TFLITE_FLOAT_KINDS = [
    (fkey, label.replace("TFLite int8", "TFLite FLOAT (no int8 .tflite)"), resolver, how)
    for fkey, (_, label, resolver, how) in zip(TFLITE_FLOAT_KEYS, TFLITE_KINDS)]
# TFLite's 16x8 model (converted at run time): the builtin kernels without a delegate, since
# XNNPACK has no int16 kernels (the default interpreter would hand every int16 op back to them)
TFLITE_16X8_KINDS = [
    ("tflite_16x8", "TFLite 16x8 (int16 activations, int8 weights), builtin kernels",
     "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
     "16x8 .tflite converted at run time, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES "
     "(XNNPACK has no int16 kernels)")]
# The label of each runner in a row that says why it did not run
LABELS = {k: label for k, label, _, _ in TFLITE_KINDS + TFLITE_FLOAT_KINDS + TFLITE_16X8_KINDS}
LABELS.update({"fixnet_int8": "fixnet int8", "keras": "Keras float",
               "fixnet_tflite": "fixnet int8 on the fixture's .tflite (fixnet.load: TFLite's "
                                "quantization, its reference kernels' integers)",
               "fixnet_int8_float_io": "fixnet int8 (float in/out)",
               "fixnet_float": "fixnet float reference (NumPy)",
               "fixnet_int16": "fixnet int16 (quantize(calib, activations='int16'))",
               "ort_float": "ONNX Runtime float",
               "ort_int8": "ONNX Runtime int8 (QDQ from the .tflite)"})

# The fixtures of issue 9's "Done when": every CNN and every MLP, both writers.
CNN_FAMILIES = ["resnet_small", "mobilenetv2", "mobilenet_small", "kws_dscnn", "kws_conv1d",
                "concat_branches", "cnn_digits", "dead_digits"]
MLP_FAMILIES = ["mlp_seq", "mlp_func"]
# The recurrent fixtures of issue 11 (models/make_recurrent_models.py); not in the default set
# (issue 9's bars are about CNNs and MLPs): --models rnn, or 'rnn_*'.
RNN_FAMILIES = ["rnn_gru", "rnn_gru_ra0", "rnn_lstm", "rnn_simplernn", "rnn_bilstm",
                "rnn_stacked", "rnn_variants", "rnn_sensor", "rnn_text", "rnn_kws"]
GROUPS = {"cnn": CNN_FAMILIES, "mlp": MLP_FAMILIES, "rnn": RNN_FAMILIES}
# --models zoo (every model of bench/zoo.py), a zoo name, family (zoo_mnv2: both writers) or a
# pattern starting with zoo: built into bench/zoo/ first if missing; issue 17's bars
ZOO_GROUP = "zoo"
FIXTURE_KINDS = ("cnn", "mlp")        # the models issue 9's bars are taken over
ZOO_KIND = "zoo"                      # bench/zoo.py's models: issue 17's bars
# --models paths to .tflite files (or folders of them): the user's own files, no Keras model.
# Their runners: fixnet on the file (the baseline of their ratios) and the three TFLite
# interpreters on the same file; instead of SQNR against Keras, fixnet's outputs are compared
# with TFLite's on random inputs of each input's type (TFLITE_FILE_SAMPLES of them by default).
TFLITE_FILE_KIND = "tflite"
TFLITE_FILE_BASE = "fixnet_tflite"
TFLITE_FILE_KEYS = [TFLITE_FILE_BASE, "tflite_xnnpack", "tflite_builtin", "tflite_ref"]
TFLITE_FILE_SAMPLES = 32
TFLITE_FILE_SEED = 0

# Layer benches: name -> (what, input shape without batch, Keras layer factory arguments)
MICRO = {
    "conv3x3": ("Conv2D 3x3, 32x32x32 -> 32, stride 1, same", (32, 32, 32),
                ("Conv2D", dict(filters=32, kernel_size=3, padding="same", activation="relu"))),
    "conv1x1": ("Conv2D 1x1, 24x24x96 -> 96", (24, 24, 96),
                ("Conv2D", dict(filters=96, kernel_size=1, activation="relu"))),
    "dwconv3x3": ("DepthwiseConv2D 3x3, 48x48x96, stride 1, same", (48, 48, 96),
                  ("DepthwiseConv2D", dict(kernel_size=3, padding="same", activation="relu"))),
    "dense1024": ("Dense 1024 -> 1024", (1024,),
                  ("Dense", dict(units=1024, activation="relu"))),
    # issue 17: the wide, shallow layers at the start of mobile convnets
    "conv3x3_1to8": ("Conv2D 3x3, 64x64x1 -> 8, valid (emotion's first)", (64, 64, 1),
                     ("Conv2D", dict(filters=8, kernel_size=3, activation="relu"))),
    "conv3x3_3to16s2": ("Conv2D 3x3 /2, 96x96x3 -> 16, same (MobileNetV2's first)", (96, 96, 3),
                        ("Conv2D", dict(filters=16, kernel_size=3, strides=2, padding="same",
                                        activation="relu"))),
    "dw3x3_8ch": ("DepthwiseConv2D 3x3, 60x60x8, same", (60, 60, 8),
                  ("DepthwiseConv2D", dict(kernel_size=3, padding="same", activation="relu"))),
    "dw3x3_48ch_s2": ("DepthwiseConv2D 3x3 /2, 48x48x48, same", (48, 48, 48),
                      ("DepthwiseConv2D", dict(kernel_size=3, strides=2, padding="same",
                                               activation="relu"))),
    "dw3x3_1ch_m2": ("DepthwiseConv2D 3x3, 28x28x1, depth multiplier 2", (28, 28, 1),
                     ("DepthwiseConv2D", dict(kernel_size=3, padding="same", depth_multiplier=2,
                                              activation="relu"))),
    "pw8to48": ("Conv2D 1x1, 48x48x8 -> 48 (MobileNetV2's expand)", (48, 48, 8),
                ("Conv2D", dict(filters=48, kernel_size=1, activation="relu"))),
    "pw16to8": ("Conv2D 1x1, 48x48x16 -> 8 (MobileNetV2's project)", (48, 48, 16),
                ("Conv2D", dict(filters=8, kernel_size=1))),
}
MICRO_SAMPLES = 64                # accuracy inputs of a layer bench (default)
CONV3X3_BAR_GMACS = 40.0          # issue 9: the 3x3 conv layer bench on the AVX2 build
