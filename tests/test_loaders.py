"""Built-in dataset loaders: exact counts on the real files, invariants, and clear errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from shoprec.data import datasets
from shoprec.data.datasets import (
    amazon_cross_domain,
    amazon_games,
    census_income,
    fixtures,
    movielens_100k,
    tmall,
)
from shoprec.data.schema import EVENT_RULES, Behavior, Dataset, TabularDataset
from shoprec.errors import DataError, DatasetNotFoundError

real = pytest.mark.real_data


# ---------------------------------------------------------------- loaded once per module


@pytest.fixture(scope="module")
def tmall_ds(real_data: Path) -> Dataset:
    return tmall.load()


@pytest.fixture(scope="module")
def census_ds(real_data: Path) -> TabularDataset:
    return census_income.load(split_seed=7)


@pytest.fixture(scope="module")
def amazon_ds(real_data: Path) -> Dataset:
    return amazon_cross_domain.load()


@pytest.fixture(scope="module")
def games_ds(real_data: Path) -> Dataset:
    return amazon_games.load()


@pytest.fixture(scope="module")
def ml_ds(real_data: Path) -> Dataset:
    return movielens_100k.load()


def _pairs(df: pl.DataFrame) -> pl.DataFrame:
    return df.select("user", "item")


# ---------------------------------------------------------------- tmall


@real
def test_tmall_counts(real_data: Path, tmall_ds: Dataset) -> None:
    df = tmall_ds.interactions.df
    counts = dict(df.group_by("behavior").len().iter_rows())
    assert counts == {"view": 858_505, "cart": 180_027, "buy": 92_180}
    assert tmall_ds.test is not None
    assert dict(tmall_ds.test.df.group_by("behavior").len().iter_rows()) == {
        "view": 15_449,
        "cart": 15_449,
        "buy": 15_449,
    }
    assert df["user"].n_unique() == 15_449
    assert pl.concat([df["item"], tmall_ds.test.df["item"]]).n_unique() == 11_953
    assert tmall_ds.raw_rows == 6 * 15_449
    assert tmall_ds.dropped.total == 0
    assert df["timestamp"].null_count() == df.height
    assert not tmall_ds.interactions.has_time
    assert tmall_ds.meta["has_timestamps"] is False
    assert set(df["domain"].unique()) == {"default"}


@real
def test_tmall_test_items_not_in_same_behavior_train(real_data: Path, tmall_ds: Dataset) -> None:
    assert tmall_ds.test is not None
    for b in ("view", "cart", "buy"):
        train = _pairs(tmall_ds.interactions.of(b).df)
        test = _pairs(tmall_ds.test.of(b).df)
        assert test.join(train, on=["user", "item"]).height == 0, b
    # The README's "view/train contains none of the test items" holds for the view test only:
    # most users viewed the item they later bought (a fact of the log, not a loader bug).
    view_train = _pairs(tmall_ds.interactions.of(Behavior.VIEW).df)
    buy_test = _pairs(tmall_ds.test.of(Behavior.BUY).df)
    assert buy_test.join(view_train, on=["user", "item"]).height == 12_315


def test_tmall_parses_mixed_separators_and_reports_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tmall_multibehavior"
    for b in ("view", "cart", "buy"):
        (root / b).mkdir(parents=True)
        (root / b / "train.txt").write_text("0\t1 2\t2\n\n1 3\n2\n")
        (root / b / "test.txt").write_text("0\t5\n1\t6")
    monkeypatch.setenv("SHOPREC_DATA", str(tmp_path))
    ds = tmall.load()
    assert ds.interactions.of("buy").df.select("user", "item").rows() == [
        ("0", "1"),
        ("0", "2"),
        ("1", "3"),
    ]
    assert ds.dropped.counts["duplicate (user, item) in buy/train.txt"] == 1
    assert ds.dropped.counts["blank line in view/train.txt"] == 1
    assert ds.dropped.counts["user without items in cart/train.txt"] == 1
    assert ds.raw_rows == 3 * (4 + 2)


def test_tmall_bad_token_names_file_and_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tmall_multibehavior"
    for b in ("view", "cart", "buy"):
        (root / b).mkdir(parents=True)
        (root / b / "train.txt").write_text("0 1\n1 x2\n")
        (root / b / "test.txt").write_text("0\t5\n")
    monkeypatch.setenv("SHOPREC_DATA", str(tmp_path))
    with pytest.raises(DataError) as err:
        tmall.load()
    assert err.value.file == str(root / "view" / "train.txt")
    assert err.value.row == 1
    assert err.value.value == "x2"


# ---------------------------------------------------------------- census


@real
def test_census_counts_and_labels(real_data: Path, census_ds: TabularDataset) -> None:
    frame = census_ds.frame
    assert frame.height == 99_762
    assert census_ds.raw_rows == 99_762
    assert census_ds.labels == ["income_50k", "never_married"]
    assert int(frame["income_50k"].sum()) == 6_186
    assert int(frame["never_married"].sum()) == 43_143
    assert set(frame["income_50k"].unique()) == {0, 1}
    assert len(census_ds.numeric) == 7
    assert len(census_ds.categorical) == 32
    features = set(census_ds.categorical) | set(census_ds.numeric)
    for leaky in ("marital_stat", "income", "instance_weight", *census_ds.labels):
        assert leaky not in features
    assert "marital_stat" not in frame.columns
    assert frame["instance_weight"].dtype == pl.Float64
    assert all(frame[c].dtype == pl.Float64 for c in census_ds.numeric)
    assert all(frame[c].dtype == pl.String for c in census_ds.categorical)
    # Values are stripped; '?' is missing, nothing else is.
    assert frame["class_of_worker"][0] == "Private"
    assert frame["migration_code_change_in_msa"].null_count() == 49_946
    assert not frame["country_of_birth_self"].is_in(["?"]).any()


@real
def test_census_keeps_na_as_a_category(real_data: Path, census_ds: TabularDataset) -> None:
    origin = census_ds.frame["hispanic_origin"]
    assert origin.null_count() == 0
    assert int((origin == "NA").sum()) == 405
    assert origin.n_unique() == 10


@real
def test_census_split_is_seeded(real_data: Path, census_ds: TabularDataset) -> None:
    split = census_ds.frame["split"]
    assert dict(split.value_counts().iter_rows()) == {
        "train": 79_809,
        "valid": 9_976,
        "test": 9_977,
    }
    assert split.equals(census_income.split_column(99_762, 7))
    assert not split.equals(census_income.split_column(99_762, 8))
    assert census_ds.meta["split_seed"] == 7


def test_census_split_column_without_data() -> None:
    a = census_income.split_column(1_000, 3)
    assert a.equals(census_income.split_column(1_000, 3))
    assert dict(a.value_counts().iter_rows()) == {"train": 800, "valid": 100, "test": 100}


# ---------------------------------------------------------------- amazon cross-domain


@real
def test_amazon_cross_domain_counts(real_data: Path, amazon_ds: Dataset) -> None:
    df = amazon_ds.interactions.df
    assert dict(df.group_by("domain").len().iter_rows()) == {"sport": 92_612, "cloth": 87_829}
    sport_users = set(df.filter(pl.col("domain") == "sport")["user"])
    cloth_users = set(df.filter(pl.col("domain") == "cloth")["user"])
    assert len(sport_users) == 9_928
    assert sport_users == cloth_users
    assert set(df["behavior"].unique()) == {"buy"}
    assert df["timestamp"].null_count() == df.height
    assert amazon_ds.test is not None
    assert dict(amazon_ds.test.df.group_by("domain").len().iter_rows()) == {
        "sport": 8_326,
        "cloth": 7_540,
    }
    assert amazon_ds.test.df.join(df, on=["user", "item"]).height == 0


@real
def test_amazon_item_ids_never_collide(real_data: Path, amazon_ds: Dataset) -> None:
    df = amazon_ds.interactions.df
    assert df.filter(~pl.col("item").str.starts_with(pl.col("domain") + ":")).height == 0
    sport = set(df.filter(pl.col("domain") == "sport")["item"])
    cloth = set(df.filter(pl.col("domain") == "cloth")["item"])
    assert not sport & cloth
    assert len(sport) == 30_796
    assert len(cloth) == 39_008


@real
def test_amazon_test_original(real_data: Path) -> None:
    ds = amazon_cross_domain.load(test_file="test_original.txt")
    assert ds.test is not None
    assert dict(ds.test.df.group_by("domain").len().iter_rows()) == {
        "sport": 9_928,
        "cloth": 9_928,
    }
    with pytest.raises(ValueError, match="test_file"):
        amazon_cross_domain.load(test_file="train.txt")


# ---------------------------------------------------------------- amazon games


@real
def test_amazon_games_counts(real_data: Path, games_ds: Dataset) -> None:
    assert games_ds.catalog is not None
    assert len(games_ds.catalog) == 16_859
    assert games_ds.catalog.df["title"].null_count() == 0
    assert games_ds.test is not None and games_ds.valid is not None
    assert len(games_ds.test) == 50_546
    assert len(games_ds.valid) == 50_546
    assert games_ds.test.df["user"].n_unique() == 50_546
    assert len(games_ds.interactions) == 339_172
    assert len(games_ds.interactions) + len(games_ds.valid) + len(games_ds.test) == 440_264
    assert games_ds.meta["timestamp_is_order"] is True
    assert games_ds.meta["events_not_in_catalog"] == 0


@real
def test_amazon_games_order_and_no_leak(real_data: Path, games_ds: Dataset) -> None:
    assert games_ds.test is not None and games_ds.valid is not None
    last_train = games_ds.interactions.df.group_by("user").agg(pl.col("timestamp").max())
    steps = (
        last_train.join(games_ds.valid.df.select("user", v="timestamp"), on="user")
        .join(games_ds.test.df.select("user", t="timestamp"), on="user")
        .select(
            ((pl.col("v") - pl.col("timestamp")).dt.total_seconds() == 1).all(),
            ((pl.col("t") - pl.col("v")).dt.total_seconds() == 1).all(),
        )
    )
    assert steps.row(0) == (True, True)
    first = games_ds.interactions.df.filter(pl.col("user") == "0").sort("timestamp")
    assert first["item"].to_list() == [str(i) for i in range(13)]
    assert games_ds.valid.df.filter(pl.col("user") == "0")["item"].item() == "13"
    assert games_ds.test.df.filter(pl.col("user") == "0")["item"].item() == "14"


def test_amazon_games_inconsistent_valid_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "amazon_games"
    root.mkdir()
    (root / "Games.item").write_text("item_id:token\ttitle:token_seq\n0\tA\n1\tB\n2\tC\n")
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    (root / "Games-6k.test.inter").write_text(header + "0\t0 1\t2\n1\t2 0\t1\n")
    (root / "Games-6k.valid.inter").write_text(header + "0\t0\t1\n1\t2\t1\n")
    monkeypatch.setenv("SHOPREC_DATA", str(tmp_path))
    with pytest.raises(DataError) as err:
        amazon_games.load()
    assert err.value.row == 1
    assert err.value.value == "1"


# ---------------------------------------------------------------- movielens


@real
def test_movielens_counts(real_data: Path, ml_ds: Dataset) -> None:
    df = ml_ds.interactions.df
    assert df.height == 100_000
    assert df["user"].n_unique() == 943
    assert df["item"].n_unique() == 1_682
    assert ml_ds.catalog is not None and ml_ds.users is not None
    assert len(ml_ds.catalog) == 1_682
    assert len(ml_ds.users) == 943
    assert set(df["behavior"].unique()) == {"rate"}
    assert df["rating"].dtype == pl.Float64
    assert set(df["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert df["timestamp"].null_count() == 0
    assert df.columns[:7] == [
        "user",
        "item",
        "timestamp",
        "behavior",
        "quantity",
        "price",
        "domain",
    ]
    cat = ml_ds.catalog.df
    toy = cat.filter(pl.col("item") == "1").row(0, named=True)
    assert (toy["title"], toy["category"], toy["release_year"]) == ("Toy Story", "Animation", 1995)
    assert toy["genres"] == ["Animation", "Children's", "Comedy"]
    land = cat.filter(pl.col("item") == "1412").row(0, named=True)
    assert land["release_year"] == 1995
    assert not land["title"].endswith(")")
    assert cat["release_year"].null_count() == 1  # movie 267 has no date
    assert ml_ds.users.df.schema["age"] == pl.Int64
    assert ml_ds.users.attributes == ["age", "gender", "occupation", "zip_code"]


# ---------------------------------------------------------------- fixtures


@real
@pytest.mark.parametrize(
    ("name", "rows", "labels", "n_cat", "n_num"),
    [
        ("aliexpress", {"train": 100, "test": 20}, ["click", "conversion"], 16, 63),
        ("ali_ccp", {"train": 100, "valid": 50, "test": 50}, ["click", "purchase"], 23, 8),
    ],
)
def test_fixtures(
    real_data: Path, name: str, rows: dict[str, int], labels: list[str], n_cat: int, n_num: int
) -> None:
    ds = datasets.load(name)
    assert isinstance(ds, TabularDataset)
    assert dict(ds.frame.group_by("split", maintain_order=True).len().iter_rows()) == rows
    assert ds.labels == labels
    for label in labels:
        assert set(ds.frame[label].unique()) <= {0, 1}
        assert ds.frame[label].dtype == pl.Int64
    assert len(ds.categorical) == n_cat
    assert len(ds.numeric) == n_num
    assert not set(ds.categorical) & set(ds.numeric)
    assert not (set(ds.categorical) | set(ds.numeric)) & {*labels, "split", "search_id"}
    assert ds.frame.null_count().sum_horizontal().item() == 0


def test_fixtures_unknown_name() -> None:
    with pytest.raises(KeyError, match="aliexpress"):
        fixtures.load("criteo")


# ---------------------------------------------------------------- invariants and errors

EVENT_LOADERS = ["tmall", "amazon_cross_domain", "amazon_games", "movielens_100k"]
FOLDERS = {
    "tmall": "tmall_multibehavior",
    "census_income": "census_income",
    "amazon_cross_domain": "amazon_cross_domain",
    "amazon_games": "amazon_games",
    "movielens_100k": "movielens_100k",
    "aliexpress": "fixtures",
    "ali_ccp": "fixtures",
}


@real
@pytest.mark.parametrize("name", EVENT_LOADERS)
def test_event_invariants(real_data: Path, name: str, request: pytest.FixtureRequest) -> None:
    fixture = {
        "tmall": "tmall_ds",
        "amazon_cross_domain": "amazon_ds",
        "amazon_games": "games_ds",
        "movielens_100k": "ml_ds",
    }[name]
    ds: Dataset = request.getfixturevalue(fixture)
    assert ds.meta["source"].startswith("https://")
    for part in (ds.interactions, ds.test, ds.valid):
        if part is None:
            continue
        df = part.df
        assert df["user"].null_count() == 0 and df["item"].null_count() == 0
        assert (df["user"] == "").sum() == 0
        assert df["behavior"].is_in(Behavior.values()).all()
        assert df["user"].dtype == pl.String and df["item"].dtype == pl.String
    # the common value checks (shoprec.data.schema.EVENT_RULES) find nothing to drop in the
    # shipped files, so on_bad_rows: refuse loads them as well
    common = {rule.reason for rule in EVENT_RULES} | {"duplicate row"}
    assert not [r for r in ds.dropped.counts if r.split(" (")[0] in common]


@pytest.mark.parametrize("name", list(FOLDERS))
def test_missing_folder_names_the_path(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOPREC_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as err:
        datasets.load(name)
    assert str(tmp_path / FOLDERS[name]) in str(err.value)
    assert "SHOPREC_DATA" in str(err.value)
    assert "http" in str(err.value)


def test_missing_file_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "movielens_100k").mkdir()
    (tmp_path / "movielens_100k" / "ml-100k.inter").write_text("user_id:token\n")
    monkeypatch.setenv("SHOPREC_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as err:
        movielens_100k.load()
    assert str(tmp_path / "movielens_100k" / "ml-100k.item") in str(err.value)
