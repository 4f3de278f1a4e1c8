"""Every error a user can cause is a FixnetError subclass whose message names the file,
layer or argument at fault."""


class FixnetError(Exception):
    """Base class of all errors fixnet raises on purpose."""


class ModelFileError(FixnetError):
    """The model file cannot be read: not HDF5, truncated, damaged, or not a Keras model."""


class MissingWeightError(ModelFileError):
    """A layer's weight is named in the config but absent (or misshapen) in the file."""


class UnsupportedLayerError(FixnetError):
    """The model holds layers fixnet cannot run; the message lists every one of them.

    ``layers`` is a list of ``(layer_name, class_name, reason)``.
    """

    def __init__(self, message, layers=()):
        super().__init__(message)
        self.layers = list(layers)


class InputError(FixnetError, ValueError):
    """An argument to predict/quantize has the wrong shape, dtype or values."""


class InputShapeError(InputError):
    """The input array's shape does not match the model's input."""


class InputDtypeError(InputError):
    """The input array's dtype is not one the model accepts."""


class NonFiniteInputError(InputError):
    """The input holds NaN or infinity."""


class CalibrationError(FixnetError):
    """The calibration data cannot be used (empty, wrong shape, non-finite)."""


class QuantizationError(FixnetError):
    """A tensor cannot be represented in the numeric contract (e.g. a bias beyond int32)."""


class OverflowRiskError(QuantizationError):
    """No proof that a layer's int32 accumulator cannot wrap; names the layer."""


class AccumulatorOverflowError(FixnetError):
    """Checked execution saw an int32 accumulator that would wrap; names the layer."""


class ArgumentError(FixnetError, ValueError):
    """An argument of a fixnet call with a type or value it does not take (the message
    names the call and the argument)."""


class DataFileError(FixnetError):
    """A data file given on the command line (calibration, evaluation or input data: .npy,
    .npz or a folder of images) cannot be read or does not fit the model; names the file."""


class ConfigError(ArgumentError):
    """A quantization config (fixnet.QuantConfig, quantize's keyword arguments, an override)
    that is not valid; the message names the setting or the layer pattern."""
