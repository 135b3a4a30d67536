"""A model of several domains (markets, categories) sharing one user base.

:class:`CrossDomainModel` scores (user, item) pairs of a domain as a dot product
``<user vector of domain d, item vector>`` (plus an item bias), so a full ranking of all items
of a domain is one matrix product. A user's vector in domain ``d`` is computed from

* a user-id embedding shared by all domains (id 0 = an unknown user: a zero vector), and
* the mean embedding of the user's history: items of *every* domain (a shared item table
  whose rows are domain-specific items), so what a user bought in the source shapes their
  target vector,

fed either through one tower per domain (``n_shared_experts == n_domain_experts == 0``:
shared embeddings + domain-specific towers, the "joint" model) or through shared and
domain-specific experts mixed by a per-domain gate (PLE / STAR-style multi-domain model: Tang
et al., RecSys 2020; Sheng et al., CIKM 2021, "One Model to Serve All"). Each domain is a
task of the model; its loss is a sampled softmax over the batch's positives of that domain and
uniform negatives from the domain's items (Yi et al., RecSys 2019), or, for rows holding all
of a user's items of a domain, their multinomial likelihood (Mult-DAE; Liang et al., WWW 2018).

The ids, the training rows and the transfer steps (pretrain, freeze, fine-tune; joint
weighting; EMCDR) are in :mod:`shoprec.transfer.cross_domain`.

Example:
    >>> from shoprec.models.features import CategoricalFeature, SequenceFeature, Task
    >>> features = [
    ...     CategoricalFeature("user", 3, 8),
    ...     CategoricalFeature("item", 4, 8),
    ...     SequenceFeature("history", 4, 8, "mean", embedding_of="item"),
    ... ]
    >>> config = CrossDomainConfig(domain_sizes=(2, 1))
    >>> model = CrossDomainModel(features, [Task("s"), Task("t")], config)
    >>> batch = {"user": torch.tensor([1, 2]), "history": torch.tensor([[1, 3], [2, 0]]),
    ...          "item": torch.tensor([1, 3])}
    >>> {name: tuple(out.shape) for name, out in model(batch).items()}
    {'s': (2,), 't': (2,)}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shoprec.models.base import MultiTaskModel
from shoprec.models.features import CategoricalFeature, FeatureSpec, Task
from shoprec.models.layers import MLP, Batch, ExpertBank

__all__ = ["CrossDomainConfig", "CrossDomainModel"]


@dataclass(frozen=True)
class CrossDomainConfig:
    """Hyperparameters of :class:`CrossDomainModel`."""

    domain_sizes: tuple[int, ...] = (1,)  # items per domain, task order (DomainIndex.domain_sizes)
    n_shared_experts: int = 0  # experts every domain reads (0 and 0: plain towers)
    n_domain_experts: int = 0  # experts owned by each domain
    expert_dims: tuple[int, ...] = (128,)  # widths of each expert MLP
    tower_dims: tuple[int, ...] = ()  # hidden widths of each domain's tower; () = linear
    dropout: float = 0.0  # after hidden activations
    use_user_id: bool = True  # a shared user-id embedding beside the pooled history
    user_id_dropout: float = 0.1  # training: share of rows whose user id is hidden (new users)
    history_dropout: float = 0.2  # training: share of history items hidden per row
    n_negatives: int = 0  # uniform negatives per domain and batch; 0 = every item (full softmax)
    in_batch_negatives: bool = False  # also the batch's other positives of the domain
    input_dropout: float = 0.0  # dropout on the [user id, history] input of the towers
    l2: float = 0.0  # L2 penalty on the embedding rows a batch uses (users, history, targets)
    init_std: float = 0.05  # normal init of the embedding tables
    residual: bool = True  # user vector = user-id embedding + the towers' output
    predict_hidden_only: bool = False  # user rows: only the items history dropout hid count


class CrossDomainModel(MultiTaskModel):
    """Shared user/item embeddings, then per-domain towers or gated shared + domain experts,
    then a dot product with the item embedding. One task per domain (see module docstring).

    Batch keys: ``user`` ``(B,)``, ``history`` ``(B, L)`` item ids, ``item`` ``(B,)``,
    ``domain`` ``(B,)`` (training only).
    """

    model_name = "cross_domain"

    def __init__(
        self, features: Sequence[FeatureSpec], tasks: Sequence[Task], config: CrossDomainConfig
    ) -> None:
        super().__init__(features, tasks, config)
        c = config
        by_name = {f.name: f for f in features}
        user, item = by_name.get("user"), by_name.get("item")
        if not isinstance(user, CategoricalFeature) or not isinstance(item, CategoricalFeature):
            raise ValueError("CrossDomainModel needs categorical features 'user' and 'item'")
        if len(c.domain_sizes) != len(tasks):
            raise ValueError(f"domain_sizes {c.domain_sizes} must give one size per task")
        if sum(c.domain_sizes) + 1 != item.vocab_size:
            raise ValueError("item vocab_size must be sum(domain_sizes) + 1 (id 0 = padding)")
        dim = item.dim
        self.dim = dim
        self.user_embedding = nn.Embedding(user.vocab_size, dim, padding_idx=0)
        self.item_embedding = nn.Embedding(item.vocab_size, dim, padding_idx=0)
        self.item_bias = nn.Embedding(item.vocab_size, 1, padding_idx=0)
        for table in (self.user_embedding, self.item_embedding):
            nn.init.normal_(table.weight, std=c.init_std)
        nn.init.zeros_(self.item_bias.weight)
        with torch.no_grad():
            self.user_embedding.weight[0].zero_()
            self.item_embedding.weight[0].zero_()
        in_dim = 2 * dim  # [user id embedding, mean history embedding]
        self.drop = nn.Dropout(c.input_dropout)
        n_dom = len(tasks)
        self.uses_experts = c.n_shared_experts + c.n_domain_experts > 0
        if self.uses_experts:
            s, k = c.n_shared_experts, c.n_domain_experts
            self.shared_experts = ExpertBank(s, in_dim, c.expert_dims, c.dropout) if s > 0 else None
            self.domain_experts = (
                nn.ModuleList(ExpertBank(k, in_dim, c.expert_dims, c.dropout) for _ in range(n_dom))
                if k > 0
                else None
            )
            self.gates = nn.ModuleList(nn.Linear(in_dim, k + s) for _ in range(n_dom))
            width = c.expert_dims[-1]
        else:
            width = in_dim
        self.towers = nn.ModuleList(MLP(width, c.tower_dims, c.dropout) for _ in range(n_dom))
        self.heads = nn.ModuleList(nn.Linear(t.out_dim, dim) for t in self.towers)
        if c.residual:  # start as the plain dot product <user embedding, item embedding>
            for head in self.heads:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        # Embedding row of each item id: the identity, unless tie_items() makes the same
        # product in several domains share one row (its bias stays per domain).
        self.register_buffer("item_rows", torch.arange(item.vocab_size, dtype=torch.long))
        starts = np.concatenate([[0], np.cumsum(c.domain_sizes)[:-1]]) + 1
        self.register_buffer("starts", torch.as_tensor(starts, dtype=torch.long), persistent=False)

    # ---- parts, for freezing
    def parts(self) -> dict[str, list[nn.Module]]:
        """Named groups of modules: ``user_embeddings``, ``item_embeddings``, ``embeddings``
        (both tables), ``item_bias``, ``experts`` (expert banks and gates), ``towers`` (towers
        and their output heads)."""
        experts: list[nn.Module] = []
        if self.uses_experts:
            experts = [m for m in (self.shared_experts, self.domain_experts) if m is not None]
            experts.append(self.gates)
        users = [self.user_embedding]
        items = [self.item_embedding]
        return {
            "user_embeddings": users,
            "item_embeddings": items,
            "embeddings": users + items,
            "item_bias": [self.item_bias],
            "experts": experts,
            "towers": [self.towers, self.heads],
        }

    def item_vectors(self, ids: Tensor) -> Tensor:
        """Embeddings of item ids, any shape ``(...)`` -> ``(..., D)`` (tied rows shared)."""
        return self.item_embedding(self.item_rows[ids])

    # ---- user side
    def user_input(self, batch: Batch, visible: Tensor | None = None) -> Tensor:
        """``[user-id embedding, mean history embedding]`` ``(B, 2D)``; in training mode some
        user ids and history items are hidden (``user_id_dropout``, ``history_dropout``),
        unless ``visible`` ``(B, L)`` says which history items to use."""
        c = self.config
        users = batch["user"]
        hist = batch["history"]  # (B, L)
        mask = hist > 0  # (B, L)
        if visible is not None:
            mask = mask & visible
        elif self.training and c.history_dropout > 0:
            mask = mask & (torch.rand(mask.shape, device=hist.device) >= c.history_dropout)
        if self.training and c.user_id_dropout > 0:
            hide = torch.rand(users.shape, device=users.device) < c.user_id_dropout
            users = torch.where(hide, 0, users)
        if not c.use_user_id:
            users = torch.zeros_like(users)
        u = self.user_embedding(users)  # (B, D)
        emb = self.item_vectors(torch.where(mask, hist, 0))  # (B, L, D)
        pooled = emb.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)  # (B, D)
        x = torch.cat([u, pooled], dim=1)
        return self.drop(x) if self.training else x

    def domain_vectors(self, x: Tensor, domain: int) -> Tensor:
        """User inputs ``(B, 2D)`` -> user vectors of one domain ``(B, D)``."""
        if self.uses_experts:
            pool = []
            if self.domain_experts is not None:
                pool.append(self.domain_experts[domain](x))  # (B, K, E)
            if self.shared_experts is not None:
                pool.append(self.shared_experts(x))  # (B, S, E)
            experts = torch.cat(pool, dim=1)  # (B, K + S, E)
            weights = torch.softmax(self.gates[domain](x), dim=-1)  # (B, K + S)
            h = torch.bmm(weights.unsqueeze(1), experts).squeeze(1)  # (B, E)
            out = self.heads[domain](self.towers[domain](h))
            return out + x[:, : self.dim] if self.config.residual else out
        out = self.heads[domain](self.towers[domain](x))
        return out + x[:, : self.dim] if self.config.residual else out

    def user_vectors(self, batch: Batch, domain: int) -> Tensor:
        """A batch's user vectors in one domain ``(B, D)``."""
        return self.domain_vectors(self.user_input(batch), domain)

    def item_range(self, domain: int) -> tuple[int, int]:
        """``(first id, last id + 1)`` of a domain's items."""
        start = int(self.starts[domain])
        return start, start + self.config.domain_sizes[domain]

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Score of ``batch["item"]`` for the batch's user in each domain: name -> ``(B,)``."""
        x = self.user_input(batch)
        item = batch["item"] if batch["item"].dim() == 1 else batch["item"][:, 0]
        e = self.item_vectors(item)  # (B, D)
        b = self.item_bias(item).squeeze(-1)  # (B,)
        return {
            t.name: (self.domain_vectors(x, k) * e).sum(-1) + b for k, t in enumerate(self.tasks)
        }

    def task_losses(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """Per domain: softmax of each positive against every item of the domain, or (with
        ``n_negatives > 0``) against ``n_negatives`` uniform items of the domain and, with
        ``in_batch_negatives``, the domain's other positives in the batch (accidental hits
        masked). A domain with no row in the batch gets a zero loss."""
        hist = batch["history"]
        visible = None
        if self.training and self.config.history_dropout > 0:
            visible = torch.rand(hist.shape, device=hist.device) >= self.config.history_dropout
        x = self.user_input(batch, visible)
        losses: dict[str, Tensor] = {}
        penalty = self._l2(batch) if self.config.l2 > 0 else None
        for k, task in enumerate(self.tasks):
            rows = torch.nonzero(batch["domain"] == k).squeeze(1)
            if rows.numel() == 0:
                losses[task.name] = outputs[task.name].sum() * 0.0
                continue
            u = self.domain_vectors(x.index_select(0, rows), k)  # (n, D)
            pos = batch["item"].index_select(0, rows)  # (n,) or (n, P) padded with 0
            lo, hi = self.item_range(k)
            if pos.dim() == 2:  # one row per user: multinomial likelihood of all positives
                ids = torch.arange(lo, hi, device=pos.device)
                logits = u @ self.item_vectors(ids).T + self.item_bias(ids).T  # (n, I_d)
                logp = torch.log_softmax(logits, dim=-1)
                valid = pos > 0  # (n, P)
                if self.config.predict_hidden_only and visible is not None:
                    shown = torch.where(visible, hist, 0).index_select(0, rows)  # (n, L)
                    seen = (pos.unsqueeze(2) == shown.unsqueeze(1)).any(2)  # (n, P)
                    valid = valid & ~seen
                picked = logp.gather(1, torch.where(valid, pos - lo, 0))  # (n, P)
                n_pos = valid.sum().clamp_min(1)
                losses[task.name] = -(picked * valid).sum() / n_pos
                continue
            n_neg = self.config.n_negatives
            if n_neg <= 0 or n_neg >= hi - lo:  # full softmax over the domain's items
                ids = torch.arange(lo, hi, device=pos.device)
                logits = u @ self.item_vectors(ids).T + self.item_bias(ids).T  # (n, I_d)
                losses[task.name] = F.cross_entropy(logits, pos - lo)
                continue
            neg = torch.randint(lo, hi, (n_neg,), device=pos.device)
            own = torch.arange(len(pos), device=pos.device)
            if self.config.in_batch_negatives:
                cand = torch.cat([pos, neg])  # (n + N,)
                hit = pos.unsqueeze(1) == cand.unsqueeze(0)  # (n, n + N)
                hit[own, own] = False
                target = own
            else:
                cand = torch.cat([pos.new_zeros(1), neg])  # slot 0: each row's own positive
                hit = pos.unsqueeze(1) == cand.unsqueeze(0)  # (n, 1 + N)
                hit[:, 0] = False
                target = torch.zeros_like(own)
            logits = u @ self.item_vectors(cand).T + self.item_bias(cand).T  # (n, C)
            if not self.config.in_batch_negatives:
                own_logit = (u * self.item_vectors(pos)).sum(-1) + self.item_bias(pos).squeeze(-1)
                logits = torch.cat([own_logit.unsqueeze(1), logits[:, 1:]], dim=1)
            logits = logits.masked_fill(hit, float("-inf"))
            losses[task.name] = F.cross_entropy(logits, target)
        if penalty is not None:  # split over the domains present, so the sum is one penalty
            present = [n for n in losses if losses[n].requires_grad]
            for name in present:
                losses[name] = losses[name] + penalty / len(present)
        return losses

    def _l2(self, batch: Batch) -> Tensor:
        """``l2 *`` mean squared norm of the embedding rows the batch touches."""
        hist = batch["history"]
        rows = [
            self.user_embedding(batch["user"]).square().sum(-1).mean(),
            self.item_vectors(batch["item"]).square().sum(-1).reshape(len(hist), -1).sum(1).mean(),
            self.item_vectors(hist).square().sum(-1).sum(1).mean(),
        ]
        return self.config.l2 * torch.stack(rows).sum()

    def shared_parameters(self) -> list[nn.Parameter]:
        """Embeddings and shared experts feed every domain's loss."""
        params = [*self.user_embedding.parameters(), *self.item_embedding.parameters()]
        params.extend(self.item_bias.parameters())
        if self.uses_experts and self.shared_experts is not None:
            params.extend(self.shared_experts.parameters())
        return params

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The last layer of the shared experts, else the user-id table."""
        if self.uses_experts and self.shared_experts is not None:
            return self.shared_experts.last_layer()
        return list(self.user_embedding.parameters())
