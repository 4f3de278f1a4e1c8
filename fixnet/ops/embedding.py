"""embedding: y[..., :] = table[ids[...]]. Keras Embedding: integer token ids -> rows of an
[V, D] table (weights: table). Ids are cast to integers as Keras casts them (toward zero);
an id outside [0, V) is an InputError naming the layer.

int8: a row lookup (kernel: fixnet/_kernels/_embedding.pyx; oracle: fixnet/oracle/embedding.py).
- The ids: an int8 code holds token id k exactly as k - 128, i.e. IDS_QPARAMS (scale 1.0, zero
  point -128), ids 0..255. A model input read only by Embedding layers (and the masks of
  Embedding(mask_zero=True)) gets these qparams whatever its calibrated range
  (Op.input_qparams): float ids are quantized by predict's input stage (rounded to the
  nearest integer, where Keras truncates: give integer ids; clamped to 0..255, so a negative
  id reads row 0); int8 inputs are the codes k - 128; uint8 inputs are the ids themselves.
  A vocabulary of more than 256 rows, or ids that come from another layer, are refused:
  ids above 255 do not fit int8 codes.
- The table: int8 codes at the output's qparams, which cover the range of the whole table
  (rows that calibration never read are not clipped).
- An id >= V (a code up to 127 is id 255) raises InputError naming the layer, at run time,
  before any row is read out of bounds.

int16 (one type per step): the int8 ids input is converted exactly to int16 as every int8
tensor feeding an int16 node is (code - zero point: the token id itself, scale 1.0, zero point
0: IDS16_QPARAMS), and the table holds int16 codes at the output's int16 scale (symmetric,
max |table| / 32767). The model input still holds ids 0..255 as int8 codes.
"""
import numpy as np

from .. import oracle
from .._kernels import _embedding
from ..errors import InputError, QuantizationError, UnsupportedLayerError
from ..quant.qparams import QParams, qparams_from_range
from ..step import Step
from .base import Op, register

# Token ids in int8: code k - 128 is id k (uint8 inputs, codes + 128, are the ids themselves).
IDS_QPARAMS = QParams(1.0, -128)
# The same ids converted to int16 (code - zero point): code k is id k.
IDS16_QPARAMS = QParams(1.0, 0, 16)
MAX_VOCAB = 256


def token_ids(x, vocab, where, what="the layer's input_dim"):
    """Integer token ids of float input ``x`` (cast toward zero, as Keras casts them);
    InputError naming ``where`` for a NaN or infinity or an id outside [0, vocab)."""
    x = np.asarray(x, np.float64)
    if not np.all(np.isfinite(x)):
        raise InputError(f"{where}: token ids hold NaN or infinity")
    ids = np.trunc(x).astype(np.int64)
    bad = (ids < 0) | (ids >= vocab)
    if bad.any():
        raise InputError(f"{where}: token id {int(ids[bad].flat[0])} is outside [0, {vocab}) "
                         f"({what})")
    return ids


def _vocab_too_large(node):
    v = node.weights["table"].shape[0]
    if v > MAX_VOCAB:
        return (f"a vocabulary of {v} token ids (input_dim); int8 execution holds ids 0..255: "
                "ids above 255 do not fit int8 codes")
    return None


@register
class Embedding(Op):
    name = "embedding"

    def infer_shapes(self, node, in_shapes):
        (s,) = in_shapes
        table = node.weights["table"]
        if table.ndim != 2:
            raise UnsupportedLayerError(f"{node.describe()}: embedding table of shape {table.shape}")
        return [tuple(s) + (table.shape[1],)]

    def run_float(self, node, inputs):
        table = node.weights["table"]
        return [table.astype(np.float64)[token_ids(inputs[0], table.shape[0], node.describe())]]

    def int8_unsupported(self, node):
        return _vocab_too_large(node)

    def input_qparams(self, node, index):
        return None if _vocab_too_large(node) else IDS_QPARAMS

    def output_qparams(self, node, q):
        table = np.asarray(node.weights["table"], np.float64)
        try:
            # an empty table: the qparams of an empty range, [0, 0]
            return [qparams_from_range(table.min(), table.max(), bits=q.bits) if table.size
                    else qparams_from_range(0.0, 0.0, bits=q.bits)]
        except QuantizationError as e:
            raise QuantizationError(f"{node.describe()}: embedding table: {e}") from None

    def quantize(self, node, q):
        why = _vocab_too_large(node)
        ids = model_ids(node, q)
        if why is None and ids not in q.graph.inputs:
            src = q.graph.producers()[ids]
            why = (f"its token ids come from {src.describe()}, not from a model input; int8 "
                   "holds token ids exactly only in a model input that Embedding layers alone read")
        elif why is None and q.qparams(ids) != IDS_QPARAMS:
            others = [n.describe() for n in q.graph.consumers()[ids]
                      if n.op not in ("embedding", "token_mask")]
            why = (f"model input '{ids}' is also read by {', '.join(others) or 'another layer'}, "
                   f"so it is quantized with its calibrated range ({q.qparams(ids)}) and does "
                   "not hold token ids exactly")
        if why is not None:
            raise UnsupportedLayerError(f"{node.describe()}: cannot run in int8: {why}")
        # the ids the step reads: the model input, or (an int16 node) its exact int16 copy
        ids_qp = q.qparams(node.inputs[0])
        if ids_qp not in (IDS_QPARAMS, IDS16_QPARAMS):
            raise UnsupportedLayerError(f"{node.describe()}: its token ids '{node.inputs[0]}' are "
                                        f"quantized with {ids_qp}, not as token ids")
        y_qp = q.qparams(node.outputs[0])
        return EmbeddingStep(node.name, node.layer, node.inputs, node.outputs,
                             y_qp.quantize(node.weights["table"]), ids_qp.zero_point)


def model_ids(node, q):
    """The tensor of token ids the graph gives ``node`` (an int16 node reads an int16 copy of
    it, made by the quantizer: the graph's node of the same name reads the tensor itself)."""
    original = next((n for n in q.graph.nodes if n.name == node.name), node)
    return original.inputs[0]


class EmbeddingStep(Step):
    """y = oracle.embedding(ids, ids_zp, table_q); an id without a row is an InputError.
    table_q: int8 or int16 [V, D], the output's codes (its type is the step's)."""
    op = "embedding"

    def __init__(self, name, layer, inputs, outputs, table_q, ids_zp):
        super().__init__(name, layer, inputs, outputs)
        table_q = np.asarray(table_q)
        self.table_q = np.ascontiguousarray(
            table_q, np.int16 if table_q.dtype == np.int16 else np.int8)
        self.ids_zp = int(ids_zp)

    def bad_id_error(self, token_id):
        return InputError(f"layer '{self.layer}' (Embedding): token id {token_id} is outside "
                          f"[0, {self.table_q.shape[0]}) (the layer's input_dim)")

    def bind(self, bufs):
        ids = bufs[self.inputs[0]].reshape(-1)
        call = _embedding.EmbeddingCall(ids, self.table_q, self.ids_zp,
                                       bufs[self.outputs[0]].reshape(-1, self.table_q.shape[1]))

        def run():          # a Python step: the pass cannot raise from C
            bad = call()
            if bad >= 0:
                raise self.bad_id_error(int(ids[bad]) - self.ids_zp)
        return run

    def oracle(self, ins):
        bad = oracle.embedding_bad_ids(ins[0], self.ids_zp, self.table_q.shape[0])
        if bad.size:
            raise self.bad_id_error(int(bad[0]))
        return [oracle.embedding(ins[0], self.ids_zp, self.table_q)]
