"""Data larger than memory: events partitioned by user, training rows in Parquet shards.

The shard stream must use every row once per epoch across the ranks, in the same global
batches for any number of processes; one shard must train exactly what the in-memory rows
train; the streamed preparation must build the in-memory rows (exactly, without negatives)
and, through the pairs recipe, train a model as good as the in-memory one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from shoprec.config import ExperimentConfig
from shoprec.data.batches import TensorData
from shoprec.data.partitioned import scan_events, split_frame, time_cuts, with_time_parts
from shoprec.data.shards import ShardedData
from shoprec.data.simulate import simulate_shop, write_shop
from shoprec.data.split import time_split
from shoprec.models import build_model
from shoprec.models.features import CategoricalFeature, NumericFeature, Task
from shoprec.pipeline import prepare_ranking, prepare_ranking_shards
from shoprec.recipes import get as get_recipe
from shoprec.train import distributed
from shoprec.train.loop import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")
BEHAVIORS = ["view", "cart", "buy"]


def _rows(n: int) -> TensorData:
    g = torch.Generator().manual_seed(0)
    return TensorData({"x": torch.arange(n), "y": torch.rand(n, generator=g)})


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_row_once_per_epoch_across_ranks(world: int, tmp_path: Path) -> None:
    n, batch = 1037, 64
    data = ShardedData.write(_rows(n), tmp_path, shard_rows=100, scatter=True)
    assert data.n_shards == 11 and len(data) == n
    per_rank = []
    for rank in range(world):
        g = torch.Generator().manual_seed(5)
        per_rank.append(list(data.epoch(batch, rank, world, g)))
    steps = distributed.steps_per_epoch(n, batch, distributed.Context(0, world))
    assert [len(p) for p in per_rank] == [steps] * world
    seen = []
    for step in range(steps):
        sizes = {p[step][1] for p in per_rank}
        rows = torch.cat([p[step][0]["x"] for p in per_rank])
        assert sizes == {len(rows)}  # the ranks' parts make up the global batch
        assert len(rows) == batch or step == steps - 1
        seen.append(rows)
    seen_all = torch.cat(seen).sort().values
    assert torch.equal(seen_all, torch.arange(n))  # every row exactly once
    # a second epoch is another order, still every row once
    g = torch.Generator().manual_seed(5)
    first, second = (torch.cat([b["x"] for b, _ in data.epoch(batch, 0, 1, g)]) for _ in "ab")
    assert not torch.equal(first, second)
    assert torch.equal(second.sort().values, torch.arange(n))


def test_columns_and_batches_read_the_shards(tmp_path: Path) -> None:
    rows = _rows(250)
    data = ShardedData.write(rows, tmp_path, shard_rows=100)
    assert set(data.columns) == {"x", "y"} and "y" in data.columns
    assert torch.equal(data.columns["x"], rows.columns["x"])
    assert data.columns["x"].dtype == torch.int64 and data.columns["y"].dtype == torch.float32
    got = torch.cat([b["y"] for b in data.batches(64)])
    torch.testing.assert_close(got, rows.columns["y"])


def _toy_model() -> torch.nn.Module:
    torch.manual_seed(0)
    features = [CategoricalFeature("a", vocab_size=30, dim=4), NumericFeature("x")]
    return build_model("mmoe", features, [Task("click")], n_experts=2, expert_dims=(8,))


def test_one_shard_trains_exactly_what_memory_trains(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    a, x = torch.randint(2, 30, (900,), generator=g), torch.randn(900, generator=g)
    click = torch.rand(900, generator=g) < torch.sigmoid((a % 3 == 0).float() * 2 - 1 + x)
    train = TensorData({"a": a, "x": x, "click": click.float()})
    cfg = TrainConfig(epochs=2, batch_size=128, progress=False, device="cpu", patience=5)
    memory, sharded = _toy_model(), _toy_model()
    r1 = fit(memory, train, train, cfg)
    r2 = fit(sharded, ShardedData.write(train, tmp_path, shard_rows=1000), train, cfg)
    for (k, v), w in zip(memory.state_dict().items(), sharded.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    assert r1.history == r2.history


def test_streamed_prepare_builds_the_in_memory_rows(tmp_path: Path) -> None:
    """Without negatives (no random draws) the rows are the same multiset and the encoder
    the same (vocabulary and order exactly, statistics to rounding); with negatives the same
    positives and about as many rows."""
    shop = simulate_shop(n_events=20_000, seed=1)
    split = time_split(shop.dataset.interactions, test_days=14, valid_days=7)
    ds = shop.dataset
    for neg in (0, 4):
        memory = prepare_ranking(ds, split, BEHAVIORS, n_negatives=neg)
        sharded = prepare_ranking_shards(
            split_frame(split), ds.catalog, ds.users, BEHAVIORS, tmp_path / str(neg),
            n_negatives=neg, bucket_events=5_000, shard_rows=8_000,
        )  # fmt: skip
        assert sharded.train.n_shards > 1
        a, b = memory.encoder.to_dict(), sharded.encoder.to_dict()
        assert a["vocab"] == b["vocab"] if neg == 0 else a["vocab"].keys() == b["vocab"].keys()
        assert b["mean"] == pytest.approx(a["mean"], rel=1e-9 if neg == 0 else 0.02)
        for part in ("train", "valid", "test"):
            mem, sh = getattr(memory, part), getattr(sharded, part)
            cols = list(mem.columns)
            assert list(sh.columns) == cols
            fa = pl.DataFrame({c: mem.columns[c].numpy() for c in cols})
            fb = pl.DataFrame({c: sh.columns[c].numpy() for c in cols})
            if neg == 0:
                assert fa.sort(cols).equals(fb.sort(cols)), part
            else:
                pos = pl.col("view") + pl.col("cart") + pl.col("buy") > 0
                assert fa.filter(pos).height == fb.filter(pos).height
                assert fb.height == pytest.approx(fa.height, rel=0.01)


SMALL = {
    "name": "small",
    "data": {"dataset": "simulated", "simulate": {"n_events": 20_000, "seed": 3}},
    "split": {"kind": "time", "test_days": 14, "valid_days": 7},
    "recipe": {"name": "pairs", "n_negatives": 2},
    "tasks": ["view", "cart", "buy"],
    "model": {"name": "mmoe", "embedding_dim": 8, "config": {"n_experts": 2}},
    "train": {"epochs": 2, "batch_size": 1024, "lr": 0.003, "progress": False, "threads": 1},
}


def test_pairs_recipe_trains_on_shards_as_well_as_in_memory(tmp_path: Path) -> None:
    from shoprec.experiment import load_dataset, make_split

    base = ExperimentConfig.from_dict(SMALL)
    ds = load_dataset(base.data)
    split = make_split(ds, base.split)
    runs = {}
    for stream in ("memory", "shards"):
        raw = {**SMALL, "train": {**SMALL["train"], "stream": stream, "shard_rows": 20_000}}
        recipe = get_recipe("pairs")(ExperimentConfig.from_dict(raw))
        runs[stream] = recipe.fit(ds, split)
    mem, sh = runs["memory"].test, runs["shards"].test
    for task in BEHAVIORS:  # other negatives and row order: equal up to sampling noise
        assert sh[f"{task}/auc"] == pytest.approx(mem[f"{task}/auc"], abs=0.03), task
    assert mem["buy/auc"] > 0.6


def test_prepare_files_streams_a_simulated_folder(tmp_path: Path) -> None:
    folder = write_shop(tmp_path / "shop", n_events=20_000, n_users=400, n_items=150, seed=2)
    raw = {**SMALL, "data": {"dataset": str(folder)}}
    recipe = get_recipe("pairs")(ExperimentConfig.from_dict(raw))
    data = recipe.prepare_files(folder)
    events = scan_events(folder / "interactions.parquet")
    t_test, t_valid = time_cuts(events, test_days=14, valid_days=7)
    parts = with_time_parts(events, t_test, t_valid).collect()
    tested = parts.filter((pl.col("__part") == "test") & pl.col("behavior").is_in(BEHAVIORS))
    n_test = tested.select("user", "item").unique().height
    test_labels = np.stack([data.test.columns[b].numpy() for b in BEHAVIORS])
    assert int((test_labels.sum(0) > 0).sum()) == n_test  # one positive row per touched pair
    assert isinstance(data.train, ShardedData) and len(data.train) > len(data.test)
    model = recipe.build_model(data)
    cfg = TrainConfig(epochs=3, batch_size=512, progress=False, device="cpu", patience=3)
    result = fit(model, data.train, data.valid, cfg)
    assert result.best_scores["buy/auc"] > 0.6
