# cython: language_level=3
"""The parameters of each kernel family, one C struct each (declarations only: no module).

A kernel's Python entry points (``Conv2dCall``, ``conv2d``, ...) take their arrays and one
``params`` mapping: a dict whose keys are exactly the struct's field names, built once at plan
time by the op's step (``fixnet/ops/X.py``: ``kernel_params()``), the same mapping the
oracle's function of that op takes (``fixnet/oracle/X.py``). The kernel checks the keys
(``fixedpoint.check_params``: a missing or unknown key is an error naming it), lets Cython
convert the mapping to the struct, and checks the values, naming the field.

Field names and order are those of the positional arguments the kernels took before.
"""

# conv2d (with groups): _conv.Conv2dCall / conv2d / tap_offsets; oracle.conv2d
ctypedef struct conv2d_params:
    int stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left
    int groups
    int pad_value, out_zp, act_min, act_max

# depthwise_conv2d: _conv.DepthwiseConv2dCall / depthwise_conv2d; oracle.depthwise_conv2d
ctypedef struct depthwise_params:
    int stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left
    int depth_multiplier
    int pad_value, out_zp, act_min, act_max

# max and average pooling: _pool.MaxPool2dCall / AvgPool2dCall / max_pool2d / avg_pool2d
ctypedef struct pool_params:
    int pool_h, pool_w, stride_h, stride_w, pad_top, pad_left

# pad: _layout.PadNhwcCall / pad_nhwc (value: the zero point)
ctypedef struct pad_params:
    int top, bottom, left, right, value

# add, subtract, average: _merge.AddCall / add
ctypedef struct add_params:
    int x_zp, x_m0, x_shift, y_zp, y_m0, y_shift, left_shift, out_m0, out_shift
    int out_zp, act_min, act_max, subtract

# multiply: _merge.MulCall / mul
ctypedef struct mul_params:
    int x_zp, y_zp, m0, shift, out_zp, act_min, act_max

# maximum, minimum: _merge.MaximumCall / maximum
ctypedef struct maximum_params:
    int x_zp, x_m0, x_shift, y_zp, y_m0, y_shift, out_zp, act_min, act_max, take_min

# prelu: _prelu.PreluCall / prelu
ctypedef struct prelu_params:
    int in_zp, pos_m0, pos_shift, neg_m0, neg_shift, out_zp, act_min, act_max
