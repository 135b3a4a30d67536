"""Cross-domain transfer and new users on a simulated two-market shop with planted tastes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from shoprec.data.simulate import simulate_shop
from shoprec.evaluate import metrics
from shoprec.train.loop import TrainConfig, fit
from shoprec.transfer.cold_start import (
    AttributePopularity,
    popularity_ranking,
    recommend_new_user,
    session_vector,
)
from shoprec.transfer.cross_domain import (
    CrossDomainConfig,
    CrossDomainModel,
    DomainIndex,
    EMCDRConfig,
    fit_mapping,
    freeze,
    frozen_parameters,
    history_matrix,
    joint_weighting,
    score_items,
    tie_items,
    training_rows,
    user_rows,
    user_vectors,
)

SOURCE, TARGET = "market_0", "market_1"
FIT = TrainConfig(epochs=12, batch_size=128, lr=1e-2, progress=False, patience=100)


class Shop:
    """A two-market shop: a big source market, a small target market sharing users and items;
    one held-out target item per target user with at least three target items."""

    def __init__(self, seed: int) -> None:
        shop = simulate_shop(
            n_users=2000,
            n_items=400,
            n_markets=2,
            n_events=50_000,
            source_market_share=0.9,
            shared_user_share=0.5,
            second_market_activity=0.2,
            seed=seed,
        )
        self.users_frame = shop.dataset.users.df
        pairs = (
            shop.dataset.interactions.df.select("user", "item", "domain")
            .unique()
            .sort("user", "item", "domain")
        )
        rng = np.random.default_rng(seed)
        pairs = pairs.with_columns(pl.Series("_r", rng.random(pairs.height)))
        target = pairs.filter(pl.col("domain") == TARGET)
        big = target.group_by("user").len().filter(pl.col("len") >= 2)["user"]
        test = (
            target.filter(pl.col("user").is_in(big.implode()))
            .sort("_r")
            .group_by("user", maintain_order=True)
            .first()
        )
        train = pairs.join(test, on=["user", "item", "domain"], how="anti")
        # A small target market: each user keeps at most two target training items.
        train = train.sort("_r").filter(
            (pl.col("domain") == SOURCE) | (pl.int_range(pl.len()).over("user", "domain") < 2)
        )
        sources = train.filter(pl.col("domain") == SOURCE)["user"].unique()
        test = test.filter(pl.col("user").is_in(sources.implode()))  # users seen in the source
        self.index = DomainIndex.fit(train, domains=[SOURCE, TARGET])
        self.u, self.i, self.d = self.index.encode(train)
        tu, ti, _ = self.index.encode(test)
        keep = ti > 0  # test items sold in train
        self.test_users, self.test_items = tu[keep], ti[keep]
        self.k = 1  # target domain index
        self.lo = self.index.starts[1] + 1

    def model(self, **cfg: object) -> CrossDomainModel:
        features, tasks = self.index.specs(16)
        config = CrossDomainConfig(domain_sizes=self.index.domain_sizes, **cfg)  # type: ignore[arg-type]
        torch.manual_seed(0)
        return CrossDomainModel(features, tasks, config)

    def ndcg(self, model: CrossDomainModel, history: np.ndarray) -> float:
        vecs = user_vectors(model, self.test_users, history[self.test_users], self.k)
        scores = score_items(model, vecs, self.k)
        sel = self.d == self.k
        train_items = metrics.CSR.from_pairs(
            self.u[sel], self.i[sel] - self.lo, self.index.n_users + 1
        )
        exclude = metrics.CSR.from_lists(
            [
                train_items.indices[train_items.indptr[x] : train_items.indptr[x + 1]]
                for x in self.test_users
            ]
        )
        ranks = metrics.rank_of_targets(scores, self.test_items - self.lo, exclude)
        return metrics.ndcg_at_k(ranks, 10)


@pytest.fixture(scope="module")
def shop() -> Shop:
    return Shop(seed=0)


def test_transfer_beats_target_only_on_the_small_market(shop: Shop) -> None:
    # Same epochs for both. Checked on seeds 0-4 before committing: joint / target-only
    # NDCG@10 = 1.43, 1.43, 1.25, 1.12, 1.16 (seed 0 is the one tested here).
    sel = shop.d == shop.k
    target_hist = history_matrix(shop.u[sel], shop.i[sel], shop.index.n_users, 50)
    target_only = shop.model(history_dropout=0.5, use_user_id=False)
    fit(target_only, user_rows(shop.u[sel], shop.i[sel], shop.d[sel], target_hist), config=FIT)

    both_hist = history_matrix(shop.u, shop.i, shop.index.n_users, 50)
    joint = shop.model(history_dropout=0.5, use_user_id=False)
    tie_items(joint, shop.index.shared_item_rows())  # the same product in both markets
    rows = user_rows(shop.u, shop.i, shop.d, both_hist)
    fit(joint, rows, config=FIT, weighting=joint_weighting(SOURCE, TARGET, 1.0))

    alone, transferred = shop.ndcg(target_only, target_hist), shop.ndcg(joint, both_hist)
    assert transferred > 1.05 * alone, (alone, transferred)


def test_freezing_really_freezes(shop: Shop) -> None:
    history = history_matrix(shop.u, shop.i, shop.index.n_users, 20)
    model = shop.model(n_shared_experts=1, n_domain_experts=1, expert_dims=(16,))
    src = shop.d == 0
    short = TrainConfig(epochs=1, batch_size=256, lr=1e-2, progress=False)
    fit(model, training_rows(shop.u[src], shop.i[src], shop.d[src], history), config=short)

    frozen = freeze(model, parts=("embeddings", "experts"))
    assert frozen and all(not p.requires_grad for p in frozen)
    names = set(frozen_parameters(model))
    assert {"user_embedding.weight", "item_embedding.weight"} <= names
    assert any(n.startswith("shared_experts.") for n in names)
    assert not any(n.startswith(("heads.", "item_bias.")) for n in names)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    tgt = shop.d == 1
    rows = training_rows(shop.u[tgt], shop.i[tgt], shop.d[tgt], history)
    fit(model, rows, config=replace_cfg(short, weight_decay=0.1))  # decay must not reach them
    after = model.state_dict()
    for name in names:
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["heads.1.weight"], after["heads.1.weight"])
    with pytest.raises(ValueError, match="unknown part"):
        freeze(model, parts=("embedings",))


def replace_cfg(cfg: TrainConfig, **changes: object) -> TrainConfig:
    from dataclasses import replace

    return replace(cfg, **changes)  # type: ignore[arg-type]


def test_new_user_gets_a_sensible_list(shop: Shop) -> None:
    sel = shop.d == shop.k
    counts = np.bincount(shop.i[sel] - shop.lo, minlength=shop.index.domain_sizes[shop.k])
    popular = popularity_ranking(counts)
    # Nothing known: the most popular items, never an error.
    top = recommend_new_user(popular, k=10)
    assert top.tolist() == popular[:10].tolist()
    assert counts[top].min() >= np.sort(counts)[-10]

    model = shop.model(history_dropout=0.5, use_user_id=False)
    history = history_matrix(shop.u, shop.i, shop.index.n_users, 50)
    fit(model, user_rows(shop.u, shop.i, shop.d, history), config=replace_cfg(FIT, epochs=1))
    # An unknown user with no events at all, straight through the model.
    empty = session_vector(model, [], shop.k)
    assert torch.isfinite(empty).all()
    assert len(recommend_new_user(popular, k=10, model=model, domain=shop.k)) == 10
    # A few session events: a list of 10 distinct target items, without the ones just seen.
    seen = [int(x) for x in shop.i[sel][:3]]
    top = recommend_new_user(
        popular, k=10, model=model, domain=shop.k, session_items=seen,
        exclude=[x - shop.lo for x in seen],
    )  # fmt: skip
    assert len(set(top.tolist())) == 10 and not set(top.tolist()) & {x - shop.lo for x in seen}
    assert ((top >= 0) & (top < shop.index.domain_sizes[shop.k])).all()

    # From attributes: popularity among users of the same age band, with back-off.
    users = shop.users_frame.select("user", "age_band", "gender")
    names = np.asarray(shop.index.users)
    pairs = pl.DataFrame({"user": names[shop.u[sel] - 1], "item": shop.i[sel] - shop.lo})
    ap = AttributePopularity(["age_band", "gender"], min_users=5).fit(
        pairs, users, n_items=shop.index.domain_sizes[shop.k]
    )
    band = users["age_band"][0]
    by_band = recommend_new_user(
        popular, k=10, attributes={"age_band": band}, attribute_popularity=ap
    )
    assert by_band.tolist() == ap.rank({"age_band": band})[:10].tolist()
    unknown = recommend_new_user(
        popular, k=10, attributes={"age_band": "unseen"}, attribute_popularity=ap
    )
    assert len(unknown) == 10


def test_emcdr_mapping_moves_source_vectors_to_target_vectors(shop: Shop) -> None:
    models, vectors = [], []
    both = np.intersect1d(shop.u[shop.d == 0], shop.u[shop.d == 1])
    for k in (0, 1):
        sel = shop.d == k
        history = history_matrix(shop.u[sel], shop.i[sel], shop.index.n_users, 50)
        model = shop.model(history_dropout=0.5)
        rows = user_rows(shop.u[sel], shop.i[sel], shop.d[sel], history)
        fit(model, rows, config=replace_cfg(FIT, epochs=4))
        models.append(model)
        vectors.append(user_vectors(model, both, history[both], k))
    source, target = vectors
    config = EMCDRConfig(epochs=100, patience=100, valid_frac=0.0)
    torch.manual_seed(config.seed)
    untrained = fit_mapping(source, target, EMCDRConfig(epochs=0, valid_frac=0.0))[0]
    mapping, facts = fit_mapping(source, target, config)
    with torch.no_grad():
        before = (untrained(source) - target).square().sum(1).mean()
        after = (mapping(source) - target).square().sum(1).mean()
        to_mean = (target.mean(0) - target).square().sum(1).mean()  # best constant guess
    assert after < 0.8 * before
    assert after < to_mean
    assert facts["train_mse"] == pytest.approx(float(after) / target.shape[1], rel=1e-4)
    mapped = score_items(models[1], mapping(source[:2]).detach(), 1)
    assert mapped.shape == (2, shop.index.domain_sizes[1])
