"""The fbnet: and ofa: search-space plug-ins: references, builders, encodings, NAS moves."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from conftest import SHARED_DATA
from latlab.datasets import resolve
from latlab.datasets.references import parse_reference
from latlab.datasets.spaces import SPACES, get_space, sample, space_of
from latlab.encoders.base import encoder_from_state, encoder_to_state
from latlab.encoders.graph import make_graph_encoder
from latlab.encoders.vector import make_vector_encoder
from latlab.errors import NetworkReferenceError

FB = (
    "fbnet:k5_e6-skip-k3_e1_g2-skip-k5_e1-skip-skip-skip-k5_e6-k5_e1-k3_e1_g2-k5_e1-k5_e6-"
    "k3_e6-k3_e3-k5_e6-k3_e6-k3_e3-k5_e1-k3_e3-k5_e1-k5_e1_g2"
)
OFA = "ofa:r204-d22223-k75557757573753735353-e64466343363336346436"


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("fbnet:k5_e6-skip", "expected 22 block names"),
        (FB.replace("k3_e1_g2", "k7_e1", 1), "block 3 'k7_e1'"),
        ("ofa:r204-d2223", "expected ofa:r<res>"),
        (OFA.replace("r204", "r206"), "resolution 206"),
        (OFA.replace("d22223", "d22253"), "depth of stage 4 is 5"),
        (OFA.replace("k7555", "k4555"), "kernel 4 at position 1"),
        (OFA.replace("-e6", "-e0"), "expansion 0 at position 1"),
    ],
)
def test_bad_references_name_the_reference(ref, message):
    with pytest.raises(NetworkReferenceError, match=message) as info:
        parse_reference(ref)
    assert ref in str(info.value)


@pytest.mark.parametrize("name", ["fbnet", "ofa"])
def test_every_row_of_the_shared_table_parses(name):
    path = SHARED_DATA / f"{name}_latency.csv"
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (only in the development checkout)")
    with path.open() as f:
        refs = [row["network"] for row in csv.DictReader(f)]
    assert len(refs) == 5000
    for r in refs:
        parse_reference(r)
    graphs = [resolve(r) for r in refs[:200]]
    assert space_of(graphs) is get_space(name)


def test_the_spaces_load_lazily_on_their_prefix():
    code = (
        "import latlab.datasets\n"
        "from latlab.datasets.spaces import SPACES\n"
        "from latlab.datasets.references import parse_reference\n"
        "assert SPACES.is_lazy('fbnet') and SPACES.is_lazy('ofa')\n"
        f"parse_reference({OFA!r})\n"
        "assert not SPACES.is_lazy('ofa') and SPACES.is_lazy('fbnet')\n"
        "from latlab.predictors.vector_features import vector_encoder\n"
        "from latlab.predictors.gcn import choose_graph\n"
        "vector_encoder('fbnet-onehot+summary')  # a name before any fbnet network\n"
        "assert choose_graph('fbnet-blocks', []) == 'fbnet-blocks'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- builders


def _torch_fbnet(genotype):
    """FBNet written independently in torch from the issue's specification."""
    import torch
    from torch import nn

    from latlab.datasets.spaces import fbnet as F

    class Shuffle(nn.Module):
        def __init__(self, g):
            super().__init__()
            self.g = g

        def forward(self, x):
            n, c, h, w = x.shape
            return x.view(n, self.g, c // self.g, h, w).transpose(1, 2).reshape(n, c, h, w)

    class Block(nn.Module):
        def __init__(self, name, cin, cout, s):
            super().__init__()
            self.res = cin == cout and s == 1
            if name == "skip":
                self.body = (
                    nn.Identity()
                    if self.res
                    else nn.Sequential(
                        nn.Conv2d(cin, cout, 1, s, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
                    )
                )
                self.res = False
                return
            parts = name.split("_")
            k, e = int(parts[0][1:]), int(parts[1][1:])
            g = int(parts[2][1:]) if len(parts) > 2 else 1
            mid = e * cin
            layers = [nn.Conv2d(cin, mid, 1, groups=g, bias=False), nn.BatchNorm2d(mid), nn.ReLU()]
            if g > 1:
                layers.append(Shuffle(g))
            layers += [
                nn.Conv2d(mid, mid, k, s, padding=-(-(k - s) // 2), groups=mid, bias=False),
                nn.BatchNorm2d(mid),
                nn.ReLU(),
                nn.Conv2d(mid, cout, 1, groups=g, bias=False),
                nn.BatchNorm2d(cout),
            ]
            self.body = nn.Sequential(*layers)

        def forward(self, x):
            y = self.body(x)
            return x + y if self.res else y

    blocks, cin, i = [], 16, 0
    for n, w, s in zip((1, 4, 4, 4, 4, 4, 1), F.STAGE_WIDTHS, F.STAGE_STRIDES, strict=True):
        for j in range(n):
            blocks.append(Block(F.CHOICES[genotype[i]], cin, w, s if j == 0 else 1))
            cin, i = w, i + 1
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        *blocks,
        nn.Conv2d(352, 1504, 1, bias=False),
        nn.BatchNorm2d(1504),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(1504, 100),
    ), torch


def _torch_counts(model, torch, shape):
    macs = []

    def hook(m, inp, out):
        if isinstance(m, torch.nn.Conv2d):
            macs.append(out.numel() * m.in_channels // m.groups * m.kernel_size[0] ** 2)
        elif isinstance(m, torch.nn.Linear):
            macs.append(m.in_features * m.out_features)

    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        y = model(torch.zeros(shape))
    return sum(p.numel() for p in model.parameters()), sum(macs), tuple(y.shape)


@pytest.mark.parametrize("seed", [0, 1])
def test_fbnet_builder_matches_an_independent_torch_model(seed):
    space = get_space("fbnet")
    genotype = space.random_genotype(np.random.default_rng(seed))
    g = resolve(space.format_genotype(genotype))
    params, macs, out = _torch_counts(*_torch_fbnet(genotype), (1, 3, 32, 32))
    assert out == (1, 100)
    assert g.totals.params == params
    assert g.totals.macs == macs
    assert g.built.totals == g.totals  # the fast segment totals equal the built graph's


def test_fbnet_example_counts():
    g = resolve(FB)
    assert (g.totals.macs, g.totals.params) == (67_605_376, 1_790_500)
    assert len(g.layers) == 173 and not g.unknown_ops


def test_ofa_builder_meets_mobilenet_v3_large_published_counts():
    from latlab.datasets.spaces.ofa import build_mbv3

    h = "hardswish"
    large = [
        (3, 64, 24, 2, "relu", False), (3, 72, 24, 1, "relu", False),
        (5, 72, 40, 2, "relu", True), (5, 120, 40, 1, "relu", True), (5, 120, 40, 1, "relu", True),
        (3, 240, 80, 2, h, False), (3, 200, 80, 1, h, False), (3, 184, 80, 1, h, False),
        (3, 184, 80, 1, h, False), (3, 480, 112, 1, h, True), (3, 672, 112, 1, h, True),
        (5, 672, 160, 2, h, True), (5, 960, 160, 1, h, True), (5, 960, 160, 1, h, True),
    ]  # fmt: skip
    g = build_mbv3(large, (1, 3, 224, 224), "mbv3-large")
    # torchvision's mobilenet_v3_large: 5,483,032 parameters, of which 1,280 are the bias of
    # its 960 -> 1280 head layer, which OFA's head conv does not have; 0.217 GMACs
    assert g.totals.params == 5_483_032 - 1_280
    assert g.totals.macs == pytest.approx(0.217e9, rel=0.005)
    assert g.totals.macs == resolve("zoo:mobilenet_v3_large").totals.macs


def test_ofa_largest_and_example_networks():
    biggest = resolve("ofa:r224-d44444-k" + "7" * 20 + "-e" + "6" * 20)
    assert biggest.totals.params == 7_664_760 and biggest.totals.macs == 566_170_656
    g = resolve(OFA)
    assert g.inputs["input"] == (1, 3, 204, 204)
    assert g.built.totals == g.totals
    assert resolve(OFA, batch=4).inputs["input"] == (4, 3, 204, 204)


def test_two_ofa_references_of_one_network_agree():
    from latlab.datasets.spaces.ofa import canonical

    # stage 1 uses 2 of its 4 positions: the digits at positions 3-4 do not matter
    other = OFA.replace("k7555", "k7533").replace("e6446", "e6433")
    zeros = OFA.replace("k7555", "k7500").replace("e6446", "e6400")
    a, b, c = resolve(OFA), resolve(other), resolve(zeros)
    assert a.reference != b.reference
    assert a.digest == b.digest == c.digest
    assert canonical(OFA) == canonical(other) == canonical(zeros) == a.meta["canonical"]
    assert canonical(OFA) == "ofa:r204-d22223-k75007700570053005350-e64006300360036006430"
    assert c.reference == zeros  # a reference is kept as given
    enc = make_vector_encoder("ofa-onehot+ofa-counts")
    x = enc.fit_transform([a, b, c])
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2])
    with pytest.raises(NetworkReferenceError, match="position 1"):
        parse_reference(OFA.replace("k7555", "k0555"))  # 0 only where inactive


# --------------------------------------------------------------------------- encodings, NAS


@pytest.mark.parametrize("name", ["fbnet", "ofa"])
def test_encodings(name):
    space = get_space(name)
    graphs = [resolve(r) for r in sample(name, 12, seed=1)]
    onehot = make_vector_encoder(space.onehot).fit_transform(graphs)
    counts = make_vector_encoder(space.counts).fit_transform(graphs)
    if name == "fbnet":
        assert onehot.shape == (12, 22 * 9) and np.all(onehot.sum(axis=1) == 22)
        assert np.all(counts.sum(axis=1) == 44)  # each block: its name and its stage's name
    else:
        depths = [sum(g.meta["blocks"][p] is not None for p in range(20)) for g in graphs]
        assert np.array_equal(onehot.sum(axis=1), 1 + 5 + 2 * np.array(depths))
        assert np.array_equal(counts.sum(axis=1), 3 * np.array(depths))
    enc = make_vector_encoder(space.vector_features)
    restored = encoder_from_state(encoder_to_state(enc.fit(graphs)))
    assert np.array_equal(restored.transform(graphs), enc.transform(graphs))
    genc = make_graph_encoder(space.graph, False).fit(graphs)
    items = genc.transform_light(graphs)
    assert items[0].x.shape == (genc.n_blocks + 3, genc.num_node_features)
    again = encoder_from_state(encoder_to_state(genc)).transform_light(graphs)
    assert all(
        bool((a.edge_index == b.edge_index).all()) for a, b in zip(items, again, strict=True)
    )
    with pytest.raises(Exception, match="nb201"):
        make_vector_encoder(space.onehot).transform(
            [resolve("nb201:" + "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")]
        )


@pytest.mark.parametrize("name", ["fbnet", "ofa", "nb201"])
def test_sampling_and_mutation(name):
    space = get_space(name)
    assert space.searchable and name in SPACES
    a, b = sample(name, 30, seed=3), sample(name, 30, seed=3)
    assert a == b and len(set(a)) == 30
    rng = np.random.default_rng(0)
    for ref in a[:10]:
        g = space.genotype(ref)
        assert space.format_genotype(g) == space.canonical(ref)
        child = space.mutate(g, rng)
        diff = sum(x != y for x, y in zip(g, child, strict=True))
        assert diff >= 1
        if name != "ofa":
            assert diff == 1
        parse_reference(space.format_genotype(child))


@pytest.mark.parametrize("name", ["fbnet", "ofa"])
def test_serving_fast_path_features_equal_the_built_graphs(name):
    # the space's fast path (fast_resolve, summary rows summed from segments) against the
    # encoders on the fully built IR of the same networks: identical features
    space = get_space(name)
    refs = sample(name, 40, seed=7)
    fast = [space.fast_resolve(r) for r in refs]
    built = [g.built for g in fast]
    for g, b in zip(fast, built, strict=True):
        b.meta.update(g.meta)
    enc = make_vector_encoder(space.vector_features).fit(built)
    assert np.array_equal(enc.transform(fast), enc.transform(built))
    assert [g.totals for g in fast] == [b.totals for b in built]
    assert [g.digest for g in fast] == [resolve(r).digest for r in refs]


def test_two_ofa_references_of_one_network_serve_identical_features():
    space = get_space("ofa")
    other = OFA.replace("k7555", "k7533").replace("e6446", "e6433")
    a, b = space.fast_resolve(OFA), space.fast_resolve(other)
    enc = make_vector_encoder(space.vector_features).fit([a])
    x = enc.transform([a, b])
    assert np.array_equal(x[0], x[1]) and a.reference != b.reference
