"""Write this folder's example shop files from the simulator (seeded, so they never change).

    .venv/bin/python examples/my_shop/make_files.py

events.csv          customer_id, sku, ts, event, qty, unit_price (a web shop's export)
events_no_time.csv  the same events without the ts column (as many public releases are)
catalog.csv         sku, name, category, price, stock
"""

from pathlib import Path

import polars as pl

from shoprec.data.simulate import simulate_shop

HERE = Path(__file__).parent
EVENT_NAMES = {
    "view": "pageview",
    "click": "click",
    "favorite": "wishlist",
    "cart": "addtocart",
    "buy": "transaction",
    "return": "refund",
}


def main() -> None:
    shop = simulate_shop(n_events=9_000, n_users=500, n_items=250, seed=7).dataset
    ev = shop.interactions.df.sort("timestamp")
    events = ev.select(
        pl.col("user").alias("customer_id"),
        pl.col("item").alias("sku"),
        pl.col("timestamp").dt.strftime("%Y-%m-%d %H:%M:%S").alias("ts"),
        pl.col("behavior").replace_strict(EVENT_NAMES).alias("event"),
        pl.col("quantity").alias("qty"),
        pl.col("price").round(2).alias("unit_price"),
    )
    # a few site searches, which map to no behavior: the config drops (and counts) them
    searches = events.head(40).with_columns(pl.lit("search").alias("event"))
    events = pl.concat([events, searches]).sort("ts", maintain_order=True)
    events.write_csv(HERE / "events.csv")
    events.drop("ts").write_csv(HERE / "events_no_time.csv")
    shop.catalog.df.select(
        pl.col("item").alias("sku"),
        pl.col("title").alias("name"),
        "category",
        pl.col("price").round(2),
        "stock",
    ).write_csv(HERE / "catalog.csv")


if __name__ == "__main__":
    main()
