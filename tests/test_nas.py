"""Latency-constrained NAS (regularized evolution) with a bundle trained on nb201 rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import latlab
from latlab.datasets.spaces import get_space
from latlab.errors import DataError
from latlab.experiments.nas import objective_values, search


@pytest.fixture(scope="module")
def bundle(nb201_gbm_bundle: Path):
    return latlab.load_bundle(nb201_gbm_bundle)


BUDGET = 8.0  # ms on titanx_32: about the 30th percentile of the space


def test_search_respects_the_upper_bound(bundle):
    result = search(bundle, BUDGET, confidence=0.9, cycles=300, seed=1)
    assert result.best and result.evaluated == 64 + 300
    refs = [c.network for c in result.best]
    point = bundle.predict(refs)
    _low, high = bundle.predict_interval(refs, 0.9)
    np.testing.assert_allclose([c.bound_ms for c in result.best], high)
    np.testing.assert_allclose([c.latency_ms for c in result.best], point)
    assert np.all(high <= BUDGET)
    objs = [c.objective for c in result.best]
    assert objs == sorted(objs, reverse=True) and len(set(refs)) == len(refs)
    assert result.cache["hits"] > 0  # re-visited candidates came from the cache


def test_search_is_deterministic_with_a_seed(bundle):
    a = search(bundle, BUDGET, confidence=0.9, cycles=200, seed=3)
    b = search(bundle, BUDGET, confidence=0.9, cycles=200, seed=3)
    assert [c.network for c in a.best] == [c.network for c in b.best]
    c = search(bundle, BUDGET, confidence=0.9, cycles=200, seed=4)
    assert c.evaluated == a.evaluated


def test_search_beats_random_sampling(bundle):
    space, rng = get_space("nb201"), np.random.default_rng(0)
    refs = [space.format_genotype(space.random_genotype(rng)) for _ in range(364)]  # as many
    _low, high = bundle.predict_interval(refs, 0.9)
    macs = objective_values(refs, "macs")[high <= BUDGET]
    found = [search(bundle, BUDGET, cycles=300, seed=s).best[0].objective for s in range(3)]
    assert max(found) >= macs.max()
    assert min(found) > np.median(macs)


def test_point_mode_and_the_bound_is_tighter(bundle):
    point = search(bundle, BUDGET, confidence=None, cycles=200, seed=0)
    assert all(c.bound_ms == c.latency_ms <= BUDGET for c in point.best)
    upper = search(bundle, BUDGET, confidence=0.9, cycles=200, seed=0)
    # the upper bound is more conservative: its best network is predicted faster
    assert upper.best[0].latency_ms <= point.best[0].latency_ms


def test_bad_settings_are_refused(bundle):
    with pytest.raises(DataError, match="fcnn"):
        search(bundle, BUDGET, space="fcnn")
    with pytest.raises(DataError, match="budget"):
        search(bundle, -1.0)
    with pytest.raises(DataError, match="objective"):
        search(bundle, BUDGET, objective="accuracy")
    with pytest.raises(DataError, match="population"):
        search(bundle, BUDGET, population=4, sample=8)


def test_nas_cli(bundle, capsys):
    import json

    from latlab.cli import main

    with pytest.raises(SystemExit) as ok:
        main(["nas", "--bundle", str(bundle.path), "--budget-ms", "8", "--cycles", "100", "--json"])
    assert ok.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["bound"] == "upper" and doc["confidence"] == 0.9 and doc["best"]
    assert all(c["bound_ms"] <= 8 for c in doc["best"])
    with pytest.raises(SystemExit) as exc:
        main(["nas", "--bundle", str(bundle.path), "--budget-ms", "8", "--space", "zoo"])
    assert exc.value.code == 2
    assert "unknown search space 'zoo'" in capsys.readouterr().err
