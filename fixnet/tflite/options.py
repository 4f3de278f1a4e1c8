"""An operator's builtin options table as a plain dict, read with the classes the ``tflite``
package generates from TFLite's schema.

Each options class has one accessor per field (``Padding()``, ``StrideW()``, ``NewShape(j)``
with ``NewShapeAsNumpy()``...). The dict keys are the schema's field names (``stride_w``);
enum fields give their enum's name (``"SAME"``, ``"RELU6"``); vectors give lists; strings str.
"""
import functools
import importlib
import re

from ._checked import checked

# fields that hold an enum, by schema field name -> the tflite enum class naming its values
ENUM_FIELDS = {
    "padding": "Padding",
    "fused_activation_function": "ActivationFunctionType",
    "weights_format": "FullyConnectedOptionsWeightsFormat",
    "kernel_type": "LSTMKernelType",
    "combiner": "CombinerType",
    "mode": "MirrorPadMode",
    "type": "LSHProjectionType",
    "algorithm": "RngAlgorithm",
    "reduce_function": "ReduceWindowFunction",
    "composite_attributes_format": "CustomOptionsFormat",
    "comparison_direction": "StablehloComparisonDirection",
    "compare_type": "StablehloComparisonType",
    **{name: "TensorType" for name in ("quantized_bias_type", "in_data_type", "out_data_type",
                                       "out_type", "output_type", "idx_out_type", "key_dtype",
                                       "value_dtype")},
}
_NOT_FIELDS = ("Init",)
_NOT_FIELD_SUFFIXES = ("Length", "IsNone", "AsNumpy", "BufferHasIdentifier")


class OptionsError(Exception):
    """An options field whose value the schema does not allow (an unknown enum value)."""


@functools.lru_cache(maxsize=None)
def enum_names(enum_name):
    """{value: name} of one of the schema's enums (tflite.<enum_name>)."""
    cls = getattr(importlib.import_module("tflite." + enum_name), enum_name)
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@functools.lru_cache(maxsize=None)
def options_class(union_name, code):
    """The generated class of options table ``code`` of union ``union_name`` ("BuiltinOptions"
    or "BuiltinOptions2"), with its name; None if this tflite package does not know the code."""
    name = enum_names(union_name).get(code)
    if name is None or name == "NONE":
        return None
    return name, getattr(importlib.import_module("tflite." + name), name)


@functools.lru_cache(maxsize=None)
def _fields(cls):
    """[(accessor, schema field name, is_vector)] of a generated options class."""
    out = []
    for attr, fn in vars(cls).items():
        if (attr.startswith("_") or attr in _NOT_FIELDS or attr.startswith("GetRootAs")
                or attr.endswith(_NOT_FIELD_SUFFIXES) or not callable(fn)
                or isinstance(fn, (classmethod, staticmethod))):
            continue
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", attr).lower()
        out.append((attr, snake, hasattr(cls, attr + "Length")))
    return tuple(out)


def _value(raw):
    if isinstance(raw, bytes):
        return raw.decode("utf-8")
    return raw


def read_options(cls, table):
    """The fields of the options table at ``table`` (a flatbuffers Table of the file) as a dict."""
    obj = cls()
    obj._tab = table
    checked(obj)
    out = {}
    for attr, name, is_vector in _fields(cls):
        if is_vector:
            if hasattr(cls, attr + "AsNumpy"):
                arr = getattr(obj, attr + "AsNumpy")()
                value = [] if isinstance(arr, int) else arr.tolist()
            else:
                value = [_value(getattr(obj, attr)(j)) for j in range(getattr(obj, attr + "Length")())]
        else:
            value = _value(getattr(obj, attr)())
        if name in ENUM_FIELDS and not is_vector and value is not None:
            names = enum_names(ENUM_FIELDS[name])
            if value not in names:
                raise OptionsError(f"field '{name}' holds {value}, not a {ENUM_FIELDS[name]} value "
                                   f"({', '.join(f'{v}: {n}' for v, n in sorted(names.items()))})")
            value = names[value]
        out[name] = value
    return out
