"""The packed weights of the GEMM micro-kernels (csrc/qgemm.h for int8 activations,
csrc/qgemm16.h for int16), for conv2d (_conv.pack_conv_weights) and dense
(_dense.pack_dense_weights) alike, and the checks of the activation type both Calls share.

One layout per kernel build and activation type, given by its tile (``nr`` output channels
per block, K in steps of ``kr``), the element type of the weights (``w16``: int16 where the
kernel multiplies int16 loaded from memory, int8 elsewhere) and the offset the kernel adds to
the activations it multiplies (``input_offset``: +128 in int8's VNNI kernel, which multiplies
x + 128 as uint8; -128 in the int16 dot-product kernel, whose low bytes are offset to int8;
else 0), whose product with sum w the packed bias then takes back: bias - input_offset * sum
w, modulo 2^32. Plain NumPy, run once per weight array at quantize time.
"""
import numpy as np


def check_weights(kernel, w):
    """ValueError naming the first weight of -128: the kernels add two int8 products in int16,
    which the symmetric range [-127, 127] keeps from overflowing."""
    if w.size and w.min() < -127:
        pos = tuple(int(i) for i in np.argwhere(w < -127)[0])
        raise ValueError(f"{kernel}: w[{', '.join(map(str, pos))}] = -128; weights must lie in "
                         f"[-127, 127] (the symmetric int8 range: two products then fit int16)")


def pack_gemm(w, bias, groups, nr, kr, w16, input_offset):
    """Blocks of ``nr`` output channels of w int8 [Cout, taps, K] (K the values a tap reads:
    Cin // groups, or a whole window in conv2d's patch mode) and bias int32 [Cout], per group:
    ``nr`` int32 biases, then for every tap and every group of ``kr`` values (K rounded up to
    ``kr``, zero-padded) the block's weights channel-major, w[j * kr + kk]; channels beyond
    Cout // groups are zero; the biases are bias - input_offset * sum of the channel's
    weights, modulo 2^32. Returns (data int8 [groups * blocks, block bytes], blocks per
    group, K groups)."""
    cout, taps, k_len = w.shape
    cout_g = cout // groups
    nbg, kg = -(-cout_g // nr), -(-k_len // kr)
    wp = np.zeros((groups, nbg * nr, taps, kg * kr), np.int16 if w16 else np.int8)
    wp[:, :cout_g, :, :k_len] = w.reshape(groups, cout_g, taps, k_len)
    bp = np.zeros((groups, nbg * nr), np.int64)
    bp[:, :cout_g] = np.asarray(bias, np.int64).reshape(groups, cout_g)
    if input_offset:
        bp -= input_offset * wp.astype(np.int64).sum(axis=(2, 3))
        bp = (bp + 2 ** 31) % 2 ** 32 - 2 ** 31        # modulo 2^32, as the kernel sums
    # [groups, blocks, NR, taps, KG, KR] -> [groups, blocks, taps, KG, NR, KR]
    wp = wp.reshape(groups, nbg, nr, taps, kg, kr).transpose(0, 1, 3, 4, 2, 5)
    wp = wp.reshape(groups * nbg, taps * kg * nr * kr).view(np.int8)
    head = bp.astype(np.int32).reshape(groups * nbg, nr).view(np.int8)
    data = np.ascontiguousarray(np.concatenate([head, wp], axis=1))
    data.setflags(write=False)
    return data, nbg, kg


def activation_bits(kernel, x, out):
    """8 or 16: the activation type of a call whose input is x and output out (int8 or int16
    arrays, both of one type: one activation type per call). ValueError naming the arrays'
    dtypes otherwise."""
    x_type, out_type = np.asarray(x).dtype, np.asarray(out).dtype
    if x_type not in (np.int8, np.int16):
        raise ValueError(f"{kernel}: x has dtype {x_type}; activations are int8 or int16")
    if out_type != x_type:
        raise ValueError(f"{kernel}: out has dtype {out_type} but x has dtype {x_type}: one "
                         f"activation type per call (out's dtype is x's)")
    return 8 if x_type == np.int8 else 16


def check_int16_output(kernel, out_zp, act_min, act_max):
    """ValueError unless out_zp is 0 (int16 tensors are symmetric) and -32768 <= act_min <=
    act_max <= 32767."""
    if out_zp != 0:
        raise ValueError(f"{kernel}: out_zp = {out_zp}: int16 tensors are symmetric, their "
                         f"zero point is 0")
    if not -32768 <= act_min <= act_max <= 32767:
        raise ValueError(f"{kernel}: act_min = {act_min}, act_max = {act_max} must satisfy "
                         f"-32768 <= act_min <= act_max <= 32767")
