"""Loss-weighting strategies on toy two-task problems, each checked against its paper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from shoprec.train.weighting import (
    WEIGHTINGS,
    FixedWeights,
    GradNorm,
    LossWeighting,
    PCGrad,
    UncertaintyWeighting,
    make_weighting,
    project_conflicting,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: thread hand-offs cost more than the maths (10x on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TwoTask(nn.Module):
    """Shared linear bottom, one linear head per task."""

    def __init__(self, d_in: int = 4, d_hidden: int = 8) -> None:
        super().__init__()
        self.bottom = nn.Linear(d_in, d_hidden)
        self.heads = nn.ModuleDict({"a": nn.Linear(d_hidden, 1), "b": nn.Linear(d_hidden, 1)})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = torch.relu(self.bottom(x))
        return {name: head(h).squeeze(-1) for name, head in self.heads.items()}


def _data(seed: int = 0, n: int = 256, noise: tuple[float, float] = (0.1, 0.1)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    ya = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + noise[0] * torch.randn(n, generator=g)
    yb = x @ torch.tensor([0.0, 1.0, 1.0, -1.0]) + noise[1] * torch.randn(n, generator=g)
    return x, {"a": ya, "b": yb}


def _losses(model: TwoTask, x: Tensor, y: dict[str, Tensor], scale_b: float = 1.0):
    out = model(x)
    return {
        "a": nn.functional.mse_loss(out["a"], y["a"]),
        "b": scale_b * nn.functional.mse_loss(out["b"], y["b"]),
    }


def _grads(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ---------------------------------------------------------------------------- fixed


def test_fixed_weights_reproduce_the_weighted_sum_gradient() -> None:
    torch.manual_seed(0)
    model = TwoTask()
    x, y = _data()
    weighting = FixedWeights({"a": 0.3, "b": 2.0})
    total = weighting.backward(_losses(model, x, y), list(model.bottom.parameters()))
    got = _grads(model)

    model.zero_grad()
    losses = _losses(model, x, y)
    want_total = 0.3 * losses["a"] + 2.0 * losses["b"]
    want_total.backward()
    want = _grads(model)
    assert not total.requires_grad
    assert float(total) == pytest.approx(float(want_total.detach()))
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name])
    assert weighting.weights() == {"a": 0.3, "b": 2.0}
    assert list(weighting.parameters()) == []


def test_fixed_weights_defaults_and_typos() -> None:
    x = torch.ones(2, requires_grad=True)
    w = FixedWeights()
    assert float(w.backward({"a": x.sum(), "b": 3 * x.sum()}, [])) == 8.0
    assert w.weights() == {"a": 1.0, "b": 1.0}
    with pytest.raises(ValueError, match="no loss"):
        FixedWeights({"ctrr": 2.0}).backward({"ctr": x.sum()}, [])
    with pytest.raises(ValueError, match="scalar"):
        FixedWeights().backward({"ctr": x}, [])


# ---------------------------------------------------------------------------- uncertainty


def test_uncertainty_objective_and_gradient_of_log_variance() -> None:
    weighting = UncertaintyWeighting(["a", "b"], init_log_var=0.5)
    la = torch.tensor(2.0, requires_grad=True)
    lb = torch.tensor(0.5, requires_grad=True)
    total = weighting.backward({"a": la, "b": lb}, [])
    s = 0.5
    assert float(total) == pytest.approx(math.exp(-s) * 2.5 + 2 * s, rel=1e-6)
    # d/ds (exp(-s) L + s) = 1 - exp(-s) L; d/dL = exp(-s).
    want = torch.tensor([1 - math.exp(-s) * 2.0, 1 - math.exp(-s) * 0.5])
    torch.testing.assert_close(weighting.log_vars.grad, want)
    assert float(la.grad) == pytest.approx(math.exp(-s))
    assert weighting.weights()["a"] == pytest.approx(math.exp(-s))


def test_uncertainty_learns_larger_sigma_for_the_noisier_task() -> None:
    torch.manual_seed(0)
    x, y = _data(seed=1, n=512, noise=(0.1, 1.0))  # task b is 10x noisier
    model = TwoTask()
    weighting = UncertaintyWeighting(["a", "b"])
    opt = torch.optim.Adam([*model.parameters(), *weighting.parameters()], lr=0.03)
    for _ in range(400):
        opt.zero_grad(set_to_none=True)
        losses = _losses(model, x, y)
        weighting.backward(losses, list(model.bottom.parameters()))
        opt.step()
    s = weighting.log_vars.detach()
    w = weighting.weights()
    assert s[1] > s[0] + 2.0  # sigma_b^2 much larger (noise variance ratio is 100)
    assert w["b"] < w["a"]
    # At the optimum s_i = log L_i: the learned variances track the remaining losses.
    with torch.no_grad():
        final = _losses(model, x, y)
    for i, name in enumerate(["a", "b"]):
        assert float(s[i]) == pytest.approx(math.log(float(final[name])), abs=0.35)


# ---------------------------------------------------------------------------- GradNorm


def test_gradnorm_first_step_signs_and_network_gradient() -> None:
    torch.manual_seed(0)
    model = TwoTask()
    x, y = _data()
    weighting = GradNorm(["a", "b"], alpha=1.5)
    last = [model.bottom.weight]
    total = weighting.backward(_losses(model, x, y, scale_b=10.0), [], last_shared_params=last)
    got = _grads(model)
    # At t = 0 every r_i = 1, so the target is the mean norm: the task with the larger
    # gradient norm (b, its loss scaled by 10) gets a positive weight gradient.
    w_grad = weighting.task_weights.grad
    assert w_grad[1] > 0 > w_grad[0]
    # The network gets the plain gradient of sum_i w_i L_i with w = 1.
    model.zero_grad()
    losses = _losses(model, x, y, scale_b=10.0)
    (losses["a"] + losses["b"]).backward()
    for name, g in _grads(model).items():
        torch.testing.assert_close(got[name], g)
    assert float(total) == pytest.approx(float((losses["a"] + losses["b"]).detach()))
    assert weighting.last_grad_loss is not None and float(weighting.last_grad_loss) > 0


def test_gradnorm_reduces_the_weight_of_the_dominant_task_and_keeps_the_sum() -> None:
    torch.manual_seed(0)
    model = TwoTask()
    x, y = _data()
    weighting = GradNorm(["a", "b"], alpha=1.5)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    opt_w = torch.optim.SGD(weighting.parameters(), lr=0.01)
    last = [model.bottom.weight]

    def norms() -> list[float]:
        losses = _losses(model, x, y, scale_b=10.0)
        return [
            float(torch.autograd.grad(losses[t], last, retain_graph=True)[0].norm())
            for t in ("a", "b")
        ]

    n0 = norms()
    assert n0[1] > 3 * n0[0]  # b's gradient dominates
    for _ in range(60):
        opt.zero_grad(set_to_none=True)
        opt_w.zero_grad(set_to_none=True)
        weighting.backward(_losses(model, x, y, scale_b=10.0), list(model.parameters()), last)
        opt.step()
        opt_w.step()
    w = weighting.weights()
    assert w["b"] < 1.0 < w["a"]
    assert sum(w.values()) == pytest.approx(2.0)
    # The weighted gradient norms have moved closer together than the raw ones were.
    n1 = norms()
    assert (w["b"] * n1[1]) / (w["a"] * n1[0]) < n0[1] / n0[0]
    # Renormalisation also holds for the stored parameter after the next call.
    weighting.backward(_losses(model, x, y, scale_b=10.0), [], last)
    assert float(weighting.task_weights.detach().sum()) == pytest.approx(2.0)
    assert not torch.isnan(weighting.state_dict()["initial_losses"]).any()


def test_gradnorm_needs_every_task_and_a_shared_layer() -> None:
    weighting = GradNorm(["a", "b"])
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="each of"):
        weighting.backward({"a": x.sum()}, [x])
    with pytest.raises(ValueError, match="requires_grad"):
        weighting.backward({"a": x.sum(), "b": x.sum()}, [])


# ---------------------------------------------------------------------------- PCGrad


def test_project_conflicting_hand_case() -> None:
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # dot = -1: conflict
    pc = project_conflicting(g)
    torch.testing.assert_close(pc, torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    assert float(pc[0] @ g[1]) >= 0 and float(pc[1] @ g[0]) >= 0


@pytest.mark.parametrize("seed", range(10))
def test_projected_gradients_do_not_conflict_with_the_other_task(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    g1 = torch.randn(50, generator=gen, dtype=torch.float64)
    g2 = -g1 + 0.5 * torch.randn(50, generator=gen, dtype=torch.float64)  # conflicting
    assert float(g1 @ g2) < 0
    pc = project_conflicting(torch.stack([g1, g2]), np.random.default_rng(seed))
    assert float(pc[0] @ g2) >= -1e-9
    assert float(pc[1] @ g1) >= -1e-9


def test_project_conflicting_leaves_agreeing_gradients_alone() -> None:
    g = torch.tensor([[1.0, 0.2, 0.0], [0.5, 1.0, -0.1], [0.3, 0.1, 0.1]])
    assert bool(((g @ g.T) > 0).all())
    torch.testing.assert_close(project_conflicting(g), g)


def _linear_tasks(c_a: Tensor, c_b: Tensor):
    """Shared theta with task gradients exactly c_a and c_b, plus one head per task."""
    theta = nn.Parameter(torch.zeros(len(c_a), dtype=torch.float64))
    heads = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    losses = {"a": theta @ c_a + heads[0] ** 2, "b": theta @ c_b + heads[1] ** 2}
    return theta, heads, losses


def test_pcgrad_equals_plain_sum_without_conflict() -> None:
    c_a = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    c_b = torch.tensor([0.5, 0.0, 3.0], dtype=torch.float64)
    theta, heads, losses = _linear_tasks(c_a, c_b)
    weighting = PCGrad(seed=0)
    total = weighting.backward(losses, [theta])
    torch.testing.assert_close(theta.grad, c_a + c_b)
    torch.testing.assert_close(heads.grad, torch.tensor([2.0, 4.0], dtype=torch.float64))
    assert weighting.last_conflicts == 0
    assert float(total) == pytest.approx(5.0)


def test_pcgrad_projects_the_shared_gradient_and_keeps_task_gradients() -> None:
    c_a = torch.tensor([1.0, 0.0], dtype=torch.float64)
    c_b = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    theta, heads, losses = _linear_tasks(c_a, c_b)
    theta.grad = torch.tensor([10.0, 10.0], dtype=torch.float64)  # accumulated earlier
    weighting = PCGrad(seed=0)
    weighting.backward(losses, [theta])
    # g_a^PC = (0.5, 0.5), g_b^PC = (0, 1); sum (0.5, 1.5), added to the earlier gradient.
    torch.testing.assert_close(theta.grad, torch.tensor([10.5, 11.5], dtype=torch.float64))
    torch.testing.assert_close(heads.grad, torch.tensor([2.0, 4.0], dtype=torch.float64))
    assert weighting.last_conflicts == 1
    assert weighting.weights() == {"a": 1.0, "b": 1.0}


def test_pcgrad_is_reproducible_with_a_seed() -> None:
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(4, 30, generator=gen)
    a = project_conflicting(g, np.random.default_rng(3))
    b = project_conflicting(g, np.random.default_rng(3))
    torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------- one loop


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_one_generic_loop_trains_with_every_strategy(name: str) -> None:
    """The loop below never asks which strategy it has; each one lowers both losses."""
    torch.manual_seed(0)
    model = TwoTask()
    x, y = _data(seed=2)
    weighting = make_weighting(name, tasks=["a", "b"])
    assert isinstance(weighting, LossWeighting)
    opt = torch.optim.Adam(
        [
            {"params": list(model.parameters())},
            {"params": list(weighting.parameters()), "weight_decay": 0.0},
        ],
        lr=0.02,
    )
    shared, last = list(model.bottom.parameters()), [model.bottom.weight]
    with torch.no_grad():
        start = {k: float(v) for k, v in _losses(model, x, y).items()}
    for _ in range(80):
        opt.zero_grad(set_to_none=True)
        total = weighting.backward(_losses(model, x, y), shared, last)
        assert not total.requires_grad and math.isfinite(float(total))
        opt.step()
    with torch.no_grad():
        end = {k: float(v) for k, v in _losses(model, x, y).items()}
    assert all(end[k] < 0.5 * start[k] for k in start)
    w = weighting.weights()
    assert set(w) == {"a", "b"} and all(math.isfinite(v) and v > 0 for v in w.values())


def test_make_weighting_rejects_unknown_names_and_tasks() -> None:
    with pytest.raises(ValueError, match="unknown loss weighting"):
        make_weighting("dwa", ["a"])
    with pytest.raises(ValueError, match="unknown tasks"):
        make_weighting("fixed", ["a", "b"], weights={"c": 1.0})
    assert make_weighting("gradnorm", ["a", "b"], alpha=0.5).alpha == 0.5  # type: ignore[attr-defined]
