"""fixnet: Keras models in int8 fixed point, run by integer-only Cython kernels.

    import fixnet
    qm = fixnet.load("model.h5").quantize(calibration_inputs)
    probs = qm.predict(x)
"""
from .errors import (AccumulatorOverflowError, ArgumentError, CalibrationError, ConfigError, DataFileError, FixnetError, InputDtypeError,
                     InputError, InputShapeError, MissingWeightError, ModelFileError,
                     NonFiniteInputError, OverflowRiskError, QuantizationError,
                     UnsupportedLayerError)
from .api import FloatModel, load
from .runtime import QuantizedModel
from .quant.config import LayerOverride, QuantConfig
from .quant.datafree import DataFreeWarning
from ._version import __version__
from .tflite import steps as _tflite_steps  # noqa: F401  (step classes .fxn files may name)
from .tflite import lstm as _tflite_lstm  # noqa: F401  (TfliteLstmStep)
from .tflite import steps16 as _tflite_steps16  # noqa: F401  (the 16x8 step classes)

__all__ = [
    "load", "FloatModel", "QuantizedModel", "FixnetError", "ModelFileError", "MissingWeightError",
    "UnsupportedLayerError", "InputError", "InputShapeError", "InputDtypeError",
    "NonFiniteInputError", "CalibrationError", "QuantizationError", "OverflowRiskError",
    "AccumulatorOverflowError", "ArgumentError", "ConfigError", "DataFileError", "DataFreeWarning",
    "QuantConfig", "LayerOverride",
]
