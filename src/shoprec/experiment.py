"""The front door's steps: config -> data -> split -> recipe -> evaluation -> artifact.

``shoprec train CONFIG``, ``shoprec evaluate ARTIFACT``, the benchmarks' "ours" rows and a
notebook all run these functions::

    cfg = load_config("configs/sim_mmoe.yaml")
    path = train_experiment(cfg, retrieval=True)  # writes the artifact, test read once
                                                  # (+ retrieval files, as shoprec train)
    result = evaluate_artifact(path)              # the same protocol, again, from the folder

One resolver turns ``data:`` into a :class:`~shoprec.data.schema.Dataset` (built-in names,
the simulated shop, a folder, a data YAML, the shop's own files, public release layouts);
one function makes every split kind; the recipe does the rest; the evaluation ranks the
scorer's items for each test user (full ranking, or one positive among N sampled negatives)
and reports overall and per slice with bootstrap intervals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from shoprec import artifact as artifacts
from shoprec import recipes
from shoprec.artifact import Artifact
from shoprec.config import (
    ColdItemSplit,
    ColdUserSplit,
    ConfigError,
    DataSection,
    EvaluateSection,
    ExperimentConfig,
    GivenSplit,
    LeaveLastOutSplit,
    RandomSplit,
    TimeSplit,
    load_config,
)
from shoprec.data.schema import Dataset, Interactions, TabularDataset
from shoprec.data.split import (
    Split,
    check_no_leakage,
    cold_item_split,
    cold_user_split,
    given_split,
    leave_last_out,
    random_split,
    time_split,
)
from shoprec.errors import DataError
from shoprec.evaluate.metrics import Sparse, csr_from_pairs

if TYPE_CHECKING:
    from shoprec.recipes.base import Scorer, TrainingRun

log = logging.getLogger(__name__)

__all__ = [
    "Artifact",
    "Evaluation",
    "ExperimentConfig",
    "build_serving_files",
    "evaluate_artifact",
    "evaluate_scorer",
    "load_config",
    "load_dataset",
    "make_split",
    "train_experiment",
]


# ---------------------------------------------------------------------------------- data


def load_dataset(data: DataSection, *, tabular: bool = False) -> Dataset | TabularDataset:
    """The dataset a config's ``data:`` section names (the one resolver).

    Raises:
        DataError: an unknown name, a missing file, a tabular dataset (census: use the
            census benchmark), or a file problem (named with its row).
    """
    from shoprec.data import datasets
    from shoprec.data.datasets.custom import FileSpec, load_files, load_folder
    from shoprec.data.datasets.custom import load_config as load_data_yaml

    if data.release is not None:
        from shoprec.data.datasets.releases import load_release

        ds = load_release(dict(data.release), on_bad_rows=data.on_bad_rows)
    elif data.events is not None:

        def spec(f: Any) -> FileSpec | None:
            if f is None:
                return None
            return FileSpec(
                f.path,
                columns=f.columns,
                behaviors=f.behaviors,
                default_behavior=f.default_behavior,
                timestamp_format=f.timestamp_format,
                separator=f.separator,
                drop_unmapped=f.drop_unmapped,
            )

        ds = load_files(
            spec(data.events),
            catalog=spec(data.catalog),
            users=spec(data.users),
            on_bad_rows=data.on_bad_rows,
        )
    else:
        name = str(data.dataset)
        if name == "simulated":
            from shoprec.data.simulate import simulate_shop

            sim = data.simulate.model_dump(exclude_none=True) if data.simulate else {}
            ds = simulate_shop(**sim).dataset
        elif name in datasets.names():
            ds = datasets.load(name, **{"on_bad_rows": data.on_bad_rows, **data.options})
        elif Path(name).is_dir():
            ds = load_folder(name, data.on_bad_rows)
        elif Path(name).suffix in {".yaml", ".yml"} and Path(name).exists():
            given = "on_bad_rows" in data.model_fields_set  # else the YAML's own key
            ds = load_data_yaml(name, data.on_bad_rows if given else None)
        elif Path(name).suffix:
            raise DataError(
                f"data.dataset '{name}' is not a file that exists; to train on your own "
                "events file, write data: {events: {path: ..., columns: {...}}}",
            )
        else:
            raise DataError(
                f"unknown dataset '{name}'; built in: {', '.join(datasets.names())}, "
                "simulated; or give data: {events: {path: your.csv}}"
            )
    if isinstance(ds, TabularDataset):
        if tabular:
            return ds
        raise DataError(
            f"'{ds.name}' is tabular (one row per impression with labels), not events; "
            "train it with recipe: {name: tabular}"
        )
    if data.hash_user_ids:  # before anything is built from the data: no raw id gets further
        from shoprec.data.schema import hash_user_ids, user_id_salt

        ds = hash_user_ids(ds, user_id_salt(data.user_id_salt_env))
    if data.behaviors:
        keep = list(data.behaviors)

        def only(part: Interactions | None) -> Interactions | None:
            return (
                None
                if part is None
                else Interactions(part.df.filter(pl.col("behavior").is_in(keep)))
            )

        ds.interactions = only(ds.interactions)  # type: ignore[assignment]
        ds.test, ds.valid = only(ds.test), only(ds.valid)
    return ds


# --------------------------------------------------------------------------------- split


def _hold_out_target(
    train: Interactions, behavior: str, seed: int
) -> tuple[Interactions, Interactions]:
    """One seeded distinct ``behavior`` item per user with at least two of them, moved out
    of ``train`` (all its ``behavior`` events) into a validation part."""
    df = train.df.with_row_index("__row")
    pairs = (
        df.filter(pl.col("behavior") == behavior)
        .select("user", "item")
        .unique()
        .sort("user", "item")
    )
    rng = np.random.default_rng(seed)
    pairs = pairs.with_columns(pl.Series("__u", rng.random(pairs.height)))
    pairs = pairs.with_columns(pl.len().over("user").alias("__n"))
    held = (
        pairs.filter(pl.col("__n") >= 2)
        .sort("__u")
        .unique("user", keep="first")
        .select("user", "item")
    )
    is_held = df.join(held, on=["user", "item"], how="semi").filter(pl.col("behavior") == behavior)[
        "__row"
    ]
    mask = df["__row"].is_in(is_held.implode())
    valid = df.filter(mask).drop("__row")
    rest = df.filter(~mask).drop("__row")
    return Interactions(rest), Interactions(valid)


def _random_per_user(inter: Interactions, cfg: RandomSplit) -> Split:
    fr = list(cfg.fractions)
    if len(fr) == 2:
        fr = [fr[0], 0.0, fr[1]]
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1) > 1e-9:
        raise DataError(f"split.fractions must be 2 or 3 numbers summing to 1; got {cfg.fractions}")
    df = inter.df.with_row_index("__row")
    rng = np.random.default_rng(cfg.seed)
    eligible = pl.lit(True) if cfg.behavior is None else pl.col("behavior") == cfg.behavior
    df = df.with_columns(pl.Series("__u", rng.random(df.height)), eligible.alias("__e"))
    df = df.with_columns(
        (pl.col("__u").rank("ordinal").over(["user", "__e"]) - 1).alias("__r"),
        pl.len().over(["user", "__e"]).alias("__n"),
    )
    n_test = (pl.col("__n") * fr[2]).ceil()
    n_valid = (pl.col("__n") * fr[1]).ceil()
    part = (
        pl.when(~pl.col("__e") | (pl.col("__n") < 2))
        .then(pl.lit("train"))
        .when(pl.col("__r") < n_test)
        .then(pl.lit("test"))
        .when((pl.col("__r") < n_test + n_valid) & (pl.col("__n") >= 3))
        .then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    df = df.with_columns(part.alias("__p"))
    drop = ["__row", "__u", "__e", "__r", "__n", "__p"]

    def part_of(name: str) -> pl.DataFrame:
        return df.filter(pl.col("__p") == name).sort("__row").drop(drop)

    valid = part_of("valid")
    return Split(
        Interactions(part_of("train")),
        Interactions(valid) if valid.height else None,
        Interactions(part_of("test")),
        kind="random",
    )


def make_split(ds: Dataset, spec: Any, target: str = "buy") -> Split:
    """The split a config's ``split:`` section names, checked for leakage.

    Args:
        ds: the dataset.
        spec: one of the split sections of :mod:`shoprec.config`.
        target: the target behavior (the validation hold-out of a ``given`` split).
    """
    inter = ds.interactions
    ts = inter.df["timestamp"]
    if isinstance(spec, TimeSplit) and ts.null_count() == len(ts):
        raise DataError(
            "this data has no timestamps, so a time split cannot apply; use "
            "split: {kind: random} (seeded), {kind: given} (the release's own test "
            "files) or {kind: leave_last_out} (the last events in file order)"
        )
    if isinstance(spec, TimeSplit):
        values = spec.model_dump(exclude={"kind"}, exclude_none=True)
        split = time_split(inter, **values)
    elif isinstance(spec, LeaveLastOutSplit):
        split = leave_last_out(inter, **spec.model_dump(exclude={"kind"}))
    elif isinstance(spec, GivenSplit):
        split = given_split(ds)
        if split.valid is None and spec.valid_hold_out:
            train, valid = _hold_out_target(split.train, target, spec.seed)
            if valid.df.height:
                split = Split(train, valid, split.test, kind="given")
    elif isinstance(spec, RandomSplit):
        if spec.per_user:
            split = _random_per_user(inter, spec)
        else:
            split = random_split(inter, spec.fractions, seed=spec.seed)
    elif isinstance(spec, ColdItemSplit):
        split = cold_item_split(inter, **spec.model_dump(exclude={"kind"}))
    elif isinstance(spec, ColdUserSplit):
        split = cold_user_split(inter, **spec.model_dump(exclude={"kind"}))
    else:  # pragma: no cover - the schema allows nothing else
        raise ConfigError(f"unknown split {spec!r}")
    check_no_leakage(split)
    return split


# ---------------------------------------------------------------------------- evaluation


@dataclass
class RankingSpec:
    """Who is evaluated and what counts: rows of ``users``, columns = the scorer's items."""

    users: list[str]
    relevant: Sparse
    exclude: Sparse | None
    unknown_relevant: int  # relevant (user, item) pairs whose item the scorer cannot rank
    user_has_history: np.ndarray  # (U,) the user has training events
    item_is_warm: np.ndarray  # (I,) the item has training events
    pairs: pl.DataFrame  # user, item, row, col, domain of the relevant test pairs

    def sample_rows(self, max_users: int | None, seed: int = 0) -> np.ndarray:
        """Rows of a seeded sample of at most ``max_users`` users (all rows if None), sorted:
        every evaluation of the same artifact and seed takes the same users."""
        rows = np.arange(len(self.users))
        if max_users is not None and len(rows) > max_users:
            rows = np.sort(np.random.default_rng(seed).choice(len(rows), max_users, False))
        return rows

    def take(self, rows: np.ndarray) -> RankingSpec:
        """The same spec for the users at ``rows`` only."""
        if len(rows) == len(self.users):
            return self

        from shoprec.evaluate.protocols import take_rows

        def take(csr: Sparse | None) -> Sparse | None:
            return None if csr is None else take_rows(csr, rows)

        new_row = np.full(len(self.users), -1)
        new_row[rows] = np.arange(len(rows))
        pairs = self.pairs.with_columns(pl.Series("row", new_row[self.pairs["row"].to_numpy()]))
        return RankingSpec(
            users=[self.users[r] for r in rows],
            relevant=take(self.relevant),  # type: ignore[arg-type]
            exclude=take(self.exclude),
            unknown_relevant=self.unknown_relevant,
            user_has_history=self.user_has_history[rows],
            item_is_warm=self.item_is_warm,
            pairs=pairs.filter(pl.col("row") >= 0),
        )


def ranking_spec(
    part: Interactions,
    train: Interactions,
    items: Sequence[str],
    target: str,
    exclude: Sequence[str] | None,
) -> RankingSpec:
    """Evaluated users (those with a ``target`` event in ``part``), their relevant items
    (CSR over ``items``) and the training items excluded from their ranking.

    Items outside ``items`` (e.g. only in a release's test file) cannot be ranked: they are
    counted in ``unknown_relevant`` and their users score them as misses.
    """
    events = part.df.filter(pl.col("behavior") == target)
    if events.height == 0:
        raise DataError(
            f"the evaluated part has no '{target}' events (behaviors there: "
            f"{sorted(part.df['behavior'].unique().to_list())}); set evaluate.target"
        )
    item_frame = pl.DataFrame({"item": list(items), "col": np.arange(len(items))})
    pairs = events.group_by("user", "item").agg(pl.col("domain").first()).sort("user", "item")
    users = sorted(pairs["user"].unique().to_list())
    pairs = pairs.join(pl.DataFrame({"user": users, "row": np.arange(len(users))}), on="user").join(
        item_frame, on="item", how="left"
    )
    known = pairs.filter(pl.col("col").is_not_null())
    relevant = csr_from_pairs(
        known["row"].to_numpy(), known["col"].to_numpy(), len(users), len(items)
    )
    excl = None
    if exclude is None:
        exclude = [target]
    if exclude:
        seen = (
            train.df.filter(pl.col("behavior").is_in(list(exclude)))
            .select("user", "item")
            .unique()
            .join(pl.DataFrame({"user": users, "row": np.arange(len(users))}), on="user")
            .join(item_frame, on="item")
        )
        excl = csr_from_pairs(
            seen["row"].to_numpy(), seen["col"].to_numpy(), len(users), len(items)
        )
    warm_items = item_frame.join(train.df.select("item").unique(), on="item", how="semi")[
        "col"
    ].to_numpy()
    item_is_warm = np.zeros(len(items), dtype=bool)
    item_is_warm[warm_items] = True
    return RankingSpec(
        users=users,
        relevant=relevant,
        exclude=excl,
        unknown_relevant=int(pairs["col"].null_count()),
        user_has_history=pl.Series(users, dtype=pl.String)
        .is_in(train.df["user"].unique().implode())
        .to_numpy(),
        item_is_warm=item_is_warm,
        pairs=pairs,
    )


@dataclass
class Evaluation:
    """What an evaluation measured (JSON-able through :meth:`to_dict`)."""

    protocol: str
    target: str
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    slices: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    served: dict[str, Any] = field(default_factory=dict)
    pointwise: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    exposure: dict[str, Any] = field(default_factory=dict)  # fairness.exposure_summary
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> same keys

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "target": self.target,
            "metrics": self.metrics,
            "ci": {k: list(v) for k, v in self.ci.items()},
            "slices": self.slices,
            "counts": self.counts,
            "served": self.served,
            "pointwise": self.pointwise,
            "seconds": self.seconds,
            "exposure": self.exposure,
            "baselines": self.baselines,
        }


def item_popularity(events: Interactions, items: Sequence[str]) -> np.ndarray:
    """``(I,)`` float64 events per item of ``items`` in ``events`` (0 for items without any)."""
    counts = events.df.group_by("item").len()
    return (
        pl.DataFrame({"item": list(items)}, schema={"item": pl.String})
        .join(counts, on="item", how="left", maintain_order="left")["len"]
        .fill_null(0)
        .to_numpy()
        .astype(np.float64)
    )


def item_groups(
    table: pl.DataFrame | None, items: Sequence[str], column: str | None = None
) -> tuple[np.ndarray, list[str], str] | None:
    """Group code of every item of ``items`` by a catalog column, for exposure by group.

    Args:
        table: the item table (``item`` plus attribute columns), or None.
        items: the scorer's items (the order of the codes).
        column: the column (``evaluate.group``); default ``category`` where the table has it.

    Returns:
        ``(codes (I,), names, column)`` with code ``-1`` for items without a value, or None
        when there is no table or no default column.

    Raises:
        DataError: ``column`` is not a column of the table.
    """
    if table is None:
        return None
    col = column or ("category" if "category" in table.columns else None)
    if col is None:
        return None
    if col not in table.columns or col == "item":
        raise DataError(
            f"evaluate.group '{col}' is not a column of the item table; columns: "
            f"{[c for c in table.columns if c != 'item']}"
        )
    values = pl.DataFrame({"item": list(items)}, schema={"item": pl.String}).join(
        table.select(pl.col("item").cast(pl.String), pl.col(col).cast(pl.String)).unique(
            "item", keep="first"
        ),
        on="item",
        how="left",
        maintain_order="left",
    )[col]
    names = sorted(values.drop_nulls().unique().to_list())
    if not names:  # the column is there but empty: no groups to report
        return None
    codes = (
        values.to_frame("v")
        .join(
            pl.DataFrame(
                {"v": names, "c": np.arange(len(names))}, schema_overrides={"v": pl.String}
            ),
            on="v",
            how="left",
            maintain_order="left",
        )
        .select(pl.col("c").fill_null(-1))
    )
    return codes["c"].to_numpy().astype(np.int64), names, col


def _score_fn(scorer: Scorer, users: Sequence[str]) -> Any:
    def score(rows: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(scorer.rank_scores([users[i] for i in rows], positions), np.float64)

    return score


def _cached(score: Any, n_entries: int, budget: int = 2**24) -> Any:
    """``score`` with each whole-catalog chunk of users kept after its first call (when the
    whole matrix has at most ``budget`` entries): the protocols ask for the same contiguous
    chunks again for every slice that reruns them, and scoring is the expensive part."""
    if n_entries > budget:
        return score
    cache: dict[tuple[int, int], np.ndarray] = {}

    def cached(rows: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        rows = np.asarray(rows)
        contiguous = len(rows) > 0 and int(rows[-1]) - int(rows[0]) + 1 == len(rows)
        if not contiguous or not np.array_equal(rows, np.arange(rows[0], rows[-1] + 1)):
            return score(rows, positions)
        key = (int(rows[0]), len(rows))
        if key not in cache:
            if positions is not None:
                return score(rows, positions)
            cache[key] = np.asarray(score(rows, None))
        full = cache[key]
        return full if positions is None else full[:, positions]

    return cached


def known_before(split: Split, part: str = "test") -> Interactions:
    """What is known of the shoppers before ``part``: train, plus valid before the test part
    (a recipe may refit on it, and a shop has seen those events when the test period starts).
    Their items are excluded from the ranking and make users and items warm."""
    if part == "test" and split.valid is not None and split.valid.df.height:
        return Interactions(pl.concat([split.train.df, split.valid.df], how="diagonal_relaxed"))
    return split.train


def in_domain(events: Interactions, scorer: Scorer) -> Interactions:
    """The events of the scorer's evaluation domain (all of them when it has none)."""
    domain = getattr(scorer, "domain", None)
    if domain is None:
        return events
    return Interactions(events.df.filter(pl.col("domain") == domain))


def twins(
    scorer: Scorer, split: Split, part: str, users: Sequence[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Which evaluated users and which of the scorer's items have a twin in a source domain.

    A *twin* is the same user id (or item id) with events in another domain than the one the
    scorer ranks for (``scorer.domain``), among the events known before ``part`` (train, plus
    valid before the test). Cross-domain cold-start papers call such users *overlapping*
    (EMCDR, Man et al., IJCAI 2017; PTUPCDR, Zhu et al., WSDM 2022): they are the bridge the
    transfer goes through, and those papers evaluate cold start on them. The *twin-free* slices
    of :func:`evaluate_scorer` are the complement: test users with no source history and
    relevant items never seen in a source domain, where transfer by identity cannot help.

    Returns:
        ``(user_has_twin (U,), item_has_twin (I,))``, or None when the scorer has no
        evaluation domain or nothing is known of another domain.
    """
    domain = getattr(scorer, "domain", None)
    if domain is None:
        return None
    known = known_before(split, part).df
    source = known.filter(pl.col("domain").is_not_null() & (pl.col("domain") != domain))
    if source.height == 0:
        return None
    user_twin = pl.Series(list(users), dtype=pl.String).is_in(source["user"].unique().implode())
    item_twin = pl.Series(list(scorer.items), dtype=pl.String).is_in(
        source["item"].unique().implode()
    )
    return user_twin.to_numpy(), item_twin.to_numpy()


def _twin_free_slices(
    scorer: Scorer,
    split: Split,
    part: str,
    sub: RankingSpec,
    result: Any,
    run: Any,
    cfg: EvaluateSection,
) -> dict[str, dict[str, Any]]:
    """``twin-free users``, ``twin users``, ``twin-free items`` and ``twin-free`` (users and
    items) slices of an evaluation where a source domain exists (see :func:`twins`).

    Item-side slices rerun the protocol with the relevant items restricted; the other
    held-out items leave the ranking (as for cold items). Where we differ from the papers:
    a twin is an exact id match (the Amazon benchmark's "no-twin" slice instead looks for
    near-identical products by the Jaccard of their buyers), and only events known before the
    evaluated part count, never the test events of the source domain.
    """
    from shoprec.evaluate import protocols

    found = twins(scorer, split, part, sub.users)
    if found is None:
        return {}
    user_twin, item_twin = found

    def done(r: Any) -> dict[str, Any]:
        return (r.with_ci(cfg.bootstrap, seed=cfg.seed) if cfg.bootstrap else r).to_dict()

    out: dict[str, dict[str, Any]] = {}
    if user_twin.any() and (~user_twin).any():
        out["twin-free users"] = done(result.slice(~user_twin))
        out["twin users"] = done(result.slice(user_twin))
    kept = protocols.restrict(sub.relevant, ~item_twin)
    n_kept = kept.indices.size
    if n_kept and item_twin.any():
        dropped = protocols.restrict(sub.relevant, item_twin)
        excl = dropped if sub.exclude is None else protocols.union(sub.exclude, dropped)
        items_only = run(kept, excl)
        if n_kept < sub.relevant.indices.size:
            out["twin-free items"] = done(items_only)
        if user_twin.any():
            both = items_only.slice(~user_twin)
            if both.metrics.get("users"):
                out["twin-free"] = done(both)
    return out


def evaluate_scorer(
    scorer: Scorer,
    split: Split,
    cfg: EvaluateSection,
    *,
    part: str = "test",
    exclude: Sequence[str] | None = None,
    item_table: pl.DataFrame | None = None,
) -> Evaluation:
    """Rank the scorer's items for every user with a target event in ``part``.

    Beside accuracy (overall and per slice) it measures what the lists expose (unless
    ``cfg.exposure`` is off): catalog coverage@k, the Gini index of exposure, and the share of
    exposure by popularity decile and by a catalog group (:mod:`shoprec.evaluate.fairness`),
    from every user's top ``max(ks)`` items over the whole catalog (training items excluded as
    in the ranking). With ``cfg.baselines`` popularity is ranked the same way beside it.

    Args:
        scorer: a trained scorer.
        split: the split it was trained on (``train`` gives the exclusions and warm sets).
        cfg: the protocol (full ranking or sampled), cut-offs, slices, bootstrap.
        part: ``test`` or ``valid``.
        exclude: behaviors whose training items are left out of each user's ranking
            (default: the target's, as in the papers; ``[]`` keeps repeat purchases).
        item_table: the catalog (``item`` and attribute columns) the exposure groups come
            from (``cfg.group``, default ``category``); no groups without it.
    """
    from shoprec.evaluate import fairness, protocols

    start = time.perf_counter()
    events = split.test if part == "test" else split.valid
    if events is None:
        raise DataError(f"the split has no {part} part")
    events = in_domain(events, scorer)
    target = cfg.target or scorer.target
    spec = ranking_spec(events, known_before(split, part), scorer.items, target, exclude)
    users = spec.users
    sub = spec.take(spec.sample_rows(cfg.max_users, cfg.seed))
    # item, domain and twin-free slices rank the same users again: score them once
    fn = _cached(_score_fn(scorer, sub.users), len(sub.users) * scorer.n_items)
    ks = tuple(cfg.ks)

    popularity = item_popularity(known_before(split, part), scorer.items)
    top_k = max(ks) if cfg.exposure else 0

    def run(
        relevant: Sparse, exclude: Sparse | None = sub.exclude, score: Any = fn, lists: int = 0
    ) -> Any:
        if cfg.protocol == "full":
            return protocols.full_ranking(
                score, len(sub.users), scorer.n_items, relevant, exclude, ks=ks, top_k=lists
            )
        result = protocols.sampled_ranking(
            score,
            len(sub.users),
            scorer.n_items,
            relevant,
            exclude,
            n_negatives=cfg.n_negatives,
            sampling=cfg.sampling,
            popularity=popularity if cfg.sampling == "popularity" else None,
            seed=cfg.seed,
            ks=ks,
        )
        if lists:  # exposure is of the lists a shopper would see: the whole catalog ranked
            result.top_items = protocols.top_k_lists(
                score, len(sub.users), scorer.n_items, lists, exclude
            )
        return result

    groups = item_groups(item_table, scorer.items, cfg.group) if cfg.exposure else None

    def exposure_of(result: Any) -> dict[str, Any]:
        if result.top_items is None:
            return {}
        codes, names, column = groups if groups is not None else (None, None, None)
        return fairness.exposure_summary(result.top_items, popularity, ks, codes, names, column)

    result = run(sub.relevant, lists=top_k)
    if cfg.bootstrap:
        result = result.with_ci(cfg.bootstrap, seed=cfg.seed)
    slices: dict[str, dict[str, Any]] = {}
    if cfg.slices:
        for name, mask in (
            ("warm users", sub.user_has_history),
            ("cold users", ~sub.user_has_history),
        ):
            if mask.any() and (~mask).any():
                s = result.slice(mask)
                if cfg.bootstrap:
                    s = s.with_ci(cfg.bootstrap, seed=cfg.seed)
                slices[name] = s.to_dict()
        if (~sub.item_is_warm).any():
            for name, keep_items in (
                ("warm items", sub.item_is_warm),
                ("cold items", ~sub.item_is_warm),
            ):
                restricted = protocols.restrict(sub.relevant, keep_items)
                n_kept = restricted.indices.size
                if n_kept and n_kept < sub.relevant.indices.size:
                    # the other held-out items leave the ranking instead of competing
                    dropped = protocols.restrict(sub.relevant, ~keep_items)
                    excl = dropped if sub.exclude is None else protocols.union(sub.exclude, dropped)
                    s = run(restricted, excl)
                    if cfg.bootstrap:
                        s = s.with_ci(cfg.bootstrap, seed=cfg.seed)
                    slices[name] = s.to_dict()
        domains = sub.pairs["domain"].unique().drop_nulls().to_list()
        if len(domains) > 1:
            for d in sorted(domains):
                mine = pl.col("col").is_not_null() & (pl.col("domain") == d)
                pairs, other = (
                    sub.pairs.filter(mine),
                    sub.pairs.filter(~mine & pl.col("col").is_not_null()),
                )
                rel = csr_from_pairs(
                    pairs["row"].to_numpy(), pairs["col"].to_numpy(), len(sub.users), scorer.n_items
                )
                dropped = csr_from_pairs(
                    other["row"].to_numpy(), other["col"].to_numpy(), len(sub.users), scorer.n_items
                )
                excl = dropped if sub.exclude is None else protocols.union(sub.exclude, dropped)
                s = run(rel, excl)
                if cfg.bootstrap:
                    s = s.with_ci(cfg.bootstrap, seed=cfg.seed)
                slices[f"domain {d}"] = s.to_dict()
        slices.update(_twin_free_slices(scorer, split, part, sub, result, run, cfg))
    exposure = exposure_of(result)
    baselines: dict[str, dict[str, Any]] = {}
    if cfg.baselines:
        # the most bought (the target's training events; ties by all events)
        pop_score = item_popularity(known_before(split, part).of(target), scorer.items)
        pop_score = pop_score + popularity / (popularity.max() + 1.0)

        def pop_fn(rows: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
            row = pop_score if positions is None else pop_score[positions]
            return np.repeat(row[None, :], len(rows), axis=0)

        pop_result = run(sub.relevant, score=pop_fn, lists=top_k)
        pop_exposure = exposure_of(pop_result)
        baselines["popularity"] = {
            **pop_result.to_dict(),
            "metrics": {**pop_result.to_dict()["metrics"], **pop_exposure.get("metrics", {})},
            "exposure": pop_exposure,
        }
    out = result.to_dict()
    return Evaluation(
        protocol=cfg.protocol
        if cfg.protocol == "full"
        else f"sampled ({cfg.n_negatives} {cfg.sampling})",
        target=target,
        metrics={**out["metrics"], **exposure.get("metrics", {})},
        ci={k: tuple(v) for k, v in out.get("ci", {}).items()},
        slices=slices,
        exposure=exposure,
        baselines=baselines,
        counts={
            "users": len(sub.users),
            "users_total": len(users),
            "relevant_pairs": int(sub.relevant.indices.size),
            "relevant_unknown_items": spec.unknown_relevant,
            "cold_users": int((~sub.user_has_history).sum()),
        },
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------- train


def _item_table(ds: Dataset, items: Sequence[str]) -> pl.DataFrame:
    """The catalog by the scorer's item order (ids only where there is no catalog)."""
    table = pl.DataFrame({"item": list(items)}, schema={"item": pl.String})
    catalog = getattr(ds, "catalog", None)  # a tabular dataset has none
    if catalog is not None:
        cat = artifacts.item_table(catalog.df)
        table = table.join(cat, on="item", how="left", maintain_order="left")
    return table


def train_experiment(
    cfg: ExperimentConfig,
    output: str | Path | None = None,
    *,
    evaluate_test: bool = True,
    dataset: Dataset | None = None,
    split: Split | None = None,
    retrieval: bool = False,
) -> Path:
    """Train a config's recipe, evaluate the test split once, write the artifact.

    Args:
        cfg: the experiment.
        output: the artifact folder (default: ``cfg.output`` or ``runs/<name>``).
        evaluate_test: run the test protocol (off in search trials: validation only).
        dataset, split: already loaded ones to reuse (search trials, benchmarks).
        retrieval: also build the retrieval files into the artifact when the config's
            ``serve.build_retrieval`` is on (:func:`build_serving_files`), as
            ``shoprec train`` does; off, the first Recommender builds them into a cache.

    Returns:
        The artifact folder.
    """
    run, ds, split = fit_experiment(cfg, dataset=dataset, split=split)
    path = save_experiment(cfg, run, ds, split, output, evaluate_test=evaluate_test)
    if retrieval and cfg.serve.build_retrieval:
        build_serving_files(path)
    return path


def build_serving_files(directory: str | Path, *, progress: bool = False) -> bool:
    """Build the retrieval files (two-tower model, item and new-item indexes,
    co-occurrences: :func:`~shoprec.recommend.build_retrieval`) into an artifact of a recipe
    that recommends items, so that serving it starts without training anything.

    Args:
        directory: the artifact folder.
        progress: show the two-tower training's progress bar.

    Returns:
        False for an artifact that scores rows, not items (tabular, demand): nothing built.
    """
    from shoprec.recommend.retrieve import build_retrieval

    if artifacts.read_manifest(directory).get("items") == 0:
        return False
    build_retrieval(directory, progress=progress)
    return True


def fit_experiment(
    cfg: ExperimentConfig, *, dataset: Dataset | None = None, split: Split | None = None
) -> tuple[TrainingRun, Dataset, Split]:
    """Load the data, split, fit the recipe (no test read)."""
    recipe = recipes.get(cfg.recipe.name)(cfg)
    train_cfg = cfg.train.train_config()
    if train_cfg.threads:
        import torch

        torch.set_num_threads(train_cfg.threads)
    tabular = cfg.recipe.name == "tabular"
    ds = dataset if dataset is not None else load_dataset(cfg.data, tabular=tabular)
    if split is None and not tabular:
        split = make_split(ds, cfg.split, recipe.target)
    log.info("%s: %s recipe, %s split", cfg.name, cfg.recipe.name, cfg.split.kind)
    run = recipe.fit(ds, split)
    return run, ds, split


def save_experiment(
    cfg: ExperimentConfig,
    run: TrainingRun,
    ds: Dataset,
    split: Split,
    output: str | Path | None = None,
    *,
    evaluate_test: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Evaluate the test split once (optionally) and write the artifact."""
    out = Path(output) if output is not None else cfg.output_dir
    metrics: dict[str, Any] = {
        "recipe": cfg.recipe.name,
        "valid": run.valid,
        "monitor": run.monitor,
        "best_epoch": run.best_epoch,
        "history": run.history,
        **run.info,
        **(extra or {}),
    }
    if evaluate_test and run.scorer.n_items == 0:  # rows, not items: the recipe's own scores
        metrics["test"] = {"protocol": "pointwise", "pointwise": run.test}
    elif evaluate_test:
        ev = evaluate_scorer(
            run.scorer,
            split,
            cfg.evaluate,
            exclude=exclusions(cfg),
            item_table=_item_table(ds, run.scorer.items),
        )
        ev.pointwise = run.test
        metrics["test"] = ev.to_dict()
    artifacts.save(
        out,
        config=cfg,
        scorer=run.scorer,
        items=_item_table(ds, run.scorer.items),
        seen=known_before(split).df
        if split is not None
        else pl.DataFrame(
            {"user": [], "item": [], "behavior": []},
            schema=dict.fromkeys(("user", "item", "behavior"), pl.String),
        ),
        metrics=metrics,
    )
    return out


def exclusions(cfg: ExperimentConfig) -> list[str] | None:
    """Training behaviors excluded from a user's ranking: the serve config's (what the shop
    filters), so the offline ranking and the served list leave out the same items."""
    serve = cfg.serve.model_extra or {}
    if "exclude_behaviors" in serve:
        return list(serve["exclude_behaviors"])
    return None


def evaluate_artifact(
    directory: str | Path,
    *,
    overrides: dict[str, Any] | None = None,
    served: bool | None = None,
) -> tuple[Evaluation, artifacts.Artifact]:
    """Rebuild an artifact's split from its config and evaluate its scorer again.

    Args:
        directory: the artifact folder.
        overrides: evaluate-section settings to change (e.g. ``{"protocol": "sampled"}``).
        served: also measure the list the Recommender serves (default: the config's).
    """
    art = artifacts.Artifact.load(directory)
    cfg = art.config
    if art.scorer.n_items == 0:  # a tabular artifact: its test scores were read once
        stored = art.metrics.get("test", {})
        return Evaluation("pointwise", art.target, {}, pointwise=stored.get("pointwise", {})), art
    ev_cfg = cfg.evaluate.model_copy(update=overrides or {})
    ev_cfg = EvaluateSection.model_validate(ev_cfg.model_dump())
    ds = load_dataset(cfg.data)
    split = make_split(ds, cfg.split, art.target)
    ev = evaluate_scorer(art.scorer, split, ev_cfg, exclude=exclusions(cfg), item_table=art.items)
    ev.pointwise = art.metrics.get("test", {}).get("pointwise", {})
    if served if served is not None else ev_cfg.served:
        ev.served = evaluate_served(art, split, ev_cfg)
    return ev, art


def evaluate_served(
    art: artifacts.Artifact,
    split: Split,
    cfg: EvaluateSection,
    max_users: int = 2000,
    *,
    recommender: Any = None,
    users: Sequence[str] | None = None,
) -> dict[str, Any]:
    """HR@k / NDCG@k of the lists the Recommender serves (retrieval, ranking, fusion, MMR,
    new-item slot, group floors) to the test users (a seeded sample of ``max_users``, or
    ``users``), with the coverage / Gini / exposure shares of those lists (``cfg.exposure``).

    Args:
        art: the artifact.
        split: its split (the test part says what is relevant).
        cfg: cut-offs and seed.
        max_users: users sampled when ``users`` is not given.
        recommender: a Recommender to measure (default: the artifact's, as served).
        users: exactly these users (those of another evaluation, to compare like with like).
    """
    target = cfg.target or art.target
    test = in_domain(split.test, art.scorer)
    spec = ranking_spec(test, known_before(split), art.scorer.items, target, exclusions(art.config))
    if users is not None:
        index = {u: i for i, u in enumerate(spec.users)}
        rows = np.array([index[u] for u in users if u in index], dtype=np.int64)
    else:
        rows = spec.sample_rows(max_users, cfg.seed)
    k = max(cfg.ks)
    rec = recommender if recommender is not None else art.recommender()
    pos = {item: i for i, item in enumerate(art.scorer.items)}
    hits = np.zeros((len(rows), k), dtype=bool)
    lists = np.full((len(rows), k), -1, dtype=np.int64)
    n_rel = np.zeros(len(rows))
    start = time.perf_counter()
    for j, r in enumerate(rows):
        relevant = set(spec.relevant.indices[spec.relevant.indptr[r] : spec.relevant.indptr[r + 1]])
        n_rel[j] = len(relevant)
        listed = [pos.get(x.item, -1) for x in rec.recommend(spec.users[r], k)]
        hits[j, : len(listed)] = [p in relevant for p in listed]
        lists[j, : len(listed)] = listed
    seconds = time.perf_counter() - start
    has = n_rel > 0
    out: dict[str, Any] = {"users": int(has.sum()), "seconds": seconds}
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    for kk in cfg.ks:
        h = hits[has, :kk]
        ideal = np.array([discount[: int(min(n, kk))].sum() for n in n_rel[has]])
        out[f"hr@{kk}"] = float(h.any(axis=1).mean()) if has.any() else float("nan")
        out[f"ndcg@{kk}"] = (
            float(((h * discount[:kk]).sum(axis=1) / ideal).mean()) if has.any() else float("nan")
        )
    if cfg.exposure:  # of every sampled user's list (products added at run time left out)
        from shoprec.evaluate import fairness

        groups = item_groups(art.items, art.scorer.items, cfg.group)
        codes, names, column = groups if groups is not None else (None, None, None)
        popularity = item_popularity(known_before(split), art.scorer.items)
        exposure = fairness.exposure_summary(lists, popularity, cfg.ks, codes, names, column)
        out.update(exposure["metrics"])
        out["exposure"] = exposure
    return out


# -------------------------------------------------------------------------------- report


def _cells(result: dict[str, Any]) -> dict[str, Any]:
    m, ci = result.get("metrics", {}), result.get("ci", {})
    return {
        k: (v, *ci[k]) if k in ci and None not in ci[k] and v is not None else v
        for k, v in m.items()
        if v is not None
    }


def write_report(
    art: artifacts.Artifact, ev: Evaluation, path: str | Path, *, max_users: int = 500
) -> Path:
    """A self-contained HTML report of an artifact's evaluation: the metrics beside
    popularity (and the served list), metrics by slice with intervals, learning curves,
    per-task calibration and coverage / popularity-bias curves of the top-k lists."""
    from shoprec.evaluate.report import Report
    from shoprec.evaluate.report import write_report as write_html

    cfg = art.config
    ds = load_dataset(cfg.data)
    split = make_split(ds, cfg.split, art.target)
    test = in_domain(split.test, art.scorer)
    spec = ranking_spec(test, known_before(split), art.scorer.items, ev.target, exclusions(cfg))
    pop = (
        pl.DataFrame({"item": art.scorer.items})
        .join(known_before(split).df.group_by("item").len(), on="item", how="left")["len"]
        .fill_null(0)
        .to_numpy()
        .astype(np.float64)
    )
    rng = np.random.default_rng(0)
    rows = np.arange(len(spec.users))
    if len(rows) > max_users:
        rows = np.sort(rng.choice(len(rows), max_users, replace=False))
    users = [spec.users[r] for r in rows]
    ks = tuple(sorted({int(x.split("@")[1]) for x in ev.metrics if "@" in x})) or (10,)
    k = max(ks)
    scores = art.scorer.score(users)
    ranked = scores[art.target].copy()
    if spec.exclude is not None:
        ex = spec.exclude
        for j, r in enumerate(rows):
            ranked[j, ex.indices[ex.indptr[r] : ex.indptr[r + 1]]] = -np.inf
    ours_top = np.argsort(-ranked, axis=1, kind="stable")[:, :k]
    pop_top = np.tile(np.argsort(-pop, kind="stable")[:k], (len(users), 1))
    # calibration: each task's held-out positives against as many random items per user
    calibration: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    test = split.test.df
    for task in art.tasks:
        pos_pairs = test.filter(pl.col("behavior") == task).select("user", "item").unique()
        pos_pairs = pos_pairs.join(
            pl.DataFrame({"user": users, "r": np.arange(len(users))}), on="user"
        ).join(pl.DataFrame({"item": art.scorer.items, "c": np.arange(len(pop))}), on="item")
        if pos_pairs.height == 0:
            continue
        r, c = pos_pairs["r"].to_numpy(), pos_pairs["c"].to_numpy()
        neg_c = rng.integers(0, len(pop), size=len(r) * 4)
        neg_r = np.repeat(r, 4)
        p = np.concatenate([scores[task][r, c], scores[task][neg_r, neg_c]])
        y = np.concatenate([np.ones(len(r)), np.zeros(len(neg_r))])
        if np.all((p >= 0) & (p <= 1)):
            calibration[task] = (y, p)
    table: dict[str, dict[str, Any]] = {"ours (offline ranking)": _cells(ev.to_dict())}
    if ev.served:
        table["ours (served list)"] = {
            k2: v for k2, v in ev.served.items() if k2 not in ("seconds", "exposure")
        }
    from shoprec.evaluate import protocols

    def pop_fn(rr: np.ndarray, pos: np.ndarray | None = None) -> np.ndarray:
        return np.tile(pop if pos is None else pop[pos], (len(rr), 1))

    if "popularity" in ev.baselines:  # ranked by the evaluation, beside ours
        table["popularity"] = _cells(ev.baselines["popularity"])
    else:
        pop_res = protocols.full_ranking(
            pop_fn, len(spec.users), len(pop), spec.relevant, spec.exclude, ks=ks
        ).with_ci(200, seed=0)
        table["popularity"] = _cells(pop_res.to_dict())
    exposure = {"ours": ev.exposure} if ev.exposure else {}
    if (ev.served or {}).get("exposure"):
        exposure["ours (served list)"] = ev.served["exposure"]
    exposure.update({n: b["exposure"] for n, b in ev.baselines.items() if b.get("exposure")})
    report = Report(
        title=f"{cfg.name}: {art.recipe} recipe",
        subtitle=(
            f"{ev.protocol} ranking of '{ev.target}' on {ev.counts.get('users', 0):,} test "
            f"users; data {cfg.data.dataset or 'own files'}, split {cfg.split.kind}; "
            f"shoprec {art.manifest.get('shoprec_version')}, trained {art.manifest.get('created')}"
        ),
        metrics=table,
        ours=[n for n in table if n.startswith("ours")],
        slices={name: _cells(s) for name, s in ev.slices.items()} or None,
        history=art.metrics.get("history") or None,
        monitor=(f"valid/{art.metrics.get('monitor')}" if art.metrics.get("monitor") else None),
        calibration=calibration or None,
        recommendations={"ours": ours_top, "popularity": pop_top},
        popularity=pop,
        exposure=exposure or None,
        trials=(art.metrics.get("search") or {}).get("trials"),
        trials_metric="valid" if art.metrics.get("search") else None,
        notes=[
            "Ties count against the held-out item (pessimistic); intervals are 95% "
            "percentile bootstraps over users.",
            f"Calibration and coverage use a seeded sample of {len(users):,} test users.",
        ],
    )
    return write_html(path, report)
