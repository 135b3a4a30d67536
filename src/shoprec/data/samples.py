"""Training samples for multi-task ranking: one row per (user, item) with a label per behavior.

Shops log what users did, rarely what they were shown. :func:`pair_samples` turns events into
one row per user-item pair that the user touched, with a 0/1 label for each behavior of
interest (did they view it? cart it? buy it?), plus sampled negatives: items the user never
touched in that period, all labels 0. Everything is vectorised (Polars joins and NumPy draws).

Example:
    >>> import polars as pl
    >>> from shoprec.data.schema import Interactions
    >>> inter = Interactions.from_frame(pl.DataFrame({
    ...     "user": ["u1", "u1", "u2"], "item": ["a", "a", "b"],
    ...     "behavior": ["view", "buy", "view"]}))
    >>> s = pair_samples(inter, ["view", "buy"], n_negatives=0)
    >>> s.sort("user").select("user", "item", "view", "buy").rows()
    [('u1', 'a', 1, 1), ('u2', 'b', 1, 0)]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from shoprec.data.schema import Behavior, Interactions


def pair_samples(
    inter: Interactions,
    behaviors: Sequence[Behavior | str],
    *,
    n_negatives: int = 4,
    items: Sequence[str] | pl.Series | None = None,
    seed: int = 0,
    exclude: Interactions | None = None,
) -> pl.DataFrame:
    """One row per touched (user, item) pair with a 0/1 column per behavior, plus negatives.

    Args:
        inter: the events of one period (e.g. the training part of a split).
        behaviors: behaviors that become label columns, e.g. ``["view", "cart", "buy"]``.
        n_negatives: sampled untouched items per positive pair (uniform over ``items``).
        items: the item pool for negatives; all items in ``inter`` by default.
        seed: seed for the negative draw.
        exclude: further events whose pairs must not be drawn as negatives (e.g. the
            user's history before this period).

    Returns:
        Columns ``user, item, timestamp`` (first event of the pair; null for negatives),
        ``domain`` (the pair's domain; the user's main domain for negatives), one Int8
        column per behavior, and ``n_events``.
    """
    names = [str(b) for b in behaviors]
    df = inter.df
    pos = df.group_by("user", "item").agg(
        pl.col("timestamp").min(),
        pl.col("domain").first(),
        pl.len().alias("n_events"),
        *[(pl.col("behavior") == b).any().cast(pl.Int8).alias(b) for b in names],
    )
    pos = pos.sort("user", "item")  # group_by order is not deterministic
    if n_negatives <= 0 or pos.height == 0:
        return pos
    pool = (
        pl.Series("item", items, dtype=pl.String)
        if items is not None
        else df["item"].unique().sort()
    )
    rng = np.random.default_rng(seed)
    n = pos.height * n_negatives
    neg = pl.DataFrame(
        {
            "user": np.repeat(pos["user"].to_numpy(), n_negatives),
            "item": pool.to_numpy()[rng.integers(0, len(pool), size=n)],
        }
    )
    touched = pos.select("user", "item")
    if exclude is not None:
        touched = pl.concat([touched, exclude.df.select("user", "item")]).unique()
    neg = neg.join(touched, on=["user", "item"], how="anti").unique(maintain_order=True)
    main_domain = (
        df.group_by("user").agg(pl.col("domain").mode().sort().first()).rename({"domain": "_dom"})
    )
    neg = neg.join(main_domain, on="user", how="left").select(
        "user",
        "item",
        pl.lit(None, dtype=pos.schema["timestamp"]).alias("timestamp"),
        pl.col("_dom").alias("domain"),
        pl.lit(0, dtype=pl.UInt32).alias("n_events"),
        *[pl.lit(0, dtype=pl.Int8).alias(b) for b in names],
    )
    return pl.concat([pos.select(neg.columns), neg])


def attach(
    samples: pl.DataFrame, catalog: pl.DataFrame | None, users: pl.DataFrame | None
) -> pl.DataFrame:
    """Join item attributes (prefixed ``item_``) and user attributes onto samples."""
    out = samples
    if catalog is not None:
        cols = [c for c in catalog.columns if c != "item"]
        out = out.join(catalog.rename({c: f"item_{c}" for c in cols}), on="item", how="left")
    if users is not None:
        out = out.join(users, on="user", how="left")
    return out
