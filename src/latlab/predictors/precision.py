"""Cross-precision prediction: INT8 latency from a device's FP32 kernel model and k INT8 networks.

A device measured at FP32 on many networks but at INT8 on only k (k = 10, 20) is predicted at
INT8 over the kernels onnxruntime executes for each network's quantised model, as the
kernel-level predictor does (:mod:`latlab.predictors.kernel`):

* **INT8 kernel families the k networks cover** (``QLinearConv``, ``QGemm``, ``QuantizeLinear``,
  ``Transpose``, ...; 20 generated networks profile ~700 kernels in ~30 families) get their own
  models, fitted on those networks' profiled INT8 kernels (``kernel`` predictor on the INT8
  device, restricted to the k networks), with its end-to-end overhead fit;
* **the kernels no INT8 family model covers** take an *FP32 prior*: the FP32 kernel model
  (trained on every FP32 network of the device) predicts the same kernel as its float op
  (:func:`float_family`: ``QLinearConv/dw`` is costed as ``Conv/dw``, with 4-byte elements),
  times its kernel group's INT8/FP32 ratio (:func:`kernel_group`: dense / depthwise
  convolutions, weight and activation-by-activation matmuls, softmax, normalisation, pooling,
  layout, Q/DQ conversions, other elementwise ops). The ratio is a ratio of sums over the k
  networks' profiled INT8 kernels of the group and their FP32 priors; a group they lack takes
  the ratio over all their kernels.

:meth:`CrossPrecisionPredictor.speedups` reports the groups' FP32/INT8 time ratios (1 / the
ratio): what precision buys each kind of kernel on this device. The predicted speed-up of a
network is ``predict_fp32 / predict``.

Why not scale FP32 predictions by per-class ratios (the first version: ``t_int8 = a * sum_g
r_g * T_g`` over four classes of FP32 kernels)? The kernels differ, not only their speed:
a quantised graph adds Q/DQ pairs and NHWC transposes around ops left in float, cannot fuse
h-swish into its convolutions, and runs softmax 9x slower than float (QLinearSoftmax) while
weight GEMMs gain 3x and attention matmuls almost nothing.
``benchmarks/cross_precision_variants.py`` compares the designs on the generated INT8 networks
of a precision experiment's store that the k = 20 did not contain (not its real test
networks): MAPE 40.0 % (class ratios), 20.2 % (INT8 kernel models alone), 21.1 % (with the FP32
prior; 20.7 against 21.3 % on the networks above 1 ms) in the development store of
2026-12-04. There the prior is about even with the roofline fallback it replaces; it is kept
because it prices a family the k networks miss as that op costs in float on the device, where
the roofline fallback (one linear cost fitted on every kernel) is dominated by convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latlab.errors import BundleError, DataError
from latlab.fileio import inside
from latlab.predictors.base import LatencyPredictor, Network
from latlab.predictors.hyperparameter_space import HyperparameterSpace, cat, integer

#: Folders of a saved cross-precision predictor holding its FP32 and INT8 kernel predictors.
FP32_DIR = "fp32"
INT8_DIR = "int8"

#: Kernel classes (:func:`kernel_class`), the coarse view of the report's tables.
CLASSES: tuple[str, ...] = ("conv", "dwconv", "matmul", "other")
#: Kernel groups of the FP32 prior's ratios (:func:`kernel_group`), in report order.
GROUPS: tuple[str, ...] = ("conv", "dwconv", "matmul", "matmul/act", "softmax", "norm", "pool",
                           "layout", "qdq", "elementwise")  # fmt: skip
_CONV = ("Conv", "FusedConv", "QLinearConv", "ConvInteger", "ConvTranspose")
_MATMUL = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm", "QGemm", "QLinearMatMul",
           "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")  # fmt: skip
_QDQ = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
_LAYOUT = ("Transpose", "Reshape", "ReorderInput", "ReorderOutput", "Split", "Concat", "Gather",
           "Slice", "Squeeze", "Unsqueeze", "Flatten", "Expand", "Identity", "Shape", "Tile",
           "Pad")  # fmt: skip


def kernel_class(family: str) -> str:
    """The class of a kernel family (``com.microsoft.nchwc.Conv/dw`` -> ``dwconv``)."""
    name, _, suffix = family.partition("/")
    op = name.rsplit(".", 1)[-1]
    if op in _CONV:
        return "dwconv" if suffix in ("dw", "grouped") else "conv"
    if op in _MATMUL:
        return "matmul"
    return "other"


def kernel_group(family: str) -> str:
    """The group of a kernel family, at either precision (``com.microsoft.QLinearSoftmax``
    and ``Softmax`` -> ``softmax``; ``QLinearMatMul/act`` -> ``matmul/act``)."""
    cls = kernel_class(family)
    name, _, suffix = family.partition("/")
    if cls == "matmul":
        return "matmul/act" if suffix == "act" else "matmul"
    if cls != "other":
        return cls
    op = name.rsplit(".", 1)[-1]
    if op in _QDQ:
        return "qdq"
    for prefix in ("QLinear", "Nhwc", "Fused", "Skip"):
        op = op.removeprefix(prefix)
    if "Softmax" in op:
        return "softmax"
    if "Norm" in op:
        return "norm"
    if "Pool" in op:
        return "pool"
    return "layout" if op in _LAYOUT else "elementwise"


def float_family(family: str) -> str:
    """The float op a quantised kernel family computes (``com.microsoft.QLinearConv/dw`` ->
    ``Conv/dw``, :data:`~latlab.datasets.bench.kernels_quant.QUANT_KERNELS`); any other family
    unchanged. The FP32 kernel model finds its own family for it (``Conv/dw`` -> the NCHWc
    one: :meth:`~latlab.predictors.kernel.KernelPredictor.kernel_ms`)."""
    from latlab.datasets.bench.kernels_quant import QUANT_KERNELS

    name, sep, suffix = family.partition("/")
    spec = QUANT_KERNELS.get(name.rsplit(".", 1)[-1])
    if spec is None or spec.like in _QDQ:
        return family
    return spec.like + sep + suffix


def float_features(features: dict[str, float]) -> dict[str, float]:
    """A quantised kernel's features as its float op's: 4 bytes an element."""
    out = dict(features)
    for b, e in (("bytes_in", "in_elems"), ("bytes_out", "out_elems"), ("bytes_w", "w_elems")):
        out[b] = 4.0 * float(features.get(e, 0.0))
    return out


class Fp32Prior:
    """INT8 kernel times from an FP32 kernel model: its prediction of each kernel's float op
    times the kernel group's INT8/FP32 ratio (see the module docstring)."""

    def __init__(self, fp32: Any, ratios: dict[str, float] | None = None) -> None:
        self.fp32 = fp32
        self.ratios = dict(ratios or {})

    def float_ms(self, families: Sequence[str], features: Sequence[dict[str, float]]) -> np.ndarray:
        """The FP32 model's ms for each kernel's float op."""
        fams = [float_family(f) for f in families]
        feats = [float_features(x) for x in features]
        return np.asarray(self.fp32.kernel_ms(fams, feats), dtype=float)

    def fit(self, rows: Any) -> Fp32Prior:
        """Group ratios from profiled INT8 kernels (``family``, ``features``, ``time_us``
        rows of :func:`latlab.datasets.bench.export.kernel_rows`)."""
        prior = self.float_ms(list(rows["family"]), list(rows["features"]))
        t = rows["time_us"].to_numpy(dtype=float) / 1e3
        groups = np.array([kernel_group(str(f)) for f in rows["family"]])
        if prior.sum() <= 0 or t.sum() <= 0:
            raise DataError("the FP32 prior needs profiled INT8 kernels with positive times")
        self.ratios = {"all": float(t.sum() / prior.sum())}
        for g in GROUPS:
            m = groups == g
            if m.any() and prior[m].sum() > 0:
                self.ratios[g] = float(t[m].sum() / prior[m].sum())
        return self

    def __call__(self, kernels: list[Any]) -> np.ndarray:
        """Predicted INT8 ms of executed kernels (the kernel predictor's ``uncovered`` cost)."""
        fams = [str(k.family) for k in kernels]
        r = np.array([self.ratios.get(kernel_group(f), self.ratios["all"]) for f in fams])
        return self.float_ms(fams, [k.features for k in kernels]) * r

    def speedups(self) -> dict[str, float]:
        """FP32/INT8 time ratio per kernel group (and ``all``) of the fitted kernels."""
        return {g: float(1 / r) for g, r in self.ratios.items() if r > 0}


class CrossPrecisionPredictor(LatencyPredictor):
    """``cross-precision``: INT8 latency from a device's FP32 kernel data and k INT8 networks.

    ``device`` is the INT8 configuration (the target column), ``source_device`` its FP32
    sibling in the same bench store (default: ``device`` without its precision suffix,
    ``-int8`` or ``-bf16``: :func:`latlab.datasets.measure.split_precision`). ``fit`` trains
    the FP32 kernel predictor on every generated network of ``source_device``, and the INT8
    kernel predictor and the FP32 prior's group ratios on the training networks' INT8 kernels
    (at least 3 networks profiled at INT8: ``latlab bench --precision int8``; zoo networks are
    test networks, never used). ``latlab train --data STORE --target D-int8 --predictor
    cross-precision`` fills ``store`` and ``device``.
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
            rows8 = kernel_rows(st, str(self.device), set(refs))
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
        profiled = set(rows8["network"]) if len(rows8) else set()
        if len(profiled) < 3:
            raise DataError(
                f"cross-precision needs at least 3 training networks with profiled INT8 kernels "
                f"of {self.device!r} in {self.store}, got {len(profiled)}: run latlab bench "
                f"--precision int8 --device-name {self.device} on them"
            )
        common = {"store": self.store, "min_points": self.min_points, "model": self.model,
                  "random_state": self.random_state}  # fmt: skip
        fp32 = make_predictor("kernel", device=source, **common)
        fp32.fit(list(rows["network"]), rows[source].to_numpy(dtype=float))
        int8 = make_predictor("kernel", device=str(self.device), **common)
        int8.fit(refs, y)
        self.prior_ = Fp32Prior(fp32).fit(rows8)
        self.int8_ = int8
        self.training_ = {"fp32_networks": len(rows), "int8_networks": len(profiled),
                          "int8_kernels": len(rows8)}  # fmt: skip

    def predict_layers(self, networks: Sequence[Network]) -> Any:
        """Per executed INT8 kernel (the kernel predictor's table): kernels no INT8 family
        model covers have model ``prior`` (the FP32 model times the group's ratio)."""
        self._check_fitted()
        return self.int8_.predict_layers(list(networks), uncovered=self.prior_)

    def _predict(self, networks: list[Network]) -> np.ndarray:
        return self.int8_.network_ms(self.predict_layers(networks), len(networks))

    def predict_fp32(self, networks: Sequence[Network]) -> np.ndarray:
        """The FP32 kernel predictor's latencies (ms): speed-up = this / :meth:`predict`."""
        self._check_fitted()
        return np.asarray(self.prior_.fp32.predict(list(networks)), dtype=float)

    def speedups(self) -> dict[str, float]:
        """FP32/INT8 time ratio per kernel group of the training networks' INT8 kernels
        against the FP32 model's prediction of their float ops (``all``: every kernel)."""
        self._check_fitted()
        return self.prior_.speedups()

    def _state(self, directory: Path) -> dict[str, Any]:
        self.prior_.fp32.save(directory / FP32_DIR)
        self.int8_.save(directory / INT8_DIR)
        return {"ratios": self.prior_.ratios, "groups": list(GROUPS), "training": self.training_}

    def _restore(self, directory: Path, state: dict[str, Any]) -> None:
        from latlab.predictors.base import load_predictor

        if list(state.get("groups", [])) != list(GROUPS):
            raise BundleError(
                f"{directory}: a cross-precision bundle of another version (kernel groups "
                f"{state.get('groups', state.get('classes'))}, expected {list(GROUPS)}): "
                "train it again"
            )
        fp32 = load_predictor(inside(directory, FP32_DIR, "folder"))
        self.prior_ = Fp32Prior(fp32, {str(k): float(v) for k, v in state["ratios"].items()})
        self.int8_ = load_predictor(inside(directory, INT8_DIR, "folder"))
        self.training_ = dict(state.get("training", {}))
