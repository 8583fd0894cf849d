"""The NAS-Bench-201 cell: operation vocabulary, edge order and arch-string parsing.

It lives with the encoders because the nb201 one-hot and cell-graph encoders read it; the
nb201 search space (:mod:`latlab.datasets.spaces.nb201`) builds networks from it.

An arch string lists the six edges of the 4-node cell in the order
``|node1<-0|+|node2<-0|node2<-1|+|node3<-0|node3<-1|node3<-2|``, each as ``op~source``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import cache

from latlab.errors import NetworkReferenceError

#: Operations in NAS-Bench-201's canonical order (one-hot position).
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (target node, source node) of each of the six edges, in arch-string order.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
N_NODES = 4


def live_edges(ops: Sequence[str]) -> tuple[bool, ...]:
    """Which of the six edges lie on a path from the cell input to its output.

    An edge is live when its op is not ``none``, its source node carries a value (is reached
    from the input through non-``none`` edges) and its target node reaches the output.
    """
    has_value = [True, False, False, False]
    for (dst, src), op in zip(EDGES, ops, strict=True):  # edges are ordered by target node
        if op != "none" and has_value[src]:
            has_value[dst] = True
    needed = [False, False, False, True]
    live = [False] * len(EDGES)
    for k in reversed(range(len(EDGES))):
        dst, src = EDGES[k]
        if ops[k] != "none" and has_value[src] and needed[dst]:
            live[k] = True
            needed[src] = True
    return tuple(live)


def parse_arch(arch: str) -> tuple[str, ...]:
    """The six edge operations of an arch string; raises naming the string when malformed."""
    text = arch.strip()
    groups = [g for g in text.strip("|").split("|+|")] if text.startswith("|") else []
    ops: list[str] = []
    try:
        if len(groups) != 3:
            raise ValueError("expected three node groups separated by '|+|'")
        for node, group in enumerate(groups, start=1):
            edges = group.split("|")
            if len(edges) != node:
                raise ValueError(f"node {node} must have {node} incoming edge(s)")
            for src, edge in enumerate(edges):
                op, _, source = edge.partition("~")
                if op not in OPS:
                    raise ValueError(f"unknown operation {op!r}")
                if source != str(src):
                    raise ValueError(f"edge {edge!r} must come from node {src}")
                ops.append(op)
    except ValueError as exc:
        raise NetworkReferenceError(f"malformed NAS-Bench-201 arch {arch!r}: {exc}") from None
    return tuple(ops)


def format_arch(ops: tuple[str, ...] | list[str]) -> str:
    """Inverse of :func:`parse_arch`."""
    if len(ops) != len(EDGES) or any(op not in OPS for op in ops):
        raise NetworkReferenceError(f"an nb201 cell needs six ops from {OPS}, got {ops!r}")
    parts, k = [], 0
    for node in range(1, N_NODES):
        parts.append("|".join(f"{ops[k + s]}~{s}" for s in range(node)))
        k += node
    return "|" + "|+|".join(parts) + "|"


#: What :func:`format_arch` writes for six ops, as one format string (formatting the whole
#: space with it takes milliseconds; format_arch validates each cell first).
_ARCH_FORMAT = "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|"


@cache
def arch_index() -> dict[str, tuple[str, ...]]:
    """Every canonical arch string -> its six ops (15,625 entries, built once), in
    :func:`all_archs` order: a dictionary look-up where callers meet the space's cells over and
    over (serving, feature encoding) instead of parsing each."""
    return {_ARCH_FORMAT.format(*ops): ops for ops in itertools.product(OPS, repeat=len(EDGES))}


def all_archs() -> list[str]:
    """All 15,625 arch strings, in a fixed order (op index base 5, first edge slowest)."""
    return list(arch_index())
