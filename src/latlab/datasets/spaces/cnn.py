"""A space of MobileNet/ResNet/VGG-style CNN chains: ``cnn:`` references and the ``cnn`` sampler.

Predictors trained on generated networks must be judged on real architectures (the zoo), so
this space covers the building blocks real CNNs are made of -- inverted residuals with
expansion 1-6, kernels 3/5/7 and optional squeeze-and-excitation, ResNet basic and bottleneck
blocks, plain conv-BN-act stacks, max pooling -- with widths, depths, strides and input
resolutions (32-224) varied widely enough that latencies span ~1 ms to several hundred ms on
one CPU thread.

Reference grammar (tokens joined by ``-``)::

    cnn:r<RES>-<BLOCK>-<BLOCK>-...-fc<CLASSES>

    BLOCK := <KIND><OUT>[e<E>][k<K>][s<S>][x<N>][se][.<ACT>]    KIND in c, ir, rb, bt
           | mp[k<K>][s<S>]                                     max pooling
    ACT   := re (ReLU, default) | r6 (ReLU6) | hs (hard swish) | sw (swish/SiLU)

* ``c``  -- N x (Conv KxK, BN, act); the first has stride S.
* ``ir`` -- inverted residual (MobileNetV2/V3): 1x1 expand to E x in channels (skipped when
  E = 1), depthwise KxK stride S, optional SE, 1x1 project (no act); identity residual when
  stride 1 and in = out. ``e`` is required.
* ``rb`` -- ResNet basic block: Conv KxK stride S, BN, act, Conv KxK, BN, optional SE, plus a
  shortcut (identity, or Conv 1x1 stride S + BN when the shape changes), Add, act.
* ``bt`` -- ResNet bottleneck (v1.5): 1x1 to OUT/E, KxK stride S, 1x1 to OUT (E defaults to 4
  and must divide OUT), optional SE, shortcut as in ``rb``.
* ``mp`` -- MaxPool KxK stride S (defaults k3 s2): padding (K-1)/2 for K = 3, 5, 7; K = 2
  needs S = 2 and uses ceil mode (so a 1x1 map stays 1x1).
* ``fc`` -- global average pooling, flatten, fully connected layer to CLASSES (always last).

Defaults (omitted in the canonical form :func:`format_cnn` writes): ``k3``, ``s1``, ``x1``, no
SE, ReLU. Repeated blocks (``xN``) use stride S only in the first repetition. Convolutions use
"same" padding, so a size-S stride maps H to ceil(H/S) and no resolution collapses to zero.
SE: global pool, 1x1 conv (bias) to max(8, mid/4 rounded to 8) channels, ReLU, 1x1 conv (bias),
hard sigmoid (with ``.hs``) or sigmoid gate, multiply.

Example (a MobileNetV2-like chain at 160 px)::

    cnn:r160-c32s2.r6-ir16e1.r6-ir24e6s2x2.r6-ir32e6s2x3.r6-ir64e6k5s2x4se.hs-c1280k1.hs-fc1000
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from latlab.datasets.references import ResolveOptions, Scheme, resolve
from latlab.datasets.spaces.base import SearchSpace
from latlab.datasets.zoo.common import act, make_divisible, squeeze_excitation
from latlab.encoders.builder import NetBuilder
from latlab.encoders.ir import NetworkGraph
from latlab.errors import NetworkReferenceError

KINDS = ("c", "ir", "rb", "bt", "mp")
ACTS = ("re", "r6", "hs", "sw")
#: The activation each short code names (the names of :func:`latlab.datasets.zoo.common.act`).
ACT_NAMES: dict[str, str] = {"re": "relu", "r6": "relu6", "hs": "hardswish", "sw": "silu"}
MIN_RES, MAX_RES = 8, 1024
MAX_CHANNELS = 8192

_BLOCK_RE = re.compile(
    r"(?P<kind>c|ir|rb|bt)(?P<out>\d+)(?:e(?P<e>\d+))?(?:k(?P<k>\d+))?(?:s(?P<s>\d+))?"
    r"(?:x(?P<n>\d+))?(?P<se>se)?(?:\.(?P<act>[a-z0-9]+))?"
)
_POOL_RE = re.compile(r"mp(?:k(?P<k>\d+))?(?:s(?P<s>\d+))?")


@dataclass(frozen=True, slots=True)
class Block:
    """One token of a ``cnn:`` reference (see the module docstring for the semantics)."""

    kind: str
    out: int = 0
    expansion: int = 1
    kernel: int = 3
    stride: int = 1
    repeats: int = 1
    se: bool = False
    act: str = "re"

    def __str__(self) -> str:
        if self.kind == "mp":
            return (
                "mp"
                + (f"k{self.kernel}" if self.kernel != 3 else "")
                + (f"s{self.stride}" if self.stride != 2 else "")
            )
        text = f"{self.kind}{self.out}"
        if self.kind == "ir" or (self.kind == "bt" and self.expansion != 4):
            text += f"e{self.expansion}"
        if self.kernel != 3:
            text += f"k{self.kernel}"
        if self.stride != 1:
            text += f"s{self.stride}"
        if self.repeats != 1:
            text += f"x{self.repeats}"
        if self.se:
            text += "se"
        if self.act != "re":
            text += f".{self.act}"
        return text


@dataclass(frozen=True, slots=True)
class CnnSpec:
    """A parsed ``cnn:`` reference: input resolution, blocks, and classifier classes."""

    resolution: int
    blocks: tuple[Block, ...]
    classes: int = 1000

    def __str__(self) -> str:
        return format_cnn(self)


def format_cnn(spec: CnnSpec) -> str:
    """The canonical reference of ``spec`` (defaults omitted); inverse of :func:`parse_cnn`."""
    tokens = [f"r{spec.resolution}", *(str(b) for b in spec.blocks), f"fc{spec.classes}"]
    return "cnn:" + "-".join(tokens)


def _check(ok: bool, ref: str, token: str, why: str) -> None:
    if not ok:
        raise NetworkReferenceError(f"malformed reference {ref!r}: token {token!r}: {why}")


def _parse_block(token: str, ref: str) -> Block:
    pool = _POOL_RE.fullmatch(token)
    if pool:
        k = int(pool["k"] or 3)
        s = int(pool["s"] or 2)
        _check(k in (2, 3, 5, 7), ref, token, "pool kernel must be 2, 3, 5 or 7")
        _check(s in (1, 2), ref, token, "stride must be 1 or 2")
        _check(k != 2 or s == 2, ref, token, "a 2x2 pool needs stride 2")
        return Block("mp", kernel=k, stride=s)
    m = _BLOCK_RE.fullmatch(token)
    _check(
        m is not None,
        ref,
        token,
        "expected <c|ir|rb|bt><OUT>[e<E>][k<K>][s<S>][x<N>][se][.<ACT>] or mp[k<K>][s<S>]",
    )
    assert m is not None
    kind = m["kind"]
    out = int(m["out"])
    k = int(m["k"] or 3)
    s = int(m["s"] or 1)
    n = int(m["n"] or 1)
    act = m["act"] or "re"
    _check(1 <= out <= MAX_CHANNELS, ref, token, f"channels must be 1..{MAX_CHANNELS}")
    _check(k in (1, 3, 5, 7), ref, token, "kernel must be 1, 3, 5 or 7")
    _check(s in (1, 2), ref, token, "stride must be 1 or 2")
    _check(1 <= n <= 32, ref, token, "repeats must be 1..32")
    _check(act in ACTS, ref, token, f"activation must be one of {', '.join(ACTS)}")
    se = bool(m["se"])
    _check(not (se and kind == "c"), ref, token, "squeeze-excitation needs an ir, rb or bt block")
    if kind == "ir":
        _check(m["e"] is not None, ref, token, "an ir block needs its expansion e<E>")
        e = int(m["e"])
        _check(1 <= e <= 8, ref, token, "expansion must be 1..8")
    elif kind == "bt":
        e = int(m["e"] or 4)
        _check(1 <= e <= 8 and out % e == 0, ref, token, "expansion must be 1..8 and divide OUT")
    else:
        _check(m["e"] is None, ref, token, f"a {kind} block has no expansion")
        e = 1
    return Block(kind, out, e, k, s, n, se, act)


def parse_cnn(ref: str) -> CnnSpec:
    """Parse ``cnn:...`` (or its body); raises :class:`NetworkReferenceError` naming it."""
    body = ref[4:] if ref.startswith("cnn:") else ref
    full = f"cnn:{body}"
    tokens = body.strip().split("-")
    _check(len(tokens) >= 3, full, body, "expected r<RES>-<BLOCK>...-fc<CLASSES>")
    res = re.fullmatch(r"r(\d+)", tokens[0])
    _check(res is not None, full, tokens[0], "the first token must be r<RESOLUTION>")
    assert res is not None
    resolution = int(res[1])
    in_range = MIN_RES <= resolution <= MAX_RES
    _check(in_range, full, tokens[0], f"resolution must be {MIN_RES}..{MAX_RES}")
    fc = re.fullmatch(r"fc(\d+)", tokens[-1])
    _check(fc is not None, full, tokens[-1], "the last token must be fc<CLASSES>")
    assert fc is not None
    classes = int(fc[1])
    _check(1 <= classes <= 100_000, full, tokens[-1], "classes must be 1..100000")
    blocks = tuple(_parse_block(t, full) for t in tokens[1:-1])
    return CnnSpec(resolution, blocks, classes)


# --------------------------------------------------------------------------- building


def activation(b: NetBuilder, x: str, code: str) -> str:
    """Apply the activation named by its short code (re, r6, hs, sw: :data:`ACT_NAMES`)."""
    return act(b, x, ACT_NAMES[code])


def _se(b: NetBuilder, x: str, squeeze: int, code: str) -> str:
    """Squeeze-excitation (ReLU inside) gated by a hard sigmoid in hardswish blocks."""
    return squeeze_excitation(b, x, squeeze, "relu", "hardsigmoid" if code == "hs" else "sigmoid")


def _shortcut(b: NetBuilder, x: str, out: int, stride: int) -> str:
    if stride == 1 and b.shape(x)[1] == out:
        return x
    return b.bn(b.conv(x, out, 1, stride=stride, padding=0))


def _block(b: NetBuilder, x: str, blk: Block, stride: int) -> str:
    cin = b.shape(x)[1]
    if blk.kind == "mp":
        if blk.kernel == 2:  # ceil mode: H -> ceil(H/2), like the odd kernels with padding
            return b.maxpool(x, 2, 2, ceil_mode=True)
        return b.maxpool(x, blk.kernel, blk.stride, padding=(blk.kernel - 1) // 2)
    if blk.kind == "c":
        return activation(b, b.bn(b.conv(x, blk.out, blk.kernel, stride)), blk.act)
    if blk.kind == "ir":
        mid = cin * blk.expansion
        y = x
        if blk.expansion != 1:
            y = activation(b, b.bn(b.conv(y, mid, 1, padding=0)), blk.act)
        y = activation(b, b.bn(b.dwconv(y, blk.kernel, stride)), blk.act)
        if blk.se:
            y = _se(b, y, max(8, make_divisible(mid / 4, 8)), blk.act)
        y = b.bn(b.conv(y, blk.out, 1, padding=0))
        return b.add(x, y) if stride == 1 and cin == blk.out else y
    if blk.kind == "rb":
        y = activation(b, b.bn(b.conv(x, blk.out, blk.kernel, stride)), blk.act)
        y = b.bn(b.conv(y, blk.out, blk.kernel))
    else:  # bt
        mid = blk.out // blk.expansion
        y = activation(b, b.bn(b.conv(x, mid, 1, padding=0)), blk.act)
        y = activation(b, b.bn(b.conv(y, mid, blk.kernel, stride)), blk.act)
        y = b.bn(b.conv(y, blk.out, 1, padding=0))
    if blk.se:
        y = _se(b, y, max(8, make_divisible(blk.out / 4, 8)), blk.act)
    return activation(b, b.add(_shortcut(b, x, blk.out, stride), y), blk.act)


def build_cnn(spec: CnnSpec | str, batch: int = 1) -> NetworkGraph:
    """The IR of a ``cnn:`` network."""
    if isinstance(spec, str):
        spec = parse_cnn(spec)
    ref = format_cnn(spec)
    meta = {
        "family": "cnn",
        "resolution": spec.resolution,
        "blocks": tuple(sorted({blk.kind for blk in spec.blocks})),
    }
    b = NetBuilder(ref, (batch, 3, spec.resolution, spec.resolution), meta=meta)
    x = b.input
    for blk in spec.blocks:
        for i in range(1 if blk.kind == "mp" else blk.repeats):
            x = _block(b, x, blk, blk.stride if i == 0 else 1)
    x = b.flatten(b.global_avgpool(x))
    b.gemm(x, spec.classes)
    return b.build()


def _resolve(body: str, opts: ResolveOptions) -> NetworkGraph:
    spec = parse_cnn(body)
    expected = (opts.batch, 3, spec.resolution, spec.resolution)
    if opts.input_shape is not None and tuple(opts.input_shape) != expected:
        raise NetworkReferenceError(
            f"reference 'cnn:{body}' fixes the input shape {expected}, got {opts.input_shape}"
        )
    return build_cnn(spec, batch=opts.batch)


# --------------------------------------------------------------------------- sampling

RESOLUTIONS = (32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224)


def _ch(rng: np.random.Generator, value: float, divisor: int) -> int:
    return int(min(MAX_CHANNELS, make_divisible(value, divisor)))


def _mobile(rng: np.random.Generator, width: float, div: int) -> list[Block]:
    act = str(rng.choice(["re", "r6", "hs"]))
    blocks = [Block("c", _ch(rng, 32 * width * rng.uniform(0.5, 1.0), div), stride=2, act=act)]
    c = 16 * width * rng.uniform(0.75, 1.25)
    if rng.random() < 0.7:
        blocks.append(Block("ir", _ch(rng, c, div), 1, int(rng.choice([3, 5])), act=act))
    n_stages = int(rng.integers(4, 7))
    downs = set(rng.choice(np.arange(n_stages), size=min(4, n_stages), replace=False).tolist())
    for stage in range(n_stages):
        c *= rng.uniform(1.2, 2.0)
        stage_act = act if stage < n_stages // 2 or rng.random() < 0.5 else "hs"
        blocks.append(
            Block(
                "ir",
                _ch(rng, c, div),
                int(rng.choice([1, 2, 3, 4, 6], p=[0.05, 0.1, 0.25, 0.2, 0.4])),
                int(rng.choice([3, 5, 7], p=[0.5, 0.35, 0.15])),
                2 if stage in downs else 1,
                int(rng.integers(1, 5)),
                bool(rng.random() < 0.35),
                stage_act,
            )
        )
    if rng.random() < 0.8:
        blocks.append(Block("c", _ch(rng, c * rng.uniform(2, 6), div), kernel=1, act=act))
    return blocks


def _resnet(rng: np.random.Generator, width: float, div: int, resolution: int) -> list[Block]:
    base = 64 * width * rng.uniform(0.5, 1.0)
    big = resolution >= 128
    blocks = [Block("c", _ch(rng, base, div), kernel=7 if big else 3, stride=2 if big else 1)]
    if big or rng.random() < 0.3:
        blocks.append(Block("mp", kernel=3, stride=2))
    kind = str(rng.choice(["rb", "bt"]))
    se = bool(rng.random() < 0.2)
    c = base
    for stage in range(int(rng.integers(3, 5))):
        out = c * (4 if kind == "bt" else 1)
        blocks.append(
            Block(
                kind,
                _ch(rng, out, max(div, 4) * (4 if kind == "bt" else 1)),
                4 if kind == "bt" else 1,
                3,
                1 if stage == 0 else 2,
                int(rng.integers(1, 7)),
                se,
            )
        )
        c *= 2
    return blocks


def _plain(rng: np.random.Generator, width: float, div: int) -> list[Block]:
    c = 32 * width * rng.uniform(0.5, 1.5)
    blocks: list[Block] = []
    for _stage in range(int(rng.integers(3, 6))):
        k = int(rng.choice([3, 5, 7], p=[0.7, 0.2, 0.1]))
        blocks.append(Block("c", _ch(rng, c, div), kernel=k, repeats=int(rng.integers(1, 4))))
        blocks.append(Block("mp", kernel=int(rng.choice([2, 3])), stride=2))
        c *= 2
    if rng.random() < 0.5:
        blocks.append(Block("c", _ch(rng, c, div), kernel=1))
    return blocks


def _mixed(rng: np.random.Generator, width: float, div: int) -> list[Block]:
    c = 32 * width * rng.uniform(0.5, 1.5)
    blocks = [Block("c", _ch(rng, c, div), stride=int(rng.choice([1, 2])))]
    for _stage in range(int(rng.integers(3, 7))):
        c *= rng.uniform(1.0, 2.0)
        kind = str(rng.choice(["ir", "rb", "bt", "c"]))
        out = _ch(rng, c * (4 if kind == "bt" else 1), div * (4 if kind == "bt" else 1))
        blocks.append(
            Block(
                kind,
                out,
                int(rng.integers(1, 7)) if kind == "ir" else (4 if kind == "bt" else 1),
                int(rng.choice([3, 5, 7], p=[0.6, 0.3, 0.1])),
                int(rng.choice([1, 2], p=[0.35, 0.65])),
                int(rng.integers(1, 4)),
                bool(rng.random() < 0.3) and kind != "c",
                str(rng.choice(ACTS, p=[0.5, 0.15, 0.25, 0.1])),
            )
        )
    return blocks


def sample_spec(rng: np.random.Generator) -> CnnSpec:
    """One random network of the space."""
    resolution = int(rng.choice(RESOLUTIONS))
    width = float(2 ** rng.uniform(-2, 1))  # width multiplier 0.25 .. 2
    div = int(rng.choice([4, 8, 16], p=[0.2, 0.6, 0.2]))
    style = str(rng.choice(["mobile", "resnet", "plain", "mixed"], p=[0.4, 0.25, 0.1, 0.25]))
    if style == "mobile":
        blocks = _mobile(rng, width, div)
    elif style == "resnet":
        blocks = _resnet(rng, width, div, resolution)
    elif style == "plain":
        blocks = _plain(rng, width, div)
    else:
        blocks = _mixed(rng, width, div)
    classes = int(rng.choice([10, 100, 1000], p=[0.25, 0.15, 0.6]))
    return CnnSpec(resolution, tuple(blocks), classes)


#: Sampled networks stay below these (VGG-16: 15.5 GMACs, 138 M parameters), so that one
#: inference takes at most a few hundred ms on a CPU thread and exports stay small.
MAX_SAMPLED_MACS = 30e9
MAX_SAMPLED_PARAMS = 60e6


def sample_cnn(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct ``cnn:`` references (seeded).

    Draws that exceed :data:`MAX_SAMPLED_MACS` or :data:`MAX_SAMPLED_PARAMS` are redrawn
    (checked on the built IR, a few ms per network; the graphs stay in the resolve cache).
    """
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        spec = sample_spec(rng)
        ref = format_cnn(spec)
        if ref in seen:
            continue
        totals = resolve(ref).totals  # cached: whoever resolves the sample next gets it free
        if totals.macs <= MAX_SAMPLED_MACS and totals.params <= MAX_SAMPLED_PARAMS:
            seen[ref] = None
    return list(seen)


def _validate(body: str) -> CnnSpec:
    return parse_cnn(body)


#: The ``cnn:`` reference scheme (registered in ``references.BUILTIN_SCHEMES``).
SCHEME = Scheme(
    "cnn",
    _resolve,
    validate=_validate,
    help="CNN chain r<RES>-<BLOCK>-...-fc<CLASSES> (blocks c, ir, rb, bt, mp)",
)
#: The cnn space (registered in :mod:`latlab.datasets.spaces`).
SPACE = SearchSpace("cnn", sample_cnn, "MobileNet/ResNet/VGG-style CNN chains, 32-224 px inputs")
