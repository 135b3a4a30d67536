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


@app.command("demo")
def demo(
    events: Annotated[int, typer.Option(help="Simulated events.")] = 400_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    epochs: Annotated[int, typer.Option(help="Maximum training epochs.")] = 8,
) -> None:
    """Offline, end to end: simulate a shop, train MMoE beside single-task models, recommend."""
    from shoprec.demo import DemoConfig, run_demo

    if logging.getLogger().level > logging.DEBUG:  # keep the demo's story readable
        logging.getLogger("shoprec").setLevel(logging.WARNING)
    run_demo(DemoConfig(events=events, seed=seed, epochs=epochs), console=out)


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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
