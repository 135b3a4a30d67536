"""The final score: a configurable, log-linear fusion of the task outputs.

A ranking model predicts one probability per task (``view``, ``cart``, ``buy``, ...). What a
shop wants to sort by is usually a product of them, e.g. the expected revenue of showing an
item, ``p(click) * p(buy | click) * price``, with a penalty for likely returns. A
:class:`Fusion` is that product written as data::

    score = price ** price_weight * prod_t p_t ** weights[t] * prod_t (1 - p_t) ** penalties[t]

so ``log score`` is a sum of one term per task (and one for the price). The explanations use
exactly these terms: each task's share of a score is its term, measured against a reference
(see :meth:`Fusion.log_terms`).

The default (:meth:`Fusion.default`) is the scorer's target task alone: the served list then
ranks by what the offline evaluation ranks by. Price-weighted fusions (expected revenue) are
a choice made in the serve config or per request. Task outputs are used as they are (only
floored at :data:`FLOOR` before the logarithm), so a recipe's small fallback scores and
non-probability outputs (a quantity) keep their order; ``(1 - p)`` penalties need
probabilities and clip them to ``[EPS, 1 - EPS]``.

A fusion is written as a short formula (:meth:`Fusion.parse`), e.g. ``"buy * price"``,
``"view^0.2 * buy * price^0.5 * (1-return)^2"``.

Example:
    >>> import numpy as np
    >>> f = Fusion.parse("click * buy * price * (1-return)")
    >>> preds = {"click": np.array([0.5]), "buy": np.array([0.2]), "return": np.array([0.1])}
    >>> round(float(f.score(preds, price=np.array([10.0]))[0]), 6)
    0.9
    >>> f.formula()
    'click * buy * price * (1-return)'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

#: Probabilities in ``(1 - p)`` penalties are clipped to ``[EPS, 1 - EPS]`` before the log.
EPS = 1e-7
#: Task outputs multiplied into the score are floored here before the log (a score of 0).
FLOOR = 1e-30
PRICE = "price"
_TERM = re.compile(
    r"^(?:\(\s*1\s*-\s*(?P<pen>[A-Za-z_][\w-]*)\s*\)|(?P<name>[A-Za-z_][\w-]*))"
    r"(?:\s*\^\s*(?P<exp>[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))?$"
)


@dataclass(frozen=True)
class Fusion:
    """``score = price^price_weight * prod p_t^weights[t] * prod (1 - p_t)^penalties[t]``.

    Attributes:
        weights: task -> exponent of its probability (1 = multiply by it).
        price_weight: exponent of the item's price (0 = ignore the price).
        penalties: task -> exponent of ``1 - p``; a positive value pushes down items likely to
            do that task (``return``).
    """

    weights: Mapping[str, float]
    price_weight: float = 0.0
    penalties: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.weights and not self.penalties and self.price_weight == 0:
            raise ValueError("a fusion needs at least one task or the price")

    @property
    def tasks(self) -> list[str]:
        """Every task the fusion reads."""
        return list(dict.fromkeys([*self.weights, *self.penalties]))

    @classmethod
    def parse(cls, formula: str) -> Fusion:
        """Read a formula: factors joined by ``*``; each is ``task``, ``price`` or
        ``(1-task)``, optionally raised with ``^number``.

        Raises:
            ValueError: a factor is not of that form.
        """
        weights: dict[str, float] = {}
        penalties: dict[str, float] = {}
        price = 0.0
        for raw in formula.split("*"):
            m = _TERM.match(raw.strip())
            if m is None:
                raise ValueError(
                    f"cannot read {raw.strip()!r} in fusion {formula!r}: use factors like "
                    "'buy', 'price^0.5' or '(1-return)^2' joined by '*'"
                )
            exp = float(m["exp"]) if m["exp"] else 1.0
            if m["pen"]:
                penalties[m["pen"]] = penalties.get(m["pen"], 0.0) + exp
            elif m["name"] == PRICE:
                price += exp
            else:
                weights[m["name"]] = weights.get(m["name"], 0.0) + exp
        return cls(weights, price, penalties)

    @classmethod
    def default(cls, tasks: Sequence[str], target: str | None = None) -> Fusion:
        """The target task alone (the last task when none is named): what offline
        evaluation ranks by.

        Example:
            >>> Fusion.default(["view", "cart", "buy"]).formula()
            'buy'
        """
        if target is not None and target not in tasks:
            raise ValueError(f"target '{target}' is not one of the tasks {list(tasks)}")
        return cls({target or tasks[-1]: 1.0})

    def check(self, tasks: Sequence[str]) -> Fusion:
        """Raise ``ValueError`` naming the model's tasks if the fusion reads another one."""
        unknown = [t for t in self.tasks if t not in tasks]
        if unknown:
            raise ValueError(f"the fusion uses unknown task(s) {unknown}; tasks are {list(tasks)}")
        return self

    def formula(self) -> str:
        """The fusion as a formula :meth:`parse` reads back."""

        def power(text: str, exp: float) -> str:
            return text if exp == 1 else f"{text}^{exp:g}"

        parts = [power(t, w) for t, w in self.weights.items() if w != 0]
        if self.price_weight:
            parts.append(power(PRICE, self.price_weight))
        parts += [power(f"(1-{t})", w) for t, w in self.penalties.items() if w != 0]
        return " * ".join(parts) or "1"

    def log_terms(
        self, preds: Mapping[str, np.ndarray], price: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """One additive term of ``log score`` per task (and ``price``), each ``(N,)``.

        A task in both ``weights`` and ``penalties`` gets one term, the sum of both parts.
        ``sum(log_terms(...).values()) == log(score(...))``.
        """
        terms: dict[str, np.ndarray] = {}
        for task, w in self.weights.items():
            p = np.clip(np.asarray(preds[task], dtype=np.float64), FLOOR, None)
            terms[task] = w * np.log(p)
        for task, w in self.penalties.items():
            p = np.clip(np.asarray(preds[task], dtype=np.float64), EPS, 1 - EPS)
            terms[task] = terms.get(task, 0.0) + w * np.log1p(-p)
        if self.price_weight:
            if price is None:
                raise ValueError("this fusion uses the price, but the items have none")
            terms[PRICE] = self.price_weight * np.log(np.clip(price, EPS, None))
        return terms

    def log_score(
        self, preds: Mapping[str, np.ndarray], price: np.ndarray | None = None
    ) -> np.ndarray:
        """``log score``, ``(N,)``."""
        return np.sum(list(self.log_terms(preds, price).values()), axis=0)

    def score(self, preds: Mapping[str, np.ndarray], price: np.ndarray | None = None) -> np.ndarray:
        """The fused score, ``(N,)``."""
        return np.exp(self.log_score(preds, price))

    def model_log_score(self, preds: Mapping[str, Tensor]) -> Tensor:
        """The part of ``log score`` that the model's outputs make (everything but the price),
        differentiable: what the feature attributions explain. ``(N,)``."""
        total: Tensor | None = None
        for task, w in self.weights.items():
            term = w * torch.log(preds[task].clamp_min(FLOOR))
            total = term if total is None else total + term
        for task, w in self.penalties.items():
            term = w * torch.log1p(-preds[task].clamp(EPS, 1 - EPS))
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(next(iter(preds.values())).shape[0])
        return total
