"""Why an item was recommended: task contributions, feature attributions, gates, a history item.

An :class:`Explanation` carries four kinds of evidence and one readable sentence:

* **Task contributions** (exact). The final score is ``exp`` of a sum of terms, one per task
  of the :class:`~shoprec.recommend.fusion.Fusion` plus ``price`` and ``session`` (the boost
  from the shopper's recent events). Each contribution is the item's term minus the mean of
  the same term over *reference items* (the catalog, or a fixed sample of it, scored for the
  same shopper), so the contributions **sum exactly** to ``log_score - reference_log_score``:
  a positive one is a reason the item beats a typical item for this shopper.
* **Feature attributions** (Integrated Gradients; Sundararajan, Taly, Yan, ICML 2017) of the
  model's part of the log score (every fusion term but the price) with respect to the
  output of the model's input layer (the concatenated embeddings and numbers), summed per
  feature. The baseline is the all-zero input (every id at the padding embedding, every
  number at its training mean). By completeness
  they **sum to** ``model_log_score - baseline_model_log_score`` up to the error of the
  ``steps``-point midpoint rule (a few per cent at 64 steps). Sorted by ``|attribution|``.
* **Gate weights** of MMoE / PLE: per task, the softmax weight of each expert (rows sum to 1).
* **Because**: the item of the shopper's history (training events and session) whose
  two-tower vector is closest to the recommended item's, with the deepest behavior on it.

Task contributions and "because" work for every recipe (they need only the scorer's outputs
and the retrieval vectors). Feature attributions and gates come from the scorer's optional
hooks (:meth:`~shoprec.recipes.base.Scorer.feature_attributions`, ``gate_weights``); a scorer
without them is explained by the rest, and the explanation's ``notes`` say so.
:class:`Explainer` puts it together for the :class:`~shoprec.recommend.Recommender`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from shoprec.models.base import MultiTaskModel, output_to_prediction
from shoprec.models.features import SequenceFeature, TextFeature
from shoprec.models.layers import Batch, InputLayer
from shoprec.recommend.fusion import PRICE, VARIABLES, Fusion
from shoprec.recommend.rerank import session_similarity
from shoprec.recommend.retrieve import BEHAVIOR_WEIGHT

if TYPE_CHECKING:
    from shoprec.recommend.recommender import Recommender
    from shoprec.recommend.session import Event, LiveEvents

log = logging.getLogger(__name__)
#: The name of the session term among the task contributions.
SESSION = "session"
#: The name of the stock re-ranking's term (risk of running out, overstock; needs a forecast).
INVENTORY = "inventory"


@dataclass
class TaskContribution:
    """One term of the log score against the reference items.

    Attributes:
        name: a task, ``price`` or ``session``.
        value: the item's probability (task), price, or session similarity.
        reference: the same for a typical reference item (geometric mean for probabilities
            and prices, arithmetic mean for the session similarity).
        contribution: the item's log-score term minus the reference items' mean term.
    """

    name: str
    value: float
    reference: float
    contribution: float


@dataclass
class FeatureAttribution:
    """Integrated-gradients attribution of one input feature (log-score units)."""

    feature: str
    value: Any
    attribution: float


@dataclass
class BecauseItem:
    """The history item most similar to the recommendation."""

    item: str
    title: str | None
    behavior: str
    similarity: float


@dataclass
class Explanation:
    """Why ``item`` is recommended to ``user``; see the module docstring for the sums."""

    user: str
    item: str
    fusion: str
    score: float
    log_score: float
    reference_log_score: float
    tasks: list[TaskContribution]
    model_log_score: float | None  # None where the model's inputs cannot be attributed
    baseline_model_log_score: float | None
    features: list[FeatureAttribution]
    gates: dict[str, list[float]] | None
    because: BecauseItem | None
    sentence: str = ""
    notes: list[str] = field(default_factory=list)
    inventory: dict[str, float | None] | None = None  # Explainer.inventory (with a forecast)


def feature_columns(layer: InputLayer) -> list[tuple[str, int, int]]:
    """``(feature, start, stop)`` column ranges of an :class:`InputLayer`'s output."""
    specs = {f.name: f for f in layer.features}
    out: list[tuple[str, int, int]] = []
    cursor = 0

    def take(name: str, width: int) -> None:
        nonlocal cursor
        out.append((name, cursor, cursor + width))
        cursor += width

    for key, names in layer.groups:
        for name in names:
            take(name, int(key))
    for name, *_ in layer.sequences:
        spec = specs[name]
        assert isinstance(spec, SequenceFeature)
        take(name, spec.dim)
    for name in layer.numeric_names:
        take(name, 1)
    for name in layer.text_names:
        spec = specs[name]
        assert isinstance(spec, TextFeature)
        take(name, spec.dim)
    return out


@dataclass
class IntegratedGradients:
    """Per-feature attributions and the two end values of the explained function."""

    attributions: dict[str, float]
    value: float  # f(x)
    baseline_value: float  # f(baseline)


class _PathInput(nn.Module):
    """Stands in for an :class:`InputLayer` during Integrated Gradients: returns given points
    on the path instead of embedding the batch. It answers both ways a model may read its
    inputs: ``layer(batch)`` and ``layer.linear(batch, weight, bias)`` (documented to equal
    ``layer(batch) @ weight + bias``)."""

    def __init__(self, points: Tensor) -> None:
        super().__init__()
        self.points = points  # (S, I)

    def forward(self, batch: Batch) -> Tensor:
        return self.points

    def linear(self, batch: Batch, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        out = self.points @ weight
        return out if bias is None else out + bias


def integrated_gradients(
    model: MultiTaskModel,
    batch: Batch,
    target: Callable[[Mapping[str, Tensor]], Tensor],
    steps: int = 64,
) -> IntegratedGradients:
    """Integrated Gradients of ``target(predictions)`` for ONE sample, per input feature.

    Works on any model whose inputs go through :class:`InputLayer` modules (all registered
    models; single-task has one per task): each one is swapped, for the call, for a module
    that returns points on the straight path from zero to the layer's output, and the
    gradients along the path are averaged (midpoint rule). Attributions of a feature read by
    several layers add up. The value at the end of the path is checked against a plain
    forward pass, so a model that reads its input some other way fails loudly.

    The swap changes the model while it runs: never call this on a model that other threads
    use at the same time (the recommender keeps a private copy behind a lock).

    Args:
        model: the ranking model, in eval mode.
        batch: the sample, every tensor with a leading dimension of 1.
        target: predictions (task -> ``(S,)`` probabilities) -> ``(S,)`` values to explain.
        steps: points of the midpoint rule.

    Returns:
        Attributions summing to ``value - baseline_value`` up to the quadrature error.

    Raises:
        ValueError: the model has no input layer, or does not read it as ``InputLayer`` does.
    """
    batch = {k: v[:1] for k, v in batch.items()}
    places = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, InputLayer)
    ]
    if not places:
        raise ValueError(f"{type(model).__name__} has no InputLayer to attribute to")

    def predictions(b: Batch) -> dict[str, Tensor]:
        out = model(b)
        return {t.name: output_to_prediction(t, out[t.name]) for t in model.tasks}

    with torch.no_grad():
        xs = [layer(batch) for _, _, layer in places]  # each (1, I_k)
        plain = float(target(predictions(batch))[0])
    alphas = torch.cat([torch.tensor([0.0, 1.0]), (torch.arange(steps) + 0.5) / steps])  # (S+2,)
    paths = [(alphas[:, None] * x).requires_grad_() for x in xs]  # (S+2, I_k); 0 and x first
    rows = len(alphas)
    repeated = {key: v.expand(rows, *v.shape[1:]) for key, v in batch.items()}
    try:
        for (parent, name, _), path in zip(places, paths, strict=True):
            parent._modules[name] = _PathInput(path)
        with torch.enable_grad():
            f = target(predictions(repeated))  # (S+2,)
            if not f.requires_grad:  # the target reads no model output: all-zero attributions
                grads = [torch.zeros_like(path) for path in paths]
            else:
                grads = torch.autograd.grad(f[2:].sum(), paths, allow_unused=True)
                grads = [
                    torch.zeros_like(x) if g is None else g
                    for x, g in zip(paths, grads, strict=True)
                ]
        f = f.detach()
    finally:
        for parent, name, layer in places:
            parent._modules[name] = layer
    if abs(float(f[1]) - plain) > 1e-4 * max(1.0, abs(plain)):
        raise ValueError(
            f"{type(model).__name__} does not read its input only through InputLayer: "
            "no feature attributions"
        )
    attributions: dict[str, float] = {}
    for (_, _, layer), x, g in zip(places, xs, grads, strict=True):
        attr = x[0] * g[2:].mean(0)  # (I_k,)
        for feature, start, stop in feature_columns(layer):
            attributions[feature] = attributions.get(feature, 0.0) + float(attr[start:stop].sum())
    return IntegratedGradients(attributions, float(f[1]), float(f[0]))


_CHANCE = {
    "view": "be viewed",
    "click": "be clicked",
    "favorite": "be saved",
    "cart": "go in the cart",
    "buy": "be bought",
}
_PAST = {
    "view": "viewed",
    "click": "clicked",
    "favorite": "saved",
    "cart": "put in your cart",
    "buy": "bought",
    "rate": "rated",
    "return": "returned",
}


def _feature_phrase(feature: str, value: Any) -> str:
    if feature == "user":
        return "what the model learned about you"
    if feature == "item":
        return "how shoppers responded to this item"
    name = feature.removeprefix("item_").replace("_", " ")
    if name == "log price":
        return "its price"
    if isinstance(value, float):
        return f"{name} {value:.3g}"
    return f"{name} {value}" if value is not None else f"{name} (unknown)"


def sentence(exp: Explanation, penalties: Mapping[str, float] | None = None) -> str:
    """One readable sentence from an explanation's data."""
    drivers = [t for t in exp.tasks if t.contribution > 0.05]
    reasons: list[str] = []
    for t in drivers[:2]:
        ratio = t.value / t.reference if t.reference > 0 else float("inf")
        if t.name == "price":
            reasons.append(f"its price ({t.value:.2f} against a typical {t.reference:.2f})")
        elif t.name == "session":
            reasons.append("its likeness to the items of your latest visit")
        elif penalties and t.name in penalties:
            reasons.append(f"a low chance of {t.name} ({t.value:.1%}, typical {t.reference:.1%})")
        else:
            verb = _CHANCE.get(t.name, f"get '{t.name}'")
            reasons.append(f"{ratio:.1f}x the typical chance to {verb} ({t.value:.1%})")
    if reasons:
        text = "Recommended for " + " and ".join(reasons)
    else:
        text = "Recommended as one of the best remaining matches for you"
    top = [f for f in exp.features if f.attribution > 0 and f.value is not None][:2]
    if top:
        text += "; what raised its score most: " + " and ".join(
            _feature_phrase(f.feature, f.value) for f in top
        )
    text += "."
    if exp.because is not None:
        title = exp.because.title or exp.because.item
        verb = _PAST.get(exp.because.behavior, exp.because.behavior)
        text += f" Because you {verb} \u201c{title}\u201d."
    return text + _stock_phrase(exp.inventory)


#: The stock term (log score) from which an explanation says that stock moved the item.
STOCK_MOVED = 0.05


def _stock_phrase(inv: Mapping[str, float | None] | None) -> str:
    """The "Moved down/up for stock: ..." sentence when the stock re-ranking changed the score by at
    least :data:`STOCK_MOVED` (about 5 %); empty otherwise."""
    if not inv or abs(inv.get("adjustment") or 0.0) < STOCK_MOVED:
        return ""
    change = float(np.expm1(inv["adjustment"] or 0.0))
    if (inv["adjustment"] or 0.0) < 0:
        lead = inv.get("lead_time_weeks")
        within = f" within its {lead:g}-week restock time" if lead is not None else ""
        stock = inv.get("stock")
        held = f" (only {stock:g} in stock)" if stock is not None else ""
        return (
            f" Moved down for stock: a {inv['p_stockout'] or 0.0:.0%} chance of selling out"
            f"{within}{held}; score {change:+.0%}."
        )
    cover = inv.get("weeks_of_cover") or 0.0
    return f" Moved up for stock: {cover:.0f} weeks of stock on hand; score {change:+.0%}."


# ------------------------------------------------------------------------------ explainer


class Explainer:
    """Builds :class:`Explanation` objects for one :class:`~shoprec.recommend.Recommender`.

    Args:
        rec: the recommender (its scorer, catalog, retrieval vectors and history).
    """

    def __init__(self, rec: Recommender) -> None:
        self.rec = rec
        self._lock = threading.Lock()  # the scorer's hooks may swap model layers while they run

    def reference(
        self, user: str, fusion: Fusion, live: LiveEvents
    ) -> dict[str, tuple[float, float]]:
        """Mean log term and typical value per term over the reference items (the catalog,
        or a fixed sample of ``reference_items`` of it, scored for this shopper)."""
        rec = self.rec
        n, total = rec.config.reference_items, rec.catalog.n_items
        ref = (
            np.arange(total)
            if total <= n
            else np.sort(np.random.default_rng(0).choice(total, n, replace=False))
        )
        preds, terms = rec.score(user, ref, fusion, live.frame)
        out: dict[str, tuple[float, float]] = {}
        for name, t in terms.items():
            if name == PRICE:
                values = rec.catalog.price[ref]
            elif name in VARIABLES and name not in preds:  # stock, weeks_of_cover, p_stockout
                values = rec.item_values(ref)[name]
            else:
                values = preds[name]
            values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=1e-7, posinf=1e300)
            typical = float(
                np.exp(np.clip(np.mean(np.log(np.clip(values, 1e-7, None))), -700, 700))
            )
            out[name] = (float(t.mean()), typical)
        sim = session_similarity(rec.retrieval.similarity_vectors, ref, live)
        out[SESSION] = (float(rec.config.session_boost * sim.mean()), float(sim.mean()))
        if rec.forecast is not None:
            risk = np.nan_to_num(rec.stock_state(ref)["p_stockout"], nan=0.0)
            out[INVENTORY] = (float(rec.stock_term(ref).mean()), float(risk.mean()))
        return out

    def explain(
        self,
        user: str,
        p: int,
        fusion: Fusion,
        live: LiveEvents,
        ref: Mapping[str, tuple[float, float]],
    ) -> Explanation:
        """Why the item at position ``p`` for ``user`` (see the module docstring)."""
        rec = self.rec
        positions = np.array([p])
        preds, terms = rec.score(user, positions, fusion, live.frame)
        sim = float(session_similarity(rec.retrieval.similarity_vectors, positions, live)[0])
        terms[SESSION] = np.array([rec.config.session_boost * sim])
        inventory = self.inventory(p)
        if inventory is not None:
            terms[INVENTORY] = np.array([inventory["adjustment"]])
        tasks = []
        for name, t in terms.items():
            if name == PRICE:
                value = float(rec.catalog.price[p])
            elif name == SESSION:
                value = sim
            elif name == INVENTORY:
                value = float(inventory["p_stockout"] or 0.0) if inventory else 0.0
            elif name in VARIABLES and name not in preds:
                value = float(rec.item_values(positions)[name][0])
            else:
                value = float(preds[name][0])
            tasks.append(TaskContribution(name, value, ref[name][1], float(t[0]) - ref[name][0]))
        tasks.sort(key=lambda t: -abs(t.contribution))
        log_score = float(sum(float(t[0]) for t in terms.values()))
        notes: list[str] = []
        attributions, gates = self._hooks(user, p, fusion, notes)
        features: list[FeatureAttribution] = []
        if attributions is not None:
            values, raw = attributions[0], attributions[1]
            features = sorted(
                (FeatureAttribution(n, raw.get(n), a) for n, a in values.items()),
                key=lambda f: -abs(f.attribution),
            )
        exp = Explanation(
            user=user,
            item=rec.catalog.ids[p],
            fusion=fusion.formula(),
            score=float(np.exp(log_score)),
            log_score=log_score,
            reference_log_score=float(sum(m for m, _ in ref.values())),
            tasks=tasks,
            model_log_score=attributions[2] if attributions else None,
            baseline_model_log_score=attributions[3] if attributions else None,
            features=features,
            gates=gates,
            because=self.because(user, p, live.events),
            notes=notes,
            inventory=inventory,
        )
        if not rec.is_known_user(user):
            exp.notes.append("new shopper: the scorer knows them by their live events only")
        exp.sentence = sentence(exp, fusion.penalties)
        return exp

    def inventory(self, p: int) -> dict[str, float | None] | None:
        """Stock, weeks of cover, risk of running out, lead time and the re-ranking's term
        of the item at ``p`` (None without a forecast)."""
        rec = self.rec
        if rec.forecast is None or rec.stock_signals is None:
            return None
        positions = np.array([p])
        state = {k: float(v[0]) for k, v in rec.stock_state(positions).items()}
        demand = rec.stock_signals.demand(p) or {}
        return {
            **{k: (None if np.isnan(v) else v) for k, v in state.items()},
            "lead_time_weeks": demand.get("lead_time_weeks"),
            "demand_p50_lead": demand.get("demand_p50_lead"),
            "adjustment": float(rec.stock_term(positions)[0]),
        }

    def _hooks(
        self, user: str, p: int, fusion: Fusion, notes: list[str]
    ) -> tuple[tuple[dict[str, float], dict[str, Any], float, float] | None, Any]:
        """The scorer's feature attributions and gate weights, where it offers them."""
        scorer = self.rec.scorer
        attributions = gates = None
        if not fusion.reads_model:  # e.g. "price": no model output to attribute the score to
            notes.append(
                f"the fusion {fusion.formula()!r} reads no model output: no feature attributions"
            )
            with self._lock:
                gates = scorer.gate_weights(user, p)
            return None, gates
        try:
            with self._lock:
                attributions = scorer.feature_attributions(
                    user, p, fusion.model_log_score, self.rec.config.explain_steps
                )
        except ValueError as e:  # a model whose inputs cannot be attributed: explain the rest
            log.warning("no feature attributions: %s", e)
            notes.append(str(e))
        else:
            if attributions is None:
                notes.append(
                    f"the '{scorer.recipe}' scorer offers no feature attributions: explained "
                    "by its task outputs, the fusion terms and the closest history item"
                )
        with self._lock:
            gates = scorer.gate_weights(user, p)
        return attributions, gates

    def because(self, user: str, p: int, events: list[Event]) -> BecauseItem | None:
        """The history item (training or live) closest to item ``p`` in the two-tower space,
        the deepest behavior on it."""
        rec = self.rec
        deep, _ = rec.training.deepest(user)
        pos = [rec.catalog.pos[e.item] for e in events] + deep.tolist()
        beh = [e.behavior for e in events] + rec.training.deepest_behaviors(user)
        if not pos:
            return None
        frame = (
            pl.DataFrame({"pos": pos, "behavior": beh}, {"pos": pl.Int64, "behavior": pl.String})
            .filter(pl.col("pos") != p)
            .with_columns(
                pl.col("behavior").replace_strict(BEHAVIOR_WEIGHT, default=1.0).alias("w")
            )
            .sort("w", descending=True, maintain_order=True)
            .unique("pos", keep="first", maintain_order=True)
        )
        if frame.height == 0:
            return None
        v = rec.retrieval.similarity_vectors
        sims = v[frame["pos"].to_numpy()] @ v[p]
        j = int(np.argmax(sims))
        q = int(frame["pos"][j])
        return BecauseItem(
            rec.catalog.ids[q], rec.catalog.title(q), frame["behavior"][j], float(sims[j])
        )
