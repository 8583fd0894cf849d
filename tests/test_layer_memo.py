"""The layer-wise models' per-structure memo: same rows as computed afresh, keyed so that
different structures (or precisions) never share them, bounded."""

from __future__ import annotations

from latlab.datasets.references import resolve
from latlab.encoders.quantize import at_precision
from latlab.predictors.layerwise.mapping import MappingModel, pair_rows
from latlab.predictors.layerwise.memo import Memo, structure_key

A = "cnn:r64-c16s2-c32-rb32-c64s2-fc10"
B = "cnn:r64-c16s2-c32-rb32-c32s2-fc10"


def test_the_key_follows_structure_and_precision() -> None:
    a1, a2, b = resolve(A), resolve(A), resolve(B)
    assert structure_key(a1) == structure_key(a2)
    assert structure_key(a1) != structure_key(b)
    assert structure_key(at_precision(a1, "int8")) != structure_key(a1)


def test_memoised_pair_rows_equal_fresh_ones() -> None:
    g = resolve(B)
    first = pair_rows(g)
    assert pair_rows(resolve(B)) is first  # the second structure-equal graph reads the memo
    edges = list(g.edges())  # given edges: computed afresh
    assert first == pair_rows(g, edges) and len(first) == len(edges)


def test_groups_are_fresh_lists_from_a_cleared_memo() -> None:
    model = MappingModel()
    g = resolve(A)
    groups = model.groups(g)
    assert sorted(i for grp in groups for i in grp) == list(range(len(g.layers)))
    groups[0].append(999)  # a caller changing its copy changes nothing stored
    assert 999 not in model.groups(resolve(A))[0]


def test_the_memo_is_bounded_and_least_recently_used() -> None:
    memo: Memo[int] = Memo(2)
    calls: list[str] = []

    def make(k: str) -> int:
        calls.append(k)
        return len(calls)

    assert memo.get("a", lambda: make("a")) == 1
    assert memo.get("b", lambda: make("b")) == 2
    assert memo.get("a", lambda: make("a")) == 1  # hit: "a" is now the most recent
    memo.get("c", lambda: make("c"))  # evicts "b"
    assert memo.get("a", lambda: make("a")) == 1 and calls == ["a", "b", "c"]
    assert memo.get("b", lambda: make("b")) == 4


def test_labelling_pairs_leaves_the_memoised_rows_as_computed() -> None:
    from latlab.predictors.layerwise.mapping import labelled_pairs

    g = resolve(A)
    rows = pair_rows(g)
    p, c = rows[0]["producer"], rows[0]["consumer"]
    labels = {(g.layers[p].name, g.layers[c].name): "fused"}
    frame = labelled_pairs([g], [labels])
    assert len(frame) == 1 and frame["fused"].tolist() == [1]
    assert all("fused" not in r and "network" not in r for r in pair_rows(g))
