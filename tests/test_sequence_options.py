"""Options of the warm neural base (benchmarks/amazon_cdr.py, issue 13): the history encoder
without its residual layers (``residual: false``)."""

from __future__ import annotations

import torch

from shoprec.models.features import CategoricalFeature, SequenceFeature, Task
from shoprec.models.history_encoder import HistoryEncoder, HistoryEncoderConfig

torch.set_num_threads(1)


def encoder(n_items: int, dim: int) -> HistoryEncoder:
    features = [
        CategoricalFeature("item", n_items + 1, dim),
        SequenceFeature("history", n_items + 1, dim, "mean", embedding_of="item"),
    ]
    config = HistoryEncoderConfig(domain_sizes=(n_items,), encoder="mean", tied=False)
    return HistoryEncoder(features, [Task("t")], config)


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


def test_residual_false_trains_the_tables_and_bias_only() -> None:
    """A full-softmax bag loss with ``residual: false`` sends gradient to the two item tables
    and the item bias, none to the bypassed MLP and heads."""
    features = [
        CategoricalFeature("item", 7, 4),
        SequenceFeature("history", 7, 4, "mean", embedding_of="item"),
    ]
    config = HistoryEncoderConfig(
        domain_sizes=(6,), encoder="mean", tied=False, residual=False, loss="full",
        history_dropout=0.0,
    )  # fmt: skip
    model = HistoryEncoder(features, [Task("t")], config).train()
    batch = {"history": torch.tensor([[1, 2, 3], [0, 4, 5]]), "item": torch.tensor([3, 5]),
             "targets": torch.tensor([[2, 6], [4, 1]]), "domain": torch.tensor([0, 0])}  # fmt: skip
    sum(model.task_losses(model(batch), batch).values()).backward()
    for table in (model.item_embedding, model.output_embedding, model.item_bias):
        assert table is not None and table.weight.grad is not None
        assert float(table.weight.grad.abs().sum()) > 0
    bypassed = [*model.pool_mlp.parameters(), *model.user_heads.parameters(),
                *model.item_heads.parameters()]  # fmt: skip
    assert all(p.grad is None for p in bypassed)
