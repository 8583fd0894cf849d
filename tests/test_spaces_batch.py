"""The batch serving path of the chain spaces (FBNet, OFA) against the plain per-network IR.

``fast_resolve_many`` parses a whole table as arrays and computes the one-hot choices, token
counts and summary rows by array indexing into per-block tables (OFA's summary tables from
spatial fits of each block part, shared by the 25 resolutions). Everything here is compared
with the fully built graph of each network, encoded by the same encoders row by row: the
features must be identical, so must meta, totals and digest, on random references of both
spaces, on OFA references that name one network with different inactive digits, and on a
bad reference in the middle of a table, which must fail with the per-network path's error.
"""

from __future__ import annotations

import numpy as np
import pytest

from latlab.datasets import resolve
from latlab.datasets.references import parse_reference
from latlab.datasets.spaces import get_space, sample
from latlab.datasets.spaces import ofa as ofa_space
from latlab.encoders.graph import make_graph_encoder
from latlab.encoders.vector import make_vector_encoder
from latlab.errors import NetworkReferenceError
from latlab.predictors import make_predictor
from latlab.training.feature_cache import CachedPredictor, resolve_fast_many


def _scrambled_inactive(ref: str, rng: np.random.Generator) -> str:
    """The same OFA network with random (valid or 0) digits at its inactive positions."""
    arch = ofa_space.parse_ofa(ref.removeprefix("ofa:"))
    res, depths, ks, es = arch
    active = set(ofa_space.active_positions(depths))
    ks = tuple(k if p in active else int(rng.choice([0, 3, 5, 7])) for p, k in enumerate(ks))
    es = tuple(e if p in active else int(rng.choice([0, 3, 4, 6])) for p, e in enumerate(es))
    return ofa_space.format_ofa((res, depths, ks, es))


def _references(name: str) -> list[str]:
    refs = sample(name, 60, seed=11)
    if name == "ofa":
        rng = np.random.default_rng(5)
        # every resolution, and names of one network that differ only where it is inactive
        refs += [
            ofa_space.format_ofa((r, *ofa_space.parse_ofa(refs[i].removeprefix("ofa:"))[1:]))
            for i, r in enumerate(ofa_space.RESOLUTIONS)
        ]
        refs += [_scrambled_inactive(r, rng) for r in refs[:30]]
    return refs


@pytest.mark.parametrize("name", ["fbnet", "ofa"])
def test_batch_features_equal_the_built_graphs(name):
    space = get_space(name)
    refs = _references(name)
    batch = space.fast_resolve_many(refs)
    assert all(g is not None and hasattr(g, "batch") for g in batch)
    built = [resolve(r).built for r in refs]  # the plain path: every layer, summed
    assert not hasattr(built[0], "summary_row")
    enc = make_vector_encoder(space.vector_features).fit(built)
    x_batch, x_built = enc.transform(batch), enc.transform(built)
    assert x_batch.shape == (len(refs), len(enc.get_feature_names_out()))
    assert np.array_equal(x_batch, x_built)
    # a subset, in another order (what a cache's misses are), gathers the same rows
    order = np.random.default_rng(0).permutation(len(refs))[:17]
    assert np.array_equal(enc.transform([batch[i] for i in order]), x_built[order])
    assert [g.meta for g in batch] == [b.meta for b in built]
    assert [g.totals for g in batch] == [b.totals for b in built]
    assert [g.digest for g in batch] == [resolve(r).digest for r in refs]
    assert [g.reference for g in batch] == refs
    genc = make_graph_encoder(space.graph, False).fit(built)
    for a, b in zip(
        genc.transform_light(batch[:10]), genc.transform_light(built[:10]), strict=True
    ):
        assert bool((a.x == b.x).all()) and bool((a.edge_index == b.edge_index).all())


def test_ofa_references_of_one_network_get_one_row():
    refs = sample("ofa", 20, seed=2)
    rng = np.random.default_rng(1)
    others = [_scrambled_inactive(r, rng) for r in refs]
    assert sum(a != b for a, b in zip(refs, others, strict=True)) >= 15
    space = get_space("ofa")
    enc = make_vector_encoder(space.vector_features).fit([resolve(r).built for r in refs])
    x = enc.transform(space.fast_resolve_many(refs + others))
    assert np.array_equal(x[:20], x[20:])


def test_ofa_part_fits_equal_builds_at_every_side_the_space_uses():
    # each block part's rows come from a fit of 2-3 builds: compare with a build at every
    # distinct input shape of every resolution
    seen = set()
    for r in ofa_space.RESOLUTIONS:
        shapes = ofa_space._stage_shapes((1, 3, r, r))
        parts = [("first", (1, 3, r, r), ()), ("head", shapes[-1][0], ())]
        for s in range(ofa_space.N_STAGES):
            for later in (0, 1):
                shape = shapes[s][later]
                for k in ofa_space.KERNELS:
                    for e in ofa_space.EXPANSIONS:
                        _k, mid, cout, stride, act, se = ofa_space._spec(s, later, k, e)
                        h = shape[2]
                        o = ofa_space._out_size(h, stride)
                        parts += [
                            ("expand", shape, (mid, act)),
                            ("depthwise", (1, mid, h, h), (k, stride, act)),
                            ("project", (1, mid, o, o), (cout, se)),
                            ("residual", (1, cout, o, o), ()),
                        ]
        for part in parts:
            if part in seen:
                continue
            seen.add(part)
            fitted, built = ofa_space._segment(*part), ofa_space._build_segment(*part)
            assert np.array_equal(fitted.totals, built.totals), part
            assert np.array_equal(fitted.summary, built.summary), part
    assert len(seen) > 1000


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("ofa", "ofa:r206-d22223-k75557757573753735353-e64466343363336346436", "resolution 206"),
        ("ofa", "ofa:r204-d22223-k05557757573753735353-e64466343363336346436", "position 1"),
        ("fbnet", "fbnet:" + "-".join(["k3_e1"] * 21 + ["k7_e1"]), "block 22 'k7_e1'"),
    ],
)
def test_a_bad_reference_in_a_table_is_named_as_on_its_own(name, bad, message):
    refs = sample(name, 12, seed=4)
    table = [*refs[:7], bad, *refs[7:]]
    assert get_space(name).fast_resolve_many(table)[7] is None  # the batch leaves it alone
    with pytest.raises(NetworkReferenceError) as alone:
        parse_reference(bad)
    with pytest.raises(NetworkReferenceError) as many:
        resolve_fast_many(table)
    assert str(many.value) == f"row 7: {alone.value}"
    assert "\n" not in str(many.value) and bad in str(many.value) and message in str(many.value)
    y = np.array([resolve(r).totals.macs * 1e-7 + 1.0 for r in refs])
    p = make_predictor("gbm", n_estimators=20, n_jobs=1).fit(refs, y)
    with pytest.raises(NetworkReferenceError) as served:
        CachedPredictor(p).predict(table)
    assert str(served.value) == str(many.value)


@pytest.mark.parametrize("name", ["fbnet", "ofa"])
def test_served_predictions_equal_the_built_graphs(name):
    refs = _references(name)
    y = np.array([resolve(r).totals.macs * 1e-7 + 1.0 for r in refs[:40]])
    p = make_predictor("gbm", n_estimators=30, n_jobs=1).fit(refs[:40], y)
    served = CachedPredictor(p).predict(refs)
    assert np.array_equal(served, p.predict([resolve(r).built for r in refs]))
