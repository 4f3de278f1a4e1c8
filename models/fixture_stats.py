"""README sections for the CNN and layer fixtures, computed from the .npz files (no TensorFlow).

Used by make_models.write_readme() through make_cnn_models.readme_section() and
make_layer_models.readme_section().
"""
import os

import numpy as np

from fixture_common import sqnr_db
from make_models import HERE, WRITERS


def _load(base):
    path = os.path.join(HERE, base + ".npz")
    if not os.path.exists(path):
        return None
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def _size(name):
    p = os.path.join(HERE, name)
    return os.path.getsize(p) if os.path.exists(p) else None


def _kb(n):
    return "—" if n is None else f"{n / 1024:.0f} KiB" if n < 10 << 20 else f"{n / (1 << 20):.1f} MiB"


def outputs(d):
    """[(keras_float, tflite_int8 or None)] in Keras output order."""
    if "keras_float" in d:
        return [(d["keras_float"], d.get("tflite_int8"))]
    res, i = [], 0
    while f"keras_float_{i}" in d:
        res.append((d[f"keras_float_{i}"], d.get(f"tflite_int8_{i}")))
        i += 1
    return res


def _tflite_note(d):
    if "tflite_error" in d:
        first = str(d["tflite_error"]).splitlines()
        msg = " ".join(s.strip() for s in first[:3])
        return f"TFLite conversion failed: `{msg[:300]}`"
    notes = []
    if str(d.get("tflite_converter", "from_keras_model")) != "from_keras_model":
        notes.append(f"converter: {d['tflite_converter']}")
    if "tflite_xnnpack_vs_ref_ndiff" in d:
        notes.append(f"XNNPACK≠REF on {int(d['tflite_xnnpack_vs_ref_ndiff'])} int8 outputs")
    return "; ".join(notes)


def _qparams(d):
    def one(sfx):
        return (f"{float(d['tflite_input_scale' + sfx]):.6g} / {int(d['tflite_input_zero_point' + sfx])}")
    if "tflite_error" in d:
        return "—", "—"
    if "tflite_input_scale" in d:
        ins = one("")
    else:
        i, parts = 0, []
        while f"tflite_input_scale_{i}" in d:
            parts.append(one(f"_{i}"))
            i += 1
        ins = "; ".join(parts)
    if "tflite_output_scale" in d:
        outs = f"{float(d['tflite_output_scale']):.6g} / {int(d['tflite_output_zero_point'])}"
    else:
        i, parts = 0, []
        while f"tflite_output_scale_{i}" in d:
            parts.append(f"{float(d[f'tflite_output_scale_{i}']):.6g} / {int(d[f'tflite_output_zero_point_{i}'])}")
            i += 1
        outs = "; ".join(parts) if len(parts) <= 2 else f"{len(parts)} outputs, per output in the .npz"
    return ins, outs


def _sizes(base):
    return " / ".join(_kb(_size(base + ext)) for ext in (".h5", ".tflite", ".npz"))


def cnn_section(models, arch, train):
    rows, arch_rows = [], []
    for name in models:
        d0 = _load(f"{name}_k3") or _load(f"{name}_tfk2")
        params = f"{int(d0['n_params']):,}" if d0 is not None and "n_params" in d0 else "?"
        inp, text = arch[name]
        arch_rows.append(f"| `{name}_{{k3,tfk2}}` | {inp} | {text} | {params} | {train[name][0]} |")
        for writer, (suffix, _) in WRITERS.items():
            base = f"{name}_{suffix}"
            d = _load(base)
            if d is None:
                rows.append(f"| `{base}` | {writer} | not generated | | | | | |")
                continue
            y = d["y_test"]
            outs = outputs(d)
            kf, tq = outs[0]
            acc = f"{np.mean(kf.argmax(1) == y):.4f}"
            if tq is not None:
                tacc = f"{np.mean(tq.argmax(1) == y):.4f}"
                agree = f"{np.mean(tq.argmax(1) == kf.argmax(1)):.4f}"
                sq = " / ".join(f"{sqnr_db(f, q):.1f}" for f, q in outs)
            else:
                tacc = agree = sq = "—"
            note = _tflite_note(d)
            if "y_test_1" in d:
                mae_f = float(np.abs(outs[1][0] - d["y_test_1"]).mean())
                extra = f"ink MAE float {mae_f:.3f}"
                if outs[1][1] is not None:
                    extra += f", int8 {float(np.abs(outs[1][1] - d['y_test_1']).mean()):.3f}"
                note = "; ".join(s for s in (extra, note) if s)
            if "acc_before_bn_recalibration" in d:
                note = "; ".join(s for s in (f"acc before BN re-estimation "
                                             f"{float(d['acc_before_bn_recalibration']):.4f}", note) if s)
            ins, outq = _qparams(d)
            rows.append(f"| `{base}` | {writer} | {acc} | {tacc} | {agree} | {sq} | {_sizes(base)} | "
                        f"{ins} | {outq} | {note} |")
    text = "\n".join([
        "| model | input | architecture | params | epochs |",
        "| --- | --- | --- | --- | --- |",
        *arch_rows,
        "",
        "Measured on the 360 test samples. SQNR = 10·log10(Σf² / Σ(f − q)²) of the TFLite int8 output "
        "(dequantized) against the Keras float output, per output (`multi_io`: class / ink). Sizes: "
        ".h5 / .tflite / .npz.",
        "",
        "| model | writer | Keras float acc | TFLite int8 acc | top-1 agreement int8 vs float | SQNR dB | "
        "sizes | input scale / zp | output scale / zp | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ])
    return text


def layer_section(groups, description):
    arch_rows, rows = [], []
    for g in groups:
        inp, text = description[g]
        d0 = _load(f"layers_{g}_k3") or _load(f"layers_{g}_tfk2")
        params = f"{int(d0['n_params']):,}" if d0 is not None and "n_params" in d0 else "?"
        arch_rows.append(f"| `layers_{g}_{{k3,tfk2}}` | {inp} | {text} | {params} |")
        for writer, (suffix, _) in WRITERS.items():
            base = f"layers_{g}_{suffix}"
            d = _load(base)
            if d is None:
                rows.append(f"| `{base}` | {writer} | not generated | | | | |")
                continue
            outs = outputs(d)
            shapes = "; ".join(str(tuple(f.shape[1:])) for f, _ in outs)
            have = [(f, q) for f, q in outs if q is not None]
            if len(outs) > 2:
                shapes = f"{len(outs)} outputs (6,)" if all(f.shape[1:] == (6,) for f, _ in outs) else \
                    f"{len(outs)} outputs"
                sqs = [sqnr_db(f, q) for f, q in have]
                sq = f"{len(have)} outputs: min {min(sqs):.1f}, median {np.median(sqs):.1f}" if have else "—"
                mad = f"max {max(float(np.abs(f - q).max()) for f, q in have):.4g}" if have else "—"
            elif have:
                sq = " / ".join(f"{sqnr_db(f, q):.1f}" for f, q in have)
                mad = " / ".join(f"{float(np.abs(f - q).max()):.4g}" for f, q in have)
            else:
                sq = mad = "—"
            ins, outq = _qparams(d)
            rows.append(f"| `{base}` | {writer} | {shapes} | {sq} | {mad} | {_sizes(base)} | "
                        f"{ins} | {outq} | {_tflite_note(d)} |")
    return "\n".join([
        "| model | input (64 test + 64 calib samples) | layers | params |",
        "| --- | --- | --- | --- |",
        *arch_rows,
        "",
        "| model | writer | output shape(s) | SQNR dB int8 vs float | max abs diff | sizes .h5 / .tflite / .npz "
        "| input scale / zp | output scale / zp | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ])


def activation_table():
    """Per output of layers_activations: SQNR of TFLite int8 per writer, and how far the
    two writers' Keras float outputs are apart (same weights and inputs)."""
    d3, d2 = _load("layers_activations_k3"), _load("layers_activations_tfk2")
    if d3 is None or d2 is None:
        return ""
    names = [str(n) for n in d3["keras_output_names"]]
    assert names == [str(n) for n in d2["keras_output_names"]]
    rows = ["| i | output layer | SQNR dB k3 | SQNR dB tfk2 | max abs diff keras_float k3 vs tfk2 |",
            "| --- | --- | --- | --- | --- |"]
    for i, n in enumerate(names):
        cells = []
        for d in (d3, d2):
            q = d.get(f"tflite_int8_{i}")
            cells.append("not in .tflite" if q is None else f"{sqnr_db(d[f'keras_float_{i}'], q):.1f}")
        diff = float(np.abs(d3[f"keras_float_{i}"] - d2[f"keras_float_{i}"]).max())
        rows.append(f"| {i} | `{n}` | {cells[0]} | {cells[1]} | {diff:.3g} |")
    return "\n".join(rows)


def _files(pattern_exts):
    rows = []
    for name in pattern_exts:
        rows.append(f"| `{name}` | {_kb(_size(name))} |")
    return rows


EXTENDED_HEAD = """
# CNN, layer-coverage and other-format fixtures

Everything below is made by `make_cnn_models.py` (application-like CNNs trained on the
digits, the `.keras` archives and JSON + weights pairs) and `make_layer_models.py` (one
small random-weight model per layer family). Both share `fixture_common.py` (writer
processes, `.h5` save + reload check, TFLite conversion and run, `.npz` writing) and use
the same writers, environment (`TF_ENABLE_ONEDNN_OPTS=0`, `PYTHONHASHSEED=0`), seeding
(`seed_everything` + `clear_session` before every model) and TFLite recipe as the MLPs.
The tables are computed from the `.npz` files by `fixture_stats.py`.

## Files per model `<name>` (additions to the MLP layout above)

* `<name>.h5` — `model.save(path)`; includes the optimizer state (`optimizer_weights`)
  like the MLP files, except `mobilenetv2_*` (`include_optimizer=False`: Adam's two
  moments would make it 5.6 MB). The script asserts that
  `load_model(path, compile=False).predict(x_test)` reproduces `keras_float` within 1e-6
  (it was exactly 0 for every file).
* `<name>.tflite` — as for the MLPs; missing when conversion failed (then the `.npz` has
  `tflite_error` and no other `tflite_*` keys).
* `<name>.npz`:
  * Single input and output: exactly the MLP keys.
  * Several inputs or outputs (`multi_io`, `layers_pooling`, `layers_merge`,
    `layers_activations`): every per-tensor key gets a `_<i>` suffix, `i` = position in
    Keras order (`model.inputs` / `model.outputs`, i.e. the config's `input_layers` /
    `output_layers`): `x_test_0, x_test_1, x_calib_0, ..., keras_float_0, keras_float_1,
    tflite_input_int8_<i>, tflite_input_scale_<i>, tflite_input_zero_point_<i>,
    tflite_int8_<i>, tflite_int8_raw_<i>, tflite_output_scale_<i>,
    tflite_output_zero_point_<i>`. `y_test` stays unsuffixed (labels of output 0);
    `multi_io` also has `y_test_1` (float32 (N, 1), the ink target of output 1).
  * New keys (all fixtures made by these scripts): `keras_input_names`,
    `keras_output_names` (layer names in Keras order); `tflite_input_names`,
    `tflite_output_names` (TFLite tensor names, in Keras order),
    `tflite_input_signature_keys`, `tflite_output_signature_keys`, `tflite_io_mapping`
    (how they were matched), `tflite_xnnpack_vs_ref_ndiff` (int8 outputs where the
    default XNNPACK interpreter differs from the stored reference-kernel result),
    `n_params`; CNNs: `epochs`, and `acc_before_bn_recalibration` where BatchNorm
    statistics were re-estimated; layer groups: `output_slices` (JSON, see below),
    `tf_enable_onednn_opts`; `tflite_dropped_outputs`, `tflite_ref_error`,
    `tflite_error` where they apply (see Notes).
* TFLite input/output mapping: the converter orders TFLite inputs by signature name
  (alphabetically), not in Keras order. The serving signature's input keys are the Keras
  input names for both writers; its output keys are the output layer names (tf.keras 2)
  or `output_0, output_1, ...` in Keras order (Keras 3 — the TFLite tensors behind them
  are named `StatefulPartitionedCall_1:<k>` with `k` the rank of `output_<i>` in
  *string* order, so go through the signature, not the tensor names). The scripts map
  through `interpreter.get_signature_runner()` and check every shape; the calibration
  data of a multi-input model is fed as a dict keyed by input name for the same reason.
"""

CNN_TEXT = """
## CNNs trained on the digits (`make_cnn_models.py`)

Same split as the MLPs (360 test / 200 calibration / 1237 train, seed 1234). Inputs are
made from the 8×8 images in [0, 1] with `tf.image.resize(..., method="bilinear")`
(half-pixel centres, no antialiasing): 32×32×1 for `cnn_digits`, `resnet_small`,
`mobilenet_small`, `concat_branches`; 49×10×1 (`kws_dscnn`) and 49×10 (`kws_conv1d`,
time × features), then rounded to multiples of 2⁻¹⁰ (a no-op for 32×32, whose bilinear
values are already dyadic; for 49×10 it lets the `.npz` compress). `mobilenetv2`:
nearest-neighbour upscaling (12×12 blocks) to 96×96, repeated to 3 channels (bilinear
96×96×3 floats would make a ~40 MB `.npz`). `multi_io`: `image` = the 8×8 image as
(8, 8, 1); `features` = means of the four 4×4 quadrants [top-left, top-right,
bottom-left, bottom-right]; output `ink` is trained on the fraction of pixels > 0.5
(`y_test_1`). Training: Adam(1e-3), batch 32, sparse categorical crossentropy
(`multi_io`: + binary crossentropy on `ink`), epochs as listed; layers keep their
default names except where the table names them. BatchNormalization moving statistics
of `resnet_small` and `mobilenetv2` are re-estimated after training ("precise BN":
training-mode passes over 1152 training images, momentum k/(k+1) for batch k, then the
configured momentum is restored so the config is unchanged): in `resnet_small` the
activations grow faster than the momentum-0.99 averages follow (float test accuracy
~0.1-0.5 from the trained moving statistics), and MobileNetV2's momentum 0.999 barely
moves in 8 epochs; the accuracy before re-estimation is in the notes column.
"""

LAYER_TEXT = """
## Layer coverage (`make_layer_models.py`)

Untrained Functional models, weights overwritten with seeded numpy values (the same
values for both writers where shapes agree): kernels N(0, gain²/fan_in), biases,
BatchNorm beta and moving mean N(0, 0.3²), gamma U(0.5, 1.5), moving variance
U(0.5, 2), PReLU alpha U(0.05, 0.5); Normalization keeps its adapted statistics. Inputs:
seeded N(0, 1) (integers 0..255 for `noise_norm`), 64 test + 64 calibration samples,
identical for both writers. Layers are named after what they test. Except for `merge`,
`activations` and `channels_first`, every layer output is flattened (`flat_<branch>`)
and concatenated (`concat_out`) into one output; `output_slices` in the `.npz` is a
JSON list of `{"branch", "shape", "start", "stop"}` (`merge`: plus `"output"`) telling
which output columns hold which layer's output (reshape `[:, start:stop]` to `shape`).
`layers_activations` has one output per activation layer (36 outputs, in the order of
`keras_output_names`), each after its own Dense, so each gets its own TFLite scale.
"""

ACT_TEXT = """
### `layers_activations` per output

Both writers get the same weights and inputs, so the last column shows where their
definitions differ (`hard_sigmoid`); everything else agrees to float rounding.
"""

FORMATS_TEXT = """
## Other file formats

| file | what | golden data |
| --- | --- | --- |
| `cnn_digits_k3.keras` | Keras 3 native archive, `model.save("x.keras")` of the trained `cnn_digits_k3` | `cnn_digits_k3.npz` |
| `multi_io_k3.keras` | the same for `multi_io_k3` | `multi_io_k3.npz` |
| `cnn_digits_k3.json` + `cnn_digits_k3.weights.h5` | `model.to_json()` + Keras 3 `model.save_weights("x.weights.h5")` (Keras 3's own weights format, not the legacy HDF5 layout) | `cnn_digits_k3.npz` |
| `cnn_digits_tfk2.json` + `cnn_digits_tfk2.weights.h5` | `model.to_json()` + tf.keras 2's classic HDF5 weights file (`model.save_weights("x.h5")`, renamed: tf.keras 2.21 sends `*.weights.h5` names to its Keras-3-style writer; older tf.keras 2 wrote this layout for any `.h5` name) | `cnn_digits_tfk2.npz` |
| `cnn_digits_tfk2.json` + `cnn_digits_tfk2_saving_lib.weights.h5` | `model.save_weights("x.weights.h5")` in tf.keras 2.21: the Keras-3-style layout (`layers/<name>/vars/<i>`), with tf.keras 2's small differences (below) | `cnn_digits_tfk2.npz` |

Same weights as the `.h5` of the same name; the script reloads each (`load_model` for
`.keras`, `model_from_json` + `load_weights` for the pairs) and asserts the predictions
equal `keras_float` within 1e-6 (they were identical). The `.keras` zip holds
`metadata.json`, `config.json`, `model.weights.h5`; `metadata.json` has a save date and
the zip entries time stamps, so `.keras` files are not byte-identical run to run.

| file | size |
| --- | --- |
"""


def extended_readme():
    import make_cnn_models as mc
    import make_layer_models as ml
    import make_dead_models as md
    import make_recurrent_models as mr
    import make_anylength_models as ma
    import make_tflite16x8_goldens as m16
    import make_tflite_fixtures as mt
    files = ["cnn_digits_k3.keras", "multi_io_k3.keras", "cnn_digits_k3.json", "cnn_digits_k3.weights.h5",
             "cnn_digits_tfk2.json", "cnn_digits_tfk2.weights.h5", "cnn_digits_tfk2_saving_lib.weights.h5"]
    parts = [EXTENDED_HEAD, CNN_TEXT, cnn_section(mc.MODELS, mc.ARCH, mc.TRAIN), LAYER_TEXT,
             layer_section(ml.GROUPS, ml.DESCRIPTION), ACT_TEXT, activation_table(),
             md.readme_section(), mr.readme_section(), m16.readme_section(),
             mt.readme_section(), ma.readme_section(),
             FORMATS_TEXT + "\n".join(_files(files)), RESIZE_TEXT, NOTES_TEXT]
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


RESIZE_TEXT = """
## Bilinear resize goldens

`resize_bilinear_goldens.npz`, written by `make_resize_goldens.py` (Keras 3 / TensorFlow):
8 small cases (1-pixel axes, factor 1, odd and even factors, non-square) of
`tf.image.resize(x, (h * sh, w * sw), method="bilinear")` (half-pixel centres) on N(0, 1)
inputs and on int8 codes, and Keras's `UpSampling2D(size, interpolation="bilinear")` on the
same inputs (identical to `tf.image.resize` here). The tests check fixnet's bilinear taps, its
float reference and its integer oracle against them (tests/test_resize_and_transpose.py).
"""


NOTES_TEXT = """
## Notes and problems met

* **Every layer asked for exists in both writers** (tf.keras 2.21 has `DepthwiseConv1D`,
  `groups=`, `keepdims=`, `Rescaling`, `Normalization`); nothing was skipped.
* **TFLite conversion worked for every model** (always `from_keras_model`, for Keras 3
  too). Where the reference kernels or a kernel failed:
  * `layers_activations_*`: TFLite's reference op resolver has no `ELU` kernel
    ("Didn't find op for builtin opcode 'ELU'"; the converter keeps ELU in float between
    DEQUANTIZE / QUANTIZE), so this model is run with
    `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES` (optimized kernels, which can
    differ from the reference ones by 1 LSB on FULLY_CONNECTED, see the MLP notes);
    `tflite_kernels` and `tflite_ref_error` in its `.npz` record it. Every other model
    uses `BUILTIN_REF`.
  * `softsign` is lowered to ABS / ADD / DIV and the int8 DIV kernel aborts
    (`div.cc: data[i] != 0 was not true`) on these inputs, so the outputs
    `dense_softsign` and `act_softsign` are left out of the `.tflite` of
    `layers_activations_*` (converted from a sub-model of the same layers;
    `tflite_dropped_outputs`; their `keras_float_<i>` are there, their `tflite_*_<i>` not).
  * TFLite's int8 lowering of some activations is poor, so compare fixnet with the Keras
    float output there rather than bit for bit with TFLite: `selu` (GREATER / MUL / EXP /
    SUB / MUL / SELECT_V2: the negative branch comes out 0, ~6 dB), Keras 3's
    `ReLU(negative_slope, threshold)` (GREATER / SELECT_V2 / SUB / MUL: the negative part
    is lost, ~20 dB; tf.keras 2's lowering of the same layer is fine, ~39 dB), `softplus`
    (EXP / ADD / LOG), and calibration clipping (64 calibration samples) for
    `exponential`, `relu6`, `swish`. A Dense output shared by several activation layers
    was worse still (the converter fuses a following ReLU into a copy of the
    FULLY_CONNECTED and gives the shared tensor the ReLU's [0, max] range, wiping the
    negative inputs of the other consumers); hence one Dense per activation layer.
  * Dilated convolutions become SPACE_TO_BATCH_ND / CONV_2D / BATCH_TO_SPACE_ND (+ ADD for
    the bias) in TFLite; Conv1D / DepthwiseConv1D become EXPAND_DIMS + CONV_2D /
    DEPTHWISE_CONV_2D; `groups=2` stays one CONV_2D; `channels_first` becomes TRANSPOSE /
    CONV_2D / TRANSPOSE; Normalization / Rescaling become SUB / MUL / ADD.
* The default interpreter (XNNPACK) differs from the reference kernels on some int8
  outputs of almost every conv model (notes column), by up to 16-28 LSB on the softmax
  output of `concat_branches` and ~100 LSB on `mobilenetv2` — the stored outputs are the
  reference kernels'.
* `layers_channels_first_*`: TensorFlow's plain CPU Conv2D kernel only runs NHWC
  ("The Conv2D op currently only supports the NHWC tensor format on the CPU"), so with
  `TF_ENABLE_ONEDNN_OPTS=0` `model.predict` fails; this group alone is generated with
  `TF_ENABLE_ONEDNN_OPTS=1` (oneDNN runs NCHW; `tf_enable_onednn_opts` in its `.npz`).
* `resnet_small`, `mobilenetv2`: BatchNorm statistics re-estimated after training (see
  above). `concat_branches`: GlobalAveragePooling straight after the height-axis
  Concatenate learned too slowly (0.72 after 25 epochs); a Conv2D(64, 3, strides 2) sits
  between them.
* `multi_io`: in a first version a tensor (the shared Dense's output) fed three layers,
  and training gave different weights in every process (both writers; also with one
  TensorFlow thread and op determinism on) — apparently the order in which TensorFlow
  sums the three incoming gradients varies, and a + b + c is not associative in float.
  Now no tensor of `multi_io` feeds more than two layers and repeated runs give
  identical files.
* `mobilenetv2_*`: `.h5` saved without the optimizer (see above), ~2.1 MiB; 8 epochs.
* `x_test` of the CNN fixtures is rounded to 2⁻¹⁰ (see above) so that the `.npz` files
  stay below 1 MB (bilinear 32×32 values are exact anyway).

## Format notes for the loader (differences between the writers seen in these files)

* Weight names in the `.h5`: tf.keras 2 appends `:0` (`conv2d/kernel:0`), Keras 3 does
  not (`conv2d/kernel`). `DepthwiseConv2D` / `DepthwiseConv1D`: the depthwise kernel is
  `depthwise_kernel:0` in tf.keras 2 but `kernel` in Keras 3 (same shape
  `(kh, kw, in_ch, depth_multiplier)` / `(k, in_ch, depth_multiplier)`).
  `SeparableConv*`: `depthwise_kernel`, `pointwise_kernel`, `bias` in both.
* Nested model (`multi_io`'s `feature_mlp`): its weights are in the outer file's
  `model_weights/feature_mlp/` group as `dense_1/kernel:0 ...` (tf.keras 2, weight_names
  without the `feature_mlp/` prefix) or `feature_mlp/dense_1/kernel ...` (Keras 3, one
  more group level). In the tf.keras 2 config, a tensor produced by calling the nested
  Sequential is referenced as node index **1** (`["feature_mlp", 1, 0, {}]`: node 0 is the
  Sequential's own graph-building node) although its `inbound_nodes` lists one call;
  Keras 3 references it as node 0.
* `Normalization`: weights `mean`, `variance`, `count` (tf.keras 2 stores them as
  `model_weights/<name>/mean:0` etc. directly, no `<name>/` sub-group; Keras 3's `count`
  is 0, tf.keras 2's is the number of adapted values). Given `mean=` / `variance=`, the
  values are in the config and the layer has no weights (both writers).
* `LeakyReLU`: `alpha` in tf.keras 2, `negative_slope` in Keras 3. tf.keras 2 writes
  float32-rounded values for these (`alpha` 0.20000000298023224, ELU `alpha`
  0.699999988079071, ReLU `negative_slope` 0.10000000149011612); Keras 3 writes 0.2,
  0.7, 0.1. Activation names as written: Keras 3 writes `"silu"` for both `swish` and
  `silu`, tf.keras 2 writes `"swish"` for both. `hard_sigmoid` is
  `relu6(x + 3) / 6` in Keras 3 but `clip(0.2 x + 0.5, 0, 1)` in tf.keras 2; `gelu` is
  the exact erf form in both (`approximate=False`).
* `*.weights.h5` are weights-only files (no `model_config`), not full models.
  `cnn_digits_tfk2.weights.h5` has the classic layout: root attrs `layer_names`,
  `backend`, `keras_version`; one group per layer (also weightless ones) with attr
  `weight_names` (`conv2d/kernel:0`, ...) and datasets at `<layer>/<layer>/kernel:0`,
  plus an empty `top_level_model_weights` group not listed in `layer_names` (full `.h5`
  files of both writers have it too) — the
  `model_weights` group of a full tf.keras 2 `.h5`, at the root. The Keras-3-style files
  (`cnn_digits_k3.weights.h5`, `cnn_digits_tfk2_saving_lib.weights.h5`, and
  `model.weights.h5` inside `.keras`) have no attributes naming weights: variables are
  datasets `layers/<layer>/vars/0, 1, ...` in the layer's weight order (Dense /
  Conv: kernel, bias; BatchNormalization: gamma, beta, moving_mean, moving_variance),
  a nested model's layers under `layers/<model>/layers/<layer>/vars/`, plus
  `optimizer/vars/...` (and, from tf.keras 2, `metrics/...`). The group keys are
  the *class-derived* names (`dense_1`, `sequential`, `input_layer_1`, in the order
  the layers were tracked), not the layer names: Keras 3 stores the layer name as the
  `name` attribute of each `vars` group (e.g. `layers/dense_1/vars` has
  `name="shared_dense"`), tf.keras 2's saving_lib stores no names at all. Match them to
  the config's layers by position / class, not by name.
"""
