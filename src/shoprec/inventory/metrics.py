"""Forecast accuracy: pure functions of actuals, forecasts and the history before the origin.

One function, :func:`forecast_metrics`, scores any forecaster (ours and every peer of
``benchmarks/demand.py``) on the same rows:

* ``wape``: ``sum |y - f| / sum y`` over all series and horizons.
* ``mase``: mean over series of ``mean_h |y - f| / mean_t |y_t - y_{t-1}|`` (in-sample, from
  the series' first sale to the origin; series with no such difference are left out).
* ``rmsse``: M5's root mean squared scaled error, ``sqrt(mean_h (y - f)^2 / mean_t (y_t -
  y_{t-1})^2)``, averaged with weights = units sold in the ``weight_periods`` before the
  origin (the M5 weighting by recent volume).
* ``pinball50`` / ``pinball90``: the pinball loss at 0.5 / 0.9, summed and divided by
  ``sum y`` (scaled like WAPE, so series of every size count by their volume).
* ``coverage90``: share of ``y <= P90``.
* ``no_sale_auc``: AUC of P(no sale) against weeks with zero units.
* ``trend_accuracy``: share of series whose down / flat / up class is right.
"""

from __future__ import annotations

import numpy as np

from shoprec.evaluate.metrics import auc

__all__ = ["forecast_metrics", "naive_scales", "pinball", "trend_labels"]


def pinball(y: np.ndarray, q: np.ndarray, level: float) -> np.ndarray:
    """Elementwise pinball loss of quantile forecasts ``q`` at ``level``."""
    d = y - q
    return np.maximum(level * d, (level - 1.0) * d)


def naive_scales(history: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per series, the in-sample mean absolute and mean squared one-step naive error.

    Args:
        history: ``(N, T)`` units up to and including the origin.
        first: ``(N,)`` index of each series' first sale (differences start after it).

    Returns:
        ``(mae, mse)``, each ``(N,)``; NaN where the series has no difference yet.
    """
    t = history.shape[1]
    diff = np.diff(history, axis=1)  # (N, T - 1): diff[:, k] = y[k + 1] - y[k]
    valid = np.arange(1, t)[None, :] > first[:, None]
    n = valid.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.where(n > 0, (np.abs(diff) * valid).sum(1) / n, np.nan)
        mse = np.where(n > 0, (diff**2 * valid).sum(1) / n, np.nan)
    return mae, mse


def trend_labels(past: np.ndarray, future: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """Down (0) / flat (1) / up (2) from the mean units of the next and the last H periods.

    ``log((future + 0.5) / (past + 0.5))`` above ``threshold`` is up, below ``-threshold`` down.

    Args:
        past: ``(N, H)`` units of the last H periods.
        future: ``(N, H)`` units of the next H periods.
        threshold: the log-ratio band counted as flat.

    Returns:
        ``(N,)`` int64 class ids.
    """
    ratio = np.log((future.mean(1) + 0.5) / (past.mean(1) + 0.5))
    return np.where(ratio > threshold, 2, np.where(ratio < -threshold, 0, 1)).astype(np.int64)


def forecast_metrics(
    y: np.ndarray,
    mean: np.ndarray,
    history: np.ndarray,
    first: np.ndarray,
    *,
    p50: np.ndarray | None = None,
    p90: np.ndarray | None = None,
    p_no_sale: np.ndarray | None = None,
    trend_pred: np.ndarray | None = None,
    trend_true: np.ndarray | None = None,
    weight_periods: int = 26,
) -> dict[str, float]:
    """Accuracy of one forecast origin (see the module docstring).

    Args:
        y: ``(N, H)`` actual units.
        mean: ``(N, H)`` point forecasts.
        history: ``(N, T)`` units up to the origin (for the scales and weights).
        first: ``(N,)`` first-sale index of each series in ``history``.
        p50, p90: ``(N, H)`` quantile forecasts (``p50`` defaults to ``mean`` for the 0.5
            pinball; without ``p90`` its metrics are NaN).
        p_no_sale: ``(N, H)`` P(zero units).
        trend_pred, trend_true: ``(N,)`` class ids.
        weight_periods: periods before the origin whose units weight RMSSE.

    Returns:
        ``{metric: value}``; NaN where a metric cannot be computed.
    """
    y = np.asarray(y, np.float64)
    mean = np.asarray(mean, np.float64)
    total = max(float(y.sum()), 1e-9)
    out: dict[str, float] = {"n_series": float(y.shape[0]), "units": float(y.sum())}
    if y.size == 0:
        return out
    err = mean - y
    out["wape"] = float(np.abs(err).sum() / total)
    mae, mse = naive_scales(history, first)
    ok = np.isfinite(mae) & (mae > 0)
    out["mase"] = float(np.mean(np.abs(err[ok]).mean(1) / mae[ok])) if ok.any() else np.nan
    ok2 = np.isfinite(mse) & (mse > 0)
    w = history[:, -weight_periods:].sum(1)
    if ok2.any() and w[ok2].sum() > 0:
        rmsse = np.sqrt((err[ok2] ** 2).mean(1) / mse[ok2])
        out["rmsse"] = float(np.average(rmsse, weights=w[ok2]))
    else:
        out["rmsse"] = np.nan
    med = mean if p50 is None else np.asarray(p50, np.float64)
    out["pinball50"] = float(pinball(y, med, 0.5).sum() / total)
    if p90 is not None:
        p90 = np.asarray(p90, np.float64)
        out["pinball90"] = float(pinball(y, p90, 0.9).sum() / total)
        out["coverage90"] = float((y <= p90 + 1e-9).mean())
    else:
        out["pinball90"] = out["coverage90"] = np.nan
    zero = (y <= 0).ravel()
    if p_no_sale is not None and 0 < zero.mean() < 1:
        out["no_sale_auc"] = float(auc(zero.astype(np.float64), np.asarray(p_no_sale).ravel()))
    else:
        out["no_sale_auc"] = np.nan
    if trend_pred is not None and trend_true is not None:
        out["trend_accuracy"] = float((np.asarray(trend_pred) == np.asarray(trend_true)).mean())
    else:
        out["trend_accuracy"] = np.nan
    return out
