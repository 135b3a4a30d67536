"""The typed experiment config: strict keys at every depth, paths from the file's folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shoprec.config import ConfigError, ExperimentConfig, check_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    sub = tmp_path / "cfg"
    sub.mkdir()
    (sub / "events.csv").write_text("user,item\nu,i\n")
    path = write(
        sub,
        "data: {events: {path: events.csv}}\noutput: out/run\n",
    )
    cfg = load_config(path)
    assert cfg.name == "exp"  # from the file name
    assert cfg.data.events.path == sub.resolve() / "events.csv"
    assert cfg.output == sub.resolve() / "out" / "run"
    assert cfg.recipe.name == "pairs" and cfg.split.kind == "time"
    assert cfg.train.train_config().epochs == 10  # TrainConfig's default


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("data: {dataset: simulated, simulate: {n_event: 5}}", "data.simulate.n_event", "n_events"),
        (
            "data: {dataset: simulated}\nsplit: {kind: time, test_dayz: 3}",
            "split.test_dayz",
            "test_days",
        ),
        (
            "data: {dataset: simulated}\nrecipe: {name: pairs, n_negatvies: 3}",
            "recipe.n_negatvies",
            "n_negatives",
        ),
        (
            "data: {events: {path: e.csv, behaviours: {a: view}}}",
            "data.events.behaviours",
            "behaviors",
        ),
        ("data: {dataset: simulated}\ntrain: {epoch: 3}", "train.epoch", "epochs"),
        ("data: {dataset: simulated}\nserve: {diversty: 0.1}", "serve.diversty", "diversity"),
        (
            "data: {dataset: simulated}\nmodel: {name: mmoe, config: {n_expert: 2}}",
            "model.config.n_expert",
            "n_experts",
        ),
        ("data: {dataset: simulated}\nevaluate: {protocl: full}", "evaluate.protocl", "protocol"),
        ("data: {dataset: simulated}\nextra: 1", "extra", "data"),
    ],
)
def test_unknown_keys_at_any_depth_are_named(
    tmp_path: Path, text: str, key: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    message = str(e.value)
    assert f"'{key}'" in message and allowed in message
    assert "exp.yaml" in message  # the file is named
    assert "\n" not in message.strip()  # one paragraph


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("data: {dataset: simulated}\ntrain: {lr: fast}", "train.lr"),
        ("data: {dataset: simulated}\nsplit: {kind: sideways}", "split.kind"),
        ("data: {dataset: simulated}\nrecipe: {name: magic}", "unknown recipe 'magic'"),
        ("data: {dataset: simulated}\nmodel: {name: gpt}", "unknown model 'gpt'"),
        ("split: {kind: time}", "'data' is required"),
        ("data: {}", "exactly one of"),
        ("data: {dataset: simulated}\nevaluate: {ks: [0]}", "evaluate"),
        ("data: {dataset: simulated}\nsearch: {space: {lr: [1]}}", "search.space key 'lr'"),
        ("- just a list", "mapping"),
    ],
)
def test_wrong_values_give_one_paragraph(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert needle in str(e.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    path = write(tmp_path, "data: {events: {path: missing.csv}}")
    load_config(path)  # the schema is fine ...
    with pytest.raises(ConfigError, match=r"missing\.csv"):
        check_config(path)  # ... the check looks for the file


def test_with_values_replaces_dotted_settings(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            "data: {dataset: simulated}\ntrain: {lr: 0.01}\nsearch: {space: {train.lr: [0.1]}}",
        )
    )
    changed = cfg.with_values({"train.lr": 0.5, "model.embedding_dim": 4})
    assert changed.train.train_config().lr == 0.5
    assert changed.model.embedding_dim == 4
    assert changed.search is None  # a trial does not search again
    assert cfg.train.train_config().lr == 0.01  # frozen original


def test_round_trip_through_dict(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            "data: {dataset: simulated, simulate: {n_events: 500}}\ntasks: [view, {name: buy}]",
        )
    )
    again = ExperimentConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg.model_copy(update={"source": None})
    assert again.task_names == ["view", "buy"]


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for folder in ("configs", "benchmarks/configs", "examples")
        for p in (ROOT / folder).rglob("*.yaml")
        if "runs" not in p.parts
    ),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.recipe.name


def test_a_task_the_recipe_cannot_learn_is_refused_before_training(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "data: {dataset: simulated}\nrecipe: {name: pairs}\n"
        "tasks: [buy, {name: interest, kind: multiclass}]\n",
    )
    with pytest.raises(ConfigError, match=r"pairs recipe learns \['binary'\].*multibehavior"):
        check_config(path)
    from shoprec.recipes import get

    with pytest.raises(ValueError, match="task 'interest' is multiclass"):
        get("pairs")(load_config(path))  # a recipe is never built with it either
    ok = write(
        tmp_path,
        "data: {dataset: simulated}\nrecipe: {name: multibehavior}\n"
        "tasks: [view, buy, {name: interest, kind: multiclass}]\n",
        "ok.yaml",
    )
    assert check_config(ok)["tasks"] == ["view", "buy", "interest"]


def test_parse_settings_reads_yaml_values() -> None:
    from shoprec.config import parse_settings

    got = parse_settings(
        [
            "train.epochs=1",
            "train.lr=1e-4",  # YAML 1.1 leaves this as text; --set reads a number
            "evaluate.ks=[10, 20]",
            "evaluate.protocol=sampled",
            "evaluate.max_users=null",
            "evaluate.slices=false",
            "name=a=b",  # only the first '=' splits
        ]
    )
    assert got == {
        "train.epochs": 1,
        "train.lr": 1e-4,
        "evaluate.ks": [10, 20],
        "evaluate.protocol": "sampled",
        "evaluate.max_users": None,
        "evaluate.slices": False,
        "name": "a=b",
    }
    for bad in ("train.epochs", "=1", "train..epochs=1", "train.epochs=[1"):
        with pytest.raises(ConfigError, match="--set"):
            parse_settings([bad])


def test_overrides_are_validated_like_the_file_and_recorded(tmp_path: Path) -> None:
    (tmp_path / "other.csv").write_text("user,item\nu,i\n")
    path = write(
        tmp_path,
        "data: {dataset: simulated, simulate: {n_events: 500}}\ntasks: [view, buy]\n"
        "train: {epochs: 8}\nrecipe: {name: pairs}\n",
    )
    cfg = load_config(
        path,
        **{
            "train.epochs": 1,
            "data.simulate.n_events": 300,
            "evaluate.protocol": "sampled",  # a section the file does not have
            "tasks.0": "cart",  # a list entry by index
            "recipe.n_negatives": 2,
        },
    )
    assert cfg.train.train_config().epochs == 1
    assert cfg.data.simulate.n_events == 300 and cfg.evaluate.protocol == "sampled"
    assert cfg.task_names == ["cart", "buy"] and cfg.recipe.options.n_negatives == 2
    assert cfg.overrides["train.epochs"] == 1
    saved = ExperimentConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert saved.overrides == cfg.overrides and saved.train.train_config().epochs == 1

    # a path given on the command line is taken from the config file's folder, as in the file
    moved = load_config(path, **{"data.dataset": None, "data.simulate": None,
                                 "data.events.path": "other.csv"})  # fmt: skip
    assert moved.data.events.path == tmp_path.resolve() / "other.csv"


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ({"train.epoch": 1}, ["'train.epoch'", "epochs", "train.epoch=1"]),
        ({"evaluate.protocl": "sampled"}, ["'evaluate.protocl'", "allowed here", "protocol"]),
        ({"nmae": "x"}, ["'nmae'", "allowed here", "name"]),
        ({"train.epochs.x": 1}, ["'train.epochs.x'", "'train.epochs' is a value"]),
        ({"tasks.5.name": "x"}, ["'tasks.5.name'", "list of 2 entries"]),
        ({"train.lr": "fast"}, ["'train.lr'", "'fast'"]),
    ],
)
def test_bad_overrides_name_the_key(tmp_path: Path, setting: dict, words: list[str]) -> None:
    path = write(tmp_path, "data: {dataset: simulated}\ntasks: [view, buy]\ntrain: {epochs: 8}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, **setting)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message


def test_config_check_takes_the_same_overrides_as_train(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shoprec.cli import app

    path = write(tmp_path, "data: {dataset: simulated}\nrecipe: {name: pairs}\n")
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "check", str(path), "--set", "recipe.name=multibehavior"])
    assert ok.exit_code == 0 and "multibehavior" in ok.stdout
    bad = runner.invoke(app, ["config", "check", str(path), "--set", "train.epoch=1"])
    assert bad.exit_code != 0 and "train.epoch" in bad.output and "epochs" in bad.output
