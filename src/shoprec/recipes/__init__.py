"""Recipes: one per kind of problem, all behind one interface (:mod:`shoprec.recipes.base`).

=================  =========================================================================
``pairs``          (user, item) pairs with one label per behavior and sampled negatives; ids
                   and catalog / user attributes as features (:mod:`~.pairs`)
``multibehavior``  rank items for a target behavior (buy) from the user's own view / cart /
                   buy histories, with or without timestamps (:mod:`~.multibehavior`)
``windows``        repeat-purchase retail: monthly label windows with buy, return and
                   quantity, features from the events before each window (:mod:`~.retail`)
``content``        new items from their title and attributes (ID + content tower, optional
                   seed ensemble) (:mod:`~.content`)
``cross_domain``   a sparse target domain from a rich source: target only, fine-tune, joint
                   lambda, experts, item neighbours (:mod:`~.cross_domain`)
``sequence``       users encoded from their item histories (pooled, attention or SASRec
                   encoder, sampled softmax with log-Q correction), one domain or several
                   (joint, fine-tune), optionally blended with item neighbours
                   (:mod:`~.sequence`)
``tabular``        impression-level rows with one label per task (CTR / CVR, census-income):
                   scores rows, recommends nothing (:mod:`~.tabular`)
``demand``         weekly demand per product: the multi-task forecaster (units, P50 / P90,
                   no sale, returns, trend); ``shoprec forecast`` writes the forecasts and a
                   reorder list (:mod:`~.demand`)
=================  =========================================================================

Each runs from ``shoprec train CONFIG`` with ``recipe: {name: ...}``.
"""

from __future__ import annotations

import importlib

from shoprec.recipes.base import Recipe, RecipeOptions, Scorer, TrainingRun

__all__ = [
    "REGISTRY",
    "TASK_KINDS",
    "Recipe",
    "RecipeOptions",
    "Scorer",
    "TrainingRun",
    "check_tasks",
    "get",
    "names",
]

#: Recipe name -> "module:class" (imported on first use, so a config check stays fast).
REGISTRY: dict[str, str] = {
    "pairs": "shoprec.recipes.pairs:PairsRecipe",
    "multibehavior": "shoprec.recipes.multibehavior:MultiBehaviorRecipe",
    "windows": "shoprec.recipes.retail:WindowsRecipe",
    "content": "shoprec.recipes.content:ContentRecipe",
    "cross_domain": "shoprec.recipes.cross_domain:CrossDomainRecipe",
    "tabular": "shoprec.recipes.tabular:TabularRecipe",
    "sequence": "shoprec.recipes.sequence:SequenceRecipe",
    "demand": "shoprec.recipes.demand:DemandRecipe",
}

#: Recipe name -> the task kinds it learns (checked when a recipe is built and by
#: ``shoprec config check``, before any data is read). Content, cross-domain and sequence rank
#: one behavior; the tabular recipe takes any label column.
TASK_KINDS: dict[str, frozenset[str]] = {
    "pairs": frozenset({"binary"}),
    "multibehavior": frozenset({"binary", "multiclass"}),
    "windows": frozenset({"binary", "regression"}),
    "content": frozenset({"binary"}),
    "cross_domain": frozenset({"binary"}),
    "sequence": frozenset({"binary"}),
    "tabular": frozenset({"binary", "regression", "multiclass"}),
    "demand": frozenset({"binary", "regression"}),
}


def check_tasks(recipe: str, tasks: list[tuple[str, str]]) -> None:
    """Refuse a task the recipe cannot learn, naming the recipes that can.

    Args:
        recipe: the recipe name.
        tasks: ``(name, kind)`` of each configured task.

    Raises:
        ValueError: a task of a kind ``recipe`` does not learn.
    """
    kinds = TASK_KINDS.get(recipe)
    for name, kind in tasks:
        if kinds is not None and kind not in kinds:
            others = [r for r, k in TASK_KINDS.items() if kind in k]
            raise ValueError(
                f"tasks: the {recipe} recipe learns {sorted(kinds)} tasks; task '{name}' is "
                f"{kind} (recipes that learn {kind} tasks: {', '.join(others)})"
            )


def names() -> list[str]:
    """The registered recipe names (nothing is imported)."""
    return list(REGISTRY)


def get(name: str) -> type[Recipe]:
    """The recipe class registered under ``name``.

    Raises:
        ValueError: no such recipe.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown recipe '{name}'; recipes: {sorted(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"recipe '{name}' is not available: {e}") from e
