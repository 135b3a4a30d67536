"""Recipes: end-to-end ways of preparing data for, training and evaluating a model on one kind
of problem, built from the library's parts (data, models, train, evaluate).

* :mod:`shoprec.recipes.multibehavior` — rank items for one target behavior (e.g. buy) with a
  multi-task model over several behaviors (view / cart / buy), with the user's behavior
  histories as features and a candidate stage for full ranking.
"""
