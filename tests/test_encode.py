"""Encoder: train-only vocabularies with OOV, train-stat normalisation, JSON round trip, speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from shoprec.data.encode import OOV, PAD, Encoder, IdMap, NotFittedError
from shoprec.data.schema import Interactions
from shoprec.errors import DataError


@pytest.fixture
def train() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": ["u1", "u2", "u1", "u3", "u1"],
            "item": ["a", "b", "b", "c", "b"],
            "shop": [7, 7, 8, 9, 7],  # ints: vocabulary keys become "7", "8", "9"
            "price": [1.0, 2.0, 3.0, None, 6.0],
            "qty": [1, 2, 3, 4, 5],
            "hist": [["a"], ["a", "b"], [], None, ["c", "b", "a"]],
        }
    )


@pytest.fixture
def test_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": ["u1", "new_user", None],
            "item": ["b", "zzz", "a"],
            "shop": [8, 10, 7],
            "price": [3.0, None, float("nan")],
            "qty": [3, 10, 1],
            "hist": [["b", "new"], None, ["a", "a", "a", "a"]],
        }
    )


def _encoder(**kw) -> Encoder:
    return Encoder(
        categorical=["user", "item", "shop"], numeric=["price", "qty"], sequences=["hist"], **kw
    )


def test_vocab_ids_follow_convention(train: pl.DataFrame) -> None:
    enc = _encoder().fit(train)
    # most frequent first, ties by value; ids start at 2
    assert enc.vocab_["item"] == {"b": 2, "a": 3, "c": 4}
    assert enc.vocab_["user"] == {"u1": 2, "u2": 3, "u3": 4}
    assert enc.vocab_["shop"] == {"7": 2, "8": 3, "9": 4}
    assert enc.vocab_size("item") == 5  # PAD, OOV + 3 values
    assert enc.ids("item").values == ("b", "a", "c")
    assert enc.ids("item").size == 5
    assert enc.inverse_transform_ids("item", np.array([0, 1, 2, 4])) == [None, None, "b", "c"]
    with pytest.raises(IndexError):
        enc.inverse_transform_ids("item", [5])


def test_unseen_values_map_to_oov(train: pl.DataFrame, test_frame: pl.DataFrame) -> None:
    enc = _encoder().fit(train)
    out = enc.transform(test_frame)
    assert out["user"].dtype == np.int64
    assert out["user"].tolist() == [2, OOV, OOV]  # unseen and null -> OOV
    assert out["item"].tolist() == [2, OOV, 3]
    assert out["shop"].tolist() == [3, OOV, 2]  # ints looked up as strings
    # sequences: (N, L) right-padded with PAD, unknown elements OOV, null list all padding
    # hist has its own vocabulary: a (3 times) -> 2, b (2 times) -> 3
    assert out["hist"].tolist() == [[3, OOV, PAD, PAD], [PAD] * 4, [2, 2, 2, 2]]


def test_min_count(train: pl.DataFrame) -> None:
    enc = Encoder(categorical=["item"], min_count=2).fit(train)
    assert enc.vocab_["item"] == {"b": 2}
    assert enc.transform(train)["item"].tolist() == [OOV, 2, 2, OOV, 2]


def test_numbers_normalised_with_train_stats(train: pl.DataFrame, test_frame: pl.DataFrame) -> None:
    enc = _encoder(null_flags=True).fit(train)
    out = enc.transform(train)
    assert out["price"].dtype == np.float32
    known = out["price"][~np.isnan(train["price"].fill_null(np.nan).to_numpy())]
    assert known.mean() == pytest.approx(0.0, abs=1e-6)
    assert known.std() == pytest.approx(1.0, abs=1e-6)
    assert out["qty"].mean() == pytest.approx(0.0, abs=1e-6)
    assert out["qty"].std() == pytest.approx(1.0, abs=1e-6)
    assert out["price"][3] == 0.0 and out["price__isnull"].tolist() == [0, 0, 0, 1, 0]
    # test rows use the train mean/std, not their own; null and NaN -> 0 and flagged
    t = enc.transform(test_frame)
    assert t["price"][0] == pytest.approx((3.0 - 3.0) / np.std([1.0, 2.0, 3.0, 6.0]))
    assert t["qty"][1] == pytest.approx((10 - 3) / np.std([1, 2, 3, 4, 5]))
    assert t["price"][1:].tolist() == [0.0, 0.0]
    assert t["price__isnull"].tolist() == [0, 1, 1]


def test_constant_numeric_gets_unit_std() -> None:
    enc = Encoder(numeric=["x"]).fit(pl.DataFrame({"x": [5.0, 5.0]}))
    assert enc.std_["x"] == 1.0
    assert enc.transform(pl.DataFrame({"x": [6.0]}))["x"].tolist() == [1.0]


def test_json_round_trip_transforms_identically(
    train: pl.DataFrame, test_frame: pl.DataFrame, tmp_path: Path
) -> None:
    enc = _encoder(min_count=1, max_seq_len=3, null_flags=True).fit(train)
    path = enc.to_json(tmp_path / "encoder.json")
    assert path.read_text(encoding="utf-8").startswith("{")  # plain JSON
    loaded = Encoder.from_json(path)
    a, b = enc.transform(test_frame), loaded.transform(test_frame)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert a[key].dtype == b[key].dtype
    assert loaded.vocab_ == enc.vocab_ and loaded.mean_ == enc.mean_ and loaded.std_ == enc.std_
    assert Encoder.from_dict(enc.to_dict()).to_dict() == enc.to_dict()
    assert a["hist"].shape == (3, 3)  # max_seq_len keeps the last 3
    with pytest.raises(DataError, match="not a shoprec encoder"):
        Encoder.from_dict({"format": "other"})


def test_shared_sequence_vocabulary(train: pl.DataFrame) -> None:
    enc = Encoder(categorical=["item"], sequences={"hist": "item"}).fit(train)
    out = enc.transform(train)
    assert enc.vocab_size("hist") == enc.vocab_size("item")
    assert out["hist"][4].tolist() == [enc.vocab_["item"][v] for v in ("c", "b", "a")]
    with pytest.raises(ValueError, match="not a categorical"):
        Encoder(sequences={"hist": "item"})


def test_missing_and_unknown_columns_are_named(train: pl.DataFrame) -> None:
    enc = _encoder().fit(train)
    with pytest.raises(DataError, match="'shop'") as err:
        enc.transform(train.drop("shop"))
    assert err.value.column == "shop"
    with pytest.raises(DataError, match="'brand'"):
        enc.transform(train, columns=["brand"])
    with pytest.raises(DataError, match="'price'"):
        Encoder(numeric=["price"]).fit(train.drop("price"))
    with pytest.raises(DataError, match="'user'"):
        Encoder(numeric=["user"]).fit(train)  # strings are not numbers
    with pytest.raises(NotFittedError):
        Encoder(categorical=["item"]).transform(train)
    # a subset of columns is fine (e.g. only item ids at serving time)
    assert set(enc.transform(train.select("item"), columns=["item"])) == {"item"}


def test_accepts_interactions() -> None:
    inter = Interactions.from_frame(
        pl.DataFrame({"user": ["u", "v"], "item": ["a", "b"], "behavior": ["buy", "view"]})
    )
    enc = Encoder(categorical=["user", "item", "behavior"]).fit(inter)
    assert enc.transform(inter)["behavior"].tolist() == [2, 3]


def test_idmap() -> None:
    m = IdMap("item", ("a", "b"))
    assert m.id("b") == 3 and m.id("x") == OOV and m.id(None) == OOV
    assert m.value(0) is None and m.value(2) == "a"
    assert m.encode(["b", "a", "q"]).tolist() == [3, 2, 1]
    assert m.decode([3, 1]) == ["b", None]
    assert m.known_ids.tolist() == [2, 3] and len(m) == 2


def test_million_row_transform_is_vectorised() -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    df = pl.DataFrame(
        {
            "item": rng.integers(0, 50_000, n),  # ints: cast to string keys
            "user": [f"u{i}" for i in rng.integers(0, 20_000, 1000)] * (n // 1000),
            "price": rng.normal(10, 3, n),
        }
    )
    train, test = df.head(n // 2), df.tail(n // 2)
    enc = Encoder(categorical=["item", "user"], numeric=["price"]).fit(train)
    out = enc.transform(test)
    assert out["item"].shape == (n // 2,) and out["price"].shape == (n // 2,)
    assert out["item"].min() >= OOV and out["item"].max() < enc.vocab_size("item")
    assert out["user"].min() >= 2  # every user in test was seen in train


# --------------------------------------------------------------- large id spaces (issue 11)


def test_stable_hash_matches_fnv1a_vectors() -> None:
    from shoprec.data.encode import stable_hash

    # published FNV-1a 64-bit test vectors: "" and "a" and "foobar"
    got = stable_hash(["", "a", "foobar", None]).tolist()
    assert got == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8, got[0]]
    assert got[3] == got[0]  # null hashes as the empty string (never used: null -> OOV)


def test_frequency_floor_and_hash_buckets() -> None:
    train = pl.DataFrame({"user": ["a"] * 3 + ["b"] * 2 + ["c", "d"]})
    plain = Encoder(categorical=["user"], min_count=2).fit(train)
    assert plain.ids("user").values == ("a", "b")  # c and d seen once: below the floor
    assert plain.vocab_size("user") == 4
    enc = Encoder(categorical=["user"], min_count=2, hash_buckets=8).fit(train)
    assert enc.vocab_size("user") == 4 + 8
    ids = enc.transform(pl.DataFrame({"user": ["a", "b", "c", "d", "new", None, "c"]}))["user"]
    assert ids[:2].tolist() == [2, 3]  # known ids unchanged by buckets
    assert ids[5] == OOV  # null stays OOV
    assert ((ids[[2, 3, 4]] >= 4) & (ids[[2, 3, 4]] < 12)).all()  # rare/unknown -> a bucket
    assert ids[2] == ids[6]  # the same value, the same bucket
    assert enc.ids("user").id("c") == ids[2] and enc.ids("user").value(int(ids[2])) is None
    assert enc.inverse_transform_ids("user", ids[:3]) == ["a", "b", None]
    many = enc.transform(pl.DataFrame({"user": [f"x{i}" for i in range(2000)]}))["user"]
    counts = np.bincount(many - 4, minlength=8)
    assert counts.min() > 150  # 2000 values over 8 buckets, spread (250 each expected)


def test_default_oov_convention_unchanged(train: pl.DataFrame, test_frame: pl.DataFrame) -> None:
    enc = Encoder(categorical=["user", "item"], sequences={"hist": "item"}).fit(train)
    assert enc.hash_buckets == 0 and enc.vocab_size("item") == 3 + 2
    out = enc.transform(test_frame)
    assert out["item"][1] == OOV and out["user"][1:].tolist() == [OOV, OOV]
    assert out["hist"][0].tolist() == [enc.ids("item").id("b"), OOV, PAD, PAD]


def test_hash_buckets_same_in_another_process(tmp_path: Path) -> None:
    values = [f"user-{i}" for i in range(50)] + ["7", "ü"]
    enc = Encoder(categorical=["user"], hash_buckets=1000).fit(pl.DataFrame({"user": ["k"]}))
    here = enc.transform(pl.DataFrame({"user": values}))["user"].tolist()
    path = enc.to_json(tmp_path / "enc.json")
    code = (
        "import json, sys, polars as pl\n"
        "from shoprec.data.encode import Encoder\n"
        "enc = Encoder.from_json(sys.argv[1])\n"
        "vals = json.loads(sys.argv[2])\n"
        "print(json.dumps(enc.transform(pl.DataFrame({'user': vals}))['user'].tolist()))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # Python's hash differs
    res = subprocess.run(
        [sys.executable, "-c", code, str(path), json.dumps(values)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert json.loads(res.stdout) == here
    assert len(set(here)) > 40  # 52 values over 1000 buckets: few collisions


def test_buckets_json_round_trip(tmp_path: Path) -> None:
    train = pl.DataFrame({"item": ["a", "a", "b", "c"], "hist": [["a", "z"], [], ["b"], ["q"]]})
    enc = Encoder(
        categorical=["item"], sequences={"hist": "item"}, min_count=2, hash_buckets=16
    ).fit(train)
    loaded = Encoder.from_json(enc.to_json(tmp_path / "e.json"))
    assert loaded.hash_buckets == 16 and loaded.vocab_size("item") == enc.vocab_size("item")
    frame = pl.DataFrame({"item": ["a", "b", "zz", None], "hist": [["b", "a", "y"], [], None, []]})
    a, b = enc.transform(frame), loaded.transform(frame)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (a["hist"][0][[0, 2]] >= 3).all()  # "b" is below the floor, "y" unknown: buckets
    state = enc.to_dict()
    del state["hash_buckets"], state["hash"]  # a state written before buckets existed
    assert Encoder.from_dict(state).vocab_size("item") == 3


def test_memory_bytes_reports_vocab_and_embedding_rows() -> None:
    users = pl.DataFrame({"user": [f"u{i}" for i in range(1000)] * 2 + ["rare"]})
    enc = Encoder(categorical=["user"], min_count=2, hash_buckets=100).fit(users)
    enc.transform(users)  # builds the lookup Series
    mem = enc.memory_bytes(dim=32)["user"]
    assert mem["known"] == 1000 and mem["rows"] == 1000 + 2 + 100
    assert mem["embedding_bytes"] == 1102 * 32 * 4
    assert 50 < mem["vocab_bytes_per_id"] < 500  # a short Python str and its lookup entry
    assert mem["bytes_per_id"] == pytest.approx(
        mem["vocab_bytes_per_id"] + mem["embedding_bytes_per_id"]
    )


def test_config_exposes_floor_and_buckets() -> None:
    from pydantic import ValidationError

    from shoprec.config import RecipeSection

    section = RecipeSection(name="tabular", min_count=5, hash_buckets=100_000)
    assert section.model_extra == {"min_count": 5, "hash_buckets": 100_000}
    with pytest.raises(ValidationError, match="hash_buckets"):
        RecipeSection(name="tabular", hash_buckets=-1)
