"""Timing several prepared networks in interleaved rounds: the one implementation.

A round runs every member once as a *block* of consecutive runs (member 0's block, then member
1's, ...), each run timed alone. Members timed in the same round meet the same machine: a
change of load, clock frequency or a neighbour's memory traffic between two rounds reaches all
of them, so per-round *ratios* (drift correction, :mod:`.protocol`) and *differences* (smart
padding, :mod:`latlab.datasets.bench.campaign`) cancel it where separately taken medians would
not.

A member's time in a round is the **mean** run time of its block, and paired timing sizes the
blocks to about the same duration (:func:`runs_per_block`, ``BLOCK_MS`` or more): on a shared
machine the scheduler takes the cores away in slices of a few milliseconds, so a block of many
short runs and a block of one long run lose the same *share* of their wall time only when
both span several slices and their means (not medians, which drop preempted short runs but
cannot drop the preemption inside a long run) are compared. The median over rounds of the
per-round ratios then drops rounds that one unlucky preemption hit.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: The shortest block of paired timing (ms): several scheduler slices.
BLOCK_MS = 20.0
#: A reference block is sized like the network's block, but at most this long (ms).
MAX_REFERENCE_BLOCK_MS = 50.0
#: The most runs in one block (networks of microseconds).
MAX_RUNS = 10_000


def runs_per_block(estimate_ms: float, target_ms: float = BLOCK_MS) -> int:
    """Runs per block for a member of ``estimate_ms``: about ``target_ms`` of work, at least 1."""
    want = math.ceil(target_ms / max(estimate_ms, 1e-6))
    return int(min(max(want, 1), MAX_RUNS))


def paired_blocks(
    network_ms: float, reference_ms: float, block_ms: float = BLOCK_MS
) -> tuple[int, int]:
    """Runs per block of a network and its reference, for blocks of about equal duration:
    at least ``block_ms``, the reference's at most ``MAX_REFERENCE_BLOCK_MS`` (scaled with
    ``block_ms``) however long one run of the network is."""
    k_net = runs_per_block(network_ms, block_ms)
    cap = MAX_REFERENCE_BLOCK_MS * block_ms / BLOCK_MS
    block = min(max(network_ms * k_net, block_ms), cap)
    return k_net, runs_per_block(reference_ms, block)


@dataclass
class Rounds:
    """The samples of interleaved rounds: ``samples_ns[m]`` all runs of member ``m`` in order,
    ``blocks_ms[m]`` one time per round (the block's mean run time, ms)."""

    samples_ns: list[list[int]]
    blocks_ms: list[np.ndarray]
    runs_per_block: list[int]

    @property
    def rounds(self) -> int:
        return len(self.blocks_ms[0]) if self.blocks_ms else 0


def warm_up_rounds(
    runs: Sequence[Callable[[], None]], min_rounds: int, max_rounds: int, min_s: float
) -> int:
    """Run every member in turn, at least ``min_rounds`` times and ``min_s`` seconds (at most
    ``max_rounds``): allocations and caches settle before anything is timed."""
    start = time.perf_counter()
    done = 0
    while done < min_rounds or (done < max_rounds and time.perf_counter() - start < min_s):
        for run in runs:
            run()
        done += 1
    return done


def time_rounds(
    runs: Sequence[Callable[[], None]],
    clock: Callable[[], int],
    *,
    blocks: Sequence[int] | None = None,
    max_rounds: int,
    min_rounds: int,
    budget_s: float,
    budget_member: int | None = None,
) -> Rounds:
    """Time ``runs`` in interleaved rounds of ``blocks[m]`` runs each (default 1).

    Stops after ``max_rounds`` rounds, or once ``budget_s`` seconds are spent and at least
    ``min_rounds`` rounds are done. The budget counts the wall time of all rounds, or with
    ``budget_member`` only that member's own timed runs (a network's budget does not shrink
    because a reference runs beside it). The garbage collector is paused: a collection inside
    a sample would add milliseconds to one run.
    """
    sizes = list(blocks) if blocks is not None else [1] * len(runs)
    samples: list[list[int]] = [[] for _ in runs]
    medians: list[list[float]] = [[] for _ in runs]
    budget_ns = int(budget_s * 1e9)
    spent_member = 0
    gc_was = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        rounds = 0
        while rounds < max_rounds:
            for m, run in enumerate(runs):
                block = []
                for _ in range(sizes[m]):
                    t0 = clock()
                    run()
                    block.append(clock() - t0)
                samples[m].extend(block)
                medians[m].append(sum(block) / len(block) / 1e6)
                if m == budget_member:
                    spent_member += sum(block)
            rounds += 1
            spent = spent_member if budget_member is not None else time.perf_counter_ns() - start
            if rounds >= min_rounds and spent >= budget_ns:
                break
    finally:
        if gc_was:
            gc.enable()
    return Rounds(samples, [np.asarray(x) for x in medians], sizes)
