"""Calibrating the LXNOROP model of this machine from bit-packed micro-benchmarks.

The datasheet constants of :func:`~latlab.predictors.bnn.targets.detect_host` describe ideal
instruction streams; the ``bitpacked`` backend is numpy code with its own passes over memory
and a Python dispatch per layer. Calibration measures that reality: it times a suite of small
networks, each isolating one term of the model (single binary FC and convolution layers of
varied fan-in, width and resolution; full-precision Gemm and Conv layers; BN/Sign/pooling
chains; deep chains of tiny layers), plus a few small whole BNNs (layers run in composition
evict each other's data from the caches, which isolated layers never see), and fits the
clock constants of

    clocks = N_XNOROPs·Clocks_(L)XNOROP + im2col·c_pack + outputs_bin·c_threshold
             + MACs_fp·c_mac + bytes_fp·c_wbyte + FLOPs_other·c_flop + layers·c_layer
             + c_inference

by non-negative least squares on *relative* residuals (each row divided by its measured
clocks, so that a 0.1 ms network weighs as much as a 10 ms one). The XNOROP and weight-byte
terms are fitted twice, for networks whose weights fit in the L2 cache and for those that
stream them from memory: the first gives ``Clocks_XNOROP`` (operands at hand), the second
``Clocks_LXNOROP``, and ``Speed_T = (Clocks_LXNOROP − Clocks_XNOROP)/2`` is the fetch cost
of a word from main memory (see :meth:`~latlab.predictors.bnn.targets.Target.lxnorop_for`).

Timing comes from a ``time_fn(network) -> ms`` callable so that the measurement protocol of
:mod:`latlab.datasets.measure` can be plugged in; :func:`bitpacked_time_ms` is a minimal
stand-in (see its docstring).
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from latlab.datasets.spaces.bnn import build_bnn_cnn, build_bnn_fcnn, parse_bnn_cnn
from latlab.encoders.binary import binary_conv, binary_gemm, sign
from latlab.encoders.builder import NetBuilder
from latlab.encoders.ir import NetworkGraph
from latlab.errors import DataError
from latlab.predictors.bnn.model import count_network
from latlab.predictors.bnn.targets import Target, detect_host, host_cache_bytes

log = logging.getLogger(__name__)

TimeFn = Callable[[NetworkGraph], float]
Progress = Callable[[int, int, str], None]

#: Names of the fitted constants, in the column order of :func:`features`.
TERMS: tuple[str, ...] = (
    "xnorop_cache", "lxnorop_memory", "pack", "threshold", "mac", "cache_weight_byte",
    "weight_byte", "flop", "layer", "inference",
)  # fmt: skip


# --------------------------------------------------------------------------- timing


def bitpacked_time_ms(
    network: NetworkGraph | str,
    *,
    threads: int = 1,
    clock: str = "auto",
    min_time_s: float = 0.15,
    min_repeats: int = 7,
    max_repeats: int = 200,
) -> float:
    """Median latency (ms) of one bit-packed inference, taken with latlab's protocol.

    ``clock``: ``"wall"``, ``"thread"`` (the calling thread's CPU time: time stolen by other
    processes on a shared machine is not counted; needs one thread) or ``"auto"`` (thread with
    one thread, wall otherwise).
    """
    from latlab.datasets.measure.protocol import MeasureConfig, measure

    if clock == "auto":
        clock = "thread" if threads == 1 else "wall"
    if clock not in ("wall", "thread"):
        raise DataError(f"unknown clock {clock!r}: use 'auto', 'wall' or 'thread'")
    if clock == "thread" and threads != 1:
        raise DataError(f"the thread CPU clock needs threads=1 (got {threads}): use clock='wall'")
    cfg = MeasureConfig(
        backend="bitpacked",
        threads=threads,
        timer=clock,
        min_warmup=2,
        repeats=max_repeats,
        min_repeats=min_repeats,
        time_budget_s=min_time_s,
        max_warmup_s=min_time_s,
    )
    return measure(network, cfg).median_ms


def measure_rounds(
    networks: Sequence[NetworkGraph | str],
    time_fn: Callable[[Any], float],
    *,
    rounds: int = 3,
    seed: int = 0,
    reduce: str = "median",
    progress: Progress | None = None,
) -> np.ndarray:
    """Per-network figure over ``rounds`` passes of ``time_fn`` (ms), each pass in a new
    seeded random order (decorrelates the networks from drifts in the machine's load).

    ``reduce``: ``"median"`` of the passes, or ``"min"``: the least disturbed pass, the
    steadier estimate on a machine shared with other work (both agree on an idle machine).
    """
    if rounds < 1:
        raise DataError(f"rounds must be >= 1, got {rounds}")
    if reduce not in ("median", "min"):
        raise DataError(f"reduce must be 'median' or 'min', got {reduce!r}")
    rng = np.random.default_rng(seed)
    total = rounds * len(networks)
    times = np.empty((rounds, len(networks)))
    for r in range(rounds):
        for j, i in enumerate(rng.permutation(len(networks))):
            net = networks[i]
            if progress is not None:
                ref = net if isinstance(net, str) else net.reference
                progress(r * len(networks) + j, total, ref)
            times[r, i] = float(time_fn(net))
    if progress is not None:
        progress(total, total, "done")
    return np.median(times, axis=0) if reduce == "median" else times.min(axis=0)


# --------------------------------------------------------------------------- the suite


def _binfc(k: int, o: int) -> NetworkGraph:
    b = NetBuilder(f"bnn-bench:binfc-{k}-{o}", (1, k), meta={"family": "bnn-bench"})
    sign(b, b.bn(binary_gemm(b, sign(b, b.input), o)))
    return b.build()


def _binconv(c: int, hw: int, o: int, k: int) -> NetworkGraph:
    b = NetBuilder(
        f"bnn-bench:binconv-{c}x{hw}-{o}k{k}", (1, c, hw, hw), meta={"family": "bnn-bench"}
    )
    sign(b, b.bn(binary_conv(b, sign(b, b.input), o, k)))
    return b.build()


def _fc(k: int, o: int) -> NetworkGraph:
    b = NetBuilder(f"bnn-bench:fc-{k}-{o}", (1, k), meta={"family": "bnn-bench"})
    b.gemm(b.input, o)
    return b.build()


def _conv(c: int, hw: int, o: int, k: int) -> NetworkGraph:
    b = NetBuilder(f"bnn-bench:conv-{c}x{hw}-{o}k{k}", (1, c, hw, hw), meta={"family": "bnn-bench"})
    b.conv(b.input, o, k)
    return b.build()


def _eltwise(c: int, hw: int) -> NetworkGraph:
    b = NetBuilder(f"bnn-bench:bnsignpool-{c}x{hw}", (1, c, hw, hw), meta={"family": "bnn-bench"})
    b.maxpool(sign(b, b.bn(b.input)), 2, 2)
    return b.build()


def _chain(depth: int, width: int = 32) -> NetworkGraph:
    b = NetBuilder(f"bnn-bench:chain-{depth}x{width}", (1, width), meta={"family": "bnn-bench"})
    x = sign(b, b.input)
    for _ in range(depth):
        x = sign(b, b.bn(binary_gemm(b, x, width)))
    return b.build()


def _mlp(widths: tuple[int, ...]) -> NetworkGraph:
    g = build_bnn_fcnn(widths, name="bnn-bench:mlp-" + "-".join(map(str, widths)))
    g.meta["role"] = "network"
    return g


def _cnn(body: str) -> NetworkGraph:
    g = build_bnn_cnn(parse_bnn_cnn(body), name=f"bnn-bench:cnn-{body}")
    g.meta["role"] = "network"
    return g


def benchmark_suite(quick: bool = False) -> list[NetworkGraph]:
    """The calibration networks (see the module docstring); none is a validation network."""
    nets: list[NetworkGraph] = []
    # whole small BNNs: layers in composition evict each other's data from the caches
    nets += [_mlp((512, 1024, 1024, 10)), _mlp((128, 384, 384, 384, 10))]
    nets += [_cnn("1x16x16-c16-c32-p-f64-10"), _cnn("3x24x24-c32-c64-p-c64-p-f128-10")]
    if quick:
        nets += [_binfc(k, o) for k, o in ((256, 256), (2048, 1024), (8192, 512), (1024, 4096))]
        nets += [_binfc(8192, 4096), _binfc(4096, 8192)]
        nets += [_binconv(c, hw, o, 3) for c, hw, o in ((32, 16, 32), (64, 16, 128), (128, 8, 128))]
        nets += [_fc(1024, 1024), _fc(256, 256), _fc(4096, 1024), _conv(3, 32, 32, 3)]
        nets += [_conv(1, 28, 32, 3), _binconv(64, 32, 64, 1)]
        nets += [_eltwise(64, 16), _chain(2), _chain(12)]
        return nets
    for k in (128, 512, 2048, 8192):
        for o in (64, 256, 1024, 4096):
            nets.append(_binfc(k, o))
    for k, o in ((16384, 2048), (4096, 8192), (8192, 8192), (32768, 1024)):
        nets.append(_binfc(k, o))  # weights of 4-8 MiB: beyond a CPU's L2
    for c, hw, o, k in (
        (16, 32, 32, 3), (32, 32, 64, 3), (64, 16, 64, 3), (64, 16, 128, 3), (128, 16, 128, 3),
        (128, 8, 256, 3), (256, 8, 256, 3), (64, 32, 64, 1), (256, 16, 128, 1), (32, 16, 64, 5),
        (512, 4, 512, 3), (64, 8, 32, 3),
    ):  # fmt: skip
        nets.append(_binconv(c, hw, o, k))
    for k, o in ((256, 256), (1024, 1024), (4096, 1024), (784, 512), (3072, 2048)):
        nets.append(_fc(k, o))
    for c, hw, o, k in ((3, 32, 64, 3), (1, 28, 32, 3), (3, 32, 128, 3), (3, 64, 32, 5)):
        nets.append(_conv(c, hw, o, k))
    for c, hw in ((16, 16), (64, 32), (128, 16)):
        nets.append(_eltwise(c, hw))
    for depth in (1, 4, 16, 32):
        nets.append(_chain(depth))
    nets += [_mlp((1024, 2048, 2048, 100)), _mlp((2048, 4096, 4096, 10))]
    nets += [_cnn("3x32x32-c48-c96-p-c192-p-f384-10"), _cnn("1x32x32-c32k5-p-c64-p-f256-10")]
    return nets


# --------------------------------------------------------------------------- fitting


def effective_cache_bytes() -> int | None:
    """Half of this CPU's L2 (None when sysfs does not say): see :func:`calibrate`."""
    l2 = host_cache_bytes(2)
    return l2 // 2 if l2 else None


def features(
    network: NetworkGraph | str, cache_bytes: int | None, bus_width: int = 64
) -> np.ndarray:
    """The model's terms for one network (column order :data:`TERMS`).

    XNOROPs and full-precision weight bytes go to the cache column when all the network's
    weights fit in ``cache_bytes`` (see :meth:`Target.lxnorop_for`), else to the memory one.
    ``bus_width`` is 64 for the bit-packed backend (uint64 words).
    """
    c = count_network(network, bus_width)
    near = 1.0 if cache_bytes is not None and c.weights_bytes <= cache_bytes else 0.0
    return np.array(
        [
            c.xnorops * near,
            c.xnorops * (1 - near),
            c.im2col,
            c.binary_outputs,
            c.fp_macs,
            c.fp_weight_bytes * near,
            c.fp_weight_bytes * (1 - near),
            c.other_flops,
            c.layers,
            1.0,
        ],
        dtype=float,
    )


def fit_clocks(x: np.ndarray, clocks: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Non-negative least squares on relative residuals: ``min Σ w_i·((x_i·c − y_i)/y_i)²``.

    Columns that are zero for every row get 0 (nothing to learn them from).
    """
    from scipy.optimize import nnls

    y = np.asarray(clocks, dtype=float)
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise DataError("calibration timings must be finite and > 0 ms")
    sw = np.ones(len(y)) if weights is None else np.sqrt(np.asarray(weights, dtype=float))
    a = np.asarray(x, dtype=float) / y[:, None] * sw[:, None]
    used = np.any(a != 0, axis=0)
    scale = np.where(used, np.abs(a).max(axis=0), 1.0)  # column scaling for conditioning
    coef = np.zeros(a.shape[1])
    sol, _ = nnls(a[:, used] / scale[used], sw, maxiter=50 * a.shape[1])
    coef[used] = sol / scale[used]
    return coef


def target_from_fit(host: Target, coef: np.ndarray, cache_bytes: int | None, **kw: Any) -> Target:
    """The host target carrying fitted constants (column order :data:`TERMS`).

    ``Clocks_XNOROP`` is the XNOROP cost with the weights in cache (their fetch is then as
    good as free: ``cache_speed_clocks = 0``); ``Speed_T = (Clocks_LXNOROP − Clocks_XNOROP)/2``
    is what a model whose weights stream from main memory pays on top. A fit without one of
    the two regimes falls back on the other (speed 0).
    """
    near, far = float(coef[0]), float(coef[1])
    if near <= 0 and far <= 0:
        raise DataError("calibration needs binary benchmarks (no XNOROP cost could be fitted)")
    xnorop = near if near > 0 else far
    lxnorop = far if far > 0 else near
    return replace(
        host,
        clocks_xnor=0.0,  # only their fitted sum is known
        clocks_popcount=0.0,
        clocks_accumulate=0.0,
        xnorop_override=xnorop,
        speed_clocks=max(0.0, (lxnorop - xnorop) / 2),
        cache_bytes=cache_bytes,
        cache_speed_clocks=0.0,
        clocks_pack=float(coef[2]),
        clocks_threshold=float(coef[3]),
        clocks_mac=float(coef[4]),
        clocks_cache_weight_byte=float(coef[5]) if cache_bytes is not None else None,
        clocks_weight_byte=float(coef[6]),
        clocks_flop=float(coef[7]),
        clocks_layer=float(coef[8]),
        clocks_inference=float(coef[9]),
        **kw,
    )


def composition_weights(networks: Sequence[NetworkGraph]) -> np.ndarray:
    """Fit weights giving the whole-network benchmarks (``meta['role'] == 'network'``) as much
    total weight as all the isolated layers together.

    Isolated layers identify the terms; whole networks anchor how the terms add up in
    composition (layers evict each other's data; a layer rarely runs twice in a row), which
    the isolated benchmarks, each repeated back to back, under-state by 10-30 % here.
    """
    whole = np.array([n.meta.get("role") == "network" for n in networks])
    w = np.ones(len(networks))
    if whole.any() and (~whole).any():
        w[whole] = (~whole).sum() / whole.sum()
    return w


@dataclass(frozen=True)
class Calibration:
    """A fitted host target and the measurements it was fitted on."""

    target: Target
    rows: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target.to_dict(), "rows": self.rows}


def calibrate(
    time_fn: TimeFn | None = None,
    *,
    quick: bool = False,
    threads: int = 1,
    networks: Sequence[NetworkGraph] | None = None,
    name: str = "host-calibrated",
    rounds: int = 3,
    clock: str = "auto",
    cache_bytes: int | str | None = "detect",
    progress: Progress | None = None,
) -> Calibration:
    """Measure the benchmark suite with ``time_fn`` and fit this host's constants.

    ``time_fn(network) -> ms`` defaults to :func:`bitpacked_time_ms` with ``threads`` and
    ``clock``; the fitted target uses ``threads`` cores at the detected frequency
    (CP = threads·f). The suite is timed ``rounds`` times, each pass in a new random order, and
    each network keeps its median, so that a burst of load from other processes spreads over
    all networks instead of biasing one. ``cache_bytes``: the cache level that holds small
    models' weights (``"detect"``: half of this CPU's L2 -- the share a model's weights keep
    next to activations, scratch buffers and the interpreter's own data; None: one memory
    level).
    """
    nets = list(networks) if networks is not None else benchmark_suite(quick)
    if len(nets) < len(TERMS):
        raise DataError(f"calibration needs at least {len(TERMS)} networks, got {len(nets)}")
    cache = effective_cache_bytes() if cache_bytes == "detect" else cache_bytes
    if cache is not None and not isinstance(cache, int):
        raise DataError(f"cache_bytes must be an integer, None or 'detect', got {cache_bytes!r}")
    time_fn_given = time_fn
    if time_fn is None:

        def time_fn(net: NetworkGraph) -> float:
            return bitpacked_time_ms(net, threads=threads, clock=clock)

    host = detect_host(cores=threads)
    t_ms = measure_rounds(nets, time_fn, rounds=rounds, progress=progress)
    x = np.stack([features(n, cache) for n in nets])
    y = t_ms * 1e-3 * host.cp_hz
    coef = fit_clocks(x, y, composition_weights(nets))
    pred = x @ coef
    rel = np.abs(pred - y) / y
    rows = [
        {
            "network": n.reference,
            "measured_ms": float(t),
            "fitted_ms": float(p / host.cp_hz * 1e3),
            "weights_in_cache": cache is not None and count_network(n, 64).weights_bytes <= cache,
        }
        for n, t, p in zip(nets, t_ms, pred, strict=True)
    ]
    from latlab.datasets.measure.bitpacked import BitpackedBackend

    target = target_from_fit(
        host,
        coef,
        cache,
        name=name,
        title=host.title + ", calibrated",
        source="latlab bnn calibrate: bit-packed micro-benchmarks on this machine",
        notes=(
            "clocks fitted by NNLS on relative residuals; xnorop = XNOROP cost with the "
            "weights in cache, speed_clocks = (LXNOROP cost from main memory - xnorop)/2"
        ),
        calibration={
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "benchmarks": len(nets),
            "threads": threads,
            "backend": BitpackedBackend().info(),
            "fit_median_rel_error": float(np.median(rel)),
            "fit_max_rel_error": float(np.max(rel)),
            "quick": quick,
            "rounds": rounds,
            "clock": clock if time_fn_given is None else "time_fn",
        },
    )
    return Calibration(target, rows)
