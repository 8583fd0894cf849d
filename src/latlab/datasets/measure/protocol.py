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

**Paired timing** (``MeasureConfig.reference`` set): after the network's warm-up, the network
and the reference network are timed in interleaved rounds (:mod:`.rounds`: per round a block
of runs of each, both about 20-50 ms long, so that each spans several of the scheduler's time
slices), the time budget counting the network's runs only, in at least 10 rounds. The raw
median, p10/p90, CV and robust CV are over every run, as unpaired; the **ratio** is the median
over rounds of (network's mean run time / reference's mean run time in that round), and the
**corrected median** is the ratio times the device configuration's *reference value*
(:mod:`latlab.datasets.measure.reference`), established once in the store and reused by every
later campaign. A change of the machine's speed between rounds (frequency, a neighbour's load,
a virtual machine's host, the share of the cores the scheduler leaves) slows both members of a
round alike and cancels in the ratio, so campaigns hours apart share one scale. The stored
samples are one per round (the block means); the robust CV of the per-round ratios decides
re-measurement. Raw and corrected medians are both stored and exported.

**Groups** (``MeasureConfig.group`` = ``g`` > 1, :func:`measure_group`): a campaign times ``g``
networks together, each round a block of every one of them and a single reference block, so
the reference costs ``1/g`` of its time per network instead of half of every round. Each
network keeps its own block size, fewest rounds, repeats and time budget (it leaves the rounds
when they are met) and its ratio is over its own rounds; the price is a round ``g`` blocks
long, so that drift faster than about ``g`` x 20 ms cancels less. ``group`` is part of the
protocol key (1, the default, keeps the keys stores already hold).

Every measurement records the machine's load during its timed rounds
(:mod:`latlab.datasets.measure.load`: other processes' CPU use in cores, steal time, load
average).

A campaign (:func:`measure_many`) measures a list of references into a
:class:`~latlab.datasets.store.Store`, committing each measurement as it completes and skipping
those already stored for the same device and protocol, so an interrupted campaign resumes
where it stopped. Paired campaigns log the reference's drift from its first measurement in
the campaign beyond ``drift_threshold`` and stop beyond ``max_drift`` (keeping what was
measured). Unpaired campaigns re-measure a fixed **anchor** network every ``anchor_every``
networks with the same warning: a drifting anchor means the machine changed under the campaign
(thermal throttling, another job, a frequency governor) and its raw numbers are suspect.

Keep the machine otherwise idle while measuring: other processes share cores, caches and memory
bandwidth, and raise both the median and the CV. The ratio removes what slows network and
reference alike; it cannot remove contention that hits one more than the other.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import json
import logging
import math
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
from latlab.datasets.measure.load import LoadMeter, competing, wait_for_quiet
from latlab.datasets.measure.rounds import MemberFailed, paired_blocks, time_rounds
from latlab.encoders.ir import NetworkGraph
from latlab.encoders.quantize import PRECISIONS
from latlab.errors import DriftError, LatlabError, MeasurementError, first_line

if TYPE_CHECKING:
    from latlab.datasets.store import Store

log = logging.getLogger(__name__)

#: The anchor network re-measured during unpaired campaigns (2.1 M MACs: ~0.1-0.3 ms).
DEFAULT_ANCHOR = "fcnn:512-1024-1024-512-10"
#: The default reference network of paired timing: a small convolutional network (conv,
#: residual block, strided convs; about 0.3 ms on one core), compute-bound like most networks
#: users time, with few weights, so that its block barely disturbs the network's caches.
DEFAULT_REFERENCE = "cnn:r64-c16s2-c32-rb32-c64s2-fc10"


#: Clocks the protocol can time with (the thread clock needs threads=1).
TIMERS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "thread": time.thread_time_ns}

#: Execution modes of a device configuration (onnxruntime's ``ExecutionMode``).
MODES = ("sequential", "parallel")
#: Settings added after the first stores were written, with the defaults they had implicitly.
_NEW_DEFAULTS: dict[str, Any] = {
    "mode": "sequential",
    "inter_op_threads": 1,
    "reference": None,
    "block_ms": 20.0,
    "precision": "fp32",
    "group": 1,
}


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
    #: Execution mode of the runtime: ``"sequential"`` (one operator at a time, the default)
    #: or ``"parallel"`` (independent branches at once on ``inter_op_threads`` threads).
    mode: str = "sequential"
    inter_op_threads: int = 1
    #: The reference network timed in the same rounds as every network (drift correction, see
    #: the module docstring); None: each network is timed alone (no corrected value).
    reference: str | None = None
    #: Paired timing: the shortest block of runs of each member per round (ms).
    block_ms: float = 20.0
    #: Numeric precision of the run (:data:`latlab.encoders.quantize.PRECISIONS`): ``fp32``,
    #: ``int8`` (the statically quantised QDQ model, onnxruntime) or ``bf16`` (torch).
    precision: str = "fp32"
    #: Paired timing: networks a campaign times together beside one reference block per
    #: round (:func:`measure_group`). 1 pairs every network with its own reference block;
    #: ``g`` networks share one, so the reference costs ``1/g`` of its time per network.
    group: int = 1

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
            "mode": self.mode in MODES,
            "inter_op_threads": self.inter_op_threads >= 1,
            "block_ms": self.block_ms > 0,
            "precision": self.precision in PRECISIONS,
            "group": self.group >= 1,
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
        # Left out at their defaults, so that measurements stored before these settings
        # existed keep their protocol key (and campaigns keep resuming).
        for name, default in _NEW_DEFAULTS.items():
            if out[name] == default:
                del out[name]
        return out

    def protocol_key(self) -> str:
        """A short hash of the settings: equal keys mean comparable measurements."""
        blob = json.dumps(self.protocol(), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def settings(self) -> dict[str, Any]:
        """What is run (not how often): backend, threads, batch, input shape, mode, clock.

        Together with the device name this is a *device configuration*; its reference value
        (:mod:`latlab.datasets.measure.reference`) is shared by every protocol of it.
        """
        out = {
            "backend": self.backend,
            "threads": self.threads,
            "batch": self.batch,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "mode": self.mode,
            "inter_op_threads": self.inter_op_threads,
            "timer": self.timer,
        }
        if self.precision != "fp32":  # fp32 configurations keep the keys they always had
            out["precision"] = self.precision
        return out

    def settings_key(self) -> str:
        """A short hash of :meth:`settings`."""
        blob = json.dumps(self.settings(), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


@dataclass
class Measurement:
    """One network's measured latency with everything needed to judge and reproduce it.

    ``median_ms`` is the raw median. Measured against a reference (``config.reference``),
    ``ratio`` is the median over rounds of (network time / reference time in that round) and
    ``corrected_ms`` = ``ratio`` x the reference value of the device configuration, when one
    was given (``reference_value_ms``); ``reference_median_ms`` is the reference's raw median
    in these rounds (its drift shows the machine's). ``load`` is the machine's load during the
    timed rounds (:mod:`latlab.datasets.measure.load`).
    """

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
    load: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None
    ratio: float | None = None
    corrected_ms: float | None = None
    reference_median_ms: float | None = None
    reference_value_ms: float | None = None
    reference_value_id: int | None = None
    reference_samples_ms: list[float] = field(default_factory=list)
    rounds: int = 0

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
    return _summarise_ms(np.asarray(samples_ns, dtype=np.float64) / 1e6)


def _summarise_ms(ms: np.ndarray) -> tuple[float, float, float, float, float, float]:
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


def _warm_up(run: Callable[[], None], cfg: MeasureConfig) -> tuple[int, bool, float]:
    """Run until the window median settles; returns (runs, settled, the last window's median
    in ms: the estimate paired timing sizes its blocks by)."""
    start = time.perf_counter()
    clock = TIMERS[cfg.timer]
    first = _time_runs(run, cfg.min_warmup, clock)
    done = len(first)
    previous: float | None = None
    estimate = float(np.median(first)) if first else math.nan
    while done < cfg.max_warmup and time.perf_counter() - start < cfg.max_warmup_s:
        n = min(cfg.warmup_window, cfg.max_warmup - done)
        window = float(np.median(_time_runs(run, n, clock)))
        done += n
        estimate = window
        if previous is not None and abs(window - previous) <= cfg.settle_tol * previous:
            return done, True, estimate / 1e6
        previous = window
    return done, False, estimate / 1e6


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


def prepare_network(
    backend: Backend,
    network: str | NetworkGraph,
    cfg: MeasureConfig,
    *,
    input_shape: bool = True,
    role: str = "",
) -> Callable[[], None]:
    """Prepare ``network`` with the settings of ``cfg`` (``role`` names it in errors, e.g.
    "reference network"); ``input_shape=False`` ignores ``cfg.input_shape`` (the reference
    has its own input).

    The one place a configuration's batch, threads, input shape, execution mode and precision
    reach a backend: every measurement (single, paired, grouped, the campaign's anchor and the
    bench's interleaved padding rounds) prepares its networks here, so that all of them run at
    the configuration they are stored under."""
    kwargs: dict[str, Any] = {}
    params = inspect.signature(backend.prepare).parameters
    if input_shape and cfg.input_shape is not None:
        if "input_shape" not in params:
            raise MeasurementError(
                f"backend {backend.name!r} does not take an input shape; omit --input-shape"
            )
        kwargs["input_shape"] = cfg.input_shape
    if cfg.mode != "sequential" or cfg.inter_op_threads != 1:
        if "mode" not in params or "inter_op_threads" not in params:
            raise MeasurementError(
                f"backend {backend.name!r} has no execution mode or inter-op threads; "
                "omit --mode/--inter-op"
            )
        kwargs.update(mode=cfg.mode, inter_op_threads=cfg.inter_op_threads)
    if cfg.precision != "fp32":
        if "precision" not in params:
            raise MeasurementError(
                f"backend {backend.name!r} has no precision setting; omit --precision"
            )
        kwargs["precision"] = cfg.precision
    what = f"{role} {_ref(network)!r}" if role else repr(_ref(network))
    try:
        return backend.prepare(network, cfg.batch, cfg.threads, **kwargs)
    except LatlabError as exc:
        if role:
            raise MeasurementError(f"{what} cannot be prepared: {exc}") from exc
        raise
    except Exception as exc:  # backends raise their libraries' own errors: name the network
        first = first_line(exc)
        raise MeasurementError(
            f"backend {backend.name!r} could not prepare {what}: {first}"
        ) from exc


def prepare_reference(
    backend: Backend, config: MeasureConfig, reference: str | None = None
) -> Callable[[], None]:
    """The prepared reference network of ``config`` (or ``reference``), run once to check it.

    Raises :class:`MeasurementError` naming the reference when it cannot be built or run.
    """
    ref = reference or config.reference
    if ref is None:
        raise MeasurementError("no reference network configured (MeasureConfig.reference)")
    run = prepare_network(backend, ref, config, input_shape=False, role="reference network")
    named = _named(run, f"reference network {ref!r}")
    named()
    return named


def _named(run: Callable[[], None], what: str) -> Callable[[], None]:
    """``run`` whose failures raise a MeasurementError naming ``what``."""

    def call() -> None:
        try:
            run()
        except Exception as exc:
            first = first_line(exc)
            raise MeasurementError(f"{what} failed to run: {first}") from exc

    call.details = getattr(run, "details", {})  # type: ignore[attr-defined]
    return call


def _ref(network: str | NetworkGraph) -> str:
    return network if isinstance(network, str) else network.reference


def measure(
    network: str | NetworkGraph,
    config: MeasureConfig | None = None,
    backend: Backend | None = None,
    *,
    reference_run: Callable[[], None] | None = None,
    reference_value_ms: float | None = None,
    reference_value_id: int | None = None,
) -> Measurement:
    """Measure one network's latency on this machine (see the module docstring for the protocol).

    ``backend`` defaults to a fresh instance of ``config.backend``. With ``config.reference``
    the network is timed in rounds beside the reference (prepared here unless
    ``reference_run`` is given); ``reference_value_ms`` turns the ratio into ``corrected_ms``
    (``reference_value_id``: its id in the store, recorded with the measurement).
    Raises :class:`MeasurementError` naming the network (or the reference) when the backend
    cannot run it.
    """
    cfg = config or MeasureConfig()
    be = backend if backend is not None else get_backend(cfg.backend)
    started = datetime.now(UTC)
    if cfg.reference is not None and reference_run is None:
        reference_run = prepare_reference(be, cfg)
    run = prepare_network(be, network, cfg)
    return measure_prepared(
        run,
        _ref(network),
        cfg,
        be,
        started,
        reference_run=reference_run,
        reference_value_ms=reference_value_ms,
        reference_value_id=reference_value_id,
    )


#: Fewest rounds of a paired measurement (the ratio is a median over rounds).
MIN_ROUNDS = 10


def _failed(network: str, exc: BaseException) -> MeasurementError:
    first = first_line(exc)
    return MeasurementError(f"running {network!r} failed: {first}")


def measure_prepared(
    run: Callable[[], None],
    network: str,
    cfg: MeasureConfig,
    backend: Backend,
    started: datetime | None = None,
    *,
    reference_run: Callable[[], None] | None = None,
    reference_value_ms: float | None = None,
    reference_value_id: int | None = None,
) -> Measurement:
    """Time an already prepared inference ``run`` of ``network`` with the protocol of ``cfg``.

    :func:`measure` prepares and then calls this; campaigns call it directly with a prepared
    reference session, so that the reference is built once per campaign. Paired timing is a
    group of one (:func:`measure_group`).
    """
    started = started or datetime.now(UTC)
    if cfg.reference is not None:
        if reference_run is None:
            raise MeasurementError(f"measuring {network!r} against a reference needs its session")
        return measure_group(
            [(network, run)],
            cfg,
            backend,
            started,
            reference_run=reference_run,
            reference_value_ms=reference_value_ms,
            reference_value_id=reference_value_id,
        )[0]
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a sample would add milliseconds to one run
    attempts: list[list[int]] = []
    cvs: list[float] = []
    meter = LoadMeter()
    try:
        warmup_runs, settled, _ = _warm_up(run, cfg)
        meter = LoadMeter()  # the load of the timed runs, not of the warm-up
        while True:
            samples = _repeat(run, cfg)
            attempts.append(samples)
            cvs.append(_summarise(samples)[5])
            if cvs[-1] <= cfg.cv_threshold or len(attempts) > cfg.max_remeasures:
                break
    except LatlabError:
        raise
    except Exception as exc:
        raise _failed(network, exc) from exc
    finally:
        load = meter.stop()
        if gc_was_enabled:
            gc.enable()
    best = int(np.argmin(cvs))
    kept = attempts[best]
    median, p10, p90, mean, cv, rcv = _summarise(kept)
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
        samples_ms=[x / 1e6 for x in kept],
        warmup_runs=warmup_runs,
        warmup_settled=settled,
        repeats=len(kept),
        remeasures=len(attempts) - 1,
        attempt_cvs=cvs,
        protocol=cfg.protocol(),
        protocol_key=cfg.protocol_key(),
        backend_info=_backend_info(backend, run),
        fingerprint=machine_fingerprint(),
        started_at=started,
        finished_at=datetime.now(UTC),
        load=load,
    )


def _backend_info(backend: Backend, run: Callable[[], None]) -> dict[str, Any]:
    info = dict(backend.info())
    info.update(getattr(run, "details", {}) or {})
    return info


@dataclass
class _Attempt:
    """One member's share of one set of paired rounds."""

    samples_ns: list[int]
    net_ms: np.ndarray
    ref_ms: np.ndarray
    ref_runs_ns: np.ndarray
    runs_per_block: list[int]

    @property
    def ratio_cv(self) -> float:
        # the spread that matters for the corrected median: of the per-round ratios
        return robust_cv(self.net_ms / self.ref_ms)


def measure_group(
    members: Sequence[tuple[str, Callable[[], None]]],
    cfg: MeasureConfig,
    backend: Backend,
    started: datetime | None = None,
    *,
    reference_run: Callable[[], None],
    reference_value_ms: float | None = None,
    reference_value_id: int | None = None,
) -> list[Measurement]:
    """Paired timing of prepared networks ``members`` (``(network, run)`` pairs) beside one
    reference: one :class:`Measurement` each, in order.

    Each network is warmed up alone; then every round runs a block of each network and one
    block of the reference (:func:`~.rounds.time_rounds`), each network leaving the rounds
    when its own budget, ``repeats`` and fewest-rounds rules are met, so that a network's
    samples are what it would get timed alone beside the reference. A network's ratio is over
    the rounds it took part in, against the reference blocks of those rounds. A network whose
    ratios spread beyond ``cv_threshold`` is timed again (with the others that need it, up to
    ``max_remeasures`` times), the attempt with the lowest spread kept. Grouping ``g``
    networks divides the reference's share of the timing by ``g``; the price is rounds ``g``
    blocks longer, so drift faster than a round (about ``g`` x 20 ms) cancels less.
    """
    started = started or datetime.now(UTC)
    names = [name for name, _ in members]
    runs = [run for _, run in members]
    clock = TIMERS[cfg.timer]
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a sample would add milliseconds to one run
    attempts: list[list[_Attempt]] = [[] for _ in runs]
    warm: list[tuple[int, bool]] = []
    meter = LoadMeter()
    current = names[0]
    try:
        estimates = []
        for name, run in members:
            current = name
            done, settled, est = _warm_up(run, cfg)
            if not math.isfinite(est):  # no warm-up runs configured: time a few
                est = float(np.median(_time_runs(run, 3, clock))) / 1e6
            warm.append((done, settled))
            estimates.append(est)
        meter = LoadMeter()  # the load of the timed rounds, not of the warm-up
        current = f"reference network {cfg.reference!r}"
        ref_est = float(np.median(_time_runs(reference_run, max(cfg.min_warmup, 3), clock)))
        blocks = [paired_blocks(est, ref_est / 1e6, cfg.block_ms) for est in estimates]
        k_ref = max(kr for _, kr in blocks)  # the longest block any member asks for
        least = [max(math.ceil(cfg.min_repeats / k), MIN_ROUNDS) for k, _ in blocks]
        most = [max(math.ceil(cfg.repeats / k), n) for (k, _), n in zip(blocks, least, strict=True)]
        active = list(range(len(runs)))
        while active:
            try:
                rounds = time_rounds(
                    [runs[i] for i in active] + [reference_run],
                    clock,
                    blocks=[blocks[i][0] for i in active] + [k_ref],
                    max_rounds=[most[i] for i in active],
                    min_rounds=[least[i] for i in active],
                    budget_s=cfg.time_budget_s,
                    budget_member=list(range(len(active))),
                )
            except MemberFailed as exc:  # name the network whose run raised
                if exc.member < len(active):
                    current = names[active[exc.member]]
                raise (exc.__cause__ if exc.__cause__ is not None else exc) from None
            ref_blocks = rounds.blocks_ms[-1]
            ref_runs = np.asarray(rounds.samples_ns[-1], dtype=np.int64).reshape(-1, k_ref)
            for j, i in enumerate(active):
                taken = rounds.taken[j]
                attempts[i].append(
                    _Attempt(
                        rounds.samples_ns[j],
                        rounds.blocks_ms[j],
                        ref_blocks[taken],
                        ref_runs[taken].ravel(),
                        [blocks[i][0], k_ref],
                    )
                )
            active = [
                i
                for i in active
                if attempts[i][-1].ratio_cv > cfg.cv_threshold
                and len(attempts[i]) <= cfg.max_remeasures
            ]
    except LatlabError:
        raise
    except Exception as exc:
        raise _failed(current, exc) from exc
    finally:
        load = meter.stop()
        if gc_was_enabled:
            gc.enable()
    finished = datetime.now(UTC)
    out = []
    for i, name in enumerate(names):
        cvs = [a.ratio_cv for a in attempts[i]]
        kept = attempts[i][int(np.argmin(cvs))]
        # raw statistics over every run (as unpaired); stored samples: one per round (block
        # means), the figures the ratio is taken from
        median, p10, p90, mean, cv, rcv = _summarise(kept.samples_ns)
        ratio = float(np.median(kept.net_ms / kept.ref_ms))
        extra: dict[str, Any] = {
            "runs_per_block": kept.runs_per_block,
            "samples": "block means (one per round)",
            "ratio_robust_cv": min(cvs),
        }
        if len(names) > 1:
            extra["group"] = len(names)
        if len(cvs) > 1:
            log.info("%s: robust CV %.3f after %d attempts", name, min(cvs), len(cvs))
        out.append(
            Measurement(
                network=name,
                median_ms=median,
                p10_ms=p10,
                p90_ms=p90,
                mean_ms=mean,
                cv=cv,
                robust_cv=rcv,
                samples_ms=[float(x) for x in kept.net_ms],
                warmup_runs=warm[i][0],
                warmup_settled=warm[i][1],
                repeats=len(kept.samples_ns),
                remeasures=len(cvs) - 1,
                attempt_cvs=cvs,
                protocol=cfg.protocol(),
                protocol_key=cfg.protocol_key(),
                backend_info=_backend_info(backend, runs[i]),
                fingerprint=machine_fingerprint(),
                started_at=started,
                finished_at=finished,
                extra=extra,
                load=load,
                reference=cfg.reference,
                ratio=ratio,
                corrected_ms=ratio * reference_value_ms if reference_value_ms else None,
                reference_median_ms=float(np.median(kept.ref_runs_ns / 1e6)),
                reference_value_ms=reference_value_ms,
                reference_value_id=reference_value_id if reference_value_ms else None,
                reference_samples_ms=[float(x) for x in kept.ref_ms],
                rounds=len(kept.net_ms),
            )
        )
    return out


def measure_together(
    networks: Sequence[str | NetworkGraph],
    config: MeasureConfig,
    backend: Backend | None = None,
    *,
    reference_run: Callable[[], None] | None = None,
    reference_value_ms: float | None = None,
    reference_value_id: int | None = None,
) -> tuple[list[Measurement], Exception | None]:
    """Prepare ``networks`` in order and time them: paired (``config.reference``), as one
    :func:`measure_group` beside ``reference_run``; unpaired, one after the other.

    Preparation stops at the first network that cannot be prepared: the networks before it
    are still timed, and its error is returned beside their measurements, so that a campaign
    keeps what it could measure and then reports the culprit."""
    be = backend if backend is not None else get_backend(config.backend)
    started = datetime.now(UTC)
    prepared: list[tuple[str, Callable[[], None]]] = []
    error: Exception | None = None
    for network in networks:
        try:
            prepared.append((_ref(network), prepare_network(be, network, config)))
        except Exception as exc:
            error = exc
            break
    if not prepared:
        return [], error
    if config.reference is None:  # one at a time, each with its own start time
        alone = started if len(prepared) == 1 else None
        return (
            [measure_prepared(run, name, config, be, alone) for name, run in prepared],
            error,
        )
    if reference_run is None:
        reference_run = prepare_reference(be, config)
    ms = measure_group(
        prepared,
        config,
        be,
        started,
        reference_run=reference_run,
        reference_value_ms=reference_value_ms,
        reference_value_id=reference_value_id,
    )
    return ms, error


@dataclass(frozen=True)
class CampaignEvent:
    """A progress report from :func:`measure_many` (the CLI draws a progress bar from these).

    ``kind`` is ``"start"`` (``total`` known), ``"reference"`` (the reference value is being
    established), ``"skipped"`` (already in the store), ``"measured"``, ``"anchor"`` (an anchor
    measurement, ``drift`` set), ``"paused"`` (waited for the load to fall) or ``"done"``.
    """

    kind: str
    done: int
    total: int
    network: str | None = None
    measurement: Measurement | None = None
    drift: float | None = None


@dataclass
class CampaignResult:
    """What a campaign did: new measurements, skipped references, anchor measurements.

    For a paired campaign (``config.reference``), ``drifts`` holds the reference's drift in
    every new measurement from its first one in the campaign, ``reference_value`` the value
    the corrected medians are expressed in, ``loaded`` the networks measured while other
    processes competed for the cores and ``paused_s`` the time waited for the load to fall.
    """

    campaign: str
    device: str
    protocol_key: str
    measured: list[Measurement] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    anchors: list[Measurement] = field(default_factory=list)
    drifts: list[float] = field(default_factory=list)
    reference_value: Any = None
    loaded: list[str] = field(default_factory=list)
    paused_s: float = 0.0

    @property
    def max_drift(self) -> float | None:
        """Largest relative anchor drift seen (None without at least two anchor measurements)."""
        return max((abs(d) for d in self.drifts), default=None)


def device_settings(config: MeasureConfig) -> dict[str, Any]:
    """The settings that make a device configuration, recorded in the device's ``extra``."""
    return {"settings": config.settings()}


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
    max_drift: float | None = None,
    pause_on_load: bool = False,
    pause_max_s: float | None = None,
    reference_blocks: int = 5,
    reference_spacing_s: float = 1.0,
    strict_reference: bool = False,
    reestablish_reference: bool = False,
    shuffle: bool = False,
    progress: Callable[[CampaignEvent], None] | None = None,
) -> CampaignResult:
    """Measure ``references`` on this machine into ``store`` under the device name ``device``.

    Each measurement is committed as soon as it completes; references already measured for
    ``device`` with the same protocol are skipped, so re-running an interrupted campaign loses
    nothing and repeats nothing. ``shuffle`` visits references in a random order, so that
    several workers sharing one PostgreSQL store rarely pick the same network at once (a
    network measured twice is stored once). ``progress`` receives :class:`CampaignEvent`.

    With ``config.reference`` (paired timing) every network is timed in rounds beside the
    reference, whose session is prepared once (a reference that cannot run raises
    :class:`MeasurementError` naming it, before anything is measured). The device
    configuration's reference value is read from the store, or established there first
    (:func:`~latlab.datasets.measure.reference.establish_reference` with ``reference_blocks``,
    ``reference_spacing_s``, ``strict_reference``; ``reestablish_reference`` measures it
    again and rescales the stored corrected medians); each measurement stores raw and corrected
    medians. The reference's drift from its first measurement in the campaign is logged beyond
    ``drift_threshold``; beyond ``max_drift`` the campaign stops with
    :class:`~latlab.errors.DriftError` (the drifted measurement is not stored, everything
    before it is). The reference's samples of every ``anchor_every``-th measurement are stored
    as anchor measurements; ``anchor`` is not used.

    Without a reference, the ``anchor`` network is measured first, after every
    ``anchor_every`` new measurements and last, with the same drift warning.

    Every measurement records the machine's load; a measurement during which other processes
    competed for its cores is logged (and listed in ``CampaignResult.loaded``). With
    ``pause_on_load`` the campaign waits before each network until they leave its cores free
    (at most ``pause_max_s`` seconds per network; None: as long as it takes).
    """
    from latlab.datasets.references import canonical_reference, parse_reference, resolve

    if anchor_every < 1:
        raise MeasurementError(f"anchor_every must be at least 1, got {anchor_every}")
    if max_drift is not None and not max_drift > 0:
        raise MeasurementError(f"max_drift must be positive, got {max_drift}")
    paired = config.reference is not None
    # validate every reference before measuring anything; measured and resumed under the
    # spelling the store keys the network by
    refs = list(dict.fromkeys(canonical_reference(str(r)) for r in references))
    if paired:
        assert config.reference is not None
        parse_reference(config.reference)
        anchor = None
    if anchor is not None:
        parse_reference(anchor)
    be = backend if backend is not None else get_backend(config.backend)
    notify = progress or (lambda event: None)
    result = CampaignResult(uuid.uuid4().hex[:12], device, config.protocol_key())
    measured_keys = store.measured_references(device, result.protocol_key)
    todo = len(measured_keys.intersection(refs)) < len(refs)
    reference_run: Callable[[], None] | None = None
    if paired and (todo or reestablish_reference):
        # before anything is written: a reference that cannot run stops the campaign here
        reference_run = prepare_reference(be, config)
    fingerprint = machine_fingerprint()
    store.add_device(
        device,
        backend=config.backend,
        fingerprint=fingerprint,
        info=be.info(),
        extra=device_settings(config),
    )
    if shuffle:
        random.Random(uuid.uuid4().int).shuffle(refs)
    total = len(refs)
    done = 0
    notify(CampaignEvent("start", 0, total))

    anchor_run: Callable[[], None] | None = None
    warned_loaded = False

    def check_load(m: Measurement) -> None:
        nonlocal warned_loaded
        if not m.load or not competing(m.load, config.threads):
            return
        result.loaded.append(m.network)
        if not warned_loaded:
            log.warning(
                "other processes used %.2f cores of %d while %s was measured (it needs %d): "
                "raw medians are slowed; corrected ones less so (use pause_on_load / "
                "--pause-on-load to wait for a quiet machine)",
                m.load["other_cores"] + m.load["steal_cores"],
                m.load["cores"],
                m.network,
                config.threads,
            )
            warned_loaded = True

    def warn_drift(drift: float, first: float, now: float, what: str) -> None:
        if abs(drift) > drift_threshold:
            log.warning(
                "%s %s drifted %+.1f%% from the campaign's first measurement (%.4f -> %.4f "
                "ms): the machine's speed changed; %s",
                what,
                config.reference or anchor,
                100 * drift,
                first,
                now,
                "corrected medians compensate it"
                if paired
                else "measurements since the last anchor are suspect",
            )

    def measure_anchor() -> None:
        # The anchor's session is prepared once and re-timed: drift then reflects the machine,
        # not session-to-session differences (or the cost of rebuilding its weights).
        nonlocal anchor_run
        assert anchor is not None
        if anchor_run is None:
            anchor_run = prepare_network(be, anchor, config)
        m = measure_prepared(anchor_run, anchor, config, be)
        first = result.anchors[0].median_ms if result.anchors else m.median_ms
        drift = (m.median_ms - first) / first if first > 0 else 0.0
        m.extra.update({"campaign": result.campaign, "drift": drift})
        if result.anchors:
            result.drifts.append(drift)
        warn_drift(drift, first, m.median_ms, "anchor")
        store.add_network(resolve(anchor, batch=config.batch))
        store.add_anchor(device, m, campaign=result.campaign, position=done)
        result.anchors.append(m)
        notify(CampaignEvent("anchor", done, total, anchor, m, drift))

    value = None
    if reference_run is not None:
        from latlab.datasets.measure.reference import establish_reference

        assert config.reference is not None
        notify(CampaignEvent("reference", 0, total, config.reference))
        value = establish_reference(
            store,
            device,
            config,
            backend=be,
            reference_run=reference_run,
            blocks=reference_blocks,
            spacing_s=reference_spacing_s,
            strict=strict_reference,
            replace_existing=reestablish_reference,
        )
        result.reference_value = value
        store.add_network(resolve(config.reference, batch=config.batch))
    if anchor is not None and todo:
        measure_anchor()
    first_reference: float | None = None
    since_anchor = 0

    def record(graph: NetworkGraph, m: Measurement) -> None:
        nonlocal done, since_anchor, first_reference
        ref = m.network
        m.extra["campaign"] = result.campaign
        if paired:
            assert m.reference_median_ms is not None
            now = m.reference_median_ms
            first_reference = first_reference or now
            drift = (now - first_reference) / first_reference
            m.extra["drift"] = drift
            if max_drift is not None and abs(drift) > max_drift:
                raise DriftError(
                    f"reference {config.reference!r} drifted {100 * drift:+.1f} % "
                    f"({first_reference:.4f} -> {now:.4f} ms), beyond --max-drift "
                    f"{100 * max_drift:.1f} %, while measuring {ref!r}: stopped; the "
                    f"{len(result.measured)} measurement(s) of this campaign before it are "
                    "stored and the same command resumes after them"
                )
            result.drifts.append(drift)
            warn_drift(drift, first_reference, now, "reference")
        check_load(m)
        store.add_network(graph)
        store.add_measurement(device, m)
        result.measured.append(m)
        done += 1
        since_anchor += 1
        notify(CampaignEvent("measured", done, total, ref, m))
        if paired and (since_anchor >= anchor_every or len(result.measured) == 1):
            a = _reference_as_measurement(m, config)
            store.add_anchor(device, a, campaign=result.campaign, position=done)
            result.anchors.append(a)
            notify(CampaignEvent("anchor", done, total, a.network, a, m.extra["drift"]))
            since_anchor = 0
        elif anchor is not None and since_anchor >= anchor_every and done < total:
            measure_anchor()
            since_anchor = 0

    def measure_batch(batch: list[str]) -> None:
        """Time ``batch`` (one network, or a paired group) and record it; a network that
        cannot be resolved or prepared raises after the ones before it are recorded."""
        graphs: list[tuple[str, NetworkGraph]] = []
        failure: Exception | None = None
        for ref in batch:
            try:
                graphs.append(
                    (ref, resolve(ref, batch=config.batch, input_shape=config.input_shape))
                )
            except Exception as exc:
                failure = exc
                break
        ms, error = measure_together(
            [ref for ref, _ in graphs],
            config,
            be,
            reference_run=reference_run,
            reference_value_ms=value.value_ms if value is not None else None,
            reference_value_id=value.id if value is not None else None,
        )
        for (_, graph), m in zip(graphs, ms, strict=False):
            record(graph, m)
        if error is not None:
            raise error
        if failure is not None:
            raise failure

    size = config.group if paired else 1
    batch: list[str] = []
    for ref in refs:
        if ref in measured_keys or store.is_measured(device, ref, result.protocol_key):
            result.skipped.append(ref)
            done += 1
            notify(CampaignEvent("skipped", done, total, ref))
            continue
        if pause_on_load and not batch:
            waited = wait_for_quiet(config.threads, max_wait_s=pause_max_s)
            if waited:
                result.paused_s += waited
                notify(CampaignEvent("paused", done, total, ref))
        batch.append(ref)
        if len(batch) >= size:
            measure_batch(batch)
            batch = []
    if batch:
        measure_batch(batch)
    if anchor is not None and since_anchor > 0:
        measure_anchor()
    notify(CampaignEvent("done", done, total))
    return result


def _reference_as_measurement(m: Measurement, config: MeasureConfig) -> Measurement:
    """The reference's samples of a paired measurement ``m`` as a measurement of its own."""
    assert config.reference is not None
    ms = np.asarray(m.reference_samples_ms, dtype=np.float64)
    med, p10, p90, mean, cv, rcv = _summarise_ms(ms)
    return Measurement(
        network=config.reference,
        median_ms=float(m.reference_median_ms or med),
        p10_ms=p10,
        p90_ms=p90,
        mean_ms=mean,
        cv=cv,
        robust_cv=rcv,
        samples_ms=list(m.reference_samples_ms),
        warmup_runs=0,
        warmup_settled=True,
        repeats=len(ms),
        remeasures=0,
        attempt_cvs=[rcv],
        protocol=m.protocol,
        protocol_key=m.protocol_key,
        backend_info=m.backend_info,
        fingerprint=m.fingerprint,
        started_at=m.started_at,
        finished_at=m.finished_at,
        extra={
            "campaign": m.extra.get("campaign"),
            "drift": m.extra.get("drift"),
            "beside": m.network,
        },
        load=m.load,
    )
