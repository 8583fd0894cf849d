"""The measurement protocol: how one network's latency is taken, and campaigns over many.

One measurement (:func:`measure`):

1. the backend prepares the network (session creation, weight upload: not timed) and returns
   a callable that runs one inference on fixed inputs;
2. **warm-up** until times settle: at least ``min_warmup`` runs, then windows of
   ``warmup_window`` runs until the median of a window is within ``settle_tol`` of the previous
   window's (or ``max_warmup`` runs / ``max_warmup_s`` seconds have passed);
3. **repeats** until ``repeats`` samples or ``time_budget_s`` seconds (never fewer than
   ``min_repeats``), each run timed alone with :func:`time.perf_counter_ns`, the garbage
   collector paused so that a collection does not land inside a sample;
4. the **median** is the target; p10/p90, mean and the coefficient of variation (CV, std/mean)
   describe the spread, and all raw samples are kept. When the *robust* CV
   (1.4826 x median absolute deviation / median, which equals the CV for Gaussian noise) exceeds
   ``cv_threshold``, the repeat phase is run again (up to ``max_remeasures`` times) and the
   attempt with the lowest robust CV kept. The robust CV decides because the target is the
   median: a few preempted runs (another process took the core) inflate std/mean, especially
   for networks of microseconds, but do not move the median; a bimodal or drifting attempt
   moves both.

A campaign (:func:`measure_many`) measures a list of references into a
:class:`~latlab.datasets.store.Store`, committing each measurement as it completes and skipping
those already stored for the same device and protocol, so an interrupted campaign resumes
where it stopped. A fixed **anchor** network is re-measured every ``anchor_every`` networks;
its drift from the campaign's first anchor measurement is logged as a warning beyond
``drift_threshold``, because a drifting anchor means the machine changed under the campaign
(thermal throttling, another job, a frequency governor) and its numbers are suspect.

Keep the machine otherwise idle while measuring: other processes share cores, caches and memory
bandwidth, and raise both the median and the CV. The protocol detects noise (CV, anchor drift)
but cannot remove it.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from latlab.datasets.measure.backends import Backend, get_backend
from latlab.datasets.measure.fingerprint import machine_fingerprint
from latlab.encoders.ir import NetworkGraph
from latlab.errors import LatlabError, MeasurementError

if TYPE_CHECKING:
    from latlab.datasets.store import Store

log = logging.getLogger(__name__)

#: The anchor network re-measured during campaigns (2.1 M MACs: about 0.3 ms on one core).
DEFAULT_ANCHOR = "fcnn:512-1024-1024-512-10"


#: Clocks the protocol can time with (the thread clock needs threads=1).
TIMERS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "thread": time.thread_time_ns}


@dataclass(frozen=True)
class MeasureConfig:
    """How to measure: backend, threads, batch, warm-up policy, repeats, CV policy.

    The fields that change what is measured form :meth:`protocol_key`; two measurements with
    the same key on the same device are interchangeable, which is what resume relies on.
    """

    backend: str = "onnxruntime"
    threads: int = 1
    batch: int = 1
    input_shape: tuple[int, ...] | None = None
    #: Warm-up: at least this many runs, then windows until the median settles.
    min_warmup: int = 5
    warmup_window: int = 5
    settle_tol: float = 0.05
    max_warmup: int = 200
    max_warmup_s: float = 2.0
    #: Repeats: up to ``repeats`` samples or ``time_budget_s`` seconds, at least ``min_repeats``.
    repeats: int = 100
    min_repeats: int = 10
    time_budget_s: float = 2.0
    #: Re-measure while the robust CV exceeds this (at most ``max_remeasures`` times).
    cv_threshold: float = 0.10
    max_remeasures: int = 2
    seed: int = 0
    #: ``"wall"`` (:func:`time.perf_counter_ns`) or ``"thread"`` (the calling thread's CPU
    #: time, :func:`time.thread_time_ns`): with one thread running in the caller, time taken
    #: by other processes on a shared machine is not counted. Both agree on an idle machine.
    timer: str = "wall"

    def __post_init__(self) -> None:
        checks = {
            "threads": self.threads >= 1,
            "batch": self.batch >= 1,
            "min_warmup": self.min_warmup >= 0,
            "warmup_window": self.warmup_window >= 1,
            "max_warmup": self.max_warmup >= self.min_warmup,
            "repeats": self.repeats >= 1,
            "min_repeats": 1 <= self.min_repeats <= self.repeats,
            "time_budget_s": self.time_budget_s > 0,
            "settle_tol": self.settle_tol > 0,
            "cv_threshold": self.cv_threshold > 0,
            "max_remeasures": self.max_remeasures >= 0,
            "timer": self.timer == "wall" or (self.timer == "thread" and self.threads == 1),
        }
        for name, ok in checks.items():
            if not ok:
                raise MeasurementError(
                    f"invalid measurement setting {name}={getattr(self, name)!r}"
                )
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))

    def protocol(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (recorded with every measurement)."""
        out = asdict(self)
        out["input_shape"] = list(self.input_shape) if self.input_shape else None
        out["timer"] = TIMERS[self.timer].__name__
        return out

    def protocol_key(self) -> str:
        """A short hash of the settings: equal keys mean comparable measurements."""
        blob = json.dumps(self.protocol(), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


@dataclass
class Measurement:
    """One network's measured latency with everything needed to judge and reproduce it."""

    network: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    cv: float
    robust_cv: float
    samples_ms: list[float]
    warmup_runs: int
    warmup_settled: bool
    repeats: int
    remeasures: int
    attempt_cvs: list[float]
    protocol: dict[str, Any]
    protocol_key: str
    backend_info: dict[str, Any]
    fingerprint: dict[str, Any]
    started_at: datetime
    finished_at: datetime
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stable(self) -> bool:
        """Whether the kept attempt's robust CV is within the protocol's threshold."""
        return self.robust_cv <= float(self.protocol.get("cv_threshold", np.inf))


def robust_cv(samples: Sequence[float] | np.ndarray) -> float:
    """1.4826 x MAD / median: the CV of Gaussian samples, insensitive to a few outliers."""
    x = np.asarray(samples, dtype=np.float64)
    med = float(np.median(x))
    return float(1.4826 * np.median(np.abs(x - med)) / med) if med > 0 else 0.0


def _summarise(samples_ns: Sequence[int]) -> tuple[float, float, float, float, float, float]:
    """median, p10, p90, mean, CV (std/mean) and robust CV of samples in ns, times in ms."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p10, med, p90 = np.percentile(ms, [10, 50, 90])
    mean = float(ms.mean())
    cv = float(ms.std(ddof=1) / mean) if len(ms) > 1 and mean > 0 else 0.0
    return float(med), float(p10), float(p90), mean, cv, robust_cv(ms)


def _time_runs(run: Callable[[], None], count: int, clock: Callable[[], int]) -> list[int]:
    out = []
    for _ in range(count):
        t0 = clock()
        run()
        out.append(clock() - t0)
    return out


def _warm_up(run: Callable[[], None], cfg: MeasureConfig) -> tuple[int, bool]:
    """Run until the window median settles; returns (runs, settled)."""
    start = time.perf_counter()
    clock = TIMERS[cfg.timer]
    done = len(_time_runs(run, cfg.min_warmup, clock))
    previous: float | None = None
    while done < cfg.max_warmup and time.perf_counter() - start < cfg.max_warmup_s:
        n = min(cfg.warmup_window, cfg.max_warmup - done)
        window = float(np.median(_time_runs(run, n, clock)))
        done += n
        if previous is not None and abs(window - previous) <= cfg.settle_tol * previous:
            return done, True
        previous = window
    return done, False


def _repeat(run: Callable[[], None], cfg: MeasureConfig) -> list[int]:
    samples: list[int] = []
    clock = TIMERS[cfg.timer]
    budget_ns = int(cfg.time_budget_s * 1e9)
    start = time.perf_counter_ns()  # the budget is wall time whatever the sample clock
    while len(samples) < cfg.repeats:
        t0 = clock()
        run()
        samples.append(clock() - t0)
        if time.perf_counter_ns() - start >= budget_ns and len(samples) >= cfg.min_repeats:
            break
    return samples


def _prepare(
    backend: Backend, network: str | NetworkGraph, cfg: MeasureConfig
) -> Callable[[], None]:
    kwargs: dict[str, Any] = {}
    if cfg.input_shape is not None:
        if "input_shape" not in inspect.signature(backend.prepare).parameters:
            raise MeasurementError(
                f"backend {backend.name!r} does not take an input shape; omit --input-shape"
            )
        kwargs["input_shape"] = cfg.input_shape
    try:
        return backend.prepare(network, cfg.batch, cfg.threads, **kwargs)
    except LatlabError:
        raise
    except Exception as exc:  # backends raise their libraries' own errors: name the network
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MeasurementError(
            f"backend {backend.name!r} could not prepare {_ref(network)!r}: {first}"
        ) from exc


def _ref(network: str | NetworkGraph) -> str:
    return network if isinstance(network, str) else network.reference


def measure(
    network: str | NetworkGraph,
    config: MeasureConfig | None = None,
    backend: Backend | None = None,
) -> Measurement:
    """Measure one network's latency on this machine (see the module docstring for the protocol).

    ``backend`` defaults to a fresh instance of ``config.backend``. Raises
    :class:`MeasurementError` naming the network when the backend cannot run it.
    """
    cfg = config or MeasureConfig()
    be = backend if backend is not None else get_backend(cfg.backend)
    started = datetime.now(UTC)
    run = _prepare(be, network, cfg)
    return measure_prepared(run, _ref(network), cfg, be, started)


def measure_prepared(
    run: Callable[[], None],
    network: str,
    cfg: MeasureConfig,
    backend: Backend,
    started: datetime | None = None,
) -> Measurement:
    """Time an already prepared inference ``run`` of ``network`` with the protocol of ``cfg``.

    :func:`measure` prepares and then calls this; campaigns call it directly to re-time the
    anchor's prepared session without rebuilding it.
    """
    be = backend
    started = started or datetime.now(UTC)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a sample would add milliseconds to one run
    try:
        warmup_runs, settled = _warm_up(run, cfg)
        attempts: list[list[int]] = []
        cvs: list[float] = []
        while True:
            samples = _repeat(run, cfg)
            attempts.append(samples)
            cvs.append(_summarise(samples)[5])
            if cvs[-1] <= cfg.cv_threshold or len(attempts) > cfg.max_remeasures:
                break
    except LatlabError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MeasurementError(f"running {network!r} failed: {first}") from exc
    finally:
        if gc_was_enabled:
            gc.enable()
    best = int(np.argmin(cvs))
    kept = attempts[best]
    median, p10, p90, mean, cv, rcv = _summarise(kept)
    info = dict(be.info())
    info.update(getattr(run, "details", {}) or {})
    if len(attempts) > 1:
        log.info("%s: robust CV %.3f after %d attempts", network, rcv, len(attempts))
    return Measurement(
        network=network,
        median_ms=median,
        p10_ms=p10,
        p90_ms=p90,
        mean_ms=mean,
        cv=cv,
        robust_cv=rcv,
        samples_ms=[s / 1e6 for s in kept],
        warmup_runs=warmup_runs,
        warmup_settled=settled,
        repeats=len(kept),
        remeasures=len(attempts) - 1,
        attempt_cvs=cvs,
        protocol=cfg.protocol(),
        protocol_key=cfg.protocol_key(),
        backend_info=info,
        fingerprint=machine_fingerprint(),
        started_at=started,
        finished_at=datetime.now(UTC),
    )


@dataclass(frozen=True)
class CampaignEvent:
    """A progress report from :func:`measure_many` (the CLI draws a progress bar from these).

    ``kind`` is ``"start"`` (``total`` known), ``"skipped"`` (already in the store),
    ``"measured"``, ``"anchor"`` (an anchor measurement, ``drift`` set) or ``"done"``.
    """

    kind: str
    done: int
    total: int
    network: str | None = None
    measurement: Measurement | None = None
    drift: float | None = None


@dataclass
class CampaignResult:
    """What a campaign did: new measurements, skipped references, anchor measurements."""

    campaign: str
    device: str
    protocol_key: str
    measured: list[Measurement] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    anchors: list[Measurement] = field(default_factory=list)
    drifts: list[float] = field(default_factory=list)

    @property
    def max_drift(self) -> float | None:
        """Largest relative anchor drift seen (None without at least two anchor measurements)."""
        return max((abs(d) for d in self.drifts), default=None)


def measure_many(
    references: Sequence[str],
    config: MeasureConfig,
    store: Store,
    device: str,
    *,
    backend: Backend | None = None,
    anchor: str | None = DEFAULT_ANCHOR,
    anchor_every: int = 25,
    drift_threshold: float = 0.10,
    shuffle: bool = False,
    progress: Callable[[CampaignEvent], None] | None = None,
) -> CampaignResult:
    """Measure ``references`` on this machine into ``store`` under the device name ``device``.

    Each measurement is committed as soon as it completes; references already measured for
    ``device`` with the same protocol are skipped, so re-running an interrupted campaign loses
    nothing and repeats nothing. ``shuffle`` visits references in a random order, so that
    several workers sharing one PostgreSQL store rarely pick the same network at once (a
    network measured twice is stored once). The anchor is measured first, after every
    ``anchor_every`` new measurements and last; each anchor measurement is stored with the
    campaign id and its drift from the first one. ``progress`` receives :class:`CampaignEvent`.
    """
    from latlab.datasets.references import parse_reference, resolve

    if anchor_every < 1:
        raise MeasurementError(f"anchor_every must be at least 1, got {anchor_every}")
    refs = list(dict.fromkeys(str(r) for r in references))
    for ref in refs:  # validate every reference before measuring anything
        parse_reference(ref)
    if anchor is not None:
        parse_reference(anchor)
    be = backend if backend is not None else get_backend(config.backend)
    notify = progress or (lambda event: None)
    result = CampaignResult(uuid.uuid4().hex[:12], device, config.protocol_key())
    fingerprint = machine_fingerprint()
    store.add_device(device, backend=config.backend, fingerprint=fingerprint, info=be.info())
    if shuffle:
        random.Random(uuid.uuid4().int).shuffle(refs)
    total = len(refs)
    done = 0
    notify(CampaignEvent("start", 0, total))

    anchor_run: Callable[[], None] | None = None

    def measure_anchor() -> None:
        # The anchor's session is prepared once and re-timed: drift then reflects the machine,
        # not session-to-session differences (or the cost of rebuilding its weights).
        nonlocal anchor_run
        assert anchor is not None
        if anchor_run is None:
            anchor_run = _prepare(be, anchor, config)
        m = measure_prepared(anchor_run, anchor, config, be)
        first = result.anchors[0].median_ms if result.anchors else m.median_ms
        drift = (m.median_ms - first) / first if first > 0 else 0.0
        m.extra.update({"campaign": result.campaign, "drift": drift})
        if result.anchors:
            result.drifts.append(drift)
        if abs(drift) > drift_threshold:
            log.warning(
                "anchor %s drifted %+.1f%% from the campaign's first measurement (%.4f -> %.4f "
                "ms): the machine's speed changed; measurements since the last anchor are "
                "suspect",
                anchor,
                100 * drift,
                first,
                m.median_ms,
            )
        store.add_network(resolve(anchor, batch=config.batch))
        store.add_anchor(device, m, campaign=result.campaign, position=done)
        result.anchors.append(m)
        notify(CampaignEvent("anchor", done, total, anchor, m, drift))

    measured_keys = store.measured_references(device, result.protocol_key)
    if anchor is not None and len(measured_keys.intersection(refs)) < total:
        measure_anchor()
    since_anchor = 0
    for ref in refs:
        if ref in measured_keys or store.is_measured(device, ref, result.protocol_key):
            result.skipped.append(ref)
            done += 1
            notify(CampaignEvent("skipped", done, total, ref))
            continue
        graph = resolve(ref, batch=config.batch, input_shape=config.input_shape)
        m = measure(ref, config, be)
        m.extra["campaign"] = result.campaign
        store.add_network(graph)
        store.add_measurement(device, m)
        result.measured.append(m)
        done += 1
        since_anchor += 1
        notify(CampaignEvent("measured", done, total, ref, m))
        if anchor is not None and since_anchor >= anchor_every and done < total:
            measure_anchor()
            since_anchor = 0
    if anchor is not None and since_anchor > 0:
        measure_anchor()
    notify(CampaignEvent("done", done, total))
    return result
