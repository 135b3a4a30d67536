"""One artifact layout for every recipe: save, load, verify.

::

    manifest.json      format, version, recipe, tasks, target, sha256 of every file
    experiment.yaml    the config it was trained from (paths absolute)
    items.parquet      the catalog by position: item, title, category, brand, price, stock
    seen.parquet       training events: user, item, behavior (history and exclusion)
    metrics.json       validation scores of the selected model, test scores, history
    scorer/            the recipe's own state (weights.safetensors, JSON, Parquet)
    retrieval/         candidate sources, built for serving (shoprec serve / Recommender)

No pickle anywhere: weights are safetensors, everything else JSON or Parquet. :class:`Artifact`
loads a folder; ``Artifact.recommender()`` is the one :class:`~shoprec.recommend.Recommender`
that ``shoprec recommend``, ``evaluate --served``, ``serve`` and Python all use.

Example:
    >>> art = Artifact.load("runs/sim_mmoe")  # doctest: +SKIP
    >>> [r.item for r in art.recommend("u12", k=3)]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import yaml

import shoprec
from shoprec.errors import ShoprecError

if TYPE_CHECKING:
    from shoprec.config import ExperimentConfig
    from shoprec.recipes.base import Scorer
    from shoprec.recommend.recommender import Recommender, RecommenderConfig

log = logging.getLogger(__name__)

FORMAT = "shoprec.artifact"
VERSION = 2
MANIFEST = "manifest.json"
CONFIG_FILE = "experiment.yaml"
ITEMS_FILE = "items.parquet"
SEEN_FILE = "seen.parquet"
METRICS_FILE = "metrics.json"
SCORER_DIR = "scorer"
RETRIEVAL_DIR = "retrieval"
#: Catalog columns kept in ``items.parquet`` when the data has them.
ITEM_COLUMNS = ("item", "title", "category", "brand", "price", "stock")


class ArtifactError(ShoprecError):
    """A folder that is not a readable artifact (missing, damaged or from another version)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(directory: Path, skip: tuple[str, ...] = (MANIFEST, RETRIEVAL_DIR)) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and p.relative_to(directory).parts[0] not in skip
        and not p.name.endswith((".sqlite", ".sqlite-wal", ".sqlite-shm"))
    )


def item_table(items: pl.DataFrame) -> pl.DataFrame:
    """The catalog columns an artifact keeps, one row per item, in the given order."""
    keep = [c for c in ITEM_COLUMNS if c in items.columns]
    return items.select(keep).unique("item", keep="first", maintain_order=True)


def save(
    directory: str | Path,
    *,
    config: ExperimentConfig,
    scorer: Scorer,
    items: pl.DataFrame,
    seen: pl.DataFrame,
    metrics: dict[str, Any],
) -> Path:
    """Write an artifact: into a temporary folder first, then swapped in, so a crash never
    leaves a half-written artifact where a complete one was.

    Args:
        directory: the artifact folder (replaced if it exists).
        config: the experiment config.
        scorer: the trained scorer; its item order must equal ``items``.
        items: item table by position (``item`` + catalog columns).
        seen: training events (``user, item, behavior``).
        metrics: validation / test scores and history (JSON-able).
    """
    directory = Path(directory)
    if list(items["item"]) != scorer.items:
        raise ValueError("the scorer's items and the item table differ in order or content")
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / SCORER_DIR).mkdir()
    scorer.save(tmp / SCORER_DIR)
    item_table(items).write_parquet(tmp / ITEMS_FILE)
    seen.select("user", "item", "behavior").write_parquet(tmp / SEEN_FILE)
    (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=_json) + "\n")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "shoprec_version": shoprec.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "name": config.name,
        "recipe": scorer.recipe,
        "tasks": scorer.tasks,
        "target": scorer.target,
        "items": len(scorer.items),
        "files": {str(p.relative_to(tmp)): _sha256(p) for p in _files(tmp)},
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    for p in [*_files(tmp), tmp / MANIFEST]:
        with p.open("rb") as f:
            os.fsync(f.fileno())
    old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    if directory.exists():
        # the service's event store lives beside the model: keep it (events are never lost);
        # the retrieval files describe the old items and are rebuilt on the next serve
        for p in directory.glob("*.sqlite*"):
            shutil.copy2(p, tmp / p.name)
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    log.info("artifact written to %s", directory)
    return directory


def _json(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def is_artifact(directory: str | Path) -> bool:
    """Whether ``directory`` holds an artifact of this format."""
    return (Path(directory) / MANIFEST).exists()


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of an artifact folder.

    Raises:
        ArtifactError: no manifest, or one of another format or version.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.exists():
        hint = ""
        if (directory / "weights.safetensors").exists() or (directory / "transfer.yaml").exists():
            hint = " It looks like an artifact of an older shoprec: train it again."
        raise ArtifactError(f"{directory} is not a shoprec artifact (no {MANIFEST}).{hint}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path} is unreadable: {e}") from e
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ArtifactError(
            f"{directory} is a {manifest.get('format')} v{manifest.get('version')} artifact; "
            f"this shoprec reads {FORMAT} v{VERSION}: train it again"
        )
    return manifest


def verify(directory: str | Path) -> list[str]:
    """Files whose checksum differs from the manifest's (or that are missing)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    bad = []
    for name, digest in manifest["files"].items():
        p = directory / name
        if not p.exists() or _sha256(p) != digest:
            bad.append(name)
    return bad


class Artifact:
    """A trained artifact folder: its config, item table, history, metrics and scorer.

    Args:
        directory: the folder ``shoprec train`` wrote.
        check: verify every file's checksum first (:class:`ArtifactError` names the bad ones).
    """

    def __init__(self, directory: str | Path, *, check: bool = True) -> None:
        from shoprec import recipes

        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        if check:
            bad = verify(self.directory)
            if bad:
                raise ArtifactError(
                    f"{self.directory} is damaged: {', '.join(bad)} missing or changed since "
                    "it was written; train it again or restore the folder"
                )
        try:
            self.items = pl.read_parquet(self.directory / ITEMS_FILE)
            self.seen = pl.read_parquet(self.directory / SEEN_FILE)
            self.config_dict = yaml.safe_load((self.directory / CONFIG_FILE).read_text())
            self.metrics = json.loads((self.directory / METRICS_FILE).read_text())
            recipe = recipes.get(self.manifest["recipe"])
            self.scorer: Scorer = recipe.load_scorer(self.directory / SCORER_DIR)
        except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as e:
            raise ArtifactError(f"cannot load {self.directory}: {e}") from e
        self._recommender: Recommender | None = None

    @classmethod
    def load(cls, directory: str | Path, *, check: bool = True) -> Artifact:
        return cls(directory, check=check)

    @property
    def recipe(self) -> str:
        return str(self.manifest["recipe"])

    @property
    def tasks(self) -> list[str]:
        return self.scorer.tasks

    @property
    def task_names(self) -> list[str]:
        return self.scorer.tasks

    @property
    def target(self) -> str:
        return self.scorer.target

    @property
    def config(self) -> ExperimentConfig:
        """The experiment config it was trained from."""
        from shoprec.config import ExperimentConfig

        return ExperimentConfig.from_dict(self.config_dict)

    def history(self, user: str) -> pl.DataFrame:
        """The user's training events (user, item, behavior)."""
        return self.seen.filter(pl.col("user") == user)

    def recommender(self, config: RecommenderConfig | None = None, **kwargs: Any) -> Recommender:
        """The Recommender over this artifact, with the serve section's settings by default
        (built once and kept when no config is given)."""
        from shoprec.recommend.recommender import Recommender

        if config is None and not kwargs:
            if self._recommender is None:
                self._recommender = Recommender.from_artifact(self)
            return self._recommender
        return Recommender.from_artifact(self, config, **kwargs)

    def recommend(self, user: str, k: int = 10, **kwargs: Any) -> list[Any]:
        """Top-``k`` items for ``user`` from :meth:`recommender` (the served list)."""
        return self.recommender().recommend(user, k, **kwargs)
