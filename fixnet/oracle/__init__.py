"""The pure-NumPy integer oracle: the bit-exact ground truth for every Cython kernel and for
checked execution. One module per op, named as its op's module in fixnet/ops/ (``core`` holds
the fixed-point helpers they share); everything is re-exported here, so
``from fixnet import oracle; oracle.dense(...)``."""
from .core import *            # noqa: F401,F403  fixed-point helpers, quantize, dequantize
from .dense import *           # noqa: F401,F403
from .affine import *          # noqa: F401,F403
from .activation import *      # noqa: F401,F403  rescale (requantize), lookup
from .softmax import *         # noqa: F401,F403
from .prelu import *           # noqa: F401,F403
from .conv import *            # noqa: F401,F403  conv2d, depthwise_conv2d
from .conv_transpose import *  # noqa: F401,F403  zero_insert
from .pool import *            # noqa: F401,F403  pooling, pad
from .merge import *           # noqa: F401,F403  add, mul, maximum, concatenate
from .resize import *          # noqa: F401,F403  upsample, crop
from .recurrent import *       # noqa: F401,F403  rnn: SimpleRNN, GRU, LSTM; int16 tables
from .embedding import *       # noqa: F401,F403
from .mask import *            # noqa: F401,F403  masking, masked_mean
