"""The pure-NumPy integer oracle: the bit-exact ground truth for every Cython kernel and for
checked execution. One module per family of ops, mirroring fixnet/_kernels/; everything is
re-exported here, so ``from fixnet import oracle; oracle.dense(...)``."""
from .core import *          # noqa: F401,F403  fixed-point helpers, quantize, dense, softmax, ...
from .conv import *          # noqa: F401,F403  conv2d, depthwise_conv2d
from .pool import *          # noqa: F401,F403  pooling, binary elementwise, concat, pad
from .activation import *    # noqa: F401,F403  prelu
from .recurrent import *    # noqa: F401,F403  rnn: SimpleRNN, GRU, LSTM; int16 function tables
from .resize import *        # noqa: F401,F403  upsample, crop, zero_insert (data moves)
from .sequence import *      # noqa: F401,F403  embedding, masking, masked_mean
