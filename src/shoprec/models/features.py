"""Feature and task specifications: plain data that describe a model's inputs and outputs.

A spec names a batch key and says how to read it. Specs never hold modules or tensors, so
two models built from the same specs never share weights by accident, and a spec list
round-trips through JSON (:meth:`to_dict` / :func:`feature_from_dict`).

Batch contract (``dict[str, Tensor]``, ``B`` = batch size):

* :class:`CategoricalFeature` — int64 ``(B,)``, ids in ``[0, vocab_size)``; ``0`` is padding
  / missing and embeds to zeros.
* :class:`NumericFeature` — float32 ``(B,)``, already normalised.
* :class:`SequenceFeature` — int64 ``(B, L)``, padded with ``0`` (any side, any ``L``).
* :class:`TextFeature` — float32 ``(B, dim)``, a precomputed text vector.
* :class:`Task` labels — float32 ``(B,)`` for binary and regression, int64 ``(B,)`` for
  multiclass, under ``task.label``; optional per-sample weights or a 0/1 mask, float32
  ``(B,)``, under ``task.weight_key``.

Example:
    >>> item = CategoricalFeature("item", vocab_size=1000, dim=16)
    >>> history = SequenceFeature("history", 1000, 16, pooling="attention", embedding_of="item")
    >>> feature_from_dict(history.to_dict()) == history
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

Pooling = Literal["mean", "attention", "sum"]
TaskKind = Literal["binary", "multiclass", "regression"]
LossName = Literal["bce", "ce", "mse", "poisson", "log1p_mse"]

POOLINGS: tuple[str, ...] = ("mean", "attention", "sum")
TASK_KINDS: tuple[str, ...] = ("binary", "multiclass", "regression")
#: Which losses each task kind accepts; the first is its default.
LOSSES_BY_KIND: dict[str, tuple[str, ...]] = {
    "binary": ("bce",),
    "multiclass": ("ce",),
    "regression": ("mse", "poisson", "log1p_mse"),
}


def _positive(value: int, what: str, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} of '{name}' must be a positive int, got {value!r}")


@dataclass(frozen=True)
class CategoricalFeature:
    """One id per sample, embedded into ``dim`` numbers.

    Attributes:
        name: batch key (int64 ``(B,)``).
        vocab_size: number of ids, counting the padding id ``0``.
        dim: embedding size.
    """

    name: str
    vocab_size: int
    dim: int = 16

    kind: ClassVar[str] = "categorical"

    def __post_init__(self) -> None:
        _positive(self.vocab_size, "vocab_size", self.name)
        _positive(self.dim, "dim", self.name)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data, with its ``kind``."""
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CategoricalFeature:
        """Inverse of :meth:`to_dict` (a ``kind`` key is accepted and checked)."""
        return cls(**_without_kind(data, cls.kind))


@dataclass(frozen=True)
class NumericFeature:
    """One number per sample, passed to the network as is (normalise it beforehand).

    Attributes:
        name: batch key (float32 ``(B,)``).
    """

    name: str

    kind: ClassVar[str] = "numeric"

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data, with its ``kind``."""
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NumericFeature:
        """Inverse of :meth:`to_dict`."""
        return cls(**_without_kind(data, cls.kind))


@dataclass(frozen=True)
class SequenceFeature:
    """A padded list of ids per sample (e.g. recently clicked items), pooled to ``dim`` numbers.

    Attributes:
        name: batch key (int64 ``(B, L)``, padded with ``0``).
        vocab_size: number of ids, counting ``0``.
        dim: embedding size.
        pooling: ``"mean"`` over the non-padding ids, ``"sum"``, or ``"attention"``: DIN-style
            target attention (Zhou et al., KDD 2018) whose query is the embedding of the
            candidate in ``embedding_of``; attention needs ``embedding_of``.
        embedding_of: name of a :class:`CategoricalFeature` whose embedding table this
            sequence shares (e.g. the item id for a click history); ``vocab_size`` and ``dim``
            must then equal that feature's. ``None``: a table of its own.
    """

    name: str
    vocab_size: int
    dim: int = 16
    pooling: Pooling = "mean"
    embedding_of: str | None = None

    kind: ClassVar[str] = "sequence"

    def __post_init__(self) -> None:
        _positive(self.vocab_size, "vocab_size", self.name)
        _positive(self.dim, "dim", self.name)
        if self.pooling not in POOLINGS:
            raise ValueError(
                f"pooling of '{self.name}' must be one of {POOLINGS}, got {self.pooling!r}"
            )
        if self.pooling == "attention" and self.embedding_of is None:
            raise ValueError(
                f"'{self.name}' uses attention pooling, which needs embedding_of: the "
                "categorical feature (e.g. the candidate item) whose embedding is the query"
            )

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data, with its ``kind``."""
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequenceFeature:
        """Inverse of :meth:`to_dict`."""
        return cls(**_without_kind(data, cls.kind))


@dataclass(frozen=True)
class TextFeature:
    """A precomputed text vector per sample (e.g. a sentence embedding of the title).

    Attributes:
        name: batch key (float32 ``(B, dim)``).
        dim: vector size.
    """

    name: str
    dim: int

    kind: ClassVar[str] = "text"

    def __post_init__(self) -> None:
        _positive(self.dim, "dim", self.name)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data, with its ``kind``."""
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextFeature:
        """Inverse of :meth:`to_dict`."""
        return cls(**_without_kind(data, cls.kind))


FeatureSpec = CategoricalFeature | NumericFeature | SequenceFeature | TextFeature

_FEATURE_KINDS: dict[str, type[FeatureSpec]] = {
    cls.kind: cls for cls in (CategoricalFeature, NumericFeature, SequenceFeature, TextFeature)
}


def feature_from_dict(data: dict[str, Any]) -> FeatureSpec:
    """Rebuild any feature spec from :meth:`to_dict` output, dispatching on ``kind``.

    Args:
        data: a dict with a ``kind`` key (``categorical``, ``numeric``, ``sequence``, ``text``).

    Returns:
        The feature spec.
    """
    kind = data.get("kind")
    if kind not in _FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; known: {sorted(_FEATURE_KINDS)}")
    return _FEATURE_KINDS[kind].from_dict(data)


@dataclass(frozen=True)
class Task:
    """One prediction target of a multi-task model.

    Attributes:
        name: task name; the model's outputs are keyed by it.
        kind: ``"binary"`` (logit), ``"multiclass"`` (``n_classes`` logits) or
            ``"regression"`` (one number).
        n_classes: number of classes; 1 for binary and regression.
        loss: ``"bce"`` (binary), ``"ce"`` (multiclass), ``"mse"``, ``"poisson"`` (the model
            outputs a log-rate) or ``"log1p_mse"`` (MSE on ``log1p(y)``, for skewed amounts).
            ``None`` (default) picks the kind's natural loss: bce, ce, mse.
        label: batch key of the label; ``None`` (default) means ``name``.
        weight_key: batch key of optional per-sample weights or a 0/1 mask, float ``(B,)``;
            the task loss is the weighted mean, and samples of weight 0 are ignored entirely
            (their labels may hold anything).
    """

    name: str
    kind: TaskKind = "binary"
    n_classes: int = 1
    loss: LossName | None = None
    label: str | None = None
    weight_key: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"kind of task '{self.name}' must be one of {TASK_KINDS}")
        if self.kind == "multiclass":
            if not isinstance(self.n_classes, int) or self.n_classes < 2:
                raise ValueError(f"multiclass task '{self.name}' needs n_classes >= 2")
        elif self.n_classes != 1:
            raise ValueError(f"{self.kind} task '{self.name}' must have n_classes == 1")
        allowed = LOSSES_BY_KIND[self.kind]
        if self.loss is None:
            object.__setattr__(self, "loss", allowed[0])
        elif self.loss not in allowed:
            raise ValueError(
                f"loss {self.loss!r} does not fit {self.kind} task '{self.name}'; use one of "
                f"{allowed}"
            )
        if self.label is None:
            object.__setattr__(self, "label", self.name)

    @property
    def output_dim(self) -> int:
        """Width of the raw output before formatting: ``n_classes`` for multiclass, else 1."""
        return self.n_classes if self.kind == "multiclass" else 1

    def to_dict(self) -> dict[str, Any]:
        """The task as JSON-ready data (``loss`` and ``label`` resolved)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def _without_kind(data: dict[str, Any], kind: str) -> dict[str, Any]:
    data = dict(data)
    found = data.pop("kind", kind)
    if found != kind:
        raise ValueError(f"expected a {kind!r} feature, got kind {found!r}")
    return data


def check_features(features: list[FeatureSpec]) -> None:
    """Check a feature list; raise ``ValueError`` if it is wrong.

    Checks: at least one feature, unique names, and that every ``embedding_of`` names a
    categorical feature of the list with the same vocabulary size and dim.
    """
    if not features:
        raise ValueError("a model needs at least one feature")
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise ValueError(f"feature names must be unique, got {names}")
    by_name = {f.name: f for f in features}
    for f in features:
        if isinstance(f, SequenceFeature) and f.embedding_of is not None:
            target = by_name.get(f.embedding_of)
            if not isinstance(target, CategoricalFeature):
                raise ValueError(
                    f"'{f.name}'.embedding_of={f.embedding_of!r} must name a categorical "
                    "feature of the same model"
                )
            if (target.vocab_size, target.dim) != (f.vocab_size, f.dim):
                raise ValueError(
                    f"'{f.name}' shares the table of '{target.name}' so needs its vocab_size "
                    f"and dim ({target.vocab_size}, {target.dim}), got ({f.vocab_size}, {f.dim})"
                )


def check_specs(features: list[FeatureSpec], tasks: list[Task]) -> None:
    """Check a model's features (:func:`check_features`) and tasks (at least one, unique
    names); raise ``ValueError`` if wrong."""
    check_features(features)
    if not tasks:
        raise ValueError("a model needs at least one task")
    task_names = [t.name for t in tasks]
    if len(set(task_names)) != len(task_names):
        raise ValueError(f"task names must be unique, got {task_names}")
