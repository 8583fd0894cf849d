"""The reference value of a device configuration: the scale of its drift-corrected medians.

A paired measurement gives a network's time *relative* to the reference network timed in the
same rounds (:mod:`.protocol`). Multiplied by one fixed number per device configuration -- the
reference's own latency, its **reference value** -- the ratio becomes a latency again, and
every campaign of that configuration, hours or days apart, is on the same scale: the machine's
drift between campaigns cancels in the ratio and the value does not move.

The value is established once and stored (table ``reference_values``), so it must not carry a
loaded moment into every later figure. :func:`establish_reference` therefore

1. times the reference in ``blocks`` separate blocks (each a full protocol measurement),
   ``spacing_s`` seconds apart, recording the machine's load during each;
2. records the machine's load over all blocks and gaps (:class:`~.load.LoadMeter`);
3. takes the **lower quartile of the block medians**: load only ever slows a run, so the low
   blocks are the machine's own speed, and a quartile (not the minimum) ignores one lucky block;
4. judges the blocks: other processes competing for the measurement's cores over them
   (:func:`~.load.competing`), a spread of block medians (max / min - 1) above
   ``max_spread`` or a block's robust CV above ``cv_threshold`` make the value *suspect*:
   it is stored with ``quality="suspect"`` and the reasons and a warning is logged, or with
   ``strict=True`` it is refused (:class:`MeasurementError`, nothing stored).

A value is re-established explicitly (``latlab measure --reestablish-reference``,
``establish_reference(..., replace_existing=True)``) on a quiet machine; the stored ratios of the
configuration's measurements are rescaled to it in the same transaction
(:meth:`Store.add_reference_value`), so nothing is re-measured and no column mixes scales.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from latlab.datasets.measure.backends import Backend, get_backend
from latlab.datasets.measure.load import LoadMeter, competing
from latlab.errors import MeasurementError

if TYPE_CHECKING:
    from latlab.datasets.measure.protocol import MeasureConfig
    from latlab.datasets.store import Store

log = logging.getLogger(__name__)

#: Establishment policy defaults.
BLOCKS = 5
SPACING_S = 1.0
MAX_SPREAD = 0.05


@dataclass(frozen=True)
class ReferenceValue:
    """A stored reference value: its id in the store, the reference and the value (ms)."""

    id: int
    reference: str
    value_ms: float
    quality: str
    extra: dict[str, Any]


def _from_row(row: dict[str, Any]) -> ReferenceValue:
    extra = dict(row.get("extra") or {})
    return ReferenceValue(
        int(row["id"]),
        str(row["reference"]),
        float(row["value_ms"]),
        str(extra.get("quality", "unknown")),
        extra,
    )


def stored_reference(store: Store, device: str, config: MeasureConfig) -> ReferenceValue | None:
    """The current reference value of ``device`` under ``config``'s settings, if any."""
    if config.reference is None:
        return None
    row = store.reference_value(device, config.reference, config.settings_key())
    return _from_row(row) if row is not None else None


def establish_reference(
    store: Store,
    device: str,
    config: MeasureConfig,
    *,
    backend: Backend | None = None,
    reference_run: Callable[[], None] | None = None,
    blocks: int = BLOCKS,
    spacing_s: float = SPACING_S,
    max_spread: float = MAX_SPREAD,
    strict: bool = False,
    replace_existing: bool = False,
) -> ReferenceValue:
    """Establish (or, with ``replace_existing``, re-establish) the reference value of a device
    configuration and store it (see the module docstring for the policy).

    Returns the stored value; without ``replace_existing`` an existing value is returned
    untouched. The device must be registered. Raises :class:`MeasurementError` naming the
    reference when it cannot run, or, with ``strict``, when the value would be suspect.
    """
    from latlab.datasets.measure.protocol import measure_prepared, prepare_reference

    if config.reference is None:
        raise MeasurementError("a reference value needs MeasureConfig.reference")
    if blocks < 1 or spacing_s < 0:
        raise MeasurementError(f"invalid establishment: blocks={blocks}, spacing_s={spacing_s}")
    if not replace_existing:
        existing = stored_reference(store, device, config)
        if existing is not None:
            return existing
    be = backend if backend is not None else get_backend(config.backend)
    run = reference_run if reference_run is not None else prepare_reference(be, config)
    plain = replace(config, reference=None)  # the reference timed alone
    medians, cvs, loads = [], [], []
    meter = LoadMeter()  # over all blocks and the gaps: the blocks alone are too short
    for k in range(blocks):
        if k:
            time.sleep(spacing_s)
        m = measure_prepared(run, config.reference, plain, be)
        medians.append(m.median_ms)
        cvs.append(m.robust_cv)
        loads.append(m.load)
    load = meter.stop()
    value = float(np.percentile(medians, 25))
    spread = max(medians) / min(medians) - 1
    reasons = []
    if competing(load, config.threads):
        reasons.append(
            f"other processes used {load['other_cores'] + load['steal_cores']:.2f} of "
            f"{load['cores']} cores"
        )
    if spread > max_spread:
        reasons.append(f"block medians spread {100 * spread:.1f} % (> {100 * max_spread:.0f} %)")
    noisy = sum(cv > config.cv_threshold for cv in cvs)
    if noisy:
        reasons.append(f"{noisy} block(s) with robust CV above {config.cv_threshold:.2f}")
    quality = "suspect" if reasons else "quiet"
    if reasons and strict:
        raise MeasurementError(
            f"reference value of {config.reference!r} on {device!r} refused: "
            + "; ".join(reasons)
            + ": establish it on a quiet machine"
        )
    extra = {
        "quality": quality,
        "reasons": reasons,
        "block_medians_ms": medians,
        "block_robust_cvs": cvs,
        "block_loads": loads,
        "load": load,
        "rule": "lower quartile of block medians",
        "spacing_s": spacing_s,
    }
    if reasons:
        log.warning(
            "reference value %.4f ms of %s on %s is suspect (%s); corrected medians are on its "
            "scale until it is re-established on a quiet machine (--reestablish-reference)",
            value,
            config.reference,
            device,
            "; ".join(reasons),
        )
    new_id = store.add_reference_value(
        device,
        config.reference,
        config.settings_key(),
        value,
        settings=config.settings(),
        protocol=plain.protocol(),
        extra=extra,
    )
    return ReferenceValue(new_id, config.reference, value, quality, extra)
