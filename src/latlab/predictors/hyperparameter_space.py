"""Hyper-parameter spaces (what Optuna may search) as data on the predictor classes.

A predictor declares which constructor parameters Optuna may search, and over which range,
as a class attribute ``param_space = HyperparameterSpace({...})``;
:mod:`latlab.training.tuning` reads it from the class, so adding a tunable predictor touches
only its own module. A parameter's
*default* is not written here: :meth:`HyperparameterSpace.bind` reads it from the constructor's
signature (the untuned predictor is always a point of the space, and tuning starts from it),
so the two cannot disagree.

(Not to be confused with a *search space of networks*, :mod:`latlab.datasets.spaces`: latlab
says "search space" only for those, and "hyper-parameter space" / ``param_space`` for this.
Optuna's own name for it is a study's "search space".)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

#: A :class:`Param` whose default is not bound yet (read from the constructor by ``bind``).
UNBOUND: Any = object()


@dataclass(frozen=True)
class Param:
    """One searched constructor parameter: an Optuna distribution and its default value."""

    kind: str  # "float", "int" or "categorical"
    default: Any = UNBOUND
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    #: Trial value -> constructor value (e.g. "256-128-64" -> (256, 128, 64)).
    convert: Callable[[Any], Any] | None = None

    def distribution(self) -> optuna.distributions.BaseDistribution:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "float":
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return CategoricalDistribution(list(self.choices))

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(
                name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return trial.suggest_categorical(name, list(self.choices))

    def to_param(self, value: Any) -> Any:
        return self.convert(value) if self.convert is not None else value

    def trial_value(self, param: Any) -> Any:
        """The trial value whose constructor value is ``param`` (a categorical's choice)."""
        if self.kind != "categorical":
            return param
        for choice in self.choices:
            if self.to_param(choice) == param:
                return choice
        raise ValueError(f"default {param!r} is none of the choices {self.choices}")


def flt(low: float, high: float, log: bool = False) -> Param:
    return Param("float", low=low, high=high, log=log)


def integer(low: int, high: int, step: int = 1, log: bool = False) -> Param:
    return Param("int", low=low, high=high, log=log, step=step)


def cat(*choices: Any, convert: Callable[[Any], Any] | None = None) -> Param:
    return Param("categorical", choices=tuple(choices), convert=convert)


def widths(text: str) -> tuple[int, ...]:
    """``"256-128-64"`` -> ``(256, 128, 64)`` (hidden layer widths as a categorical choice)."""
    return tuple(int(w) for w in str(text).split("-"))


@dataclass(frozen=True)
class HyperparameterSpace:
    """The searched parameters of one predictor, and whether it trains by epochs."""

    params: Mapping[str, Param]
    epoch_based: bool = False
    #: Constructor parameter bounding the epochs (Hyperband's maximum resource).
    epochs_param: str = "max_epochs"

    def distributions(self, keys: Sequence[str]) -> dict[str, Any]:
        return {k: self.params[k].distribution() for k in keys}

    def bind(self, cls: type) -> HyperparameterSpace:
        """This space with every default read from ``cls``'s constructor signature.

        Raises :class:`ValueError` naming the parameter when it is no constructor argument
        or its default lies outside the space (a tuning that could not start from the
        untuned predictor).
        """
        signature = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
        bound: dict[str, Param] = {}
        for key, param in self.params.items():
            if key not in signature:
                raise ValueError(f"{cls.__name__}: tuned {key!r} is not a constructor parameter")
            default = param.trial_value(signature[key].default)
            dist = param.distribution()
            if not dist._contains(dist.to_internal_repr(default)):
                raise ValueError(f"{cls.__name__}: default {key}={default!r} is outside its range")
            bound[key] = replace(param, default=default)
        return replace(self, params=bound)
