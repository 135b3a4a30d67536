"""Public release layouts: behavior-lines and domain-pairs loaders and the config dispatcher."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from shoprec.data.datasets import tmall
from shoprec.data.datasets.releases import (
    load_behavior_lines,
    load_domain_pairs,
    load_release,
)
from shoprec.data.schema import Behavior
from shoprec.errors import DataError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _pairs(df: pl.DataFrame) -> list[tuple[str, str]]:
    return df.select("user", "item").rows()


# ---------------------------------------------------------------- behavior lines


@pytest.fixture
def lines_root(tmp_path: Path) -> Path:
    _write(tmp_path / "view.txt", "0 1 2 3\n1\t4  5\n\n2 6\n")
    _write(tmp_path / "buy.txt", "0 3 3\n007 5\n")
    _write(tmp_path / "buy_test.txt", "0 9 10\n1 4\n3 99\n")
    _write(tmp_path / "buy_valid.txt", "0 2\n")
    return tmp_path


def test_behavior_lines_shapes_ids_and_behaviors(lines_root: Path) -> None:
    ds = load_behavior_lines(
        {"view": "view.txt", "buy": "buy.txt"},
        test={"buy": "buy_test.txt"},
        valid={"buy": "buy_valid.txt"},
        name="mini",
        root=lines_root,
    )
    df = ds.interactions.df
    assert ds.name == "mini"
    assert _pairs(ds.interactions.of(Behavior.VIEW).df) == [
        ("0", "1"),
        ("0", "2"),
        ("0", "3"),
        ("1", "4"),
        ("1", "5"),
        ("2", "6"),
    ]
    assert _pairs(ds.interactions.of(Behavior.BUY).df) == [("0", "3"), ("7", "5")]  # "007" -> "7"
    assert df["user"].dtype == pl.String and df["item"].dtype == pl.String
    assert df["timestamp"].null_count() == df.height
    assert set(df["domain"]) == {"default"}
    assert ds.meta["has_timestamps"] is False
    assert ds.meta["pairs"] == {"view": 6, "buy": 2}
    assert ds.meta["target_behavior"] == "buy"  # the last behavior given
    assert ds.raw_rows == 4 + 2 + 3 + 1
    assert ds.dropped.to_dict() == {
        "blank line in view.txt": 1,
        "duplicate (user, item) in buy.txt": 1,
    }
    assert ds.test is not None and ds.valid is not None
    assert set(ds.test.df["behavior"]) == {"buy"}
    assert _pairs(ds.valid.df) == [("0", "2")]


def test_behavior_lines_keeps_and_counts_test_only_items(lines_root: Path) -> None:
    ds = load_behavior_lines(
        {"view": "view.txt", "buy": "buy.txt"}, test="buy_test.txt", root=lines_root
    )
    assert ds.test is not None
    # several items on one test line, a test-only user, and three test-only items
    assert _pairs(ds.test.df) == [("0", "9"), ("0", "10"), ("1", "4"), ("3", "99")]
    assert ds.meta["test_only_items"] == 3
    assert ds.meta["n_items"] == 9  # 1..6 from train, 9, 10, 99 from test
    assert ds.meta["n_users"] == 5  # 0, 1, 2, 7 from train, 3 from test
    assert ds.meta["test_pairs"] == {"buy": 4}


def test_behavior_lines_single_test_file_goes_to_target(lines_root: Path) -> None:
    ds = load_behavior_lines(
        {"view": "view.txt", "buy": "buy.txt"},
        test=lines_root / "buy_test.txt",  # an absolute path ignores root
        target="view",
        root=lines_root,
    )
    assert ds.test is not None
    assert set(ds.test.df["behavior"]) == {"view"}


def test_behavior_lines_explicit_separator(tmp_path: Path) -> None:
    _write(tmp_path / "cart.csv", "1,2,3\n2,4\n")
    ds = load_behavior_lines({"cart": tmp_path / "cart.csv"}, separator=",")
    assert _pairs(ds.interactions.df) == [("1", "2"), ("1", "3"), ("2", "4")]


def test_behavior_lines_unknown_behavior_lists_allowed(lines_root: Path) -> None:
    with pytest.raises(DataError, match="unknown behavior 'purchase'") as err:
        load_behavior_lines({"purchase": "buy.txt"}, root=lines_root)
    assert "'buy'" in str(err.value) and "'view'" in str(err.value)
    with pytest.raises(DataError, match="unknown behavior 'order'"):
        load_behavior_lines({"buy": "buy.txt"}, test={"order": "buy_test.txt"}, root=lines_root)


def test_behavior_lines_missing_file_lists_folder(lines_root: Path) -> None:
    with pytest.raises(DataError) as err:
        load_behavior_lines({"buy": "bought.txt"}, root=lines_root)
    text = str(err.value)
    assert str(lines_root / "bought.txt") in text
    assert "file not found" in text
    assert "buy.txt" in text and "view.txt" in text  # what the folder holds


def test_behavior_lines_empty_file(tmp_path: Path) -> None:
    _write(tmp_path / "buy.txt", "\n  \n")
    with pytest.raises(DataError, match="empty") as err:
        load_behavior_lines({"buy": tmp_path / "buy.txt"})
    assert err.value.file == str(tmp_path / "buy.txt")


def test_behavior_lines_bad_id_names_file_line_and_content(tmp_path: Path) -> None:
    _write(tmp_path / "buy.txt", "0 1\n\n1 2 x3 4\n")
    with pytest.raises(DataError) as err:
        load_behavior_lines({"buy": tmp_path / "buy.txt"})
    text = str(err.value)
    assert str(tmp_path / "buy.txt") in text
    assert "line 3" in text
    assert "'1 2 x3 4'" in text
    assert "field 3 ('x3') is not a non-negative integer id" in text
    assert err.value.row == 2 and err.value.value == "x3"


def test_behavior_lines_empty_field_with_separator(tmp_path: Path) -> None:
    _write(tmp_path / "buy.tsv", "0\t1\n1\t\t2\n")
    with pytest.raises(DataError) as err:
        load_behavior_lines({"buy": tmp_path / "buy.tsv"}, separator="\t")
    assert "line 2: field 2 is empty" in str(err.value)
    assert str(tmp_path / "buy.tsv") in str(err.value)


def test_tmall_errors_now_give_the_right_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tmall_multibehavior"
    for b in ("view", "cart", "buy"):
        _write(root / b / "train.txt", "0 1\n1 x2\n")
        _write(root / b / "test.txt", "0\t5\n")
    monkeypatch.setenv("SHOPREC_DATA", str(tmp_path))
    with pytest.raises(DataError, match="line 2: ") as err:
        tmall.load()
    assert err.value.file == str(root / "view" / "train.txt")


# ---------------------------------------------------------------- domain pairs


@pytest.fixture
def pairs_root(tmp_path: Path) -> Path:
    """Two domains in oddly named folders; item 1 occurs in both; user 9 is cold in movies."""
    root = tmp_path / "release"
    _write(root / "Books (2018)" / "train.txt", "0\t1\t1\n0\t2\t1\n1\t3\t1\n9\t2\t1\n")
    _write(root / "Books (2018)" / "test.txt", "1\t1\t1\n")
    _write(root / "movies-x" / "train.txt", "0\t1\n1\t7\n1\t7\n")
    _write(root / "movies-x" / "valid.txt", "0\t8\n")
    _write(root / "movies-x" / "test.txt", "1\t1\n9\t5\n")
    _write(root / "notes" / "readme.md", "not a domain\n")  # no train file: ignored
    return root


def test_domain_pairs_discovers_any_folder_names(pairs_root: Path) -> None:
    ds = load_domain_pairs(pairs_root)
    df = ds.interactions.df
    assert list(ds.meta["domains"]) == ["Books (2018)", "movies-x"]
    assert ds.meta["train_pairs"] == {"Books (2018)": 4, "movies-x": 2}
    assert set(df["behavior"]) == {"buy"}
    assert df["timestamp"].null_count() == df.height
    # item "1" is in both domains, so every item id carries its domain
    assert ds.meta["colliding_items"] == 1
    assert ds.meta["item_id_format"] == "<domain>:<original item id>"
    assert _pairs(df.filter(pl.col("domain") == "movies-x")) == [
        ("0", "movies-x:1"),
        ("1", "movies-x:7"),
    ]
    assert ds.dropped.to_dict() == {"duplicate (user, item) in movies-x/train.txt": 1}
    assert ds.raw_rows == 4 + 1 + 3 + 1 + 2
    assert ds.test is not None and ds.valid is not None
    assert ds.meta["test_pairs"] == {"Books (2018)": 1, "movies-x": 2}
    assert _pairs(ds.valid.df) == [("0", "movies-x:8")]
    assert set(ds.valid.df["domain"]) == {"movies-x"}
    assert ds.meta["test_only_items"] == 2  # movies-x:5 (test) and movies-x:8 (valid)
    assert ds.meta["ratings"] == {"min": 1.0, "max": 1.0, "distinct": 1}


def test_domain_pairs_detects_cold_users(pairs_root: Path) -> None:
    ds = load_domain_pairs(pairs_root)
    assert ds.meta["cold_users"] == {"Books (2018)": [], "movies-x": ["9"]}
    assert ds.meta["cold_valid_users"] == {"Books (2018)": [], "movies-x": []}
    assert ds.test is not None
    cold = ds.test.df.filter(pl.col("user").is_in(ds.meta["cold_users"]["movies-x"]))
    assert _pairs(cold) == [("9", "movies-x:5")]


def test_domain_pairs_mapping_renames_orders_and_selects(pairs_root: Path) -> None:
    ds = load_domain_pairs(pairs_root, domains={"movies-x": "movies"}, valid=None)
    assert ds.meta["domains"] == {"movies": "movies-x"}
    assert ds.valid is None
    # only one domain read: no collision, so ids stay as they are
    assert ds.meta["colliding_items"] == 0
    assert ds.meta["item_id_format"] == "<original item id>"
    assert _pairs(ds.interactions.df) == [("0", "1"), ("1", "7")]
    assert set(ds.interactions.df["domain"]) == {"movies"}


def test_domain_pairs_qualify_choice(pairs_root: Path) -> None:
    shared = load_domain_pairs(pairs_root, qualify_items=False)
    assert set(shared.interactions.df["item"]) == {"1", "2", "3", "7"}
    always = load_domain_pairs(pairs_root, domains={"movies-x": "m"}, qualify_items=True)
    assert set(always.interactions.df["item"]) == {"m:1", "m:7"}


def test_domain_pairs_min_rating_drops_and_counts(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "train.txt", "0\t1\t5\n0\t2\t2.5\n1\t1\t0\n1\t3\n")
    ds = load_domain_pairs(tmp_path, min_rating=3)
    assert _pairs(ds.interactions.df) == [("0", "1"), ("1", "3")]
    assert ds.dropped.to_dict() == {"rating below 3 in a/train.txt": 2}
    assert ds.meta["ratings"] == {"min": 5.0, "max": 5.0, "distinct": 1}  # of kept lines


def test_domain_pairs_missing_folder_lists_parent(tmp_path: Path) -> None:
    (tmp_path / "amazon").mkdir()
    with pytest.raises(DataError) as err:
        load_domain_pairs(tmp_path / "amzon")
    assert str(tmp_path / "amzon") in str(err.value)
    assert "amazon/" in str(err.value)


def test_domain_pairs_no_domain_found_lists_content(tmp_path: Path) -> None:
    _write(tmp_path / "sport" / "train.tsv", "0\t1\n")
    with pytest.raises(DataError, match=r"no sub-folder holds a 'train\.txt' file") as err:
        load_domain_pairs(tmp_path)
    assert "sport/" in str(err.value)
    assert load_domain_pairs(tmp_path, train="train.tsv").meta["domains"] == {"sport": "sport"}


def test_domain_pairs_missing_domain_folder_lists_found(pairs_root: Path) -> None:
    with pytest.raises(DataError) as err:
        load_domain_pairs(pairs_root, domains={"books": "books"})
    text = str(err.value)
    assert str(pairs_root / "books") in text and "domain folder 'books' not found" in text
    assert "Books (2018)/" in text and "movies-x/" in text
    with pytest.raises(DataError, match="train file of domain folder 'notes' not found") as err:
        load_domain_pairs(pairs_root, domains={"notes": "notes"})
    assert "readme.md" in str(err.value)


def test_domain_pairs_misspelt_test_file(pairs_root: Path) -> None:
    with pytest.raises(DataError, match=r"test file 'tst\.txt'"):
        load_domain_pairs(pairs_root, test="tst.txt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0\t1\n0\t1\t1\t1\n", "line 2: expected 'user<TAB>item' or 'user<TAB>item<TAB>rating'"),
        ("0\t1\n\n2\tb7\n", "line 3: field 2 ('b7') is not a non-negative integer id"),
        ("0\t\t1\n", "line 1: field 2 is empty"),
        ("0\t1\tgood\n", "line 1: field 3 ('good') is not a number"),
        ("-1\t1\n", "line 1: field 1 ('-1') is not a non-negative integer id"),
    ],
)
def test_domain_pairs_bad_line_names_file_line_and_content(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path / "d" / "train.txt", text)
    with pytest.raises(DataError) as err:
        load_domain_pairs(tmp_path)
    assert str(path) in str(err.value)
    assert message in str(err.value)
    assert "the line reads" in str(err.value)


def test_domain_pairs_empty_file(pairs_root: Path) -> None:
    _write(pairs_root / "movies-x" / "valid.txt", "")
    with pytest.raises(DataError, match="empty") as err:
        load_domain_pairs(pairs_root)
    assert err.value.file == str(pairs_root / "movies-x" / "valid.txt")


def test_domain_pairs_unknown_behavior(pairs_root: Path) -> None:
    with pytest.raises(DataError, match=r"unknown behavior 'review'.*'rate'"):
        load_domain_pairs(pairs_root, behavior="review")


# ---------------------------------------------------------------- load_release


def test_load_release_behavior_lines_relative_to_root_and_base(lines_root: Path) -> None:
    spec = {
        "format": "behavior_lines",
        "root": lines_root.name,
        "behaviors": {"view": "view.txt", "buy": "buy.txt"},
        "test": {"buy": "buy_test.txt"},
        "name": "mini",
    }
    ds = load_release(spec, base=lines_root.parent)
    assert ds.name == "mini"
    assert ds.meta["pairs"] == {"view": 6, "buy": 2}
    assert ds.meta["test_only_items"] == 3


def test_load_release_domain_pairs(pairs_root: Path) -> None:
    ds = load_release(
        {"format": "domain_pairs", "folder": str(pairs_root), "domains": {"movies-x": "movies"}}
    )
    assert ds.name == "domain_pairs"
    assert ds.meta["domains"] == {"movies": "movies-x"}
    by_root = load_release({"format": "domain_pairs", "root": str(pairs_root), "test": None})
    assert by_root.test is None
    assert list(by_root.meta["domains"]) == ["Books (2018)", "movies-x"]


def test_load_release_refuses_unknown_keys_and_formats(pairs_root: Path) -> None:
    with pytest.raises(DataError, match="unknown key 'domain' in the domain_pairs") as err:
        load_release({"format": "domain_pairs", "folder": str(pairs_root), "domain": {}})
    assert "'domains'" in str(err.value) and "'folder'" in str(err.value)
    with pytest.raises(DataError, match="unknown key 'folder' in the behavior_lines"):
        load_release({"format": "behavior_lines", "folder": "x", "behaviors": {"buy": "b"}})
    with pytest.raises(DataError, match="'behavior_lines', 'domain_pairs'"):
        load_release({"format": "csv"})
    with pytest.raises(DataError, match="needs 'behaviors'"):
        load_release({"format": "behavior_lines"})
    with pytest.raises(DataError, match="'domains' must be a mapping"):
        load_release({"format": "domain_pairs", "folder": str(pairs_root), "domains": "x"})


# ---------------------------------------------------------------- real releases


@pytest.mark.real_data
def test_real_tmall_through_release_config(real_data: Path) -> None:
    behaviors = ("view", "cart", "buy")
    ds = load_release(
        {
            "format": "behavior_lines",
            "root": str(real_data / "tmall_multibehavior"),
            "behaviors": {b: f"{b}/train.txt" for b in behaviors},
            "test": {b: f"{b}/test.txt" for b in behaviors},
        }
    )
    assert ds.meta["pairs"] == {"view": 858_505, "cart": 180_027, "buy": 92_180}
    assert ds.meta["test_pairs"] == {b: 15_449 for b in behaviors}
    assert ds.meta["n_users"] == 15_449 and ds.meta["n_items"] == 11_953
    assert ds.meta["test_only_items"] == 0
    assert ds.raw_rows == 6 * 15_449 and ds.dropped.total == 0


@pytest.mark.real_data
def test_real_amazon_by_folder_discovery(real_data: Path) -> None:
    ds = load_domain_pairs(real_data / "amazon_cross_domain", test="test_original.txt")
    assert ds.meta["domains"] == {"cloth_sport": "cloth_sport", "sport_cloth": "sport_cloth"}
    assert ds.meta["train_pairs"] == {"cloth_sport": 87_829, "sport_cloth": 92_612}
    assert ds.meta["item_id_format"] == "<domain>:<original item id>"
    assert ds.meta["cold_users"] == {"cloth_sport": [], "sport_cloth": []}
    assert ds.test is not None
    assert len(ds.test) == 2 * 9_928
    # test_original.txt holds items no train file has: kept and counted, never dropped
    assert ds.meta["test_only_items"] == 3_809
    assert ds.test.df.join(ds.interactions.df, on="item", how="anti").height >= 3_809
