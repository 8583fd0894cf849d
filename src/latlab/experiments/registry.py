"""The experiments ``latlab experiment run NAME`` knows, by name.

Each entry names its function as a lazy ``"module:function"`` string, so that listing the
experiments (and ``latlab --help``) imports none of them: an experiment module pulls in torch,
LightGBM or onnxruntime only when it runs. ``needs_data`` marks the experiments that read the
NAS-Bench-201 latency table (``--data``); the durations are what a run took on the 2-core
development machine (stated so that nobody starts a 10-hour run by accident).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from latlab.errors import DataError
from latlab.registry import load_target

#: What ``--data`` must be for the experiments that need it.
NB201_DATA = "the NAS-Bench-201 latency table"
NB201_EXAMPLE = "../shared/data/nb201_latency.csv"


@dataclass(frozen=True)
class Experiment:
    """One registered experiment."""

    name: str
    target: str  # "package.module:function", imported on first use
    summary: str
    full_duration: str
    quick_duration: str
    needs_data: str | None = None  # what --data must be; None when no table is needed
    report_only: bool = False  # supports --report-only (report the finished runs only)

    def load(self) -> Callable[..., dict[str, Any]]:
        """The experiment function (imports its module now)."""
        return load_target(self.target)  # type: ignore[return-value]

    def missing_data_message(self) -> str:
        return f"{self.name} needs {self.needs_data}: pass --data PATH (e.g. {NB201_EXAMPLE})"


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "annette",
            "latlab.experiments.annette:experiment",
            "ANNETTE-style layer-wise models, measured on this machine",
            full_duration="~11 min on an idle machine (the main job's preset: ~8 min)",
            quick_duration="~3 min",
        ),
        Experiment(
            "brp-nas",
            "latlab.experiments.brpnas:experiment",
            "BRP-NAS protocol: ±1/5/10 % accuracy, device × predictor",
            full_duration="~10 h (a GCN fit ~5 min; --report-only reports what finished)",
            quick_duration="~3 min",
            needs_data=NB201_DATA,
            report_only=True,
        ),
        Experiment(
            "fcnn",
            "latlab.experiments.fcnn_protocol:experiment",
            "FCNN estimator protocol: errors vs the noise floor, plots",
            full_duration="~60 min (~5 min with the 7000 networks in the store)",
            quick_duration="~3 min",
        ),
        Experiment(
            "conformal",
            "latlab.experiments.conformal_nb201:experiment",
            "conformal intervals on the nb201 table: coverage, width",
            full_duration="~100 min on one core (83 of them the 39 GCN fits)",
            quick_duration="~3 min",
            needs_data=NB201_DATA,
        ),
        Experiment(
            "bnn",
            "latlab.experiments.bnn:experiment",
            "LXNOROP model vs bit-packed measurements (forward, inverse)",
            full_duration="~3 min",
            quick_duration="~2 min",
        ),
        Experiment(
            "transfer",
            "latlab.experiments.transfer:experiment",
            "transfer to a new device from few measurements",
            full_duration="~17 min (975 runs)",
            quick_duration="~3 min",
            needs_data=NB201_DATA,
        ),
        Experiment(
            "precision",
            "latlab.experiments.precision:experiment",
            "FP32 and INT8 (quantised QDQ) networks measured and predicted, speed-up",
            full_duration="not run yet (120 generated networks per precision, 11 zoo networks)",
            quick_duration="~1-2 min (10 generated networks per precision, 3 zoo networks)",
        ),
        Experiment(
            "transfer-kinds",
            "latlab.experiments.transfer_kinds:experiment",
            "transfer to a new kind of device: all GPUs, CPUs or phones held out together",
            full_duration="~17 min (975 runs on the nb201 table)",
            quick_duration="~3 min (one device per kind)",
            needs_data=NB201_DATA,
        ),
        Experiment(
            "transfer-spaces",
            "latlab.experiments.transfer_spaces:experiment",
            "few-shot transfer across search spaces: pretrain nb201/fbnet, adapt on ofa, reverse",
            full_duration="not run yet (6 directions x every target column x 5 seeds)",
            quick_duration="~3 min (4 directions x 3 devices x 2 seeds)",
            needs_data="one of the space tables, the other two beside it "
            "(nb201/fbnet/ofa_latency.csv)",
        ),
        Experiment(
            "cps-networks",
            "latlab.experiments.conformal_cps_networks:experiment",
            "network-level coverage of layer-wise conformal predictive systems (cps), here",
            full_duration="not timed (ANNETTE's full suites, 200 nb201 networks, the zoo, 5 seeds)",
            quick_duration="~6 min on two cores with an empty store (60 nb201, 5 zoo, 3 seeds)",
        ),
        Experiment(
            "coverage-budget",
            "latlab.experiments.coverage_budget:experiment",
            "conformal coverage from a 900-network budget: split vs oob (rf) vs cv+ (gbm)",
            full_duration="nb201 9 min, ofa 12 min (fbnet 66 min at low priority, busy machine)",
            quick_duration="~1 min",
            needs_data="a search space's latency table (nb201, fbnet or ofa)",
        ),
    )
}


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name``; a one-line error listing the known ones otherwise."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise DataError(f"unknown experiment {name!r} (known: {', '.join(EXPERIMENTS)})") from None
