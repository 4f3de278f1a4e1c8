"""The runtimes timed against fixnet, one module each: fixnet_runners (fixnet int8, and its
float reference), tflite (the TFLite interpreters), keras_float (Keras float), onnx_runtime
(ONNX Runtime int8 and float); base.py holds the Runner they all make and the lazy TensorFlow
import, children.py the child processes (another kernel build, a converter that may crash).

A runner holds a zero-argument callable per batch size that runs one predict and returns its
output as a NumPy array (a list of them for a model with several outputs), and how to read that
output as floats (int8 codes: scale and zero point). Building one may fail; that failure is
reported in the model's row, not raised."""
