"""Options of the warm neural base (benchmarks/amazon_cdr.py, issue 13): the ridge-shrunk SVD
start of the sequence recipe's item tables and the loop's decoupled weight decay (AdamW)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shoprec.config import ConfigError, ExperimentConfig
from shoprec.data.batches import TensorData
from shoprec.models import build_model
from shoprec.models.features import CategoricalFeature, NumericFeature, SequenceFeature, Task
from shoprec.models.history_encoder import HistoryEncoder, HistoryEncoderConfig
from shoprec.recipes.cross_domain import Pairs
from shoprec.recipes.sequence import svd_init
from shoprec.train.loop import TrainConfig, fit

torch.set_num_threads(1)


def encoder(n_items: int, dim: int) -> HistoryEncoder:
    features = [
        CategoricalFeature("item", n_items + 1, dim),
        SequenceFeature("history", n_items + 1, dim, "mean", embedding_of="item"),
    ]
    config = HistoryEncoderConfig(domain_sizes=(n_items,), encoder="mean", tied=False)
    return HistoryEncoder(features, [Task("t")], config)


@pytest.mark.parametrize("shrink", [3.0, 30.0])
def test_svd_shrink_starts_from_the_ridge_item_item_model(shrink: float) -> None:
    """At full rank, <input row i, output row j> is proportional to the ridge regression
    ``X^T X (X^T X + shrink I)^-1`` (the item-item model the start mirrors)."""
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 5
    x = (rng.random((n_users, n_items)) < 0.4).astype(np.float64)
    x[np.arange(n_items), np.arange(n_items)] = 1.0  # every item bought
    u, i = np.nonzero(x)
    pairs = Pairs(u.astype(np.int64), i.astype(np.int64) + 1, np.zeros(len(u), np.int64))
    model = encoder(n_items, dim=8)
    svd_init(model, pairs, n_users, n_items + 1, power=0.5, shrink=shrink)
    with torch.no_grad():
        e = model.item_embedding.weight[1:].double()
        o = model.output_embedding.weight[1:].double()  # type: ignore[union-attr]
    got = (e @ o.T).numpy()
    gram = x.T @ x
    ridge = gram @ np.linalg.inv(gram + shrink * np.eye(n_items))
    np.testing.assert_allclose(got / np.trace(got), ridge / np.trace(ridge), atol=1e-5)
    # power (no shrink) gives another kernel: V diag(s) V^T
    plain = encoder(n_items, dim=8)
    svd_init(plain, pairs, n_users, n_items + 1, power=0.5)
    with torch.no_grad():
        p = (plain.item_embedding.weight[1:] @ plain.item_embedding.weight[1:].T).double()
    assert not np.allclose(p.numpy() / np.trace(p.numpy()), ridge / np.trace(ridge), atol=1e-3)


def test_svd_shrink_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="svd_shrink"):
        ExperimentConfig.from_dict(
            {"data": {"dataset": "simulated"}, "recipe": {"name": "sequence", "svd_shrink": -1.0}}
        )


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adamw_decays_weights_without_a_gradient(optimizer: str) -> None:
    """A table row no batch reads: AdamW shrinks it by (1 - lr * weight_decay) per step;
    Adam's L2 term instead moves it by about lr per step (Adam normalises the gradient)."""
    g = torch.Generator().manual_seed(0)
    n = 512
    a = torch.randint(2, 20, (n,), generator=g)  # row 1 of the table is never read
    x = torch.randn(n, generator=g)
    y = (torch.rand(n, generator=g) < torch.sigmoid(x)).float()
    data = TensorData({"a": a, "x": x, "click": y})
    features = [CategoricalFeature("a", vocab_size=20, dim=4), NumericFeature("x")]
    torch.manual_seed(0)
    model = build_model(
        "mmoe", features, [Task("click")], n_experts=2, expert_dims=(8,), tower_dims=(4,)
    )
    table = next(m for m in model.modules() if isinstance(m, torch.nn.Embedding))
    before = table.weight[1].detach().clone()
    lr, wd, steps = 0.01, 0.5, 4
    cfg = TrainConfig(
        epochs=1, batch_size=n // steps, lr=lr, weight_decay=wd, optimizer=optimizer, progress=False
    )
    fit(model, data, None, cfg)
    decayed = before * (1 - lr * wd) ** steps
    if optimizer == "adamw":
        torch.testing.assert_close(table.weight[1].detach(), decayed)
    else:
        assert not torch.allclose(table.weight[1].detach(), decayed, atol=1e-4)


def test_residual_false_scores_with_the_item_tables_alone() -> None:
    """``residual: false``: a user is the plain mean of their items' input vectors and an
    item's score is its output vector against it (MLP and heads bypassed, even if trained)."""
    features = [
        CategoricalFeature("item", 7, 4),
        SequenceFeature("history", 7, 4, "mean", embedding_of="item"),
    ]
    config = HistoryEncoderConfig(domain_sizes=(6,), encoder="mean", tied=False, residual=False)
    model = HistoryEncoder(features, [Task("t")], config).eval()
    with torch.no_grad():
        for p in [
            *model.pool_mlp.parameters(),
            *model.user_heads.parameters(),
            *model.item_heads.parameters(),
        ]:
            p.normal_()
    history = torch.tensor([[0, 2, 5]])
    user = model.item_embedding.weight[[2, 5]].mean(0, keepdim=True)
    want = user @ model.output_embedding.weight[1:].T / config.temperature  # type: ignore[union-attr]
    got = model.score_domain(model.user_vectors({"history": history}, 0), 0)
    torch.testing.assert_close(got, want)
    on = HistoryEncoder(
        features, [Task("t")], HistoryEncoderConfig(domain_sizes=(6,), encoder="mean", tied=False)
    )
    on.load_state_dict(model.state_dict())
    assert not torch.allclose(
        on.eval().score_domain(on.user_vectors({"history": history}, 0), 0), got
    )
