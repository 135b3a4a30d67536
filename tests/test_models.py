"""Contract suite run over every model (the registered multi-task models, and the content,
cross-domain, two-tower and EMCDR models), plus a few checks of the building blocks.

Every model meets the same four checks (output shapes, a batch of one, loss falls on planted
signal when trained with the one fit loop, save/load round trip gives equal outputs); a
:class:`Case` says how to build, feed and save one. The multi-task models have a few more."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from shoprec.data.batches import TensorData
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
from shoprec.models.content import (
    ContentConfig,
    ContentModel,
    ItemContent,
    load_content_model,
    save_content_model,
)
from shoprec.models.cross_domain import CrossDomainConfig, CrossDomainModel
from shoprec.models.emcdr import EMCDRMapping
from shoprec.models.features import feature_from_dict
from shoprec.models.forecaster import (
    DemandForecaster,
    ForecasterConfig,
    example_batch,
    load_forecaster,
    save_forecaster,
)
from shoprec.models.history_encoder import HistoryEncoder, HistoryEncoderConfig
from shoprec.models.layers import ExpertBank, InputLayer
from shoprec.models.two_tower import TwoTower, TwoTowerConfig
from shoprec.train.loop import TrainConfig, fit

Batch = dict[str, torch.Tensor]

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


def test_registered_model_artifact_names_it(name: str, tmp_path: Path) -> None:
    save_model(make_model(name), tmp_path / "artifact")
    meta = json.loads((tmp_path / "artifact" / "config.json").read_text())
    assert meta["model"] == name
    assert (tmp_path / "artifact" / "weights.safetensors").is_file()


# --------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class Case:
    """One model under the contract.

    Attributes:
        build: seed -> a fresh model.
        batch: (rows, seed) -> a batch whose labels are a function of its features.
        shapes: (model, rows) -> the shape of each output of ``forward``, in order.
        save: writes the model into a folder.
        load: reads it back.
    """

    build: Callable[[int], nn.Module]
    batch: Callable[[int, int], Batch]
    shapes: Callable[[nn.Module, int], dict[str, tuple[int, ...]]]
    save: Callable[[nn.Module, Path], object]
    load: Callable[[Path], nn.Module]


def multitask_shapes(model: nn.Module, n: int) -> dict[str, tuple[int, ...]]:
    return {t.name: (n, t.n_classes) if t.kind == "multiclass" else (n,) for t in model.tasks}


def registered_case(name: str) -> Case:
    return Case(
        build=lambda seed: make_model(name, seed),
        batch=make_batch,
        shapes=multitask_shapes,
        save=save_model,
        load=load_model,
    )


# ---- content: users of a taste group buy the group's items, whose titles share a direction
CONTENT = ContentConfig(
    n_users=N_USERS,
    n_items=N_ITEMS,
    text_dim=8,
    n_categories=N_CATS,
    n_brands=4,
    use_price=True,
    n_words=N_WORDS,
    word_dim=4,
    side_dim=4,
    dim=8,
    hidden=16,
    n_negatives=16,
    history_len=3,
    history_text=True,
    content_match=True,
    pairwise_weight=0.5,
)
N_GROUPS = 5
N_WARM = 35  # items N_WARM.. are cold: scored from content, never positives or negatives


def item_content() -> ItemContent:
    rng = np.random.default_rng(0)
    group = np.arange(N_ITEMS) % N_GROUPS
    text = rng.normal(size=(N_ITEMS, 8)) + 2 * np.eye(8)[group]
    return ItemContent(
        text=text.astype(np.float32),
        words=rng.integers(0, N_WORDS, (N_ITEMS, 3)),
        category=group + 1,
        brand=rng.integers(0, 4, N_ITEMS),
        price=np.where(rng.random(N_ITEMS) < 0.2, np.nan, rng.lognormal(size=N_ITEMS)),
    )


def build_content(seed: int) -> ContentModel:
    torch.manual_seed(seed)
    return ContentModel(CONTENT, item_content(), warm=np.arange(N_ITEMS) < N_WARM)


def content_batch(n: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(0, N_USERS, (n,), generator=g)
    group = (user % N_GROUPS).unsqueeze(1)  # (n, 1); group k's warm items: k, k + 5, ...
    picks = torch.randint(0, N_WARM // N_GROUPS, (n, 4), generator=g)
    items = group + N_GROUPS * picks  # (n, 4): the row's item, then three recent ones
    length = torch.randint(0, 4, (n, 1), generator=g)
    history = torch.where(torch.arange(3) < length, items[:, 1:], N_ITEMS)  # n_items pads
    return {"user": user, "item": items[:, 0], "history": history}


def content_shapes(model: nn.Module, n: int) -> dict[str, tuple[int, ...]]:
    k, d = model.config.n_negatives, model.config.dim
    return {"rank": (n, 1 + k), "distill": (n + k, d + 1), "user_norm": ()}


# ---- cross-domain: a user's items in both domains follow their group, seen in the history
DOMAIN_SIZES = (20, 15)
CROSS_DOMAIN_SPECS = (
    [
        CategoricalFeature("user", N_USERS + 1, 8),
        CategoricalFeature("item", sum(DOMAIN_SIZES) + 1, 8),
        SequenceFeature("history", sum(DOMAIN_SIZES) + 1, 8, "mean", embedding_of="item"),
    ],
    [Task("source"), Task("target")],
)


def build_cross_domain(seed: int, **config: object) -> CrossDomainModel:
    torch.manual_seed(seed)
    features, tasks = CROSS_DOMAIN_SPECS
    return CrossDomainModel(
        features,
        tasks,
        CrossDomainConfig(domain_sizes=DOMAIN_SIZES, **config),  # type: ignore[arg-type]
    )


def domain_items(user: torch.Tensor, domain: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """An item of the user's group in the given domain (ids: 1.. then 21..)."""
    size = torch.tensor(DOMAIN_SIZES)[domain]
    start = torch.tensor([1, 1 + DOMAIN_SIZES[0]])[domain]
    noise = torch.randint(0, 3, user.shape, generator=g)
    return start + (user % N_GROUPS * 3 + noise) % size


def cross_domain_batch(n: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(1, N_USERS + 1, (n,), generator=g)
    domain = torch.randint(0, 2, (n,), generator=g)
    history = torch.stack(
        [domain_items(user, torch.randint(0, 2, (n,), generator=g), g) for _ in range(4)], 1
    )
    history = torch.where(torch.rand(n, 4, generator=g) < 0.3, 0, history)  # some padding
    return {"user": user, "item": domain_items(user, domain, g), "domain": domain,
            "history": history}  # fmt: skip


def save_state(model: nn.Module, directory: Path, meta: dict[str, object]) -> None:
    """What CrossDomainScorer does: the config as JSON, the state dict as safetensors."""
    directory.mkdir(parents=True)
    (directory / "meta.json").write_text(json.dumps(meta))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "weights.safetensors"))


def load_state(model: nn.Module, directory: Path) -> nn.Module:
    model.load_state_dict(load_file(str(directory / "weights.safetensors")), strict=True)
    return model.eval()


def save_cross_domain(model: nn.Module, directory: Path) -> None:
    meta = {
        "config": dataclasses.asdict(model.config),
        "features": [f.to_dict() for f in model.features],
        "tasks": [t.to_dict() for t in model.tasks],
    }
    save_state(model, directory, meta)


def load_cross_domain(directory: Path) -> nn.Module:
    meta = json.loads((directory / "meta.json").read_text())
    model = CrossDomainModel(
        [feature_from_dict(f) for f in meta["features"]],
        [Task.from_dict(t) for t in meta["tasks"]],
        config_from_dict(CrossDomainConfig, meta["config"]),
    )
    return load_state(model, directory)


# ---- history encoder: the cross-domain batch without user ids (the history carries the
# group); sasrec: each user's sequence walks through their group's items, one step at a time
HISTORY_SPECS = (CROSS_DOMAIN_SPECS[0][1:], CROSS_DOMAIN_SPECS[1])


def build_history_encoder(seed: int, **config: object) -> HistoryEncoder:
    torch.manual_seed(seed)
    features, tasks = HISTORY_SPECS
    fields = {"n_negatives": 8, "max_len": 4, "domain_dropout": 0.2, **config}
    config = HistoryEncoderConfig(domain_sizes=DOMAIN_SIZES, **fields)  # type: ignore[arg-type]
    model = HistoryEncoder(features, tasks, config)
    model.set_item_frequency(np.arange(sum(DOMAIN_SIZES) + 1) % 7)
    return model


def sequence_batch(n: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(1, N_USERS + 1, (n,), generator=g)
    step = torch.arange(5).unsqueeze(0) + torch.randint(0, 3, (n, 1), generator=g)  # (n, 5)
    seq = 1 + (user % N_GROUPS * 4).unsqueeze(1) + step  # ids of domain 0 (1..20)
    seq[:, 0] = torch.where(torch.rand(n, generator=g) < 0.3, 0, seq[:, 0])  # left padding
    history, item = seq[:, :-1], torch.where(seq[:, :-1] > 0, seq[:, 1:], 0)
    return {"history": history, "item": item, "domain": torch.zeros(n, dtype=torch.long)}


def save_history_encoder(model: nn.Module, directory: Path) -> None:
    meta = {
        "config": dataclasses.asdict(model.config),
        "features": [f.to_dict() for f in model.features],
        "tasks": [t.to_dict() for t in model.tasks],
    }
    save_state(model, directory, meta)


def load_history_encoder(directory: Path) -> nn.Module:
    meta = json.loads((directory / "meta.json").read_text())
    model = HistoryEncoder(
        [feature_from_dict(f) for f in meta["features"]],
        [Task.from_dict(t) for t in meta["tasks"]],
        config_from_dict(HistoryEncoderConfig, meta["config"]),
    )
    return load_state(model, directory)


# ---- two-tower: a user's items follow their group; items carry a category and a price
TT_USER = [CategoricalFeature("user", N_USERS, 8)]
TT_ITEM = [
    CategoricalFeature("item", N_ITEMS, 8),
    CategoricalFeature("category", N_CATS, 4),
    NumericFeature("log_price"),
]


def build_two_tower(seed: int) -> TwoTower:
    torch.manual_seed(seed)
    config = TwoTowerConfig(dim=8, embedding_dim=8, hidden=(16,), temperature=0.1)
    return TwoTower(TT_USER, TT_ITEM, config)


def two_tower_batch(n: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(2, N_USERS, (n,), generator=g)
    item = (
        2 + (user % N_GROUPS) * 6 + (user // N_GROUPS) % 3 + torch.randint(0, 2, (n,), generator=g)
    )
    counts = torch.bincount(item, minlength=N_ITEMS).float()
    return {
        "user": user,
        "item": item,
        "category": item % (N_CATS - 2) + 2,
        "log_price": torch.log1p(item.float()),
        "item_index": item,
        "item_log_q": torch.log(counts[item] / n),
    }


def save_two_tower(model: nn.Module, directory: Path) -> None:
    directory.mkdir(parents=True)
    model.save(directory)


# ---- EMCDR: the target vector is a fixed smooth function of the source vector
EMCDR_MAP = torch.randn(8, 6, generator=torch.Generator().manual_seed(5))


def build_emcdr(seed: int) -> EMCDRMapping:
    torch.manual_seed(seed)
    return EMCDRMapping(8, 6, hidden=(16,))


def emcdr_batch(n: int, seed: int) -> Batch:
    source = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    return {"source": source, "target": torch.tanh(source @ EMCDR_MAP)}


# ---- demand forecaster: each series sells at its own level times a horizon ramp
FORECASTER = ForecasterConfig(history_len=6, horizon=3, n_static=2, hidden=(32,), head_hidden=8)


def build_forecaster(seed: int) -> DemandForecaster:
    torch.manual_seed(seed)
    return DemandForecaster(FORECASTER)


def forecaster_shapes(model: nn.Module, n: int) -> dict[str, tuple[int, ...]]:
    h = model.config.horizon
    return {"units": (n, h), "quantiles": (n, h, 2), "no_sale": (n, h), "returns": (n, h),
            "trend": (n, 3)}  # fmt: skip


CASES: dict[str, Case] = {
    **{name: registered_case(name) for name in sorted(MODELS)},
    "content": Case(
        build_content,
        content_batch,
        content_shapes,
        save_content_model,
        load_content_model,
    ),
    "cross_domain": Case(
        build_cross_domain,
        cross_domain_batch,
        multitask_shapes,
        save_cross_domain,
        load_cross_domain,
    ),
    "cross_domain_experts": Case(
        lambda seed: build_cross_domain(
            seed,
            n_shared_experts=2,
            n_domain_experts=1,
            expert_dims=(16,),
            tower_dims=(8,),
            n_negatives=8,
            in_batch_negatives=True,
            l2=1e-4,
        ),
        cross_domain_batch,
        multitask_shapes,
        save_cross_domain,
        load_cross_domain,
    ),
    **{
        f"history_encoder_{encoder}": Case(
            lambda seed, encoder=encoder: build_history_encoder(seed, encoder=encoder),
            cross_domain_batch,
            multitask_shapes,
            save_history_encoder,
            load_history_encoder,
        )
        for encoder in ("mean", "attention")
    },
    "history_encoder_sasrec": Case(
        lambda seed: build_history_encoder(seed, encoder="sasrec", n_heads=2, dropout=0.0),
        sequence_batch,
        multitask_shapes,
        save_history_encoder,
        load_history_encoder,
    ),
    "history_encoder_full_softmax": Case(  # Mult-DAE likelihood, own output table
        lambda seed: build_history_encoder(seed, encoder="mean", loss="full", tied=False),
        cross_domain_batch,
        multitask_shapes,
        save_history_encoder,
        load_history_encoder,
    ),
    "two_tower": Case(
        build_two_tower,
        two_tower_batch,
        lambda model, n: {"logits": (n, n)},
        save_two_tower,
        TwoTower.load,
    ),
    "forecaster": Case(
        build_forecaster,
        lambda n, seed: example_batch(FORECASTER, n, seed),
        forecaster_shapes,
        save_forecaster,
        load_forecaster,
    ),
    "emcdr": Case(
        build_emcdr,
        emcdr_batch,
        lambda model, n: {"target": (n, 6)},
        lambda model, d: save_state(model, d, {}),
        lambda d: load_state(build_emcdr(seed=99), d),
    ),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def seeded(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with the global RNG seeded, so that models that sample (negatives,
    dropout) repeat themselves."""
    torch.manual_seed(0)
    return fn(*args)


def fit_steps(model: nn.Module, batch: Batch, steps: int) -> None:
    """``steps`` full-batch Adam steps through the one fit loop (no validation)."""
    n = len(next(iter(batch.values())))
    config = TrainConfig(epochs=steps, batch_size=n, lr=1e-2, progress=False)
    fit(model, TensorData(batch), config=config)


def eval_loss(model: nn.Module, batch: Batch) -> float:
    model.eval()
    with torch.no_grad():
        return float(seeded(model.loss, seeded(model, batch), batch))


@pytest.mark.parametrize("n", [7, 1])
def test_output_shapes(case: Case, n: int) -> None:
    """Shapes for a batch of seven and a batch of one, in training and in eval mode; every
    output and loss finite; ``loss`` is the sum of ``task_losses``."""
    model = case.build(0)
    batch = case.batch(n, 0)
    expected = case.shapes(model, n)
    for mode in ("train", "eval"):
        model.train(mode == "train")
        outputs = seeded(model, batch)
        assert {k: tuple(v.shape) for k, v in outputs.items()} == expected, mode
        assert list(outputs) == list(expected)
        assert all(torch.isfinite(v).all() for v in outputs.values())
        losses = seeded(model.task_losses, outputs, batch)
        assert all(v.shape == () and torch.isfinite(v) for v in losses.values())
        total = seeded(model.loss, outputs, batch)
        torch.testing.assert_close(total, sum(losses.values()))
        if isinstance(model, MultiTaskModel):
            assert list(losses) == list(outputs) == [t.name for t in model.tasks]


def test_save_load_round_trip(case: Case, tmp_path: Path) -> None:
    model = case.build(0)
    batch = case.batch(9, 0)
    fit_steps(model, batch, steps=3)  # move the weights away from their init; ends in eval
    case.save(model, tmp_path / "artifact")
    loaded = case.load(tmp_path / "artifact")
    assert type(loaded) is type(model) and not loaded.training
    for attr in ("config", "features", "tasks", "user_features", "item_features"):
        assert getattr(loaded, attr, None) == getattr(model, attr, None), attr
    expected, got = seeded(model, batch), seeded(loaded, batch)
    assert list(got) == list(expected)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_loss_falls_on_planted_signal(case: Case) -> None:
    model = case.build(1)
    batch = case.batch(256, 1)
    before = eval_loss(model, batch)
    fit_steps(model, batch, steps=100)
    after = eval_loss(model, batch)
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


def test_two_tower_sides_must_not_share_batch_keys() -> None:
    with pytest.raises(ValueError, match="share batch keys"):
        TwoTower(TT_USER, [*TT_ITEM, CategoricalFeature("user", N_USERS, 8)])
