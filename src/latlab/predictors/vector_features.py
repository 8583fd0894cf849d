"""Vector features for the learned predictors, chosen per network family (the encoder choice
and its fitted state; not the per-layer inputs of the layer-wise models,
:mod:`latlab.predictors.layerwise.layer_inputs`).

Every vector predictor (FCNN, LightGBM, random forest) takes ``features=``:

* ``"auto"`` (default) -- decided on the *training* networks: when every network belongs to
  one search space, the space's :attr:`~latlab.datasets.spaces.SearchSpace.vector_features`
  (``widths`` -- the FCNN estimator's input -- for ``fcnn``, ``nb201-onehot+nb201-counts``
  -- where each op sits, and how many of each the cell has -- for NAS-Bench-201,
  ``fbnet-onehot+fbnet-counts+summary`` / ``ofa-onehot+ofa-counts+summary`` for FBNet / OFA),
  and the network ``summary`` otherwise (mixed families fall back to the summary, the only
  encoding every network has);
* any spec :func:`latlab.encoders.vector.make_vector_encoder` understands: ``"summary"``,
  ``"widths"``, ``"nb201-onehot"``, ``"summary+nb201-onehot"``, ...

The nb201 choice was made on validation data of the BRP-NAS protocol (6 devices x 2 seeds,
900 training / 100 validation networks; mean validation MAPE): random forest 7.40 % (one-hot),
6.70 % (+summary), **3.47 %** (+counts), 3.98 % (+counts+summary); LightGBM 3.74 %, 4.32 %,
**3.21 %**, 3.37 %; FCNN 3.94 %, 3.89 %, 3.82 %, 3.79 %. The summary hurts the trees on
nb201: the IR removes dead cell ops that the measured networks still execute.

The choice and the fitted encoder state are saved with the predictor (JSON encoder state, no
pickle), so a reloaded predictor encodes new networks exactly as at training time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from latlab.encoders.base import encoder_from_state, encoder_to_state
from latlab.encoders.ir import NetworkGraph
from latlab.encoders.vector import VECTOR_ENCODERS, make_vector_encoder
from latlab.errors import FeatureError

AUTO = "auto"

#: The fallback of ``auto`` (mixed or other families).
AUTO_DEFAULT = "summary"


def families(graphs: Sequence[NetworkGraph]) -> set[str]:
    """The network families present (``meta["family"]``, else the reference scheme)."""
    return {g.family for g in graphs}


def auto_spec(graphs: Sequence[NetworkGraph]) -> str:
    """The encoder spec ``features="auto"`` chooses for these training networks."""
    from latlab.datasets.spaces import space_of

    space = space_of(graphs)
    return (space.vector_features if space is not None else None) or AUTO_DEFAULT


def vector_encoder(spec: str) -> Any:
    """:func:`make_vector_encoder`, loading the lazily registered search spaces first when the
    spec names an encoder none has registered yet (``ofa-onehot`` before any ofa network)."""
    names = [n.strip() for n in spec.split("+") if n.strip()]
    if any(n not in VECTOR_ENCODERS for n in names):
        from latlab.datasets.spaces import load_all

        load_all()
    return make_vector_encoder(spec)


def resolve_spec(features: str, graphs: Sequence[NetworkGraph]) -> str:
    """``features`` with ``auto`` replaced by the per-family choice; validates the names."""
    if not isinstance(features, str) or not features.strip():
        raise FeatureError(f"features must be a non-empty encoder spec, got {features!r}")
    spec = auto_spec(graphs) if features.strip() == AUTO else features.strip()
    vector_encoder(spec)  # raises FeatureError naming an unknown encoder
    return spec


class VectorFeatures:
    """A fitted vector encoder plus the spec it was built from (JSON state).

    ``fit_transform`` on training graphs, ``transform`` on new ones; ``to_state`` /
    ``from_state`` round-trip through plain JSON.
    """

    def __init__(self, spec: str, encoder: Any) -> None:
        self.spec = spec
        self.encoder = encoder

    @classmethod
    def fit(cls, features: str, graphs: Sequence[NetworkGraph]) -> tuple[VectorFeatures, Any]:
        """Choose and fit the encoder on training graphs; returns it and their features."""
        spec = resolve_spec(features, graphs)
        encoder = vector_encoder(spec)
        x = np.asarray(encoder.fit_transform(list(graphs)), dtype=np.float64)
        return cls(spec, encoder), x

    def transform(self, graphs: Sequence[NetworkGraph]) -> np.ndarray:
        return np.asarray(self.encoder.transform(list(graphs)), dtype=np.float64)

    @property
    def n_features(self) -> int:
        return len(self.encoder.get_feature_names_out())

    def feature_names(self) -> list[str]:
        return [str(n) for n in self.encoder.get_feature_names_out()]

    def to_state(self) -> dict[str, Any]:
        return {"spec": self.spec, "encoder": encoder_to_state(self.encoder)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> VectorFeatures:
        try:
            return cls(str(state["spec"]), encoder_from_state(state["encoder"]))
        except (KeyError, TypeError) as exc:
            raise FeatureError(f"corrupt feature state: {exc}") from None


class VectorRowsPredictor:
    """Mixin of the predictors that predict from one fitted :class:`VectorFeatures` row per
    network (gbm, rf): the serving cache keeps the rows, ``_predict_rows`` maps a row matrix
    to the fitted target space, and the target is decoded here once for both."""

    encoding: ClassVar[str] = "rows"
    feature_state_keys: ClassVar[tuple[str, ...]] = ("features",)
    features_: VectorFeatures
    target: str

    def _predict_rows(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _predict(self, networks: list[Any]) -> np.ndarray:
        from latlab.predictors.base import as_graphs

        return self.predict_encoded(self.encode(as_graphs(networks)))

    def encode(self, graphs: Sequence[NetworkGraph]) -> list[Any]:
        """One feature row per network (what the serving cache keeps)."""
        self._check_fitted()  # type: ignore[attr-defined]
        return list(self.features_.transform(graphs))

    def predict_encoded(self, items: Sequence[Any]) -> np.ndarray:
        from latlab.predictors.common import decode_target

        self._check_fitted()  # type: ignore[attr-defined]
        if len(items) == 0:
            return np.zeros(0)
        z = self._predict_rows(np.vstack(items))
        return np.asarray(decode_target(z, self.target), dtype=float)
