"""The FLOPs proxy and the predictor contract it shares with every predictor."""

import numpy as np
import pytest

from latlab.datasets.spaces import sample
from latlab.errors import DataError, NotFittedError
from latlab.predictors import load_predictor, make_predictor
from latlab.predictors.flops import macs_bytes


def test_recovers_an_exact_linear_law_and_reloads(tmp_path):
    refs = sample("fcnn", 40, seed=3)
    x = macs_bytes(refs)
    y = 0.02 + 0.5 * x[:, 0] + 0.1 * x[:, 1]
    model = make_predictor("flops").fit(refs, y)
    np.testing.assert_allclose(model.coef_, [0.5, 0.1], rtol=1e-6)
    np.testing.assert_allclose(model.predict(refs), y, rtol=1e-6)
    model.save(tmp_path / "m")
    again = load_predictor(tmp_path / "m")
    np.testing.assert_array_equal(again.predict(refs), model.predict(refs))


def test_bad_input_is_named():
    refs = sample("fcnn", 3, seed=0)
    with pytest.raises(NotFittedError, match="not fitted"):
        make_predictor("flops").predict(refs)
    with pytest.raises(DataError, match="lengths must match"):
        make_predictor("flops").fit(refs, [1.0, 2.0])
    with pytest.raises(DataError, match="at least 2"):
        make_predictor("flops").fit(refs[:1], [1.0])
    with pytest.raises(DataError, match=r"fcnn:.*row 1"):
        make_predictor("flops").fit(refs, [1.0, -1.0, 2.0])
    with pytest.raises(DataError, match="unknown predictor 'nope'"):
        make_predictor("nope")
