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
``"view^0.2 * buy * price^0.5 * (1-return)^2"``. A formula may name the model's tasks and the
item variables of :data:`VARIABLES` (one registry: add a name there to make it usable), each
at most once after merging, with finite exponents in ``[-MAX_EXPONENT, MAX_EXPONENT]``.

Scores are finite by construction: values are read NaN -> floor, +inf -> the largest float,
and every term of the log score is clipped to ``+-LOG_LIMIT / n_terms``, so the fused score
(``exp`` of their sum) is a positive finite float for any input, whatever the formula.

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
#: Item variables a formula may read besides the model's tasks: name -> what it is. The one
#: place that says which names are known; the caller hands their values to
#: :meth:`Fusion.log_terms` (``price=`` for the price, ``values=`` for the others).
VARIABLES: dict[str, str] = {
    PRICE: "the item's price (catalog, or set at run time)",
    # stock-aware ranking (shoprec.inventory.stock); the recommender reads a neutral value
    # (1, or 0 for p_stockout) where stock or the forecast is unknown
    "stock": "units in stock (live: PUT /admin/stock)",
    "weeks_of_cover": "stock / mean weekly forecast demand (capped at 1000 weeks)",
    "p_stockout": "P(forecast demand over the lead time > stock); use it as (1-p_stockout)",
}
#: Exponents are finite and within ``[-MAX_EXPONENT, MAX_EXPONENT]`` (after merging repeats).
MAX_EXPONENT = 10.0
#: ``|log score| <= LOG_LIMIT``: each of the n terms is clipped to ``+-LOG_LIMIT / n``, so
#: ``exp`` of the sum (plus a session boost of a few units) never overflows a float64.
LOG_LIMIT = 600.0
#: Formulas longer than this many factors are refused (a request cannot make parsing slow).
MAX_FACTORS = 32
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
    variables: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        exps = {
            **{t: w for t, w in self.weights.items()},
            **{f"(1-{t})": w for t, w in self.penalties.items()},
            **{v: w for v, w in self.variables.items()},
            PRICE: self.price_weight,
        }
        for name, w in exps.items():
            if not np.isfinite(w) or abs(w) > MAX_EXPONENT:
                raise ValueError(
                    f"the exponent of {name} in the fusion is {w:g}: exponents must be finite "
                    f"numbers between -{MAX_EXPONENT:g} and {MAX_EXPONENT:g}"
                )
        bad = [v for v in self.variables if v == PRICE or v not in VARIABLES]
        if bad:
            raise ValueError(
                f"unknown item variable(s) {bad} in the fusion; known: {sorted(VARIABLES)}"
            )
        if not any(w != 0 for w in exps.values()):
            raise ValueError("a fusion needs at least one task or item variable")

    @property
    def tasks(self) -> list[str]:
        """Every task the fusion reads (item variables in ``(1-x)`` penalties are not tasks)."""
        return list(dict.fromkeys([*self.weights, *self.task_penalties]))

    @property
    def task_penalties(self) -> dict[str, float]:
        """The ``(1-x)`` penalties on model tasks (not on item variables such as p_stockout)."""
        return {t: w for t, w in self.penalties.items() if t not in VARIABLES}

    @classmethod
    def parse(cls, formula: str) -> Fusion:
        """Read a formula: factors joined by ``*``; each is ``task``, ``price`` or
        ``(1-task)``, optionally raised with ``^number``.

        Raises:
            ValueError: a factor is not of that form, an exponent is not finite or out of
                ``[-MAX_EXPONENT, MAX_EXPONENT]``, or there are more than ``MAX_FACTORS``.
        """
        weights: dict[str, float] = {}
        penalties: dict[str, float] = {}
        variables: dict[str, float] = {}
        price = 0.0
        factors = formula.split("*")
        if len(factors) > MAX_FACTORS:
            raise ValueError(f"the fusion has {len(factors)} factors; at most {MAX_FACTORS}")
        for raw in factors:
            m = _TERM.match(raw.strip())
            if m is None:
                raise ValueError(
                    f"cannot read {raw.strip()!r} in fusion {formula!r}: use factors like "
                    "'buy', 'price^0.5' or '(1-return)^2' joined by '*'"
                )
            exp = float(m["exp"]) if m["exp"] else 1.0
            if not np.isfinite(exp) or abs(exp) > MAX_EXPONENT:
                raise ValueError(
                    f"the exponent in {raw.strip()!r} of fusion {formula!r} is not a finite "
                    f"number between -{MAX_EXPONENT:g} and {MAX_EXPONENT:g}"
                )
            if m["pen"]:
                penalties[m["pen"]] = penalties.get(m["pen"], 0.0) + exp
            elif m["name"] == PRICE:
                price += exp
            elif m["name"] in VARIABLES:
                variables[m["name"]] = variables.get(m["name"], 0.0) + exp
            else:
                weights[m["name"]] = weights.get(m["name"], 0.0) + exp
        return cls(weights, price, penalties, variables)

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
        """Raise ``ValueError`` naming the model's tasks and the item variables if the fusion
        reads anything else."""
        unknown = [t for t in self.tasks if t not in tasks]
        if unknown:
            raise ValueError(
                f"the fusion uses unknown task(s) {unknown}; tasks are {list(tasks)}, item "
                f"variables {sorted(VARIABLES)}"
            )
        return self

    @property
    def reads_model(self) -> bool:
        """Whether any term reads the model's outputs (else there is nothing to attribute)."""
        return any(w != 0 for w in (*self.weights.values(), *self.task_penalties.values()))

    def formula(self) -> str:
        """The fusion as a formula :meth:`parse` reads back."""

        def power(text: str, exp: float) -> str:
            return text if exp == 1 else f"{text}^{exp:g}"

        parts = [power(t, w) for t, w in self.weights.items() if w != 0]
        if self.price_weight:
            parts.append(power(PRICE, self.price_weight))
        parts += [power(v, w) for v, w in self.variables.items() if w != 0]
        parts += [power(f"(1-{t})", w) for t, w in self.penalties.items() if w != 0]
        return " * ".join(parts) or "1"

    def log_terms(
        self,
        preds: Mapping[str, np.ndarray],
        price: np.ndarray | None = None,
        values: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """One additive term of ``log score`` per task (and ``price``, and each item variable
        of ``values``), each ``(N,)`` and finite (see the module docstring).

        A task in both ``weights`` and ``penalties`` gets one term, the sum of both parts.
        ``sum(log_terms(...).values()) == log(score(...))``.

        Raises:
            ValueError: the fusion reads the price or an item variable that is not given.
        """
        terms: dict[str, np.ndarray] = {}
        for task, w in self.weights.items():
            terms[task] = w * np.log(_finite(preds[task], FLOOR, None))
        for task, w in self.penalties.items():
            if task in VARIABLES:  # (1-p_stockout): an item variable, not a model output
                if values is None or task not in values:
                    raise ValueError(f"this fusion uses {task}, but the items have no {task}")
                p = _finite(values[task], EPS, 1 - EPS)
            else:
                p = _finite(preds[task], EPS, 1 - EPS)
            terms[task] = terms.get(task, 0.0) + w * np.log1p(-p)
        if self.price_weight:
            if price is None:
                raise ValueError("this fusion uses the price, but the items have none")
            terms[PRICE] = self.price_weight * np.log(_finite(price, EPS, None))
        for name, w in self.variables.items():
            if values is None or name not in values:
                raise ValueError(f"this fusion uses {name}, but the items have no {name}")
            terms[name] = w * np.log(_finite(values[name], EPS, None))
        bound = LOG_LIMIT / max(len(terms), 1)
        return {name: np.clip(t, -bound, bound) for name, t in terms.items()}

    def log_score(
        self,
        preds: Mapping[str, np.ndarray],
        price: np.ndarray | None = None,
        values: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """``log score``, ``(N,)``, within ``[-LOG_LIMIT, LOG_LIMIT]``."""
        return np.sum(list(self.log_terms(preds, price, values).values()), axis=0)

    def score(
        self,
        preds: Mapping[str, np.ndarray],
        price: np.ndarray | None = None,
        values: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """The fused score, ``(N,)``: positive and finite."""
        return np.exp(self.log_score(preds, price, values))

    def model_log_score(self, preds: Mapping[str, Tensor]) -> Tensor:
        """The part of ``log score`` that the model's outputs make (everything but the price),
        differentiable: what the feature attributions explain. ``(N,)``."""
        total: Tensor | None = None
        for task, w in self.weights.items():
            term = w * torch.log(torch.nan_to_num(preds[task], nan=FLOOR).clamp_min(FLOOR))
            total = term if total is None else total + term
        for task, w in self.task_penalties.items():
            term = w * torch.log1p(-torch.nan_to_num(preds[task], nan=EPS).clamp(EPS, 1 - EPS))
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(next(iter(preds.values())).shape[0])
        return total


def _finite(values: np.ndarray, low: float, high: float | None) -> np.ndarray:
    """``values`` as float64 with NaN -> ``low``, +inf -> the largest float, clipped."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=low, neginf=low)
    return np.clip(v, low, high)
