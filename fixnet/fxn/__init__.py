"""The portable int8 model file (``.fxn``): one file holding everything a QuantizedModel runs
with (int8 weights, int32 biases, fixed-point multipliers and shifts, lookup tables, the step
graph, tensor shapes and quantization parameters) and nothing else: no float weights, no
calibration data, no code.

    qm.save("model.fxn")                  # fixnet.fxn.save_model(qm, "model.fxn")
    qm = fixnet.load("model.fxn")         # fixnet.runtime.load_fxn("model.fxn")

This package is the codec, below the runtime: reading gives the parts of a model (ModelParts:
its steps, tensors, inputs and outputs, checked as they are read); fixnet.runtime builds the
QuantizedModel from them and has ``check_model`` bind and run it once before handing it out.
Its modules: ``container`` (header, checksum, ZIP payload, manifest and arrays, each size,
type and index checked), ``stored`` (how format 2 stores each array), ``palette`` (int8
arrays as 4-bit indices), ``codec`` (step state <-> JSON values, the encoder, the registry of
step classes), ``parts`` (the manifest's tensors and steps -> ModelParts; check_model).

Layout (all integers little-endian)::

    offset  size  field
         0     7  magic b"FIXNET\\x00"
         7     4  uint32 format version (FORMAT_VERSION)
        11     8  uint64 payload length in bytes
        19    32  SHA-256 of the payload
        51     -  payload: a ZIP archive (deflate) holding
                    manifest.json          the graph, every non-array value, array specs
                    arrays.bin             every array's bytes (format 2; absent without arrays)
                    (format 1: arrays/NNNNN_attr.npy, one .npy per array, instead of arrays.bin)

The magic and the version come first and stay where they are in every future version, so any
fixnet can tell "not an .fxn file" from "an .fxn file from a newer fixnet" before anything else.
This fixnet writes format 2 and reads 1 and 2; a fixnet that reads only format 1 refuses a
format-2 file by its version ("written by a newer fixnet ... upgrade fixnet").

Format 2 stores what format 1 did, in fewer bytes (the same model, the same arrays, bit for
bit): the arrays in one entry instead of one .npy entry each (a ZIP entry and a .npy header
cost ~250 bytes, MobileNetV2's 217 arrays ~36 KB), each integer array in the narrowest integer
dtype that holds its values (reading widens it back), an array of one repeated value as that
value, multi-byte values as byte planes, the arrays of one attribute side by side, compact
JSON, deflate level 9. fixnet/fxn/stored.py specifies the stored forms.

manifest.json (format version 2)::

    {"format": "fixnet-int8-model", "format_version": 2, "fixnet_version": "0.1.0",
     "name": str, "converted_from": str (basename of the source model file),
     "inputs": [tensor name, ...], "outputs": [tensor name, ...],
     "tensors": [{"name": str, "shape": [int or null, ...], "qparams": {"scale": float,
                  "zero_point": int}, "length_of": [int or null, ...]}, ...],  # model order
     "steps": [{"class": "DenseStep", "module": "fixnet.ops.dense", "state": {attr: value}}],
     "arrays": {"0_0_w_q": {"dtype": "|i1", "shape": [int, ...], "offset": int, ...}, ...},
     "overflow_proven": bool or null}

An array's name is "<n>_<step>_<attribute>" (format 1: its entry, "arrays/NNNNN_attr.npy");
its spec gives its dtype, its shape, where its bytes start in arrays.bin and, optionally, how
they are stored ("as" a narrower dtype, a "fill" value, a "palette"; fixnet/fxn/stored.py).
Reading checks every spec, that the arrays' bytes tile arrays.bin exactly, and gives each
array in its spec's dtype and shape before anything else looks at it.

An int8 array with at most 16 distinct values in the whole array, or in each of its slices
along its first or last axis (codebook and int4 weights; any int8 array qualifies), is stored
as tables of int8 codes and 4-bit indices where that is smaller: its spec adds
``"palette": {"axis": null or the axis, "codes": codes per table, 1 to 16}`` and its bytes
are one uint8 array, per table its codes then its packed indices (fixnet/fxn/palette.py
gives the layout). Reading expands it to the identical int8 array of the spec's dtype and
shape. (Format 1 has the same palette spec; its entry then holds that uint8 array as a .npy.
A fixnet that predates palettes refuses such a file, naming the array.)

A null in a tensor's shape is a dimension of any length (fixnet/lengths.py): a model input's
null dimensions are the length symbols 0, 1, ... (in input order, then dimension order), and
``length_of`` (present exactly when the shape has a null) names, per dimension, the symbol a
null follows (null where the dimension is fixed). Steps keep null in the shapes they baked;
the runtime replaces it by the call's length. (A fixnet that predates this refuses such a file,
naming the tensor's shape: nothing is misread, so the format version stays 1.)

A step is stored as its class name and its state (``__getstate__()``, i.e. its ``__dict__``).
State values are JSON, with these tagged objects for what JSON lacks:
``{"$array": entry}`` (a stored array; one object stored once however often it is referenced),
``{"$tuple": [...]}``, ``{"$dict": [[key, value], ...]}`` (any keys, order kept),
``{"$np": dtype, "value": v}`` (a NumPy scalar), ``{"$float": "nan" | "inf" | "-inf"}``,
``{"$bytes": base64}``, ``{"$dataclass": "QParams", "fields": {...}}``.
Floats are written with Python's shortest round-trip repr, so they come back bit for bit.

Loading rebuilds each step from a registry of the Step subclasses defined in the fixnet package
(by class name); it never imports or calls anything the file names and never unpickles.
"""
from .codec import encode_model, save_model, step_registry  # noqa: F401
from .container import (FORMAT_VERSION, HEADER, HEADER_SIZE, MAGIC, MANIFEST_NAME,  # noqa: F401
                        FxnVersionError, FxnWriteError, is_fxn_file, read_manifest)
from .parts import ModelParts, check_model, check_plan, model_parts_from_bytes, read_model_parts  # noqa: F401
