"""The demand forecaster: heads and losses, windows without leakage, the single-task twin,
metrics, the demand recipe through shoprec train, and shoprec forecast writing its files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from shoprec.inventory.forecast import ForecastOptions, make_windows, panel_features
from shoprec.inventory.metrics import forecast_metrics, trend_labels
from shoprec.inventory.series import build_panel, demand_from_simulation
from shoprec.models.forecaster import DemandForecaster, ForecasterConfig, example_batch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def panel():
    from shoprec.data.simulate import simulate_shop

    shop = simulate_shop(n_events=12_000, n_users=300, n_items=50, n_days=126, seed=1)
    return build_panel(demand_from_simulation(shop))


def test_quantiles_never_cross_and_predictions_are_in_units() -> None:
    cfg = ForecasterConfig(history_len=6, horizon=3, n_static=2, hidden=(16,))
    model = DemandForecaster(cfg)
    batch = example_batch(cfg, 9)
    pred = model.predict(batch)
    assert (pred["quantiles"][..., 1] >= pred["quantiles"][..., 0]).all()
    assert (pred["quantiles"] >= 0).all() and (pred["units"] > 0).all()
    torch.testing.assert_close(pred["trend"].sum(1), torch.ones(9))
    # the series' size is an input (log scale), not only a multiplier of the output
    big = {**batch, "scale": batch["scale"] * 2}
    assert not torch.equal(model(big)["units"], model(batch)["units"])


def test_single_task_twin_has_one_head_and_no_shared_parameters() -> None:
    cfg = ForecasterConfig(history_len=6, horizon=3, n_static=2, hidden=(16,), tasks=("units",))
    model = DemandForecaster(cfg)
    batch = example_batch(cfg, 4)
    assert list(model(batch)) == ["units"] and list(model.task_losses(model(batch), batch)) == [
        "units"
    ]
    assert model.shared_parameters() == [] and model.last_shared_layer() == []
    with pytest.raises(ValueError, match="tasks"):
        ForecasterConfig(tasks=("sales",))


def test_sample_weights_weight_the_loss() -> None:
    cfg = ForecasterConfig(history_len=6, horizon=3, n_static=2, hidden=(16,))
    model = DemandForecaster(cfg).eval()
    batch = example_batch(cfg, 6)
    out = model(batch)
    first_only = {**batch, "weight": torch.tensor([1.0, 0, 0, 0, 0, 0])}
    one = {k: v[:1] for k, v in batch.items()}
    for task, loss in model.task_losses(out, first_only).items():
        torch.testing.assert_close(loss, model.task_losses(model(one), one)[task])


def test_windows_read_only_the_past(panel) -> None:
    opts = ForecastOptions(history_len=6, horizon=3)
    feats = panel_features(panel, opts)
    origin = 10
    win = make_windows(panel, np.array([origin]), opts, feats)
    y = win.columns["units"].numpy()
    np.testing.assert_array_equal(y, panel.units[win.series, origin + 1 : origin + 4])
    scale = win.columns["scale"].numpy()[:, None]
    hist = win.columns["history"].numpy()[..., 0] * scale
    np.testing.assert_allclose(hist, panel.units[win.series, origin - 5 : origin + 1], rtol=1e-5)
    # changing the future does not change any input
    changed = panel.subset(np.arange(panel.n_series))
    changed.units = panel.units.copy()
    changed.units[:, origin + 1 :] += 7
    again = make_windows(changed, np.array([origin]), opts, panel_features(changed, opts))
    for key in ("history", "static", "future", "scale"):
        torch.testing.assert_close(again.columns[key], win.columns[key])
    with pytest.raises(ValueError, match="horizon"):
        make_windows(panel, np.array([panel.n_periods - 2]), opts, feats)


def test_metrics_on_a_known_case() -> None:
    y = np.array([[2.0, 0.0], [4.0, 4.0]])
    f = np.array([[1.0, 1.0], [4.0, 2.0]])
    hist = np.array([[0.0, 1.0, 3.0], [2.0, 2.0, 4.0]])
    m = forecast_metrics(
        y,
        f,
        hist,
        np.array([1, 0]),
        p90=f + 1,
        p_no_sale=np.array([[0.1, 0.9], [0.2, 0.3]]),
        trend_pred=np.array([1, 2]),
        trend_true=np.array([1, 1]),
    )
    assert m["wape"] == pytest.approx(4 / 10)
    # series 0: naive MAE 2 (one diff), errors 1, 1 -> 0.5; series 1: MAE 1, errors 0, 2 -> 1
    assert m["mase"] == pytest.approx(0.75)
    assert m["coverage90"] == pytest.approx(0.75) and m["no_sale_auc"] == 1.0
    assert m["trend_accuracy"] == 0.5
    assert trend_labels(
        np.array([[1.0], [5.0], [2.0]]), np.array([[5.0], [1.0], [2.0]])
    ).tolist() == [2, 0, 1]


def write_config(
    tmp_path: Path, recipe: str = "{name: demand, history_len: 6, horizon: 3, lead_time_weeks: 2}"
) -> Path:
    path = tmp_path / "demand.yaml"
    path.write_text(
        "name: t\n"
        "data: {dataset: simulated, simulate: {n_events: 12000, seed: 1, n_days: 126,"
        " n_users: 300, n_items: 50}}\n"
        f"recipe: {recipe}\n"
        "train: {epochs: 3, batch_size: 256, threads: 1, progress: false}\n"
        "output: run\n"
    )
    return path


def test_shoprec_forecast_writes_the_four_files(tmp_path: Path) -> None:
    from shoprec.cli import app

    result = CliRunner().invoke(app, ["forecast", str(write_config(tmp_path))])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run" / "forecast"
    fc = pl.read_parquet(folder / "forecast.parquet")
    assert fc.columns == [
        "item",
        "origin",
        "horizon",
        "week",
        "mean",
        "p50",
        "p90",
        "p_no_sale",
        "returns",
        "trend",
    ]
    assert fc["horizon"].unique().sort().to_list() == [1, 2, 3]
    assert (fc["p90"] >= fc["p50"]).all() and (fc["mean"] >= 0).all()
    assert fc["p_no_sale"].is_between(0, 1).all()
    assert set(fc["trend"].unique()) <= {"down", "flat", "up"}
    assert fc.n_unique("item") == 50  # every product, launched or not
    assert ((fc["week"] - fc["origin"]).dt.total_days() == fc["horizon"] * 7).all()
    hist = pl.read_parquet(folder / "history.parquet")
    assert hist.columns == ["item", "week", "units", "returns"]
    assert hist["week"].max() == fc["origin"].max()
    reorder = pl.read_parquet(folder / "reorder.parquet")
    assert reorder.columns[:3] == ["item", "stock", "lead_time_weeks"]
    assert reorder.height == 50 and (reorder["reorder_qty"] >= 0).all()
    meta = json.loads((folder / "forecast.json").read_text())
    assert meta["horizon"] == 3 and meta["stock_source"] == "catalog"
    assert "units/neg_wape" in meta["metrics"]["valid"]


def test_forecast_refuses_a_lead_time_beyond_the_horizon(tmp_path: Path) -> None:
    from shoprec.cli import app

    path = write_config(tmp_path, "{name: demand, horizon: 3, lead_time_weeks: 5}")
    result = CliRunner().invoke(app, ["forecast", str(path)])
    assert result.exit_code == 2 and "lead_time_weeks" in result.output


def test_demand_recipe_trains_through_the_front_door(tmp_path: Path) -> None:
    from shoprec.config import load_config
    from shoprec.experiment import train_experiment

    cfg = load_config(write_config(tmp_path))
    path = train_experiment(cfg)
    metrics = json.loads((path / "metrics.json").read_text())
    test = metrics["test"]["pointwise"]
    assert {"wape", "rmsse", "coverage90", "trend_accuracy"} <= set(test)
    assert 0 <= test["coverage90"] <= 1 and test["wape"] > 0
    from shoprec.artifact import Artifact

    art = Artifact.load(path)
    assert art.scorer.model.config.horizon == 3


@pytest.fixture(scope="module")
def market_panel():
    from shoprec.data.simulate import simulate_shop

    shop = simulate_shop(n_events=8_000, n_users=250, n_items=40, n_days=98, seed=2)
    return build_panel(demand_from_simulation(shop), by_market=True)


@pytest.mark.parametrize("mode", ["target_only", "joint", "fine_tune"])
def test_market_transfer_modes_train_for_the_target_markets(mode: str, market_panel) -> None:
    from shoprec.inventory.forecast import predict_windows
    from shoprec.inventory.transfer import fit_market_transfer
    from shoprec.train.loop import TrainConfig

    panel = market_panel
    assert len(panel.market_names) > 1
    opts = ForecastOptions(history_len=4, horizon=2)
    cfg = TrainConfig(epochs=1, batch_size=256, progress=False)
    origin = panel.n_periods - 3
    model = fit_market_transfer(panel, origin, opts, cfg, mode, lam=0.5)  # type: ignore[arg-type]
    target = np.flatnonzero(panel.market != 0)
    feats = panel_features(panel, opts)
    win = make_windows(panel, np.array([origin]), opts, feats, series=target, launching=False)
    pred = predict_windows(model, win)
    assert pred["units"].shape == (len(win), 2) and np.isfinite(pred["units"]).all()


def test_a_recommender_config_forecasts_through_its_forecast_section(tmp_path: Path) -> None:
    from shoprec.config import ConfigError, load_config
    from shoprec.inventory.forecast import run_forecast

    path = tmp_path / "shop.yaml"
    body = (
        "data: {dataset: simulated, simulate: {n_events: 6000, seed: 1, n_days: 84,"
        " n_users: 200, n_items: 30}}\n"
        "recipe: {name: pairs}\n"
        "train: {epochs: 1, batch_size: 256, threads: 1, progress: false}\n"
        "output: art\n"
    )
    path.write_text(body + "forecast: {horizon: 2, history_len: 4, lead_time_weeks: 1}\n")
    folder = run_forecast(load_config(path))
    assert folder == tmp_path / "art" / "forecast"
    assert pl.read_parquet(folder / "forecast.parquet")["horizon"].max() == 2
    path.write_text(body + "forecast: {horizon: 2, horizn: 3}\n")
    with pytest.raises(ConfigError, match="horizn"):
        load_config(path)


def test_daily_forecast_reports_lead_time_and_cover_in_weeks(tmp_path: Path) -> None:
    from shoprec.config import load_config
    from shoprec.inventory.forecast import run_forecast

    path = write_config(
        tmp_path, "{name: demand, freq: day, horizon: 14, history_len: 14, lead_time_weeks: 1}"
    )
    folder = run_forecast(load_config(path))
    fc = pl.read_parquet(folder / "forecast.parquet")
    assert fc["horizon"].max() == 14
    assert ((fc["week"] - fc["origin"]).dt.total_days() == fc["horizon"]).all()
    reorder = pl.read_parquet(folder / "reorder.parquet")
    assert (reorder["lead_time_weeks"] == 1.0).all()
