"""The one training loop: early stopping with best weights, determinism, resumable checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shoprec.data.batches import TensorData
from shoprec.models import build_model
from shoprec.models.features import CategoricalFeature, NumericFeature, Task
from shoprec.train.loop import TrainConfig, fit
from shoprec.train.weighting import UncertaintyWeighting


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy(n: int = 2000, seed: int = 0) -> tuple[list, list, TensorData, TensorData]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(2, 20, (n,), generator=g)
    x = torch.randn(n, generator=g)
    logit = (a % 3 == 0).float() * 2 - 1 + x
    click = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    buy = click * (torch.rand(n, generator=g) < torch.sigmoid(logit - 1)).float()
    cols = {"a": a, "x": x, "click": click, "buy": buy}
    data = TensorData(cols)
    cut = int(n * 0.8)
    features = [CategoricalFeature("a", vocab_size=20, dim=4), NumericFeature("x")]
    tasks = [Task("click"), Task("buy")]
    return features, tasks, data.subset(torch.arange(cut)), data.subset(torch.arange(cut, n))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_early_stopping_restores_the_best_epoch() -> None:
    features, tasks, train, _ = toy()
    torch.manual_seed(0)
    model = build_model("mmoe", features, tasks, n_experts=2, expert_dims=(8,), tower_dims=(4,))
    planned = iter([0.5, 0.9, 0.6, 0.4, 0.3])
    snapshots: list[dict[str, torch.Tensor]] = []

    def evaluator(m: torch.nn.Module) -> dict[str, float]:
        snapshots.append(weights(m))
        return {"score": next(planned)}

    cfg = TrainConfig(epochs=5, batch_size=256, patience=2, monitor="score", progress=False)
    result = fit(model, train, None, cfg, evaluator=evaluator)
    assert result.best_epoch == 2
    assert result.stopped_early and len(result.history) == 4
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k]), k
    changed = [k for k in snapshots[1] if not torch.equal(snapshots[1][k], snapshots[3][k])]
    assert changed  # training moved on after epoch 2, so the restore did something


def test_same_seed_same_weights_and_validation_metrics() -> None:
    features, tasks, train, valid = toy()
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("shared_bottom", features, tasks, bottom_dims=(16,), tower_dims=(8,))
        res = fit(model, train, valid, TrainConfig(epochs=2, batch_size=256, progress=False))
        results.append((weights(model), res.best_scores))
    assert results[0][1] == results[1][1]
    for k in results[0][0]:
        assert torch.equal(results[0][0][k], results[1][0][k])
    assert {"click/auc", "buy/auc"} <= set(results[0][1])
    assert results[0][1]["click/auc"] > 0.6  # it learned the planted signal


def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    features, tasks, train, _ = toy()

    def run(epochs: int, resume: bool, ckpt: Path | None) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model("mmoe", features, tasks, n_experts=2, expert_dims=(8,), tower_dims=(4,))
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=256,
            patience=99,
            progress=False,
            checkpoint_dir=str(ckpt) if ckpt else None,
        )
        fit(
            model, train, None, cfg, weighting=UncertaintyWeighting(["click", "buy"]), resume=resume
        )
        return weights(model)

    straight = run(4, False, None)
    ckpt = tmp_path / "ckpt"
    run(2, False, ckpt)  # "crash" after two epochs
    assert json.loads((ckpt / "latest.json").read_text())["folder"] == "epoch-0002"
    assert (ckpt / "epoch-0002" / "model.safetensors").exists()
    assert not (ckpt / "epoch-0001").exists()  # older checkpoints are removed
    # a crash while the third checkpoint was being written leaves a half folder: ignored
    (ckpt / ".epoch-0003.tmp-1").mkdir()
    (ckpt / ".epoch-0003.tmp-1" / "model.safetensors").write_bytes(b"\0" * 10)
    resumed = run(4, True, ckpt)
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_a_checkpoint_of_another_model_is_not_resumed(tmp_path: Path) -> None:
    features, tasks, train, _ = toy()
    ckpt = tmp_path / "ckpt"
    cfg = TrainConfig(epochs=1, batch_size=256, progress=False, checkpoint_dir=str(ckpt))
    fit(build_model("single_task", features, tasks, hidden_dims=(8,)), train, None, cfg)
    torch.manual_seed(0)
    model = build_model("single_task", features, tasks, hidden_dims=(4,))
    res = fit(model, train, None, cfg, resume=True)  # other shapes: trained from scratch
    assert len(res.history) == 1 and res.history[0]["epoch"] == 1


def test_samples_per_second_counts_training_only() -> None:
    features, tasks, train, valid = toy()
    model = build_model("single_task", features, tasks, hidden_dims=(8,))
    res = fit(model, train, valid, TrainConfig(epochs=1, batch_size=512, progress=False))
    assert res.train_seconds > 0
    assert res.samples_per_second == pytest.approx(len(train) / res.train_seconds)
