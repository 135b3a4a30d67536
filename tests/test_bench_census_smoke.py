"""Smoke test of the census-income benchmark on 2,000 rows: the driver's data preparation (the
tabular recipe's), our runner (in this process, to stay fast: the driver runs it as a
subprocess, through the same recipe), and the driver's summary and table; plus the folded
first layer the benchmark's speed rests on, checked against the plain product."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shoprec.models import CategoricalFeature, NumericFeature
from shoprec.models.layers import InputLayer

ROOT = Path(__file__).resolve().parent.parent  # benchmarks/ is a package at the repo root


@pytest.mark.real_data
def test_census_benchmark_pieces_on_2000_rows(
    real_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not (real_data / "census_income" / "census-income.test.gz").exists():
        pytest.skip("census_income not in the data folder")
    from shoprec import recipes

    if "tabular" not in recipes.names():  # until the registry lists the tabular recipe
        monkeypatch.setitem(recipes.REGISTRY, "tabular", "shoprec.recipes.tabular:TabularRecipe")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import census, ours_census

    npz, meta = census.prepare(0, tmp_path, rows=2000)
    z = np.load(npz)
    assert meta["rows"] == 2000 and sum(meta["n"].values()) == 2000
    assert z["cat_train"].shape == (meta["n"]["train"], 32) and z["y_test"].shape[1] == 2
    assert (z["cat_valid"] < z["vocab_sizes"]).all()  # encoder fitted on train: unseen -> OOV
    assert list(z["label_names"]) == ["income_50k", "never_married"]  # tasks' order
    assert "--experts" in census.peer_flags()  # the peers' dims come from our configs

    out = tmp_path / "mmoe.json"
    threads = torch.get_num_threads()
    try:
        args = ["--config", str(ROOT / "configs" / "census_mmoe.yaml"), "--data", str(npz)]
        assert ours_census.main([*args, "--out", str(out), "--epochs", "2", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    run = json.loads(out.read_text())
    assert run["epochs_run"] == 2 and run["best_weights_restored"]
    assert set(run["test_auc"]) == {"income", "never_married"}
    assert all(0.0 <= v <= 1.0 for v in run["test_auc"].values())
    assert run["samples_per_s"] > 0 and run["cpu_samples_per_s"] > 0
    assert run["config"]["experiment"]["recipe"]["name"] == "tabular"  # shoprec train's config

    rows = census.summarise({("shoprec", "mmoe"): [run]})
    ns = argparse.Namespace(seeds=[0], threads=1, timing_rounds=1, timing_epochs=1)
    text = census.markdown(ns, {0: meta}, rows, None, [], 0.1, "- command: `x`\n")
    assert "| mmoe | shoprec (ours) |" in text


def test_folded_first_layer_equals_plain_product() -> None:
    torch.manual_seed(0)
    sizes = [4, 5, 5, 7, 11, 12, 17, 26, 44, 54]  # a few vocabulary sizes, as in census
    features = [CategoricalFeature(f"c{i}", v, 8) for i, v in enumerate(sizes)]
    layer = InputLayer([*features, NumericFeature("x")])
    assert sum(layer.fold_buckets.values()) >= 2  # sizes this far apart get several buckets
    batch = {f"c{i}": torch.randint(0, v, (256,)) for i, v in enumerate(sizes)}
    batch["x"] = torch.randn(256)
    weight = torch.randn(layer.output_dim, 24, requires_grad=True)
    bias = torch.randn(24, requires_grad=True)
    params = [weight, bias, *layer.parameters()]
    for n in (256, 1):  # folded, then the plain path (a batch of one)
        part = {k: v[:n] for k, v in batch.items()}
        plain = torch.addmm(bias, layer(part), weight)
        folded = layer.linear(part, weight, bias)
        torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-5)
        grads_plain = torch.autograd.grad(plain.square().sum(), params)
        grads_folded = torch.autograd.grad(folded.square().sum(), params)
        for a, b in zip(grads_folded, grads_plain, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
