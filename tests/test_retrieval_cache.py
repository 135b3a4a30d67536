"""The new-item index is built once and read afterwards; products added at run time extend
it; ``shoprec train`` builds the retrieval files into the artifact (opt-out: --no-retrieval /
serve.build_retrieval: false) and recommend says so when they are missing.

The index-kind thresholds are lowered (monkeypatched) so that a few hundred new items get the
inverted-file index that a 1M-item catalog's hundreds of thousands get.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from serving_helpers import FakeScorer
from shoprec import artifact
from shoprec.artifact import Artifact
from shoprec.models.two_tower import TwoTowerConfig
from shoprec.recommend import Recommender, RecommenderConfig, retrieve
from shoprec.recommend.retrieve import (
    NEW_INDEX_CACHE,
    NEW_INDEX_KEEP,
    NEW_INDEX_PREFIX,
    Retrieval,
    build_retrieval,
    cache_root,
    clustered_vectors,
    subset_index,
)

pytest.importorskip("faiss", reason="saved indexes are faiss's (NumPy search builds nothing)")
pytestmark = pytest.mark.usefixtures("one_thread")

N_ITEMS, N_WARM = 400, 150  # items 150..399 have no training events: new


@pytest.fixture
def small_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    """An inverted file from 100 items (a 1M-item catalog's new items get one from 20k)."""
    monkeypatch.setattr(retrieve, "IVF_MIN_ITEMS", 100)


def _saved(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{NEW_INDEX_PREFIX}*.faiss"))


def test_subset_index_is_saved_then_read(small_kinds: None, tmp_path: Path) -> None:
    vectors = clustered_vectors(600, 16, seed=0, n_clusters=20)
    positions = np.arange(100, 600, 2)
    built = subset_index(vectors, positions, save_to=tmp_path)
    assert built.kind == "ivf" and len(built) == len(positions)
    (file,) = _saved(tmp_path)
    queries = clustered_vectors(20, 16, seed=1, n_clusters=20, centres_seed=0)
    want = built.search(queries, 10)

    with pytest.MonkeyPatch.context() as mp:  # read, never built
        mp.setattr(retrieve, "_build_subset_index", lambda *a: pytest.fail("rebuilt"))
        again = subset_index(vectors, positions, folders=[tmp_path / "elsewhere", tmp_path])
    assert again.kind == "ivf"
    for a, b in zip(again.search(queries, 10), want, strict=True):
        assert np.array_equal(a, b)

    # another set of items, or other vectors for the same items: another key
    subset_index(vectors, positions[:-1], save_to=tmp_path)
    moved = vectors.copy()
    moved[positions[0]] = -moved[positions[0]]
    subset_index(moved, positions, save_to=tmp_path)
    assert len(_saved(tmp_path)) == 3 and file in _saved(tmp_path)

    # a damaged file is only a cache: built again, and replaced
    file.write_bytes(b"not an index")
    rebuilt = subset_index(vectors, positions, save_to=tmp_path)
    assert len(rebuilt) == len(positions) and file.stat().st_size > 1000

    # no more than NEW_INDEX_KEEP files per folder, the least recently used go first
    for cut in range(1, 4):
        subset_index(vectors, positions[cut:], save_to=tmp_path)
    assert len(_saved(tmp_path)) == NEW_INDEX_KEEP


def test_processes_starting_together_build_it_once(
    small_kinds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two starts at once (``--workers 2``): one builds under the lock, the other waits and
    reads the file."""
    vectors = clustered_vectors(500, 16, seed=2, n_clusters=10)
    build = retrieve._build_subset_index
    built: list[int] = []

    def slow_build(sub: np.ndarray, kind: str) -> retrieve.ItemIndex:
        built.append(len(sub))
        time.sleep(0.3)  # the other one arrives meanwhile
        return build(sub, kind)

    monkeypatch.setattr(retrieve, "_build_subset_index", slow_build)
    positions = np.arange(0, 500, 2)
    with ThreadPoolExecutor(2) as pool:  # flock: each open() of the lock file is its own
        jobs = [pool.submit(subset_index, vectors, positions, save_to=tmp_path) for _ in "ab"]
        sizes = [len(j.result()) for j in jobs]
    assert sizes == [250, 250] and built == [250] and len(_saved(tmp_path)) == 1


def test_small_sets_are_exact_and_never_saved(tmp_path: Path) -> None:
    vectors = clustered_vectors(300, 8, seed=0)
    index = subset_index(vectors, np.arange(0, 300, 3), save_to=tmp_path)
    assert index.kind == "flat" and _saved(tmp_path) == []


def _shop(root: Path) -> Path:
    """A fake-scorer artifact of 400 items, 250 of them new, with retrieval files."""
    rng = np.random.default_rng(0)
    items = pl.DataFrame(
        {
            "item": [f"i{j}" for j in range(N_ITEMS)],
            "category": [f"c{j % 7}" for j in range(N_ITEMS)],
            "price": rng.uniform(1, 50, N_ITEMS).round(2),
        }
    )
    n = 3000
    seen = pl.DataFrame(
        {
            "user": [f"u{u}" for u in rng.integers(0, 200, n)],
            "item": [f"i{j}" for j in rng.integers(0, N_WARM, n)],
            "behavior": rng.choice(["view", "cart", "buy"], n).tolist(),
        }
    )
    scorer = FakeScorer(items["item"].to_list(), rng.uniform(0.01, 0.8, N_ITEMS), [""] * N_ITEMS)
    config = {"name": "shop", "data": {"dataset": "simulated"}}
    from shoprec.config import ExperimentConfig

    path = artifact.save(
        root / "shop",
        config=ExperimentConfig.from_dict(config),
        scorer=scorer,
        items=items,
        seen=seen,
        metrics={},
    )
    build_retrieval(path, TwoTowerConfig(epochs=1, batch_size=256))
    return path


def test_artifact_carries_the_new_item_index_and_serving_reads_it(
    small_kinds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOPREC_CACHE", str(tmp_path / "cache"))
    path = _shop(tmp_path)
    (file,) = _saved(path / "retrieval")  # built with the retrieval files, in the manifest
    art = Artifact.load(path)
    assert f"retrieval/{file.name}" in art.manifest["files"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(retrieve, "_build_subset_index", lambda *a: pytest.fail("rebuilt"))
        rec = Recommender.from_artifact(art, RecommenderConfig(n_new=20))
    new_pos, index, _ = rec.candidates.new_index
    assert np.array_equal(new_pos, np.arange(N_WARM, N_ITEMS)) and index.kind == "ivf"
    ranking = rec.rank("u1", 10)
    assert len(ranking.items) == 10
    assert any("new" in r.sources for r in rec.rank("u1", 400).items)
    assert not (cache_root() / NEW_INDEX_CACHE).exists()  # nothing built: the artifact had it


def test_changed_new_items_are_built_once_into_the_cache(
    small_kinds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An artifact whose new items differ from its saved index (as after a forget): the
    first Recommender builds it into $SHOPREC_CACHE/new_items, never into the artifact; the
    next one reads it."""
    monkeypatch.setenv("SHOPREC_CACHE", str(tmp_path / "cache"))
    path = _shop(tmp_path)
    for f in _saved(path / "retrieval"):
        f.unlink()
    artifact.seal(path, "retrieval")  # as an artifact built before this index was saved
    before = sorted(p.name for p in (path / "retrieval").iterdir())
    Recommender.from_artifact(path)
    cached = _saved(tmp_path / "cache" / NEW_INDEX_CACHE)
    assert len(cached) == 1
    assert sorted(p.name for p in (path / "retrieval").iterdir()) == before
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(retrieve, "_build_subset_index", lambda *a: pytest.fail("rebuilt"))
        rec = Recommender.from_artifact(path)
    assert rec.candidates.new_index[1].kind == "ivf"


def test_products_added_at_run_time_extend_the_index(small_kinds: None, tmp_path: Path) -> None:
    path = _shop(tmp_path)
    rec = Recommender.from_artifact(path, RecommenderConfig(n_new=5))
    before_pos, before_index, _ = rec.candidates.new_index
    added = pl.DataFrame(
        {"item": ["x1", "x2"], "category": ["c1", "c2"], "price": [3.0, 40.0]},
    )
    with pytest.MonkeyPatch.context() as mp:  # appended to the index, never rebuilt
        mp.setattr(retrieve, "_build_subset_index", lambda *a: pytest.fail("rebuilt"))
        mp.setattr(Retrieval, "new_item_index", lambda *a: pytest.fail("looked up again"))
        rec.add_items(added)
    new_pos, index, _ = rec.candidates.new_index
    assert np.array_equal(new_pos, np.r_[before_pos, N_ITEMS, N_ITEMS + 1])
    assert index is not before_index and len(before_index) == len(before_pos)  # a copy
    assert index.kind == "ivf" and len(index) == len(new_pos)
    for p in (N_ITEMS, N_ITEMS + 1):  # each added item is its own nearest new item
        _, rows = index.search(rec.retrieval.item_vectors[p][None, :], 1)
        assert new_pos[rows[0, 0]] == p
    assert {"x1", "x2"} <= set(rec.new_items())
    # nothing changed: nothing rebuilt or extended
    rec.candidates.refresh()
    assert rec.candidates.new_index[1] is index


# ------------------------------------------------------------------------- the CLI


CONFIG = {
    "name": "tiny",
    "data": {
        "dataset": "simulated",
        "simulate": {"n_events": 3000, "n_users": 150, "n_items": 120, "seed": 0},
    },
    "split": {"kind": "time", "test_days": 14, "valid_days": 7},
    "recipe": {"name": "pairs", "n_negatives": 1},
    "tasks": ["view", "buy"],
    "model": {"name": "single_task", "embedding_dim": 4},
    "train": {"epochs": 1, "batch_size": 512, "seed": 0, "progress": False, "threads": 1},
    "evaluate": {"bootstrap": 0, "slices": False, "exposure": False, "baselines": False},
}


def _retrieval_listed(path: Path) -> bool:
    manifest = json.loads((path / "manifest.json").read_text())
    return any(k.startswith("retrieval/") for k in manifest["files"])


def test_train_builds_retrieval_and_the_opt_outs(tmp_path: Path) -> None:
    from shoprec.cli import app

    runner = CliRunner()
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    built, skipped = tmp_path / "built", tmp_path / "skipped"
    result = runner.invoke(app, ["train", str(config), "--output", str(built)])
    assert result.exit_code == 0, result.output
    assert "building the retrieval files" in result.stderr
    assert _retrieval_listed(built) and Artifact.load(built)  # sealed: checks pass
    result = runner.invoke(app, ["recommend", str(built), "--user", "u1", "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert "no retrieval files" not in result.stderr and len(json.loads(result.stdout)) == 3

    # the config key, and the flag (which wins over the file)
    off = {**CONFIG, "serve": {"build_retrieval": False}}
    config.write_text(yaml.safe_dump(off))
    result = runner.invoke(app, ["train", str(config), "--output", str(skipped)])
    assert result.exit_code == 0, result.output
    assert not _retrieval_listed(skipped) and not (skipped / "retrieval").exists()
    args = ["train", str(config), "--output", str(tmp_path / "on"), "--retrieval"]
    assert runner.invoke(app, args).exit_code == 0
    assert _retrieval_listed(tmp_path / "on")
    config.write_text(yaml.safe_dump(CONFIG))
    args = ["train", str(config), "--output", str(tmp_path / "off"), "--no-retrieval"]
    assert runner.invoke(app, args).exit_code == 0
    assert not _retrieval_listed(tmp_path / "off")

    # recommend on an artifact without them says so before building them into the cache
    result = runner.invoke(app, ["recommend", str(skipped), "--user", "u1", "-k", "3"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "has no retrieval files" in said and "--no-retrieval" in said
    assert "Building them now into the cache folder" in said
    assert not (skipped / "retrieval").exists()  # the artifact is never written
    result = runner.invoke(app, ["recommend", str(skipped), "--user", "u1", "-k", "3"])
    assert result.exit_code == 0 and "no retrieval files" not in result.stderr
