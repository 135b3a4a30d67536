"""Multi-task ranking models, their registry, and their artifacts.

The other models of this package, each in its own module, are not in the registry (which
lists the multi-task rankers an experiment's ``model:`` key can name):
:mod:`~shoprec.models.content` (new items from their content),
:mod:`~shoprec.models.cross_domain` (several domains sharing one user base),
:mod:`~shoprec.models.emcdr` (a user's vector mapped from one domain to another),
:mod:`~shoprec.models.history_encoder` (users encoded from their item histories) and
:mod:`~shoprec.models.two_tower` (retrieval). Every one of them owns its loss and trains
with :func:`shoprec.train.loop.fit`.

Every registered model keeps the :class:`~shoprec.models.base.MultiTaskModel` contract and
is built as ``Model(features, tasks, config)``. The registry maps a name to ``(model class,
config class)``; :func:`build_model` builds one by name, :func:`save_model` /
:func:`load_model` write and read an artifact folder::

    config.json          model name, config, feature specs, task specs
    weights.safetensors  the state dict

Example:
    >>> from shoprec.models import CategoricalFeature, Task, build_model
    >>> model = build_model("mmoe", [CategoricalFeature("item", 100)], [Task("click")], n_experts=4)
    >>> model.config.n_experts
    4
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import shoprec
from shoprec.models.aitm import AITM, AITMConfig
from shoprec.models.base import MultiTaskModel
from shoprec.models.esmm import ESMM, ESMMConfig
from shoprec.models.features import (
    CategoricalFeature,
    FeatureSpec,
    NumericFeature,
    SequenceFeature,
    Task,
    TextFeature,
    feature_from_dict,
)
from shoprec.models.mmoe import MMoE, MMoEConfig
from shoprec.models.ple import PLE, PLEConfig
from shoprec.models.shared_bottom import SharedBottom, SharedBottomConfig
from shoprec.models.single_task import SingleTask, SingleTaskConfig

__all__ = [
    "AITM",
    "ESMM",
    "MODELS",
    "PLE",
    "AITMConfig",
    "CategoricalFeature",
    "ESMMConfig",
    "FeatureSpec",
    "MMoE",
    "MMoEConfig",
    "MultiTaskModel",
    "NumericFeature",
    "PLEConfig",
    "SequenceFeature",
    "SharedBottom",
    "SharedBottomConfig",
    "SingleTask",
    "SingleTaskConfig",
    "Task",
    "TextFeature",
    "build_model",
    "config_from_dict",
    "load_model",
    "save_model",
]

#: Registry: model name -> (model class, config class).
MODELS: dict[str, tuple[type[MultiTaskModel], type]] = {
    cls.model_name: (cls, config)
    for cls, config in [
        (SingleTask, SingleTaskConfig),
        (SharedBottom, SharedBottomConfig),
        (MMoE, MMoEConfig),
        (PLE, PLEConfig),
        (ESMM, ESMMConfig),
        (AITM, AITMConfig),
    ]
}

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT_VERSION = 1


def config_from_dict(config_cls: type, values: dict[str, Any]) -> Any:
    """Build a config dataclass from plain values (e.g. YAML or JSON): lists become tuples and
    unknown keys raise ``ValueError`` naming the known ones.

    Args:
        config_cls: a config dataclass, e.g. :class:`MMoEConfig`.
        values: field name -> value; missing fields keep their defaults.

    Returns:
        The config instance.
    """
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no field(s) {unknown}; known: {sorted(known)}")
    return config_cls(**{k: _tuples(v) for k, v in values.items()})


def _tuples(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


def build_model(
    name: str, features: Sequence[FeatureSpec], tasks: Sequence[Task], **cfg: Any
) -> MultiTaskModel:
    """Build a registered model by name.

    Args:
        name: a key of :data:`MODELS` (``single_task``, ``shared_bottom``, ``mmoe``, ``ple``,
            ``esmm``, ``aitm``).
        features: feature specs.
        tasks: task specs.
        **cfg: config fields; the rest keep their defaults.

    Returns:
        The model, freshly initialised (seed with ``torch.manual_seed`` beforehand).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(MODELS)}")
    model_cls, config_cls = MODELS[name]
    return model_cls(list(features), list(tasks), config_from_dict(config_cls, cfg))


def save_model(model: MultiTaskModel, directory: str | Path) -> Path:
    """Write ``config.json`` and ``weights.safetensors`` into ``directory`` (created if needed).

    Args:
        model: a registered model.
        directory: the artifact folder; existing files of the same names are replaced.

    Returns:
        The folder.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if MODELS.get(model.model_name, (None,))[0] is not type(model):
        raise ValueError(f"{type(model).__name__} is not a registered model")
    meta = {
        "format": "shoprec.model",
        "format_version": FORMAT_VERSION,
        "shoprec_version": shoprec.__version__,
        "model": model.model_name,
        "config": dataclasses.asdict(model.config),
        "features": [f.to_dict() for f in model.features],
        "tasks": [t.to_dict() for t in model.tasks],
    }
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"model": model.model_name})
    return directory


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> MultiTaskModel:
    """Rebuild a model saved by :func:`save_model`; it gives the same outputs as the original.

    Args:
        directory: the artifact folder.
        device: where to put the weights.

    Returns:
        The model, in eval mode (call ``.train()`` to fine-tune it).
    """
    directory = Path(directory)
    meta = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != "shoprec.model" or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory / CONFIG_FILE} is not a shoprec model artifact (v1)")
    features = [feature_from_dict(f) for f in meta["features"]]
    tasks = [Task.from_dict(t) for t in meta["tasks"]]
    model = build_model(meta["model"], features, tasks, **meta["config"])
    state = load_file(str(directory / WEIGHTS_FILE), device=str(device))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
