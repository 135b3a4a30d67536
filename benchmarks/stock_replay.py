"""Stock-aware recommendations replayed on the simulated shop, with known future demand.

The question (issue 10): does pushing down what will run out give fewer stock-outs, and what
does it cost in revenue, against the same recommender without it?

Set-up, one seeded run:

1. The simulated shop (``simulate_shop``: events, planted truth, and a daily table of every
   item's demand, stock and restock arrivals under the shop's own (s, S) stock policy).
2. A recommender trained through the front door on everything before the replay window (the
   last ``--weeks`` weeks: the split's test period): the pairs recipe, MMoE.
3. The replay, day by day through the window, once per setting of ``serve.stockout_penalty``
   (0 = the same recommender without stock-aware re-ranking), each from the same stock:

   * the day's restock arrivals (the simulated shop's) land;
   * ``--requests`` shoppers a day (the window's buyers of that day, the same ones and the
     same random draws for every setting) ask for 10 recommendations and go down the list
     (a cascade): at rank ``r`` they look with probability ``1 / log2(r + 1)`` and buy with
     probability ``min(1, --intent x P)``, ``P`` the planted P(buy | shown) of that item for
     that shopper (the simulator's funnel: click, cart, buy; ``--intent``: a shopper asking
     for a list is that many times readier to buy than one the simulator merely exposes to
     an item); the first buy ends the visit, so a list of less wanted items sells less. A
     buy takes one unit (``PUT /admin/stock`` in a shop), so the next list sees it;
   * then the shop's other demand of the day (the simulated units wanted, sold plus lost)
     takes what is left; units wanted of an item at stock 0 are **stock-outs**.

   The forecast is the known future demand (an oracle, to isolate the re-ranking): every
   week, P50 = the units the simulated shop will want in each of the next weeks, P90 =
   P50 + 1.28 sqrt(P50), P(no sale) = exp(-P50); lead time 2 weeks.

Revenue = price x units sold (recommended buys plus the other demand that found stock).
"At-risk items per list": listed items whose P(stock-out over the lead time) is >= 0.5.
Usage::

    python -m benchmarks.stock_replay [--events 100000] [--weeks 4] [--requests 30]
        [--penalties 0 1 2] [--out FILE]

Writes section ``stock_replay`` of benchmarks/RESULTS.md (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmarks._results import load_note, stamp, write_section
from shoprec.artifact import Artifact
from shoprec.config import ExperimentConfig
from shoprec.data.simulate import _MISMATCH_MEAN, SimTruth, simulate_shop
from shoprec.experiment import train_experiment
from shoprec.recommend import Recommender, RecommenderConfig, build_retrieval

log = logging.getLogger("benchmarks.stock_replay")
K = 10
LEAD_WEEKS = 2.0


def true_buy_probability(truth: SimTruth, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """P(buy | shown) of the simulator's funnel (click, cart, buy; no impression stage) for
    user / item index pairs in the user's home market."""
    aff = truth.affinity(users, items)
    lp = (np.log(truth.item_price[items]) - truth.log_price_mean) / truth.log_price_std
    mis = np.abs(truth.user_fit[users] - truth.item_fit[items]) - _MISMATCH_MEAN
    market = truth.user_home_market[users]
    p = np.ones(len(users))
    for stage in ("click", "cart", "buy"):
        s = truth.stages.index(stage)
        a, b, c, d = truth.stage_coef[s]
        logit = a + truth.market_stage_offset[market, s] + b * aff + c * lp + d * mis
        p *= 1.0 / (1.0 + np.exp(-logit))
    return p


def weekly_forecast(
    wanted: np.ndarray, day: int, items: list[str], origin: dt.date
) -> pl.DataFrame:
    """The oracle forecast from ``day``: 4 weeks of known demand (the last full week repeated
    beyond the window)."""
    n_days = wanted.shape[0]
    weeks = []
    for h in range(4):
        lo, hi = day + 7 * h, day + 7 * (h + 1)
        if hi > n_days:
            lo, hi = max(0, n_days - 7), n_days
        weeks.append(wanted[lo:hi].sum(axis=0) * 7.0 / max(hi - lo, 1))
    p50 = np.stack(weeks, axis=1)  # (I, 4)
    n = len(items)
    return pl.DataFrame(
        {
            "item": np.repeat(items, 4),
            "origin": [origin] * (n * 4),
            "horizon": np.tile(np.arange(1, 5), n),
            "mean": p50.ravel(),
            "p50": p50.ravel(),
            "p90": (p50 + 1.2816 * np.sqrt(p50)).ravel(),
            "p_no_sale": np.exp(-p50).ravel(),
        }
    )


def replay(
    art: Artifact,
    penalty: float,
    *,
    truth: SimTruth,
    wanted: np.ndarray,
    arrivals: np.ndarray,
    stock0: np.ndarray,
    shoppers: list[list[str]],
    seed: int,
    folder: Path,
    intent: float,
) -> dict[str, float]:
    """One pass through the window with ``stockout_penalty = penalty``."""
    cfg = RecommenderConfig(
        stockout_penalty=penalty, lead_time_weeks=LEAD_WEEKS, forecast=None, new_item_slots=0
    )
    rec = Recommender.from_artifact(art, cfg)
    items = rec.items
    index = np.array([int(i[1:]) for i in items])  # "i42" -> 42, the truth's row
    price = truth.item_price[index]
    stock = stock0.copy()
    rng = np.random.default_rng(seed)
    sold_rec = sold_other = revenue = rec_revenue = out_units = 0.0
    requests = at_risk_shown = 0
    t_rank = 0.0
    for d in range(wanted.shape[0]):
        stock += arrivals[d]
        if d % 7 == 0:  # a new forecast each week, the stock of that moment
            fc = weekly_forecast(wanted, d, items, dt.date(2024, 1, 1) + dt.timedelta(days=d))
            fc.write_parquet(folder / "forecast.parquet")
            rec.load_forecast(folder)
        rec.set_stock(dict(zip(items, stock.astype(int).tolist(), strict=True)))
        for user in shoppers[d]:
            t0 = time.perf_counter()
            ranked = rec.recommend(user, k=K)
            t_rank += time.perf_counter() - t0
            requests += 1
            draws = rng.random(K)  # the same draws for every setting: a paired comparison
            if not ranked:
                continue
            pos = np.array([rec.position(r.item) for r in ranked])
            risk = np.nan_to_num(rec.stock_state(pos)["p_stockout"], nan=0.0)
            at_risk_shown += int((risk >= 0.5).sum())
            u = np.full(len(pos), int(user[1:]))
            like = np.minimum(1.0, intent * true_buy_probability(truth, u, index[pos]))
            w = like / np.log2(np.arange(len(pos)) + 2)
            bought = np.flatnonzero(draws[: len(pos)] < w)
            if len(bought) == 0:
                continue
            p = pos[bought[0]]
            if stock[p] > 0:
                stock[p] -= 1
                sold_rec += 1
                rec_revenue += price[p]
                rec.set_stock({items[p]: int(stock[p])})
        filled = np.minimum(stock, wanted[d])
        out_units += float((wanted[d] - filled).sum())
        sold_other += float(filled.sum())
        revenue += float((filled * price).sum())
        stock -= filled
    return {
        "penalty": penalty,
        "requests": requests,
        "recommended_buys": sold_rec,
        "conversion": sold_rec / max(requests, 1),
        "other_units_sold": sold_other,
        "stockout_units": out_units,
        "recommended_revenue": rec_revenue,
        "revenue": revenue + rec_revenue,
        "at_risk_shown": at_risk_shown / max(requests, 1),
        "ms_per_list": 1000 * t_rank / max(requests, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--weeks", type=int, default=4, help="replay window (the test period)")
    ap.add_argument("--requests", type=int, default=100, help="recommendation requests a day")
    ap.add_argument("--penalties", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--intent", type=float, default=10.0, help="x the planted P(buy | shown)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="write here, not RESULTS.md")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    start = time.perf_counter()

    shop = simulate_shop(n_events=args.events, seed=args.seed)
    truth = shop.truth
    window = 7 * args.weeks
    n_days = truth.n_days
    t0 = n_days - window
    demand = shop.demand  # item, date, demand (units sold), lost_sales, stock (start of day)
    start_day = dt.date.fromisoformat(str(truth.start)[:10])
    n_all = n_days

    config = ExperimentConfig.from_dict(
        {
            "name": "stock_replay",
            "data": {
                "dataset": "simulated",
                "simulate": {"n_events": args.events, "seed": args.seed},
            },
            "split": {"kind": "time", "test_days": window, "valid_days": 7},
            "recipe": {"name": "pairs", "n_negatives": 4},
            "tasks": ["view", "cart", "buy"],
            "model": {
                "name": "mmoe",
                "embedding_dim": 16,
                "config": {"n_experts": 4, "expert_dims": [64], "tower_dims": [32]},
            },
            "train": {
                "epochs": args.epochs,
                "batch_size": 2048,
                "seed": args.seed,
                "patience": 2,
                "progress": False,
            },
            "evaluate": {"bootstrap": 0, "slices": False},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t_train = time.perf_counter()
        path = train_experiment(config, tmp_path / "artifact")
        build_retrieval(path)
        t_train = time.perf_counter() - t_train
        art = Artifact.load(path)
        items = art.items["item"].cast(pl.String).to_list()
        pos = {it: i for i, it in enumerate(items)}
        n_items = len(items)

        def matrix(col: str) -> np.ndarray:
            m = np.zeros((n_all, n_items))
            frame = demand.select("item", "date", col).filter(pl.col("item").is_in(items))
            r = (frame["date"] - start_day).dt.total_days().to_numpy()
            c = np.array([pos[i] for i in frame["item"].to_list()], dtype=np.int64)
            m[r, c] = frame[col].cast(pl.Float64).to_numpy()
            return m

        sold, lost, stock_start = matrix("demand"), matrix("lost_sales"), matrix("stock")
        wanted = (sold + lost)[n_all - window :]
        arrivals = np.zeros_like(wanted)
        s0 = n_all - window
        arrivals[1:] = np.maximum(stock_start[s0 + 1 :] - (stock_start[s0:-1] - sold[s0:-1]), 0.0)
        stock0 = stock_start[s0].copy()

        events = shop.dataset.interactions.df
        day_of = (pl.col("timestamp").dt.date() - start_day).dt.total_days()
        buyers = events.with_columns(day_of.alias("_day")).filter(
            (pl.col("behavior") == "buy") & (pl.col("_day") >= t0)
        )
        rng = np.random.default_rng(args.seed)
        shoppers = []
        for d in range(window):
            users = buyers.filter(pl.col("_day") == t0 + d)["user"].unique().sort().to_list()
            take = min(args.requests, len(users))
            shoppers.append(
                [str(u) for u in rng.choice(users, take, replace=False)] if take else []
            )

        rows = []
        for penalty in args.penalties:
            folder = tmp_path / f"forecast_{penalty:g}"
            folder.mkdir()
            rows.append(
                replay(
                    art,
                    penalty,
                    truth=truth,
                    wanted=wanted,
                    arrivals=arrivals,
                    stock0=stock0,
                    shoppers=shoppers,
                    seed=args.seed + 1,
                    folder=folder,
                    intent=args.intent,
                )
            )
            log.info("penalty %g: %s", penalty, rows[-1])

    base = next((r for r in rows if r["penalty"] == 0.0), rows[0])
    load = os.getloadavg()[0]
    lines = [
        "## Stock-aware recommendations: replay on the simulated shop (known future demand)",
        "",
        stamp(),
        f"- setting: simulated shop, {args.events:,} events, seed {args.seed}; MMoE (pairs) "
        f"trained on all but the last {args.weeks} weeks ({t_train:.0f} s); replay of those "
        f"{window} days with {sum(len(s) for s in shoppers):,} recommendation requests "
        f"({args.requests} a day: a cascade down the list, looked at with P 1/log2(rank + 1), "
        f"bought with {args.intent:g} x the planted P(buy | shown)) plus the shop's other "
        "simulated demand; restocks as in the simulation; "
        f"oracle weekly forecast, lead time {LEAD_WEEKS:g} weeks.",
        f"- {load_note(1, load)}; whole run {time.perf_counter() - start:.0f} s",
        "",
        "| stockout_penalty | recommended buys (per list) | their revenue | vs off | "
        "other units sold | stock-out units | vs off | shop revenue | vs off | "
        "at-risk items per list | ms / list |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def change(r: dict[str, float], key: str) -> float:
        return (r[key] - base[key]) / max(base[key], 1e-9)

    for r in rows:
        name = (
            "0 (off: the same recommender without it)" if r["penalty"] == 0 else f"{r['penalty']:g}"
        )
        lines.append(
            f"| {name} | {r['recommended_buys']:.0f} ({r['conversion']:.0%}) | "
            f"{r['recommended_revenue']:,.0f} | "
            f"{change(r, 'recommended_revenue'):+.1%} | {r['other_units_sold']:.0f} | "
            f"{r['stockout_units']:.0f} | {change(r, 'stockout_units'):+.1%} | "
            f"{r['revenue']:,.0f} | {change(r, 'revenue'):+.2%} | "
            f"{r['at_risk_shown']:.2f} | {r['ms_per_list']:.1f} |"
        )
    verdicts = []
    for r in (r for r in rows if r["penalty"] > 0):
        fewer = r["stockout_units"] < base["stockout_units"]
        shop, recs = -change(r, "revenue"), -change(r, "recommended_revenue")
        ok_shop, ok_recs = fewer and shop < 0.02, fewer and recs < 0.02
        verdicts.append(
            f"penalty {r['penalty']:g}: {'fewer' if fewer else 'NOT fewer'} stock-outs "
            f"({r['stockout_units']:.0f} vs {base['stockout_units']:.0f}); shop revenue "
            f"{'-' if shop > 0 else '+'}{abs(shop):.2%} (target {'met' if ok_shop else 'MISSED'}), "
            f"revenue of the recommended buys {'-' if recs > 0 else '+'}{abs(recs):.2%} "
            f"(target {'met' if ok_recs else 'MISSED'})"
        )
    lines += [
        "",
        "Target (fewer stock-outs at a revenue loss under 2%), judged on the whole shop's "
        "revenue and on the recommended buys' alone: " + "; ".join(verdicts) + ".",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    else:
        write_section("stock_replay", text)


if __name__ == "__main__":
    main()
