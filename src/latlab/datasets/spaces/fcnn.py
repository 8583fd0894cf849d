"""Fully connected networks: ``fcnn:IN-H1-...-OUT`` and the FCNN estimator's search space.

A network is Gemm layers with ReLU between them (none after the last), on a 1-D input of IN
features. The paper's space (Beglaryan & Ringhofer) has 1-5 hidden layers of 1-50 neurons; the
``fcnn-wide`` space goes up to thousands of neurons, where latency is no longer dominated by
per-layer overheads.
"""

from __future__ import annotations

import numpy as np

from latlab.datasets.references import ResolveOptions, Scheme
from latlab.datasets.spaces.base import SearchSpace
from latlab.encoders.builder import NetBuilder
from latlab.encoders.ir import NetworkGraph
from latlab.errors import NetworkReferenceError

MAX_WIDTH = 1_000_000


def parse_widths(body: str, scheme: str = "fcnn") -> tuple[int, ...]:
    """Layer widths ``(IN, H1, ..., OUT)`` of a reference body; raises naming the reference."""
    parts = body.split("-")
    try:
        widths = tuple(int(p) for p in parts)
    except ValueError:
        widths = ()
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise NetworkReferenceError(
            f"malformed reference '{scheme}:{body}': expected positive integers IN-H1-...-OUT"
        )
    wide = [w for w in widths if w > MAX_WIDTH]
    if wide:
        raise NetworkReferenceError(
            f"reference '{scheme}:{body}': width {wide[0]:,} exceeds the largest latlab builds "
            f"({MAX_WIDTH:,} neurons per layer)"
        )
    return widths


def build_fcnn(widths: tuple[int, ...], batch: int = 1, name: str | None = None) -> NetworkGraph:
    """The IR of a fully connected network with the given widths."""
    ref = name or "fcnn:" + "-".join(map(str, widths))
    b = NetBuilder(ref, (batch, widths[0]), meta={"family": "fcnn", "widths": widths})
    x = b.input
    for i, w in enumerate(widths[1:]):
        x = b.gemm(x, w)
        if i < len(widths) - 2:
            x = b.relu(x)
    return b.build()


def _resolve(body: str, opts: ResolveOptions) -> NetworkGraph:
    return build_fcnn(parse_widths(body), batch=opts.batch)


def sample_fcnn(
    count: int,
    seed: int = 0,
    *,
    min_hidden: int = 1,
    max_hidden: int = 5,
    max_width: int = 50,
    input_range: tuple[int, int] = (1, 50),
    output_range: tuple[int, int] = (1, 50),
) -> list[str]:
    """``count`` distinct FCNN references: hidden depth uniform, widths uniform in [1, max]."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        depth = int(rng.integers(min_hidden, max_hidden + 1))
        widths = [int(rng.integers(input_range[0], input_range[1] + 1))]
        widths += [int(w) for w in rng.integers(1, max_width + 1, size=depth)]
        widths.append(int(rng.integers(output_range[0], output_range[1] + 1)))
        seen["fcnn:" + "-".join(map(str, widths))] = None
    return list(seen)


def sample_fcnn_wide(count: int, seed: int = 0) -> list[str]:
    """Wider fully connected networks: 1-5 hidden layers of 1-4096 neurons, inputs up to 4096."""
    return sample_fcnn(count, seed, max_width=4096, input_range=(1, 4096), output_range=(1, 1000))


#: The ``fcnn:`` reference scheme (registered in ``references.BUILTIN_SCHEMES``).
SCHEME = Scheme(
    "fcnn",
    _resolve,
    validate=parse_widths,
    help="fully connected network IN-H1-...-OUT, ReLU between layers",
)


class FcnnSpace(SearchSpace):
    """Fully connected networks; their vector encoding is the padded layer-width vector (the
    FCNN estimator's input)."""

    vector_features = "widths"


#: The fcnn and fcnn-wide spaces (registered in :mod:`latlab.datasets.spaces`).
SPACE = FcnnSpace("fcnn", sample_fcnn, "FCNN estimator space: 1-5 hidden layers, <=50 neurons")
WIDE_SPACE = SearchSpace("fcnn-wide", sample_fcnn_wide, "FCNN with up to 4096 neurons per layer")
