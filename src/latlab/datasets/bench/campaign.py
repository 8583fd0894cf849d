"""Benchmark campaigns: measure a suite into the store, one committed item at a time.

``run_bench(suite, store, device)`` with suite

* ``kernels`` -- every single-layer benchmark (:func:`~.suites.kernel_suite`) measured three
  ways' first two: (a) the single-layer model end to end with the measurement protocol
  (``method="single"``; also a normal row of the ``measurements`` table) and (c) onnxruntime's
  profiler, the time of the runtime node(s) executing the benchmarked layer
  (``method="profile"``, the white-box reference; the profile and its nodes are stored).
* ``padding`` -- (b) smart padding of the same configurations: the layer between two padding
  layers (:data:`~.kernels` op ``padding``: a MaxPool 1x1 in the layer's own memory layout)
  minus padding-only models. With ``P_x``/``P_y`` the padding cost at the layer's input/output
  shape and ``O`` the session overhead, the padded model costs ``O + P_x + L + P_y``, the
  padding-only model at the input shape ``O + 2 P_x`` and at the output shape ``O + 2 P_y``, so
  ``L = padded - (pad_x + pad_y) / 2`` exactly when costs add up; ``padded - pad_x`` and
  ``padded - pad_y`` (``L ± (P_y - P_x)``) are kept as the ``[lower, upper]`` interval. For a
  shape-preserving layer the two padding-only models are one and the interval is the layer's
  time plus measurement noise. The three models are timed in interleaved rounds
  (:func:`paired_samples`) and the median of the per-round differences kept, so that a change
  of load on the machine between two measurements does not land in the difference.
* ``multilayer`` -- chains (:func:`~.suites.multilayer_suite`) measured end to end and
  profiled; the profile's trace gives the fusion label of every successive layer pair.
* ``context`` -- generated networks measured end to end and every executed kernel profiled
  with its features (:mod:`.context`): the kernel predictor's data.

At a precision other than fp32 (``config.precision="int8"``) every ``kernel:`` network of the
``kernels`` and ``multilayer`` suites is statically quantised to a QDQ model with
onnxruntime's quantisation tooling (:func:`latlab.datasets.references.onnx_model`), measured
end to end and profiled like a context network: each executed kernel (``QLinearConv``, the
depthwise ``QLinearConv/dw``, ``QGemm`` of every Gemm and 2-D/token weight MatMul,
``QLinearMatMul`` of batched activation matmuls, ``QLinearAdd``/``Mul``/``Softmax``/pools, the
float ops left between QDQ pairs -- LayerNormalization, Erf, Div, ... -- and the
``QuantizeLinear``/``DequantizeLinear`` conversions around them) is stored with its features,
so the kernel predictor of the ``-int8`` device trains on single kernels of every family as
well as on the context networks. The ``padding`` suite has no INT8 meaning and is refused
(:data:`PRECISION_SUITES` are what runs at int8): onnxruntime's quantiser quantises a MaxPool
only after a quantised tensor, so a padding-only model (two MaxPool 1x1) stays float when
"quantised" (it runs ``ReorderInput, MaxPool, MaxPool, ReorderOutput``) while the padded
model's padding runs on the int8 tensor (``QuantizeLinear, MaxPool, ..., NhwcMaxPool,
DequantizeLinear``): the difference would subtract float padding from int8 padding. ``latlab
bench --precision int8 --export`` therefore refuses ``--method padded`` (``single`` and
``profile`` are the INT8 layer tables).

Drift correction: with a reference network in the protocol (``BENCH_PAIRED``, what
``latlab bench`` uses, as ``latlab measure`` does) every time is stored on the device
configuration's reference scale (:mod:`latlab.datasets.measure.reference`): ``single`` is the
corrected median of the paired measurement, ``padded`` divides each round's times by the
reference's time in that round, ``profile`` is scaled by the reference's time in the
measurement just before it. Kernel and network data of one device are then on one scale however
far apart they were measured; each row's ``extra["value"]`` says ``corrected`` or ``raw``.

Each item is committed when done; an item already stored for the device and protocol is
skipped, so an interrupted campaign resumes where it stopped. Progress is reported through
``progress(BenchEvent)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from latlab.datasets.bench.kernels import (
    KernelSpec,
    Part,
    format_kernel,
    part_layers,
    resolve_kernel,
    shape_params,
)
from latlab.datasets.bench.suites import (
    DEFAULT_KERNEL_COUNT,
    DEFAULT_MULTILAYER_COUNT,
    SESSION_PROBE,
    kernel_suite,
    multilayer_suite,
)
from latlab.datasets.bench.tables import BenchStore
from latlab.datasets.measure.load import LoadMeter
from latlab.datasets.measure.protocol import DEFAULT_REFERENCE, MeasureConfig, measure
from latlab.datasets.references import canonical_reference
from latlab.datasets.store import Store
from latlab.errors import DataError, MeasurementError

log = logging.getLogger(__name__)

SUITES = ("kernels", "padding", "multilayer", "context")
#: What ``latlab bench`` with no suite named runs, in order: every predictor's data.
ALL_SUITES = ("kernels", "padding", "multilayer", "context")

#: The suites that run at a precision other than fp32 (all of them is these, in order).
PRECISION_SUITES = ("kernels", "multilayer", "context")

#: The benchmark protocol: shorter than the default network protocol (benchmarks are many and
#: small), same warm-up rule and robust-CV re-measurement.
BENCH_CONFIG = MeasureConfig(
    repeats=60,
    min_repeats=10,
    time_budget_s=0.4,
    max_warmup=60,
    max_warmup_s=0.4,
    max_remeasures=1,
)
#: The same, paired with the default reference network (drift-corrected, on the device's
#: reference scale): what ``latlab bench`` uses. ``BENCH_CONFIG`` stays unpaired so that the
#: experiments, which pair it with unpaired network measurements, keep one scale and their
#: stores' protocol keys.
BENCH_PAIRED = replace(BENCH_CONFIG, reference=DEFAULT_REFERENCE)
#: Profiled runs per benchmark (after 3 discarded warm-up runs), within a 0.4 s budget.
PROFILE_RUNS = 20


def default_count(suite: str) -> int:
    """The default ``--count`` of a suite (what the layer models need on this machine)."""
    if suite == "context":
        from latlab.datasets.bench.context import DEFAULT_CONTEXT_COUNT

        return DEFAULT_CONTEXT_COUNT
    return DEFAULT_MULTILAYER_COUNT if suite == "multilayer" else DEFAULT_KERNEL_COUNT


@dataclass(frozen=True)
class BenchEvent:
    """Progress of a campaign: ``kind`` is start, done_item, skipped or finished."""

    kind: str
    done: int
    total: int
    network: str | None = None


@dataclass
class BenchResult:
    suite: str
    device: str
    references: list[str]
    measured: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def suite_references(suite: str, count: int | None = None, seed: int = 0) -> list[str]:
    """The references a suite measures (deterministic for count and seed)."""
    if suite not in SUITES:
        raise DataError(f"unknown benchmark suite {suite!r} (known: {', '.join(SUITES)})")
    n = default_count(suite) if count is None else count
    if suite == "context":  # the seeded first half; the rest is chosen adaptively
        from latlab.datasets.bench.context import initial_references

        return initial_references(n, seed)
    if suite == "multilayer":
        return multilayer_suite(n, seed)
    refs = kernel_suite(n, seed)
    if suite == "padding":
        return [r for r in refs if r != SESSION_PROBE and _paddable(r)]
    return refs


def _paddable(reference: str) -> bool:
    """Whether a benchmark can sit between padding layers (an ``embed`` reads token ids, which
    no padding layer produces: it is measured single and profiled only)."""
    return resolve_kernel(reference)[0].ops[0] != "embed"


def benchmarked_layers(spec: KernelSpec, graph: Any) -> list[int]:
    """IR layer indices a benchmark measures: every layer except the padding parts."""
    parts = part_layers(graph)
    return [li for i, part in enumerate(spec.parts) if part.op != "padding" for li in parts[i]]


def head_kind(graph: Any, layers: list[int]) -> str:
    """Kind of the layer that dominates a benchmark (first compute layer, else the first)."""
    kinds = [graph.layers[i].kind for i in layers]
    for k in ("conv", "dwconv", "fc"):
        if k in kinds:
            return k
    return kinds[0] if kinds else "other"


def padded_references(reference: str) -> tuple[str, str, str]:
    """(padded model, padding-only at the input shape, padding-only at the output shape)."""
    spec, graph = resolve_kernel(reference)
    pad = Part("padding")
    padded = KernelSpec((pad, *spec.parts, pad), spec.params)
    x_shape = graph.inputs["input"]
    y_shape = graph.layers[-1].output_shape
    pad_x = KernelSpec((pad, pad), tuple(sorted(shape_params(x_shape).items())))
    pad_y = KernelSpec((pad, pad), tuple(sorted(shape_params(y_shape).items())))
    return format_kernel(padded), format_kernel(pad_x), format_kernel(pad_y)


class _Runner:
    def __init__(
        self, store: Store, device: str, config: MeasureConfig, threads: int, profile_runs: int
    ) -> None:
        self.store = store
        self.bench = BenchStore(store)
        self.device = device
        self.config = config
        self.threads = threads
        self.profile_runs = profile_runs
        self.key = config.protocol_key()
        self._medians: dict[str, float] = {}
        self.reference_run: Callable[[], None] | None = None
        self.value_ms: float | None = None
        self.value_id: int | None = None
        self.last_reference_ms: float | None = None
        #: The reference's raw median in the rounds each prefetched benchmark was timed in.
        self._reference_ms: dict[str, float] = {}

    def setup_reference(self) -> None:
        """Prepare the reference and read or establish the device's reference value."""
        from latlab.datasets.measure import get_backend
        from latlab.datasets.measure.protocol import prepare_reference
        from latlab.datasets.measure.reference import establish_reference

        be = get_backend(self.config.backend)
        self.reference_run = prepare_reference(be, self.config)
        value = establish_reference(
            self.store, self.device, self.config, backend=be, reference_run=self.reference_run
        )
        self.value_ms, self.value_id = value.value_ms, value.id

    def scale(self) -> float:
        """Factor from raw times now to the reference scale (1 without a reference)."""
        if self.value_ms is None or self.reference_run is None:
            return 1.0
        if self.last_reference_ms is None:
            from latlab.datasets.measure import get_backend
            from latlab.datasets.measure.protocol import measure_prepared

            plain = replace(self.config, reference=None)
            m = measure_prepared(
                self.reference_run,
                str(self.config.reference),
                plain,
                get_backend(self.config.backend),
            )
            self.last_reference_ms = m.median_ms
        return self.value_ms / self.last_reference_ms

    def prefetch(self, refs: list[str]) -> None:
        """Time ``refs[0]`` together with the next of ``refs`` not yet measured, as one paired
        group (``config.group`` networks beside one reference block per round), so that
        :meth:`measured_median` reads them back. Nothing happens unpaired, with group 1, or
        when ``refs[0]`` is measured already; a benchmark that cannot be prepared is left to
        :meth:`measured_median`, which measures it alone and reports it."""
        from latlab.datasets.measure.protocol import measure_together

        if self.reference_run is None or self.config.group <= 1 or refs[0] in self._medians:
            return
        todo: list[str] = []
        for ref in refs:
            if len(todo) == self.config.group:
                break
            stored = self.bench.median_ms(self.device, ref, self.key)
            if ref not in self._medians and stored is None:
                todo.append(ref)
        if len(todo) < 2 or todo[0] != refs[0]:
            return
        ms, _ = measure_together(
            todo,
            self.config,
            reference_run=self.reference_run,
            reference_value_ms=self.value_ms,
            reference_value_id=self.value_id,
        )
        for m in ms:
            self._keep(m)

    def _keep(self, m: Any) -> float:
        """Store a benchmark's measurement and remember its median (corrected when paired)."""
        self.store.add_network(m.network)
        self.store.add_measurement(self.device, m)
        value = float(m.corrected_ms if m.corrected_ms is not None else m.median_ms)
        self._medians[m.network] = value
        if m.reference_median_ms is not None:
            self._reference_ms[m.network] = float(m.reference_median_ms)
        return value

    def measured_median(self, ref: str) -> float:
        """Median latency of ``ref`` under the protocol (measured once, then read back)."""
        if ref in self._medians:
            # the profile that follows is scaled by the reference's time in ref's rounds
            self.last_reference_ms = self._reference_ms.get(ref, self.last_reference_ms)
            return self._medians[ref]
        stored = self.bench.median_ms(self.device, ref, self.key)
        if stored is not None:
            self._medians[ref] = stored
            return stored
        m = measure(
            ref,
            self.config,
            reference_run=self.reference_run,
            reference_value_ms=self.value_ms,
            reference_value_id=self.value_id,
        )
        self.last_reference_ms = m.reference_median_ms
        return self._keep(m)

    def profile(self, ref: str, *, labels: bool) -> tuple[float, float, float, str]:
        from latlab.datasets.bench.profile import profile_network
        from latlab.datasets.bench.trace import fusion_labels

        spec, graph = resolve_kernel(ref)
        prof = profile_network(
            ref,
            threads=self.threads,
            runs=self.profile_runs,
            warmup=3,
            time_budget_s=0.4,
            timer=self.config.timer,
        )
        layers = benchmarked_layers(spec, graph)
        groups = {prof.mapping.layer_group[i] for i in layers if i in prof.mapping.layer_group}
        per_run = [prof.group_samples_us(prof.mapping.groups[g]) for g in sorted(groups)]
        n = min((len(s) for s in per_run), default=0)
        if n == 0:
            raise DataError(f"the profiler reported no node of {ref!r}")
        total = np.sum([s[:n] for s in per_run], axis=0) / 1e3
        labs = fusion_labels(prof.mapping, set(prof.node_samples_us)) if labels else None
        f = self.scale()  # the reference scale (1 without a reference)
        key = self.bench.add_profile(self.device, prof, labs, scale=f)
        p10, p90 = np.percentile(total, [10, 90])
        time_ms = sum(prof.group_ms(prof.mapping.groups[g]) for g in groups)
        return float(time_ms) * f, float(p10) * f, float(p90) * f, key

    def kernels_item(self, ref: str, suite: str) -> None:
        spec, graph = resolve_kernel(ref)
        kind = head_kind(graph, benchmarked_layers(spec, graph))
        self.store.add_network(graph)
        single = self.measured_median(ref)
        value = {"value": "raw" if self.value_ms is None else "corrected"}
        self.bench.add_layer_benchmark(
            self.device,
            ref,
            "single",
            single,
            protocol_key=self.key,
            suite=suite,
            kind=kind,
            extra=value,
        )
        if not benchmarked_layers(spec, graph):  # the session probe: nothing to profile
            return
        med, p10, p90, key = self.profile(ref, labels=suite == "multilayer")
        self.bench.add_layer_benchmark(
            self.device,
            ref,
            "profile",
            med,
            protocol_key=self.key,
            suite=suite,
            kind=kind,
            lower_ms=p10,
            upper_ms=p90,
            extra={"settings_key": key, **value},
        )

    def context_item(self, ref: str, suite: str = "context") -> None:
        """A generated network: end-to-end median and profiled kernels (with features).

        Also every ``kernel:`` benchmark at int8 (``suite`` names where it came from)."""
        from latlab.datasets.bench.profile import profile_network
        from latlab.datasets.bench.trace import fusion_labels
        from latlab.datasets.references import resolve

        graph = resolve(ref)
        self.store.add_network(graph)
        single = self.measured_median(ref)
        prof = profile_network(
            ref,
            threads=self.threads,
            runs=self.profile_runs,
            warmup=3,
            time_budget_s=0.6,
            timer=self.config.timer,
            precision=self.config.precision,
        )
        labels = fusion_labels(prof.mapping, set(prof.node_samples_us))
        # ``single`` is on the reference scale (paired); the profile's kernels are raw until
        # scaled by the reference's time just before them, so both share one scale
        f = self.scale()
        key = self.bench.add_profile(self.device, prof, labels, scale=f)
        kind = "network" if suite == "context" else _kernel_kind(ref)
        self.bench.add_layer_benchmark(
            self.device, ref, "single", single, protocol_key=self.key, suite=suite, kind=kind,
        )  # fmt: skip
        self.bench.add_layer_benchmark(
            self.device,
            ref,
            "profile",
            prof.kernels_ms * f,
            protocol_key=self.key,
            suite=suite,
            kind=kind,
            extra={
                "settings_key": key,
                "kernels": len(prof.kernels),
                "run_ms": prof.run_ms * f,
                "scale": f,
            },
        )

    def padding_item(self, ref: str) -> None:
        spec, graph = resolve_kernel(ref)
        kind = head_kind(graph, benchmarked_layers(spec, graph))
        padded_ref, pad_x, pad_y = padded_references(ref)
        refs = [padded_ref, pad_x] if pad_y == pad_x else [padded_ref, pad_x, pad_y]
        with_ref = self.value_ms is not None and self.config.reference is not None
        meter = LoadMeter()
        reference = str(self.config.reference) if with_ref else None
        samples = paired_samples(refs, self.config, reference=reference)
        load = meter.stop()
        # on the reference scale: each round's times / the reference's time in that round
        f = self.value_ms / samples.pop() if with_ref else 1.0  # type: ignore[operator]
        padded = samples[0] * f
        px = samples[1] * f
        py = samples[2] * f if len(samples) > 2 else px
        # per round: layer = padded - mean(padding-only); the two one-sided differences
        # (padded - pad_x, padded - pad_y) bound it when the padding costs differ by shape
        diff = padded - (px + py) / 2
        a, b = float(np.median(padded - px)), float(np.median(padded - py))
        self.store.add_network(graph)
        self.bench.add_layer_benchmark(
            self.device,
            ref,
            "padded",
            float(np.median(diff)),
            protocol_key=self.key,
            suite="padding",
            kind=kind,
            lower_ms=min(a, b),
            upper_ms=max(a, b),
            extra={
                "padded": padded_ref,
                "padding_x": pad_x,
                "padding_y": pad_y,
                "padded_ms": float(np.median(padded)),
                "padding_x_ms": float(np.median(px)),
                "padding_y_ms": float(np.median(py)),
                "rounds": len(padded),
                "diff_p10_ms": float(np.percentile(diff, 10)),
                "diff_p90_ms": float(np.percentile(diff, 90)),
                "timer": self.config.timer,
                "value": "corrected" if with_ref else "raw",
                "load": load,
            },
        )


def _kernel_kind(ref: str) -> str:
    spec, graph = resolve_kernel(ref)
    return head_kind(graph, benchmarked_layers(spec, graph))


def paired_samples(
    refs: list[str], config: MeasureConfig, *, reference: str | None = None
) -> list[np.ndarray]:
    """Time several networks in interleaved rounds (one run of each per round), in ms.

    Smart padding subtracts latencies of similar size; measured one after the other, a change
    of the machine's load between the two measurements lands in the difference. Interleaving
    the padded and padding-only models round by round exposes them to the same conditions,
    and the median of per-round differences ignores rounds a preemption hit. Follows the
    protocol's warm-up, repeat count, time budget (per model) and clock; the rounds are
    :func:`latlab.datasets.measure.rounds.time_rounds` (one run per block), the one
    implementation of interleaved timing that paired network measurements use too.

    Every network is prepared as every measurement is
    (:func:`~latlab.datasets.measure.protocol.prepare_network`): at the configuration's
    execution mode, inter-op threads, batch, threads and input shape (and precision, though
    the padding suite that calls this runs at fp32 only: :data:`PRECISION_SUITES`).
    ``reference`` (the drift-correction network, prepared with its own input) is timed last in
    each round; its samples are the last array.
    """
    from latlab.datasets.measure import get_backend
    from latlab.datasets.measure.protocol import TIMERS, prepare_network
    from latlab.datasets.measure.rounds import time_rounds, warm_up_rounds

    be = get_backend(config.backend)
    runs = [prepare_network(be, r, config) for r in refs]
    if reference is not None:
        runs.append(
            prepare_network(be, reference, config, input_shape=False, role="reference network")
        )
    # warm-up: at least min_warmup rounds and 0.1 s (allocations and caches settle)
    warm_up_rounds(runs, config.min_warmup, config.max_warmup, 0.1)
    rounds = time_rounds(
        runs,
        TIMERS[config.timer],
        max_rounds=config.repeats,
        min_rounds=config.min_repeats,
        budget_s=config.time_budget_s * len(runs),
    )
    return rounds.blocks_ms


def _probe_only(ref: str) -> bool:
    spec, graph = resolve_kernel(ref)
    return not benchmarked_layers(spec, graph)


def run_bench(
    suite: str,
    store: Store,
    device: str,
    *,
    count: int | None = None,
    seed: int = 0,
    threads: int = 1,
    config: MeasureConfig | None = None,
    profile_runs: int = PROFILE_RUNS,
    references: list[str] | None = None,
    progress: Callable[[BenchEvent], None] | None = None,
) -> BenchResult:
    """Measure a benchmark suite into ``store`` for ``device`` (resumable; see module doc).

    ``references`` overrides the suite's generated list (same handling). A benchmark that
    onnxruntime cannot run is logged and recorded in ``BenchResult.failed``, not fatal.
    """
    from latlab.datasets.measure import default_device_name, get_backend, machine_fingerprint

    cfg = config or BENCH_CONFIG
    if threads != cfg.threads:
        from dataclasses import replace

        cfg = replace(cfg, threads=threads)
    if references is not None:  # canonical references, so that the store recognises them
        refs = list(dict.fromkeys(canonical_reference(r) for r in references))
    else:
        refs = suite_references(suite, count, seed)
    if suite not in SUITES:
        raise DataError(f"unknown benchmark suite {suite!r} (known: {', '.join(SUITES)})")
    quantised = cfg.precision != "fp32"
    if quantised and suite not in PRECISION_SUITES:
        raise DataError(
            f"the {suite} suite runs at fp32 only (at {cfg.precision}: "
            f"{', '.join(PRECISION_SUITES)})"
        )
    be = get_backend(cfg.backend)
    device = device or default_device_name(cfg.backend, threads, precision=cfg.precision)
    store.add_device(device, backend=cfg.backend, fingerprint=machine_fingerprint(), info=be.info())
    runner = _Runner(store, device, cfg, threads, profile_runs)
    notify = progress or (lambda e: None)
    result = BenchResult(suite, device, refs)
    if suite == "padding":
        done = runner.bench.done(device, "padded", runner.key)
    else:
        profiled = runner.bench.done(device, "profile", runner.key)
        done = {
            r
            for r in runner.bench.done(device, "single", runner.key)
            if r in profiled or (r.startswith("kernel:") and _probe_only(r))
        }
    target = len(refs)
    if suite == "context" and references is None:
        target = default_count(suite) if count is None else count
    if cfg.reference is not None and (not done.issuperset(refs) or target > len(refs)):
        runner.setup_reference()
    notify(BenchEvent("start", 0, target))
    position = 0

    def run_items(items: list[str]) -> None:
        nonlocal position
        for i, ref in enumerate(items):
            position += 1
            if ref in done:
                result.skipped.append(ref)
                notify(BenchEvent("skipped", position, target, ref))
                continue
            try:
                if suite != "padding":  # paired groups (config.group): this and the next
                    runner.prefetch([r for r in items[i:] if r not in done])
                if suite == "padding":
                    runner.padding_item(ref)
                elif suite == "context" or quantised:  # every kernel of the quantised model
                    runner.context_item(ref, suite)
                else:
                    runner.kernels_item(ref, suite)
            except (DataError, MemoryError) as exc:
                result.failed[ref] = str(exc)
                log.warning("benchmark %s failed: %s", ref, exc)
            except MeasurementError as exc:  # a runtime refusing one configuration: not fatal
                result.failed[ref] = str(exc)
                log.warning("benchmark %s failed: %s", ref, exc)
            else:
                result.measured.append(ref)
                done.add(ref)
            notify(BenchEvent("done_item", position, target, ref))

    run_items(refs)
    if suite == "context" and references is None:
        _adaptive_rounds(runner, device, target, seed, result, run_items)
    notify(BenchEvent("finished", target, target))
    return result


def _context_done(runner: _Runner, device: str) -> set[str]:
    lb = runner.bench.layer_benchmarks(device)
    if lb.empty:
        return set()
    lb = lb[(lb["suite"] == "context") & (lb["method"] == "profile")]
    return set(lb["network"]) & runner.bench.done(device, "single", runner.key)


def _adaptive_rounds(
    runner: _Runner,
    device: str,
    target: int,
    seed: int,
    result: BenchResult,
    run_items: Callable[[list[str]], None],
) -> None:
    """Measure the rest of the context suite where the kernel data are most uncertain."""
    from latlab.datasets.bench.context import next_round
    from latlab.datasets.bench.export import kernel_rows

    round_size = max(4, target // 8)
    round_no = 0
    while round_no < 4 * target:
        have = _context_done(runner, device)
        want = min(round_size, target - len(have))
        if want <= 0:
            return
        rows = kernel_rows(runner.store, device)
        refs = next_round(
            have | set(result.failed),
            rows.to_dict(orient="records"),
            rows["time_us"].to_numpy(dtype=float),
            want,
            round_no,
            seed,
        )
        round_no += 1
        if not refs:
            continue
        result.references.extend(refs)
        run_items(refs)
