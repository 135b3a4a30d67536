"""The typed experiment config: one YAML file from data to served recommendations.

Every command of the front door reads this one schema (``shoprec train``, ``evaluate``,
``recommend``, ``serve``, ``config check``); every benchmark's "ours" row is one such file.
Unknown keys at any depth are refused with the key's path and the keys allowed there, and
relative paths are taken from the config file's folder, so a config (and the artifact that
copies it) means the same wherever it is run from::

    name: my_shop
    data:                                  # a built-in name, or the shop's own files
      events:
        path: events.csv                   # relative to this file
        columns: {user: customer_id, item: sku, timestamp: ts, behavior: event}
        behaviors: {pageview: view, addtocart: cart, transaction: buy}
        drop_unmapped: true                # other event names are dropped (and counted)
      catalog: {path: products.csv, columns: {item: sku, title: name}}
    split: {kind: time, test_days: 14, valid_days: 7}
    recipe: {name: multibehavior}          # or pairs, windows, content, cross_domain
    tasks: [view, cart, buy]               # the last one is the target
    model: {name: mmoe, embedding_dim: 16, config: {n_experts: 4}}
    weighting: {name: fixed}
    train: {epochs: 8, lr: 0.001, threads: 1}
    evaluate: {protocol: full, ks: [10, 20]}
    serve: {fusion: "buy", new_item_slots: 1}
    output: runs/my_shop

Sections and their keys are listed by ``shoprec train --help`` and the README; ``shoprec
config check FILE`` validates a file without training.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shoprec.errors import DataError

__all__ = [
    "ConfigError",
    "DataSection",
    "EvaluateSection",
    "ExperimentConfig",
    "FileSection",
    "ModelSection",
    "RecipeSection",
    "SearchSection",
    "ServeSection",
    "TaskSection",
    "check_config",
    "load_config",
    "parse_settings",
]


class ConfigError(DataError):
    """A config that cannot be used: the message names the key (or file) and what is allowed."""


class Strict(BaseModel):
    """Base of every section: unknown keys are errors, values are frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(value: Any, info: ValidationInfo) -> Any:
    """A relative path taken from the config file's folder (``context["base"]``)."""
    if value is None:
        return None
    base = (info.context or {}).get("base")
    path = Path(str(value)).expanduser()
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    return path


# ---------------------------------------------------------------------------------- data


class FileSection(Strict):
    """One of the shop's files and how its columns map onto shoprec's."""

    path: Path  # CSV / TSV / Parquet; relative to the config file
    columns: dict[str, str] = Field(default_factory=dict)  # shoprec name -> the file's column
    behaviors: dict[str, str] = Field(default_factory=dict)  # the file's event -> behavior
    default_behavior: str = "buy"  # when the file has no behavior column
    timestamp_format: str | None = None  # strftime; inferred when absent
    separator: str | None = None  # CSV separator; from the extension when absent
    drop_unmapped: bool = False  # drop events whose name maps to no behavior (counted)

    _path = field_validator("path", mode="before")(_resolve)


class SimulateSection(Strict):
    """The seeded synthetic shop (:func:`shoprec.data.simulate.simulate_shop`)."""

    n_events: int = Field(200_000, gt=0)
    seed: int = 0
    n_users: int | None = Field(None, gt=0)
    n_items: int | None = Field(None, gt=0)
    n_days: int | None = Field(None, gt=0)  # days simulated (demand series need many weeks)
    n_markets: int | None = Field(None, ge=2)  # market_0 is the big source market
    taste_overlap: float | None = Field(None, ge=0, le=1)  # shared share of market tastes
    popularity_overlap: float | None = Field(None, ge=0, le=1)  # the same for popularity
    source_market_share: float | None = Field(None, ge=0, le=1)  # users at home in market_0
    shared_user_share: float | None = Field(None, ge=0, le=1)  # users also in a 2nd market
    second_market_activity: float | None = Field(None, ge=0, le=1)  # their share there
    popularity_sigma: float | None = Field(None, ge=0)  # lognormal sd of item popularity
    temperature: float | None = Field(None, gt=0)  # exposure ~ exp(affinity / temperature)
    n_candidates: int | None = Field(None, gt=0)  # popularity-drawn candidates per exposure
    cart_rate: float | None = Field(None, gt=0, le=1)  # P(cart | click); lower: sparser carts
    buy_rate: float | None = Field(None, gt=0, le=1)  # P(buy | cart); lower: sparser buys


class DataSection(Strict):
    """Where the events come from: exactly one of ``dataset``, ``events`` or ``release``."""

    dataset: str | None = None  # built-in name, "simulated", a folder or a data YAML
    simulate: SimulateSection | None = None  # with dataset: simulated
    options: dict[str, Any] = Field(default_factory=dict)  # a built-in loader's arguments
    events: FileSection | None = None  # the shop's own events file
    catalog: FileSection | None = None  # item -> title, category, brand, price, stock
    users: FileSection | None = None  # user -> attributes
    release: dict[str, Any] | None = None  # a public release layout (see the README)
    behaviors: list[str] | None = None  # keep only these behaviors (None: all)
    # rows whose values cannot be right (NaN price, zero quantity, empty id, ...): drop and
    # count them in `dropped`, or refuse the file (README: "What the loaders accept")
    on_bad_rows: Literal["drop", "refuse"] = "drop"
    hash_user_ids: bool = False  # replace user ids by a keyed hash at ingestion
    user_id_salt_env: str = "SHOPREC_USER_ID_SALT"  # env var holding the key (never the config)

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_path(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        text = str(value)
        looks_like_path = "/" in text or Path(text).suffix in {".yaml", ".yml", ".csv"}
        if looks_like_path:
            return str(_resolve(text, info))
        base = (info.context or {}).get("base")
        if base is not None and (Path(base) / text).exists():
            return str(Path(base) / text)
        return text

    @field_validator("release", mode="before")
    @classmethod
    def _release_root(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict):
            return value
        out = dict(value)
        for key in ("root", "folder"):
            if key in out:
                out[key] = str(_resolve(out[key], info))
        if "root" not in out and "folder" not in out and (info.context or {}).get("base"):
            out["root"] = str((info.context or {})["base"])
        return out

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        given = [k for k in ("dataset", "events", "release") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "data needs exactly one of 'dataset' (a built-in name such as online_retail, "
                "or simulated), 'events' (your own file) or 'release' (a public release "
                f"layout); got {given or 'none'}"
            )
        if self.simulate is not None and self.dataset != "simulated":
            raise ValueError("'simulate' only goes with dataset: simulated")
        if (self.catalog or self.users) and self.events is None:
            raise ValueError("'catalog' and 'users' go with 'events' (your own files)")
        return self


# --------------------------------------------------------------------------------- split


class TimeSplit(Strict):
    """Global time cut (:func:`shoprec.data.split.time_split`)."""

    kind: Literal["time"]
    test_start: str | None = None
    valid_start: str | None = None
    test_days: float | None = Field(None, gt=0)
    valid_days: float | None = Field(None, ge=0)
    null_timestamps: Literal["error", "train", "drop"] = "error"


class LeaveLastOutSplit(Strict):
    """Per user, the last events held out (:func:`shoprec.data.split.leave_last_out`)."""

    kind: Literal["leave_last_out"]
    n_test: int = Field(1, ge=1)
    n_valid: int = Field(1, ge=0)
    behavior: str | None = None
    min_history: int = Field(1, ge=0)
    future: Literal["drop", "train"] = "drop"


class GivenSplit(Strict):
    """The release's own test (and valid) files; without a valid file, one target item per
    user is drawn from train as the validation hold-out (``valid_hold_out``)."""

    kind: Literal["given"]
    valid_hold_out: bool = True
    seed: int = 0


class RandomSplit(Strict):
    """Seeded random split, of all events or per user."""

    kind: Literal["random"]
    fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    seed: int = 0
    per_user: bool = False
    behavior: str | None = None  # per user: split only this behavior's events


class ColdItemSplit(Strict):
    kind: Literal["cold_items"]
    frac: float = Field(0.1, gt=0, lt=1)
    valid_frac: float = Field(0.0, ge=0, lt=1)
    seed: int = 0


class ColdUserSplit(Strict):
    kind: Literal["cold_users"]
    frac: float = Field(0.1, gt=0, lt=1)
    valid_frac: float = Field(0.0, ge=0, lt=1)
    seed: int = 0
    domain: str | None = None
    overlap_only: bool = True


SplitSection = Annotated[
    TimeSplit | LeaveLastOutSplit | GivenSplit | RandomSplit | ColdItemSplit | ColdUserSplit,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------------- recipe and tasks


class RecipeSection(BaseModel):
    """``name`` picks the recipe; the other keys are that recipe's options, checked against
    its own schema (``shoprec.recipes.<name>``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = "pairs"

    @model_validator(mode="after")
    def _known(self) -> RecipeSection:
        from shoprec import recipes

        if self.name not in recipes.names():
            raise ValueError(f"unknown recipe '{self.name}'; recipes: {recipes.names()}")
        schema = recipes.get(self.name).Options
        try:
            schema.model_validate(self.model_extra or {})
        except ValidationError as e:
            raise ValueError(_describe(e, schema, prefix=("recipe",))) from None
        return self

    @property
    def options(self) -> Any:
        """The recipe's own options, validated (a pydantic model of the recipe's schema)."""
        from shoprec import recipes

        return recipes.get(self.name).Options.model_validate(self.model_extra or {})


class TaskSection(Strict):
    """One task: a binary behavior, a regression (quantity) or a multi-class label."""

    name: str
    kind: Literal["binary", "regression", "multiclass"] = "binary"
    behavior: str | None = None  # the behavior a binary task predicts (default: its name)
    label: str | None = None  # the column a regression / multi-class task predicts
    n_classes: int | None = Field(None, ge=2)
    loss: str | None = None  # e.g. poisson or log1p_mse for a regression
    weight: float = Field(1.0, gt=0)  # fixed loss weight


def _as_task(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


# ------------------------------------------------------------------ model, train, weights


def _dataclass_keys(cls: type) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls))


def _typed(cls: type, values: dict[str, Any], section: str) -> Any:
    """A config dataclass from plain values, each checked against its field's type."""
    from pydantic import TypeAdapter

    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return TypeAdapter(cls).validate_python(values)
    except ValidationError as e:
        problems = "; ".join(
            f"'{section}.{'.'.join(str(x) for x in err['loc'])}': "
            f"{err['msg']} (got {err.get('input')!r})"
            for err in e.errors()
        )
        raise ValueError(problems) from None


class ModelSection(Strict):
    """A registered model (``shoprec.models``) and its config fields."""

    name: str = "mmoe"
    embedding_dim: int = Field(16, gt=0)
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> ModelSection:
        from shoprec.models import MODELS

        if self.name not in MODELS:
            raise ValueError(f"unknown model '{self.name}'; models: {sorted(MODELS)}")
        allowed = _dataclass_keys(MODELS[self.name][1])
        unknown = sorted(set(self.config) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown key 'model.config.{unknown[0]}' for {self.name}; allowed: {allowed}"
            )
        return self


class WeightingSection(BaseModel):
    """A loss-balancing strategy (``shoprec.train.weighting``) and its arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = "fixed"

    @model_validator(mode="after")
    def _known(self) -> WeightingSection:
        from shoprec.train.weighting import WEIGHTINGS

        if self.name not in WEIGHTINGS:
            raise ValueError(f"unknown weighting '{self.name}'; choose from {sorted(WEIGHTINGS)}")
        params = inspect.signature(WEIGHTINGS[self.name].__init__).parameters
        allowed = sorted(p for p in params if p not in ("self", "tasks"))
        unknown = sorted(set(self.model_extra or {}) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown key 'weighting.{unknown[0]}' for {self.name}; allowed: {allowed}"
            )
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainSection(BaseModel):
    """Fields of :class:`shoprec.train.loop.TrainConfig` (checked against it)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _known(self) -> TrainSection:
        from shoprec.train.loop import TrainConfig

        allowed = _dataclass_keys(TrainConfig)
        unknown = sorted(set(self.model_extra or {}) - set(allowed))
        if unknown:
            raise ValueError(f"unknown key 'train.{unknown[0]}'; allowed: {allowed}")
        self.train_config()
        return self

    def train_config(self, **overrides: Any) -> Any:
        """The :class:`~shoprec.train.loop.TrainConfig` these values make."""
        from shoprec.train.loop import TrainConfig

        values = {**(self.model_extra or {}), **overrides}
        return _typed(TrainConfig, values, "train")

    def get(self, key: str, default: Any = None) -> Any:
        return (self.model_extra or {}).get(key, default)


# -------------------------------------------------------------------- evaluate and serve


class EvaluateSection(Strict):
    """How ``shoprec evaluate`` (and ``train``'s test scores) measure the model."""

    protocol: Literal["full", "sampled"] = "full"  # rank all items, or 1 positive + N drawn
    ks: tuple[Annotated[int, Field(gt=0)], ...] = Field((10, 20), min_length=1)  # cut-offs
    n_negatives: int = Field(99, ge=1)  # sampled protocol
    sampling: Literal["uniform", "popularity"] = "uniform"  # sampled protocol
    target: str | None = None  # the behavior whose held-out items count (default: the target)
    slices: bool = True  # warm / cold users and items, domains
    bootstrap: int = Field(1000, ge=0)  # resamples for confidence intervals (0: none)
    seed: int = 0
    max_users: int | None = Field(None, gt=0)  # a seeded sample of users, for quick looks
    served: bool = False  # also measure what the Recommender (GET /recommend) returns
    exposure: bool = True  # coverage@k, Gini of exposure, shares by popularity decile / group
    group: str | None = None  # catalog column for exposure by group (default: category)
    baselines: bool = True  # popularity ranked beside the model, accuracy and exposure


class ServeSection(BaseModel):
    """Fields of :class:`shoprec.recommend.RecommenderConfig` (checked against it), and
    ``build_retrieval``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    # `shoprec train` builds the retrieval files (two-tower model, item indexes,
    # co-occurrences) into the artifact of a recipe that recommends items, so that the first
    # `shoprec recommend` / `serve` does not train them (minutes on a large shop); false (or
    # `train --no-retrieval`) leaves that to the first use, which builds them into a cache
    build_retrieval: bool = True

    @model_validator(mode="before")
    @classmethod
    def _forecast_path(cls, value: Any, info: ValidationInfo) -> Any:
        """``serve.forecast`` (a forecast folder) relative to the config file."""
        if isinstance(value, dict) and value.get("forecast") is not None:
            value = {**value, "forecast": str(_resolve(value["forecast"], info))}
        return value

    @model_validator(mode="after")
    def _known(self) -> ServeSection:
        from shoprec.recommend.recommender import RecommenderConfig

        allowed = ["build_retrieval", *_dataclass_keys(RecommenderConfig)]
        unknown = sorted(set(self.model_extra or {}) - set(allowed))
        if unknown:
            raise ValueError(f"unknown key 'serve.{unknown[0]}'; allowed: {allowed}")
        self.recommender_config()
        return self

    def recommender_config(self, **overrides: Any) -> Any:
        from shoprec.recommend.recommender import RecommenderConfig

        return _typed(RecommenderConfig, {**(self.model_extra or {}), **overrides}, "serve")


class SearchSection(Strict):
    """Tuning: settings tried on validation only; the test split is read once at the end."""

    method: Literal["grid", "tpe"] = "grid"
    space: dict[str, list[Any]]  # dotted setting -> values, e.g. {"train.lr": [0.001, 0.01]}
    trials: int | None = Field(None, gt=0)  # at most this many (grid: all by default)
    minutes: float | None = Field(None, gt=0)  # stop starting trials after this long
    metric: str | None = None  # validation key to maximise (default: the recipe's monitor)
    seed: int = 0

    @field_validator("space")
    @classmethod
    def _space(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        sections = {"recipe", "model", "train", "weighting", "split", "tasks", "data"}
        for key, values in value.items():
            if key.split(".")[0] not in sections:
                raise ValueError(
                    f"search.space key '{key}' must start with one of {sorted(sections)}"
                )
            if not isinstance(values, list) or not values:
                raise ValueError(f"search.space '{key}' needs a non-empty list of values")
        return value


# --------------------------------------------------------------------------- experiment


class ExperimentConfig(Strict):
    """A whole experiment. Only ``data`` is required; everything else has a default."""

    name: str = "experiment"
    data: DataSection
    split: SplitSection = Field(default_factory=lambda: TimeSplit(kind="time", test_days=14))
    recipe: RecipeSection = Field(default_factory=RecipeSection)
    tasks: tuple[TaskSection, ...] = ()  # empty: the recipe's default tasks
    model: ModelSection = Field(default_factory=ModelSection)
    weighting: WeightingSection = Field(default_factory=WeightingSection)
    train: TrainSection = Field(default_factory=TrainSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    serve: ServeSection = Field(default_factory=ServeSection)
    search: SearchSection | None = None
    forecast: dict[str, Any] | None = None  # demand forecaster (shoprec forecast), see below
    output: Path | None = None  # the artifact folder; default runs/<name>
    # settings replaced on the command line (``shoprec train --set``), already applied to the
    # sections above; kept so that an artifact's experiment.yaml says how it differs from its file
    overrides: dict[str, Any] | None = None
    source: Path | None = Field(None, exclude=True)  # the YAML file it was read from

    _output = field_validator("output", mode="before")(_resolve)

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [_as_task(v) for v in value]
        return value

    @field_validator("forecast", mode="before")
    @classmethod
    def _forecast(cls, value: Any, info: ValidationInfo) -> Any:
        """Checked against :class:`shoprec.inventory.forecast.ForecastOptions`; its stock
        file relative to the config's folder."""
        if value is None:
            return None
        from shoprec.inventory.forecast import ForecastOptions

        if not isinstance(value, dict):
            raise ValueError("'forecast' must be a mapping of forecaster settings")
        value = dict(value)
        if value.get("stock") is not None:
            value["stock"] = str(_resolve(value["stock"], info))
        try:
            ForecastOptions.model_validate(value)
        except ValidationError as e:
            raise ValueError(_describe(e, ForecastOptions, prefix=("forecast",))) from None
        return value

    @model_validator(mode="after")
    def _distinct_tasks(self) -> ExperimentConfig:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks are named twice: {names}")
        return self

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def output_dir(self) -> Path:
        return self.output or Path("runs") / self.name

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> ExperimentConfig:
        """Read and validate a YAML file; ``ConfigError`` names the key that is wrong."""
        return load_config(path, **overrides)

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], base: str | Path | None = None, source: Path | None = None
    ) -> ExperimentConfig:
        """Validate a mapping; relative paths are taken from ``base``."""
        if not isinstance(raw, dict):
            raise ConfigError("the config must be a mapping of sections", file=source)
        raw = dict(raw)
        if source is not None:
            raw.setdefault("name", Path(source).stem)
        try:
            cfg = cls.model_validate(raw, context={"base": Path(base) if base else None})
        except ValidationError as e:
            raise ConfigError(_describe(e, cls), file=source) from None
        return cfg.model_copy(update={"source": source}) if source else cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain values (paths as absolute strings), as written into an artifact."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"source"})

    def with_values(self, values: dict[str, Any]) -> ExperimentConfig:
        """A copy with dotted settings replaced, e.g. ``{"train.lr": 0.01}`` (search trials)."""
        raw = self.to_dict()
        for dotted, value in values.items():
            node = raw
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        raw.pop("search", None)
        return ExperimentConfig.from_dict(raw, source=self.source)


def load_config(path: str | Path, **overrides: Any) -> ExperimentConfig:
    """Read an experiment YAML (see the module docstring).

    Overrides replace values in the file's raw mapping before it is validated, so they are
    checked exactly as the file is (an unknown key is refused, relative paths are taken from
    the file's folder); they are recorded in the config's ``overrides``.

    Args:
        path: the YAML file.
        **overrides: dotted settings to replace, e.g. ``output="runs/x"`` or
            ``**{"train.epochs": 1, "evaluate.protocol": "sampled"}``.

    Raises:
        ConfigError: a missing or unreadable file, or a value the schema refuses; the
            message is one paragraph naming the file and the key.

    Example:
        >>> cfg = load_config("configs/sim_mmoe.yaml", **{"train.epochs": 1})  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError("no such config file", file=path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read the config: {e}", file=path) from e
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a YAML mapping of sections", file=path)
    if overrides:
        for dotted, value in overrides.items():
            _set_dotted(raw, dotted, value, path)
        raw["overrides"] = {**(raw.get("overrides") or {}), **overrides}
    try:
        return ExperimentConfig.from_dict(raw, base=path.parent.resolve(), source=path)
    except ConfigError as e:
        if not overrides:
            raise
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise ConfigError(f"{_message(e)} (with the overrides {given})", file=path) from None


def parse_settings(settings: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``shoprec train --set``) as dotted settings.

    Each value is read as a YAML scalar or list (``1``, ``0.5``, ``1.0e-4``, ``true``,
    ``null``, ``[10, 20]``, ``{n_experts: 2}``); a number that YAML 1.1 leaves as text
    (``1e-4``) is read as a number.

    Raises:
        ConfigError: a setting without ``=`` or with an empty key, or a value that is not YAML.

    Example:
        >>> parse_settings(["train.epochs=1", "evaluate.ks=[10, 20]"])
        {'train.epochs': 1, 'evaluate.ks': [10, 20]}
    """
    out: dict[str, Any] = {}
    for text in settings:
        key, eq, value = text.partition("=")
        key = key.strip()
        if not eq or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"--set takes KEY=VALUE with a dotted key such as train.epochs=1; got {text!r}"
            )
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: {value!r} is not a YAML value ({e})") from None
        if isinstance(parsed, str) and _NUMBER.fullmatch(parsed.strip()):
            parsed = float(parsed)
        out[key] = parsed
    return out


# a number in exponent form that YAML 1.1 reads as text (1e-4, 5E3)
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, path: Path) -> None:
    """Set ``a.b.c`` in a raw (unvalidated) mapping, making the missing sections on the way;
    a list is entered by index (``tasks.0.weight``). Keys the schema does not know are left
    for validation to refuse (it names the key and the ones allowed)."""
    node: Any = raw
    *parents, leaf = dotted.split(".")
    for depth, key in enumerate(parents):
        where = ".".join(parents[: depth + 1])
        if isinstance(node, list):
            node = node[_index(key, node, where, dotted, path)]
        else:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            node = child
        if not isinstance(node, dict | list):
            raise ConfigError(
                f"cannot set '{dotted}': '{where}' is a value ({node!r}), not a section",
                file=path,
            )
    if isinstance(node, list):
        node[_index(leaf, node, dotted, dotted, path)] = value
    else:
        node[leaf] = value


def _index(key: str, node: list[Any], where: str, dotted: str, path: Path) -> int:
    if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
        raise ConfigError(
            f"cannot set '{dotted}': '{where}' indexes a list of {len(node)} entries "
            f"(0..{len(node) - 1})",
            file=path,
        )
    return int(key)


def _message(error: ConfigError) -> str:
    """A ConfigError's own words, without the 'In FILE: ' prefix it adds."""
    return str(error).removeprefix(f"In {error.file}: ")


def check_config(path: str | Path, **overrides: Any) -> dict[str, Any]:
    """Validate a config and its data source without training; a summary of what it does.

    Args:
        path: the YAML file.
        **overrides: dotted settings applied first, as :func:`load_config` (``--set``).

    Raises:
        ConfigError: as :func:`load_config`, or a data file that does not exist.
    """
    cfg = load_config(path, **overrides)
    d = cfg.data
    for f in (d.events, d.catalog, d.users):
        if f is not None and not f.path.exists():
            raise ConfigError(f"data file {f.path} does not exist", file=path)
    is_path = d.dataset is not None and ("/" in d.dataset or Path(d.dataset).suffix)
    if is_path and not Path(str(d.dataset)).exists():
        raise ConfigError(f"data.dataset {d.dataset} does not exist", file=path)
    from shoprec.recipes import check_tasks

    try:
        check_tasks(cfg.recipe.name, [(t.name, t.kind) for t in cfg.tasks])
    except ValueError as e:
        raise ConfigError(str(e), file=path) from e
    return {
        "name": cfg.name,
        "data": d.dataset or (str(d.events.path) if d.events else "release"),
        "split": cfg.split.kind,
        "recipe": cfg.recipe.name,
        "tasks": cfg.task_names or "(the recipe's default)",
        "model": cfg.model.name,
        "output": str(cfg.output_dir),
        "search": None
        if cfg.search is None
        else f"{cfg.search.method} over {list(cfg.search.space)}",
    }


# ------------------------------------------------------------------------- error messages


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys allowed at ``loc`` (the parent of an unknown key) in ``model``'s schema."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            # a discriminated union member (e.g. split 'time') or a dict key
            return None
        annotation = fields[part].annotation
        current = _model_in(annotation)
        if current is None:
            return None
    fields = getattr(current, "model_fields", None)
    if fields is None:
        return None
    return sorted(k for k, f in fields.items() if not f.exclude)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _describe(error: ValidationError, model: type[BaseModel], prefix: tuple[str, ...] = ()) -> str:
    """One paragraph: each problem with the dotted key it is at."""
    parts = []
    unknown: dict[tuple[Any, ...], list[str]] = {}
    for e in error.errors():
        loc = tuple(str(x) for x in e["loc"] if not str(x).startswith("function-"))
        loc = tuple(x for x in loc if x not in _UNION_TAGS)
        if e["type"] == "extra_forbidden":
            unknown.setdefault(tuple(e["loc"][:-1]), []).append(".".join((*prefix, *loc)))
    for parent, keys in unknown.items():
        allowed = _allowed(model, parent)
        if allowed is None and parent[:1] == ("split",):
            allowed = _split_keys(parent[1] if len(parent) > 1 else None)
        hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        names = ", ".join(f"'{k}'" for k in keys)
        parts.append(f"unknown key{'s' if len(keys) > 1 else ''} {names}{hint}")
    for e in error.errors():
        loc = tuple(str(x) for x in e["loc"] if not str(x).startswith("function-"))
        loc = tuple(x for x in loc if x not in _UNION_TAGS)
        key = ".".join((*prefix, *loc))
        if e["type"] == "extra_forbidden":
            continue
        if e["type"] == "missing":
            parts.append(f"'{key}' is required")
        elif e["type"] == "union_tag_invalid":
            parts.append(
                f"'{key}.kind' must be one of {_split_kinds()}, got {e['input'].get('kind')!r}"
                if isinstance(e.get("input"), dict)
                else f"'{key}': {e['msg']}"
            )
        elif e["type"] == "union_tag_not_found":
            parts.append(f"'{key}' needs a 'kind' (one of {_split_kinds()})")
        else:
            msg = e["msg"].removeprefix("Value error, ").rstrip(".")
            own = ("unknown key", "data needs", f"'{key}")
            where = f"'{key}': " if key and not msg.startswith(own) else ""
            value = e.get("input")
            shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
            parts.append(f"{where}{msg}{shown}")
    return "; ".join(dict.fromkeys(parts)) + "."


_SPLITS = {
    "time": TimeSplit,
    "leave_last_out": LeaveLastOutSplit,
    "given": GivenSplit,
    "random": RandomSplit,
    "cold_items": ColdItemSplit,
    "cold_users": ColdUserSplit,
}
_UNION_TAGS = set(_SPLITS)


def _split_kinds() -> list[str]:
    return list(_SPLITS)


def _split_keys(kind: Any) -> list[str] | None:
    cls = _SPLITS.get(str(kind))
    return sorted(cls.model_fields) if cls else None
