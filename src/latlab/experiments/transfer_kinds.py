"""``transfer-kinds``: few-shot transfer to a new *kind* of device.

    latlab experiment run transfer-kinds --data ../shared/data/nb201_latency.csv [--quick]

The ``transfer`` experiment's runs (:mod:`latlab.experiments.transfer`), except that the
transfer predictor never pretrains on a device of the target's kind: every GPU column is held
out when a GPU is the target, every CPU for a CPU, every phone for a phone. Leave-one-device-
out lets a new GPU borrow from its sibling GPUs; this protocol asks what a user with a kind of
device the table lacks gets. Reported per device and per kind; ``--quick`` holds out one
device of each kind.
"""

from __future__ import annotations

from typing import Any

from latlab.experiments.context import ExperimentContext
from latlab.experiments.transfer import experiment_kinds


def experiment(ctx: ExperimentContext) -> dict[str, Any]:
    """Run (or resume) the hold-out-a-kind protocol into ``ctx.out``."""
    return experiment_kinds(ctx)
