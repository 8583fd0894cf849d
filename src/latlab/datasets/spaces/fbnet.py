"""FBNet (HW-NAS-Bench's FBNet space as HELP uses it, CIFAR-100): ``fbnet:`` references.

The network (input 3x32x32, 100 classes):

* stem: Conv 3x3, 3 -> 16, stride 1, + BN + ReLU;
* 22 searchable blocks in 7 stages of [1, 4, 4, 4, 4, 4, 1] blocks, widths
  [16, 24, 32, 64, 112, 184, 352], stride of each stage's first block [1, 1, 2, 2, 1, 2, 1];
* head: Conv 1x1, 352 -> 1504, + BN + ReLU, global average pooling, FC 1504 -> 100.

A block is one of :data:`CHOICES`. ``kK_eE[_gG]`` from C_in to C_out with stride s: Conv 1x1
C_in -> E·C_in (groups G) + BN + ReLU, a channel shuffle when G > 1, depthwise Conv KxK
(stride s, padding ceil((K - s)/2)) + BN + ReLU, Conv 1x1 E·C_in -> C_out (groups G) + BN, plus
the input when C_in = C_out and s = 1. ``skip`` is the identity when s = 1 and C_in = C_out,
else Conv 1x1 (stride s) + BN + ReLU. The layers are written from this specification (HW-NAS-Bench
and HELP publish the same space); the builder is checked against an independent torch
implementation of it in the tests.

A reference is ``fbnet:`` + the 22 block names joined by ``-``; every such string names a
distinct network (it is its own canonical form). References resolve to a
:class:`~latlab.encoders.ir.LazyNetworkGraph`: totals from per-block segment totals
(:mod:`latlab.datasets.spaces.chain`), layers built on first access.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from latlab.datasets.references import ResolveOptions, Scheme
from latlab.datasets.spaces.base import Genotype, SearchSpace
from latlab.datasets.spaces.chain import (
    ChainBatch,
    ChainGraph,
    Segment,
    chain_digest,
    own_graph,
    segment_of,
    sum_totals,
)
from latlab.encoders.builder import NetBuilder
from latlab.encoders.choices import (
    BlockChainGraphEncoder,
    ChoiceOneHotEncoder,
    TokenCountEncoder,
)
from latlab.encoders.ir import NetworkGraph, NetworkTotals
from latlab.encoders.vector import SUMMARY_FEATURES
from latlab.errors import NetworkReferenceError

PREFIX = "fbnet"
#: Block choices, in one-hot order.
CHOICES: tuple[str, ...] = (
    "k3_e1",
    "k3_e1_g2",
    "k3_e3",
    "k3_e6",
    "k5_e1",
    "k5_e1_g2",
    "k5_e3",
    "k5_e6",
    "skip",
)
STAGE_BLOCKS: tuple[int, ...] = (1, 4, 4, 4, 4, 4, 1)
STAGE_WIDTHS: tuple[int, ...] = (16, 24, 32, 64, 112, 184, 352)
STAGE_STRIDES: tuple[int, ...] = (1, 1, 2, 2, 1, 2, 1)
STEM_WIDTH = 16
HEAD_WIDTH = 1504
NUM_CLASSES = 100
INPUT_CHW: tuple[int, int, int] = (3, 32, 32)
N_BLOCKS = sum(STAGE_BLOCKS)  # 22


def _positions() -> tuple[tuple[int, int, int, int], ...]:
    out, cin = [], STEM_WIDTH
    for stage, (n, width) in enumerate(zip(STAGE_BLOCKS, STAGE_WIDTHS, strict=True)):
        for j in range(n):
            out.append((stage, cin, width, STAGE_STRIDES[stage] if j == 0 else 1))
            cin = width
    return tuple(out)


#: (stage, C_in, C_out, stride) of each of the 22 block positions.
POSITIONS = _positions()
_CHOICE_INDEX = {c: i for i, c in enumerate(CHOICES)}
_BLOCK = re.compile(r"k(\d)_e(\d)(?:_g(\d))?$")


def parse_fbnet(body: str) -> Genotype:
    """The 22 block-choice indices of a reference body; raises naming the reference."""
    names = body.strip().split("-")
    ref = f"{PREFIX}:{body}"
    if len(names) != N_BLOCKS:
        raise NetworkReferenceError(
            f"malformed FBNet reference {ref!r}: expected {N_BLOCKS} block names joined by "
            f"'-', got {len(names)}"
        )
    out = []
    for i, n in enumerate(names):
        idx = _CHOICE_INDEX.get(n)
        if idx is None:
            raise NetworkReferenceError(
                f"malformed FBNet reference {ref!r}: block {i + 1} {n!r} is not one of "
                f"{', '.join(CHOICES)}"
            )
        out.append(idx)
    return tuple(out)


def format_fbnet(genotype: Sequence[int]) -> str:
    """The reference of 22 block-choice indices."""
    if len(genotype) != N_BLOCKS or any(not 0 <= int(i) < len(CHOICES) for i in genotype):
        raise NetworkReferenceError(f"an FBNet network needs {N_BLOCKS} choices, got {genotype!r}")
    return f"{PREFIX}:" + "-".join(CHOICES[int(i)] for i in genotype)


def _block(b: NetBuilder, x: str, choice: str, cout: int, stride: int) -> str:
    cin = b.shape(x)[1]
    residual = stride == 1 and cin == cout
    if choice == "skip":
        if residual:
            return x
        return b.relu(b.bn(b.conv(x, cout, 1, stride, padding=0)))
    m = _BLOCK.match(choice)
    assert m is not None  # choices are validated by the parser
    k, e, g = int(m[1]), int(m[2]), int(m[3] or 1)
    y = b.relu(b.bn(b.conv(x, e * cin, 1, padding=0, groups=g)))
    if g > 1:
        y = b.channel_shuffle(y, g)
    y = b.relu(b.bn(b.dwconv(y, k, stride, padding=-(-(k - stride) // 2))))
    y = b.bn(b.conv(y, cout, 1, padding=0, groups=g))
    return b.add(x, y) if residual else y


def _stem(b: NetBuilder, x: str) -> str:
    return b.relu(b.bn(b.conv(x, STEM_WIDTH, 3, padding=1)))


def _head(b: NetBuilder, x: str) -> str:
    y = b.relu(b.bn(b.conv(x, HEAD_WIDTH, 1, padding=0)))
    return b.gemm(b.flatten(b.global_avgpool(y)), NUM_CLASSES)


def build_fbnet(
    genotype: Sequence[int], input_shape: tuple[int, ...], name: str, meta: dict[str, Any]
) -> NetworkGraph:
    """The fully built IR of an FBNet network."""
    b = NetBuilder(name, input_shape, meta=meta)
    x = _stem(b, b.input)
    for (_stage, _cin, cout, stride), i in zip(POSITIONS, genotype, strict=True):
        x = _block(b, x, CHOICES[i], cout, stride)
    _head(b, x)
    return b.build()


def _input_shape(batch: int, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = tuple(int(d) for d in input_shape) if input_shape else (batch, *INPUT_CHW)
    if len(shape) != 4 or shape[1] != 3 or min(shape) < 1 or shape[2] % 8 or shape[3] % 8:
        raise NetworkReferenceError(
            f"fbnet networks take an input (N, 3, H, W) with H, W multiples of 8, got {shape}"
        )
    return shape


# --------------------------------------------------------------------------- fast totals


@lru_cache(maxsize=64)
def _position_shapes(input_shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The input shape of each block position and of the head."""
    n, _, h, w = input_shape
    shapes = []
    for _stage, cin, _cout, stride in POSITIONS:
        shapes.append((n, cin, h, w))
        h, w = -(-h // stride), -(-w // stride)
    shapes.append((n, STAGE_WIDTHS[-1], h, w))
    return tuple(shapes)


@lru_cache(maxsize=4096)
def _segment(kind: str, shape: tuple[int, ...], block: tuple[int, int, int] = (-1, -1, -1)) -> Any:
    """One segment built alone (``None`` for an identity block); a block by ``(C_out, stride,
    choice)`` on its input shape, so that the positions of a stage after its first share
    their blocks' builds."""
    b = NetBuilder(kind, shape)
    if kind == "stem":
        _stem(b, b.input)
    elif kind == "head":
        _head(b, b.input)
    else:
        cout, stride, choice = block
        if _block(b, b.input, CHOICES[choice], cout, stride) == b.input:
            return None
    return segment_of(b.build())


def _block_segment(shape: tuple[int, ...], position: int, choice: int) -> Any:
    """The segment of ``choice`` at block ``position`` (input ``shape``)."""
    _stage, _cin, cout, stride = POSITIONS[position]
    return _segment("block", shape, (cout, stride, choice))


def _parts(genotype: Sequence[int], input_shape: tuple[int, ...]) -> list[Segment]:
    """The segments of an FBNet network, in order (identity blocks have none)."""
    shapes = _position_shapes(input_shape)
    parts = [_segment("stem", input_shape)]
    parts += [_block_segment(shapes[p], p, int(c)) for p, c in enumerate(genotype)]
    parts.append(_segment("head", shapes[-1]))
    return [t for t in parts if t is not None]


def fast_totals(genotype: Sequence[int], input_shape: tuple[int, ...]) -> NetworkTotals:
    """Totals of an FBNet network from its segments' (equal to the built graph's)."""
    return sum_totals([p.totals for p in _parts(genotype, input_shape)])


#: Per position and choice the block's tokens, and its ``(token, stage)``.
_TOKENS = tuple(
    tuple((c, f"s{stage}={c}") for c in CHOICES) for stage, _cin, _cout, _s in POSITIONS
)
_BLOCKS = tuple(tuple((c, stage) for c in CHOICES) for stage, _cin, _cout, _s in POSITIONS)


def fbnet_graph(genotype: Genotype, batch: int = 1, input_shape: Sequence[int] | None = None):
    """The lazy graph of an FBNet network: totals, summary and digest from its segments and
    look-up tables, layers on demand."""
    shape = _input_shape(batch, input_shape)
    ref = format_fbnet(genotype)
    meta = {
        "reference": ref,
        "family": PREFIX,
        "choices": tuple(genotype),
        "tokens": tuple(t for p, c in enumerate(genotype) for t in _TOKENS[p][c]),
        "blocks": tuple(_BLOCKS[p][c] for p, c in enumerate(genotype)),
    }
    return ChainGraph(
        ref,
        build=lambda: build_fbnet(genotype, shape, ref, meta),
        meta=meta,
        parts=lambda: _parts(genotype, shape),
        digest_value=chain_digest(PREFIX, ref, shape),
    )


_parse = lru_cache(maxsize=1 << 14)(parse_fbnet)


# --------------------------------------------------------------------------- the batch path

_STAGE_OF = np.array([stage for stage, _cin, _cout, _s in POSITIONS])


@lru_cache(maxsize=4)
def _summary_tables(input_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Raw summary rows of every (position, choice) block (zero for an identity block), and
    of the stem plus the head: the per-network path's segments, each distinct one built once
    (108 blocks: a stage's blocks after its first are alike)."""
    shapes = _position_shapes(input_shape)
    blocks = np.zeros((N_BLOCKS, len(CHOICES), len(SUMMARY_FEATURES)))
    for p in range(N_BLOCKS):
        for c in range(len(CHOICES)):
            seg = _block_segment(shapes[p], p, c)
            if seg is not None:
                blocks[p, c] = seg.summary
    ends = _segment("stem", input_shape).summary + _segment("head", shapes[-1]).summary
    return blocks, ends


def fbnet_batch(references: Sequence[str]) -> list[NetworkGraph | None]:
    """The serving graphs of many ``fbnet:`` references at once (:class:`ChainBatch`): every
    block name mapped to its choice in one pass, the one-hot choices, block counts and
    summary rows computed by array indexing into per-(position, choice) tables. ``None`` for
    a reference this does not take (an invalid one): the per-network path names it."""
    out: list[NetworkGraph | None] = [None] * len(references)
    lead = f"{PREFIX}:"
    take, names = [], []
    for i, r in enumerate(references):
        if r.startswith(lead):
            parts = r[len(lead) :].split("-")
            if len(parts) == N_BLOCKS:
                take.append(i)
                names += parts
    if not take:
        return out
    index = _CHOICE_INDEX.get
    idx = np.array([index(n, -1) for n in names], dtype=np.int64).reshape(len(take), N_BLOCKS)
    good = np.flatnonzero(np.all(idx >= 0, axis=1))
    if not len(good):
        return out
    idx = idx[good]
    m, nc = len(good), len(CHOICES)
    rows = np.repeat(np.arange(m), N_BLOCKS)
    n_stages = len(STAGE_BLOCKS)
    tokens = np.concatenate(
        [
            np.bincount(rows * nc + idx.ravel(), minlength=m * nc).reshape(m, nc),
            np.bincount(
                rows * (n_stages * nc) + np.tile(_STAGE_OF * nc, m) + idx.ravel(),
                minlength=m * n_stages * nc,
            ).reshape(m, n_stages * nc),
        ],
        axis=1,
    )
    blocks, ends = _summary_tables(_input_shape(1, None))
    summary = ends + blocks[np.arange(N_BLOCKS)[None, :], idx].sum(axis=1)
    refs = [references[take[int(i)]] for i in good]
    batch = ChainBatch(
        PREFIX,
        refs,
        {"choices": idx, "tokens": tokens, "summary": summary},
        {"tokens": tuple(_VOCAB)},
        lambda row: fbnet_graph(tuple(int(c) for c in idx[row])),
    )
    for j, g in zip(good, batch.graphs(range(m)), strict=True):
        out[take[int(j)]] = g
    return out


def _resolve(body: str, opts: ResolveOptions) -> NetworkGraph:
    return fbnet_graph(_parse(body), opts.batch, opts.input_shape)


# --------------------------------------------------------------------------- the plug-in

ONEHOT = "fbnet-onehot"
COUNTS = "fbnet-counts"
GRAPH = "fbnet-blocks"
_POSITION_NAMES = [f"b{i + 1}" for i in range(N_BLOCKS)]
_VOCAB = [*CHOICES, *(f"s{s}={c}" for s in range(len(STAGE_BLOCKS)) for c in CHOICES)]


class FbnetSpace(SearchSpace):
    """FBNet as a search-space plug-in. Genotype: 22 block-choice indices; mutation changes one
    block. Encodings: one-hot of the block choices (22 x 9), block counts (overall and per
    stage), the block-chain graph for the GCN."""

    # Chosen on validation data (benchmarks/space_feature_choice.py: LightGBM, 900 training /
    # 100 validation networks): adding the summary lowered the validation MAPE on every device
    # tried (FBNet 1080ti_64 1.92 -> 1.47 %, pixel3 3.06 -> 1.01 %; OFA titan_xp_64 4.29 ->
    # 2.01 %): unlike nb201's cells these networks have no dead ops the IR would drop.
    vector_features = f"{ONEHOT}+{COUNTS}+summary"
    onehot = ONEHOT
    counts = COUNTS
    graph = GRAPH
    vector_encoders: ClassVar[dict[str, Callable[[], Any]]] = {
        ONEHOT: lambda: ChoiceOneHotEncoder(PREFIX, _POSITION_NAMES, [list(CHOICES)] * N_BLOCKS),
        COUNTS: lambda: TokenCountEncoder(PREFIX, _VOCAB),
    }
    graph_encoders: ClassVar[dict[str, Callable[[bool], Any]]] = {
        GRAPH: lambda graph_features: BlockChainGraphEncoder(
            PREFIX, list(CHOICES), N_BLOCKS, len(STAGE_BLOCKS), 0
        ),
    }

    def __init__(self) -> None:
        super().__init__(
            PREFIX,
            None,
            "FBNet (HW-NAS-Bench, CIFAR-100): 22 blocks x 9 choices",
            len(CHOICES) ** N_BLOCKS,
        )

    def parse(self, body: str) -> Genotype:
        return _parse(body)

    def random_genotype(self, rng: np.random.Generator) -> Genotype:
        return tuple(int(i) for i in rng.integers(0, len(CHOICES), N_BLOCKS))

    def mutate(self, genotype: Genotype, rng: np.random.Generator) -> Genotype:
        pos = int(rng.integers(N_BLOCKS))
        new = int(rng.integers(len(CHOICES) - 1))
        new += new >= genotype[pos]
        out = list(genotype)
        out[pos] = new
        return tuple(out)

    def format_genotype(self, genotype: Genotype) -> str:
        return format_fbnet(genotype)

    def genotype(self, reference: str) -> Genotype:
        return _parse(reference.removeprefix(f"{PREFIX}:"))

    def fast_resolve(self, reference: str) -> NetworkGraph | None:
        return own_graph(reference, PREFIX, _parse, fbnet_graph)

    def fast_resolve_many(self, references: Sequence[str]) -> list[NetworkGraph | None]:
        return fbnet_batch(references)


#: The ``fbnet:`` reference scheme (registered in ``references.BUILTIN_SCHEMES``).
SCHEME = Scheme(
    PREFIX,
    _resolve,
    validate=_parse,
    help="FBNet (HW-NAS-Bench, CIFAR-100): 22 block names joined by '-'",
)
#: The fbnet space plug-in.
SPACE = FbnetSpace()
