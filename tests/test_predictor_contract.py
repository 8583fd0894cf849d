"""The contract every *registered* predictor follows, checked for each one in the registry.

The list comes from :data:`latlab.predictors.PREDICTORS`, never a hand-written list, so a new
predictor (layer-wise, transfer, lxnorop, layer-sum, kernel alike) is checked the moment it
is registered: scikit-learn estimator conventions (parameters from the constructor, no work
in ``__init__``, ``clone``), the registry name, and bad input named before any work.
"""

from __future__ import annotations

import inspect

import pytest
from sklearn.base import clone

from latlab.errors import DataError, NotFittedError
from latlab.predictors import PREDICTORS, make_predictor
from latlab.predictors.base import LatencyPredictor

NAMES = sorted(PREDICTORS)


def test_the_registry_holds_every_predictor_family():
    assert {"flops", "fcnn", "gbm", "rf", "gcn", "kernel", "layer-sum", "transfer"} <= set(NAMES)
    assert {"lxnorop", "roofline", "refined", "statistical", "mixed", "lut"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_registered_under_its_own_name(name):
    cls = PREDICTORS[name]
    assert issubclass(cls, LatencyPredictor) and cls.name == name
    assert (cls.__doc__ or "").strip(), f"{cls.__name__} has no docstring"


@pytest.mark.parametrize("name", NAMES)
def test_parameters_are_the_constructor_arguments(name):
    model = make_predictor(name)
    params = model.get_params(deep=False)
    signature = inspect.signature(type(model).__init__).parameters
    assert set(params) == {p for p in signature if p != "self"}
    # No work in __init__: nothing fitted exists before fit, and clone rebuilds it exactly.
    assert not [k for k in vars(model) if k.endswith("_") and not k.startswith("_")]
    again = clone(model)
    assert type(again) is type(model) and again.get_params(deep=False).keys() == params.keys()


@pytest.mark.parametrize("name", NAMES)
def test_unfitted_and_empty_input_are_refused(name):
    with pytest.raises(NotFittedError, match="not fitted"):
        make_predictor(name).predict(["fcnn:4-8-2"])
    with pytest.raises(DataError, match="at least"):
        make_predictor(name).fit([], [])
    with pytest.raises(DataError, match="lengths must match"):
        make_predictor(name).fit(["fcnn:4-8-2", "fcnn:4-4-2"], [1.0])
