"""A self-contained HTML report of one evaluation: tables, slices, curves, calibration.

:func:`write_report` turns a :class:`Report` into **one** HTML file that needs nothing else: the
CSS is inline, there is no JavaScript, no web font and no link to another file; every plot is an
inline SVG drawn by matplotlib (Agg backend, text kept as ``<text>`` so it stays sharp and
searchable). Every part of a :class:`Report` is optional and rendered only when given:

* a metrics table (ours vs peers; the best value of each column in bold),
* a metric by slice with confidence intervals (one panel per metric),
* learning curves from a training history (loss and each validation metric per epoch, the
  best epoch marked),
* per-task calibration (reliability diagrams with the diagonal and the ECE),
* coverage and popularity bias of recommended lists vs k (ours vs a popularity baseline),
* exposure by item-popularity decile and by catalog group (coverage@k and the Gini index in
  the metrics table; :mod:`shoprec.evaluate.fairness`),
* a trials table (hyper-parameter search) and free notes.

Example:
    >>> report = Report(
    ...     "ML-1M", subtitle="recipe pairs, commit abc123",
    ...     metrics={"ours": {"ndcg@10": 0.21}, "BPR-MF": {"ndcg@10": 0.18}}, ours=["ours"],
    ... )
    >>> write_report(tmp / "report.html", report)  # doctest: +SKIP
"""

from __future__ import annotations

import html
import io
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from shoprec.evaluate.protocols import RankingResult

__all__ = [
    "Report",
    "coverage_curve",
    "popularity_percentile_curve",
    "reliability",
    "render_html",
    "slice_table",
    "write_report",
]

Cell = float | int | tuple[float, float, float]
"""A table or slice value: a number, or ``(value, low, high)`` with a confidence interval."""

_LOWER_IS_BETTER = ("loss", "rmse", "mae", "ece", "rank", "error", "gini")
_MAX_CURVE_PANELS = 9
_SLICE_FAMILIES = ("ndcg", "hr", "recall", "auc", "gauc", "mrr", "precision")


@dataclass
class Report:
    """What goes into a report; every part but the title is optional.

    Attributes:
        title: the page title (plain text; escaped).
        subtitle: one line under it, e.g. ``"dataset ml-1m, recipe pairs, commit abc123"``.
        metrics: table rows ``name -> {metric -> value or (value, low, high)}``.
        ours: names of the rows that are ours (highlighted); the other rows are peers.
        slices: ``slice -> {metric -> value or (value, low, high)}``; a ``users`` entry, if
            present, is shown next to the slice name. See :func:`slice_table`.
        slice_metrics: which metrics of ``slices`` to plot (default: all but ``users``, at
            most four).
        history: training history, one dict per epoch with ``epoch``, ``train_loss`` and
            validation metrics such as ``valid/buy/auc``.
        monitor: the history key that picked the best epoch (default: the first validation
            metric that is not a loss); maximised unless its name says loss/rmse/mae.
        calibration: ``task -> (y, p)``: binary labels and predicted probabilities.
        recommendations: ``name -> top-k item lists`` (a ``(U, K)`` int array, or one array
            per user), e.g. ``{"ours": ..., "popularity": ...}``.
        popularity: ``(I,)`` item popularity (e.g. training events), needed with
            ``recommendations``; its length is the catalog size.
        exposure: ``name -> summary`` from :func:`shoprec.evaluate.fairness.exposure_summary`
            (e.g. ours, the served list, popularity): plotted as the share of exposure by
            popularity decile (beside the share of training events) and by catalog group.
        trials: hyper-parameter search results, one dict per trial.
        trials_metric: the trials column to rank by (best row highlighted).
        notes: free text, one string per paragraph (escaped).
    """

    title: str
    subtitle: str = ""
    metrics: Mapping[str, Mapping[str, Cell]] | None = None
    ours: Sequence[str] = ()
    slices: Mapping[str, Mapping[str, Cell]] | None = None
    slice_metrics: Sequence[str] | None = None
    history: Sequence[Mapping[str, float]] | None = None
    monitor: str | None = None
    calibration: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
    recommendations: Mapping[str, np.ndarray | Sequence[np.ndarray]] | None = None
    popularity: np.ndarray | None = None
    exposure: Mapping[str, Mapping[str, object]] | None = None
    trials: Sequence[Mapping[str, object]] | None = None
    trials_metric: str | None = None
    notes: str | Sequence[str] = field(default_factory=tuple)

    @classmethod
    def from_results(
        cls,
        title: str,
        results: Mapping[str, RankingResult],
        ours: Sequence[str] = (),
        slices: Mapping[str, RankingResult] | None = None,
        **parts: object,
    ) -> Report:
        """A report whose tables come from :class:`~shoprec.evaluate.protocols.RankingResult`.

        Args:
            title: page title.
            results: row name -> result (its intervals are shown when :meth:`with_ci` ran).
            ours: rows that are ours.
            slices: slice name -> result (e.g. from
                :func:`~shoprec.evaluate.protocols.evaluate_slices`).
            **parts: any other :class:`Report` field.

        Returns:
            The report.
        """
        table = {name: _result_row(r) for name, r in results.items()}
        return cls(
            title,
            metrics=table,
            ours=ours,
            slices=None if slices is None else slice_table(slices),
            **parts,  # type: ignore[arg-type]
        )

    @property
    def n_plots(self) -> int:
        """How many plots (inline SVGs) the report will hold."""
        return sum(
            [
                bool(self.slices) and bool(self._slice_metric_names()),
                bool(self.history),
                bool(self.calibration),
                bool(self.recommendations),
                bool(self._exposure()),
            ]
        )

    def _exposure(self) -> dict[str, Mapping[str, object]]:
        return {n: e for n, e in (self.exposure or {}).items() if e.get("by_popularity_decile")}

    def _slice_metric_names(self) -> list[str]:
        if not self.slices:
            return []
        if self.slice_metrics is not None:
            return list(self.slice_metrics)
        names: list[str] = []
        for row in self.slices.values():
            names += [k for k in row if k != "users" and k not in names]
        # One metric per family (the first cut-off), in a fixed order of interest.
        picked = [
            next(n for n in names if n.split("@")[0] == fam)
            for fam in _SLICE_FAMILIES
            if any(n.split("@")[0] == fam for n in names)
        ]
        return (picked or names)[:4]


# --------------------------------------------------------------------------------------------
# Numbers behind the plots
# --------------------------------------------------------------------------------------------


def _result_row(r: RankingResult) -> dict[str, Cell]:
    row: dict[str, Cell] = {}
    for k, v in r.metrics.items():
        row[k] = (v, *r.ci[k]) if k in r.ci else v
    return row


def slice_table(results: Mapping[str, RankingResult]) -> dict[str, dict[str, Cell]]:
    """``slice -> {metric -> (value, low, high) or value}`` from per-slice results.

    Args:
        results: slice name -> :class:`~shoprec.evaluate.protocols.RankingResult`.

    Returns:
        The :attr:`Report.slices` mapping (intervals where the results have them).
    """
    return {name: _result_row(r) for name, r in results.items()}


def reliability(
    y: np.ndarray, p: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability-diagram bins: equal-width bins of the predicted probability.

    Args:
        y: ``(N,)`` binary labels.
        p: ``(N,)`` predicted probabilities in ``[0, 1]``.
        n_bins: number of bins over ``[0, 1]``.

    Returns:
        ``(mean_predicted, observed_rate, count)``, each ``(n_bins,)``; empty bins are NaN.

    Example:
        >>> m, o, c = reliability(np.array([0, 1, 1, 1]), np.array([0.1, 0.15, 0.9, 0.95]), 2)
        >>> o.tolist(), c.tolist()
        ([0.5, 1.0], [2, 2])
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    b = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(b, weights=p, minlength=n_bins) / count
        observed = np.bincount(b, weights=y, minlength=n_bins) / count
    return mean_p, observed, count


def _as_topk(lists: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """``(U, K)`` int matrix of item lists, shorter lists padded with -1."""
    if isinstance(lists, np.ndarray) and lists.ndim == 2:
        return lists.astype(np.int64)
    arrays = [np.asarray(a, dtype=np.int64).ravel() for a in lists]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    out = np.full((len(arrays), width), -1, dtype=np.int64)
    if width:
        rows = np.repeat(np.arange(len(arrays)), lengths)
        cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[rows, cols] = np.concatenate(arrays)
    return out


def coverage_curve(lists: np.ndarray | Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Catalog coverage@k for k = 1..K: share of items in at least one user's top k.

    Args:
        lists: ``(U, K)`` recommended item positions per user, or one array per user
            (best first; -1 pads).
        n_items: catalog size.

    Returns:
        ``(K,)`` coverage in ``[0, 1]``.

    Example:
        >>> coverage_curve(np.array([[0, 1], [0, 2]]), 4).tolist()
        [0.25, 0.75]
    """
    topk = _as_topk(lists)
    k_max = topk.shape[1]
    first = np.full(n_items, k_max, dtype=np.int64)  # first position each item is shown at
    valid = topk >= 0
    positions = np.broadcast_to(np.arange(k_max), topk.shape)
    np.minimum.at(first, topk[valid], positions[valid])
    return np.cumsum(np.bincount(first[first < k_max], minlength=k_max)) / max(n_items, 1)


def popularity_percentile_curve(
    lists: np.ndarray | Sequence[np.ndarray], popularity: np.ndarray
) -> np.ndarray:
    """Mean popularity percentile of the items in the top k, for k = 1..K.

    An item's percentile is the share of the catalog less popular than it (ties count half),
    times 100: 50 is typical, near 100 means only best-sellers are recommended.

    Args:
        lists: ``(U, K)`` recommended item positions per user (or one array per user).
        popularity: ``(I,)`` item popularity.

    Returns:
        ``(K,)`` mean percentile over all recommended (user, item) entries in the top k.

    Example:
        >>> popularity_percentile_curve(np.array([[3, 0]]), np.array([1, 2, 3, 4])).tolist()
        [87.5, 50.0]
    """
    topk = _as_topk(lists)
    pop = np.asarray(popularity, dtype=np.float64).ravel()
    _, inv, cnt = np.unique(pop, return_inverse=True, return_counts=True)
    below = np.cumsum(cnt) - cnt
    pct = ((below + 0.5 * cnt) / len(pop) * 100.0)[inv]  # (I,)
    valid = topk >= 0
    values = np.where(valid, pct[np.where(valid, topk, 0)], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.cumsum(values.sum(axis=0)) / np.cumsum(valid.sum(axis=0))


def _lower_is_better(name: str) -> bool:
    return any(s in name.lower() for s in _LOWER_IS_BETTER)


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------

_RC = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial", "Liberation Sans"],
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 9,
    "legend.frameon": False,
}


def _figure(n_panels: int, ncols: int = 3, panel: tuple[float, float] = (3.6, 2.9)) -> Figure:
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig


def _svg(fig: Figure, salt: str, label: str) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog, no fixed size)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt}):  # distinct element ids per plot
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(label)}" ', 1)


def _split(cell: Cell) -> tuple[float, float, float]:
    if isinstance(cell, tuple | list):
        v, lo, hi = cell
        return float(v), float(lo), float(hi)
    return float(cell), float("nan"), float("nan")


def _plot_slices(report: Report) -> Figure:
    names = report._slice_metric_names()
    slices = report.slices or {}
    fig = _figure(len(names), ncols=2, panel=(4.6, 0.9 + 0.42 * len(slices)))
    labels = []
    for name, row in slices.items():
        users = row.get("users")
        labels.append(f"{name} (n={int(_split(users)[0])})" if users is not None else name)
    y = np.arange(len(slices))[::-1]  # first slice on top
    for ax, metric in zip(fig.axes, names, strict=False):
        vals = np.array([_split(row.get(metric, float("nan"))) for row in slices.values()])
        v, lo, hi = vals.T
        has_ci = ~np.isnan(lo)
        ax.errorbar(
            v[has_ci],
            y[has_ci],
            xerr=np.vstack([v - lo, hi - v])[:, has_ci],
            fmt="o",
            color="C0",
            ecolor="C0",
            capsize=3,
        )
        ax.plot(v[~has_ci], y[~has_ci], "o", color="C0")
        ax.set_yticks(y, labels)
        ax.set_ylim(-0.6, len(slices) - 0.4)
        ax.set_xlabel(metric)
        ax.set_title(f"{metric} by slice")
        ax.grid(axis="y", visible=False)
    return fig


def _best_epoch(history: Sequence[Mapping[str, float]], monitor: str) -> int | None:
    vals = np.array([float(h.get(monitor, np.nan)) for h in history])
    if np.isnan(vals).all():
        return None
    i = int(np.nanargmin(vals) if _lower_is_better(monitor) else np.nanargmax(vals))
    return i


def _plot_history(report: Report) -> Figure:
    from matplotlib.ticker import MaxNLocator

    history = list(report.history or [])
    epochs = np.array([float(h.get("epoch", i + 1)) for i, h in enumerate(history)])
    keys: list[str] = []
    for h in history:
        keys += [
            k
            for k, v in h.items()
            if k != "epoch" and k not in keys and isinstance(v, numbers.Real)
        ]
    loss_keys = [k for k in keys if "loss" in k.lower()]
    metric_keys = [k for k in keys if k not in loss_keys]
    panels: list[list[str]] = ([loss_keys] if loss_keys else []) + [[k] for k in metric_keys]
    panels = panels[:_MAX_CURVE_PANELS]
    monitor = report.monitor or next(
        (k for k in metric_keys if k.startswith("valid")), metric_keys[0] if metric_keys else None
    )
    best = _best_epoch(history, monitor) if monitor else None
    fig = _figure(len(panels), ncols=3)
    for ax, group in zip(fig.axes, panels, strict=False):
        for j, k in enumerate(group):
            vals = np.array([float(h.get(k, np.nan)) for h in history])
            ax.plot(epochs, vals, marker="o", ms=3, color=f"C{j}", label=k)
            if best is not None and k == monitor:
                ax.plot(epochs[best], vals[best], "*", ms=12, color="C3", zorder=3)
        if best is not None:
            label = f"best epoch {epochs[best]:g}"
            ax.axvline(epochs[best], color="C3", ls="--", lw=1, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        ax.set_ylabel("loss" if group is loss_keys else group[0].rsplit("/", 1)[-1])
        ax.set_title("training loss" if group is loss_keys else group[0])
        ax.legend(loc="best")
    return fig


def _plot_calibration(report: Report) -> Figure:
    tasks = report.calibration or {}
    fig = _figure(len(tasks), ncols=3, panel=(4.0, 3.4))
    for ax, (task, (y, p)) in zip(fig.axes, tasks.items(), strict=False):
        mean_p, observed, count = reliability(y, p)
        n = max(int(count.sum()), 1)
        ok = count > 0
        ece = float(np.sum(count[ok] * np.abs(observed[ok] - mean_p[ok])) / n)
        ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfectly calibrated")
        ax.plot(mean_p[ok], observed[ok], marker="o", color="C0", label="model")
        share = ax.twinx()
        share.bar(
            (np.arange(len(count)) + 0.5) / len(count),
            count / n,
            width=1.0 / len(count),
            color="C0",
            alpha=0.12,
        )
        share.set_ylim(0, 1)
        share.set_ylabel("share of predictions", color="0.4")
        share.grid(False)
        share.spines["right"].set_visible(True)
        ax.set_zorder(share.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed rate")
        ax.set_title(f"{task} (ECE {ece:.3f})")
        ax.legend(loc="upper left")
    return fig


def _plot_coverage(report: Report) -> Figure:
    if report.popularity is None:
        raise ValueError("recommendations need item popularity (Report.popularity)")
    pop = np.asarray(report.popularity, dtype=np.float64)
    fig = _figure(2, ncols=2, panel=(4.6, 3.2))
    ax_cov, ax_pop = fig.axes[:2]
    for j, (name, lists) in enumerate((report.recommendations or {}).items()):
        cov = coverage_curve(lists, len(pop))
        pct = popularity_percentile_curve(lists, pop)
        k = np.arange(1, len(cov) + 1)
        ax_cov.plot(k, cov, marker="o", ms=3, color=f"C{j}", label=name)
        ax_pop.plot(k, pct, marker="o", ms=3, color=f"C{j}", label=name)
    ax_cov.set_xlabel("k (list length)")
    ax_cov.set_ylabel("catalog coverage@k")
    ax_cov.set_title("share of catalog recommended")
    ax_cov.set_ylim(bottom=0)
    ax_pop.axhline(50, ls="--", color="0.5", lw=1, label="catalog median")
    ax_pop.set_xlabel("k (list length)")
    ax_pop.set_ylabel("mean popularity percentile")
    ax_pop.set_title("popularity of recommended items")
    ax_pop.set_ylim(0, 100)
    for ax in (ax_cov, ax_pop):
        ax.legend(loc="best")
    return fig


def _plot_exposure(report: Report) -> Figure:
    exposure = report._exposure()
    first = next(iter(exposure.values()))
    by_group = {n: e["by_group"] for n, e in exposure.items() if e.get("by_group")}
    fig = _figure(2 if by_group else 1, ncols=2, panel=(5.2, 3.4))
    ax = fig.axes[0]
    deciles = np.arange(1, 11)
    width = 0.8 / max(len(exposure), 1)
    for j, (name, e) in enumerate(exposure.items()):
        shares = np.asarray(e["by_popularity_decile"]["exposure"], dtype=np.float64)  # type: ignore[index]
        ax.bar(deciles - 0.4 + width * (j + 0.5), shares, width, color=f"C{j}", label=name)
    events = np.asarray(first["by_popularity_decile"]["events"], dtype=np.float64)  # type: ignore[index]
    ax.plot(deciles, events, "k--", marker="o", ms=3, lw=1, label="training events")
    ax.set_xticks(deciles)
    ax.set_xlabel("item popularity decile (1 = least sold, 10 = best-sellers)")
    ax.set_ylabel(f"share of top-{first.get('k')} exposure")
    ax.set_title("exposure by popularity decile")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left")
    if by_group:
        axg = fig.axes[1]
        name0, g0 = next(iter(by_group.items()))
        names = [n for n in g0["groups"] if n != "other"][:10]  # type: ignore[index]
        y = np.arange(len(names))[::-1]
        height = 0.8 / (len(by_group) + 1)
        for j, (name, g) in enumerate(by_group.items()):
            vals = [g["groups"].get(n, {}).get("exposure", 0.0) for n in names]  # type: ignore[index,union-attr]
            axg.barh(y + 0.4 - height * (j + 0.5), vals, height, color=f"C{j}", label=name)
        items = [g0["groups"][n]["items"] for n in names]  # type: ignore[index]
        axg.barh(
            y + 0.4 - height * (len(by_group) + 0.5), items, height, color="0.7", label="catalog"
        )
        axg.set_yticks(y, [str(n)[:24] for n in names])
        axg.set_xlabel(f"share of top-{first.get('k')} exposure")
        axg.set_title(f"exposure by {g0.get('column')} (most exposed, {name0})")  # type: ignore[union-attr]
        axg.legend(loc="lower right")
        axg.grid(axis="y", visible=False)
    return fig


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
  margin: 0 auto; max-width: 1180px; padding: 24px 32px 48px; color: #1d232a;
  background: #fff; line-height: 1.45; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
.subtitle { color: #56606b; margin: 0 0 24px; }
h2 { font-size: 1.2rem; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #dde2e7; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 8px 0; }
.scroll { overflow-x: auto; }
table.metrics { font-size: 0.9em; }
th, td { padding: 5px 9px; text-align: right; border-bottom: 1px solid #e8ebee; }
td:first-child { white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f4f6f8; font-weight: 600; }
tr.ours td { background: #eef5ff; }
tr.ours td:first-child { font-weight: 600; }
tr.best td { background: #effaf0; }
.tag { font-size: 0.75em; color: #1f5fbf; border: 1px solid #a9c6ef; border-radius: 3px;
  padding: 0 4px; margin-left: 6px; font-weight: 400; }
.ci { color: #6a737d; font-size: 0.85em; }
td .ci { display: block; white-space: nowrap; font-weight: 400; font-size: 0.8em; }
td.bestval { font-weight: 700; }
figure { margin: 8px 0 16px; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption { color: #56606b; font-size: 0.9em; margin-top: 4px; }
.notes p { margin: 6px 0; }
footer { margin-top: 40px; color: #8a939c; font-size: 0.8em; }
"""


def _fmt(x: object) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, numbers.Integral):
        return f"{int(x):,}"
    if isinstance(x, numbers.Real):
        v = float(x)
        if math.isnan(v):
            return "–"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.1f}"
    return html.escape(str(x))


def _cell_html(cell: Cell | None) -> str:
    if isinstance(cell, tuple | list):
        v, lo, hi = cell
        return f'{_fmt(v)} <span class="ci">[{_fmt(lo)}, {_fmt(hi)}]</span>'
    return _fmt(cell)


def _metrics_table(report: Report) -> str:
    rows = report.metrics or {}
    cols: list[str] = []
    for row in rows.values():
        cols += [c for c in row if c not in cols]
    best: dict[str, float] = {}
    for c in cols:
        vals = np.array([_split(r[c])[0] for r in rows.values() if c in r], dtype=np.float64)
        if c != "users" and len(rows) > 1 and (~np.isnan(vals)).any():
            best[c] = float(np.nanmin(vals) if _lower_is_better(c) else np.nanmax(vals))
    ours = set(report.ours)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for name, row in rows.items():
        tag = ' <span class="tag">ours</span>' if name in ours else ""
        cells = []
        for c in cols:
            is_best = c in best and c in row and _split(row[c])[0] == best[c]
            cls = ' class="bestval"' if is_best else ""
            cells.append(f"<td{cls}>{_cell_html(row.get(c))}</td>")
        cls = ' class="ours"' if name in ours else ""
        body.append(f"<tr{cls}><td>{html.escape(name)}{tag}</td>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table class="metrics"><thead><tr><th>model</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        '<p class="ci">Best value of each column in bold; [low, high] is a bootstrap 95% '
        "interval over users where given.</p>"
    )


def _trials_table(report: Report) -> str:
    trials = list(report.trials or [])
    cols: list[str] = []
    for t in trials:
        cols += [c for c in t if c not in cols]
    best_i = None
    if report.trials_metric:
        vals = np.array([float(t.get(report.trials_metric, np.nan)) for t in trials])
        if (~np.isnan(vals)).any():
            lower = _lower_is_better(report.trials_metric)
            best_i = int(np.nanargmin(vals) if lower else np.nanargmax(vals))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for i, t in enumerate(trials):
        cls = ' class="best"' if i == best_i else ""
        cells = "".join(f"<td>{_fmt(t.get(c))}</td>" for c in cols)
        body.append(f"<tr{cls}><td>{i + 1}</td>{cells}</tr>")
    note = (
        f'<p class="ci">Best trial by {html.escape(report.trials_metric)} highlighted.</p>'
        if best_i is not None
        else ""
    )
    return (
        f'<div class="scroll"><table class="trials"><thead><tr><th>#</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{note}"
    )


def render_html(report: Report) -> str:
    """The report as one HTML document (a string); see :func:`write_report`."""
    import matplotlib

    matplotlib.use("Agg")
    sections: list[str] = []
    plots = 0

    def figure(make: object, caption: str, label: str) -> str:
        nonlocal plots
        fig = make(report)  # type: ignore[operator]
        plots += 1
        svg = _svg(fig, f"shoprec-report-{plots}", label)
        return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"

    with matplotlib.rc_context(_RC):
        if report.metrics:
            sections.append(f"<h2>Metrics</h2>{_metrics_table(report)}")
        if report.slices and report._slice_metric_names():
            sections.append(
                "<h2>By slice</h2>"
                + figure(
                    _plot_slices,
                    "Metric by slice; error bars are bootstrap 95% intervals over users. "
                    "Users with no relevant item in a slice are left out of it.",
                    "metric by slice",
                )
            )
        if report.history:
            sections.append(
                "<h2>Learning curves</h2>"
                + figure(
                    _plot_history,
                    "Training loss and validation metrics per epoch; the dashed line marks "
                    "the epoch selected on validation.",
                    "learning curves",
                )
            )
        if report.calibration:
            sections.append(
                "<h2>Calibration</h2>"
                + figure(
                    _plot_calibration,
                    "Reliability diagrams: predictions in 10 equal-width bins, observed "
                    "positive rate per bin (bars: share of predictions in each bin).",
                    "calibration",
                )
            )
        if report.recommendations:
            sections.append(
                "<h2>Coverage and popularity bias</h2>"
                + figure(
                    _plot_coverage,
                    "Catalog coverage@k of the recommended lists and the mean popularity "
                    "percentile of the recommended items (100 = the best-sellers).",
                    "coverage and popularity bias",
                )
            )
        if report._exposure():
            sections.append(
                "<h2>Exposure and fairness</h2>"
                + figure(
                    _plot_exposure,
                    "Share of the top-k slots that goes to each tenth of the catalog by "
                    "training popularity (dashed: the share of training events those items "
                    "hold), and to the most exposed catalog groups beside their share of the "
                    "catalog. Coverage@k and the Gini index of exposure are in the metrics "
                    "table.",
                    "exposure by popularity decile",
                )
            )
        if report.trials:
            sections.append(f"<h2>Trials</h2>{_trials_table(report)}")
    notes = [report.notes] if isinstance(report.notes, str) else list(report.notes)
    if notes:
        paras = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
        sections.append(f'<h2>Notes</h2><div class="notes">{paras}</div>')
    subtitle = f'<p class="subtitle">{html.escape(report.subtitle)}</p>' if report.subtitle else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head>"
        f"<body><header><h1>{html.escape(report.title)}</h1>{subtitle}</header>"
        f"<main>{''.join(sections)}</main>"
        "<footer>Written by shoprec; self-contained (no scripts or external files).</footer>"
        "</body></html>\n"
    )


def write_report(path: str | Path, report: Report) -> Path:
    """Write ``report`` as one self-contained HTML file.

    Plots are inline SVGs made with matplotlib's Agg backend (``svg.fonttype: none``); the
    page loads nothing from elsewhere, so it can be mailed or archived as it is.

    Args:
        path: the ``.html`` file to write (parent folders are created).
        report: what to show.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path
