"""Cross-precision prediction: INT8 latency from an FP32 kernel model and a few INT8 networks.

A device measured at FP32 on many networks but at INT8 on only k (k = 10, 20) borrows the FP32
kernel-level predictor (:mod:`latlab.predictors.kernel`): the FP32 model predicts every kernel
a network executes in float, and a *per-kernel-class speed-up model* turns them into INT8::

    t_int8 = a * sum_g r_g * T_g

where ``T_g`` is the FP32 predicted time of the network's kernels of class ``g``
(:func:`kernel_class`: dense convolutions, depthwise/grouped convolutions, matmuls/Gemms,
everything else) and ``r_g`` the class's INT8/FP32 time ratio. The ratios come from the k INT8
networks' profiles beside their FP32 profiles (the ``context`` bench suite at both
precisions): ``r_g`` = the class's total profiled INT8 time over its total FP32 time, a ratio of
sums that 10 networks already pin down. The INT8 kernels classed ``other`` include what
quantisation adds (``QuantizeLinear``/``DequantizeLinear`` at the boundaries of float ops, the
NHWC transposes around quantised kernels), so its ratio may exceed 1. ``a`` (the median of
measured over raw predicted INT8 latency on the k networks) absorbs the session and profiler
overheads the end-to-end INT8 time has beyond the kernels. A fit from the k end-to-end times
alone (least squares on the four ratios) was tried first and was unstable at k = 10 (ratios
of 0 or 5 for classes few networks exercise). ``speedups()`` reports ``1 / r_g``; the
predicted speed-up of a network is ``predict_fp32 / predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latlab.errors import BundleError, DataError, NotFittedError
from latlab.fileio import inside
from latlab.predictors.base import LatencyPredictor, Network
from latlab.predictors.hyperparameter_space import HyperparameterSpace, cat, integer

#: Folder of a saved cross-precision predictor holding its FP32 kernel predictor.
FP32_DIR = "fp32"

#: Kernel classes of the speed-up model, in column order.
CLASSES: tuple[str, ...] = ("conv", "dwconv", "matmul", "other")
_CONV = ("Conv", "FusedConv", "QLinearConv", "ConvInteger", "ConvTranspose")
_MATMUL = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm", "QGemm", "QLinearMatMul",
           "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")  # fmt: skip


def kernel_class(family: str) -> str:
    """The speed-up class of a kernel family (``com.microsoft.nchwc.Conv/dw`` -> ``dwconv``)."""
    name, _, suffix = family.partition("/")
    op = name.rsplit(".", 1)[-1]
    if op in _CONV:
        return "dwconv" if suffix in ("dw", "grouped") else "conv"
    if op in _MATMUL:
        return "matmul"
    return "other"


def class_times(table: Any, n: int) -> np.ndarray:
    """(n, len(CLASSES)) FP32 predicted ms per class from a ``predict_layers`` table."""
    out = np.zeros((n, len(CLASSES)))
    col = {c: i for i, c in enumerate(CLASSES)}
    for r in table.itertuples():
        out[int(r.network_index), col[kernel_class(str(r.family))]] += float(r.predicted_ms)
    return out


def profiled_class_ms(rows: Any) -> dict[str, np.ndarray]:
    """Network -> profiled kernel time (ms) per class, from :func:`kernel_rows`-style rows."""
    out: dict[str, np.ndarray] = {}
    col = {c: i for i, c in enumerate(CLASSES)}
    for r in rows.itertuples():
        v = out.setdefault(str(r.network), np.zeros(len(CLASSES)))
        v[col[kernel_class(str(r.family))]] += float(r.time_us) / 1e3
    return out


class SpeedupModel:
    """INT8 latency from an FP32 kernel predictor (see the module docstring)."""

    def __init__(self, fp32: Any) -> None:
        self.fp32 = fp32
        self.ratios_: np.ndarray | None = None
        self.scale_ = 1.0

    def _class_times(self, networks: Sequence[Any]) -> np.ndarray:
        table = self.fp32.predict_layers(list(networks))
        return class_times(table, len(networks)) * float(table.attrs.get("scale", 1.0))

    def fit(
        self,
        fp32_profiles: dict[str, np.ndarray],
        int8_profiles: dict[str, np.ndarray],
        networks: Sequence[str],
        int8_ms: Sequence[float] | np.ndarray,
    ) -> SpeedupModel:
        """Fit the class ratios on the profiles of ``networks`` at both precisions (network
        -> per-class ms, :func:`profiled_class_ms`) and the scale on their INT8 latencies."""
        y = np.asarray(int8_ms, dtype=float)
        both = [n for n in networks if n in fp32_profiles and n in int8_profiles]
        if len(y) != len(networks) or len(both) < 3 or not np.all(y > 0):
            raise DataError(
                "the speed-up model needs at least 3 networks profiled at both precisions with "
                f"positive INT8 latencies, got {len(both)}"
            )
        a = np.sum([fp32_profiles[n] for n in both], axis=0)
        b = np.sum([int8_profiles[n] for n in both], axis=0)
        overall = float(b.sum() / a.sum())
        self.ratios_ = np.where(a > 0, b / np.maximum(a, 1e-12), overall)
        raw = self._class_times(list(networks)) @ self.ratios_
        self.scale_ = float(np.median(y / np.maximum(raw, 1e-9)))
        return self

    def predict(self, networks: Sequence[Any]) -> np.ndarray:
        """Predicted INT8 latency (ms) of each network."""
        if self.ratios_ is None:
            raise NotFittedError("SpeedupModel.predict before fit")
        return self.scale_ * (self._class_times(networks) @ self.ratios_)

    def speedups(self) -> dict[str, float]:
        """FP32/INT8 time ratio per kernel class."""
        if self.ratios_ is None:
            raise NotFittedError("SpeedupModel.speedups before fit")
        return {c: float(1 / r) for c, r in zip(CLASSES, self.ratios_, strict=True)}


class CrossPrecisionPredictor(LatencyPredictor):
    """``cross-precision``: INT8 latency from a device's FP32 kernel data and k INT8 networks.

    ``device`` is the INT8 configuration (the target column), ``source_device`` its FP32
    sibling in the same bench store (default: ``device`` without its precision suffix,
    ``-int8`` or ``-bf16``: :func:`latlab.datasets.measure.split_precision`). ``fit``
    trains the kernel predictor on every generated network of ``source_device`` and the
    speed-up model on the training networks (zoo networks are test networks: never used),
    at least 3 of which must have been benched at both precisions (``latlab bench`` and
    ``latlab bench --precision int8`` on the same references). ``latlab train --data STORE
    --target D-int8 --predictor cross-precision`` fills ``store`` and ``device``.
    """

    #: The FP32 kernel model's family choice and data need (the speed-up ratios are ratios of
    #: sums, with nothing to tune).
    param_space = HyperparameterSpace(
        {"model": cat("auto", "linear", "trees", "gbm"), "min_points": integer(4, 50)}
    )

    name = "cross-precision"
    min_train_rows = 3

    def __init__(
        self,
        store: str | None = None,
        device: str | None = None,
        source_device: str | None = None,
        min_points: int = 12,
        model: str = "auto",
        random_state: int = 0,
    ) -> None:
        self.store = store
        self.device = device
        self.source_device = source_device
        self.min_points = min_points
        self.model = model
        self.random_state = random_state

    def _source(self) -> str:
        if self.source_device:
            return self.source_device
        from latlab.datasets.measure import split_precision

        dev = str(self.device or "")
        source, precision = split_precision(dev)
        if precision == "fp32":
            raise DataError(
                f"cross-precision needs source_device= (the FP32 device) for {dev!r}: its name "
                "has no precision suffix (-int8, -bf16)"
            )
        return source

    def _fit(self, networks: list[Network], y: np.ndarray, eval_set: Any) -> None:
        from latlab.datasets.bench.export import kernel_rows
        from latlab.datasets.references import reference_of
        from latlab.datasets.store import Store
        from latlab.predictors.base import make_predictor

        if not self.store or not self.device:
            raise DataError(
                "cross-precision trains from a bench store: give store= and device= (latlab "
                "train --data STORE --target DEVICE fills both)"
            )
        source = self._source()
        # real networks are every kernel model's test set (as in the kernel predictor)
        keep = [i for i, n in enumerate(networks) if not reference_of(n).startswith("zoo:")]
        refs = [reference_of(networks[i]) for i in keep]
        y = y[keep]
        st = Store(self.store)
        try:
            table = st.export_table(devices=[source])
            p32 = profiled_class_ms(kernel_rows(st, source, set(refs)))
            p8 = profiled_class_ms(kernel_rows(st, str(self.device), set(refs)))
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"no FP32 data of {source!r} in {self.store}: {exc}") from exc
        finally:
            st.close()
        if source not in table:  # the store has no measurement of the FP32 device
            table = table.assign(**{source: np.nan})
        rows = table[table[source].notna() & ~table["network"].str.startswith("zoo:")]
        if rows.empty:
            raise DataError(f"no FP32 networks of {source!r} in {self.store} to train on")
        fp32 = make_predictor("kernel", store=self.store, device=source,
                              min_points=self.min_points, model=self.model,
                              random_state=self.random_state)  # fmt: skip
        fp32.fit(list(rows["network"]), rows[source].to_numpy(dtype=float))
        self.speedup_ = SpeedupModel(fp32).fit(p32, p8, refs, y)
        self.training_ = {"fp32_networks": len(rows), "int8_networks": len(refs)}

    def _predict(self, networks: list[Network]) -> np.ndarray:
        return self.speedup_.predict(networks)

    def predict_fp32(self, networks: Sequence[Network]) -> np.ndarray:
        """The FP32 kernel predictor's latencies (ms): speed-up = this / :meth:`predict`."""
        self._check_fitted()
        return np.asarray(self.speedup_.fp32.predict(list(networks)), dtype=float)

    def speedups(self) -> dict[str, float]:
        """FP32/INT8 time ratio per kernel class."""
        self._check_fitted()
        return self.speedup_.speedups()

    def _state(self, directory: Path) -> dict[str, Any]:
        self.speedup_.fp32.save(directory / FP32_DIR)
        assert self.speedup_.ratios_ is not None
        return {
            "ratios": self.speedup_.ratios_.tolist(),
            "scale": self.speedup_.scale_,
            "classes": list(CLASSES),
            "training": self.training_,
        }

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        from latlab.predictors.base import load_predictor

        if list(state["classes"]) != list(CLASSES):
            raise BundleError(f"{directory}: kernel classes {state['classes']} are not {CLASSES}")
        model = SpeedupModel(load_predictor(inside(directory, FP32_DIR, "folder")))
        model.ratios_ = np.asarray(state["ratios"], dtype=float)
        model.scale_ = float(state["scale"])
        self.speedup_ = model
        self.training_ = dict(state.get("training", {}))
