"""Data-parallel training (torch.distributed, gloo on CPU) in the one loop.

Two processes each given half of every global batch must train what one process trains on
the whole batch (same weights, same per-epoch metrics, up to float rounding), and a
two-process run killed mid-way and resumed (by two processes, or by one) must end where an
uninterrupted run ends. The processes are started with torch.multiprocessing and told, as
torchrun tells them, their rank, the world size and the rendezvous in the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from shoprec.data.batches import TensorData
from shoprec.data.shards import ShardedData
from shoprec.models import build_model
from shoprec.models.features import CategoricalFeature, NumericFeature, Task
from shoprec.train import distributed
from shoprec.train.loop import TrainConfig, fit, task_scores
from shoprec.train.weighting import GradNorm, LossWeighting, PCGrad, UncertaintyWeighting

EPOCHS = 4
BATCH = 128  # the global batch: 64 rows per process with two
CRASH_AT = 3  # the killed run dies while validating epoch 3 (its last checkpoint: epoch 2)


def _toy(n: int = 1600) -> tuple[TensorData, TensorData]:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(2, 30, (n,), generator=g)
    x = torch.randn(n, generator=g)
    logit = (a % 3 == 0).float() * 2 - 1 + x
    click = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    buy = click * (torch.rand(n, generator=g) < torch.sigmoid(logit - 1)).float()
    data = TensorData({"a": a, "x": x, "click": click, "buy": buy})
    cut = 1300  # 10 full global batches and a last one of 20 rows (10 per process)
    return data.subset(torch.arange(cut)), data.subset(torch.arange(cut, n))


def _model(vocab: int = 30) -> torch.nn.Module:
    torch.manual_seed(0)
    features = [CategoricalFeature("a", vocab_size=vocab, dim=4), NumericFeature("x")]
    tasks = [Task("click"), Task("buy")]
    return build_model("mmoe", features, tasks, n_experts=2, expert_dims=(8,), tower_dims=(4,))


def _weighting(name: str) -> LossWeighting:
    if name == "gradnorm":
        return GradNorm(["click", "buy"])  # learnt weights from per-task gradient norms
    if name == "pcgrad":
        return PCGrad()  # surgery on per-task gradients
    return UncertaintyWeighting(["click", "buy"])  # a strategy with parameters of its own


def _train(
    ckpt: Path | None,
    *,
    crash_at: int | None = None,
    resume: bool = False,
    strategy: str = "uncertainty",
    epochs: int = EPOCHS,
    shards: str = "",
    sparse: bool = False,
    vocab: int = 30,
) -> tuple:
    """One fit of the toy model (in this process, whatever its rank); on the training rows
    written as Parquet shards in folder ``shards`` when given."""
    torch.set_num_threads(1)
    train, valid = _toy()
    if shards:
        train = ShardedData(shards)
    model = _model(5000 if sparse else vocab)
    calls = []

    def evaluator(m: torch.nn.Module) -> dict[str, float]:
        calls.append(1)
        if crash_at is not None and len(calls) == crash_at:
            os._exit(3)  # killed: no clean-up, no checkpoint of this epoch
        return task_scores(m, valid)

    cfg = TrainConfig(
        epochs=epochs,
        batch_size=BATCH,
        lr=0.01,
        patience=EPOCHS,
        min_delta=-1e9,  # every epoch "improves": the last weights are kept, whatever the noise
        progress=False,
        checkpoint_dir=str(ckpt) if ckpt else None,
        device="cpu",
        sparse_rows=1000 if sparse else None,
    )
    uw = _weighting(strategy)
    result = fit(model, train, None, cfg, weighting=uw, evaluator=evaluator, resume=resume)
    return model, uw, result


def _worker(
    rank: int,
    world: int,
    port: int,
    out: str,
    ckpt: str,
    crash: int,
    resume: bool,
    strategy: str = "uncertainty",
    epochs: int = EPOCHS,
    shards: str = "",
    sparse: bool = False,
):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        SHOPREC_DIST_TIMEOUT_MIN="2",
    )
    try:
        model, uw, result = _train(
            Path(ckpt),
            crash_at=crash or None,
            resume=resume,
            strategy=strategy,
            epochs=epochs,
            shards=shards,
            sparse=sparse,
        )
        if rank == 0:
            _save(Path(out), model, uw, result)
    finally:
        distributed.shutdown()


def _save(out: Path, model: torch.nn.Module, uw: torch.nn.Module, result) -> None:
    out.mkdir(parents=True, exist_ok=True)
    state = {**model.state_dict(), **{f"uw.{k}": v for k, v in uw.state_dict().items()}}
    save_file({k: v.contiguous() for k, v in state.items()}, out / "weights.safetensors")
    history = [{k: v for k, v in row.items() if k != "weights"} for row in result.history]
    (out / "history.json").write_text(json.dumps(history))


def _spawn(
    out: Path,
    ckpt: Path,
    *,
    crash: int = 0,
    resume: bool = False,
    strategy: str = "uncertainty",
    epochs: int = EPOCHS,
    shards: str = "",
    sparse: bool = False,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork, not spawn: the children start with torch and shoprec already imported (seconds
    # saved per process); they run one thread each, so no OpenMP pool crosses the fork.
    args = (2, port, str(out), str(ckpt), crash, resume, strategy, epochs, shards, sparse)
    mp.start_processes(_worker, args=args, nprocs=2, join=True, start_method="fork")


def _load(out: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    return load_file(out / "weights.safetensors"), json.loads((out / "history.json").read_text())


def _assert_same(a: Path, b: Path, atol: float, epochs: int = EPOCHS, skip: str = "") -> None:
    (wa, ha), (wb, hb) = _load(a), _load(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=1e-4, msg=k)
    assert [r["epoch"] for r in ha] == [r["epoch"] for r in hb] == list(range(1, epochs + 1))
    for ra, rb in zip(ha, hb, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            if skip and k.endswith(skip):
                continue
            assert ra[k] == pytest.approx(rb[k], abs=atol, rel=1e-4), (ra["epoch"], k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-process run, an uninterrupted 2-process run, a killed one, the killed one resumed.

    The 1-process run goes first: the forked processes inherit what it imported on its
    first step (torch's optimizer machinery takes seconds to import).
    """
    root = tmp_path_factory.mktemp("ddp")
    _save(root / "one", *_train(None))
    _spawn(root / "two", root / "ckpt-two")
    with pytest.raises(mp.ProcessExitedException):
        _spawn(root / "killed", root / "ckpt-killed", crash=CRASH_AT)
    shutil.copytree(root / "ckpt-killed", root / "ckpt-killed-copy")  # for the 1-process resume
    _spawn(root / "resumed", root / "ckpt-killed", resume=True)
    return root


def test_two_processes_of_half_batches_train_what_one_process_trains(runs: Path) -> None:
    # Float sums over 64 + 64 rows instead of 128: equal to rounding, not bit for bit.
    _assert_same(runs / "two", runs / "one", atol=2e-5)
    assert not (runs / "killed").exists()  # the killed run never got to write its result


def test_a_killed_two_process_run_resumes_where_an_uninterrupted_one_ends(runs: Path) -> None:
    latest = json.loads((runs / "ckpt-killed-copy" / "latest.json").read_text())
    assert latest["epoch"] == CRASH_AT - 1
    _assert_same(runs / "resumed", runs / "two", atol=1e-6)


def test_a_two_process_checkpoint_resumes_in_one_process(runs: Path, tmp_path: Path) -> None:
    model, uw, result = _train(runs / "ckpt-killed-copy", resume=True)
    assert [r["epoch"] for r in result.history] == list(range(1, EPOCHS + 1))
    _save(tmp_path / "one", model, uw, result)
    _assert_same(tmp_path / "one", runs / "two", atol=2e-5)


@pytest.mark.parametrize("strategy", ["gradnorm", "pcgrad"])
def test_gradient_strategies_under_two_processes_train_what_one_process_trains(
    strategy: str, tmp_path: Path
) -> None:
    """GradNorm and PCGrad take per-task gradients outside DDP; averaged over the ranks
    first, their weights and surgery are the global batch's, as in one process."""
    _save(tmp_path / "one", *_train(None, strategy=strategy, epochs=2))
    _spawn(tmp_path / "two", tmp_path / "ckpt", strategy=strategy, epochs=2)
    _assert_same(tmp_path / "two", tmp_path / "one", atol=5e-5, epochs=2)


def test_two_processes_on_parquet_shards_train_what_one_process_trains(tmp_path: Path) -> None:
    """The shard stream (data larger than memory) under DDP: each rank reads the shards in
    the same seeded order and takes its half of every global batch."""
    shards = ShardedData.write(_toy()[0], tmp_path / "shards", shard_rows=300, scatter=True)
    assert shards.n_shards == 5
    _save(tmp_path / "one", *_train(None, epochs=2, shards=str(shards.directory)))
    _spawn(tmp_path / "two", tmp_path / "ckpt", epochs=2, shards=str(shards.directory))
    # Weights and losses to rounding; not the AUCs: the 300 validation rows hold few buys,
    # whose near-tied scores swap order under rounding differences of 1e-8.
    _assert_same(tmp_path / "two", tmp_path / "one", atol=2e-5, epochs=2, skip="auc")


def test_sparse_embeddings_under_two_processes_train_what_one_process_trains(
    tmp_path: Path,
) -> None:
    """train.sparse_rows: the embedding table (5,000 rows, too many for the folded product,
    so the model reads it through its module) gets sparse gradients; DDP averages them
    (gloo) and SparseAdam steps on the rows they touch, as in one process."""
    _save(tmp_path / "one", *_train(None, epochs=2, sparse=True))
    _spawn(tmp_path / "two", tmp_path / "ckpt", epochs=2, sparse=True)
    _assert_same(tmp_path / "two", tmp_path / "one", atol=2e-5, epochs=2)
    dense = _train(None, epochs=2, vocab=5000)[0].state_dict()["inputs.tables.4.weight"]
    sparse = load_file(tmp_path / "one" / "weights.safetensors")["inputs.tables.4.weight"]
    assert not torch.equal(dense, sparse)  # lazy Adam: rows not in a batch do not move
    assert torch.equal(dense[40:], sparse[40:])  # rows no id reaches: never moved by either


def test_a_strategy_that_cannot_run_distributed_is_refused() -> None:
    class LocalOnly(UncertaintyWeighting):
        supports_distributed = False

    strategy = LocalOnly(["click", "buy"])
    with pytest.raises(distributed.DistributedError, match="cannot train with 2 processes"):
        distributed.check_weighting(strategy, distributed.Context(rank=0, world_size=2))
    distributed.check_weighting(strategy, distributed.Context())  # one process: fine


def test_global_batches_split_each_batch_across_ranks_and_skip_none() -> None:
    parts = []
    for rank in range(3):
        ctx = distributed.Context(rank=rank, world_size=3)
        g = torch.Generator().manual_seed(1)
        parts.append(list(distributed.global_batches(20, 8, ctx, g)))
        assert len(parts[-1]) == distributed.steps_per_epoch(20, 8, ctx) == 3
    order = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    for step in range(3):
        rows = torch.cat([parts[r][step][0] for r in range(3)]).sort().values
        assert torch.equal(rows, order[step * 8 : step * 8 + 8].sort().values)
        assert {parts[r][step][1] for r in range(3)} == {len(rows)}


def test_device_setting() -> None:
    from pydantic import ValidationError

    from shoprec.config import TrainSection

    with pytest.raises(ValidationError, match=r"'train\.device': Input should be 'auto', 'cpu'"):
        TrainSection(device="tpu")
    assert TrainSection(device="cuda", amp=True).train_config().amp
    assert distributed.resolve_device("cpu").type == "cpu"
    with pytest.raises(distributed.DistributedError, match="choose one of"):
        distributed.resolve_device("tpu")
    if not torch.cuda.is_available():
        assert distributed.resolve_device("auto").type == "cpu"
        with pytest.raises(distributed.DistributedError, match="no CUDA device"):
            distributed.resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_with_amp_gives_a_cpu_model_back() -> None:
    train, valid = _toy()
    model = _model()
    cfg = TrainConfig(epochs=1, batch_size=BATCH, progress=False, device="cuda", amp=True)
    result = fit(model, train, valid, cfg)
    assert next(model.parameters()).device.type == "cpu"
    assert result.best_scores["click/auc"] > 0.6


@pytest.mark.slow  # three fresh processes (torchrun and two ranks) import torch
def test_shoprec_train_with_two_processes_writes_one_artifact(tmp_path: Path) -> None:
    """``shoprec train CONFIG --nproc 2``: torchrun starts two processes; rank 0 alone
    evaluates and writes the artifact; the checkpoints are removed after success."""
    import subprocess
    import sys

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "name: tiny\n"
        "data: {dataset: simulated, simulate: {n_events: 4000, n_users: 300, n_items: 120}}\n"
        "split: {kind: time, test_days: 14, valid_days: 7}\n"
        "recipe: {name: pairs, n_negatives: 2}\n"
        "tasks: [view, buy]\n"
        "model: {name: mmoe, embedding_dim: 4, config: {n_experts: 2, expert_dims: [8]}}\n"
        "train: {epochs: 2, batch_size: 256, threads: 1, progress: false}\n"
        "evaluate: {protocol: full, ks: [10]}\n"
    )
    out = tmp_path / "artifact"
    cmd = [sys.executable, "-m", "shoprec", "train", str(cfg), "--nproc", "2"]
    done = subprocess.run(
        [*cmd, "--output", str(out)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1 of 2" in done.stderr and "rank 0 of 2" in done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert metrics["test"]["metrics"]["hr@10"] >= 0
    assert not (tmp_path / "artifact.checkpoints").exists()
