"""A multi-task demand forecaster: one encoder, five heads, global over all series.

The network follows the direct multi-horizon designs of MQ-RNN / MQ-CNN (Wen, Torkkola,
Narayanaswamy, Madeka. "A Multi-Horizon Quantile Recurrent Forecaster". NIPS 2017 Time Series
Workshop): one shared encoder of a series' recent history and covariates feeds heads that
forecast every horizon ``1..H`` at once, and quantiles are trained with the pinball loss. Like
DeepAR (Salinas, Flunkert, Gasthaus, Januschowski. "DeepAR: Probabilistic forecasting with
autoregressive recurrent networks". IJF 2020) it is *global*, one network for every series,
and it divides each series by its own scale ``s = 1 + mean(recent units)`` so that one set of
weights serves a product that sells 3 units a week and one that sells 3,000. Sharing one
encoder between related tasks is Caruana's multi-task learning ("Multitask Learning", MLJ
1997): the no-sale, returns and trend signals shape the representation the unit forecast reads.

Heads (task names), all on the scaled series:

=============  ==================  =====================================================
``units``      ``(B, H)`` log rate  Tweedie deviance (power ``tweedie_power``) or Poisson
``quantiles``  ``(B, H, Q)``        pinball loss at ``quantiles`` (default P50, P90);
                                    monotone by construction (softplus increments)
``no_sale``    ``(B, H)`` logits    binary cross-entropy on "no unit sold that week"
``returns``    ``(B, H)`` log rate  Poisson deviance of the units returned
``trend``      ``(B, 3)`` logits    cross-entropy on down / flat / up (next H periods
                                    against the last H)
=============  ==================  =====================================================

Batch keys (see :func:`shoprec.inventory.forecast.make_windows`): ``history`` ``(B, L, 3)``
(scaled units, scaled returns, launched flag), ``static`` ``(B, S)`` numbers, ``future``
``(B, H, F)`` known future covariates (calendar), ``market``, ``category``, ``brand``
``(B,)`` ids, ``scale`` ``(B,)``; labels ``units``, ``returns`` ``(B, H)`` in units (not
scaled), ``trend`` ``(B,)`` class ids; optional ``weight`` ``(B,)`` sample weights (the
source market's lambda in joint transfer).

Configure ``tasks`` to one name for the single-task ablation: the same net with one head.

Example:
    >>> import torch
    >>> cfg = ForecasterConfig(history_len=8, horizon=4, n_static=3, hidden=(16,))
    >>> model = DemandForecaster(cfg)
    >>> batch = example_batch(cfg, 5)
    >>> out = model(batch)
    >>> tuple(out["units"].shape), tuple(out["quantiles"].shape), tuple(out["trend"].shape)
    ((5, 4), (5, 4, 2), (5, 3))
    >>> model.loss(out, batch).shape
    torch.Size([])
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from shoprec.models.features import Task
from shoprec.models.layers import MLP, Batch

__all__ = [
    "FORECAST_TASKS",
    "DemandForecaster",
    "ForecasterConfig",
    "example_batch",
    "load_forecaster",
    "save_forecaster",
]

#: Every head, in output order.
FORECAST_TASKS: tuple[str, ...] = ("units", "quantiles", "no_sale", "returns", "trend")
#: Trend classes, by id.
TREND_CLASSES: tuple[str, ...] = ("down", "flat", "up")

_KINDS = {
    "units": "regression",
    "quantiles": "regression",
    "no_sale": "binary",
    "returns": "regression",
    "trend": "multiclass",
}


@dataclass(frozen=True)
class ForecasterConfig:
    """Hyperparameters of :class:`DemandForecaster`."""

    history_len: int = 16  # L: periods of history the encoder reads
    horizon: int = 4  # H: periods forecast at once
    n_static: int = 0  # S: static numeric covariates (price, age, scale, title vector, ...)
    n_future: int = 4  # F: known future covariates per forecast period (calendar)
    n_markets: int = 1  # market ids 0..n_markets-1
    n_categories: int = 1  # category ids 0 (unknown) .. n_categories-1
    n_brands: int = 1  # brand ids 0 (unknown) .. n_brands-1
    id_dim: int = 4  # embedding width of market / category / brand
    hidden: tuple[int, ...] = (128, 64)  # the shared encoder's widths
    head_hidden: int = 32  # each head's hidden width (0: a linear head)
    dropout: float = 0.1
    tasks: tuple[str, ...] = FORECAST_TASKS  # heads trained (and built), a subset, in order
    task_weights: tuple[float, ...] = ()  # fixed weights per task (empty: all 1)
    quantiles: tuple[float, ...] = (0.5, 0.9)
    units_loss: str = "tweedie"  # tweedie | poisson
    tweedie_power: float = 1.5  # in (1, 2): between Poisson and Gamma

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in FORECAST_TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"forecaster tasks must be among {FORECAST_TASKS}, got {self.tasks}")
        if self.units_loss not in ("tweedie", "poisson"):
            raise ValueError(f"units_loss must be tweedie or poisson, got {self.units_loss!r}")
        if not 1.0 < self.tweedie_power < 2.0:
            raise ValueError(f"tweedie_power must be in (1, 2), got {self.tweedie_power}")
        if self.task_weights and len(self.task_weights) != len(self.tasks):
            raise ValueError("task_weights needs one weight per task")


class DemandForecaster(nn.Module):
    """Shared encoder over history + covariates, one head per task (see the module doc).

    Args:
        config: the hyperparameters.
    """

    model_name = "demand_forecaster"

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tasks = [
            Task(t, kind=_KINDS[t], n_classes=3 if t == "trend" else 1)  # type: ignore[arg-type]
            for t in c.tasks
        ]
        self.market = nn.Embedding(max(c.n_markets, 1), c.id_dim)
        self.category = nn.Embedding(max(c.n_categories, 1), c.id_dim)
        self.brand = nn.Embedding(max(c.n_brands, 1), c.id_dim)
        width = c.history_len * 3 + c.n_static + c.horizon * c.n_future + 3 * c.id_dim + 1
        self.encoder = MLP(width, c.hidden, dropout=c.dropout)
        h, q = c.horizon, len(c.quantiles)
        sizes = {"units": h, "quantiles": h * q, "no_sale": h, "returns": h, "trend": 3}
        self.heads = nn.ModuleDict({t: self._head(sizes[t]) for t in c.tasks})

    def _head(self, out: int) -> nn.Module:
        d, k = self.encoder.out_dim, self.config.head_hidden
        if k <= 0:
            return nn.Linear(d, out)
        return nn.Sequential(nn.Linear(d, k), nn.ReLU(), nn.Linear(k, out))

    @property
    def task_names(self) -> list[str]:
        return list(self.config.tasks)

    def encode(self, batch: Batch) -> Tensor:
        """The shared representation ``(B, D)``."""
        hist = batch["history"]  # (B, L, 3)
        b = hist.shape[0]
        parts = [
            hist.reshape(b, -1),
            batch["static"].reshape(b, -1),
            batch["future"].reshape(b, -1),  # (B, H * F)
            torch.log(batch["scale"]).reshape(b, 1),
            self.market(batch["market"]),
            self.category(batch["category"]),
            self.brand(batch["brand"]),
        ]
        return self.encoder(torch.cat(parts, dim=1))

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Each head's raw output, in task order (shapes in the module docstring)."""
        z = self.encode(batch)
        b, h = z.shape[0], self.config.horizon
        out: dict[str, Tensor] = {}
        for t in self.config.tasks:
            y = self.heads[t](z)
            if t == "quantiles":
                steps = y.reshape(b, h, len(self.config.quantiles))
                # first quantile >= 0, each next one above it: monotone, never crossing
                y = torch.cumsum(F.softplus(steps), dim=-1)  # (B, H, Q)
            out[t] = y
        return out

    def task_losses(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """Each head's loss on the scaled targets, a weighted mean over rows."""
        c = self.config
        scale = batch["scale"].unsqueeze(1)  # (B, 1)
        units = batch["units"] / scale  # (B, H)
        weight = batch.get("weight")
        if weight is None:
            weight = torch.ones_like(batch["scale"])
        wsum = weight.sum().clamp_min(1e-9)

        def mean(per_row: Tensor) -> Tensor:
            return (per_row * weight).sum() / wsum

        losses: dict[str, Tensor] = {}
        for t in c.tasks:
            o = outputs[t]
            if t in ("units", "returns"):
                o = o.clamp(-30.0, 30.0)  # log rates: exp() stays finite
            if t == "units":
                if c.units_loss == "poisson":
                    loss = torch.exp(o) - units * o
                else:
                    p = c.tweedie_power
                    loss = -units * torch.exp(o * (1 - p)) / (1 - p) + torch.exp(o * (2 - p)) / (
                        2 - p
                    )
                losses[t] = mean(loss.mean(1))
            elif t == "quantiles":
                qs = torch.tensor(c.quantiles, dtype=o.dtype, device=o.device)  # (Q,)
                diff = units.unsqueeze(-1) - o  # (B, H, Q)
                pinball = torch.maximum(qs * diff, (qs - 1) * diff)
                losses[t] = mean(pinball.mean((1, 2)))
            elif t == "no_sale":
                zero = (batch["units"] <= 0).to(o.dtype)
                bce = F.binary_cross_entropy_with_logits(o, zero, reduction="none")
                losses[t] = mean(bce.mean(1))
            elif t == "returns":
                ret = batch["returns"] / scale
                losses[t] = mean((torch.exp(o) - ret * o).mean(1))
            else:  # trend
                losses[t] = mean(F.cross_entropy(o, batch["trend"], reduction="none"))
        if c.task_weights:
            losses = {t: w * losses[t] for t, w in zip(c.tasks, c.task_weights, strict=True)}
        return losses

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """The sum of :meth:`task_losses`."""
        return torch.stack(list(self.task_losses(outputs, batch).values())).sum()

    @torch.no_grad()
    def predict(self, batch: Batch) -> dict[str, Tensor]:
        """Forecasts in units: ``units`` (mean, ``(B, H)``), ``quantiles`` ``(B, H, Q)``,
        ``no_sale`` probabilities, ``returns`` (mean units), ``trend`` class probabilities
        ``(B, 3)`` (only the configured heads)."""
        was = self.training
        self.eval()
        out = self.forward(batch)
        self.train(was)
        scale = batch["scale"].unsqueeze(1)
        pred: dict[str, Tensor] = {}
        for t, o in out.items():
            if t in ("units", "returns"):
                pred[t] = torch.exp(o.clamp(max=30.0)) * scale
            elif t == "quantiles":
                pred[t] = o * scale.unsqueeze(-1)
            elif t == "no_sale":
                pred[t] = torch.sigmoid(o)
            else:
                pred[t] = torch.softmax(o, dim=-1)
        return pred

    def shared_parameters(self) -> list[nn.Parameter]:
        """The encoder and id embeddings (every head reads them); none with one task."""
        if len(self.config.tasks) < 2:
            return []
        return [
            *self.encoder.parameters(),
            *self.market.parameters(),
            *self.category.parameters(),
            *self.brand.parameters(),
        ]

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The encoder's last linear layer (GradNorm's gradient norms are taken there)."""
        if len(self.config.tasks) < 2:
            return []
        linears = [m for m in self.encoder.modules() if isinstance(m, nn.Linear)]
        return list(linears[-1].parameters())


def save_forecaster(model: DemandForecaster, directory: str | Path) -> Path:
    """Write ``forecaster.json`` (config) and ``forecaster.safetensors`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"model": DemandForecaster.model_name, "config": dataclasses.asdict(model.config)}
    (directory / "forecaster.json").write_text(json.dumps(meta, indent=1) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "forecaster.safetensors"))
    return directory


def load_forecaster(directory: str | Path) -> DemandForecaster:
    """Read what :func:`save_forecaster` wrote; the model is in eval mode."""
    directory = Path(directory)
    meta = json.loads((directory / "forecaster.json").read_text())
    values: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()
    }
    model = DemandForecaster(ForecasterConfig(**values))
    model.load_state_dict(load_file(str(directory / "forecaster.safetensors")), strict=True)
    return model.eval()


def example_batch(config: ForecasterConfig, n: int, seed: int = 0) -> Batch:
    """A synthetic batch with planted signal: each series sells at its own level (seen in its
    history) times a horizon ramp; no-sale weeks, returns and the trend follow from it.

    Args:
        config: the model's config (for the shapes).
        n: rows.
        seed: the generator's seed.

    Returns:
        A batch with every key :class:`DemandForecaster` reads.
    """
    g = torch.Generator().manual_seed(seed)
    c = config
    level = torch.exp(torch.randn(n, 1, generator=g))  # (n, 1)
    slope = torch.randint(0, 3, (n,), generator=g)  # the trend class
    ramp = 1.0 + 0.3 * (slope.float() - 1.0).unsqueeze(1)  # down 0.7, flat 1, up 1.3
    hist = torch.poisson(level.expand(n, c.history_len), generator=g)
    steps = torch.arange(1, c.horizon + 1).float().unsqueeze(0) / c.horizon
    rate = level * ramp**steps  # (n, H)
    units = torch.poisson(rate, generator=g)
    scale = 1.0 + hist.mean(1)
    history = torch.stack(
        [hist / scale[:, None], torch.zeros_like(hist), torch.ones_like(hist)], -1
    )
    return {
        "history": history,
        "static": torch.randn(n, c.n_static, generator=g),
        "future": torch.randn(n, c.horizon, c.n_future, generator=g),
        "market": torch.zeros(n, dtype=torch.long),
        "category": torch.zeros(n, dtype=torch.long),
        "brand": torch.zeros(n, dtype=torch.long),
        "scale": scale,
        "units": units,
        "returns": torch.poisson(0.1 * rate, generator=g),
        "trend": slope,
    }
