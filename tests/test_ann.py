"""Item index chosen for the catalog's size: exact, inverted file or HNSW (issue 11 item 4).

Recall@100 of the forced HNSW index against exact search on clustered vectors (fixed seed);
the 1M-item measurement is ``benchmarks/scale.py --part ann``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shoprec.errors import ShoprecError
from shoprec.recommend import retrieve
from shoprec.recommend.retrieve import (
    ItemIndex,
    choose_index_kind,
    clustered_vectors,
    hnsw_params,
    recall_at_k,
)

pytest.importorskip("faiss", reason="the approximate indexes are faiss's")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    items = clustered_vectors(20_000, 32, seed=0)
    queries = clustered_vectors(200, 32, seed=1, centres_seed=0)  # the same clusters
    return items, queries


def test_kind_follows_catalog_size() -> None:
    assert choose_index_kind(retrieve.IVF_MIN_ITEMS - 1) == "flat"
    assert choose_index_kind(retrieve.IVF_MIN_ITEMS) == "ivf"
    assert choose_index_kind(retrieve.HNSW_MIN_ITEMS) == "hnsw"
    assert hnsw_params(10**6)["M"] > hnsw_params(10**5)["M"]  # scaled to the size
    with pytest.raises(ShoprecError, match="index kind"):
        ItemIndex(np.eye(3, dtype=np.float32), kind="pq")


def test_forced_hnsw_recall_against_exact(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    items, queries = data
    hnsw = ItemIndex(items, kind="hnsw")
    assert hnsw.kind == "hnsw" and "HNSW" in hnsw.describe()
    exact = ItemIndex(items, use_faiss=False)
    truth = exact.search(queries, 100)[1]
    scores, got = hnsw.search(queries, 100)
    assert got.shape == (200, 100) and (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    recall = recall_at_k(got, truth)
    assert recall >= 0.9, recall
    hnsw.save(tmp_path / "items.faiss")  # a saved graph is reused only for the same kind
    again = ItemIndex.load(tmp_path / "items.faiss", items, kind="hnsw")
    assert again.kind == "hnsw"
    assert np.array_equal(again.search(queries, 100)[1], got)
    assert ItemIndex.load(tmp_path / "items.faiss", items[:500]).kind == "flat"


def test_hnsw_extended_finds_new_items(data: tuple[np.ndarray, np.ndarray]) -> None:
    items, _ = data
    hnsw = ItemIndex(items[:5000], kind="hnsw")
    grown = hnsw.extended(items[5000:5100])
    assert len(grown) == 5100 and grown.kind == "hnsw" and len(hnsw) == 5000
    found = grown.search(items[5000:5100], 1)[1][:, 0]
    assert (found == np.arange(5000, 5100)).mean() >= 0.95  # each new item is its own best


def test_recall_at_k_counts_overlap() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert recall_at_k(np.array([[4, 3, 9, 9], [5, 6, 7, 8]]), truth) == pytest.approx(0.75)
