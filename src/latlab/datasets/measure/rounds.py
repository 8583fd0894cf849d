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
    ``blocks_ms[m]`` one time per round it took part in (the block's mean run time, ms) and
    ``taken[m]`` the indices of those rounds (every round, unless a budgeted member stopped
    early: :func:`time_rounds` with several budget members)."""

    samples_ns: list[list[int]]
    blocks_ms: list[np.ndarray]
    runs_per_block: list[int]
    taken: list[np.ndarray]

    @property
    def rounds(self) -> int:
        """Rounds timed (member 0's count, which is every round unless it stopped early)."""
        return len(self.blocks_ms[0]) if self.blocks_ms else 0


class MemberFailed(Exception):
    """A member's run raised inside :func:`time_rounds` (``member``: its index; the run's own
    exception is the ``__cause__``), so that the caller can name the network that failed."""

    def __init__(self, member: int) -> None:
        super().__init__(f"member {member} failed")
        self.member = member


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
    max_rounds: int | Sequence[int],
    min_rounds: int | Sequence[int],
    budget_s: float,
    budget_member: int | Sequence[int] | None = None,
) -> Rounds:
    """Time ``runs`` in interleaved rounds of ``blocks[m]`` runs each (default 1).

    Stops after ``max_rounds`` rounds, or once ``budget_s`` seconds are spent and at least
    ``min_rounds`` rounds are done. The budget counts the wall time of all rounds, or with
    ``budget_member`` only that member's own timed runs (a network's budget does not shrink
    because a reference runs beside it). With several budget members (a *group* of networks
    timed beside one reference), ``max_rounds`` and ``min_rounds`` are per budget member
    (sequences, or one number for all): each leaves the rounds when its own rule says stop,
    the members that are not budgeted (the reference) run in every round, and the rounds end
    when every budget member has left. The garbage collector is paused: a collection inside a
    sample would add milliseconds to one run. A run that raises stops the rounds with
    :class:`MemberFailed` naming its member.
    """
    sizes = list(blocks) if blocks is not None else [1] * len(runs)
    budgeted = (
        [] if budget_member is None
        else [budget_member] if isinstance(budget_member, int)
        else list(budget_member)
    )  # fmt: skip
    per = max(len(budgeted), 1)
    most = [max_rounds] * per if isinstance(max_rounds, int) else list(max_rounds)
    least = [min_rounds] * per if isinstance(min_rounds, int) else list(min_rounds)
    if len(most) != per or len(least) != per:
        raise ValueError("max_rounds and min_rounds need one value per budget member")
    samples: list[list[int]] = [[] for _ in runs]
    medians: list[list[float]] = [[] for _ in runs]
    taken: list[list[int]] = [[] for _ in runs]
    budget_ns = int(budget_s * 1e9)
    spent = dict.fromkeys(budgeted, 0)
    active = set(range(len(runs)))
    gc_was = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        rounds = 0
        while rounds < max(most):
            for m, run in enumerate(runs):
                if m not in active:
                    continue
                block = []
                try:
                    for _ in range(sizes[m]):
                        t0 = clock()
                        run()
                        block.append(clock() - t0)
                except Exception as exc:
                    raise MemberFailed(m) from exc
                samples[m].extend(block)
                medians[m].append(sum(block) / len(block) / 1e6)
                taken[m].append(rounds)
                if m in spent:
                    spent[m] += sum(block)
            rounds += 1
            if not budgeted:
                if rounds >= least[0] and time.perf_counter_ns() - start >= budget_ns:
                    break
                continue
            for j, m in enumerate(budgeted):
                if m in active and (
                    rounds >= most[j] or (rounds >= least[j] and spent[m] >= budget_ns)
                ):
                    active.discard(m)
            if active.isdisjoint(budgeted):
                break
    finally:
        if gc_was:
            gc.enable()
    return Rounds(
        samples,
        [np.asarray(x) for x in medians],
        sizes,
        [np.asarray(t, dtype=int) for t in taken],
    )
