"""Shared by test_recommend, test_serve and test_web: tiny artifacts with retrieval files
(built once per test session) and a real uvicorn server in a thread.

* :func:`tiny_artifact` — the ``pairs`` recipe (MMoE) trained through the front door
  (:func:`shoprec.experiment.train_experiment`), the lead's ``PairsScorer``;
* :func:`fake_artifact` — the same item table and training events with :class:`FakeScorer`,
  a scorer with no model at all (registered as recipe ``fake`` for the test session), to
  show that nothing in the recommender or the service assumes a neural model.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import uvicorn
from fastapi import FastAPI

from shoprec import artifact, recipes
from shoprec.artifact import Artifact
from shoprec.config import ExperimentConfig
from shoprec.experiment import train_experiment
from shoprec.models.two_tower import TwoTowerConfig
from shoprec.recipes.base import Recipe, Scorer, TrainingRun, events_of, positions_or_all
from shoprec.recommend import build_retrieval

API_KEY = "test-key"
TINY_CONFIG = {
    "name": "tiny",
    "data": {
        "dataset": "simulated",
        "simulate": {"n_events": 8000, "n_users": 400, "n_items": 300, "seed": 0},
        "behaviors": ["view", "cart", "buy"],
    },
    "split": {"kind": "time", "test_days": 14, "valid_days": 7},
    "recipe": {"name": "pairs", "n_negatives": 2},
    "tasks": ["view", "cart", "buy"],
    "model": {
        "name": "mmoe",
        "embedding_dim": 8,
        "config": {"n_experts": 3, "expert_dims": [16], "tower_dims": [8]},
    },
    "train": {"epochs": 3, "batch_size": 256, "lr": 0.005, "seed": 0, "progress": False},
    "evaluate": {"bootstrap": 0, "slices": False},
}


@functools.cache
def tiny_artifact(root: Path) -> Path:
    """Train the pairs recipe (MMoE) on ~8k simulated events (3 epochs) and build the
    retrieval files under ``root`` (once per ``root``: pass the session's base temp folder)."""
    path = train_experiment(ExperimentConfig.from_dict(TINY_CONFIG), root / "tiny_artifact")
    build_retrieval(path, TwoTowerConfig(epochs=3, batch_size=256))
    return path


class FakeScorer(Scorer):
    """No model: each item has a fixed quality in (0, 1); a shopper's live events double the
    scores of items in the categories they touched (so events visibly reach the scorer).
    ``add_items`` gives new products a quality from their price (cheaper: better)."""

    recipe: ClassVar[str] = "fake"

    def __init__(self, items: Sequence[str], quality: np.ndarray, categories: list[str]) -> None:
        super().__init__(("view", "buy"), "buy", items)
        self.quality = np.asarray(quality, dtype=np.float64)
        self.categories = list(categories)
        self.seen_events: list[pl.DataFrame] = []  # what score() was handed, for tests

    def score(
        self,
        users: Sequence[str],
        positions: np.ndarray | None = None,
        events: pl.DataFrame | None = None,
    ) -> dict[str, np.ndarray]:
        pos = positions_or_all(positions, self.n_items)
        buy = np.tile(self.quality[pos], (len(users), 1))  # (U, C)
        mine = events_of(events, users)
        if mine is not None:
            self.seen_events.append(mine)
            index = {item: i for i, item in enumerate(self.items)}
            cats = np.asarray(self.categories, dtype=object)
            for row, user in enumerate(users):
                items = mine.filter(pl.col("user") == user)["item"].to_list()
                touched = {self.categories[index[i]] for i in items if i in index}
                buy[row, np.isin(cats[pos], list(touched))] *= 2.0
        buy = np.minimum(buy, 0.999)
        return {"view": np.sqrt(buy), "buy": buy}

    def add_items(self, items: pl.DataFrame) -> np.ndarray:
        n = self.n_items
        price = items["price"].fill_null(50.0).to_numpy() if "price" in items.columns else None
        quality = 0.98 / (1.0 + (price if price is not None else np.full(items.height, 50.0)))
        cats = items["category"].fill_null("").to_list() if "category" in items.columns else None
        self.items += items["item"].to_list()
        self.quality = np.concatenate([self.quality, 0.9 + 0.05 * quality])
        self.categories += cats if cats is not None else [""] * items.height
        return np.arange(n, self.n_items)

    def save(self, directory: Path) -> None:
        state = {
            "items": self.items,
            "quality": self.quality.tolist(),
            "categories": self.categories,
        }
        (directory / "fake.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, directory: Path) -> FakeScorer:
        state = json.loads((directory / "fake.json").read_text())
        return cls(state["items"], np.array(state["quality"]), state["categories"])


class FakeRecipe(Recipe):
    name: ClassVar[str] = "fake"
    scorer_class: ClassVar[type[Scorer]] = FakeScorer

    def fit(self, dataset: object, split: object) -> TrainingRun:  # pragma: no cover
        raise NotImplementedError("the fake recipe is built by fake_artifact")


recipes.REGISTRY.setdefault("fake", "serving_helpers:FakeRecipe")


@functools.cache
def fake_artifact(root: Path) -> Path:
    """An artifact of :class:`FakeScorer` over the tiny artifact's items and training events,
    with its own retrieval files."""
    tiny = Artifact.load(tiny_artifact(root))
    items = tiny.items
    quality = np.random.default_rng(0).uniform(0.01, 0.8, items.height)
    scorer = FakeScorer(items["item"].to_list(), quality, items["category"].fill_null("").to_list())
    path = artifact.save(
        root / "fake_artifact",
        config=tiny.config,
        scorer=scorer,
        items=items,
        seen=tiny.seen,
        metrics={},
    )
    build_retrieval(path, TwoTowerConfig(epochs=2, batch_size=256))
    return path


@contextlib.contextmanager
def serving(app: FastAPI, timeout: float = 60.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
