"""New items from their content: an ID embedding blended with a content tower.

A user ``u`` and an item ``i`` meet in a dot product, ``s(u, i) = <p_u, q_i> + b_i``. The item
side has two sources:

* an ID embedding ``e_i`` (and bias), learned from the item's interactions: precise for items
  with history, meaningless for an item nobody has bought yet;
* a content tower ``c(x_i)``, an MLP over the item's title vector (a frozen pretrained sentence
  encoder, :mod:`shoprec.transfer.text`) and, where the catalog has them, category, brand and
  log price. It exists for every item, including one added a minute ago.

A warm item uses the blend ``q_i = w e_i + (1 - w) c(x_i)``; a cold item (no interactions when
the model was trained) uses ``c(x_i)`` alone. Two things teach the content tower to stand in
for the ID embedding:

1. **ID dropout** (Volkovs et al., "DropoutNet", NeurIPS 2017): in training, each positive and
   negative item loses its ID part with probability ``id_dropout``, so the ranking loss itself
   asks the content tower to rank like the blend;
2. **distillation** (in the spirit of Zhu et al., "Learning to Warm Up Cold Item Embeddings",
   SIGIR 2021): a squared error pulls ``c(x_i)`` (vector and bias) towards the item's own,
   gradient-stopped ID embedding, so a cold item lands where its ID embedding would have.

The user side is the user's ID embedding plus, with ``history_len > 0``, a recency-weighted
mean (one learned weight per position) of their most recent items' input embeddings and,
with ``history_text``, of a linear map of those items' title vectors, so a user is described
by what they bought lately as well as by who they are
(:func:`shoprec.transfer.content.recent_items` builds that input). The content tower may also read a
learned bag of the title's words (``n_words``), which keeps tokens such as a platform name
that a sentence encoder blurs.

With ``content_match`` (and ``history_len > 0``) the score gains a direct content-match term,
``a * sum_l w_l cos(t_i, t_l)``: the recency-weighted mean (the same position weights
``w_l`` as the pooling) of the cosines between the candidate's title vector and those of the
user's recent items, times a learned scalar ``a``. A cold item's strongest signal is often
"like what this user just bought", and this term keeps the encoder's full width for it rather
than the ``dim``-wide bottleneck of the dot product. (It needs a catalog item: vectors from
:meth:`ContentModel.new_item_vectors` do not include it.)

The ranking loss is a sampled softmax: each observed (user, item) pair against ``n_negatives``
items drawn uniformly from the warm catalog, shared across the batch. A low temperature puts
the softmax's gradient on the few hardest negatives, which serves the top of the list; with
``pairwise_weight > 0`` a BPR term (Rendle et al., UAI 2009), the mean over all the row's
negatives of ``-log sigmoid(l_pos - l_neg)`` on the same (temperature-scaled) logits, is
added to it: a smooth surrogate of AUC, which asks every negative to fall below the positive.

The model keeps the training loop's contract (``forward``, ``task_losses``, ``predict``), so
:func:`shoprec.train.loop.fit` trains it; its two losses are ``rank`` and ``distill``.

Example:
    >>> import numpy as np
    >>> text = np.random.default_rng(0).normal(size=(50, 384)).astype("float32")
    >>> model = ContentModel(ContentConfig(n_users=10, n_items=50, dim=8), ItemContent(text))
    >>> model.score(torch.tensor([0, 1]), torch.tensor([[3, 4], [5, 6]])).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

import shoprec
from shoprec.models.features import Task

Batch = dict[str, Tensor]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = "shoprec.content_model"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ContentConfig:
    """Hyperparameters of :class:`ContentModel`."""

    n_users: int  # users with an ID embedding
    n_items: int  # catalog items (warm and cold)
    text_dim: int = 384  # width of the title vectors
    n_categories: int = 0  # category vocabulary (0 = the catalog has no categories)
    n_brands: int = 0  # brand vocabulary (0 = none)
    use_price: bool = False  # feed z-scored log price (and a has-price flag)
    side_dim: int = 16  # embedding width of category and brand
    n_words: int = 0  # title-word vocabulary for a learned bag of words (0 = none; 0 = pad)
    word_dim: int = 32  # width of the bag-of-words embedding
    dim: int = 64  # width of user and item vectors
    hidden: int = 256  # content tower hidden width
    dropout: float = 0.1  # dropout inside the content tower
    id_weight: float = 0.5  # w in q = w e + (1 - w) c for warm items
    id_dropout: float = 0.5  # probability that a training item loses its ID part
    distill_weight: float = 1.0  # weight of the content -> ID embedding distillation loss
    n_negatives: int = 1024  # uniform negatives per batch, shared by its rows
    temperature: float = 0.2  # softmax temperature of the ranking loss
    user_l2: float = 0.0  # L2 penalty on the batch's user vectors
    history_len: int = 0  # recent items pooled into the user vector (0 = user ID only)
    use_user_id: bool = True  # add a user ID embedding to the user vector
    history_text: bool = False  # also pool a linear map of the recent items' title vectors
    init_std: float = 0.05  # std of the ID embeddings at start
    content_match: bool = False  # add a learned scale times cos(candidate title, history titles)
    content_match_init: float = 1.0  # that scale at start (before the temperature)
    pairwise_weight: float = 0.0  # weight of a BPR term on the same logits (an AUC surrogate)


@dataclass
class ItemContent:
    """Per-item content, aligned with item indices ``0..n_items-1``.

    Attributes:
        text: ``(I, text_dim)`` title vectors (e.g. from :func:`~shoprec.transfer.text.
            encode_titles`).
        words: ``(I, W)`` int title-word ids, 0 = padding; ``None`` if unused.
        category: ``(I,)`` int, 0 = unknown; ``None`` if the catalog has none.
        brand: ``(I,)`` int, 0 = unknown; ``None`` if none.
        price: ``(I,)`` float, NaN or <= 0 = unknown; ``None`` if none.
    """

    text: np.ndarray
    words: np.ndarray | None = None
    category: np.ndarray | None = None
    brand: np.ndarray | None = None
    price: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.text)


class ContentTower(nn.Module):
    """MLP from item content to an item vector and bias: ``(B, ...) -> (B, dim + 1)``."""

    def __init__(self, cfg: ContentConfig) -> None:
        super().__init__()
        width = cfg.text_dim
        self.category = nn.Embedding(cfg.n_categories, cfg.side_dim) if cfg.n_categories else None
        self.brand = nn.Embedding(cfg.n_brands, cfg.side_dim) if cfg.n_brands else None
        self.words = (
            nn.EmbeddingBag(cfg.n_words, cfg.word_dim, mode="mean", padding_idx=0)
            if cfg.n_words
            else None
        )
        width += cfg.word_dim if cfg.n_words else 0
        width += cfg.side_dim * ((cfg.n_categories > 0) + (cfg.n_brands > 0))
        width += 2 if cfg.use_price else 0
        self.net = nn.Sequential(
            nn.Linear(width, cfg.hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.dim + 1),
        )

    def forward(
        self,
        text: Tensor,
        category: Tensor | None = None,
        brand: Tensor | None = None,
        price: Tensor | None = None,
        words: Tensor | None = None,
    ) -> Tensor:
        parts = [text]  # (B, text_dim)
        if self.words is not None:
            assert words is not None, "the tower was built with title words"
            parts.append(self.words(words))  # (B, word_dim); all-padding rows give zeros
        if self.category is not None:
            assert category is not None, "the tower was built with categories"
            parts.append(self.category(category))
        if self.brand is not None:
            assert brand is not None, "the tower was built with brands"
            parts.append(self.brand(brand))
        if price is not None:
            parts.append(price)  # (B, 2): z log price, has price
        return self.net(torch.cat(parts, dim=-1))  # (B, dim + 1)


class ContentModel(nn.Module):
    """User ID embeddings against items blended from ID embeddings and a content tower.

    Args:
        config: hyperparameters and sizes.
        content: the catalog's item content (stored as buffers, saved with the weights).
        warm: ``(n_items,)`` bool, items seen in training; defaults to all. Cold items are
            scored from content alone and never drawn as negatives.
    """

    model_name = "content"

    def __init__(
        self, config: ContentConfig, content: ItemContent, warm: np.ndarray | None = None
    ) -> None:
        super().__init__()
        cfg = config
        if len(content) != cfg.n_items or content.text.shape[1] != cfg.text_dim:
            raise ValueError(
                f"content has {content.text.shape}, config wants ({cfg.n_items}, {cfg.text_dim})"
            )
        self.config = cfg
        self.tasks = (Task("rank"), Task("distill", kind="regression"))
        self.user = nn.Embedding(cfg.n_users, cfg.dim)
        # Input-side item embeddings for the user's recent items (index n_items = padding)
        # and one learned weight per recency position.
        self.history_item = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=cfg.n_items)
        self.history_pos = nn.Parameter(torch.zeros(max(cfg.history_len, 1)))
        self.history_text = (
            nn.Linear(cfg.text_dim, cfg.dim, bias=False) if cfg.history_text else None
        )
        nn.init.normal_(self.history_item.weight, std=cfg.init_std)
        with torch.no_grad():
            self.history_item.weight[cfg.n_items].zero_()
        self.item = nn.Embedding(cfg.n_items, cfg.dim)
        self.item_bias = nn.Embedding(cfg.n_items, 1)
        nn.init.normal_(self.user.weight, std=cfg.init_std if cfg.use_user_id else 0.0)
        self.user.weight.requires_grad_(cfg.use_user_id)
        nn.init.normal_(self.item.weight, std=cfg.init_std)
        nn.init.zeros_(self.item_bias.weight)
        self.tower = ContentTower(cfg)
        self.register_buffer("text", torch.as_tensor(content.text, dtype=torch.float32))
        self.register_buffer("category", _ids(content.category, cfg.n_items, cfg.n_categories))
        self.register_buffer("brand", _ids(content.brand, cfg.n_items, cfg.n_brands))
        if cfg.n_words:
            if content.words is None or len(content.words) != cfg.n_items:
                raise ValueError("config.n_words > 0 needs ItemContent.words of n_items rows")
            words = np.asarray(content.words, dtype=np.int64)
            if words.min(initial=0) < 0 or words.max(initial=0) >= cfg.n_words:
                raise ValueError(f"word ids must be in [0, {cfg.n_words})")
        else:
            words = np.zeros((cfg.n_items, 1), dtype=np.int64)
        self.register_buffer("title_words", torch.as_tensor(words))
        moments = price_stats(content.price)
        self.register_buffer("price_moments", torch.tensor(moments, dtype=torch.float64))
        self.register_buffer("price", _price_features(content.price, cfg.n_items, moments))
        if cfg.content_match:
            if cfg.history_len == 0:
                raise ValueError("content_match needs history_len > 0")
            self.match_scale = nn.Parameter(torch.tensor(float(cfg.content_match_init)))
        warm_mask = np.ones(cfg.n_items, bool) if warm is None else np.asarray(warm, bool)
        self.register_buffer("warm", torch.as_tensor(warm_mask))
        self.register_buffer("warm_index", torch.nonzero(self.warm).flatten())

    # -- user vectors -----------------------------------------------------------------------
    def user_vectors(self, users: Tensor, history: Tensor | None = None) -> Tensor:
        """User vectors ``(B, dim)``: the user's ID embedding plus a recency-weighted mean of
        their recent items' input embeddings (and, with ``history_text``, of a linear map of
        their title vectors).

        Args:
            users: ``(B,)`` user indices.
            history: ``(B, history_len)`` recent items, most recent first, padded with
                ``n_items``; required when ``history_len > 0``.
        """
        p = self.user(users)  # (B, dim)
        if self.config.history_len == 0:
            return p
        h, weights = self._history_weights(history)
        items = self.history_item(h)  # (B, L, dim); padding rows are zero
        if self.history_text is not None:
            # padding reads item 0's title, but its weight is 0
            text = self.text.index_select(0, h.clamp(max=self.config.n_items - 1).reshape(-1))
            items = items + self.history_text(text).reshape(*h.shape, -1)
        return p + torch.einsum("bl,bld->bd", weights, items)

    def _history_weights(self, history: Tensor | None) -> tuple[Tensor, Tensor]:
        """The recent items ``(B, L)`` cut to ``history_len`` and their recency weights
        ``(B, L)`` (softmax over the valid positions; all zero for an empty history)."""
        if history is None:
            raise ValueError("this model pools the user's recent items: pass `history`")
        h = history[:, : self.config.history_len]  # (B, L)
        valid = h != self.config.n_items
        logits = self.history_pos[: h.shape[1]].expand_as(h).masked_fill(~valid, -1e9)
        return h, torch.softmax(logits, dim=1) * valid.any(1, keepdim=True)

    def _unit_text(self, items: Tensor) -> Tensor:
        """Unit-length title vectors ``(..., text_dim)`` of catalog items."""
        flat = items.reshape(-1).clamp(max=self.config.n_items - 1)
        return F.normalize(self.text.index_select(0, flat), dim=-1).reshape(*items.shape, -1)

    def history_text_profile(self, history: Tensor | None) -> Tensor:
        """Recency-weighted mean ``(B, text_dim)`` of the recent items' unit title vectors
        (what the content-match term compares candidates with)."""
        h, weights = self._history_weights(history)
        return torch.einsum("bl,bld->bd", weights, self._unit_text(h))

    # -- item vectors -------------------------------------------------------------------
    def content_vectors(self, items: Tensor) -> Tensor:
        """Content-tower output for catalog items: ``(...,) -> (..., dim + 1)``."""
        flat = items.reshape(-1)
        out = self.tower(
            self.text.index_select(0, flat),
            self.category.index_select(0, flat) if self.config.n_categories else None,
            self.brand.index_select(0, flat) if self.config.n_brands else None,
            self.price.index_select(0, flat) if self.config.use_price else None,
            self.title_words.index_select(0, flat) if self.config.n_words else None,
        )
        return out.reshape(*items.shape, -1)

    def id_vectors(self, items: Tensor) -> Tensor:
        """ID embedding and bias: ``(...,) -> (..., dim + 1)``."""
        return torch.cat([self.item(items), self.item_bias(items)], dim=-1)

    def item_vectors(self, items: Tensor, keep_id: Tensor | None = None) -> Tensor:
        """Blended item vectors ``(..., dim + 1)`` (last entry = bias).

        Args:
            items: item indices of any shape.
            keep_id: same shape, bool: whether an item keeps its ID part; default = warm.
        """
        keep = self.warm[items] if keep_id is None else keep_id
        w = self.config.id_weight * keep.unsqueeze(-1).float()  # (..., 1)
        return w * self.id_vectors(items) + (1 - w) * self.content_vectors(items)

    def new_item_vectors(
        self,
        text: Tensor,
        category: Tensor | None = None,
        brand: Tensor | None = None,
        price: Tensor | None = None,
        words: Tensor | None = None,
    ) -> Tensor:
        """Vectors ``(N, dim + 1)`` for items outside the catalog, from content alone.

        Args:
            text: ``(N, text_dim)`` title vectors.
            category: ``(N,)`` int ids (0 = unknown), when the model uses categories.
            brand: ``(N,)`` int ids, when the model uses brands.
            price: ``(N,)`` prices (NaN or <= 0 = unknown), when the model uses price.
            words: ``(N, W)`` title-word ids (0 = padding), when the model uses words.
        """
        p = None
        if self.config.use_price:
            assert price is not None, "the model uses price"
            moments = (float(self.price_moments[0]), float(self.price_moments[1]))
            p = _price_features(price.cpu().numpy(), len(text), moments).to(text)
        return self.tower(text, category, brand, p, words)

    # -- the loop's contract --------------------------------------------------------------
    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Logits of each positive against shared uniform negatives, and distillation terms.

        Args:
            batch: ``user`` and ``item`` long ``(B,)``: observed pairs (items must be warm);
                ``history`` ``(B, L)`` when the model pools recent items.

        Returns:
            ``rank``: ``(B, 1 + K)`` logits, positive first; ``distill``: ``(M, dim + 1)``
            content-minus-ID residuals of the batch's items.
        """
        cfg = self.config
        user, pos = batch["user"], batch["item"]
        k = cfg.n_negatives
        neg = self.warm_index[torch.randint(len(self.warm_index), (k,), device=pos.device)]  # (K,)
        items = torch.cat([pos, neg])  # (B + K,)
        content = self.content_vectors(items)  # (B + K, dim + 1)
        ids = self.id_vectors(items)
        if self.training and cfg.id_dropout > 0:
            keep = torch.rand(len(items), device=items.device) >= cfg.id_dropout
        else:
            keep = self.warm[items]
        w = cfg.id_weight * keep.unsqueeze(-1).float()
        q = w * ids + (1 - w) * content  # (B + K, dim + 1)
        p = self.user_vectors(user, batch.get("history"))  # (B, dim)
        pos_logit = (p * q[: len(pos), :-1]).sum(-1) + q[: len(pos), -1]  # (B,)
        neg_logit = p @ q[len(pos) :, :-1].T + q[len(pos) :, -1]  # (B, K)
        if cfg.content_match:
            profile = self.history_text_profile(batch.get("history"))  # (B, text_dim)
            unit = self._unit_text(items)  # (B + K, text_dim)
            pos_logit = pos_logit + self.match_scale * (profile * unit[: len(pos)]).sum(-1)
            neg_logit = neg_logit + self.match_scale * (profile @ unit[len(pos) :].T)
        # A sampled negative that equals the row's positive is not a negative.
        neg_logit = neg_logit.masked_fill(neg.unsqueeze(0) == pos.unsqueeze(1), -1e9)
        logits = torch.cat([pos_logit.unsqueeze(1), neg_logit], dim=1) / cfg.temperature
        return {
            "rank": logits,
            "distill": content - ids.detach(),
            "user_norm": p.pow(2).sum(-1).mean(),
        }

    def task_losses(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``rank``: softmax cross-entropy with the positive at index 0 (plus the user L2 and,
        with ``pairwise_weight``, the BPR term);
        ``distill``: mean squared content-minus-ID residual, times ``distill_weight``."""
        logits = outputs["rank"]
        target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        rank = F.cross_entropy(logits, target) + self.config.user_l2 * outputs["user_norm"]
        if self.config.pairwise_weight > 0:
            # masked negatives (-1e9) give a vanishing term
            diff = logits[:, :1] - logits[:, 1:]  # (B, K)
            rank = rank + self.config.pairwise_weight * F.softplus(-diff).mean()
        distill = outputs["distill"].pow(2).sum(-1).mean() * self.config.distill_weight
        return {"rank": rank, "distill": distill}

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """Sum of :meth:`task_losses`."""
        return torch.stack(list(self.task_losses(outputs, batch).values())).sum()

    @torch.no_grad()
    def predict(self, batch: Batch) -> dict[str, Tensor]:
        """Scores ``(B,)`` of the pairs in ``batch`` (``user``, ``item``, optional ``history``),
        under ``score``."""
        was = self.training
        self.eval()
        try:
            items = batch["item"].unsqueeze(1)
            return {"score": self.score(batch["user"], items, batch.get("history")).squeeze(1)}
        finally:
            self.train(was)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every parameter: both losses reach the content tower."""
        return list(self.parameters())

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The content tower's output layer."""
        return list(self.tower.net[-1].parameters())

    # -- scoring ---------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, users: Tensor, items: Tensor, history: Tensor | None = None) -> Tensor:
        """Scores of candidate items per user: ``users (N,)``, ``items (N, C)`` -> ``(N, C)``.

        Warm items use the blend, cold items their content vector; with ``content_match`` the
        content-match term is added. ``history`` ``(N, L)``: each user's recent items, most
        recent first (see :meth:`user_vectors`).
        """
        was = self.training
        self.eval()
        try:
            q = self.item_vectors(items)  # (N, C, dim + 1)
            p = self.user_vectors(users, history)  # (N, dim)
            out = torch.einsum("nd,ncd->nc", p, q[..., :-1]) + q[..., -1]
            if self.config.content_match:
                profile = self.history_text_profile(history)  # (N, text_dim)
                out = out + self.match_scale * torch.einsum(
                    "nd,ncd->nc", profile, self._unit_text(items)
                )
            return out
        finally:
            self.train(was)

    @torch.no_grad()
    def all_item_vectors(self, batch_size: int = 8192) -> Tensor:
        """Vectors ``(n_items, dim + 1)`` of the whole catalog (blend or content)."""
        was = self.training
        self.eval()
        try:
            idx = torch.arange(self.config.n_items)
            return torch.cat([self.item_vectors(c) for c in idx.split(batch_size)])
        finally:
            self.train(was)


def _ids(values: np.ndarray | None, n: int, vocab: int) -> Tensor:
    if values is None or vocab == 0:
        return torch.zeros(n, dtype=torch.long)
    arr = np.asarray(values, dtype=np.int64)
    if len(arr) != n or arr.min(initial=0) < 0 or arr.max(initial=0) >= vocab:
        raise ValueError(f"ids must be {n} values in [0, {vocab})")
    return torch.as_tensor(arr)


def _price_features(price: np.ndarray | None, n: int, stats: tuple[float, float]) -> Tensor:
    """``(n, 2)``: z-scored log price (0 where unknown) and a has-price flag."""
    if price is None:
        return torch.zeros(n, 2)
    p = np.asarray(price, dtype=np.float64)
    known = np.isfinite(p) & (p > 0)
    logp = np.log(np.where(known, p, 1.0))
    mean, std = stats
    z = np.where(known, (logp - mean) / max(std, 1e-6), 0.0)
    return torch.as_tensor(np.stack([z, known.astype(np.float64)], 1), dtype=torch.float32)


def price_stats(price: np.ndarray | None) -> tuple[float, float]:
    """Mean and std of log price over known prices (what :class:`ContentModel` z-scores by)."""
    if price is None:
        return 0.0, 1.0
    p = np.asarray(price, dtype=np.float64)
    known = np.isfinite(p) & (p > 0)
    if not known.any():
        return 0.0, 1.0
    logp = np.log(p[known])
    return float(logp.mean()), float(logp.std()) if known.sum() > 1 else 1.0


#: Buffers that hold the catalog's item content (not learned): members of a seed ensemble over
#: one catalog share them, so :func:`save_content_model` can leave them out.
CONTENT_BUFFERS = ("text", "title_words", "category", "brand", "price", "warm", "warm_index")


def content_state(model: ContentModel) -> dict[str, Tensor]:
    """The item-content buffers of ``model`` (see :data:`CONTENT_BUFFERS`), on CPU."""
    state = model.state_dict()
    return {k: state[k].detach().contiguous().cpu() for k in CONTENT_BUFFERS}


def save_content_model(
    model: ContentModel, directory: str | Path, *, with_content: bool = True
) -> Path:
    """Write ``config.json`` and ``weights.safetensors`` (weights, item content, warm mask).

    Args:
        model: a trained :class:`ContentModel`.
        directory: the artifact folder (created if needed).
        with_content: also write the item-content buffers (:data:`CONTENT_BUFFERS`); without
            them, :func:`load_content_model` needs them as ``content`` (e.g. one copy kept
            for several models over the same catalog).

    Returns:
        The folder.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "shoprec_version": shoprec.__version__,
        "model": model.model_name,
        "config": dataclasses.asdict(model.config),
        "with_content": with_content,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if not with_content:
        state = {k: v for k, v in state.items() if k not in CONTENT_BUFFERS}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"model": model.model_name})
    return directory


def load_content_model(
    directory: str | Path, content: dict[str, Tensor] | None = None
) -> ContentModel:
    """Rebuild a model saved by :func:`save_content_model`; same outputs as the original.

    Args:
        directory: the artifact folder.
        content: the item-content buffers (:func:`content_state`), required when the model
            was saved without them; they replace the saved ones when given.

    Returns:
        The model, in eval mode.
    """
    directory = Path(directory)
    meta = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory / CONFIG_FILE} is not a shoprec content model (v1)")
    cfg = ContentConfig(**meta["config"])
    state = load_file(str(directory / WEIGHTS_FILE))
    if content is not None:
        state.update(content)
    missing = [k for k in CONTENT_BUFFERS if k not in state]
    if missing:
        raise ValueError(f"{directory} was saved without its item content: pass `content`")
    return _from_state(cfg, state)


def _from_state(cfg: ContentConfig, state: dict[str, Tensor]) -> ContentModel:
    """A model of ``cfg`` holding exactly ``state`` (weights and content buffers)."""
    content = ItemContent(text=state["text"].numpy(), words=state["title_words"].numpy())
    model = ContentModel(cfg, content, warm=state["warm"].numpy())
    model.load_state_dict(state, strict=True)
    return model.eval()


def extend_items(model: ContentModel, content: ItemContent) -> ContentModel:
    """A copy of ``model`` with items appended to its catalog, scored from content alone.

    The new items take indices ``n_items .. n_items + N - 1``; they are cold (no ID
    embedding, never drawn as negatives), and their prices are z-scored with the training
    catalog's moments, so the existing items' scores do not change. A new item in a user's
    history adds its title (``history_text``) but no learned input embedding.

    Args:
        model: a trained model.
        content: the ``N`` new items' content, with the same fields the model uses
            (``words`` as wide as the model's, or narrower).

    Returns:
        A new model in eval mode (``model`` is left as it was).
    """
    cfg = model.config
    n, k = cfg.n_items, len(content)
    if content.text.shape[1] != cfg.text_dim:
        raise ValueError(f"title vectors are {content.text.shape[1]} wide, not {cfg.text_dim}")
    state = {key: v.detach().clone() for key, v in model.state_dict().items()}
    width = state["title_words"].shape[1]
    words = np.zeros((k, width), np.int64)
    if cfg.n_words:
        if content.words is None:
            raise ValueError("the model reads title words: pass ItemContent.words")
        given = np.asarray(content.words, np.int64)[:, :width]
        if given.min(initial=0) < 0 or given.max(initial=0) >= cfg.n_words:
            raise ValueError(f"word ids must be in [0, {cfg.n_words})")
        words[:, : given.shape[1]] = given
    moments = (float(state["price_moments"][0]), float(state["price_moments"][1]))
    price = content.price if cfg.use_price else None
    dim = cfg.dim
    state["item.weight"] = torch.cat([state["item.weight"], torch.zeros(k, dim)])
    state["item_bias.weight"] = torch.cat([state["item_bias.weight"], torch.zeros(k, 1)])
    hist = state["history_item.weight"]  # (n + 1, dim), the last row is the padding
    state["history_item.weight"] = torch.cat([hist[:n], torch.zeros(k + 1, dim)])
    state["text"] = torch.cat([state["text"], torch.as_tensor(content.text, dtype=torch.float32)])
    state["title_words"] = torch.cat([state["title_words"], torch.as_tensor(words)])
    state["category"] = torch.cat([state["category"], _ids(content.category, k, cfg.n_categories)])
    state["brand"] = torch.cat([state["brand"], _ids(content.brand, k, cfg.n_brands)])
    state["price"] = torch.cat([state["price"], _price_features(price, k, moments)])
    state["warm"] = torch.cat([state["warm"], torch.zeros(k, dtype=torch.bool)])
    return _from_state(dataclasses.replace(cfg, n_items=n + k), state)
