"""The operators that move codes without arithmetic (TRANSPOSE, STRIDED_SLICE cropping,
RESIZE_NEAREST_NEIGHBOR; RESIZE_BILINEAR, which interpolates codes) and the converter's
patterns that span several operators (a dilated convolution written as SPACE_TO_BATCH_ND ->
conv -> BATCH_TO_SPACE_ND; a float NEG between DEQUANTIZE and QUANTIZE): the op_<name>
methods of LayoutRules, mixed into fixnet.tflite.convert.Converter beside OpRules
(fixnet/tflite/op_rules.py)."""
import numpy as np

from ..ops.activation import LookupStep
from ..ops.reshape import TransposeStep
from ..ops.resize import CropStep, UpsampleStep
from .op_rules import _fault
from .steps import TfliteResizeBilinearStep, TfliteTileStep


class LayoutRules:
    """Operator handlers of Converter (see the module docstring); they use OpRules' helpers
    (qparams, nhwc, constant, ...)."""
    def op_transpose(self, op):
        """TRANSPOSE that keeps the batch axis first: the codes copied in the new order."""
        x, y = op.inputs[0], op.outputs[0]
        if self.qparams(x) != self.qparams(y):
            _fault("input and output are quantized differently")
        perm = [int(p) for p in self.constant(op.inputs[1], "permutation").reshape(-1)]
        rank = len(self.tensor(x).shape)
        if sorted(perm) != list(range(rank)) or perm[0] != 0:
            _fault(f"permutation {perm} (the batch axis must stay first)")
        self.steps.append(TransposeStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                        [self.define(y)], [p - 1 for p in perm[1:]]))

    def op_strided_slice(self, op):
        """STRIDED_SLICE of an activation that crops H and W (or L of [N, L, C]) with stride 1
        and keeps the batch and channels: Keras' Cropping layers (a copy of codes)."""
        x, y = op.inputs[0], op.outputs[0]
        o = op.options
        if int(o.get("shrink_axis_mask", 0)) == 2 and len(self.tensor(x).shape) == 3:
            return self.strided_slice_time_step(op)     # one time step (fixnet/tflite/lstm.py)
        for mask in ("ellipsis_mask", "new_axis_mask", "shrink_axis_mask"):
            if int(o.get(mask, 0)):
                _fault(f"{mask} {o[mask]}")
        if o.get("offset"):
            _fault("offset slicing")
        if self.qparams(x) != self.qparams(y):
            _fault("input and output are quantized differently")
        shape = [int(d) for d in self.tensor(x).shape]
        rank = len(shape)
        begin, end, step = (self.constant(op.inputs[k], what).astype(np.int64).reshape(-1)
                            for k, what in ((1, "begin"), (2, "end"), (3, "strides")))
        if not (len(begin) == len(end) == len(step) == rank) or np.any(step != 1):
            _fault(f"begin {begin.tolist()}, end {end.tolist()}, strides {step.tolist()}")
        crops = []
        for a in range(rank):
            lo = 0 if int(o.get("begin_mask", 0)) >> a & 1 else int(begin[a])
            hi = shape[a] if int(o.get("end_mask", 0)) >> a & 1 else int(end[a])
            lo, hi = (v + shape[a] if v < 0 else v for v in (lo, hi))
            lo, hi = min(max(lo, 0), shape[a]), min(max(hi, 0), shape[a])
            if hi <= lo:
                _fault(f"an empty slice along axis {a}")
            crops.append((lo, shape[a] - hi))
        if crops[0] != (0, 0) or crops[-1] != (0, 0) or rank not in (3, 4):
            _fault(f"slices {crops}: only H and W (or L) are cropped here")
        hw = (crops[1], (0, 0)) if rank == 3 else (crops[1], crops[2])
        self.steps.append(CropStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                   [self.define(y)], hw, self.nhwc(x, rank3=True)))

    def op_tile(self, op):
        """TILE of an activation, the batch axis not tiled: the codes copied (TfliteTileStep;
        Keras' UpSampling1D is EXPAND_DIMS -> TILE -> RESHAPE)."""
        x, y = op.inputs[0], op.outputs[0]
        if self.qparams(x) != self.qparams(y):
            _fault("input and output are quantized differently")
        mult = [int(m) for m in self.constant(op.inputs[1], "multiples").reshape(-1)]
        shape = self.sample_shape(x)
        if len(mult) != len(shape) + 1 or mult[0] != 1 or min(mult) < 1:
            _fault(f"multiples {mult} (the batch axis is not tiled here)")
        if tuple(d * m for d, m in zip(shape, mult[1:])) != self.sample_shape(y):
            _fault(f"{self.tensor(x).shape} tiled by {mult} is not {self.tensor(y).shape}")
        self.steps.append(TfliteTileStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                         [self.define(y)], shape, mult[1:]))

    def op_resize_nearest_neighbor(self, op):
        """RESIZE_NEAREST_NEIGHBOR by whole factors without align_corners: TFLite's source
        index floor(out * in / out_size) (with half_pixel_centers floor((out + 0.5) * in /
        out_size)) is out // factor either way: each code repeated (upsample_nearest)."""
        x, y = op.inputs[0], op.outputs[0]
        if op.options.get("align_corners"):
            _fault("align_corners")
        if self.qparams(x) != self.qparams(y):
            _fault("input and output are quantized differently")
        (h, w_, c), (oh, ow, oc) = self.nhwc(x), self.nhwc(y)
        if c != oc or oh % h or ow % w_:
            _fault(f"{(h, w_)} -> {(oh, ow)} is not a whole-factor up-sampling")
        self.steps.append(UpsampleStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                       [self.define(y)], (oh // h, ow // w_), (h, w_, c)))

    def op_resize_bilinear(self, op):
        """RESIZE_BILINEAR with input and output quantized alike (TFLite interpolates the
        codes): TfliteResizeBilinearStep, TFLite's integer rule."""
        x, y = op.inputs[0], op.outputs[0]
        self.int8_only(x, y)
        if self.qparams(x) != self.qparams(y):
            _fault("input and output are quantized differently")
        (h, w_, c), (oh, ow, oc) = self.nhwc(x), self.nhwc(y)
        if c != oc or min(h, w_, oh, ow) < 1:
            _fault(f"{(h, w_, c)} -> {(oh, ow, oc)}")
        self.steps.append(TfliteResizeBilinearStep(
            self.names[y], self.layer_name(y), [self.name_of(x)], [self.define(y)], (h, w_, c),
            (oh, ow, oc), op.options.get("align_corners", False),
            op.options.get("half_pixel_centers", False)))

    def op_space_to_batch_nd(self, op):
        """The converter writes a dilated convolution as SPACE_TO_BATCH_ND -> [EXPAND_DIMS] ->
        CONV_2D | DEPTHWISE_CONV_2D (VALID, stride 1) -> [RESHAPE | SQUEEZE] ->
        BATCH_TO_SPACE_ND. Along each spatial axis (length L, block d, paddings (p0, p1),
        crops (c0, c1), kernel k), the sub-images' convolutions reassembled are
        z[o] = sum_j xp[o + j * d] * w[j] over x padded by (p0, p1) with the zero point
        (TFLite's SPACE_TO_BATCH_ND pads with it), and y[i] = z[i + c0]: one convolution
        with dilation d and padding p0 - c0 before, the same integers. The chain becomes that
        one step; its inner ops are skipped."""
        x, s2b = op.inputs[0], op.outputs[0]
        block = [int(v) for v in self.constant(op.inputs[1], "block shape").reshape(-1)]
        pads_in = self.constant(op.inputs[2], "paddings").astype(np.int64).reshape(-1, 2)
        chain = [self.only_consumer(s2b)]
        if chain[-1].op == "EXPAND_DIMS":
            chain.append(self.only_consumer(chain[-1].outputs[0]))
        conv = chain[-1]
        if conv.op not in ("CONV_2D", "DEPTHWISE_CONV_2D") or conv.inputs[0] != (
                chain[-2].outputs[0] if len(chain) > 1 else s2b):
            _fault(f"followed by {conv.op}: only a convolution between SPACE_TO_BATCH_ND and "
                   "BATCH_TO_SPACE_ND runs (a dilated convolution)")
        o = conv.options
        if (o.get("padding") != "VALID" or int(o.get("stride_h", 1)) != 1
                or int(o.get("stride_w", 1)) != 1 or int(o.get("dilation_h_factor", 1)) != 1
                or int(o.get("dilation_w_factor", 1)) != 1):
            _fault("the convolution inside is not VALID with stride 1 and no dilation")
        chain.append(self.only_consumer(conv.outputs[0]))
        if chain[-1].op in ("RESHAPE", "SQUEEZE"):
            chain.append(self.only_consumer(chain[-1].outputs[0]))
        b2s = chain[-1]
        if b2s.op != "BATCH_TO_SPACE_ND":
            _fault(f"the convolution is followed by {b2s.op}, not BATCH_TO_SPACE_ND")
        y = b2s.outputs[0]
        if [int(v) for v in self.constant(b2s.inputs[1], "block shape").reshape(-1)] != block:
            _fault("BATCH_TO_SPACE_ND's block shape is not SPACE_TO_BATCH_ND's")
        crops = self.constant(b2s.inputs[2], "crops").astype(np.int64).reshape(-1, 2)
        x_qp = self.qparams(x)
        if self.qparams(s2b) != x_qp or self.qparams(conv.inputs[0]) != x_qp:
            _fault("SPACE_TO_BATCH_ND requantizes")
        if self.qparams(y) != self.qparams(conv.outputs[0]):
            _fault("BATCH_TO_SPACE_ND requantizes")
        kernel = self.tensor(conv.inputs[1]).shape[1:3]
        inner = self.sample_shape(conv.inputs[0])
        rank = len(self.tensor(x).shape)
        if rank == 4 and len(block) == 2:
            nhwc_in, nhwc_out, axes = self.nhwc(x), self.nhwc(y), (0, 1)
        elif rank == 3 and len(block) == 1 and len(inner) == 3:
            (length, c), (out_len, cy) = self.sample_shape(x), self.sample_shape(y)
            if inner[0] == 1:           # EXPAND_DIMS made [N, 1, L, C]: the axis is W
                nhwc_in, nhwc_out, axes = (1, length, c), (1, out_len, cy), (1,)
            else:
                nhwc_in, nhwc_out, axes = (length, 1, c), (out_len, 1, cy), (0,)
        else:
            _fault(f"block shape {block} on a rank-{rank} tensor")
        if pads_in.shape != (len(block), 2) or crops.shape != (len(block), 2) \
                or np.any(pads_in < 0) or np.any(crops < 0) or min(block) < 1:
            _fault(f"paddings {pads_in.tolist()}, crops {crops.tolist()}")
        dilation, pads = [1, 1], [(0, 0), (0, 0)]
        for a, d, (p0, p1), (c0, c1) in zip(axes, block, pads_in.tolist(), crops.tolist()):
            n, k, n_out = nhwc_in[a], int(kernel[a]), nhwc_out[a]
            padded = n + p0 + p1
            if padded % d or c0 > p0 or (padded // d - k + 1) * d - c0 - c1 != n_out:
                _fault(f"block {d}, paddings {(p0, p1)}, crops {(c0, c1)} and kernel {k} do not "
                       f"make a dilated convolution of {n} to {n_out}")
            end = n_out + (k - 1) * d - n - (p0 - c0)
            if end > p1:
                _fault("the convolution reads past SPACE_TO_BATCH_ND's padding")
            dilation[a], pads[a] = d, (p0 - c0, max(end, 0))
        for a in range(2):
            if a not in axes and (kernel[a] != 1 or nhwc_in[a] != nhwc_out[a]):
                _fault(f"kernel {tuple(kernel)} on a rank-{rank} tensor")
        if any(c.index <= op.index for c in chain):
            _fault("the convolution's operators come before SPACE_TO_BATCH_ND in the file")
        fold = (x, y, tuple(nhwc_in), tuple(nhwc_out), tuple(dilation), tuple(pads))
        getattr(self, "op_" + conv.op.lower())(conv, fold=fold)
        self.skip.update(c.index for c in chain)

    def only_consumer(self, t):
        """The one operator reading tensor ``t`` (besides ops that only compute shapes)."""
        shape_only = getattr(self, "shape_only", set())
        users = [c for c in self.consumers.get(t, [])
                 if not (c.outputs and all(o in shape_only for o in c.outputs))]
        if len(users) != 1 or t in self.m.outputs:
            _fault(f"tensor '{self.tensor(t).name}' feeds {len(users)} operators")
        return users[0]

    FLOAT_ISLAND_OPS = {"NEG": np.negative, "RESHAPE": None, "SQUEEZE": None, "EXPAND_DIMS": None}

    def op_dequantize(self, op):
        """DEQUANTIZE -> float NEG (and RESHAPE / SQUEEZE / EXPAND_DIMS) -> QUANTIZE inside an
        int8 model (how the converter leaves tf.math.negative): 256 possible inputs, so a
        lookup table of TFLite's float32 arithmetic: v = scale * (q - zp) (float32), -v,
        then round(v / out_scale) half away from zero + out_zp, clamped. The chain becomes
        the table; its other ops are skipped."""
        x = op.inputs[0]
        chain, elementwise, t = [], [], op.outputs[0]
        while True:
            c = self.only_consumer(t)
            if c.index <= op.index or c in chain:
                _fault(f"{c.op} (operator {c.index}) comes before it in the file")
            chain.append(c)
            if c.op == "QUANTIZE":
                break
            if c.op not in self.FLOAT_ISLAND_OPS or self.tensor(c.outputs[0]).type != "FLOAT32":
                _fault(f"a float tensor feeding {c.op} (only NEG, views, then QUANTIZE run "
                       "between DEQUANTIZE and QUANTIZE)")
            if self.FLOAT_ISLAND_OPS[c.op] is not None:
                elementwise.append(self.FLOAT_ISLAND_OPS[c.op])
            t = c.outputs[0]
        y = chain[-1].outputs[0]
        self.int8_only(x, y)
        x_qp, y_qp = self.qparams(x), self.qparams(y)
        q = np.arange(-128, 128, dtype=np.int32)
        v = np.float32(x_qp.scale) * (q - x_qp.zero_point).astype(np.float32)
        for f in elementwise:
            v = f(v).astype(np.float32)
        r = (v / np.float32(y_qp.scale)).astype(np.float64)
        codes = np.sign(r) * np.floor(np.abs(r) + 0.5) + y_qp.zero_point
        table = np.clip(codes, -128, 127).astype(np.int8)
        self.steps.append(LookupStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                     [self.define(y)], table))
        self.skip.update(c.index for c in chain)
