"""Candidate sources and the serving step that builds them inside an artifact folder.

The sources feed the ranker (:mod:`shoprec.recommend.candidates` unions them):

* **two-tower** (:mod:`shoprec.models.two_tower`, trained by
  :mod:`shoprec.recommend.two_tower`): nearest items to the user's vector in an
  inner-product index chosen for the catalog's size (:func:`choose_index_kind`): exact
  (faiss ``IndexFlatIP``, NumPy without faiss) under :data:`IVF_MIN_ITEMS` items, an
  inverted file (``IndexIVFFlat``) up to :data:`HNSW_MIN_ITEMS`, an HNSW graph
  (``IndexHNSWFlat``) above; recall@100 of the approximate ones against exact search is
  measured by ``benchmarks/scale.py --part ann`` (1M items) and ``tests/test_ann.py``;
* **popularity**: items by behavior-weighted event counts;
* **co-occurrence**: item-to-item neighbours, ``|U_i & U_j| / sqrt(|U_i| |U_j|)`` (cosine of
  the item columns of the user x item matrix), seeded by the shopper's recent items.

They are built from the artifact's ``items.parquet`` (item id, category, brand, price) and
``seen.parquet`` (training events) only, never from the ranking recipe's state, so every
recipe's artifact serves with the same retrieval. :func:`build_retrieval` writes, into
``ARTIFACT/retrieval/`` (JSON, Parquet, safetensors and the faiss index; no pickle)::

    retrieval.json                               what was built, from how many items / users
    user_encoder.json + item_encoder.json        the towers' own vocabularies and price stats
    two_tower.safetensors + two_tower.json       the retrieval model
    items.faiss                                  the index of item vectors (with faiss)
    cooccurrence.parquet                         item, neighbor, score (top neighbours per item)
    new_items-<key>.faiss                        the index of the new items' vectors (faiss,
                                                 20,000+ new items: see :func:`subset_index`)

The new-item index (the ``new`` candidate source searches the items without training
events) is built once and then read: its file name is a hash of exactly what it indexes (the
new items' vectors and their positions), so a service reloading, a second worker, a forget
that leaves the new items as they were, read it in a second instead of rebuilding an HNSW
graph over hundreds of thousands of items (minutes at 1M items). Serving writes the ones it
has to build beside the cached retrieval files, or under ``$SHOPREC_CACHE/new_items`` when
the retrieval files are the artifact's own (serving never writes into an artifact).

Example:
    >>> build_retrieval("runs/sim_mmoe")  # doctest: +SKIP
    >>> Retrieval.load("runs/sim_mmoe").index.describe()  # doctest: +SKIP
    'faiss IndexFlatIP (exact; NumPy for searches under 50,000 scores)'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import scipy.sparse as sp

from shoprec import atomic
from shoprec.artifact import (
    ITEMS_FILE,
    RETRIEVAL_DIR,
    SEEN_FILE,
    ArtifactError,
    read_manifest,
    seal,
)
from shoprec.errors import ShoprecError
from shoprec.models.two_tower import META_FILE, TwoTower, TwoTowerConfig
from shoprec.recommend.two_tower import (
    ITEM_ENCODER_FILE,
    USER_ENCODER_FILE,
    RetrievalFeatures,
    embed_items,
    embed_users,
    train_two_tower,
)

if TYPE_CHECKING:
    from shoprec.artifact import Artifact

# faiss logs each CPU-feature build it tries at INFO; only its problems are news here.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
try:  # faiss is optional: exact NumPy search gives the same answers on small catalogs
    import faiss
except ImportError:  # pragma: no cover - depends on the environment
    faiss = None

log = logging.getLogger(__name__)

INDEX_FILE = "items.faiss"
#: Catalogs with at least this many items get an inverted-file index (faiss ``IndexIVFFlat``:
#: ``4 sqrt(N)`` k-means lists, a tenth of them probed per query; approximate, recall@100
#: measured by ``benchmarks/serve_latency.py``); smaller ones exact search.
IVF_MIN_ITEMS = 20_000
#: Catalogs with at least this many items get an HNSW graph (faiss ``IndexHNSWFlat``: ``M``
#: links per node, 16 below 1M items and 32 from there, see :func:`hnsw_params`): queries
#: cost ~log(N) instead of the inverted file's N/10 scores, for ``2 M`` int32 links per item.
HNSW_MIN_ITEMS = 200_000
#: Candidates an HNSW search keeps while walking the graph: ``max(HNSW_EF_SEARCH, 2 k)``.
HNSW_EF_SEARCH = 128
#: The index kinds :class:`ItemIndex` builds ("auto": :func:`choose_index_kind`).
INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")
#: Exact searches over at most this many query x item scores are done in NumPy.
NUMPY_MAX_CELLS = 50_000
COOC_FILE = "cooccurrence.parquet"
INFO_FILE = "retrieval.json"
#: Saved new-item indexes are ``new_items-<key>.faiss`` (:func:`subset_index`).
NEW_INDEX_PREFIX = "new_items-"
#: The folder under :func:`cache_root` for new-item indexes of artifacts whose retrieval files
#: are their own (the artifact folder is never written while serving).
NEW_INDEX_CACHE = "new_items"
#: Saved new-item indexes kept per folder; the least recently used others are removed.
NEW_INDEX_KEEP = 3
#: Weight of each behavior in the popularity count (and in session signals).
BEHAVIOR_WEIGHT: dict[str, float] = {
    "impression": 0.0,
    "view": 1.0,
    "click": 1.5,
    "favorite": 2.0,
    "cart": 3.0,
    "buy": 4.0,
    "rate": 2.0,
    "return": 0.0,
}


def choose_index_kind(n_items: int) -> str:
    """The index kind for a catalog of ``n_items``: ``flat`` (exact) below
    :data:`IVF_MIN_ITEMS`, ``ivf`` below :data:`HNSW_MIN_ITEMS`, ``hnsw`` from there.

    Example:
        >>> [choose_index_kind(n) for n in (1_000, 100_000, 1_000_000)]
        ['flat', 'ivf', 'hnsw']
    """
    if n_items < IVF_MIN_ITEMS:
        return "flat"
    return "ivf" if n_items < HNSW_MIN_ITEMS else "hnsw"


def hnsw_params(n_items: int) -> dict[str, int]:
    """HNSW sizes scaled to the catalog: ``M`` (links per node) 16 below 1M items, 32 from
    there (recall holds as the graph grows), ``ef_construction`` 40 / 64, ``ef_search``
    :data:`HNSW_EF_SEARCH` (raised to ``2 k`` per search)."""
    big = n_items >= 1_000_000
    return {
        "M": 32 if big else 16,
        "ef_construction": 64 if big else 40,
        "ef_search": HNSW_EF_SEARCH,
    }


def index_kind(index: object | None) -> str:
    """The kind (:data:`INDEX_KINDS`) of a built faiss index (``flat`` for None: NumPy)."""
    if index is None:
        return "flat"
    if hasattr(index, "hnsw"):
        return "hnsw"
    return "ivf" if hasattr(index, "nprobe") else "flat"


class ItemIndex:
    """Nearest items by inner product over ``(N, D)`` unit vectors.

    Args:
        vectors: ``(N, D)`` item vectors.
        index: an already built faiss index over them (e.g. read from a file).
        use_faiss: False searches exactly in NumPy.
        kind: ``auto`` (by size, :func:`choose_index_kind`), ``flat``, ``ivf`` or ``hnsw``.

    Example:
        >>> idx = ItemIndex(np.eye(3, dtype=np.float32))
        >>> idx.search(np.array([[0.0, 1.0, 0.0]], dtype=np.float32), 1)[1].tolist()
        [[1]]
    """

    def __init__(
        self,
        vectors: np.ndarray,
        index: object | None = None,
        *,
        use_faiss: bool = True,
        kind: str = "auto",
    ) -> None:
        if kind not in INDEX_KINDS:
            raise ShoprecError(f"index kind must be one of {INDEX_KINDS}; got {kind!r}")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = index
        if self.index is None and use_faiss and faiss is not None:
            self.index = _faiss_index(self.vectors, kind)
        elif self.index is not None and hasattr(self.index, "nprobe"):
            self.index.nprobe = _nprobe(self.index.nlist)
        self.kind = index_kind(self.index)
        self.ef_search = hnsw_params(len(self.vectors))["ef_search"]

    @property
    def backend(self) -> str:
        return "faiss" if self.index is not None else "numpy"

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def describe(self) -> str:
        """The index kind in words, e.g. ``faiss IndexFlatIP (exact)``."""
        if self.index is None:
            return "NumPy (exact)"
        name = type(self.index).__name__
        if self.kind == "hnsw":
            m = self.index.hnsw.nb_neighbors(1)  # links per node above level 0
            return f"faiss {name} (M={m}, efSearch max({self.ef_search}, 2k))"
        if hasattr(self.index, "nprobe"):
            return f"faiss {name} ({self.index.nlist} lists, {self.index.nprobe} probed)"
        return f"faiss {name} (exact; NumPy for searches under {NUMPY_MAX_CELLS:,} scores)"

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items per query: scores and indices, each ``(Q, min(k, N))``."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self))
        if k <= 0:
            empty = np.zeros((queries.shape[0], 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        exact = self.kind == "flat"
        if self.kind == "hnsw":  # the search's own efSearch: no shared state to race on
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, 2 * k))
            scores, idx = self.index.search(queries, k, params=params)
            return scores, idx.astype(np.int64)
        if self.index is not None and not (exact and len(queries) * len(self) <= NUMPY_MAX_CELLS):
            scores, idx = self.index.search(queries, k)
            return scores, idx.astype(np.int64)
        # Exact search of a few queries over a small catalog: one product and a partial
        # sort beat faiss's heap when k is large (hundreds of candidates).
        sims = queries @ self.vectors.T  # (Q, N)
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, idx, 1), axis=1, kind="stable")
        idx = np.take_along_axis(idx, order, 1)
        return np.take_along_axis(sims, idx, 1), idx

    def extended(self, vectors: np.ndarray) -> ItemIndex:
        """A new index with ``vectors`` appended as rows ``len(self)...`` (this one is left
        as it is, so searches running on it are not disturbed)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        all_vectors = np.concatenate([self.vectors, vectors])
        if self.index is None:
            return ItemIndex(all_vectors, use_faiss=False)
        index = faiss.clone_index(self.index)
        index.add(vectors)  # an inverted-file index keeps its trained lists, HNSW its graph
        return ItemIndex(all_vectors, index)

    def nbytes(self) -> int:
        """Bytes of the index (its serialised faiss form; the vectors for NumPy)."""
        if self.index is None:
            return int(self.vectors.nbytes)
        return int(faiss.serialize_index(self.index).nbytes)

    def save(self, path: str | Path) -> None:
        """Write the faiss index (nothing without faiss)."""
        if self.index is not None:
            faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | Path, vectors: np.ndarray, kind: str = "auto") -> ItemIndex:
        """The saved faiss index if it matches ``vectors`` (and ``kind``, by size for
        ``auto``), else one built from them."""
        path = Path(path)
        want = choose_index_kind(len(vectors)) if kind == "auto" else kind
        if faiss is not None and path.exists():
            index = faiss.read_index(str(path))
            if (
                index.ntotal == len(vectors)
                and index.d == vectors.shape[1]
                and index_kind(index) == want
            ):
                return cls(vectors, index)
            log.warning("%s does not match the item vectors; rebuilding it", path)
        return cls(vectors, kind=kind)


def _nprobe(nlist: int) -> int:
    return min(nlist, max(16, nlist // 10))


def _faiss_index(vectors: np.ndarray, kind: str = "auto") -> object:
    """Exact inner-product search, an inverted file or an HNSW graph (:func:`choose_index_kind`
    for ``auto``)."""
    n, d = vectors.shape
    kind = choose_index_kind(n) if kind == "auto" else kind
    if kind == "flat" or n == 0:
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        p = hnsw_params(n)
        index = faiss.IndexHNSWFlat(d, p["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p["ef_construction"]
        index.hnsw.efSearch = p["ef_search"]
    else:
        nlist = max(1, min(int(4 * np.sqrt(n)), n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)  # k-means, seeded by faiss (same vectors, same lists)
        index.nprobe = _nprobe(nlist)
    index.add(vectors)
    return index


def subset_key(vectors: np.ndarray, positions: np.ndarray, kind: str) -> str:
    """What an index over some items was built from, as a hex SHA-256: the items' positions,
    their vectors (bytes, in index order), the index kind and sizes and the faiss version."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    what = {
        "format": 1,
        "kind": kind,
        "params": hnsw_params(len(vectors)) if kind == "hnsw" else {},
        "shape": list(vectors.shape),
        "faiss": getattr(faiss, "__version__", None),
    }
    h = hashlib.sha256(json.dumps(what, sort_keys=True).encode())
    h.update(np.ascontiguousarray(positions, dtype=np.int64).tobytes())
    h.update(vectors.tobytes())
    return h.hexdigest()


def subset_index(
    vectors: np.ndarray,
    positions: np.ndarray,
    *,
    folders: Sequence[str | Path] = (),
    save_to: str | Path | None = None,
) -> ItemIndex:
    """An index over the rows ``positions`` of ``vectors`` (index row ``r`` is item
    ``positions[r]``): read from ``new_items-<key>.faiss`` in one of ``folders`` or in
    ``save_to`` when one was built from exactly these rows (:func:`subset_key`), else built
    (kind by size, :func:`choose_index_kind`) and saved into ``save_to``.

    Exact (flat) indexes and NumPy search are always built: copying the vectors is all they
    cost. Building and saving hold a lock file in ``save_to``, so processes starting together
    (``shoprec serve --workers N``) build it once and the others read it. A file that cannot
    be read or written is only a cache: logged, and the index is built.

    Args:
        vectors: ``(N, D)`` item vectors.
        positions: ``(M,)`` the rows to index.
        folders: where to look for a saved index first.
        save_to: where to look last and save a built one (None: not saved).

    Returns:
        The index over ``vectors[positions]``.
    """
    sub = np.ascontiguousarray(vectors[np.asarray(positions, dtype=np.int64)], dtype=np.float32)
    kind = choose_index_kind(len(sub))
    if faiss is None or kind == "flat":
        return ItemIndex(sub)
    key = subset_key(sub, positions, kind)
    name = f"{NEW_INDEX_PREFIX}{key[:32]}.faiss"
    for folder in folders:
        found = _read_subset_index(Path(folder) / name, sub, kind)
        if found is not None:
            return found
    if save_to is None:
        return _build_subset_index(sub, kind)
    save_to = Path(save_to)
    with _file_lock(save_to / f".{name}.lock"):
        found = _read_subset_index(save_to / name, sub, kind)  # built meanwhile by another
        if found is not None:
            return found
        index = _build_subset_index(sub, kind)
        try:
            atomic.write_bytes(save_to / name, faiss.serialize_index(index.index).tobytes())
            _prune_subset_indexes(save_to, keep=name)
            log.info("new-item index saved to %s", save_to / name)
        except OSError as e:
            log.warning("cannot save the new-item index into %s (%s): built each start", save_to, e)
    return index


def _build_subset_index(sub: np.ndarray, kind: str) -> ItemIndex:
    start = time.perf_counter()
    log.info("building a %s index over %d new items (read from a file next time)", kind, len(sub))
    index = ItemIndex(sub, kind=kind)
    log.info("new-item index built in %.1f s: %s", time.perf_counter() - start, index.describe())
    return index


def _read_subset_index(path: Path, sub: np.ndarray, kind: str) -> ItemIndex | None:
    """The saved index at ``path`` if it holds ``sub`` (count, size and kind), else None."""
    if not path.is_file():
        return None
    try:
        index = faiss.read_index(str(path))
    except Exception as e:  # a damaged file: built again
        log.warning("cannot read %s (%s); building it again", path, e)
        return None
    if index.ntotal != len(sub) or index.d != sub.shape[1] or index_kind(index) != kind:
        log.warning("%s does not match the new items; building it again", path)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: kept by _prune_subset_indexes
    log.info("new-item index (%d items) read from %s", len(sub), path)
    return ItemIndex(sub, index)


def _prune_subset_indexes(folder: Path, keep: str) -> None:
    """Remove all but the :data:`NEW_INDEX_KEEP` most recently used saved indexes (never
    ``keep``)."""
    saved = sorted(
        folder.glob(f"{NEW_INDEX_PREFIX}*.faiss"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    old = [p for p in saved if p.name != keep][NEW_INDEX_KEEP - 1 :]
    for path in old:
        path.unlink(missing_ok=True)
        (folder / f".{path.name}.lock").unlink(missing_ok=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created) while the block runs; none where the folder
    cannot be written or the platform has no ``fcntl``."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - closed below, after the block
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # releases the lock


def new_positions(items: pl.DataFrame, seen: pl.DataFrame) -> np.ndarray:
    """Positions of the items without training events (the serving catalog's new items).

    Example:
        >>> new_positions(pl.DataFrame({"item": ["a", "b", "c"]}),
        ...               pl.DataFrame({"item": ["b"]})).tolist()
        [0, 2]
    """
    warm = seen["item"].cast(pl.String).unique()
    return np.flatnonzero(~items["item"].cast(pl.String).is_in(warm.implode()).to_numpy())


def clustered_vectors(
    n: int,
    dim: int,
    *,
    seed: int = 0,
    n_clusters: int = 1000,
    spread: float = 0.6,
    centres_seed: int | None = None,
) -> np.ndarray:
    """Random but clustered unit vectors, like trained item embeddings: ``n_clusters`` unit
    centres (drawn with ``centres_seed``, default ``seed``), each vector a centre plus
    Gaussian noise of norm about ``spread``, normalised. Used to measure approximate indexes.

    Returns:
        ``(n, dim)`` float32.
    """
    centres = np.random.default_rng(seed if centres_seed is None else centres_seed)
    c = centres.standard_normal((n_clusters, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    rng = np.random.default_rng(seed + 1_000_003)
    x = c[rng.integers(0, n_clusters, n)]
    x += rng.standard_normal((n, dim), dtype=np.float32) * np.float32(spread / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of ``|found_q & truth_q| / |truth_q|`` (rows of item indices;
    ``-1`` in ``found``, faiss's "no result", never matches).

    Example:
        >>> recall_at_k(np.array([[1, 9]]), np.array([[1, 2]]))
        0.5
    """
    found, truth = np.asarray(found, np.int64), np.asarray(truth, np.int64)
    if not truth.size:
        return 1.0
    n = max(int(truth.max()), int(found.max(initial=0))) + 1
    rows = np.arange(truth.shape[0], dtype=np.int64)[:, None] * n  # (query, item) as one key
    keys = (found + rows)[found >= 0]
    return float(np.isin(truth + rows, keys).mean())


@dataclass
class CoOccurrence:
    """Top item-to-item neighbours in CSR form over item positions (rows of the item table).

    Attributes:
        indptr: ``(N + 1,)`` row starts.
        indices: neighbour positions, best first within a row.
        scores: cosine co-occurrence of each neighbour, in ``(0, 1]``.
    """

    indptr: np.ndarray
    indices: np.ndarray
    scores: np.ndarray

    @classmethod
    def fit(
        cls,
        seen: pl.DataFrame,
        items: pl.Series,
        n_neighbors: int = 50,
        max_items_per_user: int = 500,
    ) -> CoOccurrence:
        """Count co-occurrences of items in users' training events.

        Args:
            seen: ``user, item, behavior`` rows (returns and impressions are ignored).
            items: the item ids, in position order.
            n_neighbors: neighbours kept per item.
            max_items_per_user: users with more items are cut to this many (bounds the cost,
                which grows with the square of a user's item count).
        """
        pos = pl.DataFrame({"item": items, "pos": np.arange(len(items))})
        pairs = (
            seen.filter(~pl.col("behavior").is_in(["return", "impression"]))
            .select("user", "item")
            .unique()
            .join(pos, on="item", how="inner")
            .sort("user", "pos")
            .filter(pl.int_range(pl.len()).over("user") < max_items_per_user)
        )
        users = pairs["user"].unique(maintain_order=True)
        rows = pairs["user"].replace_strict(users, range(len(users)), return_dtype=pl.Int64)
        x = sp.csr_matrix(
            (np.ones(pairs.height, np.float32), (rows.to_numpy(), pairs["pos"].to_numpy())),
            shape=(len(users), len(items)),
        )
        counts = np.asarray(x.sum(axis=0)).ravel()  # (N,) users per item
        c = (x.T @ x).tocoo()  # (N, N) co-occurrence counts
        keep = c.row != c.col
        i, j, n = c.row[keep], c.col[keep], c.data[keep]
        score = n / np.sqrt(counts[i] * counts[j])
        table = (
            pl.DataFrame({"i": i.astype(np.int64), "j": j.astype(np.int64), "s": score})
            .sort(["i", "s", "j"], descending=[False, True, False])
            .filter(pl.int_range(pl.len()).over("i") < n_neighbors)
        )
        return cls._from_table(table, len(items))

    @classmethod
    def _from_table(cls, table: pl.DataFrame, n_items: int) -> CoOccurrence:
        rows = table["i"].to_numpy()
        indptr = np.zeros(n_items + 1, np.int64)
        np.add.at(indptr, rows + 1, 1)
        return cls(np.cumsum(indptr), table["j"].to_numpy().astype(np.int64), table["s"].to_numpy())

    def to_frame(self, items: pl.Series) -> pl.DataFrame:
        """``item, neighbor, score`` rows (ids, not positions)."""
        counts = np.diff(self.indptr)
        ids = items.to_numpy()
        return pl.DataFrame(
            {
                "item": ids[np.repeat(np.arange(len(counts)), counts)],
                "neighbor": ids[self.indices],
                "score": self.scores,
            },
            schema={"item": pl.String, "neighbor": pl.String, "score": pl.Float64},
        )

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, items: pl.Series) -> CoOccurrence:
        """Inverse of :meth:`to_frame`; rows naming unknown items are dropped."""
        pos = pl.DataFrame({"item": items, "i": np.arange(len(items), dtype=np.int64)})
        table = (
            frame.join(pos, on="item", how="inner")
            .join(pos.rename({"item": "neighbor", "i": "j"}), on="neighbor", how="inner")
            .select("i", "j", pl.col("score").alias("s"))
            .sort(["i", "s", "j"], descending=[False, True, False])
        )
        return cls._from_table(table, len(items))

    def extended(self, n_new: int) -> CoOccurrence:
        """The same neighbours over ``n_new`` more items (which have none yet)."""
        indptr = np.concatenate([self.indptr, np.full(n_new, self.indptr[-1], np.int64)])
        return CoOccurrence(indptr, self.indices, self.scores)

    def neighbours(
        self, seeds: np.ndarray, weights: np.ndarray | None = None, k: int = 100
    ) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours of the ``seeds`` (positions), scores summed over seeds (times their
        ``weights``), best ``k`` first; the seeds themselves are left out."""
        seeds = np.asarray(seeds, dtype=np.int64)
        if seeds.size == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        w = np.ones(len(seeds)) if weights is None else np.asarray(weights, float)
        starts, stops = self.indptr[seeds], self.indptr[seeds + 1]
        lengths = stops - starts
        flat = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        idx = self.indices[flat]
        # Sums per neighbour over the few rows read (not over the whole catalog).
        found, inv = np.unique(idx, return_inverse=True)
        total = np.bincount(inv, self.scores[flat] * np.repeat(w, lengths), len(found))
        keep = total > 0
        keep[found_in_sorted(found, seeds)] = False  # the seeds themselves
        found, total = found[keep], total[keep]
        top = np.argsort(-total, kind="stable")[:k]
        return found[top], total[top]


def found_in_sorted(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Indices into ``sorted_values`` (sorted, distinct) of those of ``values`` it holds.

    Example:
        >>> found_in_sorted(np.array([2, 5, 9]), np.array([9, 1, 5])).tolist()
        [2, 1]
    """
    idx = np.searchsorted(sorted_values, values)
    inside = idx < len(sorted_values)
    idx, values = idx[inside], values[inside]
    return idx[sorted_values[idx] == values]


def centred(vectors: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors after removing the mean vector (``vectors``' own, or ``mean``).

    Two-tower item vectors share a large common direction (cosines of unrelated items are
    often above 0.5); without it, item-to-item cosines spread over [-1, 1] and tell related
    items from unrelated ones more clearly.
    """
    c = vectors - (vectors.mean(axis=0, keepdims=True) if mean is None else mean)
    return (c / np.clip(np.linalg.norm(c, axis=1, keepdims=True), 1e-9, None)).astype(np.float32)


def popularity(seen: pl.DataFrame, items: pl.Series) -> np.ndarray:
    """``(N,)`` behavior-weighted event counts per item position (see :data:`BEHAVIOR_WEIGHT`)."""
    weights = pl.DataFrame({"behavior": list(BEHAVIOR_WEIGHT), "w": list(BEHAVIOR_WEIGHT.values())})
    counts = (
        seen.join(weights, on="behavior", how="left")
        .group_by("item")
        .agg(pl.col("w").fill_null(1.0).sum())
    )
    return (
        pl.DataFrame({"item": items})
        .join(counts, on="item", how="left", maintain_order="left")["w"]
        .fill_null(0.0)
        .to_numpy()
    )


def retrieval_dir(directory: str | Path) -> Path:
    """Where an artifact keeps its retrieval files."""
    return Path(directory) / RETRIEVAL_DIR


def build_retrieval(
    directory: str | Path,
    config: TwoTowerConfig | None = None,
    *,
    n_neighbors: int = 50,
    out: str | Path | None = None,
    progress: bool = False,
) -> Path:
    """Train the two-tower model and write the retrieval files into ``ARTIFACT/retrieval/``
    (added to the artifact's manifest), or into the folder ``out`` (a cache elsewhere; the
    artifact is then only read).

    Reads only the artifact's ``items.parquet`` and ``seen.parquet``: any recipe's artifact.
    The files are written into a temporary folder, synced and swapped in, so a service
    loading the artifact meanwhile sees the old files or the new ones, never half of them.
    Each step is logged (``retrieval 1/4: ...``) with its time; the new-item index
    (:func:`subset_index`) is built here too, so serving reads it.

    Args:
        directory: an artifact folder written by ``shoprec train``.
        config: the two-tower model's sizes and training knobs.
        n_neighbors: co-occurrence neighbours kept per item.
        out: where to write the retrieval folder instead of into the artifact.
        progress: show the two-tower training's progress bar (on stderr).

    Returns:
        The artifact folder.

    Raises:
        ArtifactError: the folder is not an artifact, or is damaged.
    """
    directory = Path(directory)
    read_manifest(directory)
    start = time.perf_counter()
    items = pl.read_parquet(directory / ITEMS_FILE)
    seen = pl.read_parquet(directory / SEEN_FILE).select("user", "item", "behavior")
    final = retrieval_dir(directory) if out is None else Path(out)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    c = config or TwoTowerConfig()
    step = _steps(4, f"{items.height:,} items, {seen.height:,} events")
    step(f"two-tower model ({c.epochs} epochs)")
    features = RetrievalFeatures.fit(items, seen)
    features.save(tmp)
    model = train_two_tower(features, items, seen, c, progress=progress)
    model.save(tmp)
    step(f"item vectors and the {choose_index_kind(items.height)} index of every item")
    vectors = embed_items(model, features, items)
    ItemIndex(vectors).save(tmp / INDEX_FILE)
    new = new_positions(items, seen)
    step(f"the index of the {len(new):,} new items (no training events)")
    subset_index(vectors, new, save_to=tmp)
    for lock in tmp.glob(".*.lock"):
        lock.unlink()
    step(f"co-occurrence neighbours ({n_neighbors} per item)")
    CoOccurrence.fit(seen, items["item"], n_neighbors).to_frame(items["item"]).write_parquet(
        tmp / COOC_FILE
    )
    info = {
        "format": "shoprec.retrieval",
        "version": 1,
        "items": items.height,
        "users": seen["user"].n_unique(),
        "events": seen.height,
        "seconds": round(time.perf_counter() - start, 3),
    }
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    atomic.replace_dir(tmp, final)
    if out is None:
        seal(directory, RETRIEVAL_DIR)  # the manifest now vouches for them too
    log.info("retrieval files written to %s in %.1f s", final, time.perf_counter() - start)
    return directory


def _steps(total: int, what: str) -> Callable[[str], None]:
    """A logger of numbered steps: ``retrieval 2/4: LABEL (12 s so far)``."""
    start, n = time.perf_counter(), [0]
    log.info("retrieval files: %s", what)

    def step(label: str) -> None:
        n[0] += 1
        log.info("retrieval %d/%d: %s (%.0f s so far)", n[0], total, label,
                 time.perf_counter() - start)  # fmt: skip

    return step


def has_retrieval(directory: str | Path, folder: str | Path | None = None) -> bool:
    """Whether :func:`build_retrieval` has run on the artifact folder (or written
    ``folder``)."""
    d = retrieval_dir(directory) if folder is None else Path(folder)
    return all(
        (d / name).exists()
        for name in (INFO_FILE, META_FILE, USER_ENCODER_FILE, ITEM_ENCODER_FILE, COOC_FILE)
    )


def missing_retrieval_message(directory: str | Path) -> str:
    """What a user is told when an artifact has no retrieval files."""
    return (
        f"{directory} has no retrieval files (trained with --no-retrieval or "
        "serve.build_retrieval: false, or by an older shoprec): serving needs a two-tower "
        "model, item index and co-occurrences, which take minutes to build on a large shop; "
        "`shoprec train` builds them into the artifact, `shoprec serve --rebuild` or "
        "shoprec.recommend.build_retrieval(ARTIFACT) into an existing one"
    )


def cache_root() -> Path:
    """Where retrieval files built for serving go when the artifact has none:
    ``$SHOPREC_CACHE``, else ``$XDG_CACHE_HOME/shoprec``, else ``~/.cache/shoprec``."""
    if os.environ.get("SHOPREC_CACHE"):
        return Path(os.environ["SHOPREC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "shoprec"


def cache_folder(art: Artifact, two_tower: TwoTowerConfig | None = None) -> Path:
    """The cache folder of an artifact's retrieval files: named by what they are built from
    (the SHA-256 of its item table and training events, the two-tower settings and the
    shoprec version), so a changed artifact never meets stale files."""
    import hashlib

    import shoprec

    files = art.manifest.get("files", {})
    what = {
        "items": files.get(ITEMS_FILE),
        "seen": files.get(SEEN_FILE),
        "two_tower": repr(two_tower),
        "version": shoprec.__version__,
    }
    if what["items"] is None or what["seen"] is None:  # not checked: the files themselves
        from shoprec.artifact import file_entries

        entries = file_entries(art.directory)
        what["items"], what["seen"] = entries.get(ITEMS_FILE), entries.get(SEEN_FILE)
    key = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
    return cache_root() / "retrieval" / key[:32]


@dataclass
class Retrieval:
    """The loaded candidate sources of an artifact (see the module docstring).

    Attributes:
        two_tower: the retrieval model.
        features: its encoders.
        item_vectors: ``(N, D)`` unit vectors, item-table order.
        similarity_vectors: ``(N, D)`` centred unit vectors for item-to-item cosines.
        centre: ``(D,)`` the mean item vector they are centred on.
        index: nearest-item search over ``item_vectors``.
        cooccurrence: item-to-item neighbours.
        popularity: ``(N,)`` behavior-weighted event counts.
        folder: the folder the files were read from (saved new-item indexes are looked for
            there).
        cache: where a new-item index built while serving is saved (None: not saved).
    """

    two_tower: TwoTower
    features: RetrievalFeatures
    item_vectors: np.ndarray
    similarity_vectors: np.ndarray
    centre: np.ndarray
    index: ItemIndex
    cooccurrence: CoOccurrence
    popularity: np.ndarray
    folder: Path | None = None
    cache: Path | None = None

    @classmethod
    def load(
        cls,
        directory: str | Path,
        items: pl.DataFrame | None = None,
        seen: pl.DataFrame | None = None,
        *,
        folder: str | Path | None = None,
        index_kind: str = "auto",
    ) -> Retrieval:
        """Load what :func:`build_retrieval` wrote into an artifact folder.

        Args:
            directory: the artifact folder.
            items: its item table (read from ``items.parquet`` when None).
            seen: its training events (read from ``seen.parquet`` when None).
            folder: the retrieval files' folder (default: ``ARTIFACT/retrieval``).
            index_kind: the item index (:data:`INDEX_KINDS`; ``auto``: by catalog size). A
                saved index of another kind is not used: one of this kind is built.

        New-item indexes built while serving (:meth:`new_item_index`) are saved into
        ``folder`` when it is not the artifact's own, else under :func:`cache_root`.
        """
        directory = Path(directory)
        own = retrieval_dir(directory)
        d = own if folder is None else Path(folder)
        cache = cache_root() / NEW_INDEX_CACHE if d.resolve() == own.resolve() else d
        items = pl.read_parquet(directory / ITEMS_FILE) if items is None else items
        seen = pl.read_parquet(directory / SEEN_FILE) if seen is None else seen
        model = TwoTower.load(d)
        features = RetrievalFeatures.load(d)
        vectors = embed_items(model, features, items)
        centre = (
            vectors.mean(axis=0, keepdims=True)
            if len(vectors)
            else np.zeros((1, model.config.dim), np.float32)
        )
        ids = items["item"]
        return cls(
            two_tower=model,
            features=features,
            item_vectors=vectors,
            similarity_vectors=centred(vectors, centre),
            centre=centre,
            index=ItemIndex.load(d / INDEX_FILE, vectors, kind=index_kind),
            cooccurrence=CoOccurrence.from_frame(pl.read_parquet(d / COOC_FILE), ids),
            popularity=popularity(seen, ids),
            folder=d,
            cache=cache,
        )

    @classmethod
    def of_artifact(
        cls,
        art: Artifact,
        *,
        build: bool = True,
        two_tower: TwoTowerConfig | None = None,
        index_kind: str = "auto",
    ) -> Retrieval:
        """The retrieval of a loaded artifact: its own files where its manifest lists them
        (checked when it was loaded), else those in the cache folder
        (:func:`cache_folder`), built there first (with ``two_tower``) if missing and
        ``build`` is true. The artifact folder itself is never written. ``index_kind`` as
        in :meth:`load`."""
        listed = any(k.startswith(f"{RETRIEVAL_DIR}/") for k in art.manifest.get("files", {}))
        if listed:
            folder = retrieval_dir(art.directory)
        else:
            folder = cache_folder(art, two_tower)
            if not has_retrieval(art.directory, folder):
                if not build:
                    raise ShoprecError(missing_retrieval_message(art.directory))
                log.warning(
                    "%s; building them now into the cache folder %s (later starts read them)",
                    missing_retrieval_message(art.directory),
                    folder,
                )
                build_retrieval(art.directory, two_tower, out=folder)
        try:
            return cls.load(
                art.directory, art.items, art.seen, folder=folder, index_kind=index_kind
            )
        except Exception as e:
            if listed:
                raise ArtifactError(
                    f"cannot load the retrieval files in {folder}: {type(e).__name__}: {e}"
                ) from e
            # a damaged cache is only a cache: built again
            log.warning("retrieval cache %s is unreadable (%s); building it again", folder, e)
            shutil.rmtree(folder, ignore_errors=True)
            build_retrieval(art.directory, two_tower, out=folder)
            return cls.load(
                art.directory, art.items, art.seen, folder=folder, index_kind=index_kind
            )

    @staticmethod
    def pending(art: Artifact, two_tower: TwoTowerConfig | None = None) -> Path | None:
        """The cache folder :meth:`of_artifact` would build the retrieval files into (a
        two-tower fit: minutes on a large shop), or None when they exist already."""
        if any(k.startswith(f"{RETRIEVAL_DIR}/") for k in art.manifest.get("files", {})):
            return None
        folder = cache_folder(art, two_tower)
        return None if has_retrieval(art.directory, folder) else folder

    def new_item_index(self, positions: np.ndarray) -> ItemIndex:
        """The index over the items at ``positions`` (row ``r`` is ``positions[r]``): read
        from a saved one built from the same vectors and positions (in :attr:`folder` or
        :attr:`cache`), else built and saved into :attr:`cache` (:func:`subset_index`)."""
        folders = [f for f in (self.folder, self.cache) if f is not None]
        return subset_index(self.item_vectors, positions, folders=folders, save_to=self.cache)

    def user_vectors(self, users: list[str]) -> np.ndarray:
        """``(U, D)`` user-tower vectors (an unknown user gets the OOV user's)."""
        return embed_users(self.two_tower, self.features, users)

    def add_items(self, items: pl.DataFrame, *, publish: bool = True) -> ItemIndex:
        """Append new rows (item table columns) to every source: vectors from their
        attributes, a new index with them, no co-occurrences and no popularity yet.

        Each attribute is replaced by a new array in one assignment, so a request that runs
        meanwhile reads the old rows or the new ones, never a half-written array; the index
        is swapped last, so a new position is proposed only once every array has its row.
        With ``publish=False`` the extended index is returned and not swapped in: the
        caller assigns it to :attr:`index` once its own tables have the new rows.
        """
        vectors = embed_items(self.two_tower, self.features, items)
        index = self.index.extended(vectors)
        self.item_vectors = np.concatenate([self.item_vectors, vectors])
        self.similarity_vectors = np.concatenate(
            [self.similarity_vectors, centred(vectors, self.centre)]
        )
        self.cooccurrence = self.cooccurrence.extended(items.height)
        self.popularity = np.concatenate([self.popularity, np.zeros(items.height)])
        if publish:  # last: the new rows become candidates once all else has them
            self.index = index
        return index
