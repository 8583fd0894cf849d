"""The onnxruntime trace (optimised nodes -> IR layers), fusion labels and the profiler."""

from __future__ import annotations

import numpy as np
import pytest

from latlab.datasets.bench.profile import profile_network
from latlab.datasets.bench.trace import FUSED, NOT_FUSED, fusion_labels, runtime_mapping
from latlab.encoders.builder import NetBuilder
from latlab.encoders.ir import NetworkGraph
from latlab.errors import MeasurementError


def _block() -> NetworkGraph:
    """conv-bn-relu, conv-bn + residual add + relu, pool, dw + relu6, two 1x1 convs, concat,
    hardswish (an inlined function: two unnamed runtime nodes), conv+sigmoid, head."""
    b = NetBuilder("block", (1, 32, 28, 28))
    x = b.relu(b.bn(b.conv(b.input, 64, 3)))
    y = b.bn(b.conv(x, 64, 3))
    y = b.relu(b.add(y, x))
    y = b.maxpool(y, 2)
    y = b.relu6(b.dwconv(y, 3))
    y = b.concat([b.conv(y, 64, 1), b.conv(y, 64, 1)])
    y = b.hardswish(y)
    y = b.sigmoid(b.conv(y, 16, 1))
    b.relu(b.gemm(b.flatten(b.global_avgpool(y)), 10))
    return b.build()


def _label_map(graph: NetworkGraph) -> dict[tuple[str, str], str]:
    labels = fusion_labels(runtime_mapping(graph))
    return {(la.producer_name, la.consumer_name): la.label for la in labels}


def test_trace_recovers_onnxruntime_fusions_exactly() -> None:
    g = _block()
    labels = _label_map(g)
    names = [la.name for la in g.layers]
    conv1, bn1, relu1, conv2, bn2, add, relu2, pool, dw, clip, pw1, _pw2, cat = names[:13]
    # conv + BN + ReLU run as one NCHWc convolution
    assert labels[(conv1, bn1)] == FUSED and labels[(bn1, relu1)] == FUSED
    # the residual Add and its ReLU are absorbed by the second convolution, not the first
    assert labels[(conv2, bn2)] == FUSED and labels[(bn2, add)] == FUSED
    assert labels[(add, relu2)] == FUSED and labels[(relu1, add)] == NOT_FUSED
    assert labels[(relu1, conv2)] == NOT_FUSED and labels[(relu2, pool)] == NOT_FUSED
    assert labels[(dw, clip)] == FUSED and labels[(pool, dw)] == NOT_FUSED
    assert labels[(clip, pw1)] == labels[(pw1, cat)] == NOT_FUSED
    gemm, relu_last = names[-2:]
    assert labels[(gemm, relu_last)] == FUSED  # FusedGemm
    assert all(v in (FUSED, NOT_FUSED) for v in labels.values())  # every trace exact here


def test_every_layer_maps_to_runtime_nodes_and_groups_partition_them() -> None:
    g = _block()
    m = runtime_mapping(g)
    assert m.eliminated == []
    covered = sorted(li for grp in m.groups for li in grp.layers)
    assert covered == list(range(len(g.layers)))
    inserted = [n for n in m.nodes if n.inserted]
    assert {n.op for n in inserted} <= {"ReorderInput", "ReorderOutput"} and inserted
    hardswish = next(i for i, la in enumerate(g.layers) if la.op == "HardSwish")
    grp = m.group_of(hardswish)
    assert grp is not None and grp.layers == (hardswish,) and len(grp.nodes) == 2


def test_profile_times_are_real_and_add_up() -> None:
    prof = profile_network(_block(), runs=8, warmup=2, time_budget_s=1.0)
    nodes = prof.node_table()
    assert (nodes["runs"] == 8).all()
    assert (nodes["median_us"] > 0).all()
    groups = prof.group_table()
    assert np.isfinite(groups["time_ms"]).all() and (groups["time_ms"] > 0).all()
    # kernel time = layer groups + runtime-inserted reorders (medians of per-run sums)
    parts = groups["time_ms"].sum() + prof.inserted_ms
    assert prof.kernels_ms == pytest.approx(parts, rel=0.25)
    # onnxruntime's own run time includes every kernel
    assert prof.run_ms >= 0.9 * prof.kernels_ms
    first_conv = prof.layers_ms([0])
    assert first_conv == pytest.approx(groups["time_ms"].iloc[0])


def test_single_layer_benchmark_profile_isolates_the_layer() -> None:
    prof = profile_network("kernel:padding+conv+padding?c=32&h=14&f=32&k=3", runs=5, warmup=2)
    conv = prof.mapping.group_of(1)
    assert conv is not None and conv.layers == (1,)
    assert prof.group_ms(conv) > 0


def test_unrunnable_network_is_a_measurement_error() -> None:
    b = NetBuilder("bad", (1, 4, 8, 8))
    b.add_layer("NoSuchOp", [b.input], output_shapes=[(1, 4, 8, 8)])
    with pytest.raises(MeasurementError, match="bad"):
        runtime_mapping(b.build())
