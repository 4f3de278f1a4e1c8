"""bench/peers.py's code: fixnet timed against its peers on the same models, in one run, on one
machine.

Usage: bench/peers.py's docstring and `python bench/peers.py --help`.

What is timed (one predict call each, inputs already in memory, int8 in and int8 out):

  fixnet int8            qm.predict(x_q, output="int8").  THE BASELINE of every ratio.
  TFLite XNNPACK         the committed int8 .tflite, default interpreter (XNNPACK delegate);
                         set_tensor(int8) + invoke + get_tensor(int8)
  TFLite builtin         the same with OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES: TFLite's
                         optimised builtin kernels (ruy / gemmlowp), no delegate
  TFLite reference       the same with OpResolverType.BUILTIN_REF: TFLite's reference kernels,
                         for scale only (no one deploys them; no bar is taken against them)
  ONNX Runtime int8      tf2onnx from_tflite of the same .tflite (a QDQ graph, int8 in/out),
                         CPUExecutionProvider (ONNX Runtime fuses QDQ into QLinear* kernels)
  with --float, also:    fixnet int8 with float in/out, fixnet's NumPy float reference, Keras
                         float (fastest of three call styles) and ONNX Runtime float (tf2onnx of
                         the Keras model)
  with --int16, also:    fixnet int16 (quantize(calib, activations="int16"), int16 codes in) and
                         TFLite 16x8 (converted at run time in a child process with
                         models/make_tflite16x8_goldens.py's recipe, int16 in and out, builtin
                         kernels without a delegate: XNNPACK has no int16 kernels); issue 19's
                         side-by-side table of int8 and int16, no bar

Models: every CNN fixture and every MLP fixture in models/ (both writers, *_k3 and *_tfk2), or
--models (names, families such as mlp_seq, groups cnn / mlp / rnn / zoo, shell patterns, .h5
paths, .tflite paths and folders of .tflite files).

Your own .tflite files (--models model.tflite, or a folder: each .tflite file in it): no Keras
model, so their runners are fixnet on the file (fixnet.load, qm.predict in the file's own input
and output types: the baseline of their ratios, `fixnet .tflite / XNNPACK`) and the three TFLite
interpreters on the same file. Inputs: random codes of each input's type and shape, seeded
(floats uniform over a float input's quantized range); --batches where TFLite resizes the file's
batch axis (resize_tensor_input, strict), else batch 1 only, said in the report. Instead of
SQNR: fixnet's outputs against TFLite's reference kernels' (and XNNPACK's, the builtin kernels',
for information) on --accuracy-samples such inputs (default 32): values equal / total and the
largest difference. A file fixnet refuses is listed as skipped with fixnet's reason; the run
goes on. Their tables and summary are their own (not issue 9's or 17's bars).

The bench model zoo (issue 17; --models zoo, or zoo_emotion, zoo_mnv2 (both writers), 'zoo_*',
...): bench/zoo.py's Keras stand-ins for the model files issue 17 timed (same architectures and
MACs, weights not trained on real data, synthetic inputs), kept in the git-ignored bench/zoo/ in
the fixtures' .h5 / .tflite / .npz layout. A zoo model that is not there yet (or was made by an
older recipe) is built first, in a child process of this Python (TensorFlow needed for that
only); one that cannot be built is skipped, with the reason. Zoo models get tables of their own
and issue 17's bars (fixnet <= TFLite builtin on every model, geometric mean of fixnet / XNNPACK
<= 1, no model above 1.25x XNNPACK), apart from issue 9's, which stay on the fixtures.

Recurrent fixtures (issue 11; --models rnn or 'rnn_*', not in the default set): the same runners,
with these differences. A fixnet int8 failure (quantize() raising UnsupportedLayerError before
fixnet runs recurrent layers in int8) is reported in the model's row and the peers are timed
without it (for any other model it stops the run). TFLite: the committed int8 .tflite (only the
tf.keras 2 LSTM fixtures have one) is a batch-1 function whose fused LSTM keeps its state across
invoke(), so a call runs its samples one by one, each after reset_all_variables(); where the
fixture has none (its .npz holds the converter's `tflite_error`), TFLite FLOAT is timed instead
(tflite_f32_*: the Keras model converted here, batch-1 concrete function, in a child process as
the converter can crash), and the row says why. ONNX Runtime int8: quantize_static (QDQ, s8s8,
per-channel) of tf2onnx's float graph of the Keras model, as models/make_recurrent_models.py
makes its peer: float in / float out, the ONNX LSTM / GRU / Loop op stays float. Several outputs
(rnn_variants): SQNR = the worst output's, each output's in the JSON; top-1 on output 0. These
models get their own tables (time per call, SQNR / top-1) and stay out of issue 9's bars.

Layer benches ("micro"): single-layer Keras models built here at run time (3x3 conv
32x32x32->32, 1x1 conv 24x24x96->96, depthwise 3x3 at 48x48x96, dense 1024x1024, and the
few-channel layers of issue 17: catalog.MICRO), converted to int8 TFLite with a representative
dataset and read by fixnet from a temporary .h5, quantized with the same calibration data;
fixnet's other kernel builds (FIXNET_ISA=avx2, ...) are timed on them in a subprocess each.

Per model: MACs per sample (fixnet.cost), GMAC/s per runtime, and each runtime's output SQNR
(dB) against the Keras float output on the same inputs (the stored `keras_float` of the .npz;
for the layer benches, Keras run here). A peer *counts* where its SQNR is within 1 dB of the best
deployment peer's (TFLite XNNPACK, TFLite builtin, ONNX Runtime int8); one that does not is
still shown, marked. Summary: geometric mean and worst of fixnet / XNNPACK, and whether each
"Done when" bar of issue 9 holds (on the fixtures), and issue 17's (on the zoo models).

Peers that are not installed are listed as such; nothing is required but fixnet, numpy and rich.
TFLite comes from `tensorflow` if it imports, else `ai_edge_litert`, else `tflite_runtime`
(`--tflite` picks one). TensorFlow is imported only for the peers, never by fixnet.

Method: for each model and batch size, every runner is warmed up, then timed in rounds; in each
round every runner runs once (a sample = enough back-to-back calls to last --sample-ms, divided
by their number), in an order rotated each round (A,B,C / B,C,A / ...), so drift and the
other tenants of a shared machine hit all runners alike. Reported: the median per-call time
over rounds, and fixnet / runner = the median over rounds of (fixnet int8 sample / runner sample
of the same round): below 1, fixnet is faster. Every runtime is limited to --threads threads
(default 1; fixnet gets ``num_threads=--threads`` in its predict calls).

The modules (importing any of them parses no argument, sets no environment variable, imports
no peer runtime and writes no file; tests/test_bench_peerbench.py checks it):

  cli.py            the command line: parse_args, main(argv) (the thread and log variables are
                    set there, before NumPy or TensorFlow start)
  catalog.py        names and constants: runner keys and labels, fixture families and groups,
                    the layer benches, paths; imports nothing but the standard library
  models.py         which files --models means (fixtures, zoo, .h5 / .tflite paths, folders)
                    and ModelInputs
  tflite_inputs.py  a .tflite file's inputs: their types and shapes, seeded random draws,
                    TfliteFileInputs (per batch size)
  layer_benches.py  the one-layer Keras models made at run time (TensorFlow)
  runners/          one module per runtime (fixnet, TFLite, Keras, ONNX Runtime), base.py (the
                    Runner and the lazy TensorFlow import), children.py (the child processes),
                    tflite_file.py (TFLite on a .tflite file given on --models)
  model_bench.py    one model: build its runners, time them, check their outputs
  file_bench.py     one .tflite file: fixnet and TFLite on it, timed; exactness; or skipped
  exactness.py      fixnet's outputs against TFLite's on a .tflite file (equal values, max diff)
  measure.py        interleaved timing rounds, their summary, the host (fixnet.cli.measure's)
  accuracy.py       SQNR and top-1 against Keras float, the 1 dB counting rule
  verdicts.py       issue 9's and issue 17's bars
  tables.py         the report as tables (shared by the console and the Markdown)
  file_tables.py    the tables of the .tflite files (timing, exactness, skipped)
  report.py         the console report and the Markdown file
  run.py            a whole run (and --from-json)
  text.py           error messages on one line for table notes
"""
