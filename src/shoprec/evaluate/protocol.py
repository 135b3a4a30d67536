"""Evaluation protocols over event tables: who is evaluated, what is relevant, what is excluded.

The metric functions in :mod:`shoprec.evaluate.metrics` take score matrices and index lists;
this module builds those lists from :class:`~shoprec.data.schema.Interactions`-style frames,
so a full-ranking evaluation is three calls::

    users = evaluated_users(test_events, "buy", known=train_users)
    relevant = item_lists(test_events, users, items, "buy")
    past = item_lists(train_events, users, items, "buy")
    ranking_metrics(scores, relevant, past)    # scores: (len(users), len(items))
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import polars as pl

from shoprec.evaluate.metrics import CSR


def evaluated_users(
    events: pl.DataFrame, behavior: str, known: Collection[str] | pl.Series | None = None
) -> list[str]:
    """Sorted users with at least one ``behavior`` event, kept to ``known`` ones if given.

    Args:
        events: a frame with ``user`` and ``behavior`` columns (e.g. the test period).
        behavior: the behavior that makes a user count, e.g. ``"buy"``.
        known: users the model has seen (e.g. the training users); others are left out.

    Returns:
        The users, sorted, as strings.
    """
    users = events.filter(pl.col("behavior") == behavior).select(pl.col("user").cast(pl.String))
    if known is not None:
        known_frame = pl.DataFrame({"user": pl.Series(list(known)).cast(pl.String)})
        users = users.join(known_frame, on="user", how="semi")
    return sorted(users["user"].unique().to_list())


def item_lists(
    events: pl.DataFrame,
    users: Sequence[str],
    items: Sequence[str] | pl.Series,
    behavior: str | None = None,
) -> CSR:
    """Each user's distinct items with ``behavior`` (any behavior if None), as CSR rows.

    Rows follow ``users``; item indices point into ``items`` (e.g. the columns of a score
    matrix). Items not in ``items`` are dropped; users with no such event get an empty row.

    Example:
        >>> ev = pl.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"],
        ...                    "behavior": ["buy", "view", "buy"]})
        >>> item_lists(ev, ["b", "a"], ["x", "y"], "buy").indices.tolist()
        [0, 0]
    """
    if behavior is not None:
        events = events.filter(pl.col("behavior") == behavior)
    pairs = (
        events.select(pl.col("user").cast(pl.String), pl.col("item").cast(pl.String))
        .unique()
        .join(pl.DataFrame({"user": list(users), "row": np.arange(len(users))}), on="user")
        .join(pl.DataFrame({"item": list(items), "col": np.arange(len(items))}), on="item")
    )
    return CSR.from_pairs(pairs["row"].to_numpy(), pairs["col"].to_numpy(), len(users))
