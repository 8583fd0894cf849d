"""The search-space protocol: one object per space that owns everything specific to it.

A search space (``nb201``, ``fbnet``, ``ofa``, ``fcnn``, ...) names its networks by references
with its own prefix (``nb201:|...|``), builds their IR, samples and mutates them, and says
which encodings suit them. Predictors, training, serving and NAS never name a space: they ask
:func:`space_of` (the space every network of a set belongs to) or :func:`get_space` and use
what the :class:`SearchSpace` offers:

* references -- :attr:`~SearchSpace.prefix` (the scheme, registered in
  :mod:`latlab.datasets.references`, or carried as :attr:`~SearchSpace.scheme` by a plug-in
  space), :meth:`~SearchSpace.parse`
  (validate a body, raising :class:`~latlab.errors.NetworkReferenceError` naming the
  reference), :meth:`~SearchSpace.build` (the IR, lazy where the space provides it);
* population -- :meth:`~SearchSpace.sample` (``count`` distinct references, seeded),
  :meth:`~SearchSpace.enumerate` and :attr:`~SearchSpace.size` when the space is finite;
* NAS -- a *genotype* is a tuple of ints the space maps to and from references:
  :meth:`~SearchSpace.random_genotype`, :meth:`~SearchSpace.mutate`,
  :meth:`~SearchSpace.format_genotype`, :meth:`~SearchSpace.genotype`; a space without them is
  not searchable (:attr:`~SearchSpace.searchable`);
* encodings -- names in the encoder registries (:data:`latlab.encoders.vector.VECTOR_ENCODERS`,
  :data:`latlab.encoders.graph.GRAPH_ENCODERS`): :attr:`~SearchSpace.vector_features` (what the
  vector predictors' ``features="auto"`` picks), :attr:`~SearchSpace.onehot` (the space's
  one-hot, used with the summary by conformal difficulty models and transfer heads),
  :attr:`~SearchSpace.counts` (op counts: the ``layer-sum`` predictor's table entries),
  :attr:`~SearchSpace.graph` (the GCN's ``graph="auto"``);
* serving -- :attr:`~SearchSpace.bare_prefix` (bare bodies served without the prefix: nb201's
  ``|...|`` arch strings), :meth:`~SearchSpace.fast_resolve` (a cheaper graph for
  canonical references than the general resolver) and :meth:`~SearchSpace.fast_resolve_many`
  (the same for a whole table at once).

The registry (:data:`SPACES`) maps a name to a space object or to a lazy ``"module:attr"``
string (the idiom of :mod:`latlab.experiments.registry`), imported on first use; by convention
a space's name is its reference prefix, so that :mod:`latlab.datasets.references` can load
the module of a lazily registered space when it first meets its prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from latlab.encoders.ir import NetworkGraph
from latlab.errors import DataError
from latlab.registry import Registry

if TYPE_CHECKING:
    from latlab.datasets.references import Scheme

Genotype = tuple[int, ...]


class SearchSpace:
    """A search space (see the module docstring). Subclass it and override what the space has;
    ``SearchSpace(name, sample, description, size)`` is a sampler-only space (``latlab measure
    --space``)."""

    #: Encoder names this space offers (``None``: it has no such encoding).
    vector_features: str | None = None
    onehot: str | None = None
    counts: str | None = None
    graph: str | None = None
    #: Whether each op count is an additive latency term wherever the op sits (nb201's cell
    #: ops: the same shapes in every cell of a stage), so that ``layer-sum``'s ``auto`` tables
    #: :attr:`counts`; otherwise it tables the IR's distinct layers (FBNet, OFA).
    counts_additive: bool = False
    #: Encoder specs of count columns whose latency is (close to) a non-negative sum of per-op
    #: costs: few-shot transfer fits one such model on the k target networks per spec, as a
    #: pseudo-source (:mod:`latlab.predictors.additive`). Default: the raw network summary
    #: (per-kind layer counts and MACs, bytes: a layer-sum over kinds), which any IR has.
    additive_counts: tuple[str, ...] = ("summary-linear",)
    #: Leading text of a bare body that serving reads as ``<prefix>:<body>`` (nb201: ``"|"``).
    bare_prefix: str | None = None
    #: The reference scheme of a plug-in space (:class:`~latlab.datasets.references.Scheme`),
    #: registered when a reference first uses the space's prefix; built-in schemes are in
    #: :data:`latlab.datasets.references.BUILTIN_SCHEMES`.
    scheme: Scheme | None = None
    #: Encoders this space defines (name -> factory), registered in
    #: :data:`latlab.encoders.vector.VECTOR_ENCODERS` (zero-argument factories) and
    #: :data:`latlab.encoders.graph.GRAPH_ENCODERS` (factories of ``graph_features``) when the
    #: space is loaded.
    vector_encoders: ClassVar[dict[str, Callable[[], Any]]] = {}
    graph_encoders: ClassVar[dict[str, Callable[[bool], Any]]] = {}

    def __init__(
        self,
        name: str,
        sample: Callable[[int, int], list[str]] | None = None,
        description: str = "",
        size: int | None = None,
        prefix: str | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.size = size
        self.prefix = prefix or name
        self._sampler = sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # ------------------------------------------------------------------ references and IR

    def parse(self, body: str) -> Any:
        """Validate a reference body (without the prefix); raises naming the reference."""
        from latlab.datasets.references import parse_reference

        return parse_reference(f"{self.prefix}:{body}")

    def build(self, reference: str, batch: int = 1) -> NetworkGraph:
        """The IR of a reference of this space."""
        from latlab.datasets.references import resolve

        return resolve(reference, batch=batch)

    def owns(self, graph: NetworkGraph) -> bool:
        """Whether ``graph`` is a network of this space (its family is the space's name)."""
        return graph.family == self.name

    def canonical(self, reference: str) -> str:
        """The canonical reference of the network ``reference`` names (itself by default;
        spaces whose references can name one network several ways override it)."""
        return reference

    # ------------------------------------------------------------------ population

    def sample(self, count: int, seed: int = 0) -> list[str]:
        """``count`` distinct references drawn with ``seed``."""
        if self._sampler is not None:
            return self._sampler(count, seed)
        if not self.searchable:
            raise DataError(f"search space {self.name!r} cannot sample networks")
        rng = np.random.default_rng(seed)
        out: dict[str, None] = {}
        tries = 0
        while len(out) < count:
            out.setdefault(self.format_genotype(self.random_genotype(rng)))
            tries += 1
            if tries > 100 * count + 1000:
                raise DataError(f"space {self.name!r}: cannot draw {count} distinct networks")
        return list(out)

    def enumerate(self) -> list[str] | None:
        """Every reference of a finite, enumerable space; ``None`` otherwise."""
        return None

    # ------------------------------------------------------------------ NAS

    @property
    def searchable(self) -> bool:
        """Whether ``latlab nas`` can search this space (it has genotypes and mutation)."""
        return type(self).mutate is not SearchSpace.mutate

    def random_genotype(self, rng: np.random.Generator) -> Genotype:
        raise DataError(f"search space {self.name!r} has no genotypes (not searchable)")

    def mutate(self, genotype: Genotype, rng: np.random.Generator) -> Genotype:
        """A neighbour of ``genotype``: one choice changed."""
        raise DataError(f"search space {self.name!r} has no mutation (not searchable)")

    def format_genotype(self, genotype: Genotype) -> str:
        raise DataError(f"search space {self.name!r} has no genotypes (not searchable)")

    def genotype(self, reference: str) -> Genotype:
        raise DataError(f"search space {self.name!r} has no genotypes (not searchable)")

    # ------------------------------------------------------------------ serving

    def fast_resolve(self, reference: str) -> NetworkGraph | None:
        """A graph for ``reference`` cheaper than the general resolver, or ``None`` (then the
        general path, with its error messages, is taken)."""
        return None

    def fast_resolve_many(self, references: Sequence[str]) -> list[NetworkGraph | None]:
        """:meth:`fast_resolve` of many references at once (``None`` where it has none): a
        space overrides it to parse and encode a whole table by array operations rather than
        network by network (FBNet, OFA: :class:`~latlab.datasets.spaces.chain.ChainBatch`)."""
        return [self.fast_resolve(r) for r in references]


# --------------------------------------------------------------------------- the registry


class _Registry(Registry[SearchSpace]):
    """Name -> space (the one lazy registry idiom of :mod:`latlab.registry`): an entry may be
    a ``"module:attr"`` string imported on first access, and plug-ins register in the
    ``latlab.spaces`` entry-point group. Loaded spaces are indexed for serving (bare bodies,
    fast resolvers)."""

    def __init__(self) -> None:
        super().__init__(
            "search space", group="latlab.spaces", check=lambda obj: isinstance(obj, SearchSpace)
        )
        #: (bare prefix, space name) of the loaded spaces that serve bare bodies.
        self.bare: tuple[tuple[str, str], ...] = ()
        #: prefix -> fast resolver of the loaded spaces that have one.
        self.fast: dict[str, Callable[[str], NetworkGraph | None]] = {}
        #: prefix -> the batch fast resolver of those spaces (:meth:`fast_resolve_many`).
        self.fast_many: dict[str, Callable[[Sequence[str]], list[NetworkGraph | None]]] = {}
        self._indexed: set[int] = set()

    def register(  # type: ignore[override]
        self, space: SearchSpace | str, name: str | None = None
    ) -> None:
        if isinstance(space, str):
            if not name:
                raise DataError(f"a lazy space entry {space!r} needs a name")
            super().register(name, space)
            return
        with self._lock:
            super().register(name or space.name, space)
            self._index(space)

    def _index(self, space: SearchSpace) -> None:
        if id(space) in self._indexed:
            return
        self._indexed.add(id(space))
        if space.bare_prefix:
            self.bare = (*self.bare, (space.bare_prefix, space.prefix))
        if type(space).fast_resolve is not SearchSpace.fast_resolve:
            self.fast[space.prefix] = space.fast_resolve
            self.fast_many[space.prefix] = space.fast_resolve_many
        if space.vector_encoders:
            from latlab.encoders.vector import VECTOR_ENCODERS

            for name, factory in space.vector_encoders.items():
                VECTOR_ENCODERS.register(name, factory)
        if space.graph_encoders:
            from latlab.encoders.graph import GRAPH_ENCODERS

            for name, graph_factory in space.graph_encoders.items():
                GRAPH_ENCODERS.register(name, graph_factory)

    def __getitem__(self, name: str) -> SearchSpace:
        space = super().__getitem__(name)
        if id(space) not in self._indexed:
            with self._lock:
                self._index(space)
        return space


#: The built-in spaces: name -> the space object, as a lazy ``"module:attr"`` (a space's
#: module is imported when the space or its reference prefix is first used).
BUILTIN_SPACES: dict[str, str] = {
    "nb201": "latlab.datasets.spaces.nb201:SPACE",
    "fbnet": "latlab.datasets.spaces.fbnet:SPACE",
    "ofa": "latlab.datasets.spaces.ofa:SPACE",
    "fcnn": "latlab.datasets.spaces.fcnn:SPACE",
    "fcnn-wide": "latlab.datasets.spaces.fcnn:WIDE_SPACE",
    "cnn": "latlab.datasets.spaces.cnn:SPACE",
    "bnn-fcnn": "latlab.datasets.spaces.bnn:FCNN_SPACE",
    "bnn-cnn": "latlab.datasets.spaces.bnn:CNN_SPACE",
    "blocks": "latlab.datasets.spaces.blocks:SPACE",
}

SPACES = _Registry()
for _name, _target in BUILTIN_SPACES.items():
    SPACES.register(_target, name=_name)


def register_space(space: SearchSpace | str, name: str | None = None) -> None:
    """Register a space object, or ``register_space("module:attr", name="myspace")`` lazily."""
    SPACES.register(space, name)


def get_space(name: str) -> SearchSpace:
    """The registered space ``name``; raises naming it and the known spaces."""
    if name not in SPACES:
        raise DataError(f"unknown search space {name!r} (known: {', '.join(sorted(SPACES))})")
    return SPACES[name]


def space_of(graphs: Sequence[NetworkGraph]) -> SearchSpace | None:
    """The space every one of ``graphs`` belongs to (by family), ``None`` when they are of no
    registered space or of several."""
    fams = {g.family for g in graphs}
    if len(fams) != 1:
        return None
    fam = next(iter(fams))
    return SPACES.get(fam)


def searchable_spaces() -> list[str]:
    """Names of the spaces ``latlab nas`` can search (loads lazy entries)."""
    return sorted(n for n in SPACES if SPACES[n].searchable)


def load_all() -> None:
    """Load every lazily registered space (a loaded space registers its encoder names): for a
    caller that meets an encoder name before any network of its space."""
    for name in list(SPACES):
        if SPACES.is_lazy(name):
            SPACES[name]


def bare_reference(text: str) -> str | None:
    """``<prefix>:<text>`` when ``text`` is a bare body a space serves, else ``None``.

    A text with no ``:`` is no reference of any scheme: only then are the lazily registered
    spaces loaded to learn their bare prefixes."""
    for lead, prefix in SPACES.bare:
        if text.startswith(lead):
            return f"{prefix}:{text}"
    if ":" not in text and any(SPACES.is_lazy(n) for n in SPACES):
        load_all()
        for lead, prefix in SPACES.bare:
            if text.startswith(lead):
                return f"{prefix}:{text}"
    return None
