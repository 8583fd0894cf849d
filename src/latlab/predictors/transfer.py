"""Few-shot transfer to a new device: a usable predictor from k measured networks.

A device measured on only k networks (k = 10, 20, 50) borrows from devices measured on many:
the ``pretrain`` table (``network`` + one latency column per source device, the dataset
format). The method, chosen by measurement on the leave-one-device-out protocol of
:mod:`latlab.experiments.transfer` (see ``docs/conformal_transfer.md``), has two stages:

1. **Source ensemble (the hardware embedding).** A network's log latencies on the source
   devices are its embedding. For each source device j, fit ``log t = a_j + b_j · log s_j`` on
   the k target networks (two parameters: a strong prior that the new device ranks networks
   like some known device, up to scale; ``b_j >= 0``, a negative slope is set to 0); predict
   with the average of these fits weighted by ``(1 / mse_j) ** weight_power`` (in-sample log
   MSE), so the source devices that behave like the target dominate. ``method="nearest"``
   keeps the best single source, ``method="ridge"`` regresses on all standardised source
   columns at once (RidgeCV); both were measured worse than the weighted ensemble at
   k = 10..50. Beside the measured devices, pseudo-sources
   compete for the weights: analytical proxies (``proxies``: MACs, bytes) and non-negative
   op-cost models fitted on the k networks themselves (``additive``, on nb201's op counts and
   on the raw summary of any space's networks, :mod:`latlab.predictors.additive`, entered by
   their leave-one-out values) -- what a new *kind* of device, unlike every source, is
   ranked by.
2. **Architecture head.** What no source device shows (a runtime that prunes dead code, an
   op that is unusually slow on this device) is learned from the residuals of stage 1 on the
   network's vector features (``features="auto"``: NAS-Bench-201 one-hot + summary for nb201
   networks, the summary otherwise): ``head="gp"`` is a Gaussian process (RBF + white noise,
   hyper-parameters by marginal likelihood), ``head="ridge"`` a ridge regression whose penalty
   leave-one-out CV picks, ``head="none"`` stage 1 alone, and ``head="auto"`` (the default)
   fits the GP and the ridge head and keeps the one with the smaller leave-one-out error on
   the k networks (exact closed forms for both, so no network is spent on validation). With
   k = 10 the GP mostly stays flat (the data cannot support a head); with k = 50 an additive
   ridge head can recover per-op costs of the device that the GP's RBF on 57 features misses
   (pixel3 in development runs), and LOO picks it there.

Everything is fitted on ``log(latency)``, so predictions are positive.

**Honest protocol.** The target device's column must not be part of the pretraining data:
pass ``target_exclude`` (a column name or a list), and any pretrain column whose values on the
k training networks equal the given latencies is excluded as well (logged), so a target that
is accidentally still in the table cannot leak into its own predictor.

**Networks outside the pretrain table.** Their source latencies are unknown. They are
predicted by one model per source device (``source_predictor``, a registered predictor name)
trained on that device's column of the pretrain table; these models are built on first need
(deterministically, from the stored source latencies; one fitted model per table, column and
predictor is shared by the fits of a process), so transfer on table networks never pays for
them. ``source_predictor="auto"`` (the default) is ``gbm`` on the space's own features when the
target networks are of the pretrain table's search space, and ``linear`` (ridge on the
space-independent ``summary`` of the IR: MACs, bytes, depth, per-kind layer counts and MACs)
when they are of another one -- **cross-space transfer** (MultiPredict's setting: pretrain on
nb201 or FBNet, adapt on OFA with k networks): a space's one-hot does not exist for another
space's networks, and trees cannot extrapolate to larger networks than they saw.
``source_predictor="none"`` makes networks outside the table an error.

Persistence: ``predictor.json`` (coefficients, head state, encoder state as JSON), the source
latencies as ``transfer_sources.parquet``, and any built source models as saved latlab
predictors in ``source_models/<i>/``. No pickle.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latlab.datasets.references import reference_of
from latlab.datasets.tables import NETWORK, load_table
from latlab.errors import BundleError, DataError, FeatureError
from latlab.fileio import atomic_write_bytes, inside
from latlab.predictors.additive import (
    additive_specs,
    fit_additive,
    loo_additive,
    predict_additive,
)
from latlab.predictors.base import (
    LatencyPredictor,
    Network,
    as_graphs,
    load_predictor,
    make_predictor,
)
from latlab.predictors.hyperparameter_space import HyperparameterSpace, cat, flt

log = logging.getLogger(__name__)

METHODS = ("ensemble", "nearest", "ridge")
HEADS = ("auto", "gp", "ridge", "none")
SOURCES_FILE = "transfer_sources.parquet"
SOURCE_MODELS_DIR = "source_models"
#: Floor on a source fit's log MSE in the ensemble weights (a 0.1 % error squared).
_MSE_FLOOR = 1e-6
#: Name prefixes of the stage-1 columns that are no source device: the analytical proxies and
#: the additive op-cost models fitted on the k networks (``source_weights`` keys).
PSEUDO_SOURCES = ("proxy:", "additive:")
#: Penalties the ridge head chooses from by leave-one-out CV (features are standardised).
_RIDGE_ALPHAS = np.logspace(0.5, 5, 25)


# --------------------------------------------------------------------------- source table


@dataclass(frozen=True)
class SourceLatencies:
    """Log latencies of the pretrain networks on the source devices (missing values imputed).

    ``log_ms`` is ``(n_networks, n_sources)``; ``index`` maps a reference to its row;
    ``observed`` marks values that were measured (not imputed), for the source models.
    """

    networks: tuple[str, ...]
    columns: tuple[str, ...]
    log_ms: np.ndarray
    observed: np.ndarray

    @property
    def index(self) -> dict[str, int]:
        return _index_of(self.networks)

    def rows(self, references: Sequence[str]) -> np.ndarray:
        """Row of each reference, -1 where the table does not have it."""
        idx = self.index
        return np.array([idx.get(r.strip(), -1) for r in references], dtype=np.int64)

    def without(self, column: str) -> SourceLatencies:
        """These sources less one column (the few-shot simulation's pseudo-target)."""
        keep = [i for i, c in enumerate(self.columns) if c != column]
        return SourceLatencies(
            self.networks,
            tuple(self.columns[i] for i in keep),
            self.log_ms[:, keep],
            self.observed[:, keep],
        )

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.log_ms, columns=list(self.columns))
        frame.insert(0, NETWORK, list(self.networks))
        frame.insert(1, "_observed", [_pack_mask(m) for m in self.observed])
        return frame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> SourceLatencies:
        cols = tuple(c for c in frame.columns if c not in (NETWORK, "_observed"))
        observed = np.array([_unpack_mask(int(v), len(cols)) for v in frame["_observed"]])
        return cls(
            tuple(frame[NETWORK].astype(str)),
            cols,
            frame[list(cols)].to_numpy(dtype=np.float64),
            observed.reshape(len(frame), len(cols)).astype(bool),
        )


@lru_cache(maxsize=8)
def _index_of(networks: tuple[str, ...]) -> dict[str, int]:
    return {n: i for i, n in enumerate(networks)}


def _pack_mask(mask: np.ndarray) -> int:
    return int(sum(1 << i for i, v in enumerate(mask) if v))


def _unpack_mask(value: int, n: int) -> list[bool]:
    return [bool(value >> i & 1) for i in range(n)]


def load_sources(
    path: str | os.PathLike[str], exclude: Sequence[str] = (), min_ms: float | None = None
) -> SourceLatencies:
    """The pretrain table's source devices (``exclude`` removed), log ms, imputed.

    Cached per file state and exclusion, so the leave-one-device-out experiment loads and
    imputes each table once. Raises :class:`DataError` naming the file when no source column
    is left or an excluded column does not exist.
    """
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError:
        raise DataError(f"pretrain table not found: {path}") from None
    excluded = tuple(sorted(set(exclude)))
    return _load_sources_cached(str(p), st.st_mtime_ns, st.st_size, excluded, min_ms)


@lru_cache(maxsize=16)
def _load_sources_cached(
    path: str, mtime_ns: int, size: int, exclude: tuple[str, ...], min_ms: float | None = None
) -> SourceLatencies:
    table = load_table(path, min_ms)  # drops (and reports) invalid values per column
    unknown = [c for c in exclude if c not in table.devices]
    if unknown:
        raise DataError(
            f"target_exclude names {unknown[0]!r}, not a column of {path} "
            f"(columns: {', '.join(table.devices)})"
        )
    columns = [c for c in table.devices if c not in exclude]
    if not columns:
        raise DataError(
            f"pretrain table {path} has no source device left after excluding {exclude}"
        )
    values = table.data[columns].to_numpy(dtype=np.float64)
    observed = np.isfinite(values)
    # A source with less than half its values measured is too sparse to embed networks.
    keep = observed.mean(axis=0) >= 0.5
    for c in np.asarray(columns)[~keep]:
        log.warning("pretrain column %r has fewer than half its values valid: not used", c)
    columns = [c for c, k in zip(columns, keep, strict=True) if k]
    if not columns:
        raise DataError(f"pretrain table {path} has no source column with enough valid values")
    values, observed = values[:, keep], observed[:, keep]
    rows = observed.any(axis=1)
    logv = np.log(values[rows])
    if not observed[rows].all():
        logv = _impute(logv)
        log.info(
            "pretrain %s: imputed %d missing source latencies",
            path,
            int((~observed[rows]).sum()),
        )
    networks = tuple(str(n).strip() for n in table.data[NETWORK].to_numpy()[rows])
    return SourceLatencies(networks, tuple(columns), logv, observed[rows])


def _impute(logv: np.ndarray) -> np.ndarray:
    """Fill missing log latencies from the other source devices (scikit-learn's iterative
    imputer: each column regressed on the others, a few rounds)."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    if logv.shape[1] == 1:
        out = logv.copy()
        out[~np.isfinite(out)] = np.nanmedian(out)
        return out
    imputer = IterativeImputer(max_iter=10, random_state=0, sample_posterior=False)
    return np.asarray(imputer.fit_transform(logv), dtype=np.float64)


# --------------------------------------------------------------------------- stage 1

#: Analytical proxies usable as extra "source devices": a device whose runtime prunes dead
#: code or is bound by memory traffic may follow these more closely than any measured device.
PROXIES: dict[str, Any] = {
    "macs": lambda t: t.macs,
    "bytes": lambda t: t.bytes_read + t.bytes_written + t.weight_bytes,
}


def proxy_matrix(graphs: Sequence[Any], proxies: Sequence[str]) -> np.ndarray:
    """``(n, len(proxies))`` log values of the proxies (from the IR's totals)."""
    unknown = [p for p in proxies if p not in PROXIES]
    if unknown:
        raise DataError(f"unknown transfer proxy {unknown[0]!r} (known: {', '.join(PROXIES)})")
    vals = np.array([[float(PROXIES[p](g.totals)) for p in proxies] for g in graphs])
    return np.log(np.maximum(vals.reshape(len(graphs), len(proxies)), 1.0))


def fit_source_ensemble(
    s: np.ndarray, y: np.ndarray, method: str = "ensemble", weight_power: float = 2.0
) -> dict[str, Any]:
    """Stage 1 on k target networks: ``s`` (k, m) source log latencies, ``y`` (k,) target logs.

    Returns JSON-able coefficients for :func:`predict_source_ensemble`.
    """
    if method == "ridge":
        from sklearn.linear_model import RidgeCV

        mean, scale = s.mean(axis=0), s.std(axis=0)
        scale[scale == 0] = 1.0
        reg = RidgeCV(alphas=np.logspace(-3, 3, 25)).fit((s - mean) / scale, y)
        return {
            "method": method,
            "mean": mean.tolist(),
            "scale": scale.tolist(),
            "coef": np.asarray(reg.coef_).tolist(),
            "intercept": float(reg.intercept_),
        }
    m = s.shape[1]
    a, b, mse = np.zeros(m), np.zeros(m), np.zeros(m)
    for j in range(m):
        x = s[:, j]
        if np.ptp(x) > 0:
            b[j], a[j] = np.polyfit(x, y, 1)
        if b[j] <= 0:  # also a constant column, whose slope stays the initial 0
            # A slope below 0 says the target is slower where the source is faster: noise on
            # k networks (no two devices rank networks inversely), or the negative bias that
            # leave-one-out predictions (the additive columns) have where they explain little.
            # Extrapolated to the other networks it inverts the ranking (an OFA batch-1 column
            # at Spearman -0.7 with one draw of 10 networks), so such a source only predicts
            # the mean and, by its error, gets the weight of a constant.
            b[j], a[j] = 0.0, float(np.mean(y))
        mse[j] = float(np.mean((y - (a[j] + b[j] * x)) ** 2))
    if method == "nearest":
        w = np.zeros(m)
        w[int(np.argmin(mse))] = 1.0
    else:
        w = (1.0 / (mse + _MSE_FLOOR)) ** float(weight_power)
        w /= w.sum()
    return {
        "method": method,
        "a": a.tolist(),
        "b": b.tolist(),
        "w": w.tolist(),
        "mse": mse.tolist(),
    }


def predict_source_ensemble(coef: dict[str, Any], s: np.ndarray) -> np.ndarray:
    """Stage-1 log-latency prediction for source log latencies ``s`` (n, m)."""
    if coef["method"] == "ridge":
        z = (s - np.asarray(coef["mean"])) / np.asarray(coef["scale"])
        return np.asarray(z @ np.asarray(coef["coef"]) + coef["intercept"], dtype=np.float64)
    a, b, w = (np.asarray(coef[k], dtype=np.float64) for k in ("a", "b", "w"))
    return np.asarray((a + b * s) @ w, dtype=np.float64)


# --------------------------------------------------------------------------- stage 2


def fit_head(head: str, x: np.ndarray, r: np.ndarray, random_state: int = 0) -> dict[str, Any]:
    """Stage 2: a model of the stage-1 residuals ``r`` on standardised features ``x``.

    ``head="auto"`` fits ``gp`` and ``ridge`` and returns the state of the one with the
    smaller leave-one-out mean squared error (recorded as ``loo_mse`` for both)."""
    if head == "auto":
        states = {h: fit_head(h, x, r, random_state) for h in ("gp", "ridge")}
        loo = {h: st["loo_mse"] for h, st in states.items()}
        best = min(loo, key=lambda h: loo[h])
        return {**states[best], "selected_from": loo}
    if head == "none":
        return {"head": "none"}
    if head == "ridge":
        from sklearn.linear_model import RidgeCV

        reg = RidgeCV(alphas=_RIDGE_ALPHAS, store_cv_results=True).fit(x, r)
        return {
            "head": "ridge",
            "coef": np.asarray(reg.coef_).tolist(),
            "intercept": float(reg.intercept_),
            "alpha": float(reg.alpha_),
            # Efficient LOO squared errors per penalty; the chosen penalty's mean.
            "loo_mse": float(reg.cv_results_.mean(axis=0).min()),
        }
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # A hyper-parameter at its bound is an answer here (e.g. "no structure beyond
        # noise" with k = 10), not a failure worth a warning per fit.
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp = _make_gp(None, random_state).fit(x, r - r.mean())
    return {
        "head": "gp",
        "offset": float(r.mean()),
        "theta": gp.kernel_.theta.tolist(),
        "x": x.tolist(),
        "r": (r - r.mean()).tolist(),
        "loo_mse": _gp_loo_mse(gp, x, r - r.mean()),
    }


def _gp_loo_mse(gp: Any, x: np.ndarray, r: np.ndarray) -> float:
    """Leave-one-out MSE of a fitted GP at its hyper-parameters, in closed form
    (Rasmussen & Williams, eq. 5.12: the LOO residual is ``[K⁻¹r]_i / [K⁻¹]_ii``)."""
    k = gp.kernel_(x) + gp.alpha * np.eye(len(x))
    inv = np.linalg.inv(k)
    return float(np.mean((inv @ r / np.diag(inv)) ** 2))


def _make_gp(theta: Sequence[float] | None, random_state: int) -> Any:
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel
    from sklearn.gaussian_process.kernels import ConstantKernel as C

    kernel = C(1e-2, (1e-5, 1.0)) * RBF(10.0, (1.0, 1e3)) + WhiteKernel(1e-3, (1e-6, 1e-1))
    if theta is None:
        return GaussianProcessRegressor(kernel, n_restarts_optimizer=1, random_state=random_state)
    return GaussianProcessRegressor(kernel.clone_with_theta(np.asarray(theta)), optimizer=None)


class _Head:
    """A fitted head rebuilt from its JSON state (the GP refits its stored points with fixed
    hyper-parameters, which reproduces its predictions exactly)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.gp = None
        if state["head"] == "gp":
            self.gp = _make_gp(state["theta"], 0).fit(
                np.asarray(state["x"], dtype=np.float64), np.asarray(state["r"], dtype=np.float64)
            )

    def predict(self, x: np.ndarray) -> np.ndarray:
        kind = self.state["head"]
        if kind == "none":
            return np.zeros(len(x))
        if kind == "ridge":
            return x @ np.asarray(self.state["coef"]) + self.state["intercept"]
        assert self.gp is not None
        return np.asarray(self.gp.predict(x), dtype=np.float64) + self.state["offset"]


# --------------------------------------------------------------------------- features


def _auto_features(graphs: Sequence[Any]) -> str:
    """``auto``: the space's one-hot with the summary for networks of one search space that has
    a one-hot (nb201, fbnet, ofa), the summary otherwise."""
    from latlab.datasets.spaces import space_of

    space = space_of(graphs)
    return f"{space.onehot}+summary" if space is not None and space.onehot else "summary"


class _Features:
    """Vector encoder + standardisation fitted on the pretrain networks (the population the
    predictor serves), so that k = 10 target networks do not set the feature scales."""

    def __init__(self, spec: str, encoder: Any, mean: np.ndarray, scale: np.ndarray) -> None:
        self.spec, self.encoder, self.mean, self.scale = spec, encoder, mean, scale

    @classmethod
    def fit(cls, spec: str, population: Sequence[Any]) -> _Features:
        from latlab.predictors.vector_features import vector_encoder

        encoder = vector_encoder(spec)
        x = np.asarray(encoder.fit_transform(list(population)), dtype=np.float64)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0
        return cls(spec, encoder, mean, scale)

    def transform(self, graphs: Sequence[Any]) -> np.ndarray:
        x = np.asarray(self.encoder.transform(list(graphs)), dtype=np.float64)
        return (x - self.mean) / self.scale

    def to_state(self) -> dict[str, Any]:
        from latlab.encoders.base import encoder_to_state

        return {
            "spec": self.spec,
            "encoder": encoder_to_state(self.encoder),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Features:
        from latlab.encoders.base import encoder_from_state

        return cls(
            state["spec"],
            encoder_from_state(state["encoder"]),
            np.asarray(state["mean"], dtype=np.float64),
            np.asarray(state["scale"], dtype=np.float64),
        )


@lru_cache(maxsize=8)
def _population_features(
    networks: tuple[str, ...], spec: str, sample: int
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Encoder and standardisation on (a seeded sample of) the pretrain networks; cached."""
    rng = np.random.default_rng(0)
    chosen = list(networks)
    if len(chosen) > sample:
        chosen = [chosen[i] for i in np.sort(rng.choice(len(chosen), sample, replace=False))]
    feats = _Features.fit(spec, as_graphs(chosen))
    return feats.encoder, feats.mean, feats.scale


# --------------------------------------------------------------------------- predictor

#: Fitted source models shared by the transfer fits of a process, keyed by the (cached,
#: immutable) source table's identity, column index, predictor name and seed.
_SOURCE_MODELS: dict[tuple[int, int, str, int], tuple[SourceLatencies, LatencyPredictor]] = {}
_SOURCE_MODELS_MAX = 64


class TransferPredictor(LatencyPredictor):
    """Few-shot latency predictor for a new device, transferred from a ``pretrain`` table.

    Parameters: ``pretrain`` (dataset table, CSV/Parquet, of source devices), ``target_exclude``
    (column name(s) of that table to leave out: the target device itself), ``method``
    (stage 1: ``ensemble``, ``nearest``, ``ridge``), ``head`` (stage 2: ``auto``, ``gp``,
    ``ridge``, ``none``), ``features`` (``auto`` or an encoder spec), ``weight_power`` (ensemble
    sharpness), ``source_predictor`` (registered predictor for networks outside the table, ``auto``
    or ``none``), ``proxies`` (analytical pseudo-sources: ``macs``, ``bytes``), ``additive``
    (the op-cost pseudo-sources fitted on the k networks, :mod:`latlab.predictors.additive`:
    ``auto`` -- the space's ``additive_counts``: nb201's edge and live op counts and every
    space's raw summary; none for networks of no single space --, ``none``, or comma-separated
    encoder specs), ``random_state``.
    """

    name = "transfer"
    feature_state_keys = ("features",)
    #: How source devices are combined and what the architecture head learns (tuning needs a
    #: validation split of the target device's few networks).
    param_space = HyperparameterSpace(
        {
            "method": cat("ensemble", "nearest", "ridge"),
            "head": cat("auto", "gp", "ridge", "none"),
            "weight_power": flt(0.0, 8.0),
            "additive": cat("auto", "none"),
        }
    )
    min_train_rows = 3

    def __init__(
        self,
        pretrain: str | None = None,
        target_exclude: str | list[str] | None = None,
        method: str = "ensemble",
        head: str = "auto",
        features: str = "auto",
        weight_power: float = 2.0,
        source_predictor: str = "auto",
        proxies: tuple[str, ...] | list[str] = ("macs", "bytes"),
        random_state: int = 0,
        min_ms: float | None = None,
        additive: str = "auto",
    ) -> None:
        self.pretrain = pretrain
        #: Floor (ms) below which source latencies are dropped (``load_table(min_ms=)``).
        self.min_ms = min_ms
        self.target_exclude = target_exclude
        self.method = method
        self.head = head
        self.features = features
        self.weight_power = weight_power
        self.source_predictor = source_predictor
        self.proxies = proxies
        self.additive = additive
        self.random_state = random_state

    # ------------------------------------------------------------------ fit

    def _excluded(self) -> list[str]:
        t = self.target_exclude
        if t is None:
            return []
        return [t] if isinstance(t, str) else [str(c) for c in t]

    def _fit(
        self,
        networks: list[Network],
        y: np.ndarray,
        eval_set: tuple[list[Network], np.ndarray] | None,
    ) -> None:
        if self.method not in METHODS:
            raise DataError(
                f"unknown transfer method {self.method!r} (known: {', '.join(METHODS)})"
            )
        if self.head not in HEADS:
            raise DataError(f"unknown transfer head {self.head!r} (known: {', '.join(HEADS)})")
        if not self.pretrain:
            raise DataError("the transfer predictor needs pretrain= (a table of source devices)")
        refs = [reference_of(n).strip() for n in networks]
        exclude = self._excluded()
        sources = load_sources(self.pretrain, exclude, self.min_ms)
        leaked = _leaking_columns(sources, refs, y)
        if leaked:
            log.warning(
                "pretrain columns %s equal the target latencies on the training networks: "
                "excluded (the target device must not be its own source)",
                ", ".join(leaked),
            )
            sources = load_sources(self.pretrain, [*exclude, *leaked], self.min_ms)
        self._fit_on(sources, networks, y)

    def _fit_on(self, sources: SourceLatencies, networks: list[Network], y: np.ndarray) -> None:
        """Stage 1 and the head on the k target networks, given the source table."""
        refs = [reference_of(n).strip() for n in networks]
        self.sources_ = sources
        self.source_models_: dict[str, LatencyPredictor] = {}
        graphs = as_graphs(networks)
        self.source_predictor_ = self._resolve_source_predictor(graphs)
        s = self._source_matrix(refs, graphs)
        self.additive_, loo = self._fit_additive(graphs, y)
        s = np.hstack([s, *loo])  # leave-one-out values: weighted by unseen error
        logy = np.log(y)
        self.stage1_ = fit_source_ensemble(s, logy, self.method, self.weight_power)
        r = logy - predict_source_ensemble(self.stage1_, s)
        if self.head == "none":
            self.features_: _Features | None = None
            self.head_state_ = fit_head("none", np.zeros((len(y), 0)), r)
        else:
            spec = _auto_features(graphs) if self.features == "auto" else self.features
            try:
                encoder, mean, scale = _population_features(sources.networks, spec, 4000)
                self.features_ = _Features(spec, encoder, mean, scale)
            except FeatureError:
                # The pretrain networks are of other families than the target's (features such
                # as the nb201 one-hot do not apply to them): scale on the target networks.
                self.features_ = _Features.fit(spec, graphs)
            self.head_state_ = fit_head(
                self.head, self.features_.transform(graphs), r, int(self.random_state)
            )
        self._head = _Head(self.head_state_)
        log.info(
            "transfer fitted on %d target networks from %d source devices (%s, head %s)",
            len(y),
            len(sources.columns),
            self.method,
            self.head_state_["head"],
        )

    def _source_matrix(self, refs: list[str], graphs: list[Any]) -> np.ndarray:
        """Source log latencies of the networks (looked up, or predicted off the table),
        followed by the analytical proxies' log values."""
        rows = self.sources_.rows(refs)
        out = np.empty((len(refs), len(self.sources_.columns)))
        inside = rows >= 0
        out[inside] = self.sources_.log_ms[rows[inside]]
        if not inside.all():
            missing = [g for g, r in zip(graphs, rows, strict=True) if r < 0]
            out[~inside] = self._predict_sources(missing)
        if self.proxies:
            out = np.hstack([out, proxy_matrix(graphs, self.proxies)])
        return out

    def _fit_additive(
        self, graphs: list[Any], y: np.ndarray
    ) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        """The additive op-cost pseudo-sources on the k networks, one per count encoder
        (``auto``: the space's :attr:`additive_counts`; ``none``; or comma-separated specs),
        and each one's leave-one-out log predictions as a ``(k, 1)`` stage-1 column."""
        from latlab.predictors.vector_features import vector_encoder

        if self.additive == "none":
            return [], []
        if self.additive == "auto":
            specs = additive_specs(graphs)
        else:
            specs = tuple(p.strip() for p in str(self.additive).split(",") if p.strip())
        fits, loo = [], []
        for spec in specs:
            encoder = vector_encoder(spec).fit(graphs)
            x = np.asarray(encoder.transform(graphs), dtype=np.float64)
            fits.append({"spec": spec, "encoder": encoder, "fit": fit_additive(x, y)})
            loo.append(np.log(loo_additive(x, y))[:, None])
        return fits, loo

    def _with_additive(self, s: np.ndarray, graphs: list[Any]) -> np.ndarray:
        """``s`` with the additive pseudo-sources' log predictions appended."""
        cols = [s]
        for add in getattr(self, "additive_", []):  # bundles from before them have none
            x = np.asarray(add["encoder"].transform(graphs), dtype=np.float64)
            cols.append(np.log(predict_additive(add["fit"], x))[:, None])
        return np.hstack(cols)

    def _resolve_source_predictor(self, graphs: list[Any]) -> str:
        """``auto``: ``gbm`` when the target networks are of the pretrain table's search space,
        ``linear`` (space-independent features) when they are of another family."""
        if self.source_predictor != "auto":
            return self.source_predictor
        from latlab.predictors.vector_features import families

        pretrain = families(as_graphs(list(self.sources_.networks[:50])))
        if families(graphs) <= pretrain:
            return "gbm"
        log.info(
            "target networks (%s) are of another family than the pretrain table (%s): "
            "cross-space transfer, source devices modelled by 'linear' on the summary",
            ", ".join(sorted(families(graphs))),
            ", ".join(sorted(pretrain)),
        )
        return "linear"

    def _predict_sources(self, graphs: list[Any]) -> np.ndarray:
        if self._source_predictor() == "none":
            raise DataError(
                f"network {graphs[0].reference} is not in the pretrain table and "
                "source_predictor='none': its source-device latencies are unknown"
            )
        cols = []
        for j, col in enumerate(self.sources_.columns):
            model = self.source_models_.get(col)
            if model is None:
                model = self._fit_source_model(j)
                self.source_models_[col] = model
            # A source model may extrapolate to <= 0 ms (a linear proxy's intercept): clamp to
            # half the source's fastest measured network, so logs stay finite.
            floor = 0.5 * float(np.exp(self.sources_.log_ms[self.sources_.observed[:, j], j].min()))
            cols.append(np.log(np.maximum(model.predict(graphs), floor)))
        return np.stack(cols, axis=1)

    def _source_predictor(self) -> str:
        # Bundles saved before "auto" existed have no source_predictor_: their setting stands.
        return str(getattr(self, "source_predictor_", self.source_predictor))

    def _fit_source_model(self, j: int) -> LatencyPredictor:
        """Model of source device j's latency, trained on its measured pretrain values (one
        per table, column, predictor and seed in a process: the experiments refit the
        transfer predictor hundreds of times on one table)."""
        name = self._source_predictor()
        key = (id(self.sources_), j, name, int(self.random_state))
        hit = _SOURCE_MODELS.get(key)
        if hit is not None and hit[0] is self.sources_:
            return hit[1]
        col = self.sources_.columns[j]
        mask = self.sources_.observed[:, j]
        nets = [n for n, m in zip(self.sources_.networks, mask, strict=True) if m]
        log.info("training the %s model of source device %r on %d networks", name, col, len(nets))
        params: dict[str, Any] = {}
        if "random_state" in make_predictor(name).get_params():
            params["random_state"] = int(self.random_state)
        model = make_predictor(name, **params).fit(nets, np.exp(self.sources_.log_ms[mask, j]))
        if len(_SOURCE_MODELS) >= _SOURCE_MODELS_MAX:
            _SOURCE_MODELS.pop(next(iter(_SOURCE_MODELS)))
        _SOURCE_MODELS[key] = (self.sources_, model)  # holding sources_ keeps its id unique
        return model

    # ------------------------------------------------------------------ predict

    def _predict(self, networks: list[Network]) -> np.ndarray:
        refs = [reference_of(n).strip() for n in networks]
        graphs = as_graphs(networks)
        s = self._with_additive(self._source_matrix(refs, graphs), graphs)
        z = predict_source_ensemble(self.stage1_, s)
        if self.features_ is not None:
            z = z + self._head.predict(self.features_.transform(graphs))
        return np.exp(z)

    def in_pretrain_table(self, networks: Sequence[Network]) -> np.ndarray:
        """Bool per network: whether it is a row of the pretrain table (by reference)."""
        self._check_fitted()
        return self.sources_.rows([reference_of(n).strip() for n in networks]) >= 0

    def difficulty(self) -> float:
        """How hard the target looks from its k networks: the root leave-one-out error of the
        head on the stage-1 residuals (log ms; exact closed forms, no refit), floored at 1 %.
        The few-shot intervals scale by it (:meth:`simulate_few_shot`)."""
        self._check_fitted()
        loo = self.head_state_.get("loo_mse")
        if loo is None:  # head "none": the stage-1 in-sample error
            loo = float(min(self.stage1_.get("mse", [1e-4]) or [1e-4]))
        return float(max(np.sqrt(float(loo)), 0.01))

    def simulate_few_shot(
        self, k: int, draws: int = 2, test: int = 200, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """This few-shot transfer replayed on the pretrain table: each source device in turn is
        a pseudo-target, adapted from ``k`` random networks of it with the other sources (this
        predictor's settings), and scored on ``test`` other networks; ``draws`` times each.

        Returns ``(residuals, scales)``, one entry per scored test network: its absolute log
        residual and the :meth:`difficulty` of the pseudo-target it belongs to. What intervals
        from k networks can borrow: how far off k-shot transfer is, relative to what its k
        networks show, on devices whose every latency is known.
        """
        self._check_fitted()
        rng = np.random.default_rng(seed)
        scores, scales = [], []
        for j, col in enumerate(self.sources_.columns):
            rows = np.flatnonzero(self.sources_.observed[:, j])
            if len(self.sources_.columns) < 2 or len(rows) < k + 10:
                continue
            others = self.sources_.without(col)
            for _ in range(draws):
                pick = rng.permutation(rows)
                tr, te = pick[:k], pick[k : k + test]
                nets = [self.sources_.networks[i] for i in tr]
                pseudo = make_predictor(self.name, **self.get_params(deep=False))
                pseudo._fit_on(others, nets, np.exp(self.sources_.log_ms[tr, j]))
                pseudo.fitted_ = True
                pred = pseudo._predict([self.sources_.networks[i] for i in te])
                scores.append(np.abs(self.sources_.log_ms[te, j] - np.log(pred)))
                scales.append(np.full(len(te), pseudo.difficulty()))
        if not scores:
            raise DataError(
                f"the few-shot simulation needs at least two source devices with {k + 10} "
                "measured networks each"
            )
        return np.concatenate(scores), np.concatenate(scales)

    def source_weights(self) -> dict[str, float]:
        """Stage-1 weight of each source device (what the target was found to resemble)."""
        self._check_fitted()
        names = [*self.sources_.columns, *(f"proxy:{p}" for p in self.proxies)]
        names += [f"additive:{a['spec']}" for a in getattr(self, "additive_", [])]
        key = "coef" if self.stage1_["method"] == "ridge" else "w"
        return dict(zip(names, map(float, self.stage1_[key]), strict=True))

    # ------------------------------------------------------------------ persistence

    def _state(self, directory: Path) -> dict[str, Any]:
        buf = io.BytesIO()
        self.sources_.to_frame().to_parquet(buf, index=False)
        atomic_write_bytes(directory / SOURCES_FILE, buf.getvalue())
        models = {}
        for i, (col, model) in enumerate(sorted(self.source_models_.items())):
            sub = f"{SOURCE_MODELS_DIR}/{i}"
            model.save(directory / sub)
            models[col] = sub
        return {
            "sources_file": SOURCES_FILE,
            "stage1": self.stage1_,
            "head": self.head_state_,
            "features": None if self.features_ is None else self.features_.to_state(),
            "source_models": models,
            "source_predictor": self._source_predictor(),
            "additive": [_additive_state(a) for a in getattr(self, "additive_", [])],
        }

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        path = inside(directory, state.get("sources_file", SOURCES_FILE), "sources file")
        try:
            frame = pd.read_parquet(path)
        except FileNotFoundError:
            raise BundleError(
                f"saved transfer predictor in {directory} lacks {path.name}"
            ) from None
        except Exception as exc:  # pyarrow raises its own errors for corrupt files
            raise BundleError(f"corrupt {path}: {exc}") from None
        self.sources_ = SourceLatencies.from_frame(frame)
        self.stage1_ = state["stage1"]
        self.head_state_ = state["head"]
        self._head = _Head(self.head_state_)
        feats = state.get("features")
        self.features_ = None if feats is None else _Features.from_state(feats)
        if "source_predictor" in state:
            self.source_predictor_ = str(state["source_predictor"])
        self.additive_ = [_additive_from_state(a) for a in state.get("additive", [])]
        self.source_models_ = {
            col: load_predictor(inside(directory, sub, "source model folder"))
            for col, sub in state.get("source_models", {}).items()
        }


def _additive_state(add: dict[str, Any]) -> dict[str, Any]:
    from latlab.encoders.base import encoder_to_state

    return {"spec": add["spec"], "encoder": encoder_to_state(add["encoder"]), "fit": add["fit"]}


def _additive_from_state(state: dict[str, Any]) -> dict[str, Any]:
    from latlab.encoders.base import encoder_from_state

    return {**state, "encoder": encoder_from_state(state["encoder"])}


def _leaking_columns(sources: SourceLatencies, refs: list[str], y: np.ndarray) -> list[str]:
    """Source columns whose values on the training networks equal the target latencies."""
    rows = sources.rows(refs)
    known = rows >= 0
    if known.sum() < 2:
        return []
    logy = np.log(y[known])
    vals = sources.log_ms[rows[known]]
    same = np.all(np.isclose(vals, logy[:, None], rtol=0, atol=1e-9), axis=0)
    return [c for c, s in zip(sources.columns, same, strict=True) if s]
