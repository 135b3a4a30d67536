"""The ``content`` recipe: rank new items from their title and attributes.

For shops that add products all the time: an item nobody has bought yet is scored from its
content (title, category, brand, price), an item with history from its ID embedding blended
with that content. The model is :class:`~shoprec.models.content.ContentModel` (read its
docstring for the method: DropoutNet-style ID dropout, distillation of the content tower
towards the ID embeddings, a recency-weighted pool of the user's recent items, an optional
content-match term and BPR term). The recipe, step by step:

1. **Items.** Every catalog item gets a position (catalog order, then items that occur only
   in the training events). Titles become 384-wide vectors through
   :func:`shoprec.transfer.text.encode_titles` (the bundled all-MiniLM-L6-v2, offline,
   cached on disk; or hashed bags of words, ``text: {encoder: hashed-words}``); with
   ``title_words`` the tower also reads a learned bag of the title's words (lower-cased
   alphanumeric tokens in at least ``min_word_count`` titles of the
   catalog); category, brand and price where the catalog has them.
2. **Events.** The training part's events of ``behaviors`` (all by default), per user in
   time order; each one is a positive (user, item) pair, its features the user's
   ``history_len`` previous items.
3. **Selection.** With a validation part, the one loop (:func:`shoprec.train.loop.fit`)
   trains on the training part and stops early on validation NDCG@10: each validation user
   (one with training events) ranks the target behavior's validation items against
   ``valid_negatives`` items drawn uniformly from the *pool* (never the user's own items):
   with ``valid_pool: auto``, the validation items unseen in training when no target was
   seen in training (a cold-item split), else the whole catalog; ``cold`` keeps only the
   targets new to training and draws from those items. ``valid_negatives: null`` (or a
   pool of at most ``2 * (valid_negatives + 1)`` items) ranks against the whole pool.
   ``valid_target: last`` keeps only a user's last event of train + valid, when it is a
   validation event (next-item validation, as ``benchmarks/new_items.py`` does).
4. **Members.** One model per ``ensemble_seeds`` entry (default: ``train.seed``), trained
   for the selected number of epochs on training + validation events (``refit``; or on the
   training events only) from that seed.
5. **Scores** (:class:`ContentScorer`): each member's dot-product score is standardised per
   user over the training catalog (its exact mean and variance over all items, from the
   members' item vectors, so the standardisation never depends on which items are asked
   for), the members' standardised scores are averaged, and a sigmoid maps the mean into
   (0, 1). That is a positive, monotone transform of the ranking score, **not** a
   calibrated purchase probability: the model is trained with a sampled softmax and has
   none.

Live events (``score(..., events=...)``) go in front of the user's recent items, so what a
shopper just bought moves the next list. Items added to the catalog after training
(:meth:`ContentScorer.add_items`) are encoded and appended, and scored by the content tower
without retraining.

Example:
    >>> from shoprec.config import ExperimentConfig
    >>> cfg = ExperimentConfig.from_dict({"data": {"dataset": "simulated"},
    ...     "recipe": {"name": "content", "history_len": 10}})  # doctest: +SKIP
    >>> run = ContentRecipe(cfg).fit(dataset, split)  # doctest: +SKIP
    >>> run.scorer.score(["u1"], np.array([3, 4]))["buy"].shape  # doctest: +SKIP
    (1, 2)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from safetensors.torch import load_file, save_file
from torch import Tensor

from shoprec.data.batches import TensorData
from shoprec.data.encode import IdMap
from shoprec.evaluate.metrics import Sparse, csr_from_pairs
from shoprec.evaluate.protocols import full_ranking, sampled_ranking
from shoprec.models.content import (
    ContentConfig,
    ContentModel,
    ItemContent,
    content_state,
    extend_items,
    load_content_model,
    save_content_model,
)
from shoprec.recipes.base import (
    Recipe,
    RecipeOptions,
    Scorer,
    TrainingRun,
    events_of,
    positions_or_all,
)
from shoprec.train.loop import fit
from shoprec.transfer.content import last_items, recent_items

if TYPE_CHECKING:
    from shoprec.data.schema import Dataset, Interactions
    from shoprec.data.split import Split

log = logging.getLogger(__name__)

__all__ = ["ContentOptions", "ContentRecipe", "ContentScorer", "TextOptions"]

FORMAT = "shoprec.content_scorer"
VERSION = 1
_WORD = r"[a-z0-9]+"


# ------------------------------------------------------------------------------- options


class TextOptions(RecipeOptions):
    """How titles become vectors.

    ``all-MiniLM-L6-v2`` (default): the bundled sentence encoder, offline, never a download
    (:mod:`shoprec.transfer.text`). ``hashed-words``: a unit-length signed bag of the title's
    words hashed into ``hashed_dim`` slots, with no model to load: for shops without the
    encoder installed, and quick experiments.
    """

    encoder: Literal["all-MiniLM-L6-v2", "hashed-words"] = "all-MiniLM-L6-v2"
    batch_size: int = Field(256, gt=0)  # titles per forward pass
    cache: bool = True  # keep vectors on disk ($SHOPREC_CACHE or ~/.cache/shoprec/text)
    hashed_dim: int = Field(384, gt=0)  # width of hashed-words vectors


class ContentOptions(RecipeOptions):
    """Options of the ``content`` recipe (``recipe:`` keys besides ``name``).

    The model keys are the fields of :class:`~shoprec.models.content.ContentConfig` whose
    values do not come from the data, with its defaults except ``history_len`` (20) and
    ``history_text`` (true), so that a shopper's recent items, live events included, reach
    the model. Training settings (epochs cap, lr, batch size, patience, seed) are the
    config's ``train`` section.
    """

    # -- the model (ContentConfig; sizes come from the data) -----------------------------
    dim: int = Field(64, gt=0)  # width of user and item vectors
    hidden: int = Field(256, gt=0)  # content tower hidden width
    dropout: float = Field(0.1, ge=0, lt=1)  # dropout inside the content tower
    side_dim: int = Field(16, gt=0)  # embedding width of category and brand
    word_dim: int = Field(32, gt=0)  # width of the title bag-of-words embedding
    id_weight: float = Field(0.5, ge=0, le=1)  # w in q = w e + (1 - w) c for warm items
    id_dropout: float = Field(0.5, ge=0, le=1)  # chance a training item loses its ID part
    distill_weight: float = Field(1.0, ge=0)  # content -> ID embedding distillation
    n_negatives: int = Field(1024, gt=0)  # uniform negatives per batch
    temperature: float = Field(0.2, gt=0)  # softmax temperature of the ranking loss
    user_l2: float = Field(0.0, ge=0)  # L2 penalty on the batch's user vectors
    history_len: int = Field(20, ge=0)  # recent items pooled into the user vector
    use_user_id: bool = True  # a user ID embedding in the user vector
    history_text: bool = True  # also pool a linear map of the recent items' title vectors
    init_std: float = Field(0.05, gt=0)  # std of the ID embeddings at start
    content_match: bool = False  # + learned scale x cosine to the recent items' titles
    content_match_init: float = 1.0  # that scale at start
    pairwise_weight: float = Field(0.0, ge=0)  # weight of a BPR term (an AUC surrogate)
    # -- item content ----------------------------------------------------------------------
    title_words: bool = True  # a learned bag of title words in the content tower
    max_words: int = Field(16, gt=0)  # words kept per title (in vocabulary order)
    min_word_count: int = Field(2, ge=1)  # a word must occur in this many catalog titles
    category: bool = True  # the catalog's category, when it has one
    brand: bool = True  # the catalog's brand, when it has one
    price: bool = True  # log price, when the catalog has prices
    text: TextOptions = Field(default_factory=TextOptions)
    # -- data, selection, ensemble ---------------------------------------------------------
    behaviors: tuple[str, ...] | None = None  # events that are positives (None: all)
    ensemble_seeds: tuple[int, ...] | None = None  # one model per seed (None: train.seed)
    refit: bool = True  # members train on train + valid for the selected epochs
    valid_target: Literal["all", "last"] = "all"  # which validation events are targets
    valid_pool: Literal["auto", "cold", "all"] = "auto"  # where validation negatives come from
    valid_negatives: int | None = Field(99, gt=0)  # None: rank against the whole pool

    @model_validator(mode="after")
    def _consistent(self) -> ContentOptions:
        if self.content_match and self.history_len == 0:
            raise ValueError("content_match needs history_len > 0")
        seeds = self.ensemble_seeds
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            raise ValueError("ensemble_seeds needs distinct seeds (or null for train.seed)")
        return self

    def model_fields_for(self) -> dict[str, Any]:
        """The :class:`ContentConfig` fields these options set."""
        names = {f.name for f in dataclasses.fields(ContentConfig)}
        return {k: v for k, v in self.model_dump().items() if k in names}


# ----------------------------------------------------------------------- item content


@dataclasses.dataclass
class _Vocab:
    """What turns catalog rows into model inputs (kept with the scorer for new items)."""

    words: IdMap | None  # title words; model word id = IdMap id - 1 (0 = padding)
    category: IdMap | None  # model id = IdMap id (0 padding, 1 unknown)
    brand: IdMap | None
    price: bool
    max_words: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "words": None if self.words is None else list(self.words.values),
            "category": None if self.category is None else list(self.category.values),
            "brand": None if self.brand is None else list(self.brand.values),
            "price": self.price,
            "max_words": self.max_words,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Vocab:
        def idmap(name: str) -> IdMap | None:
            return None if d[name] is None else IdMap(name, tuple(d[name]))

        return cls(idmap("words"), idmap("category"), idmap("brand"), d["price"], d["max_words"])

    @classmethod
    def fit(cls, catalog: pl.DataFrame, opts: ContentOptions) -> _Vocab:
        """Vocabularies over the whole catalog (its content, never its interactions)."""
        words = None
        if opts.title_words:
            tokens = _tokens(catalog["title"]).explode().drop_nulls()
            counts = tokens.value_counts(name="n")
            kept = counts.filter(pl.col("n") >= opts.min_word_count)["title"].sort()
            words = IdMap("words", tuple(kept.to_list()))

        def attribute(column: str, wanted: bool) -> IdMap | None:
            if not wanted or column not in catalog.columns:
                return None
            values = catalog[column].drop_nulls().cast(pl.String).unique().sort()
            return IdMap(column, tuple(values.to_list())) if len(values) else None

        has_price = "price" in catalog.columns and catalog["price"].drop_nulls().len() > 0
        return cls(
            words,
            attribute("category", opts.category),
            attribute("brand", opts.brand),
            opts.price and has_price,
            opts.max_words,
        )

    def content(self, items: pl.DataFrame, text: np.ndarray) -> ItemContent:
        """Model inputs of catalog rows whose title vectors are ``text``."""
        n = items.height
        words = None
        if self.words is not None:
            words = np.zeros((n, self.max_words), np.int64)
            tokens = (
                pl.DataFrame({"row": np.arange(n), "w": _tokens(items["title"])})
                .explode("w")
                .drop_nulls("w")
            )
            ids = self.words.encode(tokens["w"]) - 1  # OOV (1) -> 0, dropped below
            tokens = (
                tokens.with_columns(id=pl.Series(ids))
                .filter(pl.col("id") > 0)
                .unique(["row", "id"])
                .sort(["row", "id"])
                .with_columns(k=pl.int_range(pl.len()).over("row"))
                .filter(pl.col("k") < self.max_words)
            )
            words[tokens["row"].to_numpy(), tokens["k"].to_numpy()] = tokens["id"].to_numpy()

        def ids(column: str, vocab: IdMap | None) -> np.ndarray | None:
            if vocab is None:
                return None
            if column not in items.columns:
                return np.ones(n, np.int64)
            return np.array(vocab.encode(items[column]), dtype=np.int64)  # writable

        price = None
        if self.price:
            price = (
                np.array(items["price"].cast(pl.Float64).to_numpy(), dtype=np.float64)
                if "price" in items.columns
                else np.full(n, np.nan)
            )
        return ItemContent(
            text=text,
            words=words,
            category=ids("category", self.category),
            brand=ids("brand", self.brand),
            price=price,
        )

    def sizes(self) -> dict[str, Any]:
        """The :class:`ContentConfig` size fields these vocabularies imply."""
        return {
            "n_words": 0 if self.words is None else len(self.words) + 1,
            "n_categories": 0 if self.category is None else self.category.size,
            "n_brands": 0 if self.brand is None else self.brand.size,
            "use_price": self.price,
        }


def _tokens(titles: pl.Series) -> pl.Series:
    """Distinct lower-cased alphanumeric tokens of each title (a list column)."""
    return (
        titles.cast(pl.String)
        .fill_null("")
        .str.to_lowercase()
        .str.extract_all(_WORD)
        .list.unique()
        .alias("title")
    )


def _encode(titles: pl.Series, text: TextOptions) -> np.ndarray:
    """``(N, D)`` unit-length title vectors (see :class:`TextOptions`)."""
    titles = titles.cast(pl.String).fill_null("")
    if text.encoder == "hashed-words":
        return _hashed_words(titles, text.hashed_dim)
    from shoprec.transfer.text import encode_titles

    return encode_titles(titles.to_list(), batch_size=text.batch_size, use_cache=text.cache)


def _hashed_words(titles: pl.Series, dim: int) -> np.ndarray:
    """``(N, dim)`` float32: each title's distinct words hashed (CRC-32, stable across runs
    and machines) to a slot and a sign, summed and scaled to unit length (zero if none)."""
    tokens = pl.DataFrame({"row": np.arange(len(titles)), "w": _tokens(titles)}).explode("w")
    tokens = tokens.drop_nulls("w")
    vocab = tokens["w"].unique().to_list()
    codes = np.array([zlib.crc32(w.encode("utf-8")) for w in vocab], dtype=np.int64)
    table = pl.DataFrame({"w": vocab, "code": codes}, schema={"w": pl.String, "code": pl.Int64})
    tokens = tokens.join(table, on="w", how="left")
    code = tokens["code"].to_numpy()
    out = np.zeros((len(titles), dim), np.float64)
    sign = np.where((code >> 31) & 1, -1.0, 1.0)
    np.add.at(out, (tokens["row"].to_numpy(), code % dim), sign)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norm, 1e-12)).astype(np.float32)


# ------------------------------------------------------------------------------ scoring


@torch.no_grad()
def _raw_scores(
    model: ContentModel,
    users: Tensor,
    history: Tensor | None,
    items: Tensor,
    item_vectors: Tensor | None = None,
    unit_text: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One model's scores ``(U, C)`` of ``items`` ``(C,)`` for ``users`` ``(U,)``, equal to
    :meth:`ContentModel.score` with the same items for every user, and the users' feature
    vectors ``x`` ``(U, D)`` with ``score = x . y_item`` (for the standardisation).

    ``item_vectors`` ``(n_items, dim + 1)`` and ``unit_text`` ``(n_items, text_dim)`` are the
    whole catalog's, precomputed; they are computed for ``items`` when not given.
    """
    model.eval()
    q = model.item_vectors(items) if item_vectors is None else item_vectors[items]  # (C, d+1)
    p = model.user_vectors(users, history)  # (U, dim)
    scores = p @ q[:, :-1].T + q[:, -1]  # (U, C)
    x = [p, torch.ones(len(p), 1)]
    if model.config.content_match:
        text = model.text[items] if unit_text is None else None
        unit = F.normalize(text, dim=-1) if text is not None else unit_text[items]  # (C, t)
        profile = model.history_text_profile(history) * model.match_scale  # (U, text_dim)
        scores = scores + profile @ unit.T
        x.append(profile)
    return scores, torch.cat(x, dim=1)


@torch.no_grad()
def _reference(model: ContentModel) -> tuple[Tensor, Tensor]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (float64) over the model's whole catalog of the
    item side ``y`` of ``score = x . y``: a user's score mean over the catalog is ``x . mean``
    and its variance ``x' cov x``."""
    model.eval()
    y = [model.all_item_vectors()]  # (I, dim + 1)
    if model.config.content_match:
        y.append(F.normalize(model.text, dim=-1))  # (I, text_dim)
    y64 = torch.cat(y, dim=1).double()
    mean = y64.mean(0)
    centred = y64 - mean
    return mean, centred.T @ centred / max(len(y64), 1)


# ------------------------------------------------------------------------------- scorer


class ContentScorer(Scorer):
    """Scores of a trained content recipe: a seed ensemble of content models.

    ``score`` returns, under the target task, ``sigmoid(mean_m z_m)`` where ``z_m`` is member
    ``m``'s score standardised per user over the training catalog: a positive monotone
    transform of the ranking score in (0, 1), **not a calibrated probability** (the model is
    trained with a sampled softmax over items). Item positions are rows of the artifact's
    item table; inside the models an item's index equals its position (every position has
    content, so there is no unknown item), users follow the Encoder convention (0 padding,
    1 unknown, 2+ known; the first two rows are zero).

    Args:
        tasks, target, items: as :class:`~shoprec.recipes.base.Scorer`.
        catalog: item table by position (``item`` and the catalog columns used).
        members: one trained :class:`ContentModel` per seed, over the same catalog.
        seeds: the members' seeds.
        users: the known users (model index = IdMap id).
        history: ``(n_known_users, history_len)`` positions of each known user's most recent
            training items, most recent first, ``-1`` padding.
        vocab: what turns new catalog rows into model inputs.
        behaviors: behaviors of the events that count as history (None: all).
        text: the title encoder settings.
        reference: per member, the standardisation's (mean, covariance), see
            :func:`_reference`.
    """

    recipe = "content"

    def __init__(
        self,
        tasks: Sequence[str],
        target: str,
        items: Sequence[str],
        *,
        catalog: pl.DataFrame,
        members: list[ContentModel],
        seeds: Sequence[int],
        users: IdMap,
        history: np.ndarray,
        vocab: _Vocab,
        behaviors: Sequence[str] | None,
        text: TextOptions,
        reference: list[tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        super().__init__(tasks, target, items)
        if catalog.height != len(items) or any(m.config.n_items != len(items) for m in members):
            raise ValueError("the catalog, the members and the items differ in size")
        self.catalog = catalog
        self.members = [m.eval() for m in members]
        self.seeds = [int(s) for s in seeds]
        self.users = users
        self.history = np.asarray(history, np.int64).reshape(len(users), -1)
        self.vocab = vocab
        self.behaviors = None if behaviors is None else list(behaviors)
        self.text = text
        self.reference = reference or [_reference(m) for m in self.members]
        self._item_map = IdMap("item", tuple(self.items))
        self._cache: tuple[list[ContentModel], list[tuple[Tensor, Tensor | None]]] | None = None

    @property
    def history_len(self) -> int:
        return self.history.shape[1]

    def forget_users(self, users: Sequence[str]) -> dict[str, int]:
        """Their id tombstoned (now unknown), their history row emptied and their rows of
        every member's user embedding zeroed."""
        from shoprec.forget import forget_ids

        self.users, ids = forget_ids(self.users, users)
        if ids.size:
            self.history[ids - 2] = -1  # row = dense index = id - 2
            rows = torch.from_numpy(ids)
            with torch.no_grad():
                for m in self.members:
                    m.user.weight[rows] = 0.0
        n = int(ids.size)
        return {"ids": n, "history_rows": n, "embedding_rows": n * len(self.members)}

    def positions_of(self, items: Sequence[str] | pl.Series) -> np.ndarray:
        """Positions of item ids (``-1`` for ids not in the catalog)."""
        return self._item_map.encode(items) - 2

    # -- scoring ---------------------------------------------------------------------------
    def _snapshot(self) -> tuple[list[ContentModel], list[tuple[Tensor, Tensor | None]]]:
        """The members and their whole-catalog item vectors, read together (so a request
        running while :meth:`add_items` swaps the members never mixes the two)."""
        members = self.members
        snap = self._cache
        if snap is None or snap[0] is not members:
            vectors = [
                (
                    m.all_item_vectors(),
                    F.normalize(m.text, dim=-1) if m.config.content_match else None,
                )
                for m in members
            ]
            snap = (members, vectors)
            self._cache = snap
        return snap

    def user_history(self, users: Sequence[str], events: pl.DataFrame | None = None) -> np.ndarray:
        """``(U, history_len)`` positions of each user's most recent items (most recent
        first, ``-1`` padding): the live ``events`` (newest first), then the training ones."""
        n, length = len(users), self.history_len
        ids = np.array(self.users.encode(list(users)), dtype=np.int64)  # (U,), 1 = unknown
        base = np.full((n, length), -1, np.int64)
        known = ids >= 2
        base[known] = self.history[ids[known] - 2]
        mine = events_of(events, users)
        if mine is None or length == 0:
            return base
        if self.behaviors is not None:
            mine = mine.filter(pl.col("behavior").is_in(self.behaviors))
        row_of = pl.DataFrame({"user": list(users), "row": np.arange(n)}).unique(
            "user", keep="first", maintain_order=True
        )
        ev = (
            mine.select("user", "item")
            .with_columns(pos=pl.Series(self.positions_of(mine["item"]), dtype=pl.Int64))
            .filter(pl.col("pos") >= 0)
            .join(row_of, on="user", how="inner", maintain_order="left")
            .with_columns(
                k=pl.int_range(pl.len()).over("row"), count=pl.len().over("row")
            )  # k: 0 = oldest
        )
        if ev.height == 0:
            return base
        counts = np.zeros(n, np.int64)
        first = ev.unique("row", keep="first")
        counts[first["row"].to_numpy()] = first["count"].to_numpy()
        out = np.full((n, length), -1, np.int64)
        r, j = np.nonzero(base >= 0)
        shifted = j + counts[r]
        keep = shifted < length
        out[r[keep], shifted[keep]] = base[r[keep], j[keep]]
        er = ev["row"].to_numpy()
        slot = ev["count"].to_numpy() - 1 - ev["k"].to_numpy()  # newest event -> slot 0
        keep = slot < length
        out[er[keep], slot[keep]] = ev["pos"].to_numpy()[keep]
        return out

    def member_scores(
        self,
        users: Sequence[str],
        positions: np.ndarray | None = None,
        events: pl.DataFrame | None = None,
        standardise: bool = True,
    ) -> list[np.ndarray]:
        """Each member's ``(U, C)`` scores, standardised per user over the training catalog
        (or raw, ``standardise=False``)."""
        pos = torch.from_numpy(positions_or_all(positions, self.n_items))
        ids = torch.from_numpy(np.array(self.users.encode(list(users)), dtype=np.int64))
        hist = torch.from_numpy(self.user_history(users, events))
        out = []
        members, cache = self._snapshot()
        for model, (vectors, unit), (mean, cov) in zip(members, cache, self.reference, strict=True):
            h = torch.where(hist < 0, model.config.n_items, hist) if self.history_len else None
            s, x = _raw_scores(model, ids, h, pos, vectors, unit)
            s64 = s.double()
            if standardise:
                x64 = x.double()
                mu = x64 @ mean  # (U,)
                var = ((x64 @ cov) * x64).sum(1).clamp_min(1e-24)
                s64 = (s64 - mu[:, None]) / var.sqrt()[:, None]
            out.append(s64.numpy())
        return out

    def score(
        self,
        users: Sequence[str],
        positions: np.ndarray | None = None,
        events: pl.DataFrame | None = None,
    ) -> dict[str, np.ndarray]:
        """``{target: (U, C)}``: ``sigmoid`` of the members' mean standardised score, in
        (0, 1), float64; a monotone transform of the ranking score, not a calibrated
        probability. Unknown users are scored from their live events (history) alone, or by
        the items' learned biases when they have none."""
        users = list(users)
        pos = positions_or_all(positions, self.n_items)
        total = np.zeros((len(users), len(pos)), np.float64)
        step = 256
        for start in range(0, len(users), step):
            chunk = users[start : start + step]
            mine = events_of(events, chunk)
            members = self.member_scores(chunk, pos, mine)
            total[start : start + len(chunk)] = np.mean(members, axis=0)
        return {self.target: 1.0 / (1.0 + np.exp(-total))}

    # -- new items -------------------------------------------------------------------------
    def add_items(self, items: pl.DataFrame) -> list[int]:
        """Add products to the catalog without retraining; returns their positions.

        Titles are encoded with the same offline encoder, words, category and brand looked
        up in the training vocabularies (unknown ones count as unknown), prices z-scored
        with the training catalog's moments; the new items take positions at the end and
        are scored by the content tower alone. Ids already in the catalog keep their
        position (and content).

        Args:
            items: ``item`` and optionally ``title``, ``category``, ``brand``, ``price``.

        Returns:
            The position of every row of ``items``, in order.
        """
        if "item" not in items.columns:
            raise ValueError(f"new items need an 'item' column; got {items.columns}")
        items = items.with_columns(pl.col("item").cast(pl.String))
        if items["item"].null_count():
            raise ValueError("new items need an id in every row")
        fresh = items.filter(self._item_map.encode(items["item"]) < 2).unique(
            "item", keep="first", maintain_order=True
        )
        if fresh.height:
            columns = [
                (fresh[c] if c in fresh.columns else pl.lit(None)).cast(t).alias(c)
                for c, t in self.catalog.schema.items()
                if c != "item"
            ]
            table = fresh.select(pl.col("item"), *columns)
            titles = (
                fresh["title"] if "title" in fresh.columns else pl.Series([None] * fresh.height)
            )
            text = _encode(titles, self.text)
            content = self.vocab.content(table, text)
            members = [extend_items(m, content) for m in self.members]
            catalog = pl.concat([self.catalog, table])
            items_now = [*self.items, *fresh["item"].to_list()]
            self._item_map = IdMap("item", tuple(items_now))
            self.members, self.catalog, self.items = members, catalog, items_now
            log.info("added %d items (now %d)", fresh.height, len(self.items))
        return [int(p) for p in self.positions_of(items["item"])]

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """``scorer.json``, ``items.parquet`` (catalog by position), ``users.parquet``,
        ``state.safetensors`` (histories, item content shared by the members, the
        standardisation), ``members/seed_<s>/`` (:func:`save_content_model` without the
        content)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "tasks": self.tasks,
            "target": self.target,
            "seeds": self.seeds,
            "behaviors": self.behaviors,
            "text": self.text.model_dump(),
            "vocab": self.vocab.to_dict(),
        }
        (directory / "scorer.json").write_text(json.dumps(meta, indent=2) + "\n")
        self.catalog.write_parquet(directory / "items.parquet")
        pl.DataFrame({"user": list(self.users.values)}, schema={"user": pl.String}).write_parquet(
            directory / "users.parquet"
        )
        state = {"history": torch.from_numpy(np.ascontiguousarray(self.history))}
        shared = content_state(self.members[0])
        for m in self.members[1:]:
            other = content_state(m)
            if any(not torch.equal(shared[k], other[k]) for k in shared):
                raise ValueError("ensemble members hold different item content")
        state.update({f"content.{k}": v for k, v in shared.items()})
        for k, (mean, cov) in enumerate(self.reference):
            state[f"reference.{k}.mean"] = mean.contiguous()
            state[f"reference.{k}.cov"] = cov.contiguous()
        save_file(state, str(directory / "state.safetensors"))
        for seed, model in zip(self.seeds, self.members, strict=True):
            save_content_model(model, directory / "members" / f"seed_{seed}", with_content=False)

    @classmethod
    def load(cls, directory: Path) -> ContentScorer:
        directory = Path(directory)
        meta = json.loads((directory / "scorer.json").read_text())
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"{directory} holds no content scorer of version {VERSION}")
        catalog = pl.read_parquet(directory / "items.parquet")
        users = pl.read_parquet(directory / "users.parquet")["user"].to_list()
        state = load_file(str(directory / "state.safetensors"))
        shared = {
            k.removeprefix("content."): v for k, v in state.items() if k.startswith("content.")
        }
        seeds = meta["seeds"]
        members = [
            load_content_model(directory / "members" / f"seed_{s}", content=shared) for s in seeds
        ]
        reference = [
            (state[f"reference.{k}.mean"], state[f"reference.{k}.cov"]) for k in range(len(seeds))
        ]
        return cls(
            meta["tasks"],
            meta["target"],
            catalog["item"].to_list(),
            catalog=catalog,
            members=members,
            seeds=seeds,
            users=IdMap("user", tuple(users)),
            history=state["history"].numpy(),
            vocab=_Vocab.from_dict(meta["vocab"]),
            behaviors=meta["behaviors"],
            text=TextOptions(**meta["text"]),
            reference=reference,
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "members": len(self.members),
            "seeds": self.seeds,
            "items": self.n_items,
            "users": len(self.users),
            "history_len": self.history_len,
        }


# ------------------------------------------------------------------------------- recipe


@dataclasses.dataclass
class _Events:
    """Events as model indices, grouped by user in time order."""

    user: np.ndarray  # (E,) user model index (IdMap id)
    item: np.ndarray  # (E,) item position

    def __len__(self) -> int:
        return len(self.user)


@dataclasses.dataclass
class _Validation:
    """Validation users, their target items and where their negatives come from."""

    users: np.ndarray  # (V,) user model indices
    relevant: Sparse  # per user, target positions (pool indices when `full`)
    exclude: Sparse  # per user, items never ranked as negatives (the user's own events)
    pool: np.ndarray  # (P,) candidate positions
    full: bool  # rank against the whole pool instead of sampled negatives
    n_negatives: int = 99  # sampled negatives per target (when not `full`)


class ContentRecipe(Recipe):
    """New items from their content (see the module docstring)."""

    name = "content"
    Options = ContentOptions
    default_tasks = ("buy",)
    scorer_class = ContentScorer

    def fit(self, dataset: Dataset, split: Split) -> TrainingRun:
        """Encode the catalog, select the epoch on validation, train the members."""
        opts: ContentOptions = self.options
        train_cfg = self.config.train.train_config()
        started = time.perf_counter()
        train_df = self._events_frame(split.train)
        valid_df = self._events_frame(split.valid) if split.valid is not None else None
        if train_df.height == 0:
            raise ValueError("the content recipe found no training events of its behaviors")
        catalog = _catalog(dataset, train_df, valid_df)
        positions = IdMap("item", tuple(catalog["item"].to_list()))
        tick = time.perf_counter()
        text = _encode(catalog["title"], opts.text)
        encode_s = time.perf_counter() - tick
        vocab = _Vocab.fit(catalog, opts)
        content = vocab.content(catalog, text)
        known = [train_df["user"]] + ([valid_df["user"]] if valid_df is not None else [])
        users = IdMap("user", tuple(pl.concat(known).unique().sort().to_list()))
        both = train_df if valid_df is None else pl.concat([train_df, valid_df])
        train_ev = _index(train_df, users, positions)
        all_ev = _index(both, users, positions)
        model_cfg = ContentConfig(
            n_users=users.size,
            n_items=catalog.height,
            text_dim=text.shape[1],
            **vocab.sizes(),
            **opts.model_fields_for(),
        )

        # 1. selection on validation (the epoch), with train.seed
        valid = None
        if valid_df is not None and valid_df.height:
            valid = self._validation(train_df, valid_df, users, positions)
        monitor = f"{self.target}/ndcg@10"
        selected: ContentModel | None = None
        history: list[dict[str, Any]] = []
        valid_scores: dict[str, float] = {}
        epochs = train_cfg.epochs
        if valid is not None:
            selected = _new_model(model_cfg, content, train_ev, train_cfg.seed)
            table = _history_table(train_ev, model_cfg)
            result = fit(
                selected,
                _training_data(train_ev, model_cfg),
                config=dataclasses.replace(train_cfg, monitor=monitor),
                evaluator=lambda m: _validate(m, valid, table, self.target),
            )
            epochs = max(result.best_epoch, 1)
            history, valid_scores = result.history, dict(result.best_scores)
            log.info("content: epoch %d selected, validation %s", epochs, valid_scores)
        else:
            log.info("content: no validation events; training %d epochs", epochs)

        # 2. members: one per seed, on train (+ valid with `refit`)
        refit = opts.refit and valid_df is not None and valid_df.height > 0
        final = all_ev if refit else train_ev
        seeds = list(opts.ensemble_seeds or (train_cfg.seed,))
        members = []
        samples_per_second = []
        for seed in seeds:
            if selected is not None and not refit and seed == train_cfg.seed:
                members.append(selected)
                continue
            model = _new_model(model_cfg, content, final, seed)
            res = fit(
                model,
                _training_data(final, model_cfg),
                config=dataclasses.replace(
                    train_cfg, epochs=epochs, seed=seed, patience=epochs + 1
                ),
            )
            samples_per_second.append(res.samples_per_second)
            members.append(model.eval())
            log.info("content: member seed %d trained (%d epochs)", seed, epochs)
        scorer = ContentScorer(
            self.tasks,
            self.target,
            catalog["item"].to_list(),
            catalog=catalog,
            members=members,
            seeds=seeds,
            users=users,
            history=_positions_history(all_ev, users, opts.history_len),
            vocab=vocab,
            behaviors=opts.behaviors,
            text=opts.text,
        )
        warm = members[0].warm.numpy()
        info = {
            "items": catalog.height,
            "items_without_training_events": int((~warm).sum()),
            "users": len(users),
            "train_events": len(train_ev),
            "member_events": len(final),
            "epochs": epochs,
            "seeds": seeds,
            "refit": refit,
            "valid_users": 0 if valid is None else len(valid.users),
            "valid_protocol": None
            if valid is None
            else ("full over the pool" if valid.full else f"{opts.valid_negatives} sampled")
            + f" ({len(valid.pool)} candidate items)",
            "encode_seconds": encode_s,
            "fit_seconds": time.perf_counter() - started,
            "samples_per_second": float(np.mean(samples_per_second))
            if samples_per_second
            else None,
        }
        return TrainingRun(
            scorer=scorer,
            valid=valid_scores,
            monitor=monitor,
            history=history,
            best_epoch=epochs if valid is not None else None,
            info=info,
        )

    # -- helpers ---------------------------------------------------------------------------
    def _events_frame(self, part: Interactions | None) -> pl.DataFrame:
        """``user, item, behavior, timestamp`` of the recipe's behaviors."""
        if part is None:
            return pl.DataFrame(
                schema={"user": pl.String, "item": pl.String, "behavior": pl.String}
            )
        df = part.df
        if self.options.behaviors is not None:
            df = df.filter(pl.col("behavior").is_in(list(self.options.behaviors)))
        return df.select("user", "item", "behavior", "timestamp")

    def _validation(
        self, train: pl.DataFrame, valid: pl.DataFrame, users: IdMap, positions: IdMap
    ) -> _Validation | None:
        """Validation users, targets and negatives' pool (see the module docstring)."""
        opts: ContentOptions = self.options
        behavior = self._target_behavior()
        n_items = positions.size - 2
        both = pl.concat(
            [train.with_columns(part=pl.lit(0)), valid.with_columns(part=pl.lit(1))]
        ).with_columns(u=pl.Series(users.encode(pl.concat([train["user"], valid["user"]]))))
        both = both.with_columns(i=pl.Series(positions.encode(both["item"]) - 2))
        if opts.valid_target == "last":
            if both["timestamp"].null_count() == both.height:
                raise ValueError("valid_target: last needs timestamps")
            both = both.sort(["u", "timestamp"], maintain_order=True, nulls_last=True)
            targets = both.group_by("u", maintain_order=True).last().filter(pl.col("part") == 1)
        else:
            targets = both.filter(pl.col("part") == 1)
        if behavior is not None and (targets["behavior"] == behavior).any():
            targets = targets.filter(pl.col("behavior") == behavior)
        train_items = np.zeros(n_items, bool)
        train_items[positions.encode(train["item"]) - 2] = True
        target_items = np.unique(targets["i"].to_numpy())
        valid_items = np.unique(both.filter(pl.col("part") == 1)["i"].to_numpy())
        cold = valid_items[~train_items[valid_items]]  # every validation item new to training
        use_cold = opts.valid_pool == "cold" or (
            opts.valid_pool == "auto" and not train_items[target_items].any()
        )
        if use_cold:
            if len(cold) == 0:
                log.warning("content: no validation item is new to training; no validation")
                return None
            pool = cold
            targets = targets.filter(pl.Series(~train_items[targets["i"].to_numpy()]))
        else:
            pool = np.arange(n_items)
        # users with training events only: cold users are not what this validates
        trained_users = np.unique(users.encode(train["user"]))
        targets = targets.filter(pl.col("u").is_in(trained_users.tolist()))
        targets = targets.unique(["u", "i"]).sort(["u", "i"])
        if targets.height == 0:
            log.warning("content: no validation targets among users with training events")
            return None
        user_list, row = np.unique(targets["u"].to_numpy(), return_inverse=True)
        n_neg = opts.valid_negatives
        full = n_neg is None or len(pool) <= 2 * (n_neg + 1)
        items = targets["i"].to_numpy()
        seen = both.filter(pl.col("u").is_in(user_list.tolist()))  # never negatives
        seen_row = np.searchsorted(user_list, seen["u"].to_numpy())
        seen_items = seen["i"].to_numpy()
        if full:  # columns are pool indices
            pool_index = np.full(n_items, -1)
            pool_index[pool] = np.arange(len(pool))
            relevant = csr_from_pairs(row, pool_index[items], len(user_list), len(pool))
            inside = pool_index[seen_items] >= 0
            exclude = csr_from_pairs(
                seen_row[inside], pool_index[seen_items[inside]], len(user_list), len(pool)
            )
            return _Validation(user_list, relevant, exclude, pool, True)
        relevant = csr_from_pairs(row, items, len(user_list), n_items)
        exclude = csr_from_pairs(seen_row, seen_items, len(user_list), n_items)
        return _Validation(user_list, relevant, exclude, pool, False, int(n_neg or 99))

    def _target_behavior(self) -> str | None:
        for task in self.config.tasks:
            if task.name == self.target:
                return task.behavior or task.name
        return self.target


def _catalog(dataset: Dataset, *parts: pl.DataFrame | None) -> pl.DataFrame:
    """Items by position: the catalog's rows, then items only seen in ``parts``' events."""
    if dataset.catalog is None or "title" not in dataset.catalog.df.columns:
        raise ValueError(
            "the content recipe needs a catalog with item titles (data.catalog with a title "
            "column, or a built-in dataset that has one)"
        )
    cols = [
        c
        for c in ("item", "title", "category", "brand", "price")
        if c in dataset.catalog.df.columns
    ]
    catalog = dataset.catalog.df.select(cols)
    seen = pl.concat([p.select("item") for p in parts if p is not None]).unique().sort("item")
    extra = seen.join(catalog.select("item"), on="item", how="anti")
    if extra.height:
        log.info("content: %d items with events but no catalog row (no title)", extra.height)
        catalog = pl.concat([catalog, extra], how="diagonal_relaxed")
    return catalog


def _index(df: pl.DataFrame, users: IdMap, positions: IdMap) -> _Events:
    """Events as (user index, item position), grouped by user in time order."""
    df = df.with_columns(
        u=pl.Series(users.encode(df["user"])), i=pl.Series(positions.encode(df["item"]) - 2)
    )
    df = df.sort(["u", "timestamp"], maintain_order=True, nulls_last=True)
    return _Events(df["u"].to_numpy().astype(np.int64), df["i"].to_numpy().astype(np.int64))


def _new_model(
    cfg: ContentConfig, content: ItemContent, events: _Events, seed: int
) -> ContentModel:
    """A fresh model whose warm items are the events' items; users without events (and the
    padding and unknown rows) start, and stay, at zero."""
    torch.manual_seed(seed)
    warm = np.zeros(cfg.n_items, bool)
    warm[events.item] = True
    model = ContentModel(cfg, content, warm=warm)
    active = np.zeros(cfg.n_users, bool)
    active[events.user] = True
    with torch.no_grad():
        model.user.weight[torch.from_numpy(~active)] = 0.0
    return model


def _training_data(events: _Events, cfg: ContentConfig) -> TensorData:
    columns = {"user": events.user, "item": events.item}
    if cfg.history_len:
        columns["history"] = recent_items(events.user, events.item, cfg.history_len, cfg.n_items)
    return TensorData({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in columns.items()})


def _history_table(events: _Events, cfg: ContentConfig) -> Tensor | None:
    """``(n_users, history_len)`` most recent items per user model index (padding
    ``n_items``), or None without a history."""
    if not cfg.history_len:
        return None
    return torch.from_numpy(
        last_items(events.user, events.item, cfg.n_users, cfg.history_len, cfg.n_items)
    )


def _positions_history(events: _Events, users: IdMap, length: int) -> np.ndarray:
    """``(n_known_users, length)`` most recent positions, ``-1`` padding."""
    if length == 0:
        return np.zeros((len(users), 0), np.int64)
    table = last_items(events.user, events.item, users.size, length, -1)
    return table[2:]


def _validate(
    model: ContentModel, valid: _Validation, table: Tensor | None, target: str
) -> dict[str, float]:
    """NDCG@10, HR@10 and MRR of the validation targets (see :class:`_Validation`)."""
    users = torch.from_numpy(valid.users)
    pool = torch.from_numpy(valid.pool)

    def score_fn(rows: np.ndarray, items: np.ndarray | None) -> Tensor:
        r = torch.from_numpy(np.asarray(rows, np.int64))
        hist = None if table is None else table[users[r]]
        if valid.full:
            cols = pool if items is None else pool[torch.from_numpy(np.asarray(items))]
        else:
            n = model.config.n_items
            cols = torch.arange(n) if items is None else torch.from_numpy(np.asarray(items))
        return _raw_scores(model, users[r], hist, cols)[0]

    if valid.full:
        result = full_ranking(
            score_fn, len(valid.users), len(valid.pool), valid.relevant, valid.exclude, ks=(10,)
        )
    else:
        weights = np.zeros(model.config.n_items)
        weights[valid.pool] = 1.0  # uniform over the pool
        result = sampled_ranking(
            score_fn,
            len(valid.users),
            model.config.n_items,
            valid.relevant,
            valid.exclude,
            n_negatives=valid.n_negatives,
            sampling="popularity",
            popularity=weights,
        )
    m = result.metrics
    return {f"{target}/{k}": float(m[k]) for k in ("ndcg@10", "hr@10", "mrr") if k in m}
