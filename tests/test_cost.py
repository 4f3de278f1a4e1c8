"""fixnet.cost: multiply-accumulates per sample, against counts worked out by hand from the
layer definitions (models/README.md for the fixtures)."""
import numpy as np
import pytest

import fixnet
from fixnet.cost import layer_macs, macs
from fixnet.graph import Graph, Node

from conftest import fixture_path


def _graph(in_shape, *nodes):
    g = Graph(inputs=["x"], outputs=[nodes[-1].outputs[0]], nodes=list(nodes))
    g.infer_shapes([in_shape])
    return g


def _window(rank=2, k=(3, 3), s=(1, 1), padding="same", **extra):
    return dict(rank=rank, kernel_size=k, strides=s, dilation=(1, 1), padding=padding, **extra)


def _conv(name, src, dst, kernel, **attrs):
    return Node(name, "conv2d", [src], [dst], _window(**attrs),
                {"kernel": np.zeros(kernel, np.float32)})


def test_conv2d_counts_every_output_times_its_window():
    g = _graph((8, 8, 3), _conv("c", "x", "y", (3, 3, 3, 4)))
    assert g.shapes["y"] == (8, 8, 4)
    assert macs(g) == 8 * 8 * 4 * (3 * 3 * 3)           # padded taps included


def test_strided_valid_conv_counts_its_smaller_output():
    g = _graph((9, 9, 2), _conv("c", "x", "y", (3, 3, 2, 5), s=(2, 2), padding="valid"))
    assert g.shapes["y"] == (4, 4, 5)
    assert macs(g) == 4 * 4 * 5 * (3 * 3 * 2)


def test_grouped_conv_counts_the_inputs_of_its_group_only():
    g = _graph((8, 8, 4), _conv("c", "x", "y", (3, 3, 2, 6), groups=2))
    assert macs(g) == 8 * 8 * 6 * (3 * 3 * 2)


def test_conv1d_is_the_h1_case():
    g = _graph((10, 3), _conv("c", "x", "y", (1, 3, 3, 4), rank=1, k=(1, 3), padding="valid"))
    assert g.shapes["y"] == (8, 4)
    assert macs(g) == 8 * 4 * (3 * 3)


def test_depthwise_counts_one_window_per_output_channel():
    dw = Node("d", "depthwise_conv2d", ["x"], ["y"], _window(),
              {"kernel": np.zeros((3, 3, 3, 2), np.float32)})          # depth multiplier 2
    g = _graph((6, 6, 3), dw)
    assert g.shapes["y"] == (6, 6, 6)
    assert macs(g) == 6 * 6 * 6 * 9


def test_dense_over_a_sequence_and_the_layers_that_do_not_count():
    dense = Node("fc", "dense", ["x"], ["h"], {}, {"kernel": np.zeros((16, 8), np.float32)})
    act = Node("act", "activation", ["h"], ["y"], {"fn": "relu"})
    g = _graph((5, 16), dense, act)
    assert layer_macs(g) == [("fc", "dense", 5 * 8 * 16)]
    assert macs(g) == 5 * 8 * 16


@pytest.mark.parametrize("writer", ["k3", "tfk2"])
def test_fixture_totals(writer):
    # mlp_seq: Dense 64->64, 64->32, 32->10 (models/README.md; bench/README.md's 6,464)
    assert macs(fixnet.load(fixture_path(f"mlp_seq_{writer}")).graph) == 64 * 64 + 64 * 32 + 32 * 10
    # resnet_small on 32x32x1: stem conv 16 (3x3, same); identity block 2 x conv 16->16;
    # projection block conv 16->32 stride 2, conv 32->32 at 16x16, skip 1x1 16->32 stride 2;
    # dense 32->10 after global pooling
    want = (32 * 32 * 16 * 9 + 2 * 32 * 32 * 16 * 9 * 16 + 16 * 16 * 32 * 9 * 16
            + 16 * 16 * 32 * 9 * 32 + 16 * 16 * 32 * 16 + 32 * 10)
    assert macs(fixnet.load(fixture_path(f"resnet_small_{writer}")).graph) == want


def test_recurrent_layers_count_both_kernels_once_per_time_step():
    # rnn_kws: Conv1D(16, 5, strides=2) over 49 steps of 10 MFCCs ('valid': 23 steps), then
    # LSTM(32) (4 gates), Dense(10)
    g = fixnet.load(fixture_path("rnn_kws_k3")).graph
    per = {op: m for _, op, m in layer_macs(g)}
    assert per["rnn"] == 23 * (16 * 4 * 32 + 32 * 4 * 32)
    # rnn_bilstm: Bidirectional(LSTM(16)) over 8 steps of 8 pixels: two LSTMs
    g = fixnet.load(fixture_path("rnn_bilstm_k3")).graph
    rnn = [m for _, op, m in layer_macs(g) if op == "rnn"]
    assert rnn == [8 * (8 * 4 * 16 + 16 * 4 * 16)] * 2


def test_global_average_pooling_is_its_own_op_with_the_float_graphs_count():
    """It runs on the depthwise kernel, but it is a pooling: labelled global_average_pool in the
    steps, the overflow proof and the report, and counted as node_macs counts pooling (none),
    so the int8 model's MACs equal the float graph's."""
    from fixnet.cost import model_macs, step_macs
    d = np.load(fixture_path("kws_dscnn_k3", ".npz"))
    fm = fixnet.load(fixture_path("kws_dscnn_k3"))
    qm = fm.quantize(d["x_calib"][:16])
    (gap,) = [s for s in qm.steps if s.op == "global_average_pool"]
    shapes = qm.shapes_for()
    assert step_macs(gap, shapes[gap.outputs[0]], shapes[gap.inputs[0]]) == 0
    assert model_macs(qm) == macs(fm.graph) > 0
    assert any(b.op == "global_average_pool" for b in qm.overflow_bounds())
    rep = qm.report(d["x_test"][:4])
    assert [r["op"] for r in rep.records if r["layer"] == gap.layer] == ["global_average_pool"]
    assert [r["weight_range_use"] for r in rep.records if r["layer"] == gap.layer] == [None]
    assert gap.name not in qm.dequantized_weights()
