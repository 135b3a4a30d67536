"""The ``shoprec`` command line. Every command is a few lines over the Python API."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from shoprec.data.errors import ShoprecError

app = typer.Typer(
    help="shoprec: multi-task and transfer learning recommendations for online shops.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Load, inspect and simulate data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)


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
) -> None:
    """Simulate a seeded shop and save its tables, demand and planted ground truth."""
    import time

    from shoprec.data.describe import describe
    from shoprec.data.simulate import simulate_shop

    start = time.perf_counter()
    with err.status(f"simulating {events:,} events..."):
        shop = simulate_shop(n_events=events, seed=seed)
        shop.save(out_dir)
    err.print(f"simulated in {time.perf_counter() - start:.1f} s; written to {out_dir}")
    _print_summary(describe(shop.dataset))


@app.command("train")
def train(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (see configs/).")],
    output: Annotated[
        Path | None, typer.Option(help="Artifact folder (default: the config's output).")
    ] = None,
) -> None:
    """Train a multi-task model from a YAML config; write the artifact and metrics.json."""
    from shoprec.experiment import ExperimentConfig, train_from_config

    try:
        cfg = ExperimentConfig.from_yaml(config)
        path = train_from_config(cfg, output)
    except (ShoprecError, ValueError, TypeError) as e:
        _fail(str(e))
        return
    metrics = json.loads((path / "metrics.json").read_text())
    _print_metrics(f"{cfg.name}: test metrics", metrics["test"])
    out.print(f"artifact written to [bold]{path}[/] (metrics in {path / 'metrics.json'})")


@app.command("transfer")
def transfer(
    config: Annotated[Path, typer.Argument(help="Transfer YAML (see configs/*transfer*.yaml).")],
    output: Annotated[
        Path | None, typer.Option(help="Artifact folder (default: the config's output).")
    ] = None,
) -> None:
    """Cross-domain transfer from a YAML config: train on source + target (target only,
    fine-tune, joint, multi-domain experts or item neighbours), score the target's held-out
    items beside popularity, write the artifact."""
    from shoprec.transfer.run import TransferConfig, run_transfer

    try:
        cfg = TransferConfig.from_yaml(config)
        with err.status(f"{cfg.name}: {cfg.method} transfer..."):
            path = run_transfer(cfg, output)
    except (ShoprecError, ValueError, TypeError) as e:
        _fail(str(e))
        return
    result = json.loads((path / "metrics.json").read_text())
    d = result["domains"]
    table = Table(title=f"{cfg.name}: {d['source']} -> {d['target']}, held-out target items")
    for col in ("model", "users", "HR@10", "NDCG@10"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in result["test"].items():
        table.add_row(name, f"{m['users']:,.0f}", f"{m['hr@10']:.4f}", f"{m['ndcg@10']:.4f}")
    out.print(table)
    out.print(f"artifact written to [bold]{path}[/] (metrics in {path / 'metrics.json'})")


def _print_metrics(title: str, scores: dict[str, float]) -> None:
    tasks = sorted(
        {k.split("/")[0] for k in scores},
        key=list(dict.fromkeys(k.split("/")[0] for k in scores)).index,
    )
    names = list(dict.fromkeys(k.split("/")[1] for k in scores))
    table = Table(title=title)
    table.add_column("task")
    for n in names:
        table.add_column(n, justify="right")
    for t in tasks:
        table.add_row(
            t, *[f"{scores[f'{t}/{n}']:.4f}" if f"{t}/{n}" in scores else "-" for n in names]
        )
    out.print(table)


@app.command("evaluate")
def evaluate(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by train.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    slices: Annotated[
        bool,
        typer.Option(
            help="Also per slice: warm / cold users and items, each domain "
            "(with --json: under the key 'slices')."
        ),
    ] = True,
) -> None:
    """Rebuild the artifact's test split and print per-task test metrics, overall and per slice."""
    from shoprec.experiment import (
        Artifact,
        ExperimentConfig,
        prepare_from_config,
        slice_metrics,
        task_metrics,
    )

    try:
        art = Artifact.load(artifact)
        cfg = ExperimentConfig(**art.config)
        data = prepare_from_config(cfg, art.builder)
        scores = task_metrics(art.model, data)
        by_slice = slice_metrics(art.model, data) if slices else {}
    except (ShoprecError, ValueError) as e:
        _fail(str(e))
        return
    if as_json:
        payload: dict[str, Any] = dict(scores)
        if slices:
            payload["slices"] = by_slice
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    _print_metrics(f"{cfg.name}: test metrics ({len(data.test):,} test samples)", scores)
    if by_slice:
        _print_slices(by_slice)


def _print_slices(by_slice: dict[str, dict[str, float]]) -> None:
    aucs = list(dict.fromkeys(k for row in by_slice.values() for k in row if k.endswith("/auc")))
    table = Table(title="AUC per slice of the test samples (cold = no positive in training)")
    table.add_column("slice")
    table.add_column("samples", justify="right")
    for k in aucs:
        table.add_column(k.replace("/auc", " AUC"), justify="right")
    for name, row in by_slice.items():
        table.add_row(
            name, f"{row['rows']:,.0f}", *[f"{row[k]:.4f}" if k in row else "-" for k in aucs]
        )
    out.print(table)


@app.command("recommend")
def recommend(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by train.")],
    user: Annotated[str, typer.Option("--user", "-u", help="The shopper's id.")],
    k: Annotated[int, typer.Option("-k", help="How many items.")] = 10,
    task: Annotated[str | None, typer.Option(help="Rank by this task (default: the last).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-k items for a shopper, with each task's prediction, beside their history (a
    transfer artifact: top-k target-domain items from the shopper's history in both)."""
    from dataclasses import asdict

    from shoprec.experiment import Artifact
    from shoprec.transfer.run import TransferArtifact

    if TransferArtifact.is_artifact(artifact):
        _recommend_transfer(artifact, user, k, as_json)
        return
    try:
        art = Artifact.load(artifact)
        recs = art.recommend(user, k, task=task)
    except (ShoprecError, ValueError) as e:
        _fail(str(e))
        return
    if as_json:
        sys.stdout.write(json.dumps([asdict(r) for r in recs], indent=2, default=str) + "\n")
        return
    hist = art.history(user)
    if hist.height == 0:
        out.print(f"[yellow]{user} is new to this model: a cold-start list.[/]")
    else:
        counts = hist.group_by("behavior").len().sort("behavior")
        out.print(f"{user}'s history: " + ", ".join(f"{b} {n}" for b, n in counts.iter_rows()))
    table = Table(title=f"top {k} for {user} by p({task or art.task_names[-1]})")
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("title / attributes", overflow="fold")
    for t in art.task_names:
        table.add_column(f"p({t})", justify="right")
    for i, r in enumerate(recs, 1):
        label = r.attributes.get("item_title") or ", ".join(
            f"{v}" for c, v in r.attributes.items() if v is not None and "log" not in c
        )
        table.add_row(
            str(i), r.item, str(label), *[f"{r.predictions[t]:.3f}" for t in art.task_names]
        )
    out.print(table)


def _recommend_transfer(artifact: Path, user: str, k: int, as_json: bool) -> None:
    from shoprec.transfer.run import TransferArtifact

    try:
        art = TransferArtifact.load(artifact)
        recs = art.recommend(user, k)
    except (ShoprecError, ValueError) as e:
        _fail(str(e))
        return
    if as_json:
        sys.stdout.write(json.dumps(recs, indent=2) + "\n")
        return
    target = art.config.data["target"]
    if user not in art.index.users:
        out.print(f"[yellow]{user} is new to this model: the most popular {target} items.[/]")
    table = Table(title=f"top {k} {target} items for {user} ({art.config.method})")
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    table.add_column("because you have", overflow="fold")
    for i, r in enumerate(recs, 1):
        table.add_row(str(i), r["item"], f"{r['score']:.4f}", ", ".join(r["because"]))
    out.print(table)


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
    out.rule("[bold]6. The service")
    out.print(
        f"web page: [bold]http://127.0.0.1:{port}/ui/[/]   API docs: http://127.0.0.1:{port}/docs\n"
        f"API key for sending events from the page: [bold]{key}[/]   (Ctrl-C stops the service)"
    )
    logging.getLogger("shoprec").setLevel(logging.INFO)
    uvicorn.run(
        create_app(ServeConfig(output, api_key=key)),
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
) -> None:
    """Serve recommendations over HTTP, with a web page at /ui/ and API docs at /docs."""
    import uvicorn

    from shoprec.recommend import RecommenderConfig, build_retrieval, has_retrieval
    from shoprec.serve import ServeConfig, create_app

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        if rebuild or not has_retrieval(artifact):
            with err.status("training the two-tower retrieval model..."):
                build_retrieval(artifact)
        rec_cfg = RecommenderConfig(fusion=fusion)
        if fusion:
            from shoprec.recommend import Fusion

            meta = json.loads((artifact / "config.json").read_text())
            Fusion.parse(fusion).check([t["name"] for t in meta["tasks"]])
    except (ShoprecError, ValueError, OSError) as e:
        _fail(str(e))
        return
    if not api_key:
        err.print("[yellow]no --api-key / SHOPREC_API_KEY: a random key is logged at start.[/]")
    err.print(f"web page: http://{host}:{port}/ui/   API docs: http://{host}:{port}/docs")
    app_ = create_app(ServeConfig(artifact, db=db, api_key=api_key, recommender=rec_cfg))
    uvicorn.run(app_, host=host, port=port, log_level="info", access_log=access_log)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
