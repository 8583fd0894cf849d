"""Binary networks: ``bnn-fcnn:IN-H1-...-OUT`` and ``bnn-cnn:CxHxW-...-OUT``, and their spaces.

Both follow the standard BNN recipe (Courbariaux/Hubara et al. BinaryNet, Rastegari et al.
XNOR-Net): the first compute layer and the classifier are full precision, every compute layer
in between is binary, and each layer but the classifier is followed by BatchNormalization and
``Sign`` (so a binary layer always sees ±1 inputs).

``bnn-fcnn:IN-H1-...-Hn-OUT``
    ``Gemm(IN→H1) → BN → Sign``, then ``BinaryGemm(H_i→H_i+1) → BN → Sign`` for each further
    hidden width, then ``Gemm(Hn→OUT)``. ``IN-H1-OUT`` has no binary layer (a warning in the
    XNOROP tasks); ``IN-H1-H2-OUT`` has one.

``bnn-cnn:CxHxW-TOKEN-...-OUT``
    Input of C channels and H×W pixels, then tokens separated by ``-``:

    * ``c<N>[k<K>][s<S>]``: convolution with N output channels, kernel K (default 3), stride
      S (default 1), "same" padding, followed by BN and Sign. Full precision if it is the first
      compute layer, binary (``BinaryConv``, padded with +1) otherwise.
    * ``p``: 2×2 max pooling, stride 2 (on ±1 values: a logical AND of the bits).
    * ``f<N>``: fully connected layer of N outputs + BN + Sign (binary unless first); the
      feature map is flattened before the first one.
    * ``OUT`` (last, a bare integer): the full-precision classifier ``Gemm``.

    Example (BinaryNet-style for CIFAR-10): ``bnn-cnn:3x32x32-c64-c64-p-c128-p-f256-10``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from latlab.datasets.references import ResolveOptions, Scheme
from latlab.datasets.spaces.base import SearchSpace
from latlab.datasets.spaces.fcnn import parse_widths
from latlab.encoders.binary import binary_conv, binary_gemm, sign
from latlab.encoders.builder import NetBuilder
from latlab.encoders.ir import NetworkGraph
from latlab.errors import NetworkReferenceError

MAX_CHANNELS = 65_536
_CONV = re.compile(r"^c(\d+)(?:k(\d+))?(?:s(\d+))?$")
_FC = re.compile(r"^f(\d+)$")


# --------------------------------------------------------------------------- bnn-fcnn


def build_bnn_fcnn(
    widths: tuple[int, ...], batch: int = 1, name: str | None = None
) -> NetworkGraph:
    """The IR of a binary fully connected network (full-precision first and last layers)."""
    ref = name or "bnn-fcnn:" + "-".join(map(str, widths))
    b = NetBuilder(ref, (batch, widths[0]), meta={"family": "bnn-fcnn", "widths": widths})
    x = b.input
    n = len(widths) - 1  # number of Gemm-like layers
    for i, w in enumerate(widths[1:]):
        if i == n - 1:
            x = b.gemm(x, w)  # classifier: full precision
        elif i == 0:
            x = sign(b, b.bn(b.gemm(x, w)))  # first layer: full precision
        else:
            x = sign(b, b.bn(binary_gemm(b, x, w)))
    return b.build()


def _resolve_fcnn(body: str, opts: ResolveOptions) -> NetworkGraph:
    return build_bnn_fcnn(parse_widths(body, "bnn-fcnn"), batch=opts.batch)


# --------------------------------------------------------------------------- bnn-cnn


@dataclass(frozen=True, slots=True)
class CnnSpec:
    """A parsed ``bnn-cnn`` body."""

    input_shape: tuple[int, int, int]
    tokens: tuple[tuple[str, int, int, int], ...]  # (kind 'c'|'p'|'f', n, kernel, stride)
    classes: int


def parse_bnn_cnn(body: str) -> CnnSpec:
    """Parse and validate a ``bnn-cnn`` body; raises :class:`NetworkReferenceError` naming it."""
    ref = f"bnn-cnn:{body}"

    def bad(why: str) -> NetworkReferenceError:
        return NetworkReferenceError(
            f"malformed reference {ref!r}: {why} (expected CxHxW-TOKEN-...-OUT, e.g. "
            "'bnn-cnn:3x32x32-c64-p-c128-p-f256-10')"
        )

    parts = body.strip().split("-")
    if len(parts) < 2:
        raise bad("needs an input shape and a number of classes")
    try:
        c, h, w = (int(v) for v in parts[0].lower().split("x"))
    except ValueError:
        raise bad(f"input shape {parts[0]!r} is not CxHxW") from None
    if min(c, h, w) < 1 or c > MAX_CHANNELS or h > 4096 or w > 4096:
        raise bad(f"input shape {parts[0]!r} out of range")
    try:
        classes = int(parts[-1])
    except ValueError:
        raise bad(f"last token {parts[-1]!r} must be the number of classes") from None
    if not 1 <= classes <= MAX_CHANNELS:
        raise bad(f"number of classes {classes} out of range")
    tokens: list[tuple[str, int, int, int]] = []
    size_h, size_w, flat = h, w, False
    for tok in parts[1:-1]:
        t = tok.lower()
        if t == "p":
            if flat:
                raise bad("pooling 'p' after a fully connected layer")
            if size_h < 2 or size_w < 2:
                raise bad(f"pooling 'p' on a {size_h}x{size_w} feature map")
            size_h, size_w = size_h // 2, size_w // 2
            tokens.append(("p", 0, 2, 2))
        elif m := _CONV.match(t):
            if flat:
                raise bad(f"convolution {tok!r} after a fully connected layer")
            n = int(m.group(1))
            k = int(m.group(2) or 3)
            s = int(m.group(3) or 1)
            if not (1 <= n <= MAX_CHANNELS and 1 <= k <= min(size_h, size_w, 15) and 1 <= s <= k):
                raise bad(f"convolution token {tok!r} out of range")
            size_h, size_w = -(-size_h // s), -(-size_w // s)
            tokens.append(("c", n, k, s))
        elif m := _FC.match(t):
            n = int(m.group(1))
            if not 1 <= n <= MAX_CHANNELS:
                raise bad(f"fully connected token {tok!r} out of range")
            flat = True
            tokens.append(("f", n, 0, 0))
        else:
            raise bad(f"unknown token {tok!r}")
    return CnnSpec((c, h, w), tuple(tokens), classes)


def build_bnn_cnn(spec: CnnSpec, batch: int = 1, name: str | None = None) -> NetworkGraph:
    """The IR of a binary CNN (see the module docstring for the grammar)."""
    ref = name or "bnn-cnn:" + format_bnn_cnn(spec)
    b = NetBuilder(ref, (batch, *spec.input_shape), meta={"family": "bnn-cnn"})
    x = b.input
    first = True
    for kind, n, k, s in spec.tokens:
        if kind == "p":
            x = b.maxpool(x, 2, 2)
            continue
        if kind == "c":
            if first:
                y = b.conv(x, n, k, stride=s)
            else:
                y = binary_conv(b, x, n, k, stride=s)
        else:
            if len(b.shape(x)) > 2:
                x = b.flatten(x)
            y = b.gemm(x, n) if first else binary_gemm(b, x, n)
        x = sign(b, b.bn(y))
        first = False
    if len(b.shape(x)) > 2:
        x = b.flatten(x)
    b.gemm(x, spec.classes)
    return b.build()


def format_bnn_cnn(spec: CnnSpec) -> str:
    """Canonical body of a spec (defaults omitted)."""
    parts = ["x".join(map(str, spec.input_shape))]
    for kind, n, k, s in spec.tokens:
        if kind == "p":
            parts.append("p")
        elif kind == "c":
            parts.append(f"c{n}" + (f"k{k}" if k != 3 else "") + (f"s{s}" if s != 1 else ""))
        else:
            parts.append(f"f{n}")
    parts.append(str(spec.classes))
    return "-".join(parts)


def _resolve_cnn(body: str, opts: ResolveOptions) -> NetworkGraph:
    return build_bnn_cnn(parse_bnn_cnn(body), batch=opts.batch, name=f"bnn-cnn:{body}")


# --------------------------------------------------------------------------- samplers


def sample_bnn_fcnn(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct BNN MLPs: 2-5 hidden layers of 64-4096 neurons (multiples of 32),
    inputs 64-3072, 10-1000 classes (seeded)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        depth = int(rng.integers(2, 6))
        widths = [int(rng.integers(2, 97)) * 32]
        widths += [int(rng.integers(2, 129)) * 32 for _ in range(depth)]
        widths.append(int(rng.choice([10, 100, 1000])))
        seen["bnn-fcnn:" + "-".join(map(str, widths))] = None
    return list(seen)


def sample_bnn_cnn(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct VGG-style binary CNNs on 1x28x28 or 3x32x32 inputs (seeded):
    2-3 stages of 1-2 convolutions (16-256 channels) and a pooling, then 0-1 binary FC."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        shape = "1x28x28" if rng.random() < 0.3 else "3x32x32"
        parts = [shape]
        ch = int(rng.choice([16, 32, 64]))
        for _stage in range(int(rng.integers(2, 4))):
            for _ in range(int(rng.integers(1, 3))):
                parts.append(f"c{ch}")
            parts.append("p")
            ch = min(ch * 2, 256)
        if rng.random() < 0.6:
            parts.append(f"f{int(rng.choice([128, 256, 512]))}")
        parts.append("10")
        seen["bnn-cnn:" + "-".join(parts)] = None
    return list(seen)


#: The ``bnn-fcnn:`` reference scheme (registered in ``references.BUILTIN_SCHEMES``).
FCNN_SCHEME = Scheme(
    "bnn-fcnn",
    _resolve_fcnn,
    validate=lambda body: parse_widths(body, "bnn-fcnn"),
    help="binary MLP IN-H1-...-OUT: full-precision first/last layers, binary hidden ones",
)
#: The ``bnn-cnn:`` reference scheme (registered in ``references.BUILTIN_SCHEMES``).
CNN_SCHEME = Scheme(
    "bnn-cnn",
    _resolve_cnn,
    validate=parse_bnn_cnn,
    help="binary CNN CxHxW-c64-p-...-f256-OUT: full-precision first layer and classifier",
)
#: The bnn-fcnn and bnn-cnn spaces (registered in :mod:`latlab.datasets.spaces`).
FCNN_SPACE = SearchSpace("bnn-fcnn", sample_bnn_fcnn, "binary MLPs, 2-5 hidden layers")
CNN_SPACE = SearchSpace("bnn-cnn", sample_bnn_cnn, "VGG-style binary CNNs (MNIST/CIFAR)")
