"""The benchmark rivals' math on small matrices: EASE equals a ridge regression of each item on
the others (its closed form, Steck 2019), item-kNN's cosine top-k by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks package lives beside src/
    sys.path.insert(0, str(ROOT))

from benchmarks._ease import EASE  # noqa: E402
from benchmarks._itemknn import ItemKNN, top_k_rows  # noqa: E402


def random_matrix(seed: int = 0, users: int = 40, items: int = 9) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((users, items)) < 0.35).astype(np.float32))


def test_ease_is_ridge_regression_of_each_item_on_the_others() -> None:
    """Column j of B minimises ||X_j - X_{-j} b||^2 + lambda ||b||^2 (B_jj = 0)."""
    x = random_matrix()
    lam = 3.0
    b = EASE(lam).fit(x).weights
    dense = x.toarray().astype(np.float64)
    n = dense.shape[1]
    for j in range(n):
        others = [i for i in range(n) if i != j]
        a = dense[:, others]
        want = np.linalg.solve(a.T @ a + lam * np.eye(n - 1), a.T @ dense[:, j])
        np.testing.assert_allclose(b[others, j], want, rtol=1e-4, atol=1e-5)
        assert b[j, j] == 0.0


def test_ease_scores_and_the_items_it_leaves_out() -> None:
    """Scores are x_u B on the modelled (most frequent) items; the others rank below every
    modelled item, by popularity."""
    x = random_matrix(1)
    count = np.asarray(x.sum(0)).ravel()
    full = EASE(2.0).fit(x)
    np.testing.assert_allclose(
        full.score(x[:5]), x[:5].toarray() @ full.weights + full.prior, rtol=1e-5, atol=1e-6
    )
    small = EASE(2.0, max_items=4).fit(x)
    assert len(small.kept) == 4 and count[small.kept].min() >= np.sort(count)[-4]
    s = small.score(x[:5])
    out = np.setdiff1d(np.arange(x.shape[1]), small.kept)
    assert (s[:, out].max(1) < s[:, small.kept].min(1)).all()
    with pytest.raises(ValueError, match="lambda"):
        EASE(0.0)


def test_ease_dual_form_equals_the_primal_over_every_item() -> None:
    """Fewer users than items: the Woodbury (user-space) form gives the primal's scores, for
    users of the fitted matrix (``rows``) and for new rows; an unseen item gets the floor."""
    keep = np.ones(30, dtype=np.float32)
    keep[5] = 0.0  # item 5: nobody bought it
    x = sp.csr_matrix(random_matrix(2, users=12, items=30).multiply(keep))
    primal = EASE(3.0, max_items=10**6).fit(x)
    dual = EASE(3.0).fit(x)
    assert primal.weights is not None and dual.weights is None and dual._kinv is not None
    np.testing.assert_allclose(dual.score(x[:4]), primal.score(x[:4]), rtol=1e-4, atol=1e-5)
    rows = np.array([1, 7])
    np.testing.assert_allclose(dual.score(x[rows], rows=rows), primal.score(x[rows]),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    new = random_matrix(3, users=3, items=30)
    s = dual.score(new)
    np.testing.assert_allclose(s, primal.score(new), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s[:, 5], dual.prior[5] - 1.0)  # no weights: the floor


def test_itemknn_cosine_top_k_by_hand() -> None:
    # users x items: item 0 bought by all three users, item 1 by users 0 and 2, item 2 by 1
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [1, 1, 0]], dtype=np.float32))
    knn = ItemKNN(k=2).fit(x)
    sim = knn.similarity.toarray()
    # cos(0, 1) = 2 / sqrt(3 * 2); cos(0, 2) = 1 / sqrt(3 * 1); cos(1, 2) = 0
    np.testing.assert_allclose(sim[0], [0.0, 2 / np.sqrt(6), 1 / np.sqrt(3)], rtol=1e-6)
    np.testing.assert_allclose(sim[1], [2 / np.sqrt(6), 0.0, 0.0], rtol=1e-6)
    assert np.diag(sim).sum() == 0.0
    one = ItemKNN(k=1).fit(x).similarity.toarray()
    assert (one > 0).sum(1).tolist() == [1, 1, 1] and one[0, 1] > 0  # its nearest only
    # a user who bought item 2 scores item 0 by cos(2, 0), item 1 only by popularity
    s = knn.score(sp.csr_matrix(np.array([[0, 0, 1]], dtype=np.float32)))
    assert s[0, 0] > s[0, 1] > 0.0 and s[0, 1] < 0.5 * sim[sim > 0].min()


def test_top_k_rows_keeps_the_largest_per_row() -> None:
    m = sp.csr_matrix(np.array([[0.1, 0.5, 0.3], [0.2, 0.0, 0.9]], dtype=np.float32))
    got = top_k_rows(m, 1).toarray()
    np.testing.assert_allclose(got, [[0.0, 0.5, 0.0], [0.0, 0.0, 0.9]], rtol=1e-6)
