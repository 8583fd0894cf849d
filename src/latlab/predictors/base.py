"""The one contract every latency predictor follows.

``fit(networks, latencies_ms)``, ``predict(networks) -> ms``, where networks are references or
:class:`~latlab.encoders.ir.NetworkGraph` objects. Predictors are scikit-learn estimators
(``get_params``/``set_params`` from constructor arguments, no work in ``__init__``) so that
Optuna, conformal wrappers and pipelines treat them alike, and deterministic given
``random_state``.

Persistence never uses pickle: :meth:`LatencyPredictor.save` writes ``predictor.json`` (class,
constructor parameters and JSON state) plus model files in portable formats (LightGBM text,
safetensors, skops), and :func:`load_predictor` rebuilds an identical predictor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from latlab.datasets.references import resolve
from latlab.encoders.ir import NetworkGraph
from latlab.errors import BundleError, DataError, NotFittedError
from latlab.fileio import atomic_write_text, inside
from latlab.jsonio import jsonable
from latlab.predictors.hyperparameter_space import HyperparameterSpace
from latlab.registry import Registry

if TYPE_CHECKING:
    import pandas as pd

Network = str | NetworkGraph
PREDICTOR_FILE = "predictor.json"

#: The built-in predictors: registry name -> ``"module:class"``, imported on first use. A new
#: predictor is one module plus one line here (or, outside latlab, an entry point in the
#: ``latlab.predictors`` group); :func:`register_predictor` is for a class made at run time.
BUILTIN_PREDICTORS: dict[str, str] = {
    "fcnn": "latlab.predictors.fcnn:FcnnPredictor",
    "flops": "latlab.predictors.flops:FlopsPredictor",
    "rf": "latlab.predictors.forest:ForestPredictor",
    "gbm": "latlab.predictors.gbm:GbmPredictor",
    "gcn": "latlab.predictors.gcn:GcnPredictor",
    "kernel": "latlab.predictors.kernel:KernelPredictor",
    "layer-sum": "latlab.predictors.layersum:LayerSumPredictor",
    "linear": "latlab.predictors.linear:LinearPredictor",
    "roofline": "latlab.predictors.layerwise.predictor:RooflinePredictor",
    "refined": "latlab.predictors.layerwise.predictor:RefinedRooflinePredictor",
    "statistical": "latlab.predictors.layerwise.predictor:StatisticalPredictor",
    "mixed": "latlab.predictors.layerwise.predictor:MixedPredictor",
    "lut": "latlab.predictors.layerwise.predictor:LutPredictor",
    "lxnorop": "latlab.predictors.bnn.predictor:LxnoropPredictor",
    "transfer": "latlab.predictors.transfer:TransferPredictor",
    "cross-precision": "latlab.predictors.precision:CrossPrecisionPredictor",
}


def _is_predictor(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, LatencyPredictor)


#: name -> predictor class (lazy: a predictor's module is imported when it is first used).
PREDICTORS: Registry[type[LatencyPredictor]] = Registry(
    "predictor", group="latlab.predictors", check=_is_predictor, entries=BUILTIN_PREDICTORS
)


def register_predictor(cls: type[LatencyPredictor]) -> type[LatencyPredictor]:
    """Class decorator: make ``cls`` available by its ``name`` (``latlab train --predictor``)."""
    PREDICTORS.register(cls.name, cls)
    return cls


def as_graphs(networks: Sequence[Network], batch: int = 1) -> list[NetworkGraph]:
    """Resolve references (graphs pass through); errors name the offending reference."""
    return [resolve(n, batch=batch) for n in networks]


def check_training_data(
    networks: Sequence[Network], latencies_ms: Any, *, min_rows: int = 2
) -> np.ndarray:
    """Validate a training set; returns latencies as a float array.

    Raises :class:`DataError` for empty or too small sets, mismatched lengths and invalid
    latencies (non-finite or <= 0), naming the first offending row.
    """
    y = np.asarray(latencies_ms, dtype=float).reshape(-1)
    if len(networks) != len(y):
        raise DataError(f"{len(networks)} networks but {len(y)} latencies: lengths must match")
    if len(y) < min_rows:
        raise DataError(f"need at least {min_rows} training rows, got {len(y)}")
    bad = np.flatnonzero(~np.isfinite(y) | (y <= 0))
    if bad.size == len(y):
        raise DataError(
            f"all {len(y)} latencies are invalid (non-finite or <= 0, e.g. {y[0]!r} ms): "
            "nothing to train on"
        )
    if bad.size:
        i = int(bad[0])
        net = networks[i]
        name = net if isinstance(net, str) else net.reference
        raise DataError(
            f"invalid latency {y[i]!r} ms for {name} (row {i}); latencies must be finite and > 0"
            f" ({bad.size} invalid rows)"
        )
    return y


@runtime_checkable
class Predictor(Protocol):
    """What training, serving and the conformal wrappers rely on (the seam, typed).

    :class:`LatencyPredictor` implements it; anything else that does can be served too.
    """

    name: ClassVar[str]
    encoding: ClassVar[str]

    def fit(
        self,
        networks: Sequence[Network],
        latencies_ms: Any,
        *,
        eval_set: tuple[Sequence[Network], Any] | None = None,
    ) -> Any: ...

    def predict(self, networks: Sequence[Network]) -> np.ndarray: ...

    def encode(self, graphs: Sequence[NetworkGraph]) -> list[Any]: ...

    def predict_encoded(self, items: Sequence[Any]) -> np.ndarray: ...

    def save(self, directory: str | Path) -> Path: ...


@runtime_checkable
class LayerPredictor(Protocol):
    """A predictor whose network latency is a sum over layers or kernels it can list (the
    layer-wise and kernel predictors): what ``cps`` and ``latlab predict --layers`` need."""

    name: ClassVar[str]

    def predict_layers(self, networks: Sequence[Network]) -> pd.DataFrame: ...


@runtime_checkable
class OutOfDistribution(Protocol):
    """A conformal wrapper that can tell which networks lie outside its calibration
    distribution (``cm-o``: :class:`~latlab.predictors.conformal.network.DistanceKnnConformal`)."""

    def ood_mask(self, networks: Sequence[Network]) -> np.ndarray: ...


@runtime_checkable
class IntervalPredictor(Protocol):
    """What training and bundles rely on in a conformal wrapper
    (:class:`latlab.predictors.conformal.base.ConformalPredictor` implements it)."""

    warnings: list[str]

    @property
    def calibrated(self) -> bool: ...

    def calibrate(
        self,
        networks: Sequence[Network],
        latencies_ms: Any,
        *,
        train_networks: Sequence[Network] | None = None,
        train_latencies_ms: Any = None,
    ) -> Any: ...

    def predict(self, networks: Sequence[Network]) -> np.ndarray: ...

    def predict_interval(
        self, networks: Sequence[Network], confidence: float = 0.9, *, point_ms: Any = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, directory: str | Path) -> Path: ...


class LatencyPredictor(BaseEstimator, RegressorMixin):  # type: ignore[misc]
    """Base class: subclasses implement ``_fit``, ``_predict``, ``_state`` and ``_restore``."""

    #: Registry name (``flops``, ``fcnn``, ``gbm``, ...).
    name: ClassVar[str] = "base"
    #: Minimum number of training rows the predictor can learn from.
    min_train_rows: ClassVar[int] = 2
    #: What Optuna may search (:mod:`latlab.predictors.hyperparameter_space`); ``None``: not tuned.
    param_space: ClassVar[HyperparameterSpace | None] = None
    #: References training must keep in the training split (a device constant such as the
    #: layer-wise session probe, not a sample to hold out).
    train_only_references: ClassVar[tuple[str, ...]] = ()
    #: Keys of the saved state (``_state``) that describe the features and their scaling: a
    #: bundle's manifest shows them (``features``) without opening the predictor's files.
    feature_state_keys: ClassVar[tuple[str, ...]] = ()
    #: Old constructor parameter name -> its current name: a saved predictor (a bundle's
    #: ``predictor.json``) written under an old name loads (:func:`migrate_params`), and
    #: ``--param OLD=...`` is refused naming the new one.
    renamed_params: ClassVar[Mapping[str, str]] = {}

    # ------------------------------------------------------------------ public contract

    def fit(
        self,
        networks: Sequence[Network],
        latencies_ms: Any,
        *,
        eval_set: tuple[Sequence[Network], Any] | None = None,
    ) -> LatencyPredictor:
        """Fit on networks and their measured latencies (ms).

        ``eval_set`` is a validation split used for early stopping (never test data).
        """
        y = check_training_data(networks, latencies_ms, min_rows=self.min_train_rows)
        ev = None
        if eval_set is not None:
            ev_y = check_training_data(eval_set[0], eval_set[1], min_rows=1)
            ev = (list(eval_set[0]), ev_y)
        self._fit(list(networks), y, ev)
        self.fitted_ = True
        return self

    def predict(self, networks: Sequence[Network]) -> np.ndarray:
        """Predicted latency in ms, one value per network."""
        self._check_fitted()
        if len(networks) == 0:
            return np.zeros(0)
        return np.asarray(self._predict(list(networks)), dtype=float).reshape(-1)

    # ------------------------------------------------------------------ the cached fast path

    #: What :meth:`encode` gives (``graphs``: the resolved IR; ``rows``: feature rows; ...),
    #: named in the serving cache's statistics and logs.
    encoding: ClassVar[str] = "graphs"

    def encode(self, graphs: Sequence[NetworkGraph]) -> list[Any]:
        """The model input of each (resolved) network, one item per graph.

        What a serving cache keeps per network (:mod:`latlab.training.feature_cache`), so that a
        network asked for again costs only its share of :meth:`predict_encoded`. The default
        is the graph itself; predictors whose encoding costs more than their model (feature
        rows, torch-geometric graphs) override both methods, with
        ``predict(graphs) == predict_encoded(encode(graphs))`` bit for bit.
        """
        self._check_fitted()
        return list(graphs)

    def predict_encoded(self, items: Sequence[Any]) -> np.ndarray:
        """Latency in ms of networks given as items of :meth:`encode`, in order."""
        return self.predict(list(items))

    def score(self, X: Sequence[Network], y: Any, sample_weight: Any = None) -> float:
        """Negative mean absolute percentage error (higher is better), for model selection."""
        pred = self.predict(X)
        t = np.asarray(y, dtype=float)
        return -float(np.mean(np.abs(pred - t) / t))

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        """Write ``predictor.json`` and model files into ``directory`` (created)."""
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = self._state(d)
        doc = {
            "predictor": self.name,
            "params": jsonable(self.get_params(deep=False)),
            "state": jsonable(state),
        }
        # predictor.json is written last, atomically: a folder holding it holds a whole predictor.
        atomic_write_text(d / PREDICTOR_FILE, json.dumps(doc, indent=1, allow_nan=False))
        return d

    # ------------------------------------------------------------------ for subclasses

    def _fit(
        self,
        networks: list[Network],
        y: np.ndarray,
        eval_set: tuple[list[Network], np.ndarray] | None,
    ) -> None:
        raise NotImplementedError

    def _predict(self, networks: list[Network]) -> np.ndarray:
        raise NotImplementedError

    def _state(self, directory: Path) -> dict[str, Any]:
        """JSON-able fitted state; write large arrays/models as files into ``directory``."""
        raise NotImplementedError

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        """Inverse of :meth:`_state`."""
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(
                f"{type(self).__name__} ({self.name}) is not fitted: call fit() before predict()"
            )


def migrate_params(cls: type[LatencyPredictor], params: Mapping[str, Any]) -> dict[str, Any]:
    """Saved constructor parameters under their current names (``cls.renamed_params``): fcnn's
    and gcn's ``num_threads`` of bundles saved before it became ``n_jobs``, say."""
    renamed = cls.renamed_params
    return {renamed.get(k, k): v for k, v in params.items()}


def load_predictor(directory: str | Path) -> LatencyPredictor:
    """Rebuild a saved predictor (no pickle); raises :class:`BundleError` naming the problem."""
    d = Path(directory)
    path = d / PREDICTOR_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"no {PREDICTOR_FILE} in {d}") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"corrupt {path}: {exc}") from None
    cls = PREDICTORS.get(doc.get("predictor", ""))
    if cls is None:
        raise BundleError(f"{path} names unknown predictor {doc.get('predictor')!r}")
    model = cls(**migrate_params(cls, doc.get("params", {})))
    try:
        model._restore(d, doc.get("state", {}))
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        # Named here, as this predictor's files: a caller (the conformal loader) would
        # otherwise report it as its own corruption.
        raise BundleError(f"corrupt saved {model.name} predictor in {d}: {exc}") from None
    model.fitted_ = True
    return model


def make_predictor(name: str, **params: Any) -> LatencyPredictor:
    """A new predictor by registry name; raises :class:`DataError` listing the known names."""
    cls = PREDICTORS.get(name)
    if cls is None:
        raise DataError(PREDICTORS.unknown(name))
    return cls(**params)


def read_model_file(directory: Path, name: str) -> bytes:
    """The bytes of a saved model file; raises :class:`BundleError` naming a missing one."""
    path = inside(directory, name, f"saved predictor in {directory}: model file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"saved predictor in {directory} lacks its model file {name}") from None
