"""Summaries of a loaded dataset: what ``shoprec data describe`` prints."""

from __future__ import annotations

from typing import Any

import polars as pl

from shoprec.data.schema import Dataset, Interactions, TabularDataset

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def describe_interactions(inter: Interactions) -> dict[str, Any]:
    """Counts, density, date range and per-user activity of a set of events.

    Returns a plain dict (JSON-serialisable) with ``events``, ``users``, ``items``,
    ``pairs`` (distinct user-item pairs), ``density`` (pairs / (users * items)),
    ``events_per_behavior``, ``events_per_domain``, ``date_range`` and
    ``interactions_per_user`` (mean and quantiles).
    """
    df = inter.df
    n_users = df["user"].n_unique()
    n_items = df["item"].n_unique()
    pairs = df.select(pl.struct("user", "item").n_unique()).item()
    per_user = df.group_by("user").len()["len"]
    ts = df["timestamp"]
    date_range = None
    if ts.null_count() < len(ts):
        date_range = {"first": str(ts.min()), "last": str(ts.max())}

    def counts(col: str) -> dict[str, int]:
        vc = df.group_by(col).len().sort("len", descending=True)
        return {str(k): int(v) for k, v in zip(vc[col], vc["len"], strict=True)}

    return {
        "events": df.height,
        "users": n_users,
        "items": n_items,
        "pairs": int(pairs),
        "density": float(pairs) / (n_users * n_items) if n_users and n_items else 0.0,
        "events_per_behavior": counts("behavior"),
        "events_per_domain": counts("domain"),
        "quantity_total": int(df["quantity"].sum()),
        "date_range": date_range,
        "interactions_per_user": {
            "mean": float(per_user.mean()) if len(per_user) else 0.0,  # type: ignore[arg-type]
            **{f"q{int(q * 100)}": float(per_user.quantile(q, "nearest")) for q in QUANTILES},  # type: ignore[arg-type]
        }
        if len(per_user)
        else None,
    }


def describe(ds: Dataset | TabularDataset) -> dict[str, Any]:
    """A JSON-ready summary of any loaded dataset."""
    if isinstance(ds, TabularDataset):
        frame = ds.frame
        out: dict[str, Any] = {
            "name": ds.name,
            "kind": "tabular",
            "rows": frame.height,
            "raw_rows": ds.raw_rows,
            "categorical_features": len(ds.categorical),
            "numeric_features": len(ds.numeric),
            "label_rates": {lab: float(frame[lab].mean()) for lab in ds.labels},  # type: ignore[arg-type]
            "dropped": ds.dropped.to_dict(),
        }
        if "split" in frame.columns:
            vc = frame.group_by("split").len().sort("split")
            out["rows_per_split"] = dict(zip(vc["split"], vc["len"].to_list(), strict=True))
        return out
    out = {"name": ds.name, "kind": "interactions", "raw_rows": ds.raw_rows}
    out.update(describe_interactions(ds.interactions))
    out["dropped"] = ds.dropped.to_dict()
    out["dropped_total"] = ds.dropped.total
    if ds.test is not None:
        out["test"] = {
            "events": len(ds.test),
            "users": ds.test.df["user"].n_unique(),
            "events_per_behavior": describe_interactions(ds.test)["events_per_behavior"],
        }
    if ds.valid is not None:
        out["valid"] = {"events": len(ds.valid), "users": ds.valid.df["user"].n_unique()}
    if ds.catalog is not None:
        cat = ds.catalog.df
        out["catalog"] = {
            "items": cat.height,
            "with_title": int(cat["title"].is_not_null().sum()),
            "categories": int(cat["category"].drop_nulls().n_unique()),
            "with_price": int(cat["price"].is_not_null().sum()),
        }
    if ds.users is not None:
        out["user_table"] = {"users": len(ds.users), "attributes": ds.users.attributes}
    if ds.meta:
        out["meta"] = {k: v for k, v in ds.meta.items() if isinstance(v, str | int | float | bool)}
    return out
