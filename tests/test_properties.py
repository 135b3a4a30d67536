"""Property tests (hypothesis) for the fusion parser, the encoder and the events loader.

``make test`` runs a modest number of examples per property (the ``default`` profile);
``make fuzz`` runs many more (``HYPOTHESIS_PROFILE=fuzz``). Examples are derandomised, so a
run is reproducible.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shoprec.data.datasets.custom import FileSpec, load_events
from shoprec.data.encode import OOV, Encoder
from shoprec.errors import ShoprecError
from shoprec.recommend.fusion import LOG_LIMIT, MAX_EXPONENT, PRICE, VARIABLES, Fusion

settings.register_profile(
    "default", max_examples=50, deadline=None, derandomize=True, print_blob=True
)
settings.register_profile(
    "fuzz", max_examples=1000, deadline=None, derandomize=True, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

TASKS = ["view", "cart", "buy", "return"]
NAMES = st.sampled_from([*TASKS, *VARIABLES])
EXPONENT = st.floats(-MAX_EXPONENT, MAX_EXPONENT, allow_nan=False, allow_infinity=False)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)

# ------------------------------------------------------------------------------- fusion

# formula-ish text: the parser's own alphabet, so most examples get past the first character
FORMULA_TEXT = st.text(
    alphabet=st.sampled_from(list("buyviewcartpricereturn()1-^*.eE+ 0123456789_x")), max_size=80
)


@given(FORMULA_TEXT | st.text(max_size=80))
def test_parse_reads_or_refuses_with_a_value_error(text: str) -> None:
    """Any text: a ValueError, or a fusion with finite exponents in range that its own
    formula reads back to."""
    try:
        f = Fusion.parse(text)
    except ValueError:
        return
    exps = [*f.weights.values(), *f.penalties.values(), *f.variables.values(), f.price_weight]
    assert all(math.isfinite(w) and abs(w) <= MAX_EXPONENT for w in exps)
    again = Fusion.parse(f.formula())
    for a, b in ((f.weights, again.weights), (f.penalties, again.penalties)):
        assert {k: v for k, v in a.items() if v} == pytest.approx(
            {k: v for k, v in b.items() if v}, rel=1e-5
        )
    assert again.price_weight == pytest.approx(f.price_weight, rel=1e-5)


@st.composite
def fusions(draw: st.DrawFn) -> Fusion:
    weights = draw(st.dictionaries(st.sampled_from(TASKS), EXPONENT, max_size=4))
    penalties = draw(st.dictionaries(st.sampled_from(TASKS), EXPONENT, max_size=2))
    price = draw(EXPONENT)
    others = [v for v in VARIABLES if v != PRICE]
    variables = draw(st.dictionaries(st.sampled_from(others), EXPONENT)) if others else {}
    exps = [*weights.values(), *penalties.values(), *variables.values(), price]
    assume(any(w != 0 for w in exps))
    return Fusion(weights, price, penalties, variables)


@given(fusions(), st.data())
def test_scores_are_finite_and_positive_for_any_values(f: Fusion, data: st.DataObject) -> None:
    """NaN, inf, negative, zero, huge: every score is a positive finite float and the log
    score stays within the documented bound."""
    n = data.draw(st.integers(1, 8))
    column = st.lists(ANY_FLOAT, min_size=n, max_size=n).map(np.array)
    preds = {t: data.draw(column) for t in TASKS}
    values = {v: data.draw(column) for v in VARIABLES if v != PRICE}
    log = f.log_score(preds, price=data.draw(column), values=values)
    assert log.shape == (n,)
    assert np.all(np.isfinite(log)) and np.all(np.abs(log) <= LOG_LIMIT * (1 + 1e-12))
    score = f.score(preds, price=data.draw(column), values=values)
    assert np.all(np.isfinite(score)) and np.all(score > 0)


@given(
    st.lists(st.floats(1e-6, 1.0), min_size=2, max_size=20),
    st.floats(0.05, MAX_EXPONENT),
)
def test_a_positive_exponent_keeps_the_order_of_the_task(probs: list[float], w: float) -> None:
    f = Fusion({"buy": w})
    p = np.array(probs)
    score = f.score({"buy": p})
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(score[order]) >= 0)


@given(
    st.dictionaries(st.sampled_from(TASKS), st.floats(-2, 2), min_size=1),
    st.lists(st.floats(0.01, 0.99), min_size=1, max_size=5),
)
def test_terms_sum_to_the_log_score(weights: dict[str, float], probs: list[float]) -> None:
    f = Fusion(weights, 0.5) if any(weights.values()) else Fusion(weights, 1.0)
    p = np.array(probs)
    preds = {t: p for t in TASKS}
    price = np.full(len(p), 3.0)
    terms = f.log_terms(preds, price)
    np.testing.assert_allclose(sum(terms.values()), np.log(f.score(preds, price)), rtol=1e-9)


# ------------------------------------------------------------------------------ encoder

IDS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@given(
    st.lists(IDS, min_size=1, max_size=40),
    st.lists(IDS | st.none(), max_size=20),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False) | st.none(), min_size=1, max_size=40),
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_encoder_ids_and_numbers(train: list[str], other: list[str | None], nums: list) -> None:
    """Known values get distinct ids in [2, V+1] and decode back; anything else (unseen, null)
    is OOV; numbers come out finite (nulls at 0); the JSON state transforms identically."""
    n = len(train)
    nums = (nums * n)[:n]
    frame = pl.DataFrame({"item": train, "x": nums}, schema={"item": pl.String, "x": pl.Float64})
    enc = Encoder(categorical=["item"], numeric=["x"]).fit(frame)
    ids = enc.transform(frame)["item"]
    vocab = enc.vocab_size("item")
    assert vocab == len(set(train)) + 2
    assert np.all((ids >= 2) & (ids < vocab))
    assert len({(v, int(i)) for v, i in zip(train, ids, strict=True)}) == len(set(train))
    assert enc.inverse_transform_ids("item", ids) == train
    test = pl.DataFrame({"item": other}, schema={"item": pl.String}).with_columns(
        x=pl.lit(None, pl.Float64)
    )
    out = enc.transform(test)
    known = set(train)
    expected = [OOV if v is None or v not in known else None for v in other]
    assert all(e is None or e == i for e, i in zip(expected, out["item"].tolist(), strict=True))
    assert np.all(np.isfinite(enc.transform(frame)["x"])) and np.all(out["x"] == 0)
    again = Encoder.from_dict(enc.to_dict())
    np.testing.assert_array_equal(again.transform(frame)["item"], ids)
    np.testing.assert_array_equal(again.transform(frame)["x"], enc.transform(frame)["x"])


# ------------------------------------------------------------------------------- loader

CELL = {
    "user": st.sampled_from(["u1", "u2", "", "u" * 300, "ü"]),
    "item": st.sampled_from(["i1", "i2", "", "i3"]),
    "timestamp": st.sampled_from(["1600000000", "1600000500", "-5", "4102444801", "x", ""]),
    "behavior": st.sampled_from(["view", "buy", "cart", "hug", ""]),
    "price": st.sampled_from(["1.5", "0", "-2", "NaN", "inf", "", "abc", "1e400"]),
    "quantity": st.sampled_from(["1", "3", "0", "-1", "", "1.5", "99999999999999999999999"]),
}


@given(st.lists(st.fixed_dictionaries(CELL), min_size=1, max_size=12))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_events_loader_reads_counts_or_refuses(tmp_path: Path, rows: list[dict]) -> None:
    """Any mix of good and bad rows: a ShoprecError (naming a file), or a table whose rows
    are all sound, with every missing row counted in ``dropped``."""
    path = tmp_path / "events.csv"
    header = list(CELL)
    lines = [",".join(header)] + [",".join(r[c] for c in header) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    try:
        events, dropped = _load(path)
    except ShoprecError as e:
        assert "events.csv" in str(e)
        return
    assert events.height + dropped == len(rows)
    price = events["price"].drop_nulls().to_numpy()
    assert np.all(np.isfinite(price)) and np.all(price >= 0)
    assert np.all(events["quantity"].drop_nulls().to_numpy() > 0)
    assert events.height == 0 or events["user"].str.len_chars().min() > 0


def _load(path: Path) -> tuple[pl.DataFrame, int]:
    """The events table and how many raw rows were dropped."""
    from shoprec.data.schema import DropReport

    report = DropReport()
    return load_events(FileSpec(path), report=report).df, report.total
