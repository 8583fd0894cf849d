"""Once-for-All MobileNetV3 (width 1.0), as HELP uses it: ``ofa:`` references.

The network (ImageNet, input r x r, 1000 classes):

* first conv 3x3, 3 -> 16, stride 2, + BN + h-swish; a first block: depthwise 3x3 + BN + ReLU,
  Conv 1x1 16 -> 16 + BN, plus the input;
* 5 stages of widths [24, 40, 80, 112, 160], first-block strides [2, 2, 2, 1, 2], activations
  [ReLU, ReLU, h-swish, h-swish, h-swish], squeeze-and-excitation in stages 2, 4 and 5. Stage i
  has d_i in {2, 3, 4} active blocks; a block is an inverted residual with kernel k in
  {3, 5, 7} and expansion e in {3, 4, 6}: Conv 1x1 C_in -> e·C_in + BN + act, depthwise kxk +
  BN + act, [SE: average pool, Conv 1x1 to make_divisible(e·C_in / 4, 8) (bias), ReLU, Conv
  1x1 back (bias), h-sigmoid, multiply], Conv 1x1 -> C_out + BN, plus the input when the
  stride is 1 and the widths are equal;
* Conv 1x1 160 -> 960 + BN + h-swish, global average pooling, Conv 1x1 960 -> 1280 (no BN, no
  bias) + h-swish, FC 1280 -> 1000.

The builder generalises to any per-block expanded width (:func:`build_mbv3`), which is how the
tests check it against a published network of the same structure: MobileNetV3-Large
(Howard et al., ICCV 2019) is this skeleton with its own depths, kernels and expanded widths,
and its published counts (torchvision: 5,483,032 parameters, 0.217 GMACs; OFA's head conv has
no bias, 1,280 parameters fewer) are met exactly.

References: ``ofa:r<res>-d<5 depths>-k<20 kernels>-e<20 expansions>``, four k/e positions per
stage, stage i using its first d_i. **Two references can name one network**: the k/e digits
of inactive positions do not change it (HELP's table keeps whatever the sampler left there).
latlab treats such references as the same network: both parse, their graphs have the same
digest, features and predictions, and :func:`canonical` (and every reference latlab
generates: sampling, NAS) writes inactive positions as ``0``. A reference is kept as it was
given (so a table's rows keep their names); ``0`` is accepted at inactive positions only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from typing import Any, ClassVar

import numpy as np

from latlab.datasets.references import ResolveOptions, Scheme
from latlab.datasets.spaces.base import Genotype, SearchSpace
from latlab.datasets.spaces.chain import (
    ChainBatch,
    ChainGraph,
    Segment,
    SpatialFit,
    chain_digest,
    fit_spatial,
    join_segments,
    own_graph,
    segment_of,
    spatial_segment,
    spatial_summaries,
    sum_totals,
)
from latlab.datasets.zoo.common import conv_bn_act, make_divisible, squeeze_excitation
from latlab.encoders.builder import NetBuilder
from latlab.encoders.choices import BlockChainGraphEncoder, ChoiceOneHotEncoder, TokenCountEncoder
from latlab.encoders.ir import NetworkGraph, NetworkTotals
from latlab.encoders.vector import SUMMARY_FEATURES
from latlab.errors import NetworkReferenceError

PREFIX = "ofa"
RESOLUTIONS: tuple[int, ...] = tuple(range(128, 225, 4))
DEPTHS: tuple[int, ...] = (2, 3, 4)
KERNELS: tuple[int, ...] = (3, 5, 7)
EXPANSIONS: tuple[int, ...] = (3, 4, 6)
STAGE_WIDTHS: tuple[int, ...] = (24, 40, 80, 112, 160)
STAGE_STRIDES: tuple[int, ...] = (2, 2, 2, 1, 2)
STAGE_ACTS: tuple[str, ...] = ("relu", "relu", "hardswish", "hardswish", "hardswish")
STAGE_SE: tuple[bool, ...] = (False, True, False, True, True)
MAX_DEPTH = 4
N_STAGES = len(STAGE_WIDTHS)
N_POS = N_STAGES * MAX_DEPTH  # 20
STEM_WIDTH = 16
FINAL_EXPAND = 960
FEATURE_MIX = 1280
NUM_CLASSES = 1000

_BODY = re.compile(r"r(\d+)-d(\d{5})-k(\d{20})-e(\d{20})$")

#: An OFA network: resolution, 5 depths, and (kernel, expansion) per position, 0 = inactive.
Arch = tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def parse_ofa(body: str) -> Arch:
    """``(resolution, depths, kernels, expansions)``; inactive positions keep their digits."""
    ref = f"{PREFIX}:{body}"
    m = _BODY.match(body.strip())
    if m is None:
        raise NetworkReferenceError(
            f"malformed OFA reference {ref!r}: expected ofa:r<res>-d<5 depths>-k<20 kernels>-"
            "e<20 expansions>, e.g. ofa:r204-d22223-k75557757573753735353-"
            "e64466343363336346436"
        )
    res = int(m[1])
    depths = tuple(map(int, m[2]))
    kernels = tuple(map(int, m[3]))
    expansions = tuple(map(int, m[4]))
    if res in _RES_INDEX and _valid_choices(depths, m[3], m[4]):
        return res, depths, kernels, expansions
    # something is wrong: find it, to name it
    if res not in RESOLUTIONS:
        raise NetworkReferenceError(
            f"malformed OFA reference {ref!r}: resolution {res} is not one of 128, 132, ..., 224"
        )
    for i, d in enumerate(depths):
        if d not in DEPTHS:
            raise NetworkReferenceError(
                f"malformed OFA reference {ref!r}: depth of stage {i + 1} is {d}, not 2, 3 or 4"
            )
    for what, values, allowed in (
        ("kernel", kernels, KERNELS),
        ("expansion", expansions, EXPANSIONS),
    ):
        for p, v in enumerate(values):
            active = p % MAX_DEPTH < depths[p // MAX_DEPTH]
            if v not in allowed and not (v == 0 and not active):
                raise NetworkReferenceError(
                    f"malformed OFA reference {ref!r}: {what} {v} at position {p + 1} is not "
                    f"one of {', '.join(map(str, allowed))}"
                    + ("" if active else " (or 0: the position is inactive)")
                )
    return res, depths, kernels, expansions


def _valid_choices(depths: tuple[int, ...], kernels: str, expansions: str) -> bool:
    """Whether the depths and the kernel and expansion digits of a reference are valid: the
    rule :func:`parse_ofa` checks in a few string operations (its loop only names what breaks
    it): every digit an option or 0, and no 0 at an active position."""
    if any(d not in DEPTHS for d in depths):
        return False
    if kernels.strip(_KERNEL_DIGITS) or expansions.strip(_EXPANSION_DIGITS):
        return False
    return not any(
        "0" in kernels[s * MAX_DEPTH : s * MAX_DEPTH + d]
        or "0" in expansions[s * MAX_DEPTH : s * MAX_DEPTH + d]
        for s, d in enumerate(depths)
    )


_KERNEL_DIGITS = "0" + "".join(map(str, KERNELS))
_EXPANSION_DIGITS = "0" + "".join(map(str, EXPANSIONS))
_RES_INDEX = {r: i for i, r in enumerate(RESOLUTIONS)}


def active_positions(depths: Sequence[int]) -> list[int]:
    """The k/e positions a network uses (stage i: its first d_i)."""
    return [s * MAX_DEPTH + j for s, d in enumerate(depths) for j in range(d)]


def canonical_arch(arch: Arch) -> Arch:
    """The arch with inactive positions set to 0 (one form per network)."""
    res, depths, ks, es = arch
    active = set(active_positions(depths))
    ks = tuple(k if p in active else 0 for p, k in enumerate(ks))
    es = tuple(e if p in active else 0 for p, e in enumerate(es))
    return res, tuple(depths), ks, es


def format_ofa(arch: Arch) -> str:
    res, depths, ks, es = arch
    return (
        f"{PREFIX}:r{res}-d{''.join(map(str, depths))}-k{''.join(map(str, ks))}"
        f"-e{''.join(map(str, es))}"
    )


def canonical(reference: str) -> str:
    """The canonical reference of the network an ``ofa:`` reference names."""
    return format_ofa(canonical_arch(_parse(reference.removeprefix(f"{PREFIX}:"))))


# --------------------------------------------------------------------------- builder

#: One block of the generalised builder: (kernel, expanded width, output width, stride,
#: activation, SE).
BlockSpec = tuple[int, int, int, int, str, bool]


def _first(b: NetBuilder, x: str) -> str:
    y = conv_bn_act(b, x, STEM_WIDTH, 3, 2, "hardswish")
    z = conv_bn_act(b, y, STEM_WIDTH, 3, 1, "relu", groups=STEM_WIDTH)
    z = conv_bn_act(b, z, STEM_WIDTH, 1, activation="none")
    return b.add(y, z)


def _expand(b: NetBuilder, x: str, mid: int, act: str) -> str:
    return conv_bn_act(b, x, mid, 1, activation=act)


def _depthwise(b: NetBuilder, x: str, k: int, stride: int, act: str) -> str:
    mid = b.shape(x)[1]
    return conv_bn_act(b, x, mid, k, stride, act, groups=mid)


def _project(b: NetBuilder, x: str, cout: int, se: bool) -> str:
    if se:
        x = squeeze_excitation(b, x, make_divisible(b.shape(x)[1] // 4, 8), "relu", "hardsigmoid")
    return conv_bn_act(b, x, cout, 1, activation="none")


def _residual(b: NetBuilder, x: str, y: str) -> str:
    return b.add(x, y)


def _block(b: NetBuilder, x: str, spec: BlockSpec) -> str:
    """One inverted residual, in the parts the fast totals build separately (expand,
    depthwise, SE + project, residual): only the depthwise part depends on the kernel."""
    k, mid, cout, stride, act, se = spec
    cin = b.shape(x)[1]
    y = _project(b, _depthwise(b, _expand(b, x, mid, act), k, stride, act), cout, se)
    return _residual(b, x, y) if stride == 1 and cin == cout else y


def _head(b: NetBuilder, x: str) -> str:
    y = conv_bn_act(b, x, FINAL_EXPAND, 1, activation="hardswish")
    y = b.global_avgpool(y)
    y = b.hardswish(b.conv(y, FEATURE_MIX, 1, padding=0))
    return b.gemm(b.flatten(y), NUM_CLASSES)


def build_mbv3(
    blocks: Sequence[BlockSpec],
    input_shape: tuple[int, ...],
    name: str,
    meta: dict[str, Any] | None = None,
) -> NetworkGraph:
    """The OFA MobileNetV3 skeleton with any sequence of inverted-residual blocks."""
    b = NetBuilder(name, input_shape, meta=meta)
    x = _first(b, b.input)
    for spec in blocks:
        x = _block(b, x, spec)
    _head(b, x)
    return b.build()


def _spec(stage: int, j: int, k: int, e: int) -> BlockSpec:
    """Block ``j`` of ``stage`` with kernel ``k`` and expansion ``e``."""
    cin = STAGE_WIDTHS[stage] if j else (STAGE_WIDTHS[stage - 1] if stage else STEM_WIDTH)
    stride = 1 if j else STAGE_STRIDES[stage]
    return k, cin * e, STAGE_WIDTHS[stage], stride, STAGE_ACTS[stage], STAGE_SE[stage]


def block_specs(arch: Arch) -> list[BlockSpec]:
    """The active blocks of an OFA network."""
    _res, depths, ks, es = arch
    return [
        _spec(s, j, ks[s * MAX_DEPTH + j], es[s * MAX_DEPTH + j])
        for s, d in enumerate(depths)
        for j in range(d)
    ]


def _input_shape(arch: Arch, batch: int, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape:
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 4 or shape[1] != 3 or min(shape) < 32:
            raise NetworkReferenceError(f"ofa networks take an input (N, 3, H, W), got {shape}")
        return shape
    return (batch, 3, arch[0], arch[0])


# --------------------------------------------------------------------------- fast totals


_SUMMARY_N = len(SUMMARY_FEATURES)

_PARTS: dict[str, Callable[..., str]] = {
    "expand": _expand,
    "depthwise": _depthwise,
    "project": _project,
}


def _build_segment(kind: str, shape: tuple[int, ...], args: tuple[Any, ...] = ()) -> Segment:
    """One segment built alone on its input shape: the first layers, the head or a part of a
    block (``residual``: the Add of two tensors of ``shape``, as the block's skip adds)."""
    b = NetBuilder(kind, shape)
    if kind == "first":
        _first(b, b.input)
    elif kind == "head":
        _head(b, b.input)
    elif kind == "residual":
        _residual(b, b.input, b.input)
    else:
        _PARTS[kind](b, b.input, *args)
    return segment_of(b.build())


def _out_size(h: int, stride: int) -> int:
    return (h - 1) // stride + 1  # odd kernels with (k - 1) / 2 padding


def _stride(kind: str, args: tuple[Any, ...]) -> int:
    """How much a segment shrinks its input's side (the first conv: 2; a depthwise part: its
    stride)."""
    return 2 if kind == "first" else int(args[1]) if kind == "depthwise" else 1


@lru_cache(maxsize=1024)
def _fit(kind: str, n: int, channels: int, args: tuple[Any, ...]) -> SpatialFit:
    """A segment's rows as functions of its square input's side, from two or three builds:
    the 25 resolutions then share every part's builds (131 parts, about 300 builds, whatever
    the networks) instead of building each part once per distinct input shape."""
    return fit_spatial(
        lambda h: _build_segment(kind, (n, channels, h, h), args), _stride(kind, args)
    )


@lru_cache(maxsize=8192)
def _segment(kind: str, shape: tuple[int, ...], args: tuple[Any, ...] = ()) -> Segment:
    """A segment on its input shape (:func:`_build_segment`), from its :func:`_fit` when the
    input is square (every OFA network's), built otherwise."""
    n, c, h, w = shape
    if h != w:
        return _build_segment(kind, shape, args)
    return spatial_segment(_fit(kind, n, c, args), h)


def _block_parts(
    stage: int, j: int, k: int, e: int
) -> list[tuple[str, int, tuple[Any, ...], bool]]:
    """The parts of block ``j`` of ``stage``, in order: ``(kind, input channels, args, whether
    it takes the block's output side)``; the expand and SE + project parts are shared by the
    three kernels, so a table builds about half the layers whole blocks would."""
    _k, mid, cout, stride, act, se = _spec(stage, j, k, e)
    cin = STAGE_WIDTHS[stage] if j else (STAGE_WIDTHS[stage - 1] if stage else STEM_WIDTH)
    parts = [
        ("expand", cin, (mid, act), False),
        ("depthwise", mid, (k, stride, act), False),
        ("project", mid, (cout, se), True),
    ]
    if stride == 1 and cin == cout:
        parts.append(("residual", cout, (), True))
    return parts


@lru_cache(maxsize=8192)
def _block_segment(shape: tuple[int, ...], stage: int, j: int, k: int, e: int) -> Segment:
    """A block on its input shape, from its parts (:func:`_block_parts`)."""
    n, _cin, h, w = shape
    stride = 1 if j else STAGE_STRIDES[stage]
    out = (_out_size(h, stride), _out_size(w, stride))
    return join_segments(
        [
            _segment(kind, (n, c, *(out if on_out else (h, w))), args)
            for kind, c, args, on_out in _block_parts(stage, j, k, e)
        ]
    )


@lru_cache(maxsize=64)
def _stage_shapes(input_shape: tuple[int, ...]) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """Per stage the input shapes of its first and of its later blocks; then the head's."""
    n, _, h, w = input_shape
    h, w = _out_size(h, 2), _out_size(w, 2)
    cin = STEM_WIDTH
    out: list[tuple[tuple[int, ...], ...]] = []
    for width, stride in zip(STAGE_WIDTHS, STAGE_STRIDES, strict=True):
        first = (n, cin, h, w)
        h, w = _out_size(h, stride), _out_size(w, stride)
        out.append((first, (n, width, h, w)))
        cin = width
    out.append(((n, cin, h, w),))
    return tuple(out)


def _parts(arch: Arch, input_shape: tuple[int, ...]) -> list[Segment]:
    """The segments of an OFA network, in order (inactive positions are never read)."""
    _res, depths, ks, es = arch
    shapes = _stage_shapes(input_shape)
    parts = [_segment("first", input_shape)]
    for s, d in enumerate(depths):
        for j in range(d):
            p = s * MAX_DEPTH + j
            parts.append(_block_segment(shapes[s][j > 0], s, j, ks[p], es[p]))
    parts.append(_segment("head", shapes[-1][0]))
    return parts


def fast_totals(arch: Arch, input_shape: tuple[int, ...]) -> NetworkTotals:
    """Totals of an OFA network from its segments' (equal to the built graph's)."""
    return sum_totals([p.totals for p in _parts(arch, input_shape)])


_TOKENS = [f"k{k}_e{e}" for k in KERNELS for e in EXPANSIONS]


_K_INDEX = {k: i for i, k in enumerate(KERNELS)}
_E_INDEX = {e: i for i, e in enumerate(EXPANSIONS)}
_BLOCK_TOKENS = {(k, e): (f"k{k}", f"e{e}", f"k{k}_e{e}") for k in KERNELS for e in EXPANSIONS}


@cache
def _active(depths: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """The active positions of these depths, and per position whether it is active (3**5
    entries at most)."""
    on = active_positions(depths)
    return tuple(on), tuple(p in on for p in range(N_POS))


def ofa_graph(arch: Arch, batch: int = 1, input_shape: Sequence[int] | None = None) -> Any:
    """The lazy graph of an OFA network (reference as given; digest and features from its
    canonical form, so references naming one network agree). Its meta comes from look-up
    tables and its totals and summary from per-block segments, so that serving a table of
    networks costs microseconds per network beyond the distinct blocks."""
    shape = _input_shape(arch, batch, input_shape)
    ref = format_ofa(arch)
    res, depths, ks, es = arch
    on, mask = _active(depths)
    canon_ks = [k if a else 0 for k, a in zip(ks, mask, strict=True)]
    canon_es = [e if a else 0 for e, a in zip(es, mask, strict=True)]
    canon_ref = (
        f"{PREFIX}:r{res}-d{''.join(map(str, depths))}-k{''.join(map(str, canon_ks))}"
        f"-e{''.join(map(str, canon_es))}"
    )
    pairs = [(ks[p], es[p]) for p in on]
    meta = {
        "reference": ref,
        "family": PREFIX,
        "canonical": canon_ref,
        "resolution": res,
        "choices": (
            _RES_INDEX[res],
            *(DEPTHS.index(d) for d in depths),
            *(_K_INDEX[k] if k else -1 for k in canon_ks),
            *(_E_INDEX[e] if e else -1 for e in canon_es),
        ),
        "tokens": tuple(t for pair in pairs for t in _BLOCK_TOKENS[pair]),
        "blocks": tuple(
            (_BLOCK_TOKENS[ks[p], es[p]][2], p // MAX_DEPTH) if a else None
            for p, a in enumerate(mask)
        ),
        "scalars": (res / 224.0,),
    }
    return ChainGraph(
        ref,
        build=lambda: build_mbv3(block_specs(arch), shape, ref, meta),
        meta=meta,
        parts=lambda: _parts(arch, shape),
        digest_value=chain_digest(PREFIX, canon_ref, shape),
    )


_parse = lru_cache(maxsize=1 << 14)(parse_ofa)


# --------------------------------------------------------------------------- the batch path

#: The layout of every OFA reference of the default resolutions (``0``: a digit).
_LAYOUT = f"{PREFIX}:r000-d00000-k{'0' * N_POS}-e{'0' * N_POS}"
_IS_DIGIT = np.array([c == "0" for c in _LAYOUT])
_TEMPLATE = np.frombuffer(_LAYOUT.encode(), dtype=np.uint8).astype(np.int16)
#: Where the resolution, the depths, the kernels and the expansions start in it.
_R, _D, _K, _E = 5, 10, 17, 17 + N_POS + 2


def _lookup(values: Sequence[int], zero: int = -1) -> np.ndarray:
    """Digit (or resolution) -> option index; ``zero`` for 0, -1 for anything else."""
    out = np.full(max(values) + 1 if max(values) > 9 else 10, -1, dtype=np.int64)
    out[0] = zero
    out[list(values)] = np.arange(len(values))
    return out


_RES_LOOKUP = np.full(1000, -1, dtype=np.int64)
_RES_LOOKUP[list(RESOLUTIONS)] = np.arange(len(RESOLUTIONS))
_DEPTH_LOOKUP = _lookup(DEPTHS)
_K_LOOKUP = _lookup(KERNELS, zero=-2)  # -2: 0, allowed at an inactive position
_E_LOOKUP = _lookup(EXPANSIONS, zero=-2)
_STAGE_OF = np.arange(N_POS) // MAX_DEPTH
_LATER = (np.arange(N_POS) % MAX_DEPTH > 0).astype(np.int64)


@lru_cache(maxsize=4)
def _summary_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw summary rows at batch ``n`` of every block, by (resolution, stage, later block,
    kernel, expansion), and of the first layers plus the head, by resolution: every part's
    :func:`_fit` evaluated at the sides of the 25 resolutions at once."""
    shapes = [_stage_shapes((n, 3, r, r)) for r in RESOLUTIONS]
    blocks = np.zeros((len(RESOLUTIONS), N_STAGES, 2, len(KERNELS), len(EXPANSIONS), _SUMMARY_N))
    for s in range(N_STAGES):
        for later in (0, 1):
            sides = [sh[s][later][2] for sh in shapes]
            outs = [_out_size(h, 1 if later else STAGE_STRIDES[s]) for h in sides]
            for ki, k in enumerate(KERNELS):
                for ei, e in enumerate(EXPANSIONS):
                    blocks[:, s, later, ki, ei] = np.add.reduce(
                        [
                            spatial_summaries(_fit(kind, n, c, args), outs if on_out else sides)
                            for kind, c, args, on_out in _block_parts(s, later, k, e)
                        ]
                    )
    ends = spatial_summaries(_fit("first", n, 3, ()), list(RESOLUTIONS))
    ends = ends + spatial_summaries(
        _fit("head", n, STAGE_WIDTHS[-1], ()), [sh[-1][0][2] for sh in shapes]
    )
    return blocks, ends


def ofa_batch(references: Sequence[str]) -> list[NetworkGraph | None]:
    """The serving graphs of many ``ofa:`` references at once (:class:`ChainBatch`): all
    parsed as one array of characters (every reference of the space has one layout), their
    one-hot choices, token counts and summary rows computed by array indexing into
    per-(resolution, stage, position, kernel, expansion) tables. ``None`` for a reference
    this does not take (another layout, an invalid one): the per-network path names it."""
    out: list[NetworkGraph | None] = [None] * len(references)
    take = [i for i, r in enumerate(references) if len(r) == len(_LAYOUT) and r.isascii()]
    if not take:
        return out
    text = "".join(references[i] for i in take).encode("ascii")
    chars = np.frombuffer(text, dtype=np.uint8).reshape(len(take), len(_LAYOUT)).astype(np.int16)
    digits = chars - ord("0")
    ok = np.all(np.where(_IS_DIGIT, (digits >= 0) & (digits <= 9), chars == _TEMPLATE), axis=1)
    digits = np.where(_IS_DIGIT, digits, 0)
    res = _RES_LOOKUP[digits[:, _R] * 100 + digits[:, _R + 1] * 10 + digits[:, _R + 2]]
    depth = _DEPTH_LOOKUP[digits[:, _D : _D + N_STAGES]]
    k = _K_LOOKUP[digits[:, _K : _K + N_POS]]
    e = _E_LOOKUP[digits[:, _E : _E + N_POS]]
    n_active = np.array(DEPTHS)[np.maximum(depth, 0)]  # (any depth where it is invalid)
    active = (np.arange(N_POS) % MAX_DEPTH)[None, :] < np.repeat(n_active, MAX_DEPTH, axis=1)
    ok &= (res >= 0) & np.all(depth >= 0, axis=1)
    ok &= np.all(np.where(active, (k >= 0) & (e >= 0), (k != -1) & (e != -1)), axis=1)
    good = np.flatnonzero(ok)
    if not len(good):
        return out
    res, depth, active = res[good], depth[good], active[good]
    k, e = np.where(active, k[good], -1), np.where(active, e[good], -1)
    m = len(good)
    rows = np.repeat(np.arange(m), N_POS)[active.ravel()]
    pair = (k * len(EXPANSIONS) + e)[active]
    tokens = np.concatenate(
        [
            np.bincount(rows * 3 + k[active], minlength=m * 3).reshape(m, 3),
            np.bincount(rows * 3 + e[active], minlength=m * 3).reshape(m, 3),
            np.bincount(rows * 9 + pair, minlength=m * 9).reshape(m, 9),
        ],
        axis=1,
    )
    blocks, ends = _summary_tables(1)
    per_block = blocks[res[:, None], _STAGE_OF[None, :], _LATER[None, :], k, e]
    summary = ends[res] + np.where(active[:, :, None], per_block, 0.0).sum(axis=1)
    refs = [references[take[int(i)]] for i in good]
    batch = ChainBatch(
        PREFIX,
        refs,
        {
            "choices": np.concatenate([res[:, None], depth, k, e], axis=1),
            "tokens": tokens,
            "summary": summary,
        },
        {"tokens": tuple(_VOCAB)},
        lambda row: ofa_graph(_parse(refs[row][len(PREFIX) + 1 :])),
    )
    for i, g in zip(good, batch.graphs(range(m)), strict=True):
        out[take[int(i)]] = g
    return out


def _resolve(body: str, opts: ResolveOptions) -> NetworkGraph:
    arch = _parse(body)
    return ofa_graph(arch, opts.batch, opts.input_shape)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the plug-in

ONEHOT = "ofa-onehot"
COUNTS = "ofa-counts"
GRAPH = "ofa-blocks"
_POSITION_NAMES = [
    "r",
    *(f"d{s + 1}" for s in range(N_STAGES)),
    *(f"k{p + 1}" for p in range(N_POS)),
    *(f"e{p + 1}" for p in range(N_POS)),
]
_OPTIONS = [
    [str(r) for r in RESOLUTIONS],
    *([[str(d) for d in DEPTHS]] * N_STAGES),
    *([[str(k) for k in KERNELS]] * N_POS),
    *([[str(e) for e in EXPANSIONS]] * N_POS),
]
_VOCAB = [*(f"k{k}" for k in KERNELS), *(f"e{e}" for e in EXPANSIONS), *_TOKENS]


class OfaSpace(SearchSpace):
    """OFA MobileNetV3 as a search-space plug-in.

    Genotype: resolution index, 5 depth indices, 20 kernel and 20 expansion indices (46 ints;
    inactive positions -1). Mutation changes one of the resolution, a depth (blocks that become
    active get random k/e) or an active block's kernel or expansion; generated references are
    canonical. Encodings: the one-hot of all choices (inactive positions all zero), counts of
    kernels/expansions/(k, e) pairs over the active blocks, the block-chain graph (with the
    resolution on every block node) for the GCN.
    """

    # Chosen on validation data (benchmarks/space_feature_choice.py: LightGBM, 900 training /
    # 100 validation networks): adding the summary lowered the validation MAPE on every device
    # tried (FBNet 1080ti_64 1.92 -> 1.47 %, pixel3 3.06 -> 1.01 %; OFA titan_xp_64 4.29 ->
    # 2.01 %): unlike nb201's cells these networks have no dead ops the IR would drop.
    vector_features = f"{ONEHOT}+{COUNTS}+summary"
    onehot = ONEHOT
    counts = COUNTS
    graph = GRAPH
    vector_encoders: ClassVar[dict[str, Callable[[], Any]]] = {
        ONEHOT: lambda: ChoiceOneHotEncoder(PREFIX, _POSITION_NAMES, _OPTIONS),
        COUNTS: lambda: TokenCountEncoder(PREFIX, _VOCAB),
    }
    graph_encoders: ClassVar[dict[str, Callable[[bool], Any]]] = {
        GRAPH: lambda graph_features: BlockChainGraphEncoder(PREFIX, _TOKENS, N_POS, N_STAGES, 1),
    }

    def __init__(self) -> None:
        size = len(RESOLUTIONS) * sum(9**d for d in DEPTHS) ** N_STAGES
        super().__init__(PREFIX, None, "Once-for-All MobileNetV3 (width 1.0), ImageNet", size)

    def parse(self, body: str) -> Arch:
        return _parse(body)

    def canonical(self, reference: str) -> str:
        return canonical(reference)

    def fast_resolve(self, reference: str) -> NetworkGraph | None:
        return own_graph(reference, PREFIX, _parse, ofa_graph)

    def fast_resolve_many(self, references: Sequence[str]) -> list[NetworkGraph | None]:
        return ofa_batch(references)

    def random_genotype(self, rng: np.random.Generator) -> Genotype:
        res = int(rng.integers(len(RESOLUTIONS)))
        depths = [int(i) for i in rng.integers(0, len(DEPTHS), N_STAGES)]
        ks = [int(i) for i in rng.integers(0, len(KERNELS), N_POS)]
        es = [int(i) for i in rng.integers(0, len(EXPANSIONS), N_POS)]
        return self._canonical_genotype([res, *depths, *ks, *es])

    @staticmethod
    def _canonical_genotype(g: list[int]) -> Genotype:
        depths = [DEPTHS[i] for i in g[1 : 1 + N_STAGES]]
        active = set(active_positions(depths))
        base = 1 + N_STAGES
        for p in range(N_POS):
            if p not in active:
                g[base + p] = g[base + N_POS + p] = -1
        return tuple(g)

    def mutate(self, genotype: Genotype, rng: np.random.Generator) -> Genotype:
        g = list(genotype)
        base = 1 + N_STAGES
        depths = [DEPTHS[i] for i in g[1:base]]
        active = active_positions(depths)
        genes = [
            0,
            *range(1, base),
            *(base + p for p in active),
            *(base + N_POS + p for p in active),
        ]
        gene = genes[int(rng.integers(len(genes)))]
        n_opts = len(RESOLUTIONS) if gene == 0 else 3
        new = int(rng.integers(n_opts - 1))
        g[gene] = new + (new >= g[gene])
        if 1 <= gene < base:  # a depth changed: new blocks get random choices
            now = set(active_positions([DEPTHS[i] for i in g[1:base]]))
            for p in sorted(now - set(active)):
                g[base + p] = int(rng.integers(len(KERNELS)))
                g[base + N_POS + p] = int(rng.integers(len(EXPANSIONS)))
        return self._canonical_genotype(g)

    def format_genotype(self, genotype: Genotype) -> str:
        base = 1 + N_STAGES
        ks = tuple(KERNELS[i] if i >= 0 else 0 for i in genotype[base : base + N_POS])
        es = tuple(EXPANSIONS[i] if i >= 0 else 0 for i in genotype[base + N_POS :])
        depths = tuple(DEPTHS[i] for i in genotype[1:base])
        return format_ofa((RESOLUTIONS[genotype[0]], depths, ks, es))

    def genotype(self, reference: str) -> Genotype:
        res, depths, ks, es = canonical_arch(_parse(reference.removeprefix(f"{PREFIX}:")))
        g = [RESOLUTIONS.index(res), *(DEPTHS.index(d) for d in depths)]
        g += [KERNELS.index(k) if k else -1 for k in ks]
        g += [EXPANSIONS.index(e) if e else -1 for e in es]
        return tuple(g)


#: The ``ofa:`` reference scheme (registered in ``references.BUILTIN_SCHEMES``).
SCHEME = Scheme(
    PREFIX,
    _resolve,
    validate=_parse,
    help="Once-for-All MobileNetV3 r<res>-d<5 depths>-k<20 kernels>-e<20 expansions>",
)
#: The ofa space plug-in.
SPACE = OfaSpace()
