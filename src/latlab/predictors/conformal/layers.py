"""``cps``: conformal predictive systems per layer kind, summed to networks, recalibrated.

For layer-wise predictors (``roofline``, ``refined``, ``statistical``, ``mixed``, ``lut``: any
predictor with ``predict_layers``), following Wess et al. (IEEE Access 2024):

1. **Layer level.** Held-out single-layer benchmarks (in the calibration networks, or passed as
   ``layer_networks``) give log residuals ``log t - log p`` of the layer models; a Mondrian
   conformal predictive system (crepes ``ConformalPredictiveSystem`` with the layer kind as the
   bin) turns them into a predictive distribution per layer: ``p · exp(r)``, ``r`` drawn from
   the residuals of the layer's kind (kinds with fewer than ``min_kind_points`` residuals use
   the pooled residuals of all kinds).
2. **Network level.** A network's distribution is the sum of its mapped layers' distributions
   plus the per-inference overhead, by Monte Carlo (``samples`` draws per layer, common random
   numbers: a network's draws depend on its own layers only, so intervals do not change with
   the batch a network comes in).
3. **Validation and recalibration.** Summing layers as if their errors were independent
   under-covers when they are correlated (a device faster than modelled on every conv), which
   is the usual case. So the summed distribution is not trusted as is: on the calibration
   *networks* (multi-layer networks measured end to end, disjoint from the benchmarks) its
   interval at ``reference_confidence`` is checked (``aggregate_coverage_``, with a warning when
   it under-covers), and the final interval is a network-level normalised conformal interval:
   ``[log m + q_lo · sigma, log m + q_hi · sigma]`` in log space, where ``m`` is the summed
   distribution's median, ``sigma`` half the log-width of its reference interval, and
   ``q_lo``/``q_hi`` the two-sided split-conformal quantiles (crepes CPS) of the signed scores
   ``(log t - log m) / sigma`` of the calibration networks. Signed scores correct a bias of the
   summed distribution (layer models that all over-predict) instead of only widening it; both
   quantiles exist from ``2/(1-c)`` calibration networks (20 at 90 %). Coverage is thus
   guaranteed at network level, and the layer distributions still decide which networks get
   wider intervals.

Calibration therefore needs both single-layer benchmarks (layer level) and measured multi-layer
networks (network level); either missing is a :class:`DataError`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latlab.errors import DataError
from latlab.predictors.base import LayerPredictor, Network, as_graphs
from latlab.predictors.conformal.base import (
    ConformalPredictor,
    import_crepes,
)

POOLED = "*"
#: The per-inference overhead probe of a benchmark table (not a layer, not a network).
SESSION_PROBE = "kernel:padding?c=1"


def _benchmarked_layer(graph: Any) -> int | None:
    """Index of the one layer a single-layer benchmark measures, else None."""
    from latlab.predictors.layerwise.predictor import benchmarked_layer

    return benchmarked_layer(graph)  # type: ignore[no-any-return]


class LayerCps(ConformalPredictor):
    """Layer-kind CPS summed to a network distribution, recalibrated at network level."""

    method = "cps"
    defaults: ClassVar[dict[str, Any]] = {
        "samples": 1000,
        "seed": 0,
        "min_kind_points": 10,
        "reference_confidence": 0.9,
    }

    def __init__(self, base: Any, **options: Any) -> None:
        super().__init__(base, **options)
        if not isinstance(base, LayerPredictor):
            raise DataError(
                f"cps needs a layer-wise predictor (roofline, refined, statistical, mixed, lut) "
                f"with predict_layers; {type(base).__name__} ({base.name}) predicts networks only"
            )

    # ------------------------------------------------------------------ calibration

    def _calibrate(
        self,
        networks: list[Network],
        y: np.ndarray,
        train: tuple[list[Network], np.ndarray] | None,
    ) -> None:
        ref = float(self.options["reference_confidence"])
        if not 0 < ref < 1:
            raise DataError(f"cps: reference_confidence must be in (0, 1), got {ref!r}")
        if int(self.options["samples"]) < 100:
            raise DataError(f"cps: samples must be at least 100, got {self.options['samples']}")
        layer_nets: list[Any] = []
        layer_y: list[float] = []
        net_nets: list[Any] = []
        net_y: list[float] = []
        extra = self.layer_data or ([], np.zeros(0))
        for g, t in zip(as_graphs([*networks, *extra[0]]), [*y, *extra[1]], strict=True):
            if g.reference == SESSION_PROBE:
                continue
            if _benchmarked_layer(g) is not None:
                layer_nets.append(g)
                layer_y.append(float(t))
            else:
                net_nets.append(g)
                net_y.append(float(t))
        if not layer_nets:
            raise DataError(
                "cps needs layer-level calibration data: single-layer benchmarks (kernel: "
                "networks of a benchmark table) held out from the layer models' training"
            )
        if not net_nets:
            raise DataError(
                "cps needs network-level calibration data: multi-layer networks measured end to "
                "end, to validate and recalibrate the summed layer distributions"
            )
        self._fit_layer_cps(layer_nets, np.asarray(layer_y))
        yn = np.asarray(net_y)
        center, sigma, low, high = self._aggregate(net_nets, ref)
        inside = (yn >= low) & (yn <= high)
        self.aggregate_coverage_ = float(100 * inside.mean())
        self.n_network_calibration_ = len(yn)
        # Signed scores: a bias of the summed distribution (layer models that all over- or
        # under-predict) is corrected by the two one-sided quantiles, not only widened.
        self.scores_ = (np.log(yn) - center) / sigma
        self._build_network_cps()
        n = len(yn)
        if self.aggregate_coverage_ < 100 * (ref - 2 * math.sqrt(ref * (1 - ref) / n)):
            lo, hi = self._score_bounds(ref)
            self.warn(
                f"cps: the summed layer distributions cover only {self.aggregate_coverage_:.1f} % "
                f"of the {n} calibration networks at {ref:.0%} (layer errors are correlated or "
                f"biased); the intervals are recalibrated at network level (log bounds "
                f"median {lo:+.2f} / {hi:+.2f} spreads instead of -1 / +1)"
            )

    def _build_network_cps(self) -> None:
        crepes = import_crepes()
        self.network_cps_ = crepes.ConformalPredictiveSystem().fit(np.asarray(self.scores_))

    def _score_bounds(self, confidence: float) -> tuple[float, float]:
        """Two-sided split-conformal bounds of the signed network scores (crepes CPS: the
        ⌊(n+1)(1-c)/2⌋-th and ⌈(n+1)(1+c)/2⌉-th smallest; infinite when n is too small)."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lo, hi = self.network_cps_.predict_int(np.zeros(1), confidence=confidence)[0]
        return float(lo), float(hi)

    def min_calibration_size(self, confidence: float) -> int:
        """Both one-sided quantiles exist from ``n >= 2/(1-c)`` networks (20 at 90 %)."""
        return max(1, math.ceil(2.0 / (1.0 - confidence) - 1e-9))

    def _fit_layer_cps(self, graphs: list[Any], t: np.ndarray) -> None:
        frame = self.base.predict_layers(graphs)
        pred = np.zeros(len(graphs))
        kinds = [""] * len(graphs)
        for row in frame.itertuples(index=False):
            i = int(row.network_index)
            head = _benchmarked_layer(graphs[i])
            if head in tuple(row.layer_indices):
                pred[i] = float(row.predicted_ms)
                kinds[i] = str(row.kind)
        ok = (pred > 0) & np.array([k != "" for k in kinds])
        if not ok.any():
            raise DataError("cps: no single-layer benchmark's layer was found by predict_layers")
        residuals = np.log(t[ok]) - np.log(pred[ok])
        bins = np.array([kinds[i] for i in np.flatnonzero(ok)])
        self.layer_residuals_ = _per_kind(residuals, bins, int(self.options["min_kind_points"]))
        self._build_cps()

    def _build_cps(self) -> None:
        """crepes' Mondrian CPS over the stored residuals; its CPD at a zero log prediction is
        each kind's sorted residuals, from which layers draw."""
        crepes = import_crepes()
        kinds = sorted(self.layer_residuals_)
        res = np.concatenate([self.layer_residuals_[k] for k in kinds])
        bins = np.concatenate([[k] * len(self.layer_residuals_[k]) for k in kinds])
        self.cps_ = crepes.ConformalPredictiveSystem().fit(res, bins=bins)
        cpds = self.cps_.predict_cpds(np.zeros(len(kinds)), bins=np.array(kinds))
        self.cpd_ = {k: np.sort(np.asarray(cpds[i], dtype=np.float64)) for i, k in enumerate(kinds)}

    # ------------------------------------------------------------------ aggregation

    def network_samples(self, networks: list[Network]) -> list[np.ndarray]:
        """Monte Carlo samples (ms) of each network's summed layer distribution."""
        graphs = as_graphs(list(networks))
        frame = self.base.predict_layers(graphs)
        overhead = float(frame.attrs.get("overhead_ms", 0.0))
        s = int(self.options["samples"])
        idx = frame["network_index"].to_numpy(dtype=int)
        pred = frame["predicted_ms"].to_numpy(dtype=np.float64)
        kinds = frame["kind"].astype(str).to_numpy()
        order = np.argsort(idx, kind="stable")
        bounds = np.searchsorted(idx[order], np.arange(len(graphs) + 1))
        longest = int(np.max(np.diff(bounds))) if len(graphs) else 0
        # Common random numbers: row j drives the j-th layer of every network.
        u = np.random.default_rng(int(self.options["seed"])).random((max(longest, 1), s))
        out = []
        for n in range(len(graphs)):
            rows = order[bounds[n] : bounds[n + 1]]
            total = np.full(s, overhead)
            for j, r in enumerate(rows):
                cpd = self.cpd_.get(kinds[r], self.cpd_[POOLED])
                pick = np.minimum((u[j] * len(cpd)).astype(int), len(cpd) - 1)
                total += max(pred[r], 0.0) * np.exp(cpd[pick])
            out.append(total)
        return out

    def _aggregate(
        self, networks: list[Network], confidence: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Log median, sigma (half the log-width at ``confidence``) and the raw interval."""
        lo_q, hi_q = (1 - confidence) / 2, (1 + confidence) / 2
        center, sigma, low, high = [], [], [], []
        for samples in self.network_samples(networks):
            s = np.maximum(samples, np.finfo(float).tiny)
            lo, med, hi = np.quantile(s, [lo_q, 0.5, hi_q])
            center.append(math.log(med))
            sigma.append(max((math.log(hi) - math.log(lo)) / 2, 1e-9))
            low.append(lo)
            high.append(hi)
        return np.array(center), np.array(sigma), np.array(low), np.array(high)

    def aggregate_interval(
        self, networks: list[Network], confidence: float = 0.9
    ) -> tuple[np.ndarray, np.ndarray]:
        """The summed layer distributions' interval, *without* network-level recalibration
        (for diagnostics: it under-covers when layer errors are correlated)."""
        self._check_calibrated()
        _, _, low, high = self._aggregate(list(networks), confidence)
        return low, high

    def _log_bounds(
        self, networks: list[Network], point: np.ndarray, c: float
    ) -> tuple[np.ndarray, np.ndarray]:
        center, sigma, _, _ = self._aggregate(networks, float(self.options["reference_confidence"]))
        lo, hi = self._score_bounds(c)
        return center + lo * sigma, center + hi * sigma

    # ------------------------------------------------------------------ persistence

    def _state(self, directory: Path) -> dict[str, Any]:
        return {
            "layer_residuals": {k: v.tolist() for k, v in self.layer_residuals_.items()},
            "aggregate_coverage": self.aggregate_coverage_,
            "n_network_calibration": self.n_network_calibration_,
        }

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        self.layer_residuals_ = {
            str(k): np.asarray(v, dtype=np.float64) for k, v in state["layer_residuals"].items()
        }
        self.aggregate_coverage_ = float(state["aggregate_coverage"])
        self.n_network_calibration_ = int(state["n_network_calibration"])
        self._build_cps()
        self._build_network_cps()


def _per_kind(residuals: np.ndarray, bins: np.ndarray, min_points: int) -> dict[str, np.ndarray]:
    """Residuals per layer kind with at least ``min_points``, plus the pool of all of them."""
    out = {POOLED: np.sort(residuals)}
    for kind in np.unique(bins):
        r = residuals[bins == kind]
        if len(r) >= min_points:
            out[str(kind)] = np.sort(r)
    return out
