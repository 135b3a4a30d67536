"""Contract suite run over every registered model, plus a few checks of the building blocks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from shoprec.models import (
    MODELS,
    CategoricalFeature,
    ESMMConfig,
    MultiTaskModel,
    NumericFeature,
    SequenceFeature,
    Task,
    TextFeature,
    build_model,
    config_from_dict,
    load_model,
    save_model,
)
from shoprec.models.features import feature_from_dict
from shoprec.models.layers import ExpertBank, InputLayer

N_USERS, N_ITEMS, N_CATS, N_WORDS = 30, 40, 6, 25

FEATURES = [
    CategoricalFeature("user", N_USERS, dim=8),
    CategoricalFeature("item", N_ITEMS, dim=8),
    CategoricalFeature("category", N_CATS, dim=4),
    SequenceFeature("history", N_ITEMS, dim=8, pooling="attention", embedding_of="item"),
    SequenceFeature("history_categories", N_CATS, dim=4, pooling="mean", embedding_of="category"),
    SequenceFeature("query_words", N_WORDS, dim=4, pooling="sum"),
    NumericFeature("price"),
    TextFeature("title", dim=5),
]

GENERAL_TASKS = [
    Task("click"),
    Task("buy", weight_key="buy_mask"),
    Task("category_next", kind="multiclass", n_classes=3),
    Task("quantity", kind="regression", loss="poisson"),
]
TASKS_BY_MODEL = {
    "esmm": [Task("click"), Task("conversion")],
    "aitm": [Task("click"), Task("cart"), Task("buy")],
}
SMALL_CONFIG = {  # keep the suite fast
    "single_task": {"hidden_dims": (32, 16)},
    "shared_bottom": {"bottom_dims": (32,), "tower_dims": (16,)},
    "mmoe": {"n_experts": 4, "expert_dims": (32,), "tower_dims": (16,)},
    "ple": {"n_levels": 2, "n_task_experts": 1, "n_shared_experts": 2, "expert_dims": (32, 16)},
    "esmm": {"tower_dims": (32, 16)},
    "aitm": {"tower_dims": (32, 16)},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one thread is faster than two, and steady on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tasks_for(name: str) -> list[Task]:
    return TASKS_BY_MODEL.get(name, GENERAL_TASKS)


def make_model(name: str, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    return build_model(name, FEATURES, tasks_for(name), **SMALL_CONFIG[name])


def make_batch(n: int, seed: int = 0, seq_len: int = 6) -> dict[str, torch.Tensor]:
    """Synthetic batch with planted signal: every label is a function of the features."""
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(1, N_USERS, (n,), generator=g)
    item = torch.randint(1, N_ITEMS, (n,), generator=g)
    category = item % (N_CATS - 1) + 1
    lengths = torch.randint(0, seq_len + 1, (n,), generator=g)  # some rows all padding
    positions = torch.arange(seq_len).expand(n, seq_len)
    history = torch.randint(1, N_ITEMS, (n, seq_len), generator=g)
    history = torch.where(positions < lengths.unsqueeze(1), history, 0)
    price = torch.randn(n, generator=g)
    click = ((item % 2 == 0) | (price > 1.0)).float()
    cart = click * (user % 2 == 0).float()
    buy = cart * (item % 4 == 0).float()
    return {
        "user": user,
        "item": item,
        "category": category,
        "history": history,
        "history_categories": torch.where(history > 0, history % (N_CATS - 1) + 1, 0),
        "query_words": torch.where(history > 0, history % (N_WORDS - 1) + 1, 0),
        "price": price,
        "title": torch.randn(n, 5, generator=g),
        "click": click,
        "cart": cart,
        "buy": buy,
        "conversion": buy,
        "buy_mask": (user % 3 != 0).float(),
        "category_next": (item + user) % 3,
        "quantity": (item % 3).float(),
    }


@pytest.fixture(params=sorted(MODELS))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("n", [7, 1])
def test_output_shapes(name: str, n: int) -> None:
    model = make_model(name)
    batch = make_batch(n)
    for mode in ("train", "eval"):
        model.train(mode == "train")
        outputs = model(batch)
        assert list(outputs) == [t.name for t in model.tasks]
        for task in model.tasks:
            expected = (n, task.n_classes) if task.kind == "multiclass" else (n,)
            assert outputs[task.name].shape == expected, (task.name, mode)
            assert torch.isfinite(outputs[task.name]).all()
        losses = model.task_losses(outputs, batch)
        assert list(losses) == [t.name for t in model.tasks]
        assert all(v.shape == () and torch.isfinite(v) for v in losses.values())
        torch.testing.assert_close(model.loss(outputs, batch), sum(losses.values()))


def test_predict_ranges(name: str) -> None:
    model = make_model(name)
    model.train()
    predictions = model.predict(make_batch(16))
    assert model.training  # predict restores the mode
    for task in model.tasks:
        p = predictions[task.name]
        assert not p.requires_grad
        if task.kind == "binary":
            assert p.shape == (16,) and ((p >= 0) & (p <= 1)).all()
        elif task.kind == "multiclass":
            assert p.shape == (16, task.n_classes) and (p >= 0).all()
            torch.testing.assert_close(p.sum(-1), torch.ones(16))
        else:
            assert p.shape == (16,) and (p >= 0).all()  # poisson: a rate


def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    model = make_model(name)
    batch = make_batch(9)
    train_step(model, batch, steps=3)  # move the weights away from their init
    model.eval()
    save_model(model, tmp_path / "artifact")
    meta = json.loads((tmp_path / "artifact" / "config.json").read_text())
    assert meta["model"] == name
    assert (tmp_path / "artifact" / "weights.safetensors").is_file()

    loaded = load_model(tmp_path / "artifact")
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config and loaded.tasks == model.tasks
    assert loaded.features == model.features
    expected, got = model(batch), loaded(batch)
    for task in model.tasks:
        assert torch.equal(expected[task.name], got[task.name])


def train_step(model: MultiTaskModel, batch: dict[str, torch.Tensor], steps: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(model(batch), batch).backward()
        optimizer.step()


def test_loss_falls_on_planted_signal(name: str) -> None:
    model = make_model(name, seed=1)
    batch = make_batch(256, seed=1)
    with torch.no_grad():
        before = model.loss(model(batch), batch).item()
    torch.manual_seed(1)
    train_step(model, batch, steps=100)
    with torch.no_grad():
        after = model.loss(model(batch), batch).item()
    assert after < 0.8 * before, (before, after)


def test_sequence_padding_is_ignored(name: str) -> None:
    model = make_model(name).eval()
    batch = make_batch(8)
    sequences = ["history", "history_categories", "query_words"]
    extra = {
        k: torch.cat([batch[k], torch.zeros(8, 3, dtype=torch.long)], dim=1) for k in sequences
    }
    left = {k: left_align_padding(batch[k]) for k in sequences}
    reference = model(batch)
    for changed in ({**batch, **extra}, {**batch, **left}):
        outputs = model(changed)
        for task in model.tasks:
            torch.testing.assert_close(outputs[task.name], reference[task.name], atol=1e-6, rtol=0)


def left_align_padding(ids: torch.Tensor) -> torch.Tensor:
    """Move each row's padding to the front, keeping the order of the real ids."""
    order = torch.argsort((ids > 0).int(), dim=1, stable=True)
    return torch.gather(ids, 1, order)


def test_shared_parameters_are_those_several_tasks_train(name: str) -> None:
    """shared_parameters() is exactly the set of parameters two or more task losses reach.

    Reach can depend on the data (AITM's calibrator is a ReLU), so it is pooled over a few
    initialisations."""
    batch = make_batch(64)
    expected: set[str] = set()
    for seed in range(3):
        model = make_model(name, seed=seed)
        reached: dict[str, int] = {}
        for task_name in model.task_names:
            model.zero_grad()
            model.task_losses(model(batch), batch)[task_name].backward()
            for param_name, p in model.named_parameters():
                if p.grad is not None and p.grad.abs().sum() > 0:
                    reached[param_name] = reached.get(param_name, 0) + 1
        expected |= {param_name for param_name, count in reached.items() if count >= 2}
    names = {id(p): n for n, p in model.named_parameters()}
    shared = {names[id(p)] for p in model.shared_parameters()}
    assert sorted(shared) == sorted(expected)
    last = {names[id(p)] for p in model.last_shared_layer()}
    assert last <= shared
    assert bool(last) == bool(shared)


@pytest.mark.parametrize(
    "gated", [n for n in sorted(MODELS) if hasattr(MODELS[n][0], "gate_weights")]
)
def test_gate_weights_rows_sum_to_one(gated: str) -> None:
    model = make_model(gated)
    gates = model.gate_weights(make_batch(5))
    assert list(gates) == model.task_names
    for g in gates.values():
        assert g.dim() == 2 and g.shape[0] == 5 and (g >= 0).all()
        torch.testing.assert_close(g.sum(-1), torch.ones(5))


def test_esmm_pctcvr_is_exact_product() -> None:
    model = make_model("esmm")
    batch = make_batch(12)
    predictions = model.predict(batch)
    p_ctr = torch.sigmoid(model(batch)["click"]).detach()
    p_cvr = model.predict_cvr(batch)
    assert torch.equal(predictions["click"], p_ctr)
    assert torch.equal(predictions["conversion"], predictions["click"] * p_cvr)
    # the pCTCVR logit agrees with the product, and the loss uses click AND conversion
    ctcvr_logit = model(batch)["conversion"]
    torch.testing.assert_close(torch.sigmoid(ctcvr_logit), predictions["conversion"])
    label = batch["click"] * batch["conversion"]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(ctcvr_logit, label)
    torch.testing.assert_close(model.task_losses(model(batch), batch)["conversion"], expected)


def test_esmm_task_names_come_from_config() -> None:
    tasks = [Task("buy"), Task("click")]
    model = build_model("esmm", FEATURES, tasks, ctr_task="click", cvr_task="buy")
    assert model.ctr_task.name == "click" and model.cvr_task.name == "buy"
    with pytest.raises(ValueError, match="ctr_task"):
        build_model("esmm", FEATURES, tasks, ctr_task="view")
    assert dataclasses.asdict(ESMMConfig())["ctr_task"] is None


def test_aitm_calibrator_penalises_later_step_above_earlier() -> None:
    model = make_model("aitm")
    batch = make_batch(4)
    outputs = {
        "click": torch.full((4,), -3.0),
        "cart": torch.full((4,), 3.0),
        "buy": torch.zeros(4),
    }
    with_penalty = model.task_losses(outputs, batch)
    plain = dataclasses.replace(model.config, calibration_weight=0.0)
    model.config = plain
    without = model.task_losses(outputs, batch)
    excess = torch.sigmoid(torch.tensor(3.0)) - torch.sigmoid(torch.tensor(-3.0))
    torch.testing.assert_close(with_penalty["cart"] - without["cart"], 0.6 * excess)
    torch.testing.assert_close(with_penalty["buy"], without["buy"])  # buy below cart: no penalty
    torch.testing.assert_close(with_penalty["click"], without["click"])


def test_weight_key_masks_samples() -> None:
    model = make_model("shared_bottom")
    batch = make_batch(10)
    batch["buy_mask"] = torch.tensor([1.0] * 5 + [0.0] * 5)
    garbage = batch["buy"].clone()
    garbage[5:] = float("nan")
    outputs = model(batch)
    masked = model.task_losses(outputs, {**batch, "buy": garbage})["buy"]
    first_half = torch.nn.functional.binary_cross_entropy_with_logits(
        outputs["buy"][:5], batch["buy"][:5]
    )
    torch.testing.assert_close(masked, first_half)


def test_specs_round_trip_and_validate() -> None:
    for feature in FEATURES:
        assert feature_from_dict(json.loads(json.dumps(feature.to_dict()))) == feature
    for task in GENERAL_TASKS:
        assert Task.from_dict(task.to_dict()) == task
    assert Task("click").loss == "bce" and Task("click").label == "click"
    with pytest.raises(ValueError, match="loss"):
        Task("x", kind="binary", loss="mse")
    with pytest.raises(ValueError, match="n_classes"):
        Task("x", kind="multiclass")
    with pytest.raises(ValueError, match="embedding_of"):
        SequenceFeature("s", 10, pooling="attention")
    with pytest.raises(ValueError, match="vocab_size"):
        build_model(
            "mmoe",
            [*FEATURES[:2], SequenceFeature("s", 99, 8, embedding_of="item")],
            [Task("click")],
        )
    with pytest.raises(ValueError, match="no field"):
        config_from_dict(MODELS["mmoe"][1], {"n_expert": 3})
    assert config_from_dict(MODELS["mmoe"][1], {"expert_dims": [8, 4]}).expert_dims == (8, 4)


def test_input_layer_uses_one_table_per_dim_and_zero_padding() -> None:
    layer = InputLayer(FEATURES)
    assert sorted(layer.tables) == ["4", "8"]  # shared tables: one lookup per dim
    # rows: padding + user + item (+ history shares item) / padding + category + query words
    assert layer.tables["8"].num_embeddings == 1 + (N_USERS - 1) + (N_ITEMS - 1)
    assert layer.tables["4"].num_embeddings == 1 + (N_CATS - 1) + (N_WORDS - 1)
    batch = make_batch(3)
    batch["user"] = torch.zeros(3, dtype=torch.long)
    x = layer(batch)
    assert x.shape == (3, 8 + 8 + 4 + 8 + 4 + 4 + 1 + 5) == (3, layer.output_dim)
    assert (x[:, :8] == 0).all()  # id 0 embeds to zeros
    # distinct features never read each other's rows: item id 1 != category id 1 != user id 1
    one = {k: torch.ones_like(v) if v.dtype == torch.long else v for k, v in batch.items()}
    x = layer(one)
    assert not torch.equal(x[:, :8], x[:, 8:16])


def test_expert_bank_matches_independent_mlps() -> None:
    torch.manual_seed(0)
    bank = ExpertBank(3, 5, (4, 2))
    x = torch.randn(6, 5)
    out = bank(x)
    assert out.shape == (6, 3, 2)
    for e in range(3):
        h = torch.relu(x @ bank.first_weight[:, e] + bank.first_bias[e])
        h = torch.relu(h @ bank.weights[0][e] + bank.biases[0][e])
        torch.testing.assert_close(out[:, e], h)
