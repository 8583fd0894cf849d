"""What every latlab encoder shares: the kind vocabulary, input checks and JSON state.

Encoders are scikit-learn transformers over sequences of :class:`NetworkGraph` (so a predictor
is a ``Pipeline``, and ``clone``/``get_params`` work for Optuna and conformal wrappers). Their
fitted statistics must travel with a saved predictor without pickle, so every encoder exports
its complete state -- constructor parameters plus fitted attributes -- as a plain JSON-able dict
(:meth:`EncoderStateMixin.to_state`) and is rebuilt from it by :func:`encoder_from_state`, which
only instantiates the classes of :data:`ENCODER_CLASSES` (a state file cannot name arbitrary
code).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from latlab.encoders.ir import NetworkGraph
from latlab.errors import FeatureError, NotFittedError
from latlab.jsonio import jsonable
from latlab.registry import Registry

#: Layer kinds of the IR, in the fixed order used for counts and one-hots. A kind outside this
#: vocabulary (an extension's new kind) is counted as ``other``.
KINDS: tuple[str, ...] = (
    "conv",
    "dwconv",
    "fc",
    "norm",
    "act",
    "pool",
    "gpool",
    "eltwise",
    "concat",
    "data",
    "softmax",
    "binconv",
    "binfc",
    "other",
)

#: Kinds whose layers have multiply-accumulates (every other kind has ``macs == 0``).
MAC_KINDS: tuple[str, ...] = ("conv", "dwconv", "fc", "binconv", "binfc")

STATE_VERSION = 1

#: The encoder classes a saved state may name: class name (the state's ``"encoder"``) ->
#: ``"module:class"``, imported when a state naming it is first loaded. Only these (and those
#: of the ``latlab.encoder_classes`` entry-point group) can be instantiated from a state file.
BUILTIN_ENCODER_CLASSES: dict[str, str] = {
    "BlockChainGraphEncoder": "latlab.encoders.choices:BlockChainGraphEncoder",
    "ChoiceOneHotEncoder": "latlab.encoders.choices:ChoiceOneHotEncoder",
    "GraphEncoder": "latlab.encoders.graph:GraphEncoder",
    "LayerFeatureEncoder": "latlab.encoders.layer_features:LayerFeatureEncoder",
    "LayerWidthEncoder": "latlab.encoders.vector:LayerWidthEncoder",
    "Nb201CellGraphEncoder": "latlab.encoders.graph:Nb201CellGraphEncoder",
    "Nb201OneHotEncoder": "latlab.encoders.vector:Nb201OneHotEncoder",
    "Nb201OpCountEncoder": "latlab.encoders.vector:Nb201OpCountEncoder",
    "SummaryEncoder": "latlab.encoders.vector:SummaryEncoder",
    "TokenCountEncoder": "latlab.encoders.choices:TokenCountEncoder",
}


def _is_encoder_class(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, EncoderStateMixin)


#: class name -> encoder class, for :func:`encoder_from_state` (lazy).
ENCODER_CLASSES: Registry[type[EncoderStateMixin]] = Registry(
    "encoder class",
    group="latlab.encoder_classes",
    check=_is_encoder_class,
    entries=BUILTIN_ENCODER_CLASSES,
)


def canonical_kind(kind: str) -> str:
    """``kind`` if it is in :data:`KINDS`, else ``"other"``."""
    return kind if kind in _KIND_SET else "other"


_KIND_SET = frozenset(KINDS)


def check_graphs(graphs: Any, encoder: str) -> list[NetworkGraph]:
    """The input as a list of graphs; raises :class:`FeatureError` naming what is wrong.

    A single graph is refused (rather than iterated) because ``transform`` returns one row per
    network and a lone graph would silently become a one-row batch of the wrong thing.
    """
    if isinstance(graphs, NetworkGraph | str | bytes):
        raise FeatureError(
            f"{encoder} expects a sequence of NetworkGraph, got a single {type(graphs).__name__}"
        )
    if not isinstance(graphs, Iterable):
        raise FeatureError(
            f"{encoder} expects a sequence of NetworkGraph, got {type(graphs).__name__}"
        )
    out = list(graphs)
    for i, g in enumerate(out):
        if not isinstance(g, NetworkGraph):
            raise FeatureError(
                f"{encoder}: item {i} is a {type(g).__name__}, not a NetworkGraph "
                "(resolve references with latlab.datasets.resolve first)"
            )
    return out


def batch_rows(graphs: Sequence[NetworkGraph], key: str) -> tuple[np.ndarray, Any] | None:
    """Rows of array ``key`` of the batch ``graphs`` were resolved in together, and the batch.

    A search space may resolve many references at once
    (:meth:`~latlab.datasets.spaces.base.SearchSpace.fast_resolve_many`) into graphs that carry
    ``batch`` (with ``array(key)``, ``family`` and ``columns``) and ``batch_row``; an encoder
    then gathers its rows for all networks by one array index instead of reading each graph
    (what makes encoding thousands of networks cheap). ``None`` unless every graph comes from
    one such batch that has ``key``: the encoder then reads the graphs one by one.
    """
    if not graphs:
        return None
    batch = getattr(graphs[0], "batch", None)
    if batch is None:
        return None
    array = batch.array(key)
    if array is None:
        return None
    rows = []
    for g in graphs:
        if getattr(g, "batch", None) is not batch:
            return None
        rows.append(g.batch_row)  # type: ignore[attr-defined]
    return array[np.asarray(rows, dtype=np.int64)], batch


class EncoderStateMixin:
    """Export/import of an encoder's full state as a JSON-able dict.

    Subclasses list the names of their fitted attributes in ``_fitted_attrs`` (trailing
    underscore, scikit-learn style) and may convert them in :meth:`_load_fitted`. Stateless
    encoders have none and are usable without ``fit``.
    """

    _fitted_attrs: ClassVar[tuple[str, ...]] = ()

    def _fitted_names(self) -> tuple[str, ...]:
        """Fitted attributes of this instance (may depend on its parameters)."""
        return self._fitted_attrs

    def _is_fitted(self) -> bool:
        return all(hasattr(self, a) for a in self._fitted_names())

    def __sklearn_is_fitted__(self) -> bool:
        return self._is_fitted()

    def _require_fitted(self) -> None:
        if not self._is_fitted():
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit() on training networks first"
            )

    def to_state(self) -> dict[str, Any]:
        """The encoder as a JSON-able dict: class, parameters and fitted statistics."""
        params = self.get_params(deep=False)  # type: ignore[attr-defined]
        fitted = (
            {a: jsonable(getattr(self, a)) for a in self._fitted_names()}
            if self._is_fitted()
            else None
        )
        state = {
            "encoder": type(self).__name__,
            "version": STATE_VERSION,
            "params": jsonable(params),
            "fitted": fitted,
        }
        json.dumps(state)  # fail here, not when the bundle is written, if something slipped in
        return state

    def _load_fitted(self, fitted: dict[str, Any]) -> None:
        for a in self._fitted_names():
            setattr(self, a, fitted[a])

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Any:
        """Rebuild an encoder saved by :meth:`to_state` (same outputs as the original)."""
        if state.get("encoder") != cls.__name__:
            raise FeatureError(f"state is for encoder {state.get('encoder')!r}, not {cls.__name__}")
        if int(state.get("version", 0)) > STATE_VERSION:
            raise FeatureError(
                f"{cls.__name__} state version {state.get('version')} is newer than this "
                f"latlab understands ({STATE_VERSION})"
            )
        enc = cls(**state.get("params", {}))
        if state.get("fitted") is not None:
            try:
                enc._load_fitted(state["fitted"])
            except (KeyError, TypeError, ValueError) as exc:
                raise FeatureError(f"corrupt {cls.__name__} state: {exc}") from None
        return enc


def encoder_to_state(encoder: Any) -> dict[str, Any]:
    """JSON-able state of a latlab encoder or of a ``FeatureUnion`` of latlab encoders."""
    from sklearn.pipeline import FeatureUnion

    if isinstance(encoder, EncoderStateMixin):
        return encoder.to_state()
    if isinstance(encoder, FeatureUnion):
        return {
            "encoder": "FeatureUnion",
            "version": STATE_VERSION,
            "transformers": [[name, encoder_to_state(t)] for name, t in encoder.transformer_list],
        }
    raise FeatureError(f"cannot save the state of {type(encoder).__name__}: not a latlab encoder")


def encoder_from_state(state: dict[str, Any]) -> Any:
    """Inverse of :func:`encoder_to_state`; only latlab encoder classes can be instantiated."""
    if not isinstance(state, dict) or "encoder" not in state:
        raise FeatureError("an encoder state must be a dict with an 'encoder' key")
    name = state["encoder"]
    if name == "FeatureUnion":
        from sklearn.pipeline import FeatureUnion

        return FeatureUnion(
            [(str(n), encoder_from_state(s)) for n, s in state.get("transformers", [])]
        )
    if not isinstance(name, str) or name not in ENCODER_CLASSES:
        raise FeatureError(
            f"unknown encoder {name!r} in saved state; known: {sorted(ENCODER_CLASSES)}"
        )
    return ENCODER_CLASSES[name].from_state(state)


def feature_names(names: Sequence[str]) -> np.ndarray:
    """Feature names as scikit-learn returns them (an object array of str)."""
    return np.asarray(list(names), dtype=object)
