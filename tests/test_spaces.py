"""Search spaces: nb201 (lazy graphs, fast totals), the cnn grammar and sampler, fcnn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latlab.datasets import parse_reference, resolve
from latlab.datasets.spaces import SPACES, sample
from latlab.datasets.spaces.cnn import (
    ACTS,
    Block,
    CnnSpec,
    build_cnn,
    format_cnn,
    parse_cnn,
)
from latlab.datasets.spaces.fcnn import build_fcnn
from latlab.datasets.spaces.nb201 import (
    SPACE_SIZE,
    all_nb201,
    build_nb201,
    canonical_ops,
    live_edges,
    nb201_graph,
)
from latlab.encoders.ir import LazyNetworkGraph
from latlab.encoders.nb201_cell import OPS, all_archs, arch_index, format_arch, parse_arch
from latlab.errors import DataError, NetworkReferenceError
from ort_helpers import run_ort

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- nb201

ops_strategy = st.tuples(*[st.sampled_from(OPS)] * 6)


@FAST
@given(ops=ops_strategy)
def test_nb201_fast_totals_equal_built_graph(ops):
    lazy = nb201_graph(ops)
    built = build_nb201(ops)
    assert lazy.totals == built.totals
    assert "built" not in lazy.__dict__  # totals did not build the layers


@settings(max_examples=15, deadline=None)
@given(ops=ops_strategy, batch=st.integers(1, 8))
def test_nb201_fast_totals_any_batch(ops, batch):
    assert nb201_graph(ops, batch=batch).totals == build_nb201(ops, batch=batch).totals


def test_nb201_cost_range_matches_nas_bench_201():
    # NAS-Bench-201 (CIFAR-10 cost metrics of the benchmark file): params 0.073306-1.531546 M,
    # FLOPs 7.78305-220.11969 M over the space. Its FLOPs are MACs plus the classifier's 10
    # bias additions, hence the exact offset of 10.
    totals = [resolve(r).totals for r in all_nb201()]
    assert min(t.params for t in totals) == 73_306
    assert max(t.params for t in totals) == 1_531_546
    assert min(t.macs for t in totals) + 10 == 7_783_050
    assert max(t.macs for t in totals) + 10 == 220_119_690


def test_nb201_reference_resolves_to_lazy_graph_with_meta():
    arch = (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
        "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    )
    g = resolve(f"nb201:{arch}")
    assert isinstance(g, LazyNetworkGraph)
    assert g.family == "nb201" and g.meta["arch"] == arch
    assert g.meta["ops"] == (
        "nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3",
        "skip_connect",
    )  # fmt: skip
    assert g.reference == f"nb201:{arch}"
    assert g.layers[-1].output_shape == (1, 10)
    assert g.inputs == {"input": (1, 3, 32, 32)}


def test_nb201_skeleton_structure():
    g = build_nb201(("skip_connect", "none", "none", "none", "none", "none"))
    # 1 -> 2 and 2 -> 3 dead: node 3 has no live input, so every cell is a Mul by 0.
    zeros = [la for la in g.layers if la.op == "Mul"]
    assert len(zeros) == 15 and all(la.attrs["scalar_inputs"] == ((1, 0.0),) for la in zeros)
    assert all(la.params == 0 for la in zeros)
    convs = [la for la in g.layers if la.op == "Conv"]
    # stem + 2 reduction blocks x (2 convs + 1 shortcut conv)
    assert [la.attrs["kernel"] for la in convs] == [(3, 3)] + [(3, 3), (3, 3), (1, 1)] * 2
    assert [la.attrs["stride"] for la in convs[1:4]] == [(2, 2), (1, 1), (1, 1)]
    pools = [la for la in g.layers if la.op == "AveragePool"]
    assert [la.attrs["kernel"] for la in pools] == [(2, 2), (2, 2)]


def test_nb201_dead_edges_are_pruned_and_share_a_digest():
    # node1 = conv(x) is only consumed by `none` edges: dead code.
    dead = ("nor_conv_3x3", "none", "none", "skip_connect", "none", "none")
    assert live_edges(dead) == (False, False, False, True, False, False)
    assert canonical_ops(dead) == ("none", "none", "none", "skip_connect", "none", "none")
    clean = canonical_ops(dead)
    assert nb201_graph(dead).digest == nb201_graph(clean).digest
    assert build_nb201(dead).digest == build_nb201(clean).digest
    assert nb201_graph(dead).digest != nb201_graph(("nor_conv_3x3",) * 6).digest
    # every cell is the identity (node 3 = node 0): the graph is the skeleton, which is the
    # all-none network without its 15 zero Muls
    assert len(build_nb201(dead).layers) == len(build_nb201(("none",) * 6).layers) - 15


@settings(max_examples=25, deadline=None)
@given(ops=ops_strategy)
def test_nb201_canonical_ops_build_the_same_graph(ops):
    assert build_nb201(ops).digest == build_nb201(canonical_ops(ops)).digest


def test_nb201_runs_in_onnxruntime_and_zero_cells_are_zero():
    normal = build_nb201(("nor_conv_3x3", "avg_pool_3x3", "nor_conv_1x1") * 2, batch=2)
    rng = np.random.default_rng(1)
    x1, x2 = (rng.random((2, 3, 32, 32), dtype=np.float32) for _ in range(2))
    out1, out2 = run_ort(normal, x1, check_shapes=True), run_ort(normal, x2)
    assert out1.shape == normal.layers[-1].output_shape == (2, 10)
    assert not np.allclose(out1, out2)
    # a network whose cells output zero ignores its input entirely
    zero = build_nb201(("none",) * 6)
    assert np.array_equal(run_ort(zero, x1[:1]), run_ort(zero, x2[:1]))


def test_nb201_errors_name_the_reference():
    bad = "|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(NetworkReferenceError, match="nor_conv_5x5"):
        resolve(f"nb201:{bad}")
    with pytest.raises(NetworkReferenceError, match="nb201"):
        nb201_graph(("none",) * 6, input_shape=(1, 3, 30, 30))


def test_nb201_space_sampling():
    assert SPACES["nb201"].size == SPACE_SIZE == 15_625
    everything = all_nb201()
    assert len(set(everything)) == 15_625
    a, b = sample("nb201", 200, seed=3), sample("nb201", 200, seed=3)
    assert a == b and len(set(a)) == 200 and set(a) <= set(everything)
    assert a != sample("nb201", 200, seed=4)
    assert len(set(sample("nb201", 15_625, seed=0))) == 15_625
    with pytest.raises(DataError, match="15625"):
        sample("nb201", 15_626)


# --------------------------------------------------------------------------- cnn


@st.composite
def block_strategy(draw: st.DrawFn) -> Block:
    kind = draw(st.sampled_from(["c", "ir", "rb", "bt", "mp"]))
    if kind == "mp":
        k = draw(st.sampled_from([2, 3, 5, 7]))
        return Block("mp", kernel=k, stride=2 if k == 2 else draw(st.sampled_from([1, 2])))
    expansion = 1
    if kind == "ir":
        expansion = draw(st.integers(1, 6))
    elif kind == "bt":
        expansion = draw(st.sampled_from([1, 2, 4, 8]))
    return Block(
        kind,
        draw(st.sampled_from([8, 16, 24, 48])),
        expansion,
        draw(st.sampled_from([1, 3, 5, 7])),
        draw(st.sampled_from([1, 2])),
        draw(st.integers(1, 3)),
        kind != "c" and draw(st.booleans()),
        draw(st.sampled_from(ACTS)),
    )


spec_strategy = st.builds(
    CnnSpec,
    resolution=st.integers(16, 96),
    blocks=st.lists(block_strategy(), min_size=1, max_size=5).map(tuple),
    classes=st.integers(1, 1000),
)


@FAST
@given(spec=spec_strategy)
def test_cnn_round_trip_and_build(spec):
    text = format_cnn(spec)
    assert parse_cnn(text) == spec
    assert format_cnn(parse_cnn(text)) == text
    parse_reference(text)
    g = build_cnn(spec)
    assert g.reference == text and g.family == "cnn"
    assert g.layers[-1].output_shape == (1, spec.classes)
    assert all(min(la.output_shape) >= 1 for la in g.layers)


def test_cnn_golden_counts():
    # conv 3x3/2 3->16 at 32 px: 16*16*16*27 MACs; ir16e1: dw 3x3 16x16x16x9 + 1x1 16->16;
    # residual Add; FC 16->10.
    g = build_cnn("cnn:r32-c16s2-ir16e1-fc10")
    macs = 16 * 16 * 16 * 27 + 16 * 16 * 16 * 9 + 16 * 16 * 16 * 16 + 16 * 10
    assert g.totals.macs == macs
    assert [la.op for la in g.layers].count("Add") == 1
    params = 16 * 27 + 2 * 16 + 16 * 9 + 2 * 16 + 16 * 16 + 2 * 16 + 16 * 10 + 10
    assert g.totals.params == params
    # a basic block that changes width has a projection shortcut; a bottleneck has mid = out/e
    rb = build_cnn("cnn:r32-c16-rb32s2-fc10")
    convs = [la for la in rb.layers if la.op == "Conv"]
    assert [la.weight_shapes[0] for la in convs] == [
        (16, 3, 3, 3), (32, 16, 3, 3), (32, 32, 3, 3), (32, 16, 1, 1)
    ]  # fmt: skip
    bt = build_cnn("cnn:r32-c16-bt64e2k5se.hs-fc10")
    convs = [la.weight_shapes[0] for la in bt.layers if la.op == "Conv"]
    assert (32, 16, 1, 1) in convs and (32, 32, 5, 5) in convs and (64, 32, 1, 1) in convs
    assert any(la.op == "HardSigmoid" for la in bt.layers)
    # 1x1, kxk and the post-residual activation; the stem is ReLU and SE squeezes with ReLU
    assert sum(la.op == "HardSwish" for la in bt.layers) == 3


@pytest.mark.parametrize(
    ("ref", "culprit"),
    [
        ("cnn:r224-ir16k3-fc10", "ir16k3"),
        ("cnn:r224-zz3-fc10", "zz3"),
        ("cnn:r5000-c8-fc10", "r5000"),
        ("cnn:c8-fc10-c8", "c8"),
        ("cnn:r224-c8", "r224-c8"),
        ("cnn:r224-c8k4-fc10", "c8k4"),
        ("cnn:r224-c8se-fc10", "c8se"),
        ("cnn:r224-bt30e4-fc10", "bt30e4"),
        ("cnn:r224-c8.gelu-fc10", "c8.gelu"),
        ("cnn:r224-c8s3-fc10", "c8s3"),
        ("cnn:r224-ir8e9-fc10", "ir8e9"),
    ],
)
def test_cnn_malformed_references_name_the_culprit(ref, culprit):
    with pytest.raises(NetworkReferenceError) as info:
        parse_reference(ref)
    assert ref in str(info.value) and culprit in str(info.value)


def test_cnn_sampler_is_seeded_and_diverse():
    refs = sample("cnn", 250, seed=11)
    assert refs == sample("cnn", 250, seed=11)
    assert len(set(refs)) == 250 and refs != sample("cnn", 250, seed=12)
    specs = [parse_cnn(r) for r in refs]
    assert all(format_cnn(s) == r for s, r in zip(specs, refs, strict=True))
    blocks = [b for s in specs for b in s.blocks]
    assert {b.kind for b in blocks} == {"c", "ir", "rb", "bt", "mp"}
    irs = [b for b in blocks if b.kind == "ir"]
    assert {b.expansion for b in irs} == {1, 2, 3, 4, 5, 6}
    assert {b.kernel for b in irs} == {3, 5, 7}
    assert {True, False} == {b.se for b in irs}
    assert {b.act for b in blocks if b.kind != "mp"} == set(ACTS)
    res = {s.resolution for s in specs}
    assert min(res) == 32 and max(res) == 224
    macs = np.array([resolve(r).totals.macs for r in refs])
    # MACs span more than three orders of magnitude (about 1 ms to hundreds of ms on a CPU)
    assert np.quantile(macs, 0.05) < 20e6 and np.quantile(macs, 0.95) > 2e9
    assert macs.max() <= 30e9


def test_cnn_samples_run_in_onnxruntime():
    for ref in sample("cnn", 40, seed=5)[:40:8]:
        g = resolve(ref)
        assert run_ort(g, check_shapes=True).shape == g.layers[-1].output_shape


def test_cnn_input_shape_must_match_reference():
    assert resolve("cnn:r64-c8-fc10", batch=3).inputs["input"] == (3, 3, 64, 64)
    with pytest.raises(NetworkReferenceError, match="cnn:r64-c8-fc10"):
        resolve("cnn:r64-c8-fc10", input_shape=(1, 3, 32, 32))


# --------------------------------------------------------------------------- fcnn


def test_fcnn_reference_and_paper_space():
    g = resolve("fcnn:4-50-1")
    assert g.totals.macs == 4 * 50 + 50 and g.totals.params == 4 * 50 + 50 + 50 + 1
    assert [la.op for la in g.layers] == ["Gemm", "Relu", "Gemm"]
    for ref in sample("fcnn", 300, seed=0):
        widths = [int(w) for w in ref.split(":")[1].split("-")]
        assert 1 <= len(widths) - 2 <= 5 and all(1 <= w <= 50 for w in widths[1:-1])
    wide = [int(w) for r in sample("fcnn-wide", 300) for w in r.split(":")[1].split("-")[1:-1]]
    assert max(wide) > 2000
    assert run_ort(build_fcnn((7, 30, 3), batch=2)).shape == (2, 3)
    with pytest.raises(NetworkReferenceError, match="fcnn:4-x-1"):
        resolve("fcnn:4-x-1")


def test_nb201_and_format_round_trip_through_references():
    for ref in sample("nb201", 30, seed=9):
        arch = ref.split(":", 1)[1]
        assert format_arch(resolve(ref).meta["ops"]) == arch


def test_arch_index_is_format_and_parse_over_the_whole_space():
    """The look-up table the serving and encoding fast paths use agrees with the validating
    formatter and parser on every one of the 15,625 cells, in all_archs order."""
    index = arch_index()
    assert len(index) == 15625 and list(index) == all_archs()
    for arch, ops in index.items():
        assert format_arch(ops) == arch and parse_arch(arch) == ops
