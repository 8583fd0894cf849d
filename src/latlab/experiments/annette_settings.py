"""The ``annette`` experiment's settings (:mod:`latlab.experiments.annette`): the predictors
compared, the suite sizes of the quick, main and full presets."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from latlab.datasets.bench.campaign import BENCH_PAIRED
from latlab.datasets.bench.tables import METHODS
from latlab.datasets.measure import MeasureConfig
from latlab.datasets.measure.protocol import DEFAULT_REFERENCE as REFERENCE
from latlab.experiments.annette_learned import LEARNED
from latlab.experiments.context import Progress

log = logging.getLogger("latlab.experiments.annette")


MODELS = ("roofline", "refined", "statistical", "mixed", "lut")
QUICK_ZOO = (
    "mobilenet_v3_small",
    "mobilenet_v2",
    "squeezenet1_1",
    "resnet18",
    "efficientnet_b0",
    "vit_s16",
    "bert_medium",
)
#: The kernel-level predictor: trained on the bench store's generated networks (the
#: single-layer benchmarks and the in-context ``block:`` networks), never on a test network.
KERNEL = "kernel"
CONV_KINDS = ("conv", "dwconv")
#: Networks and benchmarks timed together beside one reference block per round (paired
#: timing's ``MeasureConfig.group``): the reference then costs a quarter of its time per
#: network, which is what brings the main job near its 20-minute budget (issue 16).
GROUP = 4


@dataclass
class Settings:
    """What one run measures (the presets differ only here)."""

    quick: bool
    kernels: int
    multilayer: int
    zoo: list[str]
    nb201: int
    nb201_seed: int = 0
    timer: str = "wall"
    network_protocol: MeasureConfig = field(default_factory=MeasureConfig)
    profile_runs: int = 20
    #: The zoo's profiles (runs, warm-up runs, time budget per network): they feed only the
    #: test-side figures (the per-kernel accuracy, the layer models trained on profiled times),
    #: so they take fewer runs than the training suites' ``profile_runs``; the node statistic
    #: of the thread timer is the 10th percentile, which a few runs pin down.
    zoo_profile: tuple[int, int, float] = (10, 3, 3.0)
    seed: int = 0
    #: Generated networks for the learned predictors: ``cnn`` chains (split train/val/test)
    #: and extra ``nb201`` cells to train on (the ``nb201`` fidelity networks stay held out).
    cnn: int = 0
    nb201_train: int = 0
    learned: tuple[str, ...] = LEARNED
    gcn_epochs: int = 120
    name: str = "custom"
    #: Kernel-benchmark protocol; None: the campaign's paired ``BENCH_PAIRED`` with ``timer``
    #: and ``GROUP``.
    bench_protocol: MeasureConfig | None = None
    #: Layer-time methods the layer models are trained on (``padded`` is the main one; the
    #: others only feed the smart-padding comparison).
    methods: tuple[str, ...] = METHODS
    #: Generated networks of the in-context kernel suite (``latlab bench --suite context``) the
    #: kernel-level predictor ``kernel`` trains on; 0 leaves that predictor out.
    context: int = 0

    def bench_config(self) -> MeasureConfig:
        return self.bench_protocol or replace(BENCH_PAIRED, timer=self.timer, group=GROUP)

    @property
    def paired(self) -> bool:
        """Whether benchmarks and networks are timed beside the reference network (drift-
        corrected): then every figure is on the store's reference scale, so two runs hours
        apart, or on a machine whose load changes, train and test on one scale."""
        return self.bench_config().reference is not None

    @classmethod
    def preset_named(cls, name: str, timer: str = "thread") -> Settings:
        """``quick``, ``main`` (the main job's size) or ``full`` (ANNETTE's suite sizes)."""
        from latlab.datasets import zoo

        # paired with the reference network, as latlab bench and latlab measure time by
        # default: two compare runs on a machine whose load differs then agree (issue 17)
        light = MeasureConfig(
            time_budget_s=0.5,
            max_warmup_s=0.5,
            repeats=50,
            timer=timer,
            reference=REFERENCE,
            group=GROUP,
        )
        if name == "quick":
            return cls(
                True,
                150,
                48,
                [n for n in QUICK_ZOO if n in zoo.names()],
                34,
                timer=timer,
                network_protocol=light,
                profile_runs=10,
                zoo_profile=(6, 2, 2.0),
                cnn=60,
                nb201_train=40,
                gcn_epochs=40,
                name=name,
                context=40,
            )
        if name == "main":
            return cls(
                False,
                400,
                100,
                zoo.names(),
                50,
                timer=timer,
                network_protocol=light,
                profile_runs=10,
                zoo_profile=(6, 2, 2.0),
                cnn=200,
                nb201_train=100,
                gcn_epochs=100,
                name=name,
                context=120,
            )
        if name == "full":
            return cls(
                False,
                900,
                160,
                zoo.names(),
                50,
                timer=timer,
                network_protocol=MeasureConfig(timer=timer, reference=REFERENCE, group=GROUP),
                cnn=300,
                nb201_train=150,
                name=name,
                context=240,
            )
        raise ValueError(f"unknown preset {name!r}: quick, main or full")

    @classmethod
    def preset(cls, quick: bool, timer: str = "thread") -> Settings:
        return cls.preset_named("quick" if quick else "full", timer)


def step_progress(label: str, notify: Progress | None = None) -> Any:
    """A campaign/benchmark event callback: a log line every 10 s and ``notify`` each event."""
    last = [0.0]

    def report(event: Any) -> None:
        if notify is not None:
            notify(label, event.done, event.total)
        now = time.monotonic()
        if event.kind in ("start", "finished") or now - last[0] > 10:
            last[0] = now
            log.info("%s: %d/%d", label, event.done, event.total)

    return report
