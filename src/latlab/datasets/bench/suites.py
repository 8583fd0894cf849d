"""Benchmark suites: which ``kernel:`` networks a campaign measures (ANNETTE's generator).

* :func:`kernel_suite` -- single-layer micro-kernels of every layer type the layer models
  cover: one-parameter **sweeps** (``h=w``, ``c``, ``f``, ``k``, stride varied one at a time
  around a few base points, with channel counts on and off multiples of the SIMD width so the
  refined roofline can see the quantisation steps) and **random configurations** (``h, w`` in
  [7, 224], ``c, f`` in [1, 2048] log-uniform -- three times in four rounded to a multiple of 8,
  because onnxruntime takes its blocked-layout fast path only for channel counts divisible by 4
  and networks use such counts -- ``k`` in {1, 3, 5, 7}, stride in {1, 2}).
  The transformer types (``linear``, ``bmm``, ``softmax``, ``ln``, ``skipln``, ``rmsnorm``,
  ``gelu``,
  ``embed``, ``heads``, ``merge``, ``transpose``, ``reshape``) sweep and draw the shapes of
  real networks instead: tokens 16-1024, widths 64-4096, heads 1-32, head dims 16-128.
  Configurations whose cost exceeds :data:`MAX_FLOPS` or whose tensors exceed
  :data:`MAX_ELEMENTS` are skipped (they would take seconds each without teaching the models
  anything the cheaper points do not: throughput saturates long before).
* :func:`multilayer_suite` -- short chains (conv->BN->ReLU, conv->pool, conv->add,
  depthwise->pointwise, ...; and transformer chains: linear->GELU, residual add->LayerNorm,
  Q·Kᵀ->scale->softmax, ...) whose fusion the mapping model learns, each between two padding
  layers so that it runs in the layout context of a network.
* :data:`SESSION_PROBE` -- the cheapest possible network (one element through the padding
  layer): its latency is the per-inference overhead of a session run.

The suites are deterministic for a (count, seed) pair, so a campaign re-run with the same
arguments resumes on the same list.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from latlab.datasets.bench.kernels import ACTIVATIONS, kernel_reference, resolve_kernel
from latlab.errors import DataError

#: Skip benchmark configurations above this many FLOPs (about 25 ms on one AVX-512 core).
MAX_FLOPS = 4e9
#: Skip configurations whose activations (inputs + outputs) or weights exceed this many elements.
MAX_ELEMENTS = 1 << 24
#: Fully connected layers may hold more weights (the classifiers of VGG and AlexNet: up to
#: 25088 x 4096, 411 MB), since a GEMV's time is its weight traffic.
MAX_FC_WEIGHTS = 1 << 27
#: The network whose latency is the session overhead (one element, one MaxPool 1x1).
SESSION_PROBE = "kernel:padding?c=1"

#: Default number of single-layer configurations: 19-190 points per CNN layer type and 7-51
#: per transformer type (types under the layer models' 10 points -- transpose, reshape -- get
#: a roofline; see docs/layer_models.md for the timing).
DEFAULT_KERNEL_COUNT = 900
#: Default number of multi-layer benchmarks (fusion labels for the mapping model).
DEFAULT_MULTILAYER_COUNT = 160

_H = (7, 8, 13, 14, 15, 17, 20, 28, 32, 35, 42, 56, 64, 84, 112, 150, 224)
_C = (
    1, 3, 8, 12, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 96, 112, 128, 144, 160, 192, 240,
    256, 320, 384, 480, 512, 640, 768, 1024, 1536, 2048,
)  # fmt: skip
_K = (1, 3, 5, 7)
#: Channels per group of grouped convolutions (ResNeXt's 4 and 8, RegNet's 8-112).
_GROUP_WIDTHS = (4, 8, 8, 16, 24, 24, 32, 48, 56, 64, 112)
_S = (1, 2)

# Layer type -> (ops chain, base points, swept keys, share of the random configurations).
_TYPES: dict[str, tuple[str, list[dict[str, int]], tuple[str, ...], float]] = {
    "conv": (
        "conv",
        [
            {"h": 56, "c": 64, "f": 64, "k": 3, "s": 1},
            {"h": 14, "c": 256, "f": 256, "k": 1, "s": 1},
            {"h": 28, "c": 128, "f": 128, "k": 3, "s": 1},
            {"h": 28, "c": 40, "f": 120, "k": 1, "s": 1},
        ],
        ("h", "c", "f", "k", "s"),
        0.34,
    ),
    "dwconv": (
        "dwconv",
        [
            {"h": 56, "c": 64, "k": 3, "s": 1},
            {"h": 14, "c": 512, "k": 3, "s": 1},
            {"h": 28, "c": 120, "k": 5, "s": 1},
        ],
        ("h", "c", "k", "s"),
        0.12,
    ),
    # grouped 3x3 convolutions with their fused ReLU, at the group widths of ResNeXt (4-8) and
    # RegNet (8-112, 24 and 48 among them): whether onnxruntime runs one in its blocked NCHWc
    # layout or as a plain FusedConv depends on the group width, and the plain one is several
    # times slower per FLOP; the in-context blocks alone held a dozen such kernels
    "gconv": (
        "conv+relu",
        [
            {"h": 56, "c": 128, "f": 128, "k": 3, "s": 1, "g": 32},
            {"h": 14, "c": 336, "f": 336, "k": 3, "s": 1, "g": 14},
            {"h": 28, "c": 192, "f": 192, "k": 3, "s": 1, "g": 8},
        ],
        ("h", "g", "s"),
        0.15,
    ),
    "fc": (
        "fc",
        [{"c": 512, "f": 1000}, {"c": 2048, "f": 1000}, {"c": 4096, "f": 4096}],
        ("c", "f"),
        0.07,
    ),
    "maxpool": (
        "maxpool",
        [{"h": 112, "c": 64, "k": 3, "s": 2}, {"h": 28, "c": 256, "k": 2, "s": 2}],
        ("h", "c", "k", "s"),
        0.05,
    ),
    "avgpool": (
        "avgpool",
        [{"h": 56, "c": 128, "k": 2, "s": 2}, {"h": 14, "c": 512, "k": 3, "s": 1}],
        ("h", "c", "k", "s"),
        0.04,
    ),
    "gpool": ("gpool", [{"h": 7, "c": 512}, {"h": 14, "c": 1024}], ("h", "c"), 0.04),
    "add": ("add", [{"h": 56, "c": 64}, {"h": 14, "c": 256}], ("h", "c"), 0.06),
    "mul": ("mul", [{"h": 28, "c": 96, "b": 1}, {"h": 14, "c": 256}], ("h", "c"), 0.04),
    "concat": ("concat", [{"h": 28, "c": 64, "c2": 64}], ("h", "c", "c2"), 0.05),
    "bn": ("bn", [{"h": 56, "c": 64}], ("h", "c"), 0.04),
    **{
        act: (act, [{"h": 56, "c": 64}] + ([{"h": 14, "c": 256}] if act == "relu" else []),
              ("h", "c"), 0.025)
        for act in ACTIVATIONS
    },
    # transformer kernels (token tensors: t tokens, c width; h heads and c the head dimension
    # for per-head tensors), at the shapes of real networks
    "linear": (
        "linear",
        [{"t": 128, "c": 768, "f": 768}, {"t": 64, "c": 1024, "f": 4096},
         {"t": 197, "c": 384, "f": 1536}],
        ("t", "c", "f"),
        0.07,
    ),
    "bmm": (
        "bmm",
        [{"t": 128, "h": 12, "c": 64}, {"t": 197, "h": 6, "c": 197, "f": 64}],
        ("t", "h", "c"),
        0.05,
    ),
    "softmax": ("softmax", [{"t": 128, "h": 12, "c": 128}], ("t", "h", "c"), 0.03),
    "ln": ("ln", [{"t": 128, "c": 768}, {"t": 197, "c": 384}], ("t", "c"), 0.03),
    "skipln": ("skipln", [{"t": 128, "c": 768}, {"t": 64, "c": 1024}], ("t", "c"), 0.03),
    "rmsnorm": ("rmsnorm", [{"t": 128, "c": 512}], ("t", "c"), 0.02),
    "gelu": ("gelu", [{"t": 128, "c": 3072}, {"t": 197, "c": 1536}], ("t", "c"), 0.03),
    "embed": ("embed", [{"t": 128, "c": 768, "v": 30522}], ("t", "c"), 0.015),
    "heads": ("heads", [{"t": 128, "c": 768, "e": 12}], ("t", "e"), 0.015),
    "merge": ("merge", [{"t": 128, "h": 12, "c": 64}], ("t", "h", "c"), 0.015),
    "transpose": ("transpose", [{"t": 128, "h": 12, "c": 64}], ("t", "h", "c"), 0.01),
    "reshape": ("reshape", [{"t": 128, "c": 768, "e": 12}], ("t", "c"), 0.01),
}  # fmt: skip

_SWEEP_VALUES = {
    "h": _H, "c": _C, "f": _C, "c2": _C, "k": _K, "s": _S, "g": (2, 4, 7, 8, 14, 16, 32, 64),
}  # fmt: skip
#: Transformer shapes: tokens 16-1024, widths 64-4096, heads 1-32, head dimensions 16-128.
_T = (16, 32, 49, 50, 64, 77, 96, 128, 196, 197, 256, 384, 512, 768, 1024)
_D = (64, 96, 128, 192, 256, 320, 384, 512, 640, 768, 1024, 1536, 2048, 3072, 4096)
_HEADS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
_HEAD_DIM = (16, 32, 48, 64, 80, 96, 128)
_VOCAB = (8000, 30000, 30522, 32000, 32128, 50257)
#: Sweep values of the transformer types where a key means something else than in a CNN
#: (``h`` = heads, ``c`` = width or head dimension).
_TOKEN_SWEEPS: dict[str, dict[str, tuple[int, ...]]] = {
    "linear": {"t": _T, "c": _D, "f": _D},
    "bmm": {"t": _T, "h": _HEADS, "c": _HEAD_DIM},
    "softmax": {"t": _T, "h": _HEADS, "c": _T},
    "ln": {"t": _T, "c": _D},
    "skipln": {"t": _T, "c": _D},
    "rmsnorm": {"t": _T, "c": _D},
    "gelu": {"t": _T, "c": (*_D, 6144, 8192, 16384)},
    "embed": {"t": _T, "c": _D},
    "heads": {"t": _T, "e": _HEADS},
    "merge": {"t": _T, "h": _HEADS, "c": _HEAD_DIM},
    "transpose": {"t": _T, "h": _HEADS, "c": _HEAD_DIM},
    "reshape": {"t": _T, "c": _D},
}


def _fits(ref: str) -> bool:
    _, g = resolve_kernel(ref)
    t = g.totals
    elements = sum(math.prod(s) for la in g.layers for s in (*la.input_shapes, *la.output_shapes))
    weights = sum(math.prod(w) for la in g.layers for w in la.weight_shapes)
    # GEMV weights and embedding tables (a lookup reads a few rows of its table) may be large
    big = any(la.kind == "fc" or la.op == "Gather" for la in g.layers)
    cap = MAX_FC_WEIGHTS if big else MAX_ELEMENTS
    return t.flops <= MAX_FLOPS and elements <= MAX_ELEMENTS and weights <= cap


def _ref(chain: str, params: dict[str, int]) -> str | None:
    try:
        ref = kernel_reference(chain, **params)
    except ValueError:  # NetworkReferenceError: an impossible configuration
        return None
    return ref if _fits(ref) else None


def sweep_configs() -> dict[str, list[str]]:
    """Layer type -> its one-parameter sweep references (deterministic, deduplicated)."""
    return {k: list(v) for k, v in _sweeps().items()}


@lru_cache(maxsize=1)
def _sweeps() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for name, (chain, bases, keys, _) in _TYPES.items():
        refs: dict[str, None] = {}
        for base in bases:
            for key in keys:
                values = _TOKEN_SWEEPS.get(name, {}).get(key) or _SWEEP_VALUES[key]
                if name in ("maxpool", "avgpool") and key == "k":
                    values = (1, 2, 3, 5, 7)
                if name == "fc":
                    values = (*values, 3072, 4096, 9216, 16384, 25088)
                for v in values:
                    ref = _ref(chain, {**base, key: v})
                    if ref is not None:
                        refs[ref] = None
        out[name] = tuple(refs)
    return out


def _log_int(rng: np.random.Generator, lo: int, hi: int) -> int:
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _channels_random(rng: np.random.Generator, hi: int = 2048) -> int:
    """Log-uniform in [1, hi]; three times in four rounded to a multiple of 8, as networks'
    channel counts are (the runtime's fast paths depend on it, see the module docstring)."""
    c = _log_int(rng, 1, hi)
    if c >= 8 and rng.random() < 0.75:
        c = max(8, 8 * round(c / 8))
    return c


def _tokens_random(rng: np.random.Generator) -> int:
    """Log-uniform in [16, 1024]; half the time a multiple of 8 (padded batches)."""
    t = _log_int(rng, 16, 1024)
    return max(16, 8 * round(t / 8)) if rng.random() < 0.5 else t


def _width_random(rng: np.random.Generator, lo: int = 64, hi: int = 4096) -> int:
    """Log-uniform in [lo, hi], three times in four a multiple of 64 (as model widths are)."""
    d = _log_int(rng, lo, hi)
    return max(64, 64 * round(d / 64)) if rng.random() < 0.75 else d


def _token_params(name: str, rng: np.random.Generator) -> dict[str, int]:
    """A random configuration of a transformer type (tokens, widths, heads of real models)."""
    t = _tokens_random(rng)
    heads = int(rng.choice(_HEADS))
    hd = int(rng.choice(_HEAD_DIM))
    if name == "linear":
        c = _width_random(rng)
        f = c * int(rng.choice((1, 3, 4))) if rng.random() < 0.5 else _width_random(rng)
        return {"t": t, "c": c, "f": min(f, 16384)}
    if name == "bmm":  # Q·Kᵀ (head_dim reduced, tokens out) or P·V (tokens reduced)
        if rng.random() < 0.5:
            return {"t": t, "h": heads, "c": hd}
        return {"t": t, "h": heads, "c": t, "f": hd}
    if name == "softmax":
        return {"t": t, "h": heads, "c": t if rng.random() < 0.8 else _tokens_random(rng)}
    if name in ("ln", "skipln", "rmsnorm", "reshape"):
        p = {"t": t, "c": _width_random(rng)}
        return {**p, "e": heads} if name == "reshape" and p["c"] % heads == 0 else p
    if name == "gelu":
        return {"t": t, "c": _width_random(rng, 256, 16384)}
    if name == "embed":
        return {"t": t, "c": _width_random(rng), "v": int(rng.choice(_VOCAB))}
    if name == "heads":
        return {"t": t, "c": heads * hd, "e": heads}
    return {"t": t, "h": heads, "c": hd}  # merge, transpose


def _random_params(name: str, rng: np.random.Generator) -> dict[str, int]:
    if name in _TOKEN_SWEEPS:
        return _token_params(name, rng)
    h = _log_int(rng, 7, 224)
    w = h if rng.random() < 0.8 else _log_int(rng, 7, 224)
    c = _channels_random(rng)
    p: dict[str, int] = {"h": h, "w": w, "c": c}
    if name == "conv":
        p.update(f=_channels_random(rng), k=int(rng.choice(_K)), s=int(rng.choice(_S)))
    elif name == "dwconv":
        p.update(k=int(rng.choice(_K)), s=int(rng.choice(_S)))
    elif name == "gconv":  # a group width of real networks, the groups to match
        width = int(rng.choice(_GROUP_WIDTHS))
        groups = max(2, round(_channels_random(rng, 2048) / width))
        c = width * groups
        p.update(c=c, f=c, g=groups, k=int(rng.choice((3, 3, 3, 5))), s=int(rng.choice(_S)))
    elif name == "fc":
        p = {"c": _channels_random(rng, 4096), "f": _channels_random(rng, 4096)}
    elif name in ("maxpool", "avgpool"):
        p.update(k=int(rng.choice((1, 2, 3, 5, 7))), s=int(rng.choice(_S)))
    elif name == "mul" and rng.random() < 0.5:
        p["b"] = 1
    elif name == "concat":
        p["c2"] = _channels_random(rng)
    return p


def random_configs(name: str, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` random configurations of layer type ``name`` within the cost limits."""
    chain = _TYPES[name][0]
    out: dict[str, None] = {}
    tries = 0
    while len(out) < count and tries < 50 * count + 100:
        tries += 1
        ref = _ref(chain, _random_params(name, rng))
        if ref is not None:
            out[ref] = None
    return list(out)


def layer_types() -> list[str]:
    """Names of the layer types the kernel suite covers."""
    return list(_TYPES)


def kernel_suite(
    count: int = DEFAULT_KERNEL_COUNT, seed: int = 0, *, types: list[str] | None = None
) -> list[str]:
    """``count`` single-layer benchmark references: sweeps first, then random configurations.

    Half of ``count`` goes to sweeps (all of them when they fit, else an even subsample per
    type) and the rest to random configurations split by each type's share. The session probe
    is always included (first).
    """
    if count < 1:
        raise DataError(f"benchmark count must be at least 1, got {count}")
    rng = np.random.default_rng(seed)
    names = list(types or _TYPES)
    unknown = [n for n in names if n not in _TYPES]
    if unknown:
        raise DataError(f"unknown layer types {unknown} (known: {', '.join(_TYPES)})")
    sweeps = sweep_configs()
    shares = np.array([_TYPES[n][3] for n in names], dtype=float)
    shares /= shares.sum()
    n_sweep_total = sum(len(sweeps[n]) for n in names)
    sweep_budget = min(n_sweep_total, max(len(names), count // 2))
    chosen: dict[str, None] = {SESSION_PROBE: None}
    for n in names:
        refs = sweeps[n]
        k = max(1, round(sweep_budget * len(refs) / n_sweep_total))
        if k >= len(refs):
            picked = refs
        else:
            idx = np.unique(np.linspace(0, len(refs) - 1, k).round().astype(int))
            picked = [refs[i] for i in idx]
        chosen.update(dict.fromkeys(picked))
    remaining = max(0, count + 1 - len(chosen))
    per_type = _split(remaining, shares)
    for n, k in zip(names, per_type, strict=True):
        if k:
            chosen.update(dict.fromkeys(random_configs(n, k, rng)))
    refs = list(chosen)
    return refs[: count + 1] if len(refs) > count + 1 else refs


def _split(total: int, shares: np.ndarray) -> list[int]:
    raw = shares * total
    out = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - out))[: total - int(out.sum())]:
        out[i] += 1
    return [int(v) for v in out]


# --------------------------------------------------------------------------- multi-layer

# Networks mostly use channel counts that are multiples of 8 or 16 (the SIMD block): two thirds
# of the draws come from those, a third from other counts, so both sides of every rule are seen.
_CHANNELS_BLOCK = (16, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512)
_CHANNELS_OTHER = (3, 8, 12, 24, 30, 40, 72, 100, 120, 200)

_PATTERNS: list[tuple[str, Callable[[dict[str, int]], dict[str, int]]]] = [
    ("conv+bn", lambda p: p),
    ("conv+relu", lambda p: p),
    ("conv+bn+relu", lambda p: p),
    ("conv+bn+relu6", lambda p: p),
    ("conv+bn+hardswish", lambda p: p),
    ("conv+sigmoid", lambda p: p),
    ("conv+hardsigmoid", lambda p: p),
    ("conv+tanh", lambda p: p),
    ("conv+bn+add", lambda p: {**p, "f": p["c"], "s": 1}),
    ("conv+bn+add+relu", lambda p: {**p, "f": p["c"], "s": 1}),
    ("conv+add+relu", lambda p: {**p, "f": p["c"], "s": 1}),
    ("conv+bn+relu+conv(s=1)+bn+add+relu", lambda p: {**p, "f": p["c"], "s": 1}),
    ("conv+bn+add+relu", lambda p: {**p, "f": p["c"], "s": 1, "k": 1}),
    ("dwconv+bn+relu6+conv(k=1,s=1)+bn+add", lambda p: {**p, "f": p["c"], "s": 1}),
    ("conv+maxpool(k=3,s=2)", lambda p: p),
    ("conv+relu+maxpool(k=2,s=2)", lambda p: p),
    ("conv+avgpool(k=2,s=2)", lambda p: p),
    ("dwconv+bn+relu", lambda p: p),
    ("dwconv+bn+relu6", lambda p: p),
    ("dwconv+relu+conv(k=1,s=1)", lambda p: p),
    ("dwconv+bn+relu+conv(k=1,s=1)+bn", lambda p: p),
    ("conv+conv(k=1,s=1)", lambda p: p),
    ("conv+bn+relu+conv(s=1)+bn+add+relu", lambda p: {**p, "f": p["c"], "s": 1}),
    ("fc+relu", lambda p: p),
    ("fc+sigmoid", lambda p: p),
    ("fc+relu+fc(f=10)", lambda p: p),
    ("add+relu", lambda p: p),
    ("bn+relu", lambda p: p),
    ("concat+bn+relu", lambda p: p),
    ("gpool+fc", lambda p: p),
    ("maxpool(k=3,s=2)+conv", lambda p: p),
    ("conv+mul(b=1)", lambda p: p),
    ("gpool+conv(k=1,s=1)+relu+conv(k=1,s=1)+hardsigmoid", lambda p: p),
    ("avgpool(k=2,s=2)+conv(k=1,s=1)", lambda p: p),
    ("conv+concat", lambda p: p),
]
#: Transformer chains (onnxruntime fuses the bias Add and the following Reshape into a Gemm,
#: the erf GELU into Gelu, a residual Add + LayerNorm into SkipLayerNormalization, RMSNorm's
#: primitives into SimplifiedLayerNormalization, the score scaling into FusedMatMul).
#: Parameters: ``t`` tokens, ``c`` width, ``f`` second width, ``e``/``h`` heads, ``hd`` head
#: dimension (drawn by :func:`_token_draw`).
_TOKEN_PATTERNS: list[tuple[str, Callable[[dict[str, int]], dict[str, int]]]] = [
    ("linear+gelu", lambda p: {"t": p["t"], "c": p["c"], "f": p["f"]}),
    ("linear+heads", lambda p: {"t": p["t"], "c": p["c"], "f": p["e"] * p["hd"], "e": p["e"]}),
    ("merge+linear", lambda p: {"t": p["t"], "h": p["e"], "c": p["hd"], "f": p["c"]}),
    ("add+ln", lambda p: {"t": p["t"], "c": p["c"]}),
    ("linear+add+ln", lambda p: {"t": p["t"], "c": p["c"]}),
    # pre-norm: the residual sum feeds the LayerNorm and the next residual Add (part 2 after
    # the leading padding), which keeps onnxruntime from fusing it into SkipLayerNormalization
    ("add+ln+linear+add(r=2)", lambda p: {"t": p["t"], "c": p["c"]}),
    ("add+rmsnorm", lambda p: {"t": p["t"], "c": p["c"]}),
    ("bmm+scale+softmax", lambda p: {"t": p["t"], "h": p["e"], "c": p["hd"]}),
    ("softmax+bmm", lambda p: {"t": p["t"], "h": p["e"], "c": p["t"], "f": p["hd"]}),
    ("ln+linear", lambda p: {"t": p["t"], "c": p["c"], "f": p["f"]}),
]


def _channels(rng: np.random.Generator) -> int:
    pool = _CHANNELS_BLOCK if rng.random() < 2 / 3 else _CHANNELS_OTHER
    return int(rng.choice(pool))


def _token_draw(rng: np.random.Generator) -> dict[str, int]:
    """Tokens, widths and heads of a transformer pattern (shapes of real networks)."""
    heads = int(rng.choice((2, 4, 6, 8, 12, 16)))
    hd = int(rng.choice((32, 64)))
    c = heads * hd if rng.random() < 0.7 else _width_random(rng, 64, 1024)
    return {"t": _log_int(rng, 16, 256), "c": c, "f": c * int(rng.choice((1, 4))), "e": heads,
            "hd": hd}  # fmt: skip


def multilayer_suite(count: int = DEFAULT_MULTILAYER_COUNT, seed: int = 0) -> list[str]:
    """``count`` multi-layer benchmark references: the patterns in turn, random parameters.

    Channels are drawn from a set mixing multiples of 16 and other counts, because whether
    onnxruntime moves a convolution into its blocked layout (and so what it fuses) depends on
    channel divisibility.
    """
    if count < 1:
        raise DataError(f"benchmark count must be at least 1, got {count}")
    rng = np.random.default_rng(seed + 7919)
    token_rng = np.random.default_rng(seed + 104729)  # leaves the CNN draws as they were
    out: dict[str, None] = {}
    tries = 0
    # every CNN chain once first (a small suite keeps the CNN fusions it always had), then
    # transformer and CNN chains in turn
    cnn_tries = token_tries = 0
    while len(out) < count and tries < 50 * count:
        tries += 1
        if cnn_tries >= len(_PATTERNS) and tries % 2 == 0:
            chain, adjust = _TOKEN_PATTERNS[token_tries % len(_TOKEN_PATTERNS)]
            token_tries += 1
            ref = _ref(f"padding+{chain}+padding", adjust(_token_draw(token_rng)))
            if ref is not None and resolve_kernel(ref)[1].totals.flops <= MAX_FLOPS / 4:
                out[ref] = None
            continue
        chain, adjust = _PATTERNS[cnn_tries % len(_PATTERNS)]
        cnn_tries += 1
        p: dict[str, Any] = {
            "h": _log_int(rng, 7, 112),
            "c": _channels(rng),
            "f": _channels(rng),
            "k": int(rng.choice(_K)),
            "s": int(rng.choice(_S)),
        }
        if chain.startswith("fc"):
            p = {"c": int(rng.choice((*_CHANNELS_BLOCK, 1000, 1024, 2048))), "f": p["f"]}
        # Padding layers around the chain put it in the layout context of a network (inside
        # onnxruntime's blocked NCHWc region, not at the graph's input and output).
        ref = _ref(f"padding+{chain}+padding", adjust(p))
        if ref is not None and resolve_kernel(ref)[1].totals.flops <= MAX_FLOPS / 4:
            out[ref] = None
    return list(out)
