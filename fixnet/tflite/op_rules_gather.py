"""TFLite operators that move codes along the sample axes without arithmetic, beyond what
LayoutRules maps onto fixnet's own steps: SLICE, STRIDED_SLICE (any strides, shrinking axes),
SPLIT, SPLIT_V, UNPACK, GATHER with constant indices, DEPTH_TO_SPACE, SPACE_TO_DEPTH,
REVERSE_V2. Each output becomes a TfliteGatherStep whose index map is the operator applied to
the element numbers of one sample (np.arange), with NumPy's slicing, which follows the same
rules as TensorFlow's. The batch axis must come through whole: an operator that selects,
splits or reorders along it is refused; so is one whose input and output are quantized
differently (TFLite's kernels copy the codes)."""
import numpy as np

from .op_rules import _Fault, _fault
from .steps import TfliteGatherStep


class GatherRules:
    """op_<name> handlers of Converter (mixed in before LayoutRules: STRIDED_SLICE tries the
    crop first)."""

    # -- helpers ---------------------------------------------------------------------------
    def numbers(self, i):
        """One sample's element numbers in the shape of TFLite tensor ``i`` with its batch
        axis kept (size 1): [1, *sample_shape]."""
        shape = self.sample_shape(i)
        return np.arange(int(np.prod(shape)), dtype=np.int64).reshape((1,) + shape)

    def gather_to(self, x, y, index):
        """Append the step that writes tensor ``y`` as tensor ``x``'s codes at ``index``."""
        if self.qparams(x) != self.qparams(y):
            _fault("input and output are quantized differently")
        index = np.asarray(index)
        if index.shape != (1,) + self.sample_shape(y):
            _fault(f"computes a {list(index.shape[1:])} sample where the file declares "
                   f"{list(self.sample_shape(y))}")
        self.steps.append(TfliteGatherStep(self.names[y], self.layer_name(y), [self.name_of(x)],
                                           [self.define(y)], index.reshape(-1),
                                           int(np.prod(self.sample_shape(x)))))

    def axis_of(self, op, value, rank):
        a = int(value)
        a = a + rank if a < 0 else a
        if not 0 <= a < rank:
            _fault(f"axis {value} of a rank-{rank} tensor")
        if a == 0:
            _fault("it works along the batch axis")
        return a

    # -- the operators ---------------------------------------------------------------------
    def op_slice(self, op):
        x, y = op.inputs[0], op.outputs[0]
        rank = len(self.tensor(x).shape)
        begin = self.constant(op.inputs[1], "begin").astype(np.int64).reshape(-1)
        size = self.constant(op.inputs[2], "size").astype(np.int64).reshape(-1)
        if len(begin) != rank or len(size) != rank:
            _fault(f"begin {begin.tolist()}, size {size.tolist()} for rank {rank}")
        if begin[0] != 0 or size[0] not in (-1, self.tensor(x).shape[0]):
            _fault("it slices the batch axis")
        n = self.numbers(x)
        sl = [slice(None)] + [slice(int(b), None if s == -1 else int(b + s))
                              for b, s in zip(begin[1:], size[1:])]
        self.gather_to(x, y, n[tuple(sl)])

    def op_strided_slice(self, op):
        try:
            return super().op_strided_slice(op)
        except _Fault:
            pass
        x, y = op.inputs[0], op.outputs[0]
        o = op.options
        for mask in ("ellipsis_mask", "new_axis_mask"):
            if int(o.get(mask, 0)):
                _fault(f"{mask} {o[mask]}")
        if o.get("offset"):
            _fault("offset slicing")
        rank = len(self.tensor(x).shape)
        begin, end, step = (self.constant(op.inputs[k], what).astype(np.int64).reshape(-1)
                            for k, what in ((1, "begin"), (2, "end"), (3, "strides")))
        if not (len(begin) == len(end) == len(step) == rank) or np.any(step == 0):
            _fault(f"begin {begin.tolist()}, end {end.tolist()}, strides {step.tolist()}")
        bm, em, sm = (int(o.get(k, 0)) for k in ("begin_mask", "end_mask", "shrink_axis_mask"))
        sl = []
        for a in range(rank):
            if sm >> a & 1:
                sl.append(int(begin[a]))
            else:
                sl.append(slice(None if bm >> a & 1 else int(begin[a]),
                                None if em >> a & 1 else int(end[a]), int(step[a])))
        batch = range(self.tensor(x).shape[0])
        if not isinstance(sl[0], slice) or batch[sl[0]] != batch:
            _fault("it slices the batch axis")
        n = self.numbers(x)
        self.gather_to(x, y, n[(slice(None),) + tuple(sl[1:])])

    def split_outputs(self, op, x, axis, sizes):
        n = self.numbers(x)
        if sum(sizes) != n.shape[axis] or len(sizes) != len(op.outputs):
            _fault(f"sizes {sizes} along an axis of {n.shape[axis]}")
        starts = np.cumsum([0] + list(sizes))
        for k, y in enumerate(op.outputs):
            sl = [slice(None)] * n.ndim
            sl[axis] = slice(int(starts[k]), int(starts[k + 1]))
            self.gather_to(x, y, n[tuple(sl)])

    def op_split(self, op):
        axis_t, x = op.inputs[0], op.inputs[1]
        rank = len(self.tensor(x).shape)
        axis = self.axis_of(op, self.constant(axis_t, "axis").reshape(-1)[0], rank)
        k = int(op.options.get("num_splits", len(op.outputs)))
        d = self.tensor(x).shape[axis]
        if k < 1 or d % k:
            _fault(f"{k} splits of an axis of {d}")
        self.split_outputs(op, x, axis, [d // k] * k)

    def op_split_v(self, op):
        x = op.inputs[0]
        rank = len(self.tensor(x).shape)
        axis = self.axis_of(op, self.constant(op.inputs[2], "axis").reshape(-1)[0], rank)
        sizes = [int(s) for s in self.constant(op.inputs[1], "size_splits").reshape(-1)]
        d = int(self.tensor(x).shape[axis])
        if sizes.count(-1) == 1:
            sizes[sizes.index(-1)] = d - (sum(sizes) + 1)
        self.split_outputs(op, x, axis, sizes)

    def op_unpack(self, op):
        x = op.inputs[0]
        rank = len(self.tensor(x).shape)
        axis = self.axis_of(op, op.options.get("axis", 0), rank)
        n = self.numbers(x)
        if n.shape[axis] != len(op.outputs):
            _fault(f"{len(op.outputs)} outputs of an axis of {n.shape[axis]}")
        for k, y in enumerate(op.outputs):
            self.gather_to(x, y, np.take(n, k, axis=axis))

    def op_gather(self, op):
        x = op.inputs[0]
        rank = len(self.tensor(x).shape)
        if int(op.options.get("batch_dims", 0)):
            _fault(f"batch_dims {op.options['batch_dims']}")
        axis = self.axis_of(op, op.options.get("axis", 0), rank)
        idx = self.constant(op.inputs[1], "indices").astype(np.int64)
        n = self.numbers(x)
        d = n.shape[axis]
        if idx.size and (idx.min() < -d or idx.max() >= d):
            _fault(f"an index outside the axis of {d}")
        self.gather_to(x, op.outputs[0], np.take(n, np.where(idx < 0, idx + d, idx), axis=axis))

    def op_reverse_v2(self, op):
        x = op.inputs[0]
        rank = len(self.tensor(x).shape)
        axes = [self.axis_of(op, a, rank) for a in self.constant(op.inputs[1], "axis").reshape(-1)]
        self.gather_to(x, op.outputs[0], np.flip(self.numbers(x), axis=tuple(axes)))

    def op_depth_to_space(self, op):
        x = op.inputs[0]
        b = int(op.options.get("block_size", 0))
        n = self.numbers(x)
        if n.ndim != 4 or b < 1 or n.shape[3] % (b * b):
            _fault(f"block size {b} of a {list(self.tensor(x).shape)} tensor")
        _, h, w, c = n.shape
        m = n.reshape(1, h, w, b, b, c // (b * b)).transpose(0, 1, 3, 2, 4, 5)
        self.gather_to(x, op.outputs[0], m.reshape(1, h * b, w * b, c // (b * b)))

    def op_space_to_depth(self, op):
        x = op.inputs[0]
        b = int(op.options.get("block_size", 0))
        n = self.numbers(x)
        if n.ndim != 4 or b < 1 or n.shape[1] % b or n.shape[2] % b:
            _fault(f"block size {b} of a {list(self.tensor(x).shape)} tensor")
        _, h, w, c = n.shape
        m = n.reshape(1, h // b, b, w // b, b, c).transpose(0, 1, 3, 2, 4, 5)
        self.gather_to(x, op.outputs[0], m.reshape(1, h // b, w // b, b * b * c))

