"""One artifact layout for every recipe: save, load, verify.

::

    manifest.json      format, version, recipe, tasks, target, size and sha256 of every file
    experiment.yaml    the config it was trained from (paths absolute)
    items.parquet      the catalog by position: item, title, category, brand, price, stock
    seen.parquet       training events: user, item, behavior (history and exclusion)
    metrics.json       validation scores of the selected model, test scores, history
    scorer/            the recipe's own state (weights.safetensors, JSON, Parquet)
    retrieval/         candidate sources, built for serving (shoprec serve / Recommender)

No pickle anywhere: weights are safetensors, everything else JSON or Parquet. An artifact is
written into a temporary folder, every file synced, then renamed into place; its manifest
names each file with its size and SHA-256, and :class:`Artifact` checks them before it reads
anything (:class:`ArtifactError` names the missing, truncated or changed file). The
retrieval files are in the manifest when they were built into the artifact
(:func:`~shoprec.recommend.build_retrieval`); serving never writes into an artifact (it builds
missing retrieval files into a cache folder elsewhere). :class:`Artifact`
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
from shoprec import atomic
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


#: The service's event store beside the model: never in the manifest, never moved.
_STORE_SUFFIXES = (".sqlite", ".sqlite-wal", ".sqlite-shm", ".sqlite-journal")


def _files(directory: Path, skip: tuple[str, ...] = (MANIFEST,)) -> list[Path]:
    """The files a manifest covers: all but itself, the service's event store and
    temporary files."""
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and p.relative_to(directory).parts[0] not in skip
        and not p.name.endswith(_STORE_SUFFIXES)
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def _entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


def file_entries(directory: str | Path, under: str | None = None) -> dict[str, dict[str, Any]]:
    """``{relative path: {size, sha256}}`` of the files a manifest covers (those ``under`` a
    sub-folder only, when given)."""
    directory = Path(directory)
    root = directory / under if under else directory
    if not root.exists():
        return {}
    return {
        p.relative_to(directory).as_posix(): _entry(p)
        for p in _files(directory)
        if root == directory or root in p.parents
    }


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> None:
    """Replace ``manifest.json`` atomically (temp file, fsync, rename, fsync of the folder)."""
    atomic.write_text(Path(directory) / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def seal(directory: str | Path, under: str) -> dict[str, Any]:
    """Put the files under ``directory/under`` into the manifest (replacing what it said of
    that folder) after checking every other file; returns the new manifest.

    Used after a step that adds files to a verified artifact (the retrieval files).

    Raises:
        ArtifactError: the rest of the artifact is already damaged.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    prefix = under.rstrip("/") + "/"
    others = {k: v for k, v in manifest["files"].items() if not k.startswith(prefix)}
    problems = _problems(directory, others)
    if problems:
        raise ArtifactError(_damaged(directory, problems))
    manifest["files"] = {**others, **file_entries(directory, under)}
    write_manifest(directory, manifest)
    return manifest


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
    """Write an artifact: into a temporary folder first, every file synced, then renamed into
    place, so a crash never leaves a half-written artifact where a complete one was. Where
    the folder holds a service's event store (``*.sqlite``), the new files are moved in one
    by one and the manifest last, and the store stays where it is.

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
    written = config.to_dict()
    written["output"] = str(directory.resolve())  # where it is (``--output`` may differ)
    (tmp / CONFIG_FILE).write_text(yaml.safe_dump(written, sort_keys=False))
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
        "files": file_entries(tmp),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if directory.exists() and any(directory.glob("*.sqlite*")):
        _swap_contents(tmp, directory)
    else:
        atomic.replace_dir(tmp, directory)  # every file synced, folder renamed into place
    log.info("artifact written to %s", directory)
    return directory


def _swap_contents(tmp: Path, directory: Path) -> None:
    """Move the new artifact in ``tmp`` into ``directory`` entry by entry, the manifest last,
    leaving the service's event store (``*.sqlite*``) where it is: a running service keeps
    writing into the very same files (a copy, or a folder renamed away, would lose the
    events acknowledged meanwhile). Old entries the new artifact lacks (retrieval files of
    the old items) are removed."""
    atomic.fsync_tree(tmp)
    new = {p.name for p in tmp.iterdir()}
    for p in sorted(tmp.iterdir()):
        if p.name == MANIFEST:
            continue
        if p.is_dir():
            atomic.replace_dir(p, directory / p.name)
        else:
            os.replace(p, directory / p.name)
    os.replace(tmp / MANIFEST, directory / MANIFEST)
    for p in directory.iterdir():  # not in the new manifest: unread from here on
        if p.name not in new and not p.name.endswith(_STORE_SUFFIXES):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    atomic.fsync_dir(directory)
    shutil.rmtree(tmp, ignore_errors=True)


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


def _problems(directory: Path, files: dict[str, Any]) -> list[str]:
    """What is wrong with the listed files, one phrase per file (sizes first: cheap)."""
    problems = []
    for name, want in files.items():
        size, digest = (
            (want.get("size"), want["sha256"]) if isinstance(want, dict) else (None, want)
        )
        p = directory / name
        if not p.is_file():
            problems.append(f"{name} is missing")
            continue
        have = p.stat().st_size
        if size is not None and have != size:
            how = "truncated" if have < size else "longer"
            problems.append(f"{name} is {how} ({have:,} bytes; the manifest says {size:,})")
        elif _sha256(p) != digest:
            problems.append(f"{name} has changed (its SHA-256 differs from the manifest's)")
    return problems


def _damaged(directory: Path, problems: list[str]) -> str:
    return (
        f"{directory} is damaged: {'; '.join(problems)}. Restore the folder from a copy or "
        "train it again."
    )


def problems(directory: str | Path) -> list[str]:
    """Every file of the manifest that is missing, of another size or another SHA-256, as
    readable phrases (``scorer/model.safetensors is truncated (10 bytes; ...)``).

    Raises:
        ArtifactError: no readable manifest.
    """
    directory = Path(directory)
    return _problems(directory, read_manifest(directory)["files"])


def verify(directory: str | Path) -> list[str]:
    """Names of the files whose size or checksum differs from the manifest's (or that are
    missing)."""
    return [p.split(" ", 1)[0] for p in problems(directory)]


def checked(directory: str | Path) -> dict[str, Any]:
    """The manifest, after checking every file it lists.

    Raises:
        ArtifactError: no manifest, or a file missing, truncated or changed (named).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    bad = _problems(directory, manifest["files"])
    if bad:
        raise ArtifactError(_damaged(directory, bad))
    return manifest


class Artifact:
    """A trained artifact folder: its config, item table, history, metrics and scorer.

    Args:
        directory: the folder ``shoprec train`` wrote.
        check: verify every file's checksum first (:class:`ArtifactError` names the bad ones).
    """

    def __init__(self, directory: str | Path, *, check: bool = True) -> None:
        from shoprec import recipes

        self.directory = Path(directory)
        self.manifest = checked(self.directory) if check else read_manifest(self.directory)
        self.items = self._read(ITEMS_FILE, pl.read_parquet)
        self.seen = self._read(SEEN_FILE, pl.read_parquet)
        self.config_dict = self._read(CONFIG_FILE, lambda p: yaml.safe_load(p.read_text()))
        self.metrics = self._read(METRICS_FILE, lambda p: json.loads(p.read_text()))
        if not isinstance(self.config_dict, dict):
            raise ArtifactError(f"{self.directory / CONFIG_FILE} holds no experiment config")
        try:
            recipe = recipes.get(self.manifest["recipe"])
        except (KeyError, ValueError, ShoprecError) as e:
            raise ArtifactError(f"{self.directory}: {e}") from e
        # a scorer's files can fail in many ways (a truncated safetensors header, weights of
        # another shape than its config, ...): each becomes an ArtifactError naming the folder
        self.scorer: Scorer = self._read(SCORER_DIR, recipe.load_scorer)
        if list(self.items["item"].cast(pl.String)) != [str(i) for i in self.scorer.items]:
            raise ArtifactError(
                f"{self.directory}: {ITEMS_FILE} and the scorer in {SCORER_DIR}/ list "
                "different items"
            )
        self._recommender: Recommender | None = None

    def _read(self, name: str, reader: Any) -> Any:
        """``reader(directory / name)``, any failure an :class:`ArtifactError` naming it."""
        path = self.directory / name
        if not path.exists():
            raise ArtifactError(f"{self.directory} is damaged: {name} is missing")
        try:
            return reader(path)
        except ArtifactError:
            raise
        except Exception as e:  # every way a file can be broken
            raise ArtifactError(
                f"cannot load {path}: {type(e).__name__}: {str(e).strip()[:300]}"
            ) from e

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
