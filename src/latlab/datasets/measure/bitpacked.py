"""The ``bitpacked`` backend: binary networks run with real XNOR + popcount on 64-bit words.

onnxruntime and torch can only *emulate* a binary layer with a float Gemm/Conv of ±1 values;
their latency is that of the float network. This backend executes the binary layers the way
a BNN engine does, so that the XNOROP/LXNOROP model (:mod:`latlab.predictors.bnn`) can be
grounded in measurements on this CPU:

* activations binarised by ``Sign`` are bits (``1`` stands for −1, ``0`` for +1; ``Sign(0)``
  is +1), packed into ``uint64`` words along the fan-in with :func:`numpy.packbits`
  (a convolution first gathers each receptive field, ``im2col``, then packs it);
* a binary layer computes ``dot = K − 2·popcount(x XOR w)`` with :func:`numpy.bitwise_xor`
  and :func:`numpy.bitwise_count` over blocks sized to stay in cache;
* ``binary layer → BatchNormalization → Sign`` is fused into one integer threshold per output
  channel, derived from the float BN so that the result is *exactly* the float network's
  (see :func:`_thresholds`);
* full-precision layers (first layer, classifier, BN, pooling) run in float32 numpy, with the
  same code in the float reference.

:func:`reference_forward` evaluates the same network (same seeded parameters) with binary
layers computed as float64 dot products of ±1 values; the tests check that both agree exactly.

Why numpy rather than a hand-written kernel: numpy ≥ 2.0 has a vectorised popcount ufunc
(``bitwise_count``), so this stays a few dozen lines of well-tested library calls; the cost
structure it adds (an XOR pass, a popcount pass, a sum pass, im2col packing, Python dispatch
per layer) is what the host calibration of the LXNOROP model measures and fits.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from latlab.datasets.references import resolve
from latlab.encoders.binary import BINARY_OPS, fan_in, fused_tail, words
from latlab.encoders.ir import Layer, NetworkGraph
from latlab.errors import MeasurementError

WORD_BITS = 64
#: Bytes of the XOR/popcount scratch block: small enough to stay in L2.
BLOCK_BYTES = 1 << 19
_SUPPORTED = {
    "Gemm",
    "Conv",
    "BatchNormalization",
    "Sign",
    "Relu",
    "MaxPool",
    "Flatten",
    "Identity",
    "Dropout",
    *BINARY_OPS,
}

Params = dict[str, dict[str, np.ndarray]]


# --------------------------------------------------------------------------- parameters


def make_params(graph: NetworkGraph, seed: int = 0) -> Params:
    """Seeded parameters for every layer: ±1 int8 binary weights, float32 otherwise.

    BatchNormalization statistics after a binary layer are drawn on the scale of its integer
    output (mean ~ ±√K/2, variance ~ K) so that the thresholds fall inside the output range
    and the binarised activations are a mix of +1 and −1, as in a trained network. ``gamma``
    takes both signs, exercising both threshold directions.
    """
    rng = np.random.default_rng(seed)
    params: Params = {}
    producer_k: dict[str, int] = {}
    for layer in graph.layers:
        p: dict[str, np.ndarray] = {}
        if layer.op in BINARY_OPS:
            w = layer.weight_shapes[0]
            p["w"] = (rng.integers(0, 2, size=w, dtype=np.int8) * 2 - 1).astype(np.int8)
            producer_k[layer.outputs[0]] = fan_in(layer)
        elif layer.op in ("Gemm", "Conv"):
            w = layer.weight_shapes[0]
            fan = int(np.prod(w[1:]))
            p["w"] = (rng.standard_normal(w) / np.sqrt(fan)).astype(np.float32)
            if len(layer.weight_shapes) > 1:
                p["b"] = (0.1 * rng.standard_normal(layer.weight_shapes[1])).astype(np.float32)
        elif layer.op == "BatchNormalization":
            c = layer.weight_shapes[0][0]
            k = producer_k.get(layer.inputs[0], 0)
            spread = np.sqrt(k) if k else 1.0
            mean = 0.5 * spread * rng.standard_normal(c)
            var = (spread**2 if k else 1.0) * rng.uniform(0.5, 1.5, c)
            gamma = rng.standard_normal(c)
            eps = float(layer.attrs.get("epsilon", 1e-5))
            p["mean"] = mean.astype(np.float32)
            p["scale"] = (gamma / np.sqrt(var + eps)).astype(np.float32)
            p["beta"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        params[layer.name] = p
    return params


# --------------------------------------------------------------------------- shared float ops


def bn_apply(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """Inference BatchNormalization in float32: ``(x − mean)·scale + beta`` per channel (axis 1).

    One fixed sequence of correctly rounded float32 operations: the fused thresholds of the
    bit-packed path are derived from exactly this function.
    """
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x = x.astype(np.float32, copy=False)
    return (x - p["mean"].reshape(shape)) * p["scale"].reshape(shape) + p["beta"].reshape(shape)


def _pm(x: np.ndarray) -> np.ndarray:
    """±1 float32 values of a tensor (bits: 1 → −1, 0 → +1); floats pass through."""
    if x.dtype == np.uint8:
        return (1 - 2 * x.astype(np.int8)).astype(np.float32)
    return x


def _bits(x: np.ndarray) -> np.ndarray:
    """Bits of a tensor: ``Sign`` with Sign(0) = +1 (bit 0); bits pass through."""
    if x.dtype == np.uint8:
        return x
    return (x < 0).view(np.uint8)


def _pad2d(x: np.ndarray, pads: Any, value: float | int) -> np.ndarray:
    """Constant padding of the two spatial axes of NCHW (np.pad costs ~100 µs of Python)."""
    pt, pl, pb, pr = pads
    if not (pt or pl or pb or pr):
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + pt + pb, w + pl + pr), value, dtype=x.dtype)
    out[:, :, pt : pt + h, pl : pl + w] = x
    return out


def _im2col(x: np.ndarray, layer: Layer, pad_value: float | int) -> np.ndarray:
    """Receptive fields of a 4-D NCHW tensor as rows ``(N·Ho·Wo, C·kh·kw)`` (C, kh, kw order)."""
    kh, kw = layer.attrs["kernel"]
    sh, sw = layer.attrs.get("stride", (1, 1))
    dh, dw = layer.attrs.get("dilation", (1, 1))
    x = _pad2d(x, layer.attrs.get("pads", (0, 0, 0, 0)), pad_value)
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    win = sliding_window_view(x, (eh, ew), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    n, c, ho, wo = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)


def _to_nchw(rows: np.ndarray, layer: Layer) -> np.ndarray:
    n, o, ho, wo = layer.output_shape
    return np.ascontiguousarray(rows.reshape(n, ho, wo, o).transpose(0, 3, 1, 2))


def _fp_gemm(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    y = _pm(x) @ p["w"].T
    return y + p["b"] if "b" in p else y


def _fp_conv(x: np.ndarray, layer: Layer, p: dict[str, np.ndarray]) -> np.ndarray:
    if int(layer.attrs.get("groups", 1)) != 1:
        raise MeasurementError(
            f"the bitpacked backend runs groups=1 convolutions only (layer {layer.name!r})"
        )
    cols = _im2col(_pm(x), layer, 0.0)
    y = cols @ p["w"].reshape(p["w"].shape[0], -1).T
    if "b" in p:
        y += p["b"]
    return _to_nchw(y, layer)


def _maxpool(x: np.ndarray, layer: Layer) -> np.ndarray:
    """Max pooling; on bits (1 = −1) the max of ±1 values is the minimum of the bits.

    An element-wise min/max over the k·k strided views (one pass each) rather than a
    reduction over window axes, which numpy runs an order of magnitude slower.
    """
    if layer.attrs.get("ceil_mode"):
        raise MeasurementError(f"the bitpacked backend has no ceil-mode pooling ({layer.name!r})")
    kh, kw = layer.attrs["kernel"]
    sh, sw = layer.attrs.get("stride", (kh, kw))
    bits = x.dtype == np.uint8
    x = _pad2d(x, layer.attrs.get("pads", (0, 0, 0, 0)), 1 if bits else -np.inf)
    _, _, ho, wo = layer.output_shape
    reduce = np.minimum if bits else np.maximum
    out: np.ndarray | None = None
    for i in range(kh):
        for j in range(kw):
            view = x[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
            out = view.copy() if out is None else reduce(out, view, out=out)
    assert out is not None
    return out


# --------------------------------------------------------------------------- binary kernels


def pack_rows(bits: np.ndarray) -> np.ndarray:
    """Pack rows of bits ``(R, K)`` into ``(R, ⌈K/64⌉)`` uint64 words (padding bits are 0)."""
    packed = np.packbits(bits, axis=1)
    nbytes = words(bits.shape[1], WORD_BITS) * 8
    if packed.shape[1] != nbytes:
        full = np.zeros((packed.shape[0], nbytes), np.uint8)
        full[:, : packed.shape[1]] = packed
        packed = full
    return np.ascontiguousarray(packed).view(np.uint64)


def _thresholds(k: int, p: dict[str, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """Integer thresholds that make ``bit = (dot·sgn < thr)`` equal ``Sign(bn_apply(dot))``.

    ``dot`` takes the values ``−K, −K+2, …, K``. Every float32 step of :func:`bn_apply` is
    monotone (correct rounding preserves order), so ``bn_apply(d) ≥ 0`` is a step function of
    ``d``: non-decreasing when ``scale ≥ 0``, non-increasing otherwise. A vectorised bisection
    over the K+1 possible values finds the step of every channel with the very float32
    operations the reference uses, hence exact equality rather than a rounding-prone
    ``x ≥ mean − beta/scale``.
    """
    if p is None:  # Sign directly after the binary layer: bit = dot < 0
        return np.ones(1, np.int32), np.zeros(1, np.int32)
    mean, scale, beta = p["mean"], p["scale"], p["beta"]
    c = mean.shape[0]
    neg = scale < 0

    def q(j: np.ndarray) -> np.ndarray:
        d = (-k + 2 * j).astype(np.float32)
        ge = ((d - mean) * scale + beta) >= 0
        return np.where(neg, ~ge, ge)  # non-decreasing in j for every channel

    lo = np.zeros(c, np.int64)  # smallest j with q(j) true lies in [lo, hi]; hi = K+1: none
    hi = np.full(c, k + 1, np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        ok = q(np.minimum(mid, k))
        go_left = ok & (lo < hi)
        hi = np.where(go_left, mid, hi)
        lo = np.where(~ok & (lo < hi), mid + 1, lo)
    d_step = (-k + 2 * lo).astype(np.int64)  # first dot value where q holds (K+2 if none)
    # scale >= 0: bit (−1) iff dot < d_step.  scale < 0: bit iff bn < 0 iff dot >= d_step,
    # i.e. −dot < −d_step + 1.
    sgn = np.where(neg, -1, 1).astype(np.int32)
    thr = np.where(neg, -d_step + 1, d_step).astype(np.int32)
    return sgn, thr


@dataclass
class _BinaryLayer:
    """A prepared binary layer (optionally fused with the following BN and Sign)."""

    layer: Layer
    wpacked: np.ndarray  # (O, Kw) uint64
    k: int
    fused: bool
    sgn: np.ndarray = field(default_factory=lambda: np.ones(1, np.int32))
    thr: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int32))


class _PopcountKernel:
    """``pop[p, o] = Σ_w popcount(x[p, w] XOR w[o, w])`` in cache-sized blocks.

    Two loop orders, picked by shape (both measured on this machine at ~2.5-3 ns per word):
    with several rows (convolutions: one row per output position) or few words, a loop over
    the K/64 words updates a ``(rows, O)`` block of uint16 counters in place; with one row of
    many words (a wide fully connected layer at batch 1) the whole ``(O, K/64)`` XOR is
    counted and summed along the words (numpy's reduction over a short inner axis is slow). Blocks
    are split over ``threads`` (numpy releases the GIL inside ufuncs).
    """

    def __init__(self, threads: int) -> None:
        self.threads = max(1, int(threads))
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    @staticmethod
    def _rows_block(xt: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
        """``xt``: (Kw, rows) transposed packed inputs; updates ``out`` (rows, O)."""
        kw, n = xt.shape
        o = wp.shape[0]
        buf = np.empty((n, o), np.uint64)
        cnt = np.empty((n, o), np.uint8)
        acc = np.zeros((n, o), np.uint16)  # counts <= 64·Kw < 65536 for K < 65536 bits
        for j in range(kw):
            np.bitwise_xor(xt[j][:, None], wp[None, :, j], out=buf)
            np.bitwise_count(buf, out=cnt)
            np.add(acc, cnt, out=acc)
        out[...] = acc

    @staticmethod
    def _cols_block(xp: np.ndarray, wp: np.ndarray, out: np.ndarray) -> None:
        tmp = np.bitwise_xor(xp[:, None, :], wp[None, :, :])
        out[...] = np.bitwise_count(tmp).sum(axis=2, dtype=np.int32)

    def __call__(self, xp: np.ndarray, wp: np.ndarray) -> np.ndarray:
        rows, kw = xp.shape
        o = wp.shape[0]
        out = np.empty((rows, o), np.int32)
        tasks: list[Callable[[], None]] = []
        if (rows >= 4 or kw <= 8) and kw * 64 < 65536:
            xt = np.ascontiguousarray(xp.T)
            step = max(1, (BLOCK_BYTES // 2) // (o * 8))
            for r in range(0, rows, step):
                rs = slice(r, min(r + step, rows))
                tasks.append(functools.partial(self._rows_block, xt[:, rs], wp, out[rs]))
        else:
            step = max(1, BLOCK_BYTES // (kw * 8 * rows))
            for c in range(0, o, step):
                cs = slice(c, min(c + step, o))
                tasks.append(functools.partial(self._cols_block, xp, wp[cs], out[:, cs]))
        if self.pool is None or len(tasks) == 1:
            for task in tasks:
                task()
        else:
            for fut in [self.pool.submit(task) for task in tasks]:
                fut.result()
        return out


# --------------------------------------------------------------------------- the program


class BinaryProgram:
    """A network compiled for the bit-packed backend (``mode='bitpacked'``) or for the float
    reference (``mode='float'``); :meth:`run` returns the output tensors."""

    def __init__(
        self, graph: NetworkGraph, params: Params, mode: str = "bitpacked", threads: int = 1
    ) -> None:
        if mode not in ("bitpacked", "float"):
            raise ValueError(f"mode must be 'bitpacked' or 'float', got {mode!r}")
        self.graph = graph
        self.params = params
        self.mode = mode
        self.kernel = _PopcountKernel(threads)
        self.steps: list[tuple[Callable[[dict[str, np.ndarray]], None], tuple[str, ...]]] = []
        self._compile()

    # .................................................................. compilation

    def _compile(self) -> None:
        g = self.graph
        for layer in g.layers:
            if layer.op not in _SUPPORTED:
                raise MeasurementError(
                    f"the bitpacked backend cannot run op {layer.op!r} (layer {layer.name!r} of "
                    f"{g.reference}); it runs binary MLPs/CNNs: {', '.join(sorted(_SUPPORTED))}"
                )
        skip: set[int] = set()
        for i, layer in enumerate(g.layers):
            if i in skip:
                continue
            tail = fused_tail(g, i) if self.mode == "bitpacked" else ()
            skip.update(tail)
            bn = next((j for j in tail if g.layers[j].op == "BatchNormalization"), None)
            sg = next((j for j in tail if g.layers[j].op == "Sign"), None)
            if layer.op in BINARY_OPS and self.mode == "bitpacked":
                self.steps.append(self._binary_step(layer, bn, sg))
            elif tail:
                fns = [self._plain_step(g.layers[j]) for j in (i, *tail)]
                self.steps.append((_chain_steps(fns), layer.inputs))
            else:
                self.steps.append((self._plain_step(layer), layer.inputs))
        self._last_use = self._liveness()

    def _binary_step(
        self, layer: Layer, bn: int | None, sg: int | None
    ) -> tuple[Callable[[dict[str, np.ndarray]], None], tuple[str, ...]]:
        w = self.params[layer.name]["w"]
        k = fan_in(layer)
        wpacked = pack_rows((w.reshape(w.shape[0], -1) < 0).view(np.uint8))
        fused = sg is not None
        prep = _BinaryLayer(layer, wpacked, k, fused)
        out_name = layer.outputs[0]
        if fused:
            assert sg is not None
            bn_p = self.params[self.graph.layers[bn].name] if bn is not None else None
            prep.sgn, prep.thr = _thresholds(k, bn_p)
            out_name = self.graph.layers[sg].outputs[0]
        conv = layer.op == "BinaryConv"
        kernel = self.kernel
        src = layer.inputs[0]

        def step(env: dict[str, np.ndarray]) -> None:
            xb = _bits(env[src])
            rows = _im2col(xb, layer, 0) if conv else xb.reshape(xb.shape[0], -1)
            pop = kernel(pack_rows(rows), prep.wpacked)
            dot = k - 2 * pop
            if prep.fused:
                res = (dot * prep.sgn < prep.thr).view(np.uint8)
            else:
                res = dot.astype(np.float32)
            env[out_name] = _to_nchw(res, layer) if conv else res

        return step, (src,)

    def _plain_step(self, layer: Layer) -> Callable[[dict[str, np.ndarray]], None]:
        p = self.params.get(layer.name, {})
        src = layer.inputs[0]
        out = layer.outputs[0]
        op = layer.op
        if op == "BinaryGemm" or op == "BinaryConv":  # float reference
            w64 = p["w"].astype(np.float64)
            if op == "BinaryGemm":
                return lambda env: env.__setitem__(
                    out, (_pm(_bits(env[src])).astype(np.float64) @ w64.T).astype(np.float32)
                )
            return lambda env: env.__setitem__(
                out, _reference_binary_conv(_bits(env[src]), layer, w64)
            )
        if op == "Gemm":
            return lambda env: env.__setitem__(out, _fp_gemm(env[src], p))
        if op == "Conv":
            return lambda env: env.__setitem__(out, _fp_conv(env[src], layer, p))
        if op == "BatchNormalization":
            return lambda env: env.__setitem__(out, bn_apply(_pm(env[src]), p))
        if op == "Sign":
            return lambda env: env.__setitem__(out, _bits(env[src]))
        if op == "Relu":
            return lambda env: env.__setitem__(out, np.maximum(_pm(env[src]), 0))
        if op == "MaxPool":
            return lambda env: env.__setitem__(out, _maxpool(env[src], layer))
        if op == "Flatten":
            shape = layer.output_shape
            return lambda env: env.__setitem__(out, env[src].reshape(shape))
        return lambda env: env.__setitem__(out, env[src])  # Identity, Dropout

    def _liveness(self) -> list[tuple[str, ...]]:
        """Per step, the tensors no later step reads (freed after it, like an engine's arena)."""
        keep = set(self.graph.outputs)
        last: dict[str, int] = {}
        for s, (_fn, ins) in enumerate(self.steps):
            for t in ins:
                last[t] = s
        free: list[list[str]] = [[] for _ in self.steps]
        for t, s in last.items():
            if t not in keep:
                free[s].append(t)
        return [tuple(f) for f in free]

    # .................................................................. running

    def example_input(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded standard-normal float32 inputs of the graph's input shapes."""
        rng = np.random.default_rng(seed)
        return {
            name: rng.standard_normal(shape, dtype=np.float32)
            for name, shape in self.graph.inputs.items()
        }

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute once; returns the graph outputs (bits as uint8 where an output is binary).

        The BLAS used by the float layers is limited to ``threads`` for the call: OpenBLAS
        spinning up threads on a busy machine costs milliseconds per small matmul.
        """
        env = dict(inputs)
        with _blas_controller().limit(limits=self.kernel.threads, user_api="blas"):
            for (fn, _ins), free in zip(self.steps, self._last_use, strict=True):
                fn(env)
                for t in free:
                    env.pop(t, None)
        return {name: env[name] for name in self.graph.outputs}


def _chain_steps(
    fns: list[Callable[[dict[str, np.ndarray]], None]],
) -> Callable[[dict[str, np.ndarray]], None]:
    """One step running a float layer and its BN and Sign (the same operations, one dispatch)."""

    def step(env: dict[str, np.ndarray]) -> None:
        for fn in fns:
            fn(env)

    return step


@functools.cache
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController  # a scikit-learn dependency

    return ThreadpoolController()


def _reference_binary_conv(xb: np.ndarray, layer: Layer, w64: np.ndarray) -> np.ndarray:
    """Float64 ±1 convolution by shift-and-accumulate (independent of im2col and packing)."""
    kh, kw = layer.attrs["kernel"]
    sh, sw = layer.attrs.get("stride", (1, 1))
    dh, dw = layer.attrs.get("dilation", (1, 1))
    pt, pl, pb, pr = layer.attrs.get("pads", (0, 0, 0, 0))
    x = np.pad(
        _pm(xb).astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=1.0
    )
    n, _, ho, wo = layer.output_shape
    out = np.zeros((n, w64.shape[0], ho, wo))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            patch = x[:, :, rows, cols]
            out += np.einsum("oc,nchw->nohw", w64[:, :, i, j], patch)
    return out.astype(np.float32)


# --------------------------------------------------------------------------- public API


def compile_network(
    network: str | NetworkGraph,
    *,
    batch: int = 1,
    seed: int = 0,
    threads: int = 1,
    mode: str = "bitpacked",
) -> BinaryProgram:
    """Compile a network (reference or graph) with seeded parameters for ``mode``."""
    graph = resolve(network, batch=batch)
    return BinaryProgram(graph, make_params(graph, seed), mode=mode, threads=threads)


def reference_forward(
    network: str | NetworkGraph,
    inputs: dict[str, np.ndarray],
    *,
    batch: int = 1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The float reference of the same ±1 network (same seeded parameters)."""
    return compile_network(network, batch=batch, seed=seed, mode="float").run(inputs)


class BitpackedBackend:
    """Measurement backend: one bit-packed inference on fixed seeded inputs."""

    name = "bitpacked"

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "numpy": np.__version__,
            "word_bits": WORD_BITS,
            "popcount": "numpy.bitwise_count",
            "machine": platform.machine(),
        }

    def prepare(self, network: str | NetworkGraph, batch: int, threads: int) -> Callable[[], None]:
        program = compile_network(network, batch=batch, threads=threads)
        inputs = program.example_input()
        program.run(inputs)  # fail early (and warm up) rather than inside the timing loop

        def infer() -> None:
            program.run(inputs)

        return infer
