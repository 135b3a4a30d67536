"""Transfer for demand: small markets from the big one, new products from similar ones.

*Markets.* On a panel of (product, market) series (``build_panel(..., by_market=True)``) the
source market (the biggest, market id 0: the UK in Online Retail) has years of dense sales;
the others have a few orders a month. Three ways to forecast a target market's series, the
same three steps as the recommender's cross-domain transfer
(:mod:`shoprec.recipes.cross_domain`), each an explicit call of the one training function:

* ``target_only``: train on the target markets' series alone (the no-transfer baseline);
* ``joint``: train on every series, the source market's samples weighted ``lam`` (the
  epoch is selected on the target series);
* ``fine_tune``: train on the source market, then keep training from those weights on the
  target series (learning rate ``fine_tune_lr_scale`` times lower).

The market is an input of the net (an embedding), so one model serves every market.

*New products* are handled inside the forecaster itself: the title vector and the demand
level of the most similar established products are covariates
(:func:`shoprec.inventory.forecast.make_windows`); ``use_text=False`` trains the
no-transfer twin.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Literal

import numpy as np

from shoprec.inventory.forecast import ForecastOptions, PanelFeatures, train_forecaster
from shoprec.inventory.series import Panel
from shoprec.models.forecaster import DemandForecaster

if TYPE_CHECKING:
    from shoprec.train.loop import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["MarketMode", "fit_market_transfer"]

MarketMode = Literal["target_only", "joint", "fine_tune"]


def fit_market_transfer(
    panel: Panel,
    origin: int,
    opts: ForecastOptions,
    train_config: TrainConfig,
    mode: MarketMode,
    *,
    source_market: int = 0,
    lam: float = 1.0,
    fine_tune_lr_scale: float = 0.3,
    seed: int | None = None,
    feats: PanelFeatures | None = None,
) -> DemandForecaster:
    """A forecaster for the target markets' series (every market but ``source_market``).

    Args:
        panel: a per-(product, market) panel.
        origin: the last period training may read.
        opts: forecaster settings.
        train_config: the loop's settings.
        mode: ``target_only``, ``joint`` or ``fine_tune`` (see the module docstring).
        source_market: the source market's id in ``panel.market``.
        lam: ``joint``: the weight of a source-market sample (target samples weigh 1).
        fine_tune_lr_scale: ``fine_tune``: the target phase's learning rate factor.
        seed: overrides the train config's seed.
        feats: precomputed panel features.

    Returns:
        The trained model (its epoch selected on the target series at ``origin - horizon``).

    Raises:
        ValueError: an unknown mode, or a panel with one market only.
    """
    source = np.flatnonzero(panel.market == source_market)
    target = np.flatnonzero(panel.market != source_market)
    if len(source) == 0 or len(target) == 0:
        raise ValueError("market transfer needs a panel with the source and other markets")
    common = {"seed": seed, "feats": feats, "valid_series": target}
    if mode == "target_only":
        model, _ = train_forecaster(panel, origin, opts, train_config, series=target, **common)
    elif mode == "joint":
        weight = np.where(panel.market == source_market, lam, 1.0).astype(np.float32)
        model, _ = train_forecaster(panel, origin, opts, train_config, weight=weight, **common)
    elif mode == "fine_tune":
        pre, _ = train_forecaster(
            panel, origin, opts, train_config, series=source, seed=seed, feats=feats
        )
        tuned = dataclasses.replace(train_config, lr=train_config.lr * fine_tune_lr_scale)
        model, _ = train_forecaster(panel, origin, opts, tuned, series=target, init=pre, **common)
    else:
        raise ValueError(
            f"unknown market transfer mode {mode!r}; use target_only, joint or fine_tune"
        )
    return model
