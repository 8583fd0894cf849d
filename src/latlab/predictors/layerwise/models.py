"""ANNETTE's layer models, one instance per layer type, fitted on benchmark points.

Notation per layer: ``f`` = operations (``num_ops``: 2·MACs for conv/fc, one per element for
activations, ...; int8/bf16 layers in fp32-lane units, :func:`.layer_inputs.lane_ops`), ``D`` =
bytes moved (activations read and written plus weights, at the IR's bit widths),
``t`` = the measured layer time. Layers of types without operations (concat) use ``D`` as
their unit of work in place of ``f``.

* :class:`Roofline` -- ``t = max(f / P_peak, D / B_peak)`` with ``P_peak`` and ``B_peak`` the
  maxima of the achieved ``f/t`` and ``D/t`` over the benchmark points (the ``quantile``
  parameter, 1.0 = the maximum, lets a stray point be ignored; points faster than
  ``min_time_ms`` are left out: their time is mostly measurement noise).
* :class:`Refined` -- ``t = max(f / (P_peak · u_eff(x)), D / B_peak)`` with ANNETTE's
  utilisation ``u_eff(x) = Π_i (α_i + ⌈x_i/s_i⌉/(x_i/s_i)·(1−α_i))^-1`` over the layer
  dimensions that a CPU kernel unrolls (:data:`UNROLLED`): integer unrolling ``s_i`` chosen from
  :data:`S_CANDIDATES` and ``α_i`` in [0, 1] fitted by least squares on log times (relative
  errors), by coordinate descent over the dimensions; ``P_peak`` is the maximum of the
  utilisation-corrected throughput ``f / (t · u_eff)``.
* :class:`Statistical` -- a random forest on the ANNETTE vector predicting the log time per
  unit of work, ``log(t / f)`` (ANNETTE predicts throughput; the log makes the forest minimise
  relative errors), ``t = f · exp(RF(x))``.
* :class:`Mixed` -- ``t = max(f / (P_peak · u_eff(x) · u_stat(x)), D / B_peak)``: the refined
  roofline times a statistical efficiency ``u_stat`` learned, as ANNETTE does, only on the
  points where ``u_eff = 1`` (every unrolled dimension a multiple of its ``s_i``), so the forest
  models what the quantisation does not explain. With fewer than ``min_points`` such points it
  learns ``u_stat`` from all points, the target divided by their ``u_eff``.
* :class:`Lut` -- the look-up table of ChamNet-style NAS: the time of the nearest benchmarked
  configuration (standardised log features), scaled by the ratio of work ``f_query / f_nearest``
  (``scale=True``, default) so that a layer between two table entries is not given either one's
  time.

CPU mapping of the refined roofline (:data:`UNROLLED`, the x86-64 AVX-512 build of
onnxruntime's MLAS kernels): output channels ``f`` ↔ SIMD lanes (16 fp32 per 512-bit register,
the NCHWc block size; the convolution kernel also processes up to 4 blocks of filters at once);
input channels ``c`` ↔ the reduction unrolled over a channel block; output width ``w`` ↔
register blocking of output pixels. Depthwise convolution and pooling vectorise over channel
blocks (``c``) and block output pixels (``w``); the fully connected SGEMM vectorises over
output features (``f``, the N dimension) and unrolls the reduction (``c``, K); so do the
transformer's MatMuls (``matmul``: a weight over all tokens, ``bmm``: two activations).
Element-wise layers and activations run over contiguous memory: ``c`` and ``w`` are fitted
like the others and typically end up with ``s = 1`` (no quantisation) when the data show none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latlab.encoders.layer_features import ANNETTE_FEATURES
from latlab.fileio import inside
from latlab.predictors.layerwise.layer_inputs import feature_matrix, lane_ops
from latlab.predictors.skops_io import SKLEARN_PREFIXES, load_trusted_skops

#: Layer dimensions unrolled by the CPU kernels, per layer type (default: channels, width).
UNROLLED: dict[str, tuple[str, ...]] = {
    "conv": ("f", "c", "w"),
    "dwconv": ("c", "w"),
    "fc": ("f", "c"),
    "matmul": ("f", "c"),
    "bmm": ("f", "c"),
}
DEFAULT_UNROLLED = ("c", "w")
#: Candidate unrolling factors s_i.
S_CANDIDATES = (1, 2, 4, 8, 16, 32, 64)


class Work:
    """Arrays a layer model needs from layer records: ANNETTE matrix, work unit, bytes."""

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows = list(rows)
        self.X = feature_matrix(self.rows)
        self.ops = np.asarray([lane_ops(r) for r in self.rows], dtype=float)
        self.bytes = np.asarray([float(r["bytes"]) for r in self.rows], dtype=float)

    def __len__(self) -> int:
        return len(self.rows)

    def dim(self, name: str) -> np.ndarray:
        return np.maximum(self.X[:, ANNETTE_FEATURES.index(name)], 1.0)

    def unit(self, uses_ops: bool) -> np.ndarray:
        """The work ``f`` (or ``D`` for op-free layer types), at least 1."""
        return np.maximum(self.ops if uses_ops else self.bytes, 1.0)


def _peak(values: np.ndarray, quantile: float) -> float:
    v = values[np.isfinite(values) & (values > 0)]
    if v.size == 0:
        return math.inf
    return float(np.quantile(v, quantile)) if quantile < 1 else float(v.max())


def u_eff(dims: dict[str, np.ndarray], params: dict[str, tuple[int, float]]) -> np.ndarray:
    """ANNETTE's utilisation for the given dimensions and ``{dim: (s, alpha)}``."""
    n = len(next(iter(dims.values()))) if dims else 0
    u = np.ones(n)
    for name, (s, alpha) in params.items():
        x = dims[name] / s
        ratio = np.ceil(x) / x
        u = u / (alpha + ratio * (1.0 - alpha))
    return u


class LayerModel:
    """Base: a model of one layer type (fit on records and times in ms, predict ms)."""

    kind: ClassVar[str] = "base"

    def __init__(self, key: str, **params: Any) -> None:
        self.key = key
        self.params = params

    @property
    def layout(self) -> bool:
        """Whether the statistical parts see :data:`LAYOUT_FEATURES` besides ANNETTE's vector."""
        return bool(self.params.get("layout_features", True))

    def features(self, work: Work) -> np.ndarray:
        """Inputs of the statistical parts: log1p of the ANNETTE vector (and layout flags)."""
        return _log_features(work, self.layout)

    def fit(self, work: Work, t_ms: np.ndarray) -> LayerModel:
        raise NotImplementedError

    def predict(self, work: Work) -> np.ndarray:
        raise NotImplementedError

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        raise NotImplementedError

    def restore(self, state: dict[str, Any], directory: Path) -> None:
        raise NotImplementedError


class Roofline(LayerModel):
    kind = "roofline"

    def fit(self, work: Work, t_ms: np.ndarray) -> Roofline:
        q = float(self.params.get("quantile", 1.0))
        floor = float(self.params.get("min_time_ms", 0.002))
        keep = t_ms >= floor
        if not keep.any():
            keep = np.ones_like(t_ms, dtype=bool)
        t_s = t_ms[keep] / 1e3
        self.uses_ops = bool((work.ops > 0).any())
        self.p_peak = _peak(work.ops[keep] / t_s, q) if self.uses_ops else math.inf
        self.b_peak = _peak(work.bytes[keep] / t_s, q)
        self.points = len(work)
        return self

    def predict(self, work: Work) -> np.ndarray:
        return np.maximum(work.ops / self.p_peak, work.bytes / self.b_peak) * 1e3

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        return {
            "model": self.kind,
            "points": self.points,
            "P_peak_ops_per_s": _num(self.p_peak),
            "B_peak_bytes_per_s": _num(self.b_peak),
            "uses_ops": self.uses_ops,
        }

    def restore(self, state: dict[str, Any], directory: Path) -> None:
        self.points = int(state["points"])
        self.p_peak = _inf(state["P_peak_ops_per_s"])
        self.b_peak = _inf(state["B_peak_bytes_per_s"])
        self.uses_ops = bool(state["uses_ops"])


class Refined(Roofline):
    kind = "refined"

    def dims(self, work: Work) -> dict[str, np.ndarray]:
        return {d: work.dim(d) for d in UNROLLED.get(self.key, DEFAULT_UNROLLED)}

    def _fit_peak(self, work: Work, t_ms: np.ndarray, u: np.ndarray, keep: np.ndarray) -> float:
        q = float(self.params.get("quantile", 1.0))
        unit = work.unit(self.uses_ops)
        return _peak(unit[keep] / (t_ms[keep] / 1e3 * u[keep]), q)

    def _loss(self, work: Work, t_ms: np.ndarray, dims: dict[str, np.ndarray],
              params: dict[str, tuple[int, float]], keep: np.ndarray) -> float:  # fmt: skip
        u = u_eff(dims, params)
        peak = self._fit_peak(work, t_ms, u, keep)
        pred = self._time(work, u, peak)
        r = np.log(pred[keep]) - np.log(t_ms[keep])
        return float(np.mean(r**2))

    def _time(self, work: Work, u: np.ndarray, peak: float) -> np.ndarray:
        unit = work.unit(self.uses_ops)
        compute = unit / (peak * u)
        if self.uses_ops:
            return np.maximum(compute, work.bytes / self.b_peak) * 1e3
        return compute * 1e3

    def fit(self, work: Work, t_ms: np.ndarray) -> Refined:
        from scipy.optimize import minimize_scalar

        super().fit(work, t_ms)
        floor = float(self.params.get("min_time_ms", 0.002))
        keep = t_ms >= floor
        if not keep.any():
            keep = np.ones_like(t_ms, dtype=bool)
        dims = self.dims(work)
        params: dict[str, tuple[int, float]] = {d: (1, 1.0) for d in dims}
        best = self._loss(work, t_ms, dims, params, keep)
        for _round in range(2):
            for d in dims:
                for s in S_CANDIDATES:

                    def obj(a: float, s: int = s, d: str = d) -> float:
                        return self._loss(work, t_ms, dims, {**params, d: (s, a)}, keep)

                    if s == 1:
                        cand = (1.0, obj(1.0))
                    else:
                        res = minimize_scalar(obj, bounds=(0.0, 1.0), method="bounded",
                                              options={"xatol": 1e-3})  # fmt: skip
                        cand = (float(res.x), float(res.fun))
                    if cand[1] < best - 1e-12:
                        best = cand[1]
                        params[d] = (s, cand[0])
        self.unroll = params
        self.loss = best
        self.peak = self._fit_peak(work, t_ms, u_eff(dims, params), keep)
        return self

    def utilisation(self, work: Work) -> np.ndarray:
        return u_eff(self.dims(work), self.unroll)

    def predict(self, work: Work) -> np.ndarray:
        return self._time(work, self.utilisation(work), self.peak)

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        out = super().state(directory, prefix)
        out.update(
            model=self.kind,
            unrolled={d: {"s": s, "alpha": a} for d, (s, a) in self.unroll.items()},
            P_peak_corrected=_num(self.peak),
            log_mse=self.loss,
        )
        return out

    def restore(self, state: dict[str, Any], directory: Path) -> None:
        super().restore(state, directory)
        self.unroll = {d: (int(v["s"]), float(v["alpha"])) for d, v in state["unrolled"].items()}
        self.peak = _inf(state["P_peak_corrected"])
        self.loss = float(state.get("log_mse", math.nan))


def _forest(params: dict[str, Any]) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(
        n_estimators=int(params.get("n_estimators", 100)),
        min_samples_leaf=int(params.get("min_samples_leaf", 1)),
        max_features=params.get("max_features", 1.0),
        random_state=params.get("random_state", 0),
        n_jobs=1,
    )


#: CPU layout indicators appended to the ANNETTE vector (``layout_features=True``): whether the
#: input and output channels are multiples of 4 and of the NCHWc block (16 fp32 lanes with
#: AVX-512). onnxruntime (1.31, measured) runs a convolution or depthwise convolution in its
#: blocked NCHWc layout only when the input channels are a multiple of 4 (or very few), and the
#: plain path can be ten times slower -- a cliff no smooth function of ``c`` (and no ceil-based
#: utilisation) represents; the block multiple carries the quantisation.
LAYOUT_FEATURES = ("c_mod4", "f_mod4", "c_mod16", "f_mod16")


def _log_features(work: Work, layout: bool = True) -> np.ndarray:
    z = np.log1p(work.X)
    if not layout:
        return z
    c, f = work.dim("c"), work.dim("f")
    extra = np.stack([c % 4 == 0, f % 4 == 0, c % 16 == 0, f % 16 == 0], axis=1)
    return np.hstack([z, extra.astype(float)])


def feature_names(layout: bool = True) -> list[str]:
    names = [f"log1p({f})" for f in ANNETTE_FEATURES]
    return names + list(LAYOUT_FEATURES) if layout else names


def _save_forest(model: Any, directory: Path, name: str) -> str:
    import skops.io as sio

    path = directory / f"{name}.skops"
    sio.dump(model, path)
    return path.name


def _load_forest(directory: Path, name: str) -> Any:
    path = inside(directory, name, "layer model file")
    return load_trusted_skops(path.read_bytes(), path, (), SKLEARN_PREFIXES)


def _forest_state(model: Any, file: str, points: int, target: str, layout: bool) -> dict[str, Any]:
    names = feature_names(layout)
    return {
        "file": file,
        "points": points,
        "target": target,
        "features": names,
        "n_estimators": int(model.n_estimators),
        "feature_importances": dict(
            zip(names, (float(v) for v in model.feature_importances_), strict=True)
        ),
    }


class Statistical(Roofline):
    kind = "statistical"

    def fit(self, work: Work, t_ms: np.ndarray) -> Statistical:
        super().fit(work, t_ms)
        unit = np.maximum(np.where(work.ops > 0, work.ops, work.bytes), 1.0)
        self.forest = _forest(self.params).fit(self.features(work), np.log(t_ms / unit))
        return self

    def predict(self, work: Work) -> np.ndarray:
        unit = np.maximum(np.where(work.ops > 0, work.ops, work.bytes), 1.0)
        return unit * np.exp(self.forest.predict(self.features(work)))

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        out = super().state(directory, prefix)
        file = _save_forest(self.forest, directory, prefix)
        out.update(
            model=self.kind,
            forest=_forest_state(self.forest, file, self.points, "log(t_ms / unit)", self.layout),
        )
        return out

    def restore(self, state: dict[str, Any], directory: Path) -> None:
        super().restore(state, directory)
        self.forest = _load_forest(directory, state["forest"]["file"])


class Mixed(Refined):
    kind = "mixed"

    def fit(self, work: Work, t_ms: np.ndarray) -> Mixed:
        super().fit(work, t_ms)
        min_points = int(self.params.get("min_points", 10))
        u = self.utilisation(work)
        full = u >= 0.999
        self.trained_on = "u_eff=1" if full.sum() >= min_points else "all points"
        sel = full if self.trained_on == "u_eff=1" else np.ones_like(full)
        unit = work.unit(self.uses_ops)
        # The efficiency the refined roofline does not explain: t = unit / (P u u_stat).
        target = np.log(unit / (self.peak * u * t_ms / 1e3))
        self.forest = _forest(self.params).fit(self.features(work)[sel], target[sel])
        self.stat_points = int(sel.sum())
        return self

    def u_stat(self, work: Work) -> np.ndarray:
        return np.exp(self.forest.predict(self.features(work)))

    def predict(self, work: Work) -> np.ndarray:
        return self._time(work, self.utilisation(work) * self.u_stat(work), self.peak)

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        out = super().state(directory, prefix)
        file = _save_forest(self.forest, directory, prefix)
        out.update(
            model=self.kind,
            u_stat_trained_on=self.trained_on,
            forest=_forest_state(self.forest, file, self.stat_points, "log(u_stat)", self.layout),
        )
        return out

    def restore(self, state: dict[str, Any], directory: Path) -> None:
        super().restore(state, directory)
        self.trained_on = state["u_stat_trained_on"]
        self.stat_points = int(state["forest"]["points"])
        self.forest = _load_forest(directory, state["forest"]["file"])


class Lut(Roofline):
    kind = "lut"

    def fit(self, work: Work, t_ms: np.ndarray) -> Lut:
        super().fit(work, t_ms)
        z = self.features(work)
        self.mean = z.mean(axis=0)
        self.std = np.where(z.std(axis=0) > 0, z.std(axis=0), 1.0)
        self.table = self._scaled(z)
        self.t = np.asarray(t_ms, dtype=float)
        self.unit = np.maximum(np.where(work.ops > 0, work.ops, work.bytes), 1.0)
        return self

    def _scaled(self, z: np.ndarray) -> np.ndarray:
        """Standardised features; layout flags weigh 4 standard deviations, so that the nearest
        entry never lies across a layout cliff when one on the same side exists nearby."""
        out = (z - self.mean) / self.std
        out[:, len(ANNETTE_FEATURES) :] *= 4.0
        return out

    def predict(self, work: Work) -> np.ndarray:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=1).fit(self.table)
        q = self._scaled(self.features(work))
        idx = nn.kneighbors(q, return_distance=False)[:, 0]
        out = self.t[idx].copy()
        if bool(self.params.get("scale", True)):
            unit = np.maximum(np.where(work.ops > 0, work.ops, work.bytes), 1.0)
            out *= unit / self.unit[idx]
        return out

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        out = super().state(directory, prefix)
        out.update(
            model=self.kind,
            scale=bool(self.params.get("scale", True)),
            features=feature_names(self.layout),
            mean=self.mean.tolist(),
            std=self.std.tolist(),
            entries=[
                {"x": row.tolist(), "t_ms": float(t), "unit": float(u)}
                for row, t, u in zip(self.table, self.t, self.unit, strict=True)
            ],
        )
        return out

    def restore(self, state: dict[str, Any], directory: Path) -> None:
        super().restore(state, directory)
        self.mean = np.asarray(state["mean"], dtype=float)
        self.std = np.asarray(state["std"], dtype=float)
        entries = state["entries"]
        self.table = np.asarray([e["x"] for e in entries], dtype=float).reshape(-1, len(self.mean))
        self.t = np.asarray([e["t_ms"] for e in entries], dtype=float)
        self.unit = np.asarray([e["unit"] for e in entries], dtype=float)


MODELS: dict[str, type[Roofline]] = {
    "roofline": Roofline,
    "refined": Refined,
    "statistical": Statistical,
    "mixed": Mixed,
    "lut": Lut,
}


def _num(x: float) -> float | str:
    return "inf" if math.isinf(x) else float(x)


def _inf(x: Any) -> float:
    return math.inf if x in ("inf", None) else float(x)
