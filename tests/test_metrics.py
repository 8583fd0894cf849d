"""regression_metrics: golden values on a hand-computed example, properties, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latlab.errors import DataError
from latlab.training.metrics import METRIC_KEYS, regression_metrics


def test_golden_values():
    t = np.array([1.0, 2.0, 4.0, 10.0])
    p = np.array([1.05, 1.8, 4.0, 13.0])  # relative errors 5 %, 10 %, 0 %, 30 %
    m = regression_metrics(t, p)
    assert list(m) == list(METRIC_KEYS)
    assert m["n"] == 4
    assert m["mae"] == pytest.approx((0.05 + 0.2 + 0 + 3) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((0.05**2 + 0.2**2 + 9) / 4))
    assert m["mape"] == pytest.approx(100 * (0.05 + 0.1 + 0 + 0.3) / 4)
    assert m["rmspe"] == pytest.approx(100 * math.sqrt((0.05**2 + 0.1**2 + 0.3**2) / 4))
    # The band edges count as inside (5 % and 10 % errors exactly).
    assert (m["acc1"], m["acc5"], m["acc10"], m["acc20"]) == (25.0, 50.0, 75.0, 75.0)
    assert m["spearman"] == pytest.approx(1.0) and m["kendall"] == pytest.approx(1.0)


def test_errors_are_relative_to_the_measurement():
    # +10 % of the measurement is inside ±10 %, even though it is 9.1 % of the prediction.
    m = regression_metrics([100.0], [110.0])
    assert m["acc10"] == 100.0 and m["acc5"] == 0.0
    assert math.isnan(m["spearman"])  # undefined for one network


@settings(max_examples=50, deadline=None)
@given(
    # Distinct latencies at least 0.01 ms apart: scaling near-ties (1000 and 999.9999999999999)
    # can round them to equal floats, which changes ranks without any metric being wrong.
    st.lists(st.integers(1, 100_000), min_size=3, max_size=40, unique=True).map(
        lambda xs: [x / 100 for x in xs]
    ),
    st.floats(0.5, 2.0),
)
def test_scaling_predictions_by_a_constant_keeps_ranks(values, factor):
    t = np.array(values)
    m = regression_metrics(t, t * factor)
    assert m["mape"] == pytest.approx(100 * abs(factor - 1), rel=1e-6, abs=1e-9)
    assert m["acc10"] == (100.0 if abs(factor - 1) <= 0.1 + 1e-12 else 0.0)
    assert m["spearman"] == pytest.approx(1.0)


def test_bad_input_is_named():
    with pytest.raises(DataError, match="lengths must match"):
        regression_metrics([1.0, 2.0], [1.0])
    with pytest.raises(DataError, match="no predictions"):
        regression_metrics([], [])
    with pytest.raises(DataError, match="row 1"):
        regression_metrics([1.0, 0.0], [1.0, 1.0])
    with pytest.raises(DataError, match="not finite"):
        regression_metrics([1.0, 2.0], [1.0, np.nan])


def test_old_bundles_interval_width_key_is_read_under_its_one_name(tmp_path):
    """Bundles written before the rename kept ``mean_rel_width``; they read as
    ``mean_relative_width`` (the name training, coverage_report and the experiments share)."""
    import json

    from latlab.training.bundle import FORMAT, MANIFEST, read_manifest

    old = {"test": {"coverage": 91.0, "mean_rel_width": 37.5}, "test_by_family": {"a": {}}}
    doc = {"format": FORMAT, "schema_version": 1, "metrics": old}
    (tmp_path / MANIFEST).write_text(json.dumps(doc))
    metrics = read_manifest(tmp_path)["metrics"]
    assert metrics["test"] == {"coverage": 91.0, "mean_relative_width": 37.5}
    assert metrics["test_by_family"] == {"a": {}}
