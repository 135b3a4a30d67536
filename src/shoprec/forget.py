"""Forget a shopper: every place an artifact keeps them, until the next training.

:func:`forget_users` removes a shopper from an artifact folder:

* ``seen.parquet`` (training events: history, exclusions, retrieval training data): their rows;
* the recipe's scorer (``Scorer.forget_users``): their rows of user tables and histories,
  their id in every id map replaced by a tombstone (so the id no longer resolves: they are an
  unknown, cold-start shopper) and their embedding rows zeroed;
* the retrieval files (in the artifact, or in the serving cache): their id in the two-tower
  user vocabulary tombstoned and their user-tower embedding row zeroed, so nothing retrieves
  for them from what was learned of them;
* ``manifest.json``: rewritten (atomically, last) with the new sizes and checksums.

The event store (:meth:`shoprec.serve.store.EventStore.forget`) and the live session log
(:meth:`shoprec.recommend.session.SessionLog.forget`) are forgotten by their owners;
``shoprec forget`` and ``DELETE /users/{id}`` do all of it. Learned weights shared by all
shoppers (towers, experts) still carry a trace of everyone's training events until the next
training, which no longer sees them.

Example:
    >>> report = forget_users("runs/sim_mmoe", ["u12"])  # doctest: +SKIP
    >>> report.seen_rows, report.scorer  # doctest: +SKIP
    (41, {'user_table_rows': 1, 'ids': 1, 'embedding_rows': 1})
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from shoprec import atomic
from shoprec.artifact import (
    RETRIEVAL_DIR,
    SCORER_DIR,
    SEEN_FILE,
    Artifact,
    file_entries,
    write_manifest,
)
from shoprec.data.encode import Encoder, IdMap
from shoprec.errors import ShoprecError

log = logging.getLogger(__name__)

#: Prefix of the value that replaces a forgotten id in a vocabulary: never a real id (the
#: loaders refuse control characters), and distinct per entry so vocabularies stay unique.
TOMBSTONE = "\x00forgotten:"


def tombstone(value: str) -> str:
    """The placeholder of a forgotten id (a one-way hash, so it names no one)."""
    return TOMBSTONE + hashlib.sha256(os.urandom(16) + value.encode()).hexdigest()[:16]


def forget_ids(ids: IdMap, values: Iterable[str]) -> tuple[IdMap, np.ndarray]:
    """``ids`` with ``values`` replaced by tombstones, and the ids (``2+``) they had.

    Positions do not move (embedding rows and per-user arrays stay aligned); the forgotten
    values now map to the unknown id.
    """
    gone = {v for v in values if v in ids.index}
    if not gone:
        return ids, np.zeros(0, np.int64)
    found = np.array(sorted(ids.index[v] for v in gone), dtype=np.int64)
    new = tuple(tombstone(v) if v in gone else v for v in ids.values)
    return IdMap(ids.column, new), found


def forget_in_encoder(encoder: Encoder, column: str, values: Iterable[str]) -> np.ndarray:
    """Tombstone ``values`` in an encoder's vocabulary of ``column`` (in place); returns the
    ids they had (empty when the encoder has no such column or value)."""
    maps = getattr(encoder, "idmaps_", None) or {}
    if column not in maps:
        return np.zeros(0, np.int64)
    maps[column], found = forget_ids(maps[column], values)
    return found


def zero_embedding_rows(model: nn.Module, feature: str, ids: np.ndarray) -> int:
    """Zero the embedding rows of categorical ``feature``'s ``ids`` in every input layer of
    ``model`` (:class:`~shoprec.models.layers.InputLayer`: one table per width, each feature
    at its offset); returns the number of rows zeroed."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return 0
    zeroed = 0
    for layer in model.modules():
        for key, names in getattr(layer, "groups", ()):
            if feature not in names or not hasattr(layer, "tables"):
                continue
            offset = int(getattr(layer, f"offsets_{key}")[names.index(feature)])
            rows = torch.from_numpy(ids + offset)
            with torch.no_grad():
                layer.tables[key].weight[rows] = 0.0
            zeroed += len(ids)
    return zeroed


def drop_user_rows(frame: pl.DataFrame | None, users: Sequence[str]) -> tuple[Any, int]:
    """``frame`` without the rows of ``users`` (its ``user`` column), and how many went."""
    if frame is None or "user" not in frame.columns:
        return frame, 0
    kept = frame.filter(~pl.col("user").cast(pl.String).is_in(list(users)))
    return kept, frame.height - kept.height


@dataclass
class ForgetReport:
    """What :func:`forget_users` removed.

    Attributes:
        users: the shoppers asked for.
        known: those the artifact knew (training events or scorer state).
        seen_rows: rows removed from ``seen.parquet``.
        scorer: the scorer's counts (``Scorer.forget_users``).
        retrieval: the retrieval files' counts (``ids``, ``embedding_rows``).
    """

    users: list[str]
    known: list[str] = field(default_factory=list)
    seen_rows: int = 0
    scorer: dict[str, int] = field(default_factory=dict)
    retrieval: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "known": self.known,
            "seen_rows": self.seen_rows,
            "scorer": self.scorer,
            "retrieval": self.retrieval,
        }


def forget_users(directory: str | Path, users: Sequence[str]) -> ForgetReport:
    """Remove ``users`` from the artifact in ``directory`` (see the module docstring).

    The artifact is checked first; the new files are written beside it and synced, then
    renamed over the old ones, the manifest last (atomic replace). Forgetting a user the
    artifact does not know changes nothing.

    Args:
        directory: an artifact folder.
        users: shopper ids.

    Returns:
        What was removed, per place.

    Raises:
        ArtifactError: a damaged artifact (nothing is changed).
        ShoprecError: the recipe's scorer cannot forget a shopper.
    """
    directory = Path(directory)
    users = [str(u) for u in users]
    art = Artifact.load(directory)  # every file checked against the manifest
    report = ForgetReport(users)
    seen, report.seen_rows = drop_user_rows(art.seen, users)
    in_seen = set(art.seen.filter(pl.col("user").cast(pl.String).is_in(users))["user"].to_list())
    try:
        report.scorer = dict(art.scorer.forget_users(users))
    except NotImplementedError as e:  # nothing is written
        raise ShoprecError(f"{directory}: {e}") from e
    old_cache, retrieval = _retrieval_folder(art)
    staging = directory / f".forget-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        seen.write_parquet(staging / SEEN_FILE)
        (staging / SCORER_DIR).mkdir()
        art.scorer.save(staging / SCORER_DIR)
        if retrieval is not None:
            shutil.copytree(retrieval, staging / RETRIEVAL_DIR)
            report.retrieval = _forget_in_retrieval(staging / RETRIEVAL_DIR, users)
        atomic.fsync_tree(staging)
        # the swap: each renamed over its old self (atomic), the manifest last
        os.replace(staging / SEEN_FILE, directory / SEEN_FILE)
        atomic.replace_dir(staging / SCORER_DIR, directory / SCORER_DIR)
        if retrieval is not None and old_cache is None:
            atomic.replace_dir(staging / RETRIEVAL_DIR, directory / RETRIEVAL_DIR)
        manifest = dict(art.manifest)
        manifest["files"] = file_entries(directory)
        write_manifest(directory, manifest)
        if retrieval is not None and old_cache is not None:
            # the cache is named by seen.parquet's checksum: the edited files move to the
            # new name and the old ones (which knew the shopper) are removed
            from shoprec.recommend.retrieve import cache_folder

            new_cache = cache_folder(_Manifested(directory, manifest))
            new_cache.parent.mkdir(parents=True, exist_ok=True)
            atomic.replace_dir(staging / RETRIEVAL_DIR, new_cache)
            if new_cache != old_cache:
                shutil.rmtree(old_cache, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ids_gone = report.scorer.get("ids", 0) + report.retrieval.get("ids", 0)
    report.known = [u for u in users if u in in_seen] or (users if ids_gone else [])
    log.info("forgot %s in %s: %s", ", ".join(users), directory, report.to_dict())
    return report


@dataclass
class _Manifested:
    """What :func:`~shoprec.recommend.retrieve.cache_folder` reads of an artifact."""

    directory: Path
    manifest: dict[str, Any]


def _retrieval_folder(art: Artifact) -> tuple[Path | None, Path | None]:
    """(the cache folder or None when the files are in the artifact, the folder holding the
    retrieval files or None when there are none yet)."""
    from shoprec.recommend.retrieve import cache_folder, has_retrieval

    listed = any(k.startswith(f"{RETRIEVAL_DIR}/") for k in art.manifest.get("files", {}))
    if listed:
        return None, art.directory / RETRIEVAL_DIR
    cache = cache_folder(art)
    return cache, cache if has_retrieval(art.directory, cache) else None


def _forget_in_retrieval(folder: Path, users: Sequence[str]) -> dict[str, int]:
    """Tombstone ``users`` in the two-tower user vocabulary and zero their user-tower rows."""
    from shoprec.models.two_tower import TwoTower
    from shoprec.recommend.two_tower import USER_ENCODER_FILE

    encoder = Encoder.from_json(folder / USER_ENCODER_FILE)
    ids = forget_in_encoder(encoder, "user", users)
    if ids.size == 0:
        return {"ids": 0, "embedding_rows": 0}
    encoder.to_json(folder / USER_ENCODER_FILE)
    model = TwoTower.load(folder)
    rows = zero_embedding_rows(model.user_inputs, "user", ids)
    model.save(folder)
    return {"ids": int(ids.size), "embedding_rows": rows}


def forget_in_model_inputs(
    encoder: Encoder, model: nn.Module, users: Sequence[str], column: str = "user"
) -> dict[str, int]:
    """The common case of a scorer: tombstone ``users`` in ``encoder``'s ``column`` and zero
    their rows in ``model``'s input embeddings."""
    ids = forget_in_encoder(encoder, column, users)
    return {"ids": int(ids.size), "embedding_rows": zero_embedding_rows(model, column, ids)}


__all__ = [
    "TOMBSTONE",
    "ForgetReport",
    "drop_user_rows",
    "forget_ids",
    "forget_in_encoder",
    "forget_in_model_inputs",
    "forget_users",
    "tombstone",
    "zero_embedding_rows",
]
