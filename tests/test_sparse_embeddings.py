"""train.sparse_rows: large embedding tables with sparse gradients and SparseAdam.

One process here (two processes: tests/test_distributed.py): a run stopped after an epoch
resumes from its checkpoint (both optimizers' states) to the weights of an uninterrupted
run, and settings that need dense gradients are refused by name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shoprec.data.batches import TensorData
from shoprec.models import build_model
from shoprec.models.features import CategoricalFeature, NumericFeature, Task
from shoprec.train.loop import TrainConfig, TrainConfigError, fit, task_scores
from shoprec.train.weighting import PCGrad

pytestmark = pytest.mark.usefixtures("one_thread")


def _data() -> TensorData:
    g = torch.Generator().manual_seed(0)
    a, x = torch.randint(2, 3000, (1200,), generator=g), torch.randn(1200, generator=g)
    click = torch.rand(1200, generator=g) < torch.sigmoid((a % 3 == 0).float() * 2 - 1 + x)
    return TensorData({"a": a, "x": x, "click": click.float()})


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    features = [CategoricalFeature("a", vocab_size=5000, dim=4), NumericFeature("x")]
    return build_model("mmoe", features, [Task("click")], n_experts=2, expert_dims=(8,))


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(
        epochs=3, batch_size=128, lr=0.01, patience=5, min_delta=-1e9, progress=False,
        device="cpu", sparse_rows=1000, **kw,
    )  # fmt: skip


class _Stop(Exception):
    pass


def test_a_stopped_sparse_run_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    data = _data()
    whole = _model()
    fit(whole, data, data, _cfg())
    assert not any(m.sparse for m in whole.modules() if isinstance(m, torch.nn.Embedding))
    calls = []

    def stop_at_two(model: torch.nn.Module) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 2:
            raise _Stop
        return task_scores(model, data)

    with pytest.raises(_Stop):
        fit(_model(), data, None, _cfg(checkpoint_dir=str(tmp_path)), evaluator=stop_at_two)
    resumed = _model()
    result = fit(resumed, data, data, _cfg(checkpoint_dir=str(tmp_path)), resume=True)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    for (k, v), w in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, atol=0, rtol=0, msg=k)
    assert result.best_scores["click/auc"] > 0.6


@pytest.mark.parametrize("setting", ["grad_clip", "weight_decay", "pcgrad"])
def test_settings_that_need_dense_gradients_are_refused(setting: str) -> None:
    kw = {"grad_clip": 1.0} if setting == "grad_clip" else {}
    kw |= {"weight_decay": 1e-4} if setting == "weight_decay" else {}
    weighting = PCGrad() if setting == "pcgrad" else None
    name = "PCGrad" if setting == "pcgrad" else setting
    with pytest.raises(TrainConfigError, match=f"cannot train with .*{name}"):
        fit(_model(), _data(), None, _cfg(**kw), weighting=weighting)
