"""Splits, training data, dataset hashes and the metrics of intervals and families."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latlab.confidence import check_confidence, recommended_calibration_size
from latlab.errors import DataError
from latlab.training.data import dataset_hash, is_store, load_source, training_data
from latlab.training.metrics import interval_metrics, metrics_by_group, regression_metrics
from latlab.training.splits import (
    PROTOCOLS,
    default_cal_size,
    device_split,
    make_split,
)


def _parts(split):
    return [split.train, split.val, split.cal, split.test]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(50, 400),
    val=st.one_of(st.none(), st.integers(0, 10)),
    cal=st.integers(0, 10),
    train=st.one_of(st.none(), st.integers(1, 30)),
    seed=st.integers(0, 2**31),
)
def test_random_split_partitions_the_rows(n, val, cal, train, seed):
    split = make_split(n, train_size=train, val_size=val, cal_size=cal, seed=seed)
    parts = _parts(split)
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist()))  # disjoint
    assert joined.min() >= 0 and joined.max() < n
    assert len(split.cal) == cal
    if val is not None:
        assert len(split.val) == val
    if train is None:
        assert len(split.test) == 0 and len(joined) == n  # every row used, none for test
    else:
        assert len(split.train) == train and len(joined) == n  # the rest is test
    again = make_split(n, train_size=train, val_size=val, cal_size=cal, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, _parts(again), strict=True))


def test_published_protocol_sizes():
    train, val = PROTOCOLS["brp-nas"]
    split = make_split(15625, train_size=train, val_size=val, seed=3)
    assert split.sizes() == {"train": 900, "val": 100, "cal": 0, "test": 14625}
    # Without a validation size, the 900/100 ratio is the default.
    assert len(make_split(15625, train_size=900).val) == 100
    other = make_split(15625, train_size=900, val_size=100, seed=4)
    assert not np.array_equal(split.train, other.train)


def test_split_needs_enough_rows():
    with pytest.raises(DataError) as exc:
        make_split(50, train_size=900, val_size=100, what="column 'x' of t.csv")
    msg = str(exc.value)
    assert "column 'x' of t.csv has 50 valid rows but the split needs 1000" in msg
    assert "\n" not in msg
    with pytest.raises(DataError, match="needs 12"):
        make_split(10, val_size=5, cal_size=6)


def test_explicit_test_size_and_fraction():
    split = make_split(100, val_size=10, test_size=0.25, seed=1)
    assert split.sizes() == {"train": 65, "val": 10, "cal": 0, "test": 25}
    split = make_split(100, val_size=10, test_size=30, seed=1)
    assert len(split.test) == 30 and len(split.train) == 60


def test_family_split_holds_out_whole_families():
    fams = ["a"] * 30 + ["b"] * 30 + ["c"] * 40
    split = make_split(100, kind="family", families=fams, val_size=5, cal_size=5, seed=0)
    held = set(split.test_families)
    assert held and held != {"a", "b", "c"}
    test_fams = {fams[i] for i in split.test}
    train_fams = {fams[i] for i in np.concatenate([split.train, split.val, split.cal])}
    assert test_fams == held and not (test_fams & train_fams)
    named = make_split(100, kind="family", families=fams, test_families=["c"], val_size=5)
    assert {fams[i] for i in named.test} == {"c"} and len(named.test) == 40
    with pytest.raises(DataError, match="at least two network families"):
        make_split(10, kind="family", families=["a"] * 10)
    with pytest.raises(DataError, match="no network of family 'z'"):
        make_split(100, kind="family", families=fams, test_families=["z"])


def test_device_split_and_confidence():
    assert device_split(["a", "b", "c"], "b") == ["a", "c"]
    with pytest.raises(DataError, match="no source device"):
        device_split(["a"], "a")
    for bad in (0, 1, 1.5, -0.1, float("nan")):
        with pytest.raises(DataError, match=r"\(0, 1\)"):
            check_confidence(bad)
    assert recommended_calibration_size(0.9) == 18 and recommended_calibration_size(0.5) == 2
    assert default_cal_size(1000, 0.9) == 100 and default_cal_size(50, 0.9) == 18


def test_training_data_from_table_and_store_agree(fcnn_measured):
    from_csv = training_data(load_source(fcnn_measured["csv"]), "cpu")
    from_store = training_data(load_source(fcnn_measured["url"]), "cpu")
    assert len(from_csv) == 80 and from_csv.kind == "table" and from_store.kind == "store"
    assert from_csv.dataset_hash == from_store.dataset_hash
    assert from_store.device_info["fingerprint"]  # the device's machine, from the store
    assert is_store(fcnn_measured["url"]) and is_store("x.db") and not is_store("x.csv")
    with pytest.raises(DataError, match="no latency column 'gpu'"):
        training_data(load_source(fcnn_measured["csv"]), "gpu")


def test_invalid_latencies_are_dropped_and_reported(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame(
        {"network": ["fcnn:1-2", "fcnn:2-2", "fcnn:3-2", "fcnn:4-2"], "d": ["1.0", "x", "-1", "2"]}
    ).to_csv(path, index=False)
    td = training_data(load_source(path), "d")
    assert td.networks == ["fcnn:1-2", "fcnn:4-2"]
    assert td.dropped == {"text": 1, "non_positive": 1}


def test_dataset_hash_is_order_free_and_value_sensitive():
    h = dataset_hash(["a", "b"], [1.0, 2.0])
    assert h == dataset_hash(["b", "a"], [2.0, 1.0])
    assert h != dataset_hash(["a", "b"], [1.0, 2.0000000001])
    assert h != dataset_hash(["a", "c"], [1.0, 2.0])


def test_interval_and_family_metrics_golden():
    t = np.array([1.0, 2.0, 4.0, 10.0])
    low = np.array([0.9, 2.1, 3.0, 9.0])
    high = np.array([1.2, 2.5, 4.0, 12.0])
    m = interval_metrics(t, low, high, 0.9)
    assert m["coverage"] == pytest.approx(75.0)  # 2.0 is below [2.1, 2.5]
    widths = (high - low) / t
    assert m["mean_relative_width"] == pytest.approx(100 * widths.mean())
    assert m["confidence"] == 0.9
    pred = np.array([1.1, 2.0, 4.4, 5.0])
    groups = ["x", "x", "y", "y"]
    by = metrics_by_group(groups, t, pred, low, high, 0.9)
    assert list(by) == ["x", "y"]
    assert by["x"]["mape"] == pytest.approx(5.0) and by["x"]["coverage"] == 50.0
    assert by["y"]["mape"] == pytest.approx(100 * (0.1 + 0.5) / 2)
    assert by["y"]["n"] == 2 and regression_metrics(t, pred)["n"] == 4
    with pytest.raises(DataError, match="upper bound"):
        interval_metrics(t, high, low, 0.9)


def test_unbounded_intervals_cover_with_infinite_width():
    t = np.array([1.0, 2.0])
    m = interval_metrics(t, [0.0, 0.0], [np.inf, np.inf], 0.99)
    assert m["coverage"] == 100.0 and m["mean_relative_width"] == np.inf
    with pytest.raises(DataError, match="NaN"):
        interval_metrics(t, [np.nan, 0.0], [1.0, 3.0], 0.9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), pinned=st.sets(st.integers(0, 99), max_size=5))
def test_pinned_rows_always_train(seed, pinned):
    split = make_split(
        100, train_size=50, val_size=10, cal_size=10, seed=seed, pinned=sorted(pinned)
    )
    assert set(pinned) <= set(split.train.tolist())
    joined = np.concatenate([split.train, split.val, split.cal, split.test])
    assert sorted(joined.tolist()) == list(range(100))  # still a partition


def test_split_error_names_the_pinned_rows():
    """A table whose rows are almost all training-only for the predictor (a bench store of
    single-kernel benchmarks, for ``kernel``) fails naming why its many rows do not count."""
    with pytest.raises(DataError) as err:
        make_split(901, cal_size=90, seed=0, pinned=list(range(900)), what="column 'd' of s")
    msg = str(err.value)
    assert "901 valid rows, 900 of them training-only" in msg and "1 others" in msg
    assert "\n" not in msg
