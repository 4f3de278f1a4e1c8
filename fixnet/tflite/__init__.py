"""Reading TensorFlow Lite (.tflite) model files into plain, checked Python values.

    from fixnet.tflite import read_tflite
    m = read_tflite("model.tflite")       # a TfliteModel: tensors, operators, quantization
    [op.op for op in m.operators]         # ["CONV_2D", "MAX_POOL_2D", ...]

Needs the optional extra ``pip install 'fixnet[tflite]'`` (the ``tflite`` and ``flatbuffers``
packages) to read a file; importing this package does not. No op is run or mapped here.
"""
from .model import Operator, OperatorCode, Quantization, SignatureDef, Tensor, TfliteModel
from .reader import TfliteDependencyError, TfliteFileError, is_tflite_file, read_tflite

__all__ = ["read_tflite", "is_tflite_file", "TfliteModel", "Tensor", "Operator", "OperatorCode", "Quantization",
           "SignatureDef", "TfliteFileError", "TfliteDependencyError"]
