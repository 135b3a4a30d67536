"""The ``shoprec`` command line. Every command is a few lines over the Python API."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from shoprec.errors import ShoprecError

app = typer.Typer(
    help="shoprec: multi-task and transfer learning recommendations for online shops.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Load, inspect and simulate data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
config_app = typer.Typer(help="Check experiment configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")
catalog_app = typer.Typer(help="Change a trained artifact's catalog.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")

# Piped or logged output (not a terminal, no COLUMNS) gets 120 columns instead of rich's 80,
# so that tables are not cut (``make demo | tee demo.log``, CI logs).
_WIDTH = None if os.environ.get("COLUMNS") or sys.stdout.isatty() else 120
out = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log warnings only.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
        force=True,
    )


def _fail(message: str) -> None:
    """Print one readable paragraph on stderr and exit with status 2 (no traceback)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _load_target(
    target: str,
    *,
    config: Path | None = None,
    columns: dict[str, str] | None = None,
    behaviors: dict[str, str] | None = None,
    time_format: str | None = None,
) -> Any:
    """A built-in dataset name, a YAML config, or an events file (CSV/Parquet)."""
    from shoprec.data import datasets
    from shoprec.data.datasets.custom import FileSpec, load_config, load_files, load_folder

    if config is not None:
        return load_config(config)
    if target in datasets.names():
        return datasets.load(target)
    path = Path(target)
    if path.suffix.lower() in {".yaml", ".yml"}:
        return load_config(path)
    if path.is_dir():
        return load_folder(path)
    if path.exists():
        spec = FileSpec(
            path, columns=columns or {}, behaviors=behaviors or {}, timestamp_format=time_format
        )
        return load_files(spec)
    if target == "simulated":
        from shoprec.data.simulate import simulate_shop

        return simulate_shop().dataset
    _fail(
        f"'{target}' is neither a built-in dataset ({', '.join(datasets.names())}, simulated) "
        "nor an existing file or YAML config."
    )


def _parse_map(text: str | None, flag: str) -> dict[str, str]:
    if not text:
        return {}
    pairs = {}
    for part in text.split(","):
        if "=" not in part:
            _fail(f"{flag} takes NAME=BEHAVIOR pairs separated by commas; got '{part}'.")
        k, v = part.split("=", 1)
        pairs[k.strip()] = v.strip()
    return pairs


@data_app.command("list")
def data_list() -> None:
    """List the built-in datasets and whether their files are present."""
    from shoprec.data import datasets
    from shoprec.data.paths import data_root

    root = data_root()
    table = Table(title=f"Built-in datasets (SHOPREC_DATA={root})")
    table.add_column("name")
    table.add_column("module")
    for name in datasets.names():
        table.add_row(name, datasets.REGISTRY[name])
    out.print(table)


@data_app.command("describe")
def data_describe(
    target: Annotated[str, typer.Argument(help="Built-in dataset name, YAML config or file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    config: Annotated[
        Path | None, typer.Option(help="YAML config with paths and column mappings.")
    ] = None,
    user_col: Annotated[str | None, typer.Option(help="Column holding the user id.")] = None,
    item_col: Annotated[str | None, typer.Option(help="Column holding the item id.")] = None,
    time_col: Annotated[str | None, typer.Option(help="Column holding the timestamp.")] = None,
    behavior_col: Annotated[str | None, typer.Option(help="Column holding the event type.")] = None,
    quantity_col: Annotated[str | None, typer.Option(help="Column holding the quantity.")] = None,
    price_col: Annotated[str | None, typer.Option(help="Column holding the unit price.")] = None,
    domain_col: Annotated[
        str | None, typer.Option(help="Column holding the domain (market, country).")
    ] = None,
    behavior_map: Annotated[
        str | None, typer.Option(help="Event names to behaviors: 'pageview=view,order=buy'.")
    ] = None,
    time_format: Annotated[str | None, typer.Option(help="strftime format of timestamps.")] = None,
) -> None:
    """Users, items, events per behavior and domain, density, dates, activity per user."""
    from shoprec.data.describe import describe

    columns = {
        k: v
        for k, v in {
            "user": user_col,
            "item": item_col,
            "timestamp": time_col,
            "behavior": behavior_col,
            "quantity": quantity_col,
            "price": price_col,
            "domain": domain_col,
        }.items()
        if v
    }
    try:
        ds = _load_target(
            target,
            config=config,
            columns=columns,
            behaviors=_parse_map(behavior_map, "--behavior-map"),
            time_format=time_format,
        )
        summary = describe(ds)
    except (ShoprecError, KeyError) as e:
        _fail(str(e).strip("'\""))
        return
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        return
    _print_summary(summary)


@data_app.command("simulate")
def data_simulate(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the simulated shop into.")],
    events: Annotated[int, typer.Option(help="Approximate number of events.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    users: Annotated[int, typer.Option(help="Number of shoppers.")] = 2_000,
    items: Annotated[int, typer.Option(help="Number of products.")] = 1_000,
    markets: Annotated[int, typer.Option(help="Number of markets (domains), >= 2.")] = 3,
    taste_overlap: Annotated[
        float,
        typer.Option(
            help="Share of each market's tastes drawn from a space all markets share (0-1): "
            "the correlation of a shopper's affinity to an item between two markets. "
            "0 = unrelated markets (transfer cannot help), 1 = one taste space."
        ),
    ] = 1.0,
    popularity_overlap: Annotated[
        float, typer.Option(help="The same share for item popularity (0-1).")
    ] = 1.0,
    chunk_events: Annotated[
        int, typer.Option(help="Events held in memory and written per Parquet row group.")
    ] = 1_000_000,
) -> None:
    """Simulate a seeded shop and save its tables, demand and planted ground truth.

    Events are written in chunks (memory holds one chunk, the buys and the per-user and
    per-item arrays), so tens of millions of events fit on a laptop."""
    import time

    from shoprec.data.simulate import summarize_written, write_shop

    start = time.perf_counter()
    try:
        with err.status(f"simulating {events:,} events..."):
            write_shop(
                out_dir,
                n_events=events,
                seed=seed,
                n_users=users,
                n_items=items,
                n_markets=markets,
                taste_overlap=taste_overlap,
                popularity_overlap=popularity_overlap,
                chunk_events=chunk_events,
            )
    except ValueError as e:
        _fail(str(e))
    err.print(f"simulated in {time.perf_counter() - start:.1f} s; written to {out_dir}")
    _print_summary(summarize_written(out_dir))


_TRAIN_HELP = """Train from an experiment YAML: data -> split -> recipe -> test scores -> artifact.

\b
Sections (unknown keys anywhere are refused; paths are relative to the YAML file):
  name       the run's name (default: the file name)
  data       dataset: a built-in name (online_retail, tmall, ...) or simulated (+ simulate:)
             events: {path, columns, behaviors, drop_unmapped} (+ catalog:, users:)
             release: {format: behavior_lines | domain_pairs, ...} (public release layouts)
  split      {kind: time | leave_last_out | given | random | cold_items | cold_users, ...}
  recipe     {name: pairs | multibehavior | windows | content | cross_domain | sequence |
             tabular | demand, ...options}
  tasks      \\[view, cart, buy] or {name, kind: binary | regression | multiclass, ...}
  model      {name: mmoe | ple | shared_bottom | single_task | esmm | aitm, embedding_dim,
             config: {...}}
  weighting  {name: fixed | uncertainty | gradnorm | pcgrad, ...}
  train      {epochs, batch_size, lr, patience, monitor, seed, threads, checkpoint_dir,
             device: auto | cpu | cuda, amp, ...}
  evaluate   {protocol: full | sampled, ks, n_negatives, sampling, target, slices, bootstrap}
  serve      {fusion, exclude_behaviors, new_item_slots, diversity, ...} (the Recommender);
             build_retrieval: true (the retrieval files built after training)
  search     {method: grid | tpe, space: {dotted.setting: \\[values]}, trials, minutes, metric}
  output     the artifact folder (default runs/NAME)

`--set KEY=VALUE` (repeatable) replaces one setting before the file is validated, e.g.
`--set train.epochs=1 --set evaluate.protocol=sampled --set evaluate.ks=\\[10]`; values
are YAML, unknown keys are refused as in the file, and the artifact's experiment.yaml records
them under `overrides`.

`shoprec config check FILE` validates a file without training."""


@app.command("train", help=_TRAIN_HELP)
def train(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (see configs/).")],
    output: Annotated[
        Path | None, typer.Option(help="Artifact folder (default: the config's output).")
    ] = None,
    search: Annotated[
        bool, typer.Option(help="Run the config's search: section (when it has one).")
    ] = True,
    resume: Annotated[
        bool | None,
        typer.Option(
            "--resume/--restart",
            help="Continue the killed run of this config from its checkpoints (--resume: "
            "fail if there is none), or start over (--restart). Default: resume when there "
            "is a checkpoint of the same config, and say so.",
        ),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(
            help="Train in N processes on this machine (torchrun, DistributedDataParallel; "
            "train.batch_size is split across them). Several machines: see the README's "
            "Scale section.",
        ),
    ] = 1,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Replace one config setting (repeatable): a dotted key and a YAML value, "
            "e.g. --set train.epochs=1 --set evaluate.protocol=sampled. Applied before "
            "validation and recorded in the artifact's experiment.yaml (overrides).",
        ),
    ] = None,
    retrieval: Annotated[
        bool | None,
        typer.Option(
            "--retrieval/--no-retrieval",
            help="After training, build the retrieval files (two-tower model, item indexes, "
            "co-occurrences) into the artifact so that recommend / serve start at once "
            "(recipes that recommend items). Default: the config's serve.build_retrieval "
            "(true); --no-retrieval leaves it to the first recommend / serve.",
        ),
    ] = None,
) -> None:
    from shoprec.config import load_config, parse_settings
    from shoprec.train import distributed
    from shoprec.train.loop import checkpointing

    if nproc > 1 and not distributed.launched():  # start torchrun; each process runs this
        args = ["train", str(config), "--search" if search else "--no-search"]
        args += ["--output", str(output)] if output is not None else []
        args += [] if resume is None else ["--resume" if resume else "--restart"]
        args += [a for s in settings or [] for a in ("--set", s)]
        args += [] if retrieval is None else ["--retrieval" if retrieval else "--no-retrieval"]
        raise typer.Exit(distributed.launch(nproc, args))
    try:
        cfg = load_config(config, **parse_settings(settings or []))
        ctx = distributed.setup(cfg.train.get("device", "auto"))
        if ctx.distributed and cfg.search is not None and search:
            raise distributed.DistributedError(
                f"{config}: a search: section runs its trials in one process; train with "
                "--no-search under --nproc / torchrun, or search without them"
            )
        if not ctx.is_main:  # rank 0 alone shows progress, evaluates the test part, writes
            logging.getLogger().setLevel(logging.WARNING)
        ckpt, keep = _checkpoint_dir(cfg, output)
        key = _config_key(cfg, search)
        if ctx.is_main:
            with checkpointing(ckpt, key, resume=resume, keep=keep) as resuming:
                distributed.broadcast(resuming, ctx)  # the others follow rank 0's decision
                path = _train(cfg, output, search)
                distributed.barrier(ctx)
        else:
            from shoprec.experiment import fit_experiment

            resuming = distributed.broadcast(None, ctx)
            with checkpointing(ckpt, key, resume=resuming, keep=keep, follower=True):
                fit_experiment(cfg.model_copy(update={"search": None}))
                distributed.barrier(ctx)  # wait while rank 0 evaluates and writes
        distributed.shutdown()
        if not ctx.is_main:
            return
        if cfg.serve.build_retrieval if retrieval is None else retrieval:
            # rank 0 alone, the group left: the two-tower fit() must not join it again
            with _env(WORLD_SIZE="1", RANK="0"):
                _build_retrieval(path)
    except (ShoprecError, ValueError, TypeError, OSError) as e:
        _fail(str(e))
        return
    metrics = json.loads((path / "metrics.json").read_text())
    if "search" in metrics:
        _print_trials(metrics["search"])
    _print_evaluation(f"{cfg.name}: test", metrics.get("test", {}))
    out.print(f"artifact written to [bold]{path}[/] (metrics in {path / 'metrics.json'})")


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Environment variables set while the block runs, then put back as they were."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _build_retrieval(path: Path) -> None:
    """The retrieval files of a freshly trained artifact (nothing for row-scoring ones)."""
    import time

    from shoprec.artifact import read_manifest
    from shoprec.experiment import build_serving_files

    if read_manifest(path).get("items") == 0:
        return
    err.print(
        "building the retrieval files (two-tower model, item indexes, co-occurrences) into "
        f"{path / 'retrieval'} so that recommend / serve start at once (--no-retrieval skips)",
        highlight=False,
        soft_wrap=True,
    )
    start = time.perf_counter()
    try:
        build_serving_files(path, progress=True)
    except (ShoprecError, ValueError, TypeError, OSError, RuntimeError) as e:
        _fail(
            f"the artifact was written to {path}, but its retrieval files could not be built "
            f"({type(e).__name__}: {e}); the first recommend / serve will try again "
            "(or train with --no-retrieval)"
        )
    err.print(f"retrieval files built in {time.perf_counter() - start:.1f} s", highlight=False)


def _build_missing_retrieval(art: Any) -> None:
    """An artifact without retrieval files: say so, then build them into the cache folder
    with a progress bar (what the Recommender would do silently)."""
    import time

    from shoprec.recommend.retrieve import Retrieval, build_retrieval, missing_retrieval_message

    folder = Retrieval.pending(art)
    if folder is None:
        return
    err.print(
        f"[yellow]{missing_retrieval_message(art.directory)}.[/] Building them now into the "
        f"cache folder {folder}; later runs read them.",
        highlight=False,
        soft_wrap=True,
    )
    start = time.perf_counter()
    build_retrieval(art.directory, out=folder, progress=True)
    err.print(f"retrieval files built in {time.perf_counter() - start:.1f} s", highlight=False)


def _checkpoint_dir(cfg: Any, output: Path | None) -> tuple[Path, bool]:
    """The run's checkpoint folder: the config's ``train.checkpoint_dir`` (kept after
    success), else ``<artifact>.checkpoints`` beside the artifact (removed after success)."""
    explicit = cfg.train.get("checkpoint_dir")
    if explicit:
        return Path(explicit), True
    out_dir = Path(output) if output is not None else Path(cfg.output_dir)
    return out_dir.with_name(out_dir.name + ".checkpoints"), False


def _config_key(cfg: Any, search: bool) -> str:
    """What a checkpoint must have been written for: the config (less its output folder)."""
    import hashlib

    what = {k: v for k, v in cfg.to_dict().items() if k != "output"}
    what["run_search"] = bool(search and cfg.search is not None)
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _train(cfg: Any, output: Path | None, search: bool) -> Path:
    from shoprec.experiment import train_experiment

    if cfg.search is not None and search:
        from shoprec.search import run_search

        def show(t: Any) -> None:
            err.print(
                f"trial {t.number}: {t.values} -> valid {t.score:.4f} ({t.seconds:.0f} s)"
                + (f" [red]{t.error}[/]" if t.error else "")
            )

        path, _ = run_search(cfg, output, on_trial=show)
        return path
    cfg = cfg.model_copy(update={"search": None})
    with err.status(f"{cfg.name}: training the {cfg.recipe.name} recipe..."):
        return train_experiment(cfg, output)


def _print_trials(search: dict[str, Any]) -> None:
    rows = search["trials"]
    table = Table(title=f"search ({search['method']}) on validation: {search['metric']}")
    keys = [k for k in rows[0] if k not in ("error",)]
    for k in keys:
        table.add_column(k, justify="right")
    best = search["best"]["trial"]
    for r in rows:
        style = "bold green" if r["trial"] == best else None
        table.add_row(
            *[f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in keys],
            style=style,
        )
    out.print(table)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _print_exposure(ev: dict[str, Any]) -> None:
    """Coverage, Gini and the share of exposure by popularity decile of every model's lists
    (ours, the served list, the baselines) beside the training events."""
    rows = {
        "ours": ev.get("exposure") or {},
        "served list": (ev.get("served") or {}).get("exposure") or {},
    }
    rows.update({n: b.get("exposure") or {} for n, b in (ev.get("baselines") or {}).items()})
    rows = {n: e for n, e in rows.items() if e.get("by_popularity_decile")}
    if not rows:
        return
    first = next(iter(rows.values()))
    keys = list(first.get("metrics", {}))
    table = Table(title="exposure: catalog coverage@k, Gini index of exposure (0 = even)")
    table.add_column("lists", no_wrap=True)
    for key in keys:
        table.add_column(key, justify="right")
    for name, e in rows.items():
        table.add_row(name, *[_fmt(e.get("metrics", {}).get(key)) for key in keys])
    out.print(table)

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f}"

    table = Table(
        title=f"% of top-{first.get('k')} exposure by item popularity decile (1: least sold "
        "tenth of the catalog, 10: best-sellers)"
    )
    table.add_column("lists", no_wrap=True)
    for d in range(1, 11):
        table.add_column(str(d), justify="right")
    for name, e in rows.items():
        table.add_row(name, *[pct(x) for x in e["by_popularity_decile"]["exposure"]])
    table.add_row(
        "training events", *[pct(x) for x in first["by_popularity_decile"]["events"]], style="dim"
    )
    out.print(table)
    groups = (first.get("by_group") or {}).get("groups") or {}
    if groups:
        top = list(groups.items())[:8]
        out.print(
            f"top-{first.get('k')} exposure by {first['by_group'].get('column')} (ours): "
            + ", ".join(
                f"{g} {v['exposure']:.1%} (catalog {v['items']:.1%}, events {v['events']:.1%})"
                for g, v in top
            )
        )


def _print_evaluation(title: str, ev: dict[str, Any]) -> None:
    """The ranking metrics with intervals, the slices, the served path, pointwise scores."""
    if not ev:
        return
    m = ev.get("metrics", {})
    if not m:  # a tabular artifact: pointwise scores only
        pw = {k: v for k, v in (ev.get("pointwise") or {}).items() if not isinstance(v, dict)}
        if pw:
            _print_metrics(f"{title}: pointwise test scores", pw)
        return
    # the main ones on screen (all of them are in --json and metrics.json)
    names = [k for k in m if k.startswith(("hr@", "ndcg@")) or k == "mrr"]
    counts = ev.get("counts", {})
    table = Table(
        title=f"{title}: {ev.get('protocol', '')} ranking of '{ev.get('target', '')}' "
        f"({counts.get('users', m.get('users', 0)):,} users)"
    )
    table.add_column("part", no_wrap=True)
    for n in names:
        table.add_column(n, justify="right")
    table.add_column("users", justify="right")
    ci = ev.get("ci", {})
    table.add_row("all", *[_fmt(m[n]) for n in names], _fmt(m.get("users")))
    if ci:
        table.add_row(
            "  95% CI",
            *[
                f"{ci[n][0]:.3f}-{ci[n][1]:.3f}" if n in ci and None not in ci[n] else ""
                for n in names
            ],
            "",
            style="dim",
        )
    for name, s in ev.get("slices", {}).items():
        sm = s.get("metrics", {})
        table.add_row(name, *[_fmt(sm.get(n)) for n in names], _fmt(sm.get("users")))
    served = ev.get("served") or {}
    if served:
        table.add_row(
            "served list",
            *[_fmt(served.get(n)) for n in names],
            _fmt(served.get("users")),
            style="cyan",
        )
    for name, b in (ev.get("baselines") or {}).items():
        bm = b.get("metrics", {})
        table.add_row(name, *[_fmt(bm.get(n)) for n in names], _fmt(bm.get("users")), style="dim")
    out.print(table)
    _print_exposure(ev)
    if counts.get("relevant_unknown_items"):
        out.print(
            f"[yellow]{counts['relevant_unknown_items']:,} held-out pairs name items the model "
            "cannot rank (not in its catalog); they count as misses.[/]"
        )
    pw = {k: v for k, v in (ev.get("pointwise") or {}).items() if not isinstance(v, dict)}
    if pw:
        _print_metrics("pointwise test scores", pw)


@config_app.command("check")
def config_check(
    config: Annotated[Path, typer.Argument(help="Experiment YAML to validate.")],
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Check with one setting replaced (repeatable), as `shoprec train --set`.",
        ),
    ] = None,
) -> None:
    """Validate a config (keys, types, files) without training; print what it would do."""
    from shoprec.config import check_config, parse_settings

    try:
        summary = check_config(config, **parse_settings(settings or []))
    except (ShoprecError, ValueError) as e:
        _fail(str(e))
        return
    table = Table(title=f"{config}: valid", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for k, v in summary.items():
        table.add_row(k, str(v))
    out.print(table)


@catalog_app.command("add")
def catalog_add(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by train.")],
    products: Annotated[Path, typer.Argument(help="CSV / Parquet of new products.")],
    columns: Annotated[
        str | None, typer.Option(help="Column names: 'item=sku,title=name'.")
    ] = None,
) -> None:
    """Add products to an artifact without retraining: the recipe's scorer encodes them from
    their title and attributes (the content recipe can; others say so). The artifact is
    rewritten; a running service takes them on POST /admin/reload (or POST /admin/catalog)."""
    import polars as pl

    from shoprec import artifact as artifacts
    from shoprec.data.datasets.custom import FileSpec, load_catalog

    try:
        art = artifacts.Artifact.load(artifact)
        if not hasattr(art.scorer, "add_items"):
            raise ShoprecError(
                f"the '{art.recipe}' recipe cannot score products added after training "
                "(it knows items by their training events); train again, or use the "
                "content recipe, which scores new products from their title and attributes"
            )
        new = load_catalog(FileSpec(products, columns=_parse_map(columns, "--columns"))).df
        known = set(art.scorer.items)
        dup = new.filter(pl.col("item").is_in(list(known)))["item"].to_list()
        if dup:
            raise ShoprecError(f"already in the catalog: {', '.join(dup[:10])}")
        art.scorer.add_items(new)
        items = pl.concat([art.items, artifacts.item_table(new)], how="diagonal_relaxed")
        artifacts.save(
            artifact,
            config=art.config,
            scorer=art.scorer,
            items=items,
            seen=art.seen,
            metrics=art.metrics,
        )
    except (ShoprecError, ValueError, OSError) as e:
        _fail(str(e))
        return
    out.print(f"added {new.height:,} products to {artifact} ({len(art.scorer.items):,} in all)")


@app.command("transfer")
def transfer(
    config: Annotated[Path, typer.Argument(help="A config with recipe: {name: cross_domain}.")],
    output: Annotated[
        Path | None, typer.Option(help="Artifact folder (default: the config's output).")
    ] = None,
) -> None:
    """Cross-domain transfer: the same as `shoprec train` on a cross_domain config."""
    train(config, output, True)


def _print_metrics(title: str, scores: dict[str, float]) -> None:
    tasks = list(dict.fromkeys(k.split("/")[0] for k in scores))
    names = list(dict.fromkeys(k.split("/", 1)[1] if "/" in k else "value" for k in scores))
    table = Table(title=title)
    table.add_column("task")
    for n in names:
        table.add_column(n, justify="right")
    for t in tasks:
        table.add_row(
            t,
            *[_fmt(scores.get(f"{t}/{n}", scores.get(t) if n == "value" else None)) for n in names],
        )
    out.print(table)


@app.command("evaluate")
def evaluate(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by train.")],
    protocol: Annotated[
        str | None, typer.Option(help="full (rank every item) or sampled (1 + N negatives).")
    ] = None,
    n_negatives: Annotated[int | None, typer.Option(help="Sampled protocol: N.")] = None,
    sampling: Annotated[
        str | None, typer.Option(help="Sampled protocol: uniform or popularity.")
    ] = None,
    ks: Annotated[str | None, typer.Option(help="Cut-offs, e.g. 10,20,50.")] = None,
    max_users: Annotated[
        int | None, typer.Option(help="Evaluate a seeded sample of this many users.")
    ] = None,
    served: Annotated[
        bool | None,
        typer.Option("--served/--no-served", help="Also measure the list the service returns."),
    ] = None,
    bootstrap: Annotated[
        int | None, typer.Option(help="Bootstrap resamples for the intervals (0: none).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    report: Annotated[
        Path | None, typer.Option(help="Write a self-contained HTML report with plots here.")
    ] = None,
) -> None:
    """Rebuild the artifact's split and evaluate it: full-ranking (or sampled) HR, NDCG, MRR,
    Recall, Precision at k with bootstrap intervals, per slice (warm / cold users and items,
    domains, twin-free where a source domain exists), what the lists expose beside popularity
    (catalog coverage@k, Gini of exposure, shares by popularity decile and catalog group),
    optionally the served list, and an HTML report."""
    from shoprec.experiment import evaluate_artifact

    overrides: dict[str, Any] = {}
    for key, value in (
        ("protocol", protocol),
        ("n_negatives", n_negatives),
        ("sampling", sampling),
        ("max_users", max_users),
        ("bootstrap", bootstrap),
    ):
        if value is not None:
            overrides[key] = value
    if ks:
        try:
            overrides["ks"] = tuple(int(k) for k in ks.split(","))
        except ValueError:
            _fail(f"--ks takes cut-offs separated by commas, e.g. 10,20; got '{ks}'")
    try:
        with err.status(f"evaluating {artifact}..."):
            ev, art = evaluate_artifact(artifact, overrides=overrides, served=served)
        if report is not None:
            from shoprec.experiment import write_report

            write_report(art, ev, report)
    except (ShoprecError, ValueError, OSError) as e:
        _fail(str(e))
        return
    if as_json:
        sys.stdout.write(json.dumps(ev.to_dict(), indent=2, default=str) + "\n")
    else:
        _print_evaluation(f"{art.config.name}", ev.to_dict())
    if report is not None:
        err.print(f"report written to {report}")


@app.command("forecast")
def forecast(
    config: Annotated[
        Path,
        typer.Argument(help="Experiment YAML (recipe: demand, or any with a forecast: section)."),
    ],
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Folder to write (default: <config output>/forecast)."),
    ] = None,
) -> None:
    """Forecast each product's demand and write a reorder list.

    Writes forecast.parquet (mean, P50, P90, P(no sale), returns, trend per product and
    week), history.parquet (the last 52 weeks), reorder.parquet (lead-time demand, weeks of
    cover, P(stock-out), quantity to order) and forecast.json."""
    from shoprec.config import load_config
    from shoprec.inventory.forecast import run_forecast

    try:
        cfg = load_config(config)
        with err.status(f"{cfg.name}: training the demand forecaster..."):
            folder = run_forecast(cfg, out_dir)
    except (ShoprecError, ValueError, OSError) as e:
        _fail(str(e))
        return
    import polars as pl

    meta = json.loads((folder / "forecast.json").read_text())
    reorder = pl.read_parquet(folder / "reorder.parquet")
    table = Table(title=f"reorder list from {meta['origin']} (stock: {meta['stock_source']})")
    for c in ("item", "stock", "demand_p90_lead", "weeks_of_cover", "p_stockout", "reorder_qty"):
        table.add_column(c, justify="left" if c == "item" else "right")
    for row in reorder.head(10).iter_rows(named=True):
        table.add_row(
            str(row["item"])[:40],
            f"{row['stock']:.0f}",
            f"{row['demand_p90_lead']:.1f}",
            f"{row['weeks_of_cover']:.1f}",
            f"{row['p_stockout']:.2f}",
            f"{row['reorder_qty']:.0f}",
        )
    out.print(table)
    out.print(
        f"{meta['series']} products forecast {meta['horizon']} {meta['freq']}s ahead, "
        f"{meta['at_risk']} at risk of stock-out; written to [bold]{folder}[/]"
    )


@app.command("recommend")
def recommend(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by train.")],
    user: Annotated[str, typer.Option("--user", "-u", help="The shopper's id.")],
    k: Annotated[int, typer.Option("-k", help="How many items.")] = 10,
    fusion: Annotated[
        str | None, typer.Option(help="Final score formula (default: the serve config's).")
    ] = None,
    explain: Annotated[bool, typer.Option(help="Add a sentence on why each item.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-k items for a shopper: exactly the list GET /recommend/USER?k=K returns."""
    from dataclasses import asdict

    from shoprec.artifact import Artifact

    try:
        art = Artifact.load(artifact)
        if art.scorer.n_items == 0:
            _fail(
                f"{artifact} is a {art.recipe} artifact: it scores rows (e.g. click and "
                "purchase probabilities of impressions), it does not recommend items; "
                "use shoprec evaluate, or its scorer's predict_rows in Python"
            )
        _build_missing_retrieval(art)
        rec = art.recommender()
        uid = rec.user_key(user)  # hashed when the artifact was trained on hashed ids
        recs = rec.recommend(uid, k, fusion=fusion, explain=explain)
    except (ShoprecError, ValueError) as e:
        _fail(str(e))
        return
    if as_json:
        sys.stdout.write(json.dumps([asdict(r) for r in recs], indent=2, default=str) + "\n")
        return
    hist = art.history(uid)
    if hist.height == 0:
        out.print(f"[yellow]{user} is new to this model: a cold-start list.[/]")
    else:
        counts = hist.group_by("behavior").len().sort("behavior")
        out.print(f"{user}'s history: " + ", ".join(f"{b} {n}" for b, n in counts.iter_rows()))
    table = Table(title=f"top {k} for {user} ({art.recipe} recipe)")
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("title / attributes", overflow="fold")
    for t in art.tasks:
        table.add_column(t, justify="right")
    if explain:
        table.add_column("why", overflow="fold")
    for r in recs:
        label = r.attributes.get("title") or ", ".join(
            f"{v}" for c, v in r.attributes.items() if v is not None and c != "stock"
        )
        why = [r.explanation.sentence] if explain and r.explanation else []
        table.add_row(
            str(r.rank),
            r.item,
            str(label),
            *[f"{r.predictions.get(t, float('nan')):.3f}" for t in art.tasks],
            *why,
        )
    out.print(table)


@app.command("forget")
def forget(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by train.")],
    users: Annotated[list[str], typer.Argument(help="The shoppers' ids.")],
    db: Annotated[
        Path | None,
        typer.Option(help="SQLite event store (default: ARTIFACT/events.sqlite, if there)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Forget shoppers: their events in the event store (securely deleted), their training
    events, user-table rows and ids in the artifact and their embedding rows (zeroed, out of
    retrieval) until the next training; the manifest is rewritten. A running service also
    holds live events in memory: use DELETE /users/USER there (it does all of this)."""
    from shoprec.artifact import Artifact
    from shoprec.forget import forget_users
    from shoprec.recommend.recommender import user_key
    from shoprec.serve.store import EventStore

    store_path = db if db is not None else artifact / "events.sqlite"
    try:
        if db is not None and not db.exists():
            raise ShoprecError(f"no event store at {db}")
        key = user_key(Artifact.load(artifact))  # hashed ids when trained on them
        keys = {u: key(u) for u in users}
        deleted = dict.fromkeys(users, 0)
        if store_path.exists():
            store = EventStore(store_path)
            try:
                deleted = {u: store.forget(keys[u]) for u in users}
            finally:
                store.close()
        report = forget_users(artifact, list(keys.values()))
    except (ShoprecError, ValueError, OSError) as e:
        _fail(str(e))
        return
    result = {**report.to_dict(), "events_deleted": deleted, "event_store": str(store_path)}
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    unknown = [u for u in users if keys[u] not in report.known and not deleted.get(u)]
    out.print(
        f"forgot {', '.join(users)} in {artifact}: {sum(deleted.values()):,} stored events, "
        f"{report.seen_rows:,} training events, scorer {report.scorer}, "
        f"retrieval {report.retrieval or 'none built'}"
        + (f" ([yellow]unknown here: {', '.join(unknown)}[/])" if unknown else ""),
        soft_wrap=True,  # one line, as logs and scripts read it (a path is never cut)
    )


@app.command("demo")
def demo(
    events: Annotated[int, typer.Option(help="Simulated events.")] = 400_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    epochs: Annotated[int, typer.Option(help="Maximum training epochs.")] = 8,
    output: Annotated[Path, typer.Option(help="Where to save the artifact.")] = Path("runs/demo"),
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="End by serving the web page.")
    ] = True,
    port: Annotated[int, typer.Option(help="Port for the web page.")] = 8000,
) -> None:
    """Offline, end to end: simulate a shop, train MMoE beside single-task models, recommend,
    then serve the result over HTTP with its web page."""
    from shoprec.demo import DemoConfig, run_demo

    if logging.getLogger().level > logging.DEBUG:  # keep the demo's story readable
        logging.getLogger("shoprec").setLevel(logging.WARNING)
    run_demo(DemoConfig(events=events, seed=seed, epochs=epochs, output=str(output)), console=out)
    if not serve_after:
        return
    import secrets

    import uvicorn

    from shoprec.serve import ServeConfig, create_app

    key = secrets.token_urlsafe(12)
    out.rule("[bold]8. The service")
    out.print(
        f"web page: [bold]http://127.0.0.1:{port}/ui/[/]   API docs: http://127.0.0.1:{port}/docs\n"
        f"API key for sending events from the page: [bold]{key}[/]   (Ctrl-C stops the service)"
    )
    logging.getLogger("shoprec").setLevel(logging.INFO)
    uvicorn.run(
        create_app(ServeConfig(output, api_key=key, private_reads=False)),  # simulated shop
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"Dataset {summary['name']}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        if key == "name":
            continue
        if isinstance(value, dict) and not value:
            value = "none"
        elif isinstance(value, dict):
            value = ", ".join(
                f"{k}: {v:,}"
                if isinstance(v, int)
                else f"{k}: {v:.4g}"
                if isinstance(v, float)
                else f"{k}: {v}"
                for k, v in value.items()
            )
        elif isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, int):
            value = f"{value:,}"
        table.add_row(key.replace("_", " "), str(value))
    out.print(table)


@app.command("serve")
def serve(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by train.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    db: Annotated[
        Path | None, typer.Option(help="SQLite event store (default: ARTIFACT/events.sqlite).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="SHOPREC_API_KEY", help="Key for POST /events and /admin (X-API-Key)."),
    ] = None,
    fusion: Annotated[
        str | None, typer.Option(help="Final score, e.g. 'buy * price * (1-return)'.")
    ] = None,
    rebuild: Annotated[
        bool, typer.Option(help="Retrain the two-tower retrieval model before serving.")
    ] = False,
    threads: Annotated[
        int, typer.Option(help="torch threads; 1 suits one small model per request best.")
    ] = 1,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (costs CPU on each one).")
    ] = False,
    artifact_root: Annotated[
        Path | None,
        typer.Option(
            help="POST /admin/reload loads only artifacts inside this folder "
            "(default: the folder holding ARTIFACT)."
        ),
    ] = None,
    read_key: Annotated[
        str | None,
        typer.Option(
            envvar="SHOPREC_READ_KEY",
            help="Key (X-API-Key) for reads that reveal shoppers: /history, /users, /audience; "
            "the API key opens them too.",
        ),
    ] = None,
    open_reads: Annotated[
        bool,
        typer.Option(
            "--open-reads/--private-reads",
            envvar="SHOPREC_OPEN_READS",
            help="Let anyone read shoppers' histories and lists (a demo, a closed network).",
        ),
    ] = False,
    max_body_bytes: Annotated[
        int, typer.Option(envvar="SHOPREC_MAX_BODY_BYTES", help="Largest request body (413).")
    ] = 1_000_000,
    max_concurrency: Annotated[
        int, typer.Option(envvar="SHOPREC_MAX_CONCURRENCY", help="Requests run at once.")
    ] = 4,
    max_queue: Annotated[
        int, typer.Option(envvar="SHOPREC_MAX_QUEUE", help="Requests waiting; more get 503.")
    ] = 32,
    queue_timeout: Annotated[
        float,
        typer.Option(envvar="SHOPREC_QUEUE_TIMEOUT", help="Seconds a request may wait (503)."),
    ] = 0.05,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="SHOPREC_WORKERS",
            help="Worker processes on the one port (each loads the model; all share the "
            "event store, so each sees every event, reload, stock level and forget).",
        ),
    ] = 1,
) -> None:
    """Serve recommendations over HTTP, with a web page at /ui/ and API docs at /docs.

    Every file of the artifact is checked against its manifest first (exit 2 naming a
    missing, truncated or changed one). Serving never writes into the artifact: retrieval
    files it lacks are built into a cache folder ($SHOPREC_CACHE, default ~/.cache/shoprec);
    --rebuild builds them into the artifact (and its manifest). With --workers N, N processes
    answer on the port; live events and every change (reload, stock, products, forget) go
    through the SQLite event store, so any worker's next answer reflects them."""
    import uvicorn

    from shoprec.recommend import Retrieval, build_retrieval
    from shoprec.serve import ServeConfig, ServeLimits, create_app

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        from shoprec.artifact import Artifact, read_manifest

        if read_manifest(artifact).get("items") == 0:
            raise ShoprecError(
                f"{artifact} is a tabular artifact: it scores rows, it has no items to serve"
            )
        if rebuild:
            with err.status("training the two-tower retrieval model..."):
                build_retrieval(artifact)
        art = Artifact.load(artifact)  # every file checked against the manifest
        _build_missing_retrieval(art)
        with err.status("loading (or building) the retrieval files..."):
            Retrieval.of_artifact(art)  # damaged files named here, not in a traceback
        rec_cfg = None
        if fusion:
            from shoprec.recommend import Fusion

            Fusion.parse(fusion).check(art.tasks)
            rec_cfg = art.config.serve.recommender_config(fusion=fusion)
    except (ShoprecError, ValueError, OSError) as e:
        _fail(str(e))
        return
    if not api_key:
        err.print("[yellow]no --api-key / SHOPREC_API_KEY: a random key is logged at start.[/]")
    err.print(f"web page: http://{host}:{port}/ui/   API docs: http://{host}:{port}/docs")
    if not open_reads:
        err.print("shoppers' histories and lists need the read or API key (--open-reads opens).")
    del art  # checked; the service (each worker) loads its own
    limits = ServeLimits(
        max_body_bytes=max_body_bytes,
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        queue_timeout=queue_timeout,
    )
    config = ServeConfig(
        artifact,
        db=db,
        api_key=api_key,
        recommender=rec_cfg,
        artifact_root=artifact_root,
        read_key=read_key,
        private_reads=not open_reads,
        limits=limits,
    )
    if workers == 1:
        app_ = create_app(config)
        uvicorn.run(app_, host=host, port=port, log_level="info", access_log=access_log)
        return
    import secrets

    from shoprec.serve.app import CONFIG_ENV
    from shoprec.serve.store import EventStore

    if not api_key:  # one key for every worker
        config.api_key = secrets.token_urlsafe(18)
        err.print(f"write and admin endpoints accept X-API-Key={config.api_key}")
    config.artifact = artifact.resolve()
    config.db = (db or artifact / "events.sqlite").resolve()
    store = EventStore(config.db)  # the workers replay the changes from this start
    config.epoch = store.begin_epoch(config.artifact)
    store.close()
    config.metrics_dir = Path(str(config.db) + ".metrics")  # /metrics sums the workers
    for old in config.metrics_dir.glob("*.json"):  # counts of an earlier run
        old.unlink()
    os.environ[CONFIG_ENV] = config.to_json()
    os.environ["SHOPREC_SERVE_THREADS"] = str(threads)
    err.print(f"{workers} worker processes share the event store {config.db}")
    uvicorn.run(
        "shoprec.serve.app:worker_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level="info",
        access_log=access_log,
    )


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
